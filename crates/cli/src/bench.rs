//! `cistern bench ingest`: an HTTP load generator for the ingestion endpoints. It posts
//! realistic, varied payloads (stages, steps, commits; a share of repeats), checks every reply,
//! and reports throughput, latency percentiles, errors and the server's memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};

/// The dialect to post.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dialect {
    /// `POST /v1/custom-cicd` (Harness SEI).
    Sei,
    /// `POST /v1/generic-requests` (Jenkins Job Reporter envelope).
    Propelo,
}

/// Options of `cistern bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Hub base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the ingest scope.
    #[arg(long, env = "CISTERN_API_KEY")]
    pub key: String,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub requests: u64,
    /// Offered load in requests per second (open loop); 0 sends as fast as replies come back.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Payload dialect.
    #[arg(long, value_enum, default_value = "sei")]
    pub dialect: Dialect,
    /// Share of requests that are new runs (the rest repeat an earlier run: updates).
    #[arg(long, default_value_t = 0.9)]
    pub unique_ratio: f64,
    /// Pid of the server, to report its resident memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Append one JSON line per acknowledged (2xx) request to this file: its run's identity
    /// (`execution_id`, `pipeline`) and what the hub answered (`run_id`, `event_id`, `status`),
    /// for `cistern dev verify-acks` to check against the database.
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<std::path::PathBuf>,
    /// Keep going when requests fail (a hub being killed and restarted): failures are counted
    /// and reported, not fatal, and a worker whose request failed waits 100 ms before the next.
    #[arg(long)]
    pub keep_going: bool,
    /// Prefix of the runs' execution ids (`<prefix>-<worker>-<n>`): two load generators with the
    /// same prefix post the same runs.
    #[arg(long, default_value = "exec")]
    pub run_prefix: String,
}

/// Parses `30s`, `2m`, `500ms`, `1h` or bare seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A realistic SEI run of about 2 KB: 2 stages × 3 steps, 2 commits, params, an artifact.
pub fn sei_payload(n: u64, worker: u64) -> Value {
    sei_payload_with_prefix(n, worker, "exec")
}

/// [`sei_payload`] with the execution id `<prefix>-<worker>-<n>`.
pub fn sei_payload_with_prefix(n: u64, worker: u64, prefix: &str) -> Value {
    let start = 1_700_000_000_000i64 + (n as i64) * 1000;
    let result = if n.is_multiple_of(7) {
        "FAILURE"
    } else {
        "SUCCESS"
    };
    let stage = |name: &str, offset: i64| {
        json!({
            "displayName": name, "displayDescription": format!("{name} stage"), "result": result, "state": "FINISHED",
            "durationInMillis": 20_000 + offset, "startTime": start + offset,
            "steps": (0..3).map(|i| json!({"displayName": format!("{name}-step-{i}"), "result": "SUCCESS",
                "state": "FINISHED", "durationInMillis": 6_000 + i * 100})).collect::<Vec<_>>()
        })
    };
    json!({
        "pipeline": format!("service-{}", n % 50),
        "job_full_name": format!("org/service-{}/main", n % 50),
        "qualified_name": format!("org/service-{}/main", n % 50),
        "instance_name": "bench-jenkins",
        "instance_guid": format!("b0000000-0000-4000-8000-{:012}", worker % 4),
        "start_time": start,
        "duration": 65_000 + (n % 1000) as i64,
        "result": result,
        "execution_id": format!("{prefix}-{worker}-{n}"),
        "build_number": n,
        "user_id": "SCMTrigger",
        "repo_url": "https://github.com/acme/service.git",
        "branch_name": if n.is_multiple_of(5) { "release" } else { "main" },
        "project_name": "Platform",
        "scm_commit_ids": [format!("{:040x}", n * 2654435761), format!("{:040x}", n * 40503 + 7)],
        "job_run_params": [{"type": "StringParameterValue", "name": "TARGET", "value": "qa"},
                           {"type": "BooleanParameterValue", "name": "FAST", "value": true}],
        "ci": true, "cd": n.is_multiple_of(4),
        "artifacts": [{"input": false, "output": true, "type": "container", "location": "registry.acme.com/service",
                       "name": "service", "qualifier": format!("1.{n}")}],
        "trigger_chain": [{"id": "SCMTrigger", "type": "SCMTriggerCause"}],
        "job_run": {"stages": [stage("build", 0), stage("test", 25_000)]},
        "web_url": format!("https://jenkins.acme.com/job/service/{n}/"),
    })
}

/// The route, the body and the run it reports (for the acknowledgement log).
fn body_for(dialect: Dialect, n: u64, worker: u64, prefix: &str) -> (String, String, Value) {
    let run = sei_payload_with_prefix(n, worker, prefix);
    match dialect {
        Dialect::Sei => ("/v1/custom-cicd".into(), run.to_string(), run),
        Dialect::Propelo => (
            "/v1/generic-requests".into(),
            json!({"request_type": "JenkinsPluginJobRunComplete", "payload": run.to_string()})
                .to_string(),
            run,
        ),
    }
}

/// Resident memory of a process, in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Shared {
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    created: AtomicU64,
    updated: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
    acks: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

/// One line of the acknowledgement log.
fn ack_line(base: &str, path: &str, status: u16, run: &Value, reply: &Value) -> Value {
    // Propelo replies carry the run ids in a JSON string.
    let inner: Value = reply["payload"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    let run_id = reply["id"]
        .as_str()
        .or_else(|| inner["run_ids"][0].as_str())
        .map(str::to_owned);
    json!({
        "node": base,
        "path": path,
        "status": status,
        "execution_id": run["execution_id"],
        "pipeline": run["job_full_name"],
        "run_id": run_id,
        "event_id": reply["event_id"],
        "created": reply["status"] == "created",
    })
}

/// Runs the load and prints the summary. Fails when any request failed.
pub async fn ingest(args: IngestArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let shared = Arc::new(Shared {
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")?),
        ok: AtomicU64::new(0),
        created: AtomicU64::new(0),
        updated: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
        acks: match &args.ack_log {
            Some(path) => Some(Mutex::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ))),
            None => None,
        },
    });
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let base = args.url.trim_end_matches('/').to_owned();
    let mut workers = Vec::new();
    let per_worker_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    for w in 0..args.concurrency as u64 {
        let (client, shared, base, key) = (
            client.clone(),
            shared.clone(),
            base.clone(),
            args.key.clone(),
        );
        let (dialect, unique, limit) = (args.dialect, args.unique_ratio, args.requests);
        let (prefix, keep_going) = (args.run_prefix.clone(), args.keep_going);
        workers.push(tokio::spawn(async move {
            let mut next = Instant::now()
                + per_worker_interval
                    .map(|i| i.mul_f64(w as f64 / 64.0))
                    .unwrap_or_default();
            let mut made = 0u64;
            loop {
                if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let seq = shared.sent.fetch_add(1, Ordering::Relaxed);
                if limit > 0 && seq >= limit {
                    break;
                }
                if per_worker_interval.is_some() {
                    // Open loop: latency counts from the scheduled send time.
                    tokio::time::sleep_until(next.into()).await;
                }
                let scheduled = if per_worker_interval.is_some() {
                    next
                } else {
                    Instant::now()
                };
                let n = if made > 0 && rand::rng().random::<f64>() >= unique {
                    w * 1_000_000 + rand::rng().random_range(0..made)
                } else {
                    made += 1;
                    w * 1_000_000 + made - 1
                };
                let (path, body, run) = body_for(dialect, n, w, &prefix);
                let result = client
                    .post(format!("{base}{path}"))
                    .header("Authorization", format!("ApiKey {key}"))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let micros = scheduled.elapsed().as_micros() as u64;
                let outcome = match result {
                    Ok(resp) if resp.status().is_success() => {
                        let status = resp.status().as_u16();
                        let text = resp.text().await.unwrap_or_default();
                        if let Some(acks) = &shared.acks {
                            let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            let line = ack_line(&base, &path, status, &run, &reply);
                            if let Ok(mut f) = acks.lock() {
                                use std::io::Write;
                                let _ = writeln!(f, "{line}");
                            }
                        }
                        if text.contains("\"created\"") || text.contains("run_ids") {
                            shared.created.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        } else if text.contains("\"updated\"") {
                            shared.updated.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        } else {
                            Err(format!("unexpected reply: {text}"))
                        }
                    }
                    Ok(resp) => Err(format!(
                        "HTTP {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = shared.hist.lock() {
                            let _ = h.record(micros.max(1));
                        }
                    }
                    Err(e) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = shared.first_error.lock() {
                            f.get_or_insert(e);
                        }
                        if keep_going {
                            // The hub may be down: do not spin on refused connections.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                if let Some(interval) = per_worker_interval {
                    next += interval;
                }
            }
        }));
    }
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = started.elapsed().as_secs_f64();
                bar.set_position(secs as u64);
                bar.set_message(format!(
                    "{} ok, {} errors, {:.0} req/s",
                    shared.ok.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed),
                    shared.ok.load(Ordering::Relaxed) as f64 / secs.max(0.001)
                ));
            }
        })
    };
    let mut peak_rss = 0u64;
    let rss_probe = args.server_pid;
    while workers.iter().any(|w| !w.is_finished()) {
        if let Some(rss) = rss_probe.and_then(rss_bytes) {
            peak_rss = peak_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in workers {
        let _ = w.await;
    }
    ticker.abort();
    bar.finish_and_clear();
    if let Some(acks) = &shared.acks {
        use std::io::Write;
        acks.lock()
            .map_err(|_| anyhow::anyhow!("ack log poisoned"))?
            .flush()
            .context("writing the ack log")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("histogram poisoned"))?;
    let ok = shared.ok.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "dialect": format!("{:?}", args.dialect).to_lowercase(),
        "concurrency": args.concurrency,
        "offered_rate": args.rate,
        "seconds": elapsed,
        "requests_ok": ok,
        "acknowledged": ok,
        "created": shared.created.load(Ordering::Relaxed),
        "updated": shared.updated.load(Ordering::Relaxed),
        "errors": errors,
        "throughput_per_s": ok as f64 / elapsed,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0},
        "server_rss_peak_bytes": (peak_rss > 0).then_some(peak_rss),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{ok} ok ({} created, {} updated), {errors} errors in {elapsed:.1}s: {:.0} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            summary["created"],
            summary["updated"],
            ok as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            hist.max() as f64 / 1000.0,
            if peak_rss > 0 { format!("; server RSS peak {:.1} MiB", peak_rss as f64 / 1048576.0) } else { String::new() }
        );
    }
    if errors > 0 && !args.keep_going {
        let first = shared
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        bail!("{errors} requests failed; first error: {first}");
    }
    Ok(())
}

/// Options of `cistern bench baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
}

/// A server that reads each request's body and answers 200 with a fixed run reply, and does
/// nothing else: the limit of HTTP on this machine, against which Cistern's ingestion is compared
/// (same load generator, same requests, same runtime).
pub async fn baseline(args: BaselineArgs) -> Result<()> {
    async fn ok(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
        let _ = body.len();
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"id":"baseline","status":"created"}"#,
        )
    }
    let app = axum::Router::new().fallback(axum::routing::post(ok));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!("baseline server on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
