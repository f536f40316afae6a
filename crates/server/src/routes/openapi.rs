//! The OpenAPI 3.1 document of every API route (`GET /api/openapi.json`), generated from the
//! handlers' `#[utoipa::path]` annotations and the schemas below. A test holds it against the
//! route table ([`super::table`]): a route routed but not documented fails it.
//!
//! The inbound endpoints read their bodies themselves (to name every bad field at once, in the
//! sender's own words), so their request schemas here describe what is accepted rather than being
//! the parser's types.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// One field at fault.
#[derive(Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field's path in the body (`job_run.stages[2].result`), or the query parameter; empty
    /// for the body as a whole.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// An RFC 9457 problem: every 4xx and 5xx answer (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `https://cistern.dev/problems/<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short title.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// Every field at fault.
    pub errors: Option<Vec<FieldProblem>>,
    /// The events-log entry that recorded the refusal.
    pub event_id: Option<String>,
    /// Seconds to wait (also in `Retry-After`), for 429 and 503.
    pub retry_after_seconds: Option<u64>,
}

/// The answer to a stored run.
#[derive(Serialize, ToSchema)]
pub struct RunWritten {
    /// The run's id (`GET /api/v1/runs/{id}`).
    pub id: String,
    /// `created` (201) or `updated` (200, a repeat of a known run).
    pub status: String,
    /// The raw request's entry in the events log.
    pub event_id: String,
    /// Present when a run was accepted with warnings (a `duration` that looks like seconds):
    /// stored as sent, kept with the event.
    pub warnings: Option<Vec<FieldProblem>>,
}

/// A job run in the Harness SEI custom CI/CD format (seed 000). The same endpoint takes it
/// wrapped as `{"request_type", "payload"}` (payload an object or a JSON string), and an instance
/// registration (`integration_id`, `name`, `type`).
#[derive(Serialize, ToSchema)]
pub struct SeiRun {
    /// Pipeline (job) name.
    pub pipeline: String,
    /// Full name of the job.
    pub job_full_name: String,
    /// Qualified name.
    pub qualified_name: String,
    /// Name of the CI/CD instance.
    pub instance_name: String,
    /// GUID of the CI/CD instance.
    pub instance_guid: String,
    /// Start, epoch milliseconds.
    pub start_time: i64,
    /// Duration, milliseconds (≥ 0).
    pub duration: i64,
    /// Result word (`success`, `FAILURE`, `Succeeded`, `ABORTED`, …).
    pub result: String,
    /// Identity of the run within its pipeline.
    pub execution_id: Option<String>,
    /// Build number.
    pub build_number: Option<i64>,
    /// Branch.
    pub branch_name: Option<String>,
    /// Project.
    pub project_name: Option<String>,
    /// Commits built.
    pub scm_commit_ids: Option<Vec<String>>,
    /// A continuous-integration run.
    pub ci: Option<bool>,
    /// A deployment.
    pub cd: Option<bool>,
    /// Counts as a change failure.
    pub cfr_status: Option<bool>,
    /// Link to the run.
    pub web_url: Option<String>,
    /// Who started it.
    pub user_id: Option<String>,
    /// Repository.
    pub repo_url: Option<String>,
    /// The instance's URL.
    pub instance_url: Option<String>,
    /// Stages and steps (`{"stages": [...]}`, Blue Ocean shapes accepted).
    #[schema(value_type = Option<Object>)]
    pub job_run: Option<serde_json::Value>,
    /// Parameters `[{"type", "name", "value"}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub job_run_params: Option<Vec<serde_json::Value>>,
    /// Artifacts `[{"input", "output", "type", "location", "name", "qualifier"}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub artifacts: Option<Vec<serde_json::Value>>,
    /// Trigger chain `[{"id", "type"}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub trigger_chain: Option<Vec<serde_json::Value>>,
}

/// The Jenkins Job Reporter's envelope.
#[derive(Serialize, ToSchema)]
pub struct PluginEnvelope {
    /// `JenkinsPluginJobRunComplete`, `JenkinsPluginJobConfigChange`, `JenkinsHeartbeat` or
    /// `pluginErrorReport`.
    pub request_type: String,
    /// The job run (or heartbeat) as a JSON string, or as an object.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The plugin's reply envelope.
#[derive(Serialize, ToSchema)]
pub struct PluginReply {
    /// The request type answered.
    pub response_type: String,
    /// `{"run_ids": [...], "error": null}` as a JSON string (with `"warnings": [{field,
    /// message}]` when the run was accepted with some).
    pub payload: String,
}

/// The multipart form the plugin posts.
#[derive(Serialize, ToSchema)]
pub struct PluginForm {
    /// The envelope, as JSON.
    pub json: String,
    /// A zip of the failure logs that stages and steps name in their `log` fields.
    #[schema(value_type = Option<String>, format = Binary)]
    pub file: Option<Vec<u8>>,
}

/// An Allstacks custom CD job (seed 003).
#[derive(Serialize, ToSchema)]
pub struct AllstacksJob {
    /// Job id (a number is taken as its text).
    pub job_id: String,
    /// `Succeeded`, `Failed` or `On Hold` (any case).
    pub status: String,
    /// 40 or 64 hexadecimal characters.
    pub commit_sha: String,
    /// The CD service.
    pub service_id: i64,
    /// Start, integer seconds since the epoch.
    pub job_start_time: i64,
    /// Duration, integer seconds (≥ 0).
    pub job_duration: i64,
    /// Repository id (or `repo_name`).
    pub repo_id: Option<String>,
    /// Repository name (or `repo_id`).
    pub repo_name: Option<String>,
    /// Default `Custom CD Agent`.
    pub triggered_by: Option<String>,
    /// Default `CUSTOM_CD_JOB`.
    pub job_type: Option<String>,
    /// At most 20 `{"key", "value", "type"}`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub optional: Option<Vec<serde_json::Value>>,
}

/// A CI/CD instance to register.
#[derive(Serialize, ToSchema)]
pub struct InstanceRegistration {
    /// The integration's id.
    pub integration_id: String,
    /// Name.
    pub name: String,
    /// Kind (`jenkins`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its URL.
    pub url: Option<String>,
    /// A GUID of its own (409 when taken).
    pub guid: Option<String>,
}

/// A secret's value.
#[derive(Serialize, ToSchema)]
pub struct SecretValue {
    /// The value (write-only: never shown again).
    pub value: String,
}

/// A signed source to create.
#[derive(Serialize, ToSchema)]
pub struct NewSource {
    /// `jobserv`, `github`, `gitlab`, `cdevents` or `standard`.
    pub kind: String,
    /// The named secret that signs its requests (optional for `cdevents`).
    pub secret: Option<String>,
    /// A name to recognise it by.
    pub name: Option<String>,
}

/// A subscription to create, or the fields to change (`PATCH` also takes `enabled`).
#[derive(Serialize, ToSchema)]
pub struct SubscriptionFields {
    /// Where to POST (http or https; public addresses unless `allow_private_targets`).
    pub url: Option<String>,
    /// The named secret that signs each delivery.
    pub secret: Option<String>,
    /// `jobserv` (default), `cdevents`, `native` or `otlp` (run.completed only; the secret is
    /// optional).
    pub format: Option<String>,
    /// Headers added to every request: `{"Name": "value"}` or a list of `"Name: value"`; a value
    /// may name a secret, `{{secret.NAME}}`.
    pub headers: Option<serde_json::Value>,
    /// `run.completed` (default), `run.started`, `deployment.completed`, `incident.opened`.
    pub events: Option<Vec<String>>,
    /// Only failed runs, and incidents.
    pub only_failures: Option<bool>,
    /// Pipeline glob.
    pub pipeline: Option<String>,
    /// Branch glob.
    pub branch: Option<String>,
    /// Project.
    pub project: Option<String>,
    /// `PATCH` only: enable or disable.
    pub enabled: Option<bool>,
}

/// A satellite's heartbeat.
#[derive(Serialize, ToSchema)]
pub struct SatelliteHeartbeat {
    /// The satellite's id.
    pub id: String,
    /// Its version.
    pub version: Option<String>,
    /// Hash of its configuration.
    pub config_hash: Option<String>,
    /// When it was sent (RFC 3339).
    pub time: Option<String>,
    /// Seconds between heartbeats (1 to 86400).
    pub interval_seconds: Option<i64>,
    /// Requests waiting in its spool.
    pub spool_depth: Option<i64>,
    /// When it last forwarded.
    pub last_forward: Option<String>,
    /// Its last error.
    pub last_error: Option<String>,
}

/// Adds the key schemes and the SEI endpoint's aliases.
struct Extras;

impl Modify for Extras {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`cistern keys create`): `Authorization: Bearer <key>`; `ApiKey <key>` is accepted too",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        // The trigger routes are served under each prefix Harness callers use: the same operations.
        for paths in [
            &super::triggers::FIRE_V1,
            &super::triggers::FIRE_V2,
            &super::triggers::FIRE_V3,
            &super::triggers::EXECUTION_DETAILS,
            &super::triggers::PROCESSING_DETAILS,
        ] {
            if let Some(item) = doc.paths.paths.get(paths[0]).cloned() {
                for (n, alias) in paths[1..].iter().enumerate() {
                    let mut item = item.clone();
                    for op in [item.get.as_mut(), item.post.as_mut()]
                        .into_iter()
                        .flatten()
                    {
                        op.operation_id = op
                            .operation_id
                            .as_ref()
                            .map(|id| format!("{id}_alias{}", n + 1));
                        op.summary = Some(format!("{alias} (alias of {})", paths[0]));
                    }
                    doc.paths.paths.insert((*alias).to_owned(), item);
                }
            }
        }
        // The SEI endpoint is served under the prefixes its senders use: the same operation.
        if let Some(item) = doc.paths.paths.get(super::sei::PATHS[0]).cloned() {
            for alias in &super::sei::PATHS[1..] {
                let mut item = item.clone();
                if let Some(op) = item.post.as_mut() {
                    op.operation_id = Some(format!(
                        "custom_cicd{}",
                        alias
                            .trim_end_matches("/v1/custom-cicd")
                            .replace(['/', '-'], "_")
                    ));
                    op.summary = Some(format!("{} (alias of /v1/custom-cicd)", alias));
                }
                doc.paths.paths.insert((*alias).to_owned(), item);
            }
        }
    }
}

/// The document's skeleton: info, tags, schemas, and every annotated handler.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cistern",
        description = "A self-hosted CI/CD event hub: inbound reports in each sender's dialect, the normalized runs, delivery metrics, outbound notifications. Every error is `application/problem+json` naming the field and the rule.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Extras),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "ingest", description = "Reports from CI/CD systems, in their own formats"),
        (name = "runs", description = "The normalized runs and what they belong to"),
        (name = "metrics", description = "DORA and CI health metrics"),
        (name = "events", description = "The raw inbound log, refusals included"),
        (name = "admin", description = "Secrets and signed sources"),
        (name = "subscriptions", description = "Outbound notifications and their deliveries"),
        (name = "exporters", description = "Finished runs as OpenTelemetry traces (OTLP/HTTP)"),
        (name = "satellites", description = "On-premise relays"),
        (name = "triggers", description = "Start pipelines by webhook and follow them by correlation id"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
    components(schemas(Problem, FieldProblem, RunWritten)),
    paths(
        super::triggers::fire_v1,
        super::triggers::fire_v2,
        super::triggers::fire_v3,
        super::triggers::execution_details,
        super::triggers::processing_details,
        super::triggers::list,
        super::triggers::create,
        super::triggers::one,
        super::triggers::update,
        super::triggers::remove,
        super::triggers::rotate_token,
        super::keys::list,
        super::keys::create,
        super::keys::rotate,
        super::keys::revoke,
        super::triggers::events,
        super::health::healthz,
        super::health::readyz,
        super::ops::metrics_on_main,
        super::ops::openapi,
        super::sei::custom_cicd,
        super::propelo::json_request,
        super::propelo::multipart_request,
        super::allstacks::cicd_job,
        super::hooks::hook,
        super::runs::list,
        super::runs::one,
        super::catalog::pipelines,
        super::catalog::instances,
        super::catalog::register,
        super::events::list,
        super::events::one,
        super::metrics::dora,
        super::metrics::ci,
        super::delivery_metrics::delivery,
        super::admin::list_secrets,
        super::admin::get_secret,
        super::admin::put_secret,
        super::admin::delete_secret,
        super::admin::list_sources,
        super::admin::create_source,
        super::admin::get_source,
        super::admin::delete_source,
        super::satellites::heartbeat,
        super::satellites::list,
        super::subscriptions::list,
        super::subscriptions::create,
        super::subscriptions::one,
        super::subscriptions::update,
        super::subscriptions::remove,
        super::subscriptions::deliveries,
        super::subscriptions::replay,
        super::subscriptions::delivery,
        super::subscriptions::redeliver,
        super::exporters::list,
        super::exporters::create,
        super::exporters::remove,
    )
)]
struct Doc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The `(METHOD, path)` pairs the document describes, sorted.
pub fn documented(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let ops: BTreeMap<&String, &utoipa::openapi::path::PathItem> = doc.paths.paths.iter().collect();
    for (path, item) in ops {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if op.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    out
}
