//! `cistern bench deliver`: outbound delivery throughput and latency, measured end to end in
//! one process: a hub (on a temporary SQLite database, or the PostgreSQL named by `--database`),
//! a local sink that answers 204 (after `--sink-delay`), and the sink subscribed in the native
//! format.
//!
//! Two phases:
//! - **backlog**: runs are posted while no worker runs, then the worker starts and drains the
//!   queue: deliveries per second of the worker alone (claim, sign, POST, record).
//! - **live**: runs are posted with the worker running: the time from a run's acknowledgement
//!   to its delivery at the sink (p50, p99), and the throughput under ingestion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use cistern_server::delivery::{DeliverySettings, Worker};
use cistern_server::{Application, Config};
use cistern_store::{NewApiKey, Scope};

/// Options of `cistern bench deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Runs posted in the backlog phase (each is one delivery per subscription).
    #[arg(long, default_value_t = 2000)]
    pub runs: u64,
    /// Runs posted in the live phase.
    #[arg(long, default_value_t = 1000)]
    pub live_runs: u64,
    /// Subscriptions (each receives every run).
    #[arg(long, default_value_t = 1)]
    pub subscriptions: usize,
    /// Attempts in flight at once (delivery_concurrency).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Attempts in flight per subscription (delivery_concurrency_per_subscription).
    #[arg(long, default_value_t = 32)]
    pub per_subscription: usize,
    /// Time the sink takes to answer each request.
    #[arg(long, default_value = "0ms", value_parser = crate::bench::parse_duration)]
    pub sink_delay: Duration,
    /// Requests in flight while posting runs.
    #[arg(long, default_value_t = 32)]
    pub post_concurrency: usize,
    /// Run on this PostgreSQL database (a scratch one: the benchmark's runs stay in it) instead
    /// of a temporary SQLite file.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct Sink {
    count: AtomicU64,
    /// Run id → when its delivery arrived.
    arrived: Mutex<HashMap<String, Instant>>,
    delay: Mutex<Duration>,
}

async fn sink_handler(
    axum::extract::State(sink): axum::extract::State<Arc<Sink>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let delay = *sink.delay.lock().expect("sink lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let now = Instant::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(id) = v["data"]["id"].as_str() {
            sink.arrived
                .lock()
                .expect("sink lock")
                .entry(id.to_owned())
                .or_insert(now);
        }
    }
    sink.count.fetch_add(1, Ordering::SeqCst);
    axum::http::StatusCode::NO_CONTENT
}

/// Posts runs `from..to` through the hub's SEI endpoint; returns each run id with the instant
/// its acknowledgement came back.
async fn post_runs(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    from: u64,
    to: u64,
    concurrency: usize,
) -> Result<Vec<(String, Instant)>> {
    use futures::StreamExt;
    let results: Vec<Result<(String, Instant)>> = futures::stream::iter(from..to)
        .map(|n| {
            let body = crate::bench::sei_body(n, 0, "exec").unwrap_or_default();
            async move {
                let resp = client
                    .post(format!("{base}/v1/custom-cicd"))
                    .header("Authorization", format!("ApiKey {key}"))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let at = Instant::now();
                let status = resp.status();
                let v: Value = resp.json().await?;
                if !status.is_success() {
                    bail!("posting run {n}: {status} {v}");
                }
                Ok((v["id"].as_str().unwrap_or_default().to_owned(), at))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn wait_count(sink: &Sink, want: u64, limit: Duration) -> Result<Instant> {
    let start = Instant::now();
    loop {
        if sink.count.load(Ordering::SeqCst) >= want {
            return Ok(Instant::now());
        }
        if start.elapsed() > limit {
            bail!(
                "only {} of {want} deliveries arrived within {limit:?}",
                sink.count.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the benchmark.
pub async fn deliver(args: DeliverArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let database_url = args
        .postgres
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.clone(),
        master_key_file: Some(dir.path().join("cistern.key").display().to_string()),
        allow_private_targets: true,
        delivery_worker: false,
        delivery_concurrency: args.concurrency,
        delivery_concurrency_per_subscription: args.per_subscription,
        delivery_poll_interval: "100ms".into(),
        ..Config::default()
    };
    let settings = DeliverySettings::from_config(&config).map_err(anyhow::Error::msg)?;
    let app = Application::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_with_shutdown(async move {
        let _ = stop_rx.await;
    }));

    let sink = Arc::new(Sink::default());
    *sink.delay.lock().expect("sink lock") = args.sink_delay;
    let sink_app = axum::Router::new()
        .fallback(sink_handler)
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/sink", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, sink_app).await });

    let store = state.store.clone();
    let tenant = store
        .tenant_by_slug("default")
        .await?
        .context("the default tenant")?;
    let key = cistern_server::auth::generate_key();
    store
        .create_api_key(NewApiKey {
            tenant_id: tenant.id.clone(),
            name: "bench".into(),
            prefix: key.prefix.clone(),
            hash: key.hash.clone(),
            scopes: vec![Scope::Ingest],
        })
        .await?;
    cistern_server::routes::admin::set_secret(
        store.as_ref(),
        &state.master,
        24,
        &tenant.id,
        "bench",
        b"bench-secret",
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    for _ in 0..args.subscriptions.max(1) {
        let sub = cistern_server::routes::subscriptions::build_subscription(
            store.as_ref(),
            &tenant.id,
            cistern_server::routes::subscriptions::SubscriptionInput {
                url: sink_url.clone(),
                secret: "bench".into(),
                format: Some("native".into()),
                ..Default::default()
            },
            &settings.targets,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        store.create_subscription(&sub).await?;
    }
    let subs = args.subscriptions.max(1) as u64;
    // Every outbound call has a timeout, the benchmark's posts to its own hub included.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // Backlog: queue everything, then drain with the worker alone.
    let t = Instant::now();
    post_runs(
        &client,
        &base,
        &key.secret,
        0,
        args.runs,
        args.post_concurrency,
    )
    .await?;
    let queue_time = t.elapsed();
    let backlog = args.runs * subs;
    let t = Instant::now();
    let worker = Worker::start(store.clone(), state.master.clone(), settings.clone(), None)
        .map_err(anyhow::Error::msg)?;
    let drained_at = wait_count(&sink, backlog, Duration::from_secs(600)).await?;
    let drain = drained_at - t;
    let backlog_rate = backlog as f64 / drain.as_secs_f64();

    // Live: post with the worker running; latency from acknowledgement to arrival.
    sink.arrived.lock().expect("sink lock").clear();
    let t = Instant::now();
    let acks = post_runs(
        &client,
        &base,
        &key.secret,
        args.runs,
        args.runs + args.live_runs,
        args.post_concurrency,
    )
    .await?;
    let live_total = backlog + args.live_runs * subs;
    let live_done = wait_count(&sink, live_total, Duration::from_secs(600)).await?;
    let live_elapsed = live_done - t;
    let live_rate = (args.live_runs * subs) as f64 / live_elapsed.as_secs_f64();
    let mut hist = Histogram::<u64>::new(3)?;
    {
        let arrived = sink.arrived.lock().expect("sink lock");
        for (id, ack) in &acks {
            if let Some(at) = arrived.get(id) {
                let us = at.saturating_duration_since(*ack).as_micros() as u64;
                hist.record(us.max(1))?;
            }
        }
    }
    worker.stop().await;
    let _ = stop_tx.send(());
    let _ = served.await;

    let summary = json!({
        "backend": store.backend(),
        "subscriptions": subs,
        "concurrency": args.concurrency,
        "per_subscription": args.per_subscription,
        "sink_delay_ms": args.sink_delay.as_millis() as u64,
        "backlog": {
            "deliveries": backlog,
            "queue_seconds": queue_time.as_secs_f64(),
            "drain_seconds": drain.as_secs_f64(),
            "deliveries_per_second": backlog_rate,
        },
        "live": {
            "deliveries": args.live_runs * subs,
            "seconds": live_elapsed.as_secs_f64(),
            "deliveries_per_second": live_rate,
            "ack_to_delivery_ms": {
                "p50": hist.value_at_quantile(0.5) as f64 / 1000.0,
                "p99": hist.value_at_quantile(0.99) as f64 / 1000.0,
                "max": hist.max() as f64 / 1000.0,
            },
        },
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "backend {} · {} subscription(s) · concurrency {} (per subscription {}) · sink delay {:?}",
            store.backend(),
            subs,
            args.concurrency,
            args.per_subscription,
            args.sink_delay
        );
        println!(
            "backlog: {backlog} deliveries drained in {:.2} s → {:.0} deliveries/s (queued in {:.2} s)",
            drain.as_secs_f64(),
            backlog_rate,
            queue_time.as_secs_f64()
        );
        println!(
            "live:    {} deliveries in {:.2} s → {:.0} deliveries/s; acknowledgement → delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.live_runs * subs,
            live_elapsed.as_secs_f64(),
            live_rate,
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        );
    }
    Ok(())
}
