//! `cistern satellite`: the on-premise relay. It runs inside a customer's network, where the
//! CI/CD tools are, and carries their runs to a Cistern hub that may be far away or down.
//!
//! - [`config`] reads `satellite.yml` (or the legacy `levelops:` file), encrypted or not;
//! - [`crypto`] is the encrypted file format (Jasypt `AES256TextEncryptor`-compatible);
//! - [`relay`] serves the hub's ingestion endpoints locally and spools every request;
//! - [`spool`] keeps requests on disk, fsynced before the acknowledgement, bounded;
//! - [`forward`] delivers the spool to the hub in order, with retries and backoff;
//! - [`pollers`] fetch runs from tools that cannot push (Jenkins, GitLab) into the same spool;
//! - [`heartbeat`] tells the hub the satellite is alive and how it fares.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod forward;
pub mod heartbeat;
pub mod pollers;
pub mod relay;
pub mod spool;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

pub use cli::{SatelliteArgs, SatelliteCommand};
use config::SatelliteConfig;
use forward::{Backoff, HubClient};
use spool::{Spool, Usage};

/// Where the config is looked for when neither `--config` nor `CONFIG_FILE` says.
pub const DEFAULT_CONFIG_PATHS: &[&str] = &[
    "satellite.yml",
    "/cistern/config.yml",
    "/levelops/config.yml",
];

/// The satellite's health, shared by the forwarder, the pollers, the relay and the heartbeat.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    last_forward: Option<OffsetDateTime>,
    forwarded: u64,
    rejected: u64,
    /// Current problems by source (`forward`, `poller:<id>`): cleared when that source next
    /// succeeds, so a heartbeat's `last_error` is about now, not about last week.
    errors: BTreeMap<String, (OffsetDateTime, String)>,
    warned_near_full: bool,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hub took an entry.
    pub fn forwarded(&self) {
        let mut s = self.lock();
        s.last_forward = Some(OffsetDateTime::now_utc());
        s.forwarded += 1;
        s.errors.remove("forward");
    }

    /// The hub refused an entry.
    pub fn rejected(&self, message: String) {
        let mut s = self.lock();
        s.rejected += 1;
        s.errors
            .insert("forward".into(), (OffsetDateTime::now_utc(), message));
    }

    /// Forwarding failed.
    pub fn error(&self, message: String) {
        self.source_error("forward", message);
    }

    /// A source (`poller:<id>`) failed.
    pub fn source_error(&self, source: &str, message: String) {
        self.lock()
            .errors
            .insert(source.to_owned(), (OffsetDateTime::now_utc(), message));
    }

    /// A source succeeded.
    pub fn source_ok(&self, source: &str) {
        self.lock().errors.remove(source);
    }

    /// Warns once when the spool crosses 80 % of its bound (again after it went below).
    pub fn check_usage(&self, u: &Usage) {
        let mut s = self.lock();
        if u.near_full() && !s.warned_near_full {
            s.warned_near_full = true;
            tracing::warn!(
                bytes = u.bytes,
                limit = u.limit,
                depth = u.depth,
                "the spool is over 80% of its bound (--spool-max); when it is full, new requests are refused with 503 until the hub takes what waits"
            );
        } else if !u.near_full() {
            s.warned_near_full = false;
        }
    }

    /// The health as JSON (`/status`, heartbeats).
    pub fn report(&self, u: &Usage) -> Value {
        let s = self.lock();
        let last = s.errors.values().max_by_key(|(t, _)| *t);
        json!({
            "last_forward": s.last_forward.map(rfc3339),
            "last_error": last.map(|(_, m)| m.clone()),
            "last_error_at": last.map(|(t, _)| rfc3339(*t)),
            "errors": s.errors.iter().map(|(k, (t, m))| json!({"source": k, "at": rfc3339(*t), "message": m})).collect::<Vec<_>>(),
            "forwarded": s.forwarded,
            "rejected": s.rejected,
            "spool_depth": u.depth,
            "spool_bytes": u.bytes,
            "spool_limit_bytes": u.limit,
            "spool_near_full": u.near_full(),
        })
    }
}

/// How to run a satellite.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration.
    pub config: SatelliteConfig,
    /// Listen address of the relay (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// First pause before retrying the hub.
    pub retry_first: Duration,
    /// Longest pause.
    pub retry_max: Duration,
}

/// A running satellite.
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    spool: Arc<Spool>,
    status: Arc<Status>,
}

impl Running {
    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// The health.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stops accepting, lets in-flight requests finish, stops the forwarder, pollers and
    /// heartbeats. What waits in the spool stays there for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// True when every address `listen` names is a loopback one (`127.0.0.1:8090`, `[::1]:0`,
/// `localhost:8090`): only processes on this machine can reach the relay.
pub fn listens_on_loopback_only(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// The relay posts to the hub under the satellite's own key: listening beyond loopback with no
/// `relay_key` would let anyone who reaches it post as the satellite (an open relay).
pub fn check_relay_exposure(listen: &str, relay_key: Option<&str>) -> Result<(), String> {
    if relay_key.is_some_and(|k| !k.trim().is_empty()) || listens_on_loopback_only(listen) {
        return Ok(());
    }
    Err(format!(
        "the relay would listen on {listen}, beyond loopback, with no relay_key: anyone who reaches it could post to the hub under this satellite's key. \
         Set a relay key senders must present: `relay_key: <a long random value>` under `satellite:` in satellite.yml, \
         or the environment variable CISTERN_SATELLITE_RELAY_KEY, or CISTERN_SATELLITE_RELAY_KEY_FILE naming a file that holds it \
         (a Docker or Kubernetes secret); or listen on loopback only (--listen 127.0.0.1:8090)"
    ))
}

/// Starts the relay, the forwarder, the pollers and the heartbeats.
pub async fn start(opts: Options) -> Result<Running, String> {
    check_relay_exposure(&opts.listen, opts.config.hub.relay_key.as_deref())?;
    let config = Arc::new(opts.config);
    let spool_dir = opts.spool_dir.clone();
    let max = opts.spool_max_bytes;
    let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_dir, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let spool = Arc::new(spool);
    let hub = Arc::new(HubClient::new(&config.hub)?);
    let status = Arc::new(Status::default());
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = relay::router(relay::RelayState {
        spool: spool.clone(),
        wake: wake.clone(),
        hub: hub.clone(),
        status: status.clone(),
        relay_key: config.hub.relay_key.clone(),
    });
    let mut tasks = Vec::new();
    let mut rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the relay stopped");
        }
    }));
    tasks.push(tokio::spawn(forward::run(
        spool.clone(),
        hub.clone(),
        status.clone(),
        wake.clone(),
        Backoff::new(opts.retry_first, opts.retry_max),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(heartbeat::run(
        config.clone(),
        spool.clone(),
        status.clone(),
        hub.clone(),
        stop_rx.clone(),
    )));
    let state_dir = opts.spool_dir.join(pollers::STATE_DIR);
    for integration in &config.integrations {
        let Some(poller) = pollers::for_integration(integration, &config.hub)? else {
            // Said on every heartbeat too (and on the hub's /admin/satellites).
            tracing::warn!(
                integration = integration.id,
                application = heartbeat::application_name(&integration.application),
                "no poller for this application (only jenkins and gitlab are polled); its tools must push to the relay"
            );
            continue;
        };
        let ctx = pollers::Context {
            integration: integration.clone(),
            spool: spool.clone(),
            wake: wake.clone(),
            status: status.clone(),
            state_file: state_dir.join(pollers::state_file_name(&integration.id)),
        };
        tasks.push(tokio::spawn(pollers::run(
            poller,
            ctx,
            config.hub.scheduling_interval,
            stop_rx.clone(),
        )));
    }
    tracing::info!(
        relay = %addr,
        hub = hub.base(),
        spool = %opts.spool_dir.display(),
        waiting = spool.usage().depth,
        integrations = config.integrations.len(),
        satellite = config.hub.id,
        "satellite running"
    );
    Ok(Running {
        addr,
        stop: stop_tx,
        tasks,
        spool,
        status,
    })
}

/// Runs `cistern satellite …`; `config` is the global `--config` when given on the command
/// line. Returns the exit code.
pub fn main(args: SatelliteArgs, config: Option<PathBuf>) -> i32 {
    let result = match args.command {
        SatelliteCommand::Run(a) => run(a, config),
        SatelliteCommand::Encrypt(a) => crypt(a, true),
        SatelliteCommand::Decrypt(a) => crypt(a, false),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cistern satellite: error: {e}");
            1
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `--config`, else `CONFIG_FILE`, else the first of [`DEFAULT_CONFIG_PATHS`] that exists.
pub fn config_path(flag: Option<PathBuf>, get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = get("CONFIG_FILE").filter(|p| !p.trim().is_empty()) {
        return PathBuf::from(p);
    }
    DEFAULT_CONFIG_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATHS[0]))
}

fn run(a: cli::RunArgs, flag: Option<PathBuf>) -> Result<(), String> {
    let path = config_path(flag, &env);
    let password = env("ENCRYPTION_PASSWORD");
    // `--hub` gives the hub's URL to a file without one, before CISTERN_URL.
    let hub = a.hub.clone().filter(|h| !h.trim().is_empty());
    let with_hub = |name: &str| match (name, &hub) {
        ("CISTERN_URL", Some(h)) => Some(h.clone()),
        _ => env(name),
    };
    let config = config::load(&path, password.as_deref(), &with_hub).map_err(|e| e.to_string())?;
    for w in &config.warnings {
        tracing::warn!(config = %path.display(), "{w}");
    }
    let opts = Options {
        config,
        listen: a.listen,
        spool_dir: a.spool,
        spool_max_bytes: a
            .spool_max_mb
            .map_or(a.spool_max, |mb| mb.saturating_mul(1024 * 1024))
            .max(1),
        retry_first: Duration::from_millis(a.retry_first_ms.max(1)),
        retry_max: Duration::from_millis(a.retry_max_ms.max(a.retry_first_ms).max(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let running = start(opts).await?;
        shutdown_signal().await;
        tracing::info!("stopping: what waits in the spool goes after the next start");
        running.stop().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The password for `encrypt` / `decrypt`: `ENCRYPTION_PASSWORD`, else asked on the terminal
/// (twice when encrypting), else the first line of stdin (as the Ingestion Satellite read it).
fn password(confirm: bool, stdin_is_input: bool) -> Result<String, String> {
    if let Some(p) = env("ENCRYPTION_PASSWORD").filter(|p| !p.is_empty()) {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() || stdin_is_input {
        let p = rpassword::prompt_password("Password: ").map_err(|e| {
            format!("cannot read the password from the terminal ({e}); set ENCRYPTION_PASSWORD")
        })?;
        if confirm {
            let again = rpassword::prompt_password("Password again: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            if again != p {
                return Err("the two passwords differ".into());
            }
        }
        if p.is_empty() {
            return Err("the password is empty".into());
        }
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        return Err(
            "no password: set ENCRYPTION_PASSWORD, or type it (it is not echoed on a terminal)"
                .into(),
        );
    }
    Ok(p)
}

/// `encrypt --value` / `decrypt --value`: one value, from stdin (asked on a terminal).
fn crypt_value(a: &cli::CryptArgs, encrypting: bool) -> Result<(), String> {
    if a.input != "-" {
        return Err(
            "--value reads the value from standard input (or asks it), not from an argument: values on a command line land in shell history"
                .into(),
        );
    }
    // The password first (ENCRYPTION_PASSWORD, the terminal, or stdin's first line), then the
    // value (the terminal, or stdin's next line).
    let pw = password(encrypting, false)?;
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Value: ").map_err(|e| format!("cannot read the value: {e}"))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if value.is_empty() {
        return Err("no value: type it, or pipe it on standard input".into());
    }
    let output = if encrypting {
        config::enc_value(&value, &pw)
    } else {
        let inner = config::enc_inner(&value).unwrap_or(value.trim());
        crypto::decrypt_text(inner, &pw).map_err(|e| format!("cannot decrypt the value: {e}"))?
    };
    match &a.output {
        Some(path) => write_private(path, format!("{output}\n").as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display())),
        None => std::io::stdout()
            .write_all(format!("{output}\n").as_bytes())
            .map_err(|e| format!("writing standard output: {e}")),
    }
}

fn crypt(a: cli::CryptArgs, encrypting: bool) -> Result<(), String> {
    if a.value {
        return crypt_value(&a, encrypting);
    }
    let from_stdin = a.input == "-";
    // Read the password first: on a terminal it is asked before the input is read.
    let pw = password(encrypting, from_stdin)?;
    let input = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(&a.input).map_err(|e| format!("reading {}: {e}", a.input))?
    };
    let output = if encrypting {
        if crypto::looks_encrypted(&input) {
            return Err(format!(
                "{} looks encrypted already; decrypt it first",
                a.input
            ));
        }
        format!("{}\n", crypto::encrypt(input.as_bytes(), &pw))
    } else {
        crypto::decrypt_text(&input, &pw).map_err(|e| format!("cannot decrypt {}: {e}", a.input))?
    };
    match &a.output {
        Some(path) => write_private(path, output.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display())),
        None => std::io::stdout()
            .write_all(output.as_bytes())
            .map_err(|e| format!("writing standard output: {e}")),
    }
}

/// A decrypted config holds keys: only its owner may read it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_precedence() {
        let none = |_: &str| None;
        let file = |n: &str| (n == "CONFIG_FILE").then(|| "/etc/sat.yml".to_owned());
        assert_eq!(
            config_path(Some("a.yml".into()), &file),
            PathBuf::from("a.yml")
        );
        assert_eq!(config_path(None, &file), PathBuf::from("/etc/sat.yml"));
        assert_eq!(config_path(None, &none), PathBuf::from("satellite.yml"));
    }
}
