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
    /// Largest request body accepted, in bytes (`CISTERN_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Cap of each stored log (stage, step or run), in bytes; the tail is kept (`CISTERN_MAX_LOG_BYTES`).
    pub max_log_bytes: usize,
    /// Most raw-body bytes kept per inbound event (`CISTERN_MAX_EVENT_BODY_BYTES`).
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
}

/// The settings that `CISTERN_<NAME>` environment variables set.
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "max_body_bytes",
    "max_log_bytes",
    "max_event_body_bytes",
    "max_batch",
    "pool_size",
    "log_format",
    "master_key",
    "master_key_file",
    "secret_grace_hours",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://cistern.db".into(),
            max_body_bytes: 5 * 1024 * 1024,
            max_log_bytes: 1024 * 1024,
            max_event_body_bytes: 1024 * 1024,
            max_batch: 256,
            pool_size: 8,
            log_format: "pretty".into(),
            master_key: None,
            master_key_file: None,
            secret_grace_hours: 24,
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
        key.check(store).await?;
        Ok(key)
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
