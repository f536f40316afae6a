//! `cistern`: the hub server and its admin commands.

mod bench;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cistern_server::{auth, Application, Config};
use cistern_store::{NewApiKey, Scope, Store};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cistern",
    version,
    about = "Cistern: a self-hosted CI/CD event hub"
)]
struct Cli {
    /// Configuration file (default: ./cistern.toml when it exists).
    #[arg(long, global = true, env = "CISTERN_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://path (default sqlite://cistern.db) or postgres://user@host/db.
    #[arg(long, global = true, env = "CISTERN_DATABASE_URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

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
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Measure the hub: an HTTP load generator.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Developer tools: fixture data.
    #[command(subcommand)]
    Dev(DevCmd),
}

#[derive(Subcommand)]
enum DevCmd {
    /// Write a realistic history (pipelines, runs with stages and logs, deployments, failures
    /// and recoveries, heartbeats, rejected posts) into the database, through the store's writer.
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
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Post realistic runs at a hub and report throughput, latency and errors.
    Ingest(bench::IngestArgs),
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
        /// Comma-separated scopes: ingest, read, admin.
        #[arg(long, default_value = "ingest")]
        scopes: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List keys (never the keys themselves).
    List {
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
    let cli = Cli::parse();
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
    let mut config = Config::load(cli.config.as_deref()).context("reading configuration")?;
    if let Some(db) = &cli.database {
        config.database_url = db.clone();
    }
    Ok(config)
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber_filter(default_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
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
        Command::Dev(DevCmd::Seed {
            runs,
            days,
            seed,
            tenant,
        }) => {
            init_logging(&config.log_format, "warn");
            let store = open_store(&config).await?;
            let mut opts = cistern_server::seed::SeedOptions::new(runs, days);
            opts.seed = seed;
            opts.tenant = tenant.tenant;
            let started = std::time::Instant::now();
            let summary = cistern_server::seed::seed_with_progress(&store, &opts, |n| {
                if n > 0 && n < runs as u64 {
                    eprintln!("  {n} of {runs} runs written");
                }
            })
            .await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "seeded {} runs ({} deployments, {} failed) over {days} days for {} pipelines on {} instances, and {} rejected events, in {secs:.1} s ({:.0} runs/s)",
                summary.runs,
                summary.deployments,
                summary.failed,
                summary.pipelines,
                summary.instances,
                summary.rejected_events,
                summary.runs as f64 / secs.max(1e-9)
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
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let mut parsed = Vec::new();
            for s in scopes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Scope::parse(s) {
                    Some(scope) if !parsed.contains(&scope) => parsed.push(scope),
                    Some(_) => {}
                    None => bail!("unknown scope {s:?}; scopes are ingest, read, admin"),
                }
            }
            if parsed.is_empty() {
                bail!("--scopes names no scope; use ingest, read and/or admin");
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
            println!("ID\tNAME\tPREFIX\tSCOPES\tCREATED\tREVOKED");
            for k in store.list_api_keys(&tenant.id).await? {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{}\t{}\t{}…\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.prefix,
                    scopes.join(","),
                    k.created_at,
                    k.revoked_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCmd::Revoke { key, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            let k = store.revoke_api_key(&tenant.id, &key).await?;
            eprintln!("revoked key {} ({}, {}…)", k.id, k.name, k.prefix);
        }
    }
    Ok(())
}
