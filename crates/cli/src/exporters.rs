//! `cistern exporters`: trace exporters (finished runs as OpenTelemetry traces, sent to an
//! OTLP/HTTP receiver through the outbox).

use anyhow::{bail, Result};
use cistern_server::Config;
use cistern_store::{DeliveryFormat, Store};
use clap::Subcommand;

use super::{api, targets, tenant, TenantArg};

#[derive(Subcommand)]
pub enum ExportersCmd {
    /// Create an exporter and print its id, alone on stdout.
    Create {
        /// Kind of exporter: otlp (OTLP/HTTP protobuf traces).
        #[arg(long)]
        kind: String,
        /// The receiver's traces endpoint, e.g. https://otel.example:4318/v1/traces.
        #[arg(long)]
        url: String,
        /// A header added to every request, `Name: value` (repeatable); a value may name a
        /// secret, `Authorization: Bearer {{secret.otlp-token}}`.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// A named secret that also signs each request (optional).
        #[arg(long)]
        secret: Option<String>,
        /// Only failed runs (failure or error).
        #[arg(long)]
        only_failures: bool,
        /// Only pipelines whose full name or name matches this glob.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only branches matching this glob.
        #[arg(long)]
        branch: Option<String>,
        /// Only pipelines of this project.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List exporters.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete an exporter with its deliveries.
    Delete {
        /// Exporter id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

pub async fn run(store: &dyn Store, config: &Config, cmd: ExportersCmd) -> Result<()> {
    use cistern_server::delivery::headers::parse_line;
    use cistern_server::routes::exporters::build_exporter;
    use cistern_server::routes::subscriptions::SubscriptionInput;
    match cmd {
        ExportersCmd::Create {
            kind,
            url,
            headers,
            secret,
            only_failures,
            pipeline,
            branch,
            project,
            tenant: t,
        } => {
            let tenant = tenant(store, &t.tenant).await?;
            let headers = headers
                .iter()
                .map(|h| parse_line(h).map_err(|e| anyhow::anyhow!("--header: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let input = SubscriptionInput {
                url,
                secret: secret.unwrap_or_default(),
                only_failures,
                pipeline,
                branch,
                project,
                headers,
                ..Default::default()
            };
            let sub = build_exporter(store, &tenant.id, &kind, input, &targets(config)?)
                .await
                .map_err(api)?;
            store.create_subscription(&sub).await?;
            println!("{}", sub.id);
        }
        ExportersCmd::List { tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            println!("ID\tKIND\tURL\tHEADERS\tSTATE");
            for s in store.list_subscriptions(&tenant.id).await? {
                if s.format != DeliveryFormat::Otlp {
                    continue;
                }
                // Names only: a value may be a credential given in clear.
                let names: Vec<&str> = s.headers.iter().map(|h| h.name.as_str()).collect();
                let state = if s.enabled {
                    "enabled".to_owned()
                } else {
                    format!("disabled: {}", s.disabled_reason.as_deref().unwrap_or("-"))
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.format.as_str(),
                    s.url,
                    if names.is_empty() {
                        "-".to_owned()
                    } else {
                        names.join(",")
                    },
                    state
                );
            }
        }
        ExportersCmd::Delete { id, tenant: t } => {
            let tenant = tenant(store, &t.tenant).await?;
            match store.get_subscription(&tenant.id, &id).await? {
                Some(s) if s.format == DeliveryFormat::Otlp => {
                    store.delete_subscription(&tenant.id, &id).await?;
                    eprintln!("exporter {id} deleted");
                }
                _ => bail!("no exporter {id:?}"),
            }
        }
    }
    Ok(())
}
