{{- define "cistern.name" -}}{{ .Release.Name }}-cistern{{- end -}}
{{- define "cistern.labels" -}}
app.kubernetes.io/name: cistern
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
