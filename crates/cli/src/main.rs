//! `cistern`: the hub server, its admin commands and the job reporter.

mod bench;
mod bench_deliver;
mod exporters;
mod healthcheck;
mod migrate_data;
mod verify;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cistern_server::{auth, Application, Config};
use cistern_store::{NewApiKey, Scope, Store};
use clap::{Args, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cistern",
    version,
    about = "Cistern: a self-hosted CI/CD event hub",
    after_help = GLOBAL_OPTIONS
)]
struct Cli {
    // The three global options are accepted before or after any command, and described once, in
    // `cistern --help` (GLOBAL_OPTIONS): listing them in every command's help drowned each
    // command's own options, and `report` and `satellite` have no use for them.
    #[arg(long, global = true, hide = true, env = "CISTERN_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, global = true, hide = true, env = "CISTERN_DATABASE_URL")]
    database: Option<String>,
    #[arg(long, global = true, hide = true, value_parser = ["pretty", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The global options, described once.
const GLOBAL_OPTIONS: &str = "\
Global options (before or after the command; every command that opens the database reads them):
      --config <FILE>          Configuration file (default: ./cistern.toml when it exists) [env: CISTERN_CONFIG=]
      --database <URL>         Database URL: sqlite://path (default sqlite://cistern.db) or postgres://user@host/db [env: CISTERN_DATABASE_URL=]
      --log-format <FORMAT>    Log format: pretty or json (default: the log_format setting, `pretty`)";

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "CISTERN_LISTEN")]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Copy everything from a SQLite database into a new PostgreSQL database, in batches with a
    /// progress bar, resumable after a kill (--resume); at the end every table's row count and
    /// checksum are compared.
    MigrateData(migrate_data::MigrateDataArgs),
    /// Copy the SQLite database to a new file while the hub runs (SQLite's online backup: one
    /// consistent snapshot, checked). For PostgreSQL use pg_dump or pg_basebackup.
    Backup {
        /// The new file.
        #[arg(long)]
        to: PathBuf,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Print delivery metrics as a table.
    #[command(subcommand)]
    Metrics(MetricsCmd),
    /// Manage named secrets (encrypted at rest; values are never shown).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Manage signed webhook sources.
    #[command(subcommand)]
    Sources(SourcesCmd),
    /// Manage outbound webhook subscriptions (notifications of runs, deployments, incidents).
    #[command(subcommand)]
    Subscriptions(SubscriptionsCmd),
    /// Manage trace exporters: each finished run sent as an OpenTelemetry trace (OTLP/HTTP).
    #[command(subcommand)]
    Exporters(exporters::ExportersCmd),
    /// Manage triggers: custom webhooks that start pipelines on Jenkins, GitHub, GitLab or any URL.
    #[command(subcommand)]
    Triggers(TriggersCmd),
    /// Measure the hub: an HTTP load generator.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Backfill runs from a file of payloads, one JSON object per line (NDJSON), straight into
    /// the database with the same parsing and rules as the HTTP endpoints. Resumable: a second
    /// run continues after the last committed line (`FILE.progress`).
    Import {
        /// The NDJSON file.
        file: PathBuf,
        /// Dialect of the lines: auto (decided per line), sei, propelo or allstacks. A line
        /// `{"dialect": "...", "body": {...}}` names its own.
        #[arg(long, default_value = "auto")]
        dialect: String,
        /// Writes in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Start from the first line even when a checkpoint exists.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Report CI runs to a hub from any CI: wrap a command, or report a job in steps.
    Report(cistern_agent::report::ReportArgs),
    /// The on-premise relay: serve the hub's ingestion endpoints locally, spool and forward,
    /// poll Jenkins and GitLab, send heartbeats; encrypt and decrypt its config.
    Satellite(cistern_agent::satellite::SatelliteArgs),
    /// Developer tools: fixture data.
    #[command(subcommand)]
    Dev(DevCmd),
    /// Print a shell completion script: `cistern completions bash > /etc/bash_completion.d/cistern`
    /// (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Probe a running hub's /healthz (exit 0 when it answers 2xx): the health check of the
    /// container image, which has no shell or curl.
    Healthcheck {
        /// The URL to probe [default: /healthz on the `listen` setting, loopback for 0.0.0.0].
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum DevCmd {
    /// Write a realistic history (pipelines, runs with stages and logs, deployments, failures
    /// and recoveries, heartbeats, satellites, signed sources, subscriptions with their
    /// deliveries, rejected posts) into the database, through the store's writer.
    Seed {
        /// Runs to write.
        #[arg(long, default_value_t = 2_000)]
        runs: usize,
        /// Days of history, ending now.
        #[arg(long, default_value_t = 42)]
        days: u32,
        /// Seed of the random generator (the same seed makes the same history).
        #[arg(long, default_value_t = 8)]
        seed: u64,
        /// Pipelines (at least 8; default 50 on 4 instances from 100,000 runs on, else 8 on 2).
        #[arg(long)]
        pipelines: Option<usize>,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Check the database against `cistern bench ingest --ack-log` logs: every acknowledged
    /// request stored exactly once, its event and outbox notification present, and the
    /// database's integrity check passing (exits 1 otherwise).
    VerifyAcks(verify::VerifyArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Post realistic runs at a hub and report throughput, latency and errors.
    Ingest(bench::IngestArgs),
    /// Serve 200 to every POST and do nothing else: the HTTP baseline the ingest figures are
    /// compared with.
    Baseline(bench::BaselineArgs),
    /// Measure outbound delivery: deliveries per second from an in-process hub to a local sink.
    Deliver(bench_deliver::DeliverArgs),
}

#[derive(Args)]
struct TenantArg {
    /// Tenant slug.
    #[arg(long, default_value = "default")]
    tenant: String,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key and print it (alone, on stdout). It is shown only this once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: ingest, read, admin, trigger.
        #[arg(long, default_value = "ingest")]
        scopes: String,
        /// Create the key only when the tenant has no active key (prints nothing otherwise): a
        /// first key made by a one-shot job that may run again (docker compose, Helm hooks).
        #[arg(long)]
        if_none: bool,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Rotate a key (by id, name or prefix): a new key with the same name and scopes is
    /// printed alone on stdout; the old key keeps working until the grace ends, then is refused
    /// (401, saying it was rotated).
    Rotate {
        /// Id, name or prefix of the key.
        key: String,
        /// How long the old key keeps working: 24h by default, 0s to end it now, at most 30d.
        #[arg(long, default_value = "24h")]
        grace: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Revoke a key by id, name or prefix.
    Revoke {
        /// Id, name or prefix of the key.
        key: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Args)]
struct MetricsArgs {
    /// Window start (RFC 3339 or YYYY-MM-DD); default 30 days before --until.
    #[arg(long)]
    since: Option<String>,
    /// Window end (RFC 3339 or YYYY-MM-DD); default now.
    #[arg(long)]
    until: Option<String>,
    /// Only this pipeline (full name or name).
    #[arg(long)]
    pipeline: Option<String>,
    /// Only this environment.
    #[arg(long)]
    environment: Option<String>,
    /// Only this project.
    #[arg(long)]
    project: Option<String>,
    /// Only this branch.
    #[arg(long)]
    branch: Option<String>,
    #[command(flatten)]
    tenant: TenantArg,
}

#[derive(Subcommand)]
enum MetricsCmd {
    /// The four DORA keys with their bands and counts.
    Dora(MetricsArgs),
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Set secrets: `NAME=VALUE`, `NAME=-` (value from stdin) or `NAME=@FILE` (value from a file).
    Set {
        /// One or more `NAME=VALUE` pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List secrets (names and dates, never values).
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete a secret.
    Delete {
        /// Name.
        name: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Replace the master key (in its key file) with a new random one, re-encrypting every
    /// secret of every tenant in one transaction. Stop the hub (every node) first.
    RotateMasterKey,
}

#[derive(Subcommand)]
enum SourcesCmd {
    /// Create a source and print its URL (`<public_url>/v1/hooks/<id>`), alone on stdout.
    Create {
        /// jobserv, github, gitlab, cdevents or standard.
        #[arg(long)]
        kind: String,
        /// The named secret that signs its requests.
        #[arg(long)]
        secret: Option<String>,
        /// A name to recognise it by.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List sources.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete a source.
    Delete {
        /// Source id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Subcommand)]
enum SubscriptionsCmd {
    /// Create a subscription and print its id, alone on stdout.
    Create {
        /// Where to POST (http or https).
        #[arg(long)]
        url: String,
        /// The named secret that signs each delivery.
        #[arg(long)]
        secret: String,
        /// Body format: jobserv (the JobServ build webhook), cdevents or native.
        #[arg(long, default_value = "jobserv")]
        format: String,
        /// Only failed runs (failure or error), and incidents.
        #[arg(long)]
        only_failures: bool,
        /// Only pipelines whose full name or name matches this glob (`*`, `?`, `[a-z]`).
        #[arg(long)]
        pipeline: Option<String>,
        /// Only branches matching this glob.
        #[arg(long)]
        branch: Option<String>,
        /// Only pipelines of this project.
        #[arg(long)]
        project: Option<String>,
        /// Comma-separated: run.completed, run.started, deployment.completed, incident.opened.
        #[arg(long, default_value = "run.completed")]
        events: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List subscriptions.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Enable a subscription: its waiting deliveries are sent again at once.
    Enable {
        /// Subscription id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Disable a subscription: nothing is sent or queued for it until it is enabled.
    Disable {
        /// Subscription id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete a subscription with its deliveries.
    Delete {
        /// Subscription id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum TriggersCmd {
    /// Create a trigger and print its id, alone on stdout.
    Create {
        /// orgIdentifier.
        #[arg(long)]
        org: String,
        /// projectIdentifier.
        #[arg(long)]
        project: String,
        /// pipelineIdentifier.
        #[arg(long)]
        pipeline: String,
        /// triggerIdentifier.
        #[arg(long)]
        trigger: String,
        /// The target URL; with a preset, Jenkins' job URL or the GitHub/GitLab API's base URL.
        #[arg(long)]
        url: Option<String>,
        /// HTTP method (POST, PUT, PATCH, GET, DELETE).
        #[arg(long)]
        method: Option<String>,
        /// A header, `Name: value` (repeatable); values may use {{correlation_id}},
        /// {{payload.field}}, {{secret.NAME}}.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Body template ({{correlation_id}}, {{payload}}, {{payload.a.b}}, {{secret.NAME}}).
        #[arg(long)]
        body: Option<String>,
        /// A ready-made target: jenkins, github or gitlab.
        #[arg(long)]
        preset: Option<String>,
        /// github: owner/repository.
        #[arg(long)]
        repo: Option<String>,
        /// github: the workflow file (ci.yml) or id.
        #[arg(long)]
        workflow: Option<String>,
        /// github, gitlab: the branch or tag to run.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// gitlab: the project's id or path.
        #[arg(long)]
        project_id: Option<String>,
        /// The named secret with the CI's credential (jenkins: user:api-token; github: a token;
        /// gitlab: the pipeline trigger token).
        #[arg(long)]
        token_secret: Option<String>,
        /// Let the token URL fire it without an API key.
        #[arg(long)]
        allow_token: bool,
        /// Who may fire it through its webhook URL: `key` (a key with the trigger scope, the
        /// default) or `none` (anyone with the URL, as the seed's keyless curl; its events can
        /// be followed without a key by their correlation id).
        #[arg(long, default_value = "key", value_parser = ["key", "none"])]
        auth: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List triggers.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Enable a trigger.
    Enable {
        /// Trigger id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Disable a trigger: calls are refused (NO_ENABLED_CUSTOM_TRIGGER_FOUND).
    Disable {
        /// Trigger id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete a trigger (its events are kept; those not yet sent are not sent).
    Delete {
        /// Trigger id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Give a trigger a new token URL (printed alone); the old token is refused at once.
    RotateToken {
        /// Trigger id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Subcommand)]
enum TenantsCmd {
    /// Create a tenant.
    Create {
        /// Slug (lowercase letters, digits, `-`, `_`).
        slug: String,
        /// Refuse runs from instances that were not registered first.
        #[arg(long)]
        strict: bool,
    },
    /// List tenants.
    List,
    /// Change a tenant's settings.
    Set {
        /// Slug.
        slug: String,
        /// Refuse runs from unregistered instances (true/false).
        #[arg(long)]
        strict: bool,
    },
}

fn main() {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Completions { shell } = cli.command {
        use std::io::Write;
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "cistern", &mut script);
        // A closed pipe (`| head`) is not an error worth a message.
        let _ = std::io::stdout().write_all(&script);
        return;
    }
    if let Command::Satellite(args) = cli.command {
        // `--config` names the satellite's file; CISTERN_CONFIG (the hub's) does not.
        let given = matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
        init_logging(
            &cli.log_format
                .clone()
                .unwrap_or_else(|| std::env::var("CISTERN_LOG_FORMAT").unwrap_or_default()),
            "info",
        );
        let code = cistern_agent::satellite::main(args, cli.config.filter(|_| given));
        std::process::exit(code);
    }
    // The reporter runs before any runtime or configuration: it must start the wrapped command
    // at once, and a hub's cistern.toml in the job's workspace is none of its business.
    if let Command::Report(args) = cli.command {
        std::process::exit(cistern_agent::report::main(args));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn config(cli: &Cli) -> Result<Config> {
    let mut config = Config::load_explained(cli.config.as_deref())
        .map_err(|e| anyhow::anyhow!("reading configuration: {e}"))?;
    if let Some(db) = &cli.database {
        config.database_url = db.clone();
    }
    if let Some(f) = &cli.log_format {
        config.log_format = f.clone();
    }
    if !matches!(config.log_format.as_str(), "pretty" | "json") {
        bail!(
            "log_format must be pretty or json, got {:?}",
            config.log_format
        );
    }
    Ok(config)
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber_filter(default_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Colour in logs only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn tracing_subscriber_filter(default_level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("CISTERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
}

async fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>> {
    cistern_store::open(&config.database_url, &config.store_settings())
        .await
        .with_context(|| {
            format!(
                "opening database {}",
                cistern_server::app::redact(&config.database_url)
            )
        })
}

async fn tenant(store: &dyn Store, slug: &str) -> Result<cistern_store::Tenant> {
    store.tenant_by_slug(slug).await?.with_context(|| {
        format!("no tenant {slug:?}; create it with `cistern tenants create {slug}`")
    })
}

fn valid_slug(slug: &str) -> Result<()> {
    if slug.is_empty()
        || slug.len() > 63
        || !slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        bail!("tenant slug {slug:?} must be 1-63 characters of lowercase letters, digits, '-' and '_'");
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let mut config = config(&cli)?;
    match cli.command {
        Command::MigrateData(args) => {
            init_logging(&config.log_format, "warn");
            migrate_data::run(args).await?;
        }
        // Printed in `main`, before any configuration is read.
        Command::Completions { .. } => {}
        Command::Healthcheck { url, timeout } => {
            let url = url.unwrap_or_else(|| healthcheck::default_url(&config.listen));
            healthcheck::probe(&url, std::time::Duration::from_secs(timeout)).await?;
        }
        Command::Serve { listen } => {
            if let Some(l) = listen {
                config.listen = l;
            }
            init_logging(&config.log_format, "info,tower_http=info");
            let app = Application::build(config.clone()).await?;
            tracing::info!(addr = %app.local_addr(), database = %cistern_server::app::redact(&config.database_url), "cistern listening");
            app.run_until_stopped().await?;
        }
        Command::Bench(BenchCmd::Ingest(args)) => bench::ingest(args).await?,
        Command::Bench(BenchCmd::Baseline(args)) => bench::baseline(args).await?,
        Command::Metrics(MetricsCmd::Dora(args)) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            dora_table(store.as_ref(), args).await?;
        }
        Command::Bench(BenchCmd::Deliver(args)) => bench_deliver::deliver(args).await?,
        Command::Subscriptions(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            subscriptions(store.as_ref(), &config, cmd).await?;
        }
        Command::Exporters(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            exporters::run(store.as_ref(), &config, cmd).await?;
        }
        Command::Triggers(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            triggers(store.as_ref(), &config, cmd).await?;
        }
        Command::Secrets(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            let master = config
                .master_key(store.as_ref())
                .await
                .map_err(anyhow::Error::msg)?;
            secrets(store.as_ref(), &master, &config, cmd).await?;
        }
        Command::Sources(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            sources(store.as_ref(), &config, cmd).await?;
        }
        Command::Report(_) => unreachable!("`cistern report` returns from main"),
        Command::Dev(DevCmd::Seed {
            runs,
            days,
            seed,
            pipelines,
            tenant,
        }) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            let master = config
                .master_key(store.as_ref())
                .await
                .map_err(anyhow::Error::msg)?;
            let mut opts = cistern_server::seed::SeedOptions::new(runs, days);
            opts.seed = seed;
            if let Some(n) = pipelines {
                opts.pipelines = n;
            }
            opts.tenant = tenant.tenant;
            opts.master = Some(std::sync::Arc::new(master));
            let started = std::time::Instant::now();
            let summary = cistern_server::seed::seed_with_progress(&store, &opts, |n| {
                if n > 0 && n < runs as u64 {
                    eprintln!("  {n} of {runs} runs written");
                }
            })
            .await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "seeded {} runs ({} deployments, {} failed) over {days} days for {} pipelines on {} instances, {} satellites, {} signed sources, {} subscriptions ({} deliveries delivered, {} pending, {} failed), and {} rejected events, in {secs:.1} s ({:.0} runs/s)",
                summary.runs,
                summary.deployments,
                summary.failed,
                summary.pipelines,
                summary.instances,
                summary.satellites,
                summary.sources,
                summary.subscriptions,
                summary.deliveries[0],
                summary.deliveries[1],
                summary.deliveries[2],
                summary.rejected_events,
                summary.runs as f64 / secs.max(1e-9)
            );
        }
        Command::Import {
            file,
            dialect,
            concurrency,
            restart,
            tenant,
        } => {
            init_logging(&config.log_format, "warn");
            let Some(dialect) = cistern_server::import::ImportDialect::parse(&dialect) else {
                anyhow::bail!("--dialect {dialect:?}: use auto, sei, propelo or allstacks");
            };
            let store = open_store(&config).await?;
            let opts = cistern_server::import::ImportOptions {
                file,
                tenant: tenant.tenant,
                dialect,
                concurrency,
                restart,
                max_log_bytes: config.max_log_bytes,
            };
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} lines {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = std::time::Instant::now();
            let result = cistern_server::import::import(&store, &opts, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            let summary = result?;
            let secs = started.elapsed().as_secs_f64();
            for r in &summary.first_refused {
                let why: Vec<String> = r
                    .errors
                    .iter()
                    .map(|e| {
                        if e.field.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.field, e.message)
                        }
                    })
                    .collect();
                eprintln!("line {}: refused: {}", r.line, why.join("; "));
            }
            eprintln!(
                "{} lines{} in {secs:.1} s ({:.0} lines/s): {} runs created, {} updated, {} other events, {} refused",
                summary.lines,
                if summary.resumed_after > 0 {
                    format!(" (resumed after line {})", summary.resumed_after)
                } else {
                    String::new()
                },
                summary.lines as f64 / secs.max(1e-9),
                summary.created,
                summary.updated,
                summary.other,
                summary.refused
            );
            if summary.refused > 0 {
                std::process::exit(2);
            }
        }
        Command::Dev(DevCmd::VerifyAcks(args)) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            let findings = verify::verify(store.as_ref(), &args).await?;
            verify::report(&findings, args.json)?;
        }
        Command::Satellite(_) => unreachable!("`cistern satellite` returns from main"),
        Command::Backup { to } => {
            init_logging(&config.log_format, "warn");
            if config.database_url.starts_with("postgres") {
                bail!("cistern backup copies a SQLite database; for PostgreSQL use its own tools: pg_dump (a logical copy) or pg_basebackup (a physical one)");
            }
            let from = cistern_store::sqlite::path_from_url(&config.database_url)?;
            let started = std::time::Instant::now();
            let (f, t) = (from.clone(), to.clone());
            let report = tokio::task::spawn_blocking(move || cistern_store::sqlite::backup(&f, &t))
                .await??;
            eprintln!(
                "backed up {} to {}: {} pages, {:.1} MiB in {:.2} s; integrity check: {}",
                from.display(),
                to.display(),
                report.pages,
                report.bytes as f64 / (1024.0 * 1024.0),
                started.elapsed().as_secs_f64(),
                report.check
            );
        }
        Command::Migrate => {
            init_logging(&config.log_format, "warn");
            open_store(&config).await?;
            eprintln!(
                "migrations applied to {}",
                cistern_server::app::redact(&config.database_url)
            );
        }
        Command::Keys(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            keys(store.as_ref(), cmd).await?;
        }
        Command::Tenants(cmd) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            match cmd {
                TenantsCmd::Create { slug, strict } => {
                    valid_slug(&slug)?;
                    let t = store.create_tenant(&slug, strict).await?;
                    println!("{}", t.slug);
                }
                TenantsCmd::List => {
                    for t in store.list_tenants().await? {
                        println!("{}\t{}\tstrict={}", t.slug, t.id, t.strict);
                    }
                }
                TenantsCmd::Set { slug, strict } => {
                    let t = tenant(store.as_ref(), &slug).await?;
                    store.set_tenant_strict(&t.id, strict).await?;
                    eprintln!("tenant {slug}: strict={strict}");
                }
            }
        }
    }
    Ok(())
}

async fn keys(store: &dyn Store, cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Create {
            name,
            scopes,
            if_none,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            if if_none {
                let active = store
                    .list_api_keys(&tenant.id)
                    .await?
                    .into_iter()
                    .filter(|k| k.revoked_at.is_none())
                    .count();
                if active > 0 {
                    eprintln!(
                        "tenant {} has {active} active key(s): no key created (--if-none)",
                        tenant.slug
                    );
                    return Ok(());
                }
            }
            let mut parsed = Vec::new();
            for s in scopes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Scope::parse(s) {
                    Some(scope) if !parsed.contains(&scope) => parsed.push(scope),
                    Some(_) => {}
                    None => bail!("unknown scope {s:?}; scopes are ingest, read, admin, trigger"),
                }
            }
            if parsed.is_empty() {
                bail!("--scopes names no scope; use ingest, read, admin and/or trigger");
            }
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let key = auth::generate_key();
            store
                .create_api_key(NewApiKey {
                    tenant_id: tenant.id,
                    name,
                    prefix: key.prefix,
                    hash: key.hash,
                    scopes: parsed,
                })
                .await?;
            println!("{}", key.secret);
        }
        KeysCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("ID\tNAME\tPREFIX\tSCOPES\tCREATED\tREVOKED\tSTATE");
            let now = time::OffsetDateTime::now_utc();
            for (k, r) in cistern_server::keys::list(store, &tenant.id)
                .await
                .map_err(api)?
            {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                let state = cistern_server::keys::state(&k, r.as_ref(), now);
                let state = match &r {
                    Some(r) if state == "grace" => format!(
                        "grace until {}",
                        cistern_server::delivery::format::rfc3339(r.expires_at)
                    ),
                    _ => state.to_owned(),
                };
                println!(
                    "{}\t{}\t{}…\t{}\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.prefix,
                    scopes.join(","),
                    k.created_at,
                    k.revoked_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    state
                );
            }
        }
        KeysCmd::Rotate {
            key,
            grace,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let grace = cistern_server::keys::parse_grace("--grace", &grace)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let old = cistern_server::keys::resolve(store, &tenant.id, &key)
                .await
                .map_err(api)?;
            let now = time::OffsetDateTime::now_utc();
            let (issued, rotation) =
                cistern_server::keys::rotate(store, &tenant.id, &old, grace, now)
                    .await
                    .map_err(api)?;
            println!("{}", issued.secret);
            eprintln!(
                "key {} ({}…) rotated: it works until {}, then answers 401; its replacement is {} ({}…)",
                old.id,
                old.prefix,
                cistern_server::delivery::format::rfc3339(rotation.expires_at),
                issued.info.id,
                issued.info.prefix
            );
        }
        KeysCmd::Revoke { key, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            let k = store.revoke_api_key(&tenant.id, &key).await?;
            // Its dashboard sessions end now (a running hub would also end them at their next use).
            let sessions = store.end_sessions_of_key(&k.id).await?;
            eprintln!(
                "revoked key {} ({}, {}…); {sessions} dashboard session(s) ended",
                k.id, k.name, k.prefix
            );
        }
    }
    Ok(())
}

/// Where the configuration lets targets point (the hub's own rules, so the CLI refuses what the
/// API would).
fn targets(config: &Config) -> Result<cistern_server::delivery::target::TargetPolicy> {
    cistern_server::delivery::target::TargetPolicy::from_config(config).map_err(anyhow::Error::msg)
}

fn api(e: cistern_server::error::ApiError) -> anyhow::Error {
    let fields: Vec<String> = e.errors.iter().map(|f| f.to_string()).collect();
    if fields.is_empty() {
        anyhow::anyhow!("{}", e.detail)
    } else {
        anyhow::anyhow!("{}", fields.join("; "))
    }
}

async fn secrets(
    store: &dyn Store,
    master: &cistern_server::secrets::MasterKey,
    config: &Config,
    cmd: SecretsCmd,
) -> Result<()> {
    match cmd {
        SecretsCmd::Set { pairs, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            for pair in pairs {
                let Some((name, value)) = pair.split_once('=') else {
                    bail!("{pair:?} is not NAME=VALUE (use NAME=- to read the value from stdin, NAME=@FILE from a file)");
                };
                let value: Vec<u8> = if value == "-" {
                    let mut buf = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)?;
                    buf.trim_end_matches(['\n', '\r']).as_bytes().to_vec()
                } else if let Some(path) = value.strip_prefix('@') {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                    text.trim_end_matches(['\n', '\r']).as_bytes().to_vec()
                } else {
                    value.as_bytes().to_vec()
                };
                let created = cistern_server::routes::admin::set_secret(
                    store,
                    master,
                    config.secret_grace_hours,
                    &tenant.id,
                    name,
                    &value,
                )
                .await
                .map_err(api)?;
                if created {
                    eprintln!("secret {name} created");
                } else {
                    eprintln!(
                        "secret {name} updated (the previous value stays valid for {} h)",
                        config.secret_grace_hours
                    );
                }
            }
        }
        SecretsCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("NAME\tCREATED\tUPDATED\tPREVIOUS VALID UNTIL");
            for s in store.list_secrets(&tenant.id).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    s.name,
                    s.created_at,
                    s.updated_at,
                    s.previous_valid_until
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        SecretsCmd::RotateMasterKey => {
            if config
                .master_key
                .as_deref()
                .is_some_and(|v| !v.trim().is_empty())
            {
                bail!("the master key comes from CISTERN_MASTER_KEY (or master_key); rotation writes a key file: move the key into a file named by master_key_file (CISTERN_MASTER_KEY_FILE), unset CISTERN_MASTER_KEY, then rotate");
            }
            let file = config.master_key_path();
            let n = cistern_server::secrets::rotate_master_key(store, &file)
                .await
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "master key rotated: {n} secrets re-encrypted; the new key is in {} (back it up; the old key no longer opens them)",
                file.display()
            );
        }
        SecretsCmd::Delete { name, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store.delete_secret(&tenant.id, &name).await? {
                bail!("no secret named {name:?}");
            }
            eprintln!("secret {name} deleted");
        }
    }
    Ok(())
}

/// The hub's base URL as senders reach it: `public_url`, else the listen address.
fn public_base(config: &Config) -> String {
    config
        .public_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| format!("http://{}", config.listen))
        .trim_end_matches('/')
        .to_owned()
}

async fn sources(store: &dyn Store, config: &Config, cmd: SourcesCmd) -> Result<()> {
    let base = public_base(config);
    match cmd {
        SourcesCmd::Create {
            kind,
            secret,
            name,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let s = cistern_server::routes::admin::new_source(
                store,
                &tenant.id,
                &kind,
                secret.as_deref(),
                name.as_deref(),
            )
            .await
            .map_err(api)?;
            println!("{base}/v1/hooks/{}", s.id);
        }
        SourcesCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("ID\tKIND\tNAME\tSECRET\tURL");
            for s in store.list_sources(&tenant.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{base}/v1/hooks/{}",
                    s.id,
                    s.kind,
                    s.name,
                    s.secret_name.as_deref().unwrap_or("-"),
                    s.id
                );
            }
        }
        SourcesCmd::Delete { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store.delete_source(&tenant.id, &id).await? {
                bail!("no source {id:?}");
            }
            eprintln!("source {id} deleted");
        }
    }
    Ok(())
}

fn parse_when(s: &str) -> Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .with_context(|| format!("{s:?} is not a date (YYYY-MM-DD) or RFC 3339 time"))
}

async fn dora_table(store: &dyn Store, a: MetricsArgs) -> Result<()> {
    let tenant = tenant(store, &a.tenant.tenant).await?;
    let until = a
        .until
        .as_deref()
        .map(parse_when)
        .transpose()?
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let since = a
        .since
        .as_deref()
        .map(parse_when)
        .transpose()?
        .unwrap_or(until - time::Duration::days(30));
    let filter = cistern_store::MetricsFilter {
        pipeline: a.pipeline,
        environment: a.environment,
        project: a.project,
        branch: a.branch,
        ..Default::default()
    };
    let deployments = store.deployments(&tenant.id, &filter, since, until).await?;
    let incidents = store.incidents(&tenant.id, &filter, since, until).await?;
    let d = cistern_core::metrics::dora(&deployments, &incidents, since, until);
    let band = |b: Option<cistern_core::metrics::Band>| {
        b.map(|b| format!("{b:?}").to_lowercase())
            .unwrap_or_else(|| "-".into())
    };
    let dur = |s: Option<f64>| match s {
        None => "-".to_owned(),
        Some(s) if s < 3600.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} days", s / 86_400.0),
    };
    println!("DORA metrics, {} → {}", d.since.date(), d.until.date());
    println!("{:<28} {:<24} {:<8} based on", "metric", "value", "band");
    println!(
        "{:<28} {:<24} {:<8} {} successful deployments",
        "deployment frequency",
        format!(
            "{:.2}/day, {:.1} days/week",
            d.deployment_frequency.per_day, d.deployment_frequency.deploy_days_per_week
        ),
        band(d.deployment_frequency.band),
        d.deployment_frequency.deployments
    );
    println!(
        "{:<28} {:<24} {:<8} {} commits",
        "lead time for changes",
        format!(
            "{} (p90 {})",
            dur(d.lead_time.median_seconds),
            dur(d.lead_time.p90_seconds)
        ),
        band(d.lead_time.band),
        d.lead_time.count
    );
    println!(
        "{:<28} {:<24} {:<8} {} of {} deployments",
        "change failure rate",
        d.change_failure_rate
            .rate
            .map(|r| format!("{:.1} %", r * 100.0))
            .unwrap_or_else(|| "-".into()),
        band(d.change_failure_rate.band),
        d.change_failure_rate.failed,
        d.change_failure_rate.deployments
    );
    println!(
        "{:<28} {:<24} {:<8} {} restorations",
        "time to restore",
        dur(d.time_to_restore.median_seconds),
        band(d.time_to_restore.band),
        d.time_to_restore.count
    );
    Ok(())
}

async fn subscriptions(store: &dyn Store, config: &Config, cmd: SubscriptionsCmd) -> Result<()> {
    use cistern_server::routes::subscriptions::{build_subscription, SubscriptionInput};
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        SubscriptionsCmd::Create {
            url,
            secret,
            format,
            only_failures,
            pipeline,
            branch,
            project,
            events,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let input = SubscriptionInput {
                url,
                secret,
                format: Some(format),
                events: Some(events.split(',').map(str::to_owned).collect()),
                only_failures,
                pipeline,
                branch,
                project,
                headers: Vec::new(),
            };
            let sub = build_subscription(store, &tenant.id, input, &targets(config)?, None)
                .await
                .map_err(api)?;
            store.create_subscription(&sub).await?;
            println!("{}", sub.id);
        }
        SubscriptionsCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("ID\tURL\tFORMAT\tEVENTS\tFILTERS\tSTATE");
            for s in store.list_subscriptions(&tenant.id).await? {
                let mut filters = Vec::new();
                if s.only_failures {
                    filters.push("only-failures".to_owned());
                }
                for (name, v) in [
                    ("pipeline", &s.pipeline),
                    ("branch", &s.branch),
                    ("project", &s.project),
                ] {
                    if let Some(v) = v {
                        filters.push(format!("{name}={v}"));
                    }
                }
                let state = if s.enabled {
                    "enabled".to_owned()
                } else {
                    format!("disabled: {}", s.disabled_reason.as_deref().unwrap_or("-"))
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.url,
                    s.format.as_str(),
                    s.events
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    if filters.is_empty() {
                        "-".to_owned()
                    } else {
                        filters.join(" ")
                    },
                    state
                );
            }
        }
        SubscriptionsCmd::Enable { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store
                .set_subscription_enabled(&tenant.id, &id, true, None, now)
                .await?
            {
                bail!("no subscription {id:?}");
            }
            eprintln!("subscription {id} enabled; its waiting deliveries are due now");
        }
        SubscriptionsCmd::Disable { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store
                .set_subscription_enabled(&tenant.id, &id, false, Some("disabled by a user"), now)
                .await?
            {
                bail!("no subscription {id:?}");
            }
            eprintln!("subscription {id} disabled");
        }
        SubscriptionsCmd::Delete { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store.delete_subscription(&tenant.id, &id).await? {
                bail!("no subscription {id:?}");
            }
            eprintln!("subscription {id} deleted");
        }
    }
    Ok(())
}

async fn triggers(store: &dyn Store, config: &Config, cmd: TriggersCmd) -> Result<()> {
    use cistern_server::triggers::{build_trigger, presets::PresetInput, TriggerInput};
    let public_url = config
        .public_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let public_url = public_url.trim_end_matches('/');
    let set_enabled = |id: String, tenant_slug: String, enabled: bool| async move {
        let tenant = tenant(store, &tenant_slug).await?;
        let Some(mut t) = store.get_trigger(&tenant.id, &id).await? else {
            bail!("no trigger {id:?}");
        };
        t.enabled = enabled;
        t.updated_at = time::OffsetDateTime::now_utc();
        store.update_trigger(&t).await?;
        eprintln!(
            "trigger {id} {}",
            if enabled { "enabled" } else { "disabled" }
        );
        Ok(())
    };
    match cmd {
        TriggersCmd::Create {
            org,
            project,
            pipeline,
            trigger,
            url,
            method,
            headers,
            body,
            preset,
            repo,
            workflow,
            git_ref,
            project_id,
            token_secret,
            allow_token,
            auth,
            disabled,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let input = TriggerInput {
                org,
                project,
                pipeline,
                trigger,
                url,
                method,
                headers,
                body,
                preset: preset.map(|kind| PresetInput {
                    kind,
                    url: None,
                    repo,
                    workflow,
                    project_id,
                    git_ref,
                    token_secret,
                }),
                allow_token,
                auth: cistern_store::TriggerAuth::parse(&auth).unwrap_or_default(),
                enabled: !disabled,
            };
            let mut t = build_trigger(store, &tenant.id, input, &targets(config)?, None)
                .await
                .map_err(api)?;
            let token = cistern_server::triggers::issue_token(&mut t);
            store.create_trigger(&t).await?;
            println!("{}", t.id);
            let url = cistern_server::triggers::webhook_url(public_url, &tenant.slug, &t);
            eprintln!("fire it: {}", cistern_server::triggers::curl_line(&t, &url));
            if t.allow_token {
                eprintln!(
                    "or, without a key: {} (shown this once; `cistern triggers rotate-token {}` makes a new one)",
                    cistern_server::triggers::token_url(public_url, &tenant.slug, &t, &token),
                    t.id
                );
            }
        }
        TriggersCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("ID\tORG/PROJECT/PIPELINE\tTRIGGER\tTARGET\tSTATE");
            for t in store.list_triggers(&tenant.id).await? {
                println!(
                    "{}\t{}/{}/{}\t{}\t{} {}\t{}{}{}",
                    t.id,
                    t.key.org,
                    t.key.project,
                    t.key.pipeline,
                    t.key.trigger,
                    t.target.method,
                    t.target.url,
                    if t.enabled { "enabled" } else { "disabled" },
                    if t.allow_token { " token-url" } else { "" },
                    if t.auth == cistern_store::TriggerAuth::None {
                        " no-key"
                    } else {
                        ""
                    },
                );
            }
        }
        TriggersCmd::Enable { id, tenant: t } => set_enabled(id, t.tenant, true).await?,
        TriggersCmd::Disable { id, tenant: t } => set_enabled(id, t.tenant, false).await?,
        TriggersCmd::RotateToken { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            let Some(mut trigger) = store.get_trigger(&tenant.id, &id).await? else {
                bail!("no trigger {id:?}");
            };
            let token = cistern_server::triggers::issue_token(&mut trigger);
            if !store
                .set_trigger_token(
                    &tenant.id,
                    &id,
                    &trigger.token_hash,
                    time::OffsetDateTime::now_utc(),
                )
                .await?
            {
                bail!("no trigger {id:?}");
            }
            println!(
                "{}",
                cistern_server::triggers::token_url(public_url, &tenant.slug, &trigger, &token)
            );
            eprintln!("trigger {id}: new token URL above (shown this once); the old token is refused from now on");
        }
        TriggersCmd::Delete { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            if !store
                .delete_trigger(&tenant.id, &id, time::OffsetDateTime::now_utc())
                .await?
            {
                bail!("no trigger {id:?}");
            }
            eprintln!("trigger {id} deleted");
        }
    }
    Ok(())
}
