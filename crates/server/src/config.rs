//! Configuration: defaults, then `cistern.toml` (or the file named by `--config` /
//! `CISTERN_CONFIG`), then `CISTERN_*` environment variables, then command-line flags.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Every setting of the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`CISTERN_LISTEN`).
    pub listen: String,
    /// Database URL: `sqlite://path` or `postgres://…` (`CISTERN_DATABASE_URL`).
    pub database_url: String,
    /// Largest request body accepted (`CISTERN_MAX_BODY_BYTES`). Like every size setting: a
    /// number of bytes, or a number with a unit (`5MB`, `5MiB`, `512KiB`).
    #[serde(deserialize_with = "size_text::usize")]
    pub max_body_bytes: usize,
    /// Cap of each stored log (stage, step or run), in bytes; the tail is kept (`CISTERN_MAX_LOG_BYTES`).
    #[serde(deserialize_with = "size_text::usize")]
    pub max_log_bytes: usize,
    /// Most bytes the logs of one report's zip may inflate to, all entries read counted
    /// (`CISTERN_MAX_ZIP_INFLATED_BYTES`); past it the report is refused as a zip bomb.
    #[serde(deserialize_with = "size_text::u64")]
    pub max_zip_inflated_bytes: u64,
    /// Most raw-body bytes kept per inbound event (`CISTERN_MAX_EVENT_BODY_BYTES`).
    #[serde(deserialize_with = "size_text::usize")]
    pub max_event_body_bytes: usize,
    /// Most writes per group-commit transaction (`CISTERN_MAX_BATCH`).
    pub max_batch: usize,
    /// Database read connections / pool size (`CISTERN_POOL_SIZE`).
    pub pool_size: usize,
    /// Log format: `pretty` or `json` (`CISTERN_LOG_FORMAT`).
    pub log_format: String,
    /// Master key of the named secrets: 64 hex characters or base64 of 32 bytes
    /// (`CISTERN_MASTER_KEY`). When unset, the key file is used.
    pub master_key: Option<String>,
    /// Master key file, created with mode 0600 on first start (`CISTERN_MASTER_KEY_FILE`);
    /// default `cistern.key` beside the SQLite database, or in the working directory.
    pub master_key_file: Option<String>,
    /// Hours a rotated secret's previous value still verifies and signs (`CISTERN_SECRET_GRACE_HOURS`).
    pub secret_grace_hours: u64,
    /// This hub's base URL as receivers reach it, for the links in outbound payloads
    /// (`CISTERN_PUBLIC_URL`); default `http://<listen>`.
    pub public_url: Option<String>,
    /// Deliver (webhooks, trigger targets) to loopback, link-local and private addresses
    /// (`CISTERN_ALLOW_PRIVATE_TARGETS`). Off by default: a subscription URL must not become a
    /// way into the hub's own network.
    pub allow_private_targets: bool,
    /// A proxy for outbound requests (deliveries, trigger targets), e.g. `http://proxy:3128`
    /// (`CISTERN_OUTBOUND_PROXY`). Unset by default, and then the `HTTP_PROXY`/`HTTPS_PROXY`/
    /// `ALL_PROXY` environment variables are ignored: a proxy resolves names itself, out of
    /// reach of the address check.
    pub outbound_proxy: Option<String>,
    /// The hosts outbound requests may reach through `outbound_proxy`: names or globs
    /// (`*.example.com`), a list or comma-separated (`CISTERN_OUTBOUND_PROXY_ALLOW`). Required
    /// with a proxy; any other host is refused.
    #[serde(deserialize_with = "text_list")]
    pub outbound_proxy_allow: Vec<String>,
    /// How long a verified API key (and its tenant) is remembered, so the ingest path does not
    /// read the database on every request (`CISTERN_AUTH_CACHE_TTL`). Off (`0s`) by default: a key
    /// revoked with the CLI then stops working at once; with a cache, within this long.
    #[serde(deserialize_with = "duration_text::one")]
    pub auth_cache_ttl: String,
    /// Run the delivery worker on this node (`CISTERN_DELIVERY_WORKER`).
    pub delivery_worker: bool,
    /// Time allowed for one delivery attempt, answer included (`CISTERN_DELIVERY_TIMEOUT`).
    #[serde(deserialize_with = "duration_text::one")]
    pub delivery_timeout: String,
    /// Delay before each attempt, comma-separated; after the last, the delivery fails
    /// (`CISTERN_DELIVERY_SCHEDULE`). Each delay gets ±20 % jitter.
    #[serde(deserialize_with = "duration_text::list")]
    pub delivery_schedule: String,
    /// A subscription whose every attempt failed for this long is disabled
    /// (`CISTERN_DELIVERY_DISABLE_AFTER`).
    #[serde(deserialize_with = "duration_text::one")]
    pub delivery_disable_after: String,
    /// Most attempts in flight on this node (`CISTERN_DELIVERY_CONCURRENCY`).
    pub delivery_concurrency: usize,
    /// Most attempts in flight for one subscription, across nodes
    /// (`CISTERN_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION`).
    pub delivery_concurrency_per_subscription: usize,
    /// How often the worker looks for due deliveries it was not told about: retries coming due,
    /// other nodes' runs (`CISTERN_DELIVERY_POLL_INTERVAL`).
    #[serde(deserialize_with = "duration_text::one")]
    pub delivery_poll_interval: String,
    /// Where Prometheus metrics are served (`CISTERN_METRICS_LISTEN`): `main` (at `/metrics` on
    /// the main listener), an address of their own (`127.0.0.1:9100`, then not on the main
    /// listener), or `off`.
    pub metrics_listen: String,
    /// Requests per second each API key (and each signed source) may make on average
    /// (`CISTERN_RATE_LIMIT`); `0` turns the limit off.
    pub rate_limit: f64,
    /// Requests a key may make at once above its rate before it is answered 429
    /// (`CISTERN_RATE_LIMIT_BURST`).
    pub rate_limit_burst: u32,
    /// Requests in flight on this node above which new ones are answered 503 with
    /// `Retry-After` instead of queueing (`CISTERN_MAX_IN_FLIGHT`); `0` turns shedding off.
    pub max_in_flight: usize,
    /// Largest body of the admin and JSON CRUD routes (secrets, sources, subscriptions, instance
    /// registration, satellite heartbeats), in bytes (`CISTERN_MAX_ADMIN_BODY_BYTES`).
    #[serde(deserialize_with = "size_text::usize")]
    pub max_admin_body_bytes: usize,
    /// Raw inbound events older than this are deleted (`CISTERN_RETENTION_EVENTS`); `off` keeps
    /// them. Runs are never deleted by retention.
    #[serde(deserialize_with = "duration_text::one")]
    pub retention_events: String,
    /// Finished deliveries (delivered or failed), their attempt log and their messages older
    /// than this are deleted (`CISTERN_RETENTION_DELIVERIES`); `off` keeps them.
    #[serde(deserialize_with = "duration_text::one")]
    pub retention_deliveries: String,
    /// How often retention runs (`CISTERN_RETENTION_INTERVAL`).
    #[serde(deserialize_with = "duration_text::one")]
    pub retention_interval: String,
    /// Delay before each attempt to send a trigger event to its target, comma-separated; after
    /// the last, the event is `TARGET_DID_NOT_EXECUTE` (`CISTERN_TRIGGER_SCHEDULE`). Shorter than
    /// the delivery schedule: a pipeline started hours after it was asked for surprises people.
    #[serde(deserialize_with = "duration_text::list")]
    pub trigger_schedule: String,
    /// A trigger event whose run has not been reported after this long is `Expired`, and one not
    /// yet sent by then is not sent (`CISTERN_TRIGGER_EXPIRE_AFTER`).
    #[serde(deserialize_with = "duration_text::one")]
    pub trigger_expire_after: String,
    /// Time a connection has to send a request's line and headers (`CISTERN_HEADER_READ_TIMEOUT`);
    /// it also bounds how long a kept-alive connection may wait idle for its next request.
    /// Past it the connection is closed.
    #[serde(deserialize_with = "duration_text::one")]
    pub header_read_timeout: String,
    /// Time a request's whole body has to arrive, counted from its headers
    /// (`CISTERN_REQUEST_BODY_TIMEOUT`); past it the answer is 408 and the connection is closed.
    #[serde(deserialize_with = "duration_text::one")]
    pub request_body_timeout: String,
    /// Failed authentications (401: unknown key, bad signature, bad sign-in) each client address
    /// may make per minute once its burst is spent; past it, 429 with `Retry-After` before any
    /// database read (`CISTERN_AUTH_FAILURES_PER_MINUTE`); `0` turns the limit off.
    pub auth_failures_per_minute: f64,
    /// Failed authentications a client address may make at once (`CISTERN_AUTH_FAILURE_BURST`).
    pub auth_failure_burst: u32,
    /// How long a dashboard session lasts from sign-in, however much it is used
    /// (`CISTERN_SESSION_LIFETIME`).
    #[serde(deserialize_with = "duration_text::one")]
    pub session_lifetime: String,
    /// A dashboard session unused this long ends (`CISTERN_SESSION_IDLE_TIMEOUT`).
    #[serde(deserialize_with = "duration_text::one")]
    pub session_idle_timeout: String,
}

/// A list setting: a list, or text with comma-separated items (as environment variables give).
fn text_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    Ok(match List::deserialize(d)? {
        List::Many(v) => v,
        List::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Size settings: a number of bytes, or text with a unit (`5MB`, `512KiB`; see
/// [`cistern_core::units::parse_size`]), as a file or an environment variable gives it.
mod size_text {
    use serde::{de::Error, Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Size::deserialize(d)? {
            Size::Int(n) => Ok(n),
            Size::Text(t) => cistern_core::units::parse_size(&t).map_err(D::Error::custom),
        }
    }

    pub fn usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let n = u64(d)?;
        ::core::primitive::usize::try_from(n)
            .map_err(|_| D::Error::custom(format!("{n} bytes is too large")))
    }
}

/// Duration settings are text (`15s`, `500ms`, `5m`, `2h`, `5d`); a bare number is seconds.
mod duration_text {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum One {
        Text(String),
        Int(u64),
        Float(f64),
    }

    impl One {
        fn text(self) -> String {
            match self {
                One::Text(s) => s,
                One::Int(n) => format!("{n}s"),
                One::Float(f) => format!("{f}s"),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Many {
        List(Vec<One>),
        One(One),
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        One::deserialize(d).map(One::text)
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Many::deserialize(d)? {
            Many::List(items) => items
                .into_iter()
                .map(One::text)
                .collect::<Vec<_>>()
                .join(","),
            Many::One(one) => one.text(),
        })
    }
}

/// The one duration parser (see [`cistern_core::units`]): `500ms`, `15s`, `5m`, `2h`, `5d`, or a
/// bare number of seconds.
pub use cistern_core::units::parse_duration;

/// A retention age: a duration, or `off` (also `0`, `never`) for none.
pub fn parse_retention(text: &str) -> Result<Option<std::time::Duration>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" | "never" | "none" | "" => Ok(None),
        other => {
            let d = parse_duration(other)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// A configuration error in the user's words: the setting as they wrote it (`listen` in
/// `cistern.toml`, `CISTERN_MAX_BODY_BYTES` in the environment; not figment's `default.listn` or
/// `MAX_BODY_BYTES`), and for an unknown setting the closest known name. Hand-written because
/// figment's own message names its profile and its provider's key path, which users never
/// typed.
pub fn explain(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|one| explain_one(&one))
        .collect::<Vec<_>>()
        .join("; ")
}

fn explain_one(e: &figment::Error) -> String {
    use figment::error::Kind;
    let key = e.path.join(".");
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let place = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        _ if from_env => String::new(),
        Some(figment::Source::File(path)) => format!(" in {}", path.display()),
        _ => String::new(),
    };
    let setting = if from_env {
        format!("environment variable CISTERN_{}", key.to_ascii_uppercase())
    } else {
        format!("setting `{key}`{place}")
    };
    match &e.kind {
        Kind::UnknownField(field, known) => {
            let near = known
                .iter()
                .map(|k| (strsim::jaro_winkler(field, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match near {
                Some((_, k)) => format!("; did you mean `{k}`?"),
                None => "; the README's Configuration table lists them".into(),
            };
            format!("unknown setting `{field}`{place}{hint}")
        }
        Kind::Message(m) if key.is_empty() => m.clone(),
        kind => format!("{setting}: {kind}"),
    }
}

/// The settings that `CISTERN_<NAME>` environment variables set.
pub const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "max_body_bytes",
    "max_log_bytes",
    "max_zip_inflated_bytes",
    "max_event_body_bytes",
    "max_batch",
    "pool_size",
    "log_format",
    "master_key",
    "master_key_file",
    "secret_grace_hours",
    "public_url",
    "allow_private_targets",
    "outbound_proxy",
    "outbound_proxy_allow",
    "auth_cache_ttl",
    "delivery_worker",
    "delivery_timeout",
    "delivery_schedule",
    "delivery_disable_after",
    "delivery_concurrency",
    "delivery_concurrency_per_subscription",
    "delivery_poll_interval",
    "metrics_listen",
    "rate_limit",
    "rate_limit_burst",
    "max_in_flight",
    "max_admin_body_bytes",
    "retention_events",
    "retention_deliveries",
    "retention_interval",
    "trigger_schedule",
    "trigger_expire_after",
    "header_read_timeout",
    "request_body_timeout",
    "auth_failures_per_minute",
    "auth_failure_burst",
    "session_lifetime",
    "session_idle_timeout",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://cistern.db".into(),
            max_body_bytes: 5 * 1024 * 1024,
            max_log_bytes: 1024 * 1024,
            max_zip_inflated_bytes: 64 * 1024 * 1024,
            max_event_body_bytes: 1024 * 1024,
            max_batch: 256,
            pool_size: 8,
            log_format: "pretty".into(),
            master_key: None,
            master_key_file: None,
            secret_grace_hours: 24,
            public_url: None,
            allow_private_targets: false,
            outbound_proxy: None,
            outbound_proxy_allow: Vec::new(),
            auth_cache_ttl: "0s".into(),
            delivery_worker: true,
            delivery_timeout: "15s".into(),
            delivery_schedule: "0s,5s,5m,30m,2h,5h,10h,10h".into(),
            delivery_disable_after: "5d".into(),
            delivery_concurrency: 32,
            delivery_concurrency_per_subscription: 4,
            delivery_poll_interval: "1s".into(),
            metrics_listen: "main".into(),
            rate_limit: 0.0,
            rate_limit_burst: 100,
            max_in_flight: 1024,
            max_admin_body_bytes: 64 * 1024,
            retention_events: "30d".into(),
            retention_deliveries: "14d".into(),
            retention_interval: "1h".into(),
            trigger_schedule: "0s,5s,30s,2m,10m".into(),
            trigger_expire_after: "24h".into(),
            header_read_timeout: "10s".into(),
            request_body_timeout: "30s".into(),
            auth_failures_per_minute: 30.0,
            auth_failure_burst: 20,
            session_lifetime: "12h".into(),
            session_idle_timeout: "1h".into(),
        }
    }
}

impl Config {
    /// Loads defaults, the TOML file (when it exists, or fails when it was named explicitly and
    /// is missing) and the `CISTERN_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(Box::new(figment::Error::from(format!(
                        "config file {} does not exist",
                        path.display()
                    ))));
                }
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("cistern.toml")),
        }
        // Only the settings' own names: other CISTERN_* variables belong to other commands.
        fig.merge(Env::prefixed("CISTERN_").only(ENV_KEYS))
            .extract()
            .map_err(Box::new)
    }

    /// Loads as [`Config::load`] does; an error says which setting, where, and what is wrong
    /// with it (see [`explain`]).
    pub fn load_explained(file: Option<&Path>) -> Result<Self, String> {
        Self::load(file).map_err(|e| explain(&e))
    }

    /// The master key file in force.
    pub fn master_key_path(&self) -> std::path::PathBuf {
        if let Some(f) = &self.master_key_file {
            return f.into();
        }
        if !self.database_url.starts_with("postgres") {
            if let Ok(db) = cistern_store::sqlite::path_from_url(&self.database_url) {
                if let Some(dir) = db.parent() {
                    return dir.join("cistern.key");
                }
            }
        }
        "cistern.key".into()
    }

    /// Loads the master key and checks it against the database.
    pub async fn master_key(
        &self,
        store: &dyn cistern_store::Store,
    ) -> Result<crate::secrets::MasterKey, String> {
        let key =
            crate::secrets::MasterKey::load(self.master_key.as_deref(), &self.master_key_path())?;
        match key.check(store).await {
            Ok(()) => Ok(key),
            Err(e)
                if self
                    .master_key
                    .as_deref()
                    .is_none_or(|v| v.trim().is_empty()) =>
            {
                crate::secrets::recover_rotation(store, &self.master_key_path())
                    .await
                    .ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The store settings implied by this configuration.
    pub fn store_settings(&self) -> cistern_store::StoreSettings {
        cistern_store::StoreSettings {
            max_batch: self.max_batch.max(1),
            max_event_body_bytes: self.max_event_body_bytes,
            pool_size: self.pool_size.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `text` as the configuration file (only the file: the environment of a test process
    /// is shared by every test, so no `CISTERN_*` variable is set here).
    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cistern.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_explained(Some(&path))
    }

    #[test]
    fn sizes_are_numbers_or_text_with_a_unit() {
        let c = load("max_body_bytes = \"5MB\"\nmax_log_bytes = \"512KiB\"\nmax_zip_inflated_bytes = 1000\nmax_admin_body_bytes = \"64 kib\"\n").unwrap();
        assert_eq!(c.max_body_bytes, 5_000_000);
        assert_eq!(c.max_log_bytes, 512 * 1024);
        assert_eq!(c.max_zip_inflated_bytes, 1000);
        assert_eq!(c.max_admin_body_bytes, 64 * 1024);
        let e = load("max_body_bytes = \"5XB\"\n").unwrap_err();
        assert!(
            e.contains("setting `max_body_bytes` in ") && e.contains("is not a size"),
            "{e}"
        );
    }

    #[test]
    fn a_misspelled_setting_is_named_as_written_with_the_closest_one() {
        let e = load("listn = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.starts_with("unknown setting `listn` in "), "{e}");
        assert!(e.ends_with("did you mean `listen`?"), "{e}");
        assert!(!e.contains("default."), "{e}");
        let e = load("zzzzzz = 1\n").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
    }
}
