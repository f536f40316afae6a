//! The Jenkins Job Reporter's multipart form (`POST /v1/generic-requests/multipart`): a `json`
//! part holding the `{request_type, payload}` envelope and an optional `file` part holding a zip
//! of failure logs (see [`crate::logzip`]). The form is read from memory, whole; other parts are
//! skipped.

use bytes::Bytes;
use cistern_core::FieldError;

/// The parts of the form that matter.
#[derive(Debug, Clone)]
pub struct Form {
    /// The `json` part: the envelope.
    pub json: Bytes,
    /// The `file` part, when present and not empty: the zip of logs.
    pub file: Option<Bytes>,
}

/// Splits a `multipart/form-data` body (`content_type` carries its boundary) into its `json`
/// and `file` parts; the error names what is wrong (`content-type`, a part, or the form).
pub fn split(content_type: &str, body: Bytes) -> Result<Form, FieldError> {
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        FieldError::new(
            "content-type",
            format!(
                "expected multipart/form-data with a boundary, got {:?}",
                crate::fields::truncate(content_type, 200)
            ),
        )
    })?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    // The whole body is in memory: every future below is ready at once.
    futures::executor::block_on(async move {
        let (mut json, mut file) = (None, None);
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return Err(FieldError::new(
                        "",
                        format!("the multipart body is malformed: {e}"),
                    ))
                }
            };
            let name = field.name().unwrap_or("").to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                FieldError::new(&name, format!("part {name:?} cannot be read: {e}"))
            })?;
            match name.as_str() {
                "json" => json = Some(bytes),
                "file" => file = Some(bytes),
                _ => {}
            }
        }
        let json = json.ok_or_else(|| {
            FieldError::new(
                "json",
                "the multipart form has no `json` part (it holds the {request_type, payload} envelope)",
            )
        })?;
        Ok(Form {
            json,
            file: file.filter(|b| !b.is_empty()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in parts {
            out.extend_from_slice(
                format!("--XYZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XYZ--\r\n");
        out
    }

    #[test]
    fn json_and_file_parts() {
        let body = form(&[("json", b"{}"), ("other", b"x"), ("file", b"PK")]);
        let f = split("multipart/form-data; boundary=XYZ", Bytes::from(body)).unwrap();
        assert_eq!(&f.json[..], b"{}");
        assert_eq!(f.file.as_deref(), Some(&b"PK"[..]));
    }

    #[test]
    fn refusals_name_their_field() {
        let e = split("application/json", Bytes::from_static(b"{}")).unwrap_err();
        assert_eq!(e.field, "content-type");
        let e = split(
            "multipart/form-data; boundary=XYZ",
            Bytes::from(form(&[("file", b"PK")])),
        )
        .unwrap_err();
        assert_eq!(e.field, "json");
        let e = split(
            "multipart/form-data; boundary=XYZ",
            Bytes::from_static(b"--XYZ\r\nContent-Disposition: form-data; name=\"json\"\r\n\r\n{"),
        )
        .unwrap_err();
        assert_eq!(e.field, "json");
    }
}
