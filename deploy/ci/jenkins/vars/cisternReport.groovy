// Cistern's Jenkins shared-library step. Put this repository's deploy/ci/jenkins folder in a
// shared library (Manage Jenkins → System → Global Pipeline Libraries, name `cistern`), then:
//
//   @Library('cistern') _
//   pipeline {
//     agent any
//     environment { CISTERN_URL = 'https://cistern.example.com' }
//     stages {
//       stage('Test') {
//         steps {
//           cisternReport(credentialsId: 'cistern-api-key', stage: 'Test') { sh 'make test' }
//         }
//       }
//     }
//     post { always { cisternReport(credentialsId: 'cistern-api-key', end: true) } }
//   }
//
// With a body, the body runs as a step of the run (`cistern report step`), its failure passed
// on; with `command:`, that shell command is the step; with `end: true`, the run is posted with
// the build's result. `cistern` must be on the agent's PATH (or give `binary:`).
def call(Map args = [:], Closure body = null) {
  String cistern = args.binary ?: 'cistern'
  String credentialsId = args.credentialsId ?: 'cistern-api-key'
  withCredentials([string(credentialsId: credentialsId, variable: 'CISTERN_API_KEY')]) {
    if (args.end) {
      String result = args.result ?: currentBuild.currentResult
      sh "${cistern} report end --result ${result}"
      return
    }
    String stage = args.stage ?: env.STAGE_NAME ?: 'main'
    String name = args.name ?: stage
    if (args.command) {
      sh "${cistern} report step '${name}' --stage '${stage}' -- sh -c '${args.command}'"
      return
    }
    if (body == null) {
      error 'cisternReport: give a body, `command:` or `end: true`'
    }
    try {
      body()
      sh "${cistern} report step '${name}' --stage '${stage}' -- true"
    } catch (err) {
      sh "${cistern} report step '${name}' --stage '${stage}' -- false || true"
      throw err
    }
  }
}
