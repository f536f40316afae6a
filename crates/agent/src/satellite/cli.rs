//! The command line of `cistern satellite`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `cistern satellite …`.
#[derive(Debug, Args)]
pub struct SatelliteArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SatelliteCommand,
}

/// The satellite's subcommands.
#[derive(Debug, Subcommand)]
pub enum SatelliteCommand {
    /// Run the relay, the pollers and the heartbeats (config from --config, else CONFIG_FILE,
    /// else ./satellite.yml, /cistern/config.yml or /levelops/config.yml). An encrypted config is
    /// read with ENCRYPTION_PASSWORD.
    Run(RunArgs),
    /// Encrypt a config file (prints base64 on stdout), or with --value one value (prints
    /// ENC(…), to paste as a value of satellite.yml). Password: ENCRYPTION_PASSWORD, else asked
    /// on the terminal without echo, else the first line of stdin.
    Encrypt(CryptArgs),
    /// Decrypt an encrypted config file (prints YAML on stdout), or with --value one ENC(…)
    /// value. Password as for `encrypt`.
    Decrypt(CryptArgs),
}

/// `cistern satellite run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address the relay listens on (the hub's ingestion endpoints, served locally).
    #[arg(
        long,
        env = "CISTERN_SATELLITE_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    pub listen: String,
    /// Spool directory: accepted requests wait here until the hub has them; pollers keep their
    /// positions under it. Put it on a persistent volume.
    #[arg(
        long,
        env = "CISTERN_SATELLITE_SPOOL",
        default_value = "satellite-spool"
    )]
    pub spool: PathBuf,
    /// Most disk the spool may use: a size (e.g. 512MiB, 2GB); the satellite warns from 80 % and
    /// refuses new requests (503, Retry-After) when full.
    #[arg(
        long,
        env = "CISTERN_SATELLITE_SPOOL_MAX",
        value_name = "SIZE",
        default_value = "1GiB",
        value_parser = cistern_core::units::parse_size
    )]
    pub spool_max: u64,
    /// The same bound in MiB, as earlier versions took it (kept so that their manifests still
    /// work; --spool-max is the one to use).
    #[arg(
        long,
        env = "CISTERN_SATELLITE_SPOOL_MAX_MB",
        hide = true,
        conflicts_with = "spool_max"
    )]
    pub spool_max_mb: Option<u64>,
    /// First pause before retrying the hub, in milliseconds (it doubles up to --retry-max-ms).
    #[arg(long, default_value_t = 1000, hide = true)]
    pub retry_first_ms: u64,
    /// Longest pause between tries of the hub, in milliseconds.
    #[arg(long, default_value_t = 60_000, hide = true)]
    pub retry_max_ms: u64,
    /// The hub's base URL when satellite.yml has no `url` (as a Harness-generated file):
    /// taken before CISTERN_URL.
    #[arg(long, value_name = "URL")]
    pub hub: Option<String>,
}

/// `cistern satellite encrypt|decrypt`.
#[derive(Debug, Args)]
pub struct CryptArgs {
    /// The file to read (`-`: standard input). With --value: the value, read from standard
    /// input (one line; asked without echo on a terminal).
    #[arg(default_value = "-")]
    pub input: String,
    /// One value instead of a file: `encrypt --value` prints `ENC(…)`, `decrypt --value` takes
    /// `ENC(…)` (or its inside) and prints the value.
    #[arg(long)]
    pub value: bool,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}
