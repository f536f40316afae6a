//! Ready-made targets for the CI systems people trigger most: each fills the method, URL, headers
//! and body the CI's API expects, with the correlation id where that CI hands it to the run.
//!
//! - `jenkins`: `POST <job URL>/buildWithParameters`, form body `correlation_id=…` (the job
//!   declares a string parameter `correlation_id`; the Jenkins reporter sends it back as a
//!   parameter of the run), Basic authentication from a secret holding `user:api-token`.
//! - `github`: `POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` with
//!   `{"ref", "inputs": {"correlation_id"}}` (the workflow declares that input), a token secret.
//! - `gitlab`: `POST /api/v4/projects/{id}/trigger/pipeline` with the pipeline trigger token (a
//!   secret), the ref and the variable `CORRELATION_ID`.

use cistern_core::FieldError;
use cistern_store::{TargetHeader, TriggerTarget};
use serde_json::json;

/// The preset names.
pub const PRESETS: [&str; 3] = ["jenkins", "github", "gitlab"];

/// What a preset needs; which fields matter depends on the preset.
#[derive(Debug, Clone, Default)]
pub struct PresetInput {
    /// `jenkins`, `github` or `gitlab`.
    pub kind: String,
    /// Jenkins: the job's URL. GitHub and GitLab: the API's base URL (default the public one).
    pub url: Option<String>,
    /// GitHub: `owner/repo`.
    pub repo: Option<String>,
    /// GitHub: the workflow file name (`ci.yml`) or id.
    pub workflow: Option<String>,
    /// GitLab: the project id or path (`group/project`).
    pub project_id: Option<String>,
    /// GitHub and GitLab: the branch or tag to run.
    pub git_ref: Option<String>,
    /// The named secret with the credential (Jenkins: `user:api-token`; GitHub: a token allowed
    /// to dispatch workflows; GitLab: the pipeline trigger token).
    pub token_secret: Option<String>,
}

fn header(name: &str, value: impl Into<String>) -> TargetHeader {
    TargetHeader {
        name: name.into(),
        value: value.into(),
    }
}

fn required<'a>(
    v: &'a Option<String>,
    field: &str,
    what: &str,
    errors: &mut Vec<FieldError>,
) -> &'a str {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => {
            errors.push(FieldError::new(
                field,
                format!("is required by this preset: {what}"),
            ));
            ""
        }
    }
}

/// Builds a preset's target; every missing field is named.
pub fn target(p: &PresetInput) -> Result<TriggerTarget, Vec<FieldError>> {
    let mut errors = Vec::new();
    let secret = required(
        &p.token_secret,
        "token_secret",
        "the name of the secret holding the credential",
        &mut errors,
    );
    let t = match p.kind.trim().to_ascii_lowercase().as_str() {
        "jenkins" => {
            let job = required(
                &p.url,
                "url",
                "the job's URL, e.g. https://jenkins.example.com/job/deploy",
                &mut errors,
            )
            .trim_end_matches('/');
            let url = if job.ends_with("/buildWithParameters") {
                job.to_owned()
            } else {
                format!("{job}/buildWithParameters")
            };
            TriggerTarget {
                method: "POST".into(),
                url,
                headers: vec![
                    header("Content-Type", "application/x-www-form-urlencoded"),
                    header(
                        "Authorization",
                        format!("Basic {{{{secret.{secret} | base64}}}}"),
                    ),
                ],
                body: Some("correlation_id={{correlation_id}}".into()),
            }
        }
        "github" => {
            let repo = required(&p.repo, "repo", "owner/repository", &mut errors);
            if !repo.is_empty() && repo.split('/').filter(|s| !s.is_empty()).count() != 2 {
                errors.push(FieldError::new("repo", "must be owner/repository"));
            }
            let workflow = required(
                &p.workflow,
                "workflow",
                "the workflow file name (ci.yml) or id",
                &mut errors,
            );
            let git_ref = required(&p.git_ref, "ref", "the branch or tag to run", &mut errors);
            let base = p
                .url
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("https://api.github.com")
                .trim_end_matches('/');
            let workflow: String = form_urlencoded::byte_serialize(workflow.as_bytes()).collect();
            TriggerTarget {
                method: "POST".into(),
                url: format!("{base}/repos/{repo}/actions/workflows/{workflow}/dispatches"),
                headers: vec![
                    header("Accept", "application/vnd.github+json"),
                    header("Authorization", format!("Bearer {{{{secret.{secret}}}}}")),
                    header("X-GitHub-Api-Version", "2022-11-28"),
                    header("Content-Type", "application/json"),
                ],
                body: Some(
                    json!({"ref": git_ref, "inputs": {"correlation_id": "{{correlation_id}}"}})
                        .to_string(),
                ),
            }
        }
        "gitlab" => {
            let project = required(
                &p.project_id,
                "project_id",
                "the GitLab project's id or path (group/project)",
                &mut errors,
            );
            let git_ref = required(&p.git_ref, "ref", "the branch or tag to run", &mut errors);
            let base = p
                .url
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("https://gitlab.com")
                .trim_end_matches('/');
            // A path is one URL segment, its slashes encoded (GitLab's documented form).
            let project: String = form_urlencoded::byte_serialize(project.as_bytes()).collect();
            TriggerTarget {
                method: "POST".into(),
                url: format!("{base}/api/v4/projects/{project}/trigger/pipeline"),
                headers: vec![header("Content-Type", "application/json")],
                body: Some(
                    json!({"token": format!("{{{{secret.{secret}}}}}"), "ref": git_ref,
                           "variables": {"CORRELATION_ID": "{{correlation_id}}"}})
                    .to_string(),
                ),
            }
        }
        other => {
            errors.push(FieldError::new(
                "preset",
                format!("unknown preset {other:?}; presets: {}", PRESETS.join(", ")),
            ));
            return Err(errors);
        }
    };
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_workflow_dispatch() {
        let t = target(&PresetInput {
            kind: "github".into(),
            repo: Some("acme/app".into()),
            workflow: Some("ci.yml".into()),
            git_ref: Some("main".into()),
            token_secret: Some("gh".into()),
            ..PresetInput::default()
        })
        .unwrap();
        assert_eq!(
            t.url,
            "https://api.github.com/repos/acme/app/actions/workflows/ci.yml/dispatches"
        );
        assert!(t
            .headers
            .contains(&header("Authorization", "Bearer {{secret.gh}}")));
        let body: serde_json::Value = serde_json::from_str(t.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"ref": "main", "inputs": {"correlation_id": "{{correlation_id}}"}})
        );
    }

    #[test]
    fn gitlab_and_jenkins() {
        let g = target(&PresetInput {
            kind: "gitlab".into(),
            url: Some("https://gitlab.example.com/".into()),
            project_id: Some("group/app".into()),
            git_ref: Some("main".into()),
            token_secret: Some("gl".into()),
            ..PresetInput::default()
        })
        .unwrap();
        assert_eq!(
            g.url,
            "https://gitlab.example.com/api/v4/projects/group%2Fapp/trigger/pipeline"
        );
        assert!(g.body.unwrap().contains("\"token\":\"{{secret.gl}}\""));
        let j = target(&PresetInput {
            kind: "jenkins".into(),
            url: Some("https://jenkins.example.com/job/deploy/".into()),
            token_secret: Some("jk".into()),
            ..PresetInput::default()
        })
        .unwrap();
        assert_eq!(
            j.url,
            "https://jenkins.example.com/job/deploy/buildWithParameters"
        );
        assert!(j
            .headers
            .contains(&header("Authorization", "Basic {{secret.jk | base64}}")));
    }

    #[test]
    fn missing_fields_are_named() {
        let e = target(&PresetInput {
            kind: "github".into(),
            ..PresetInput::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["token_secret", "repo", "workflow", "ref"]);
        let e = target(&PresetInput {
            kind: "bamboo".into(),
            token_secret: Some("x".into()),
            ..PresetInput::default()
        })
        .unwrap_err();
        assert!(e[0].message.contains("jenkins, github, gitlab"));
    }
}
