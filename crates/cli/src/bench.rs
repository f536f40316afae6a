//! `cistern bench ingest`: an HTTP load generator for the ingestion endpoints. It posts
//! realistic, varied payloads (stages, steps, commits; a share of repeats), checks every reply,
//! and reports throughput, latency percentiles, errors and the server's memory.
//!
//! It shares the machine with the server it measures, so it spends as little as it can per
//! request: each body is rendered from a template parsed once (the run's numbers written into a
//! reused buffer, no JSON tree), each worker keeps one HTTP/1.1 connection of its own (hyper's
//! connection API, no pool), and the workers run on one thread by default (`--threads`), like
//! `wrk -t1`.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use rand::Rng;
use serde_json::{json, Value};

/// The dialect to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// `POST /v1/custom-cicd` (Harness SEI).
    Sei,
    /// `POST /v1/generic-requests` (Jenkins Job Reporter envelope).
    Propelo,
    /// `POST /webhook/company/{company}/cicd_job` (Allstacks custom CD job).
    Allstacks,
}

/// Options of `cistern bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Hub base URL (plain `http://`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the ingest scope.
    #[arg(long, env = "CISTERN_API_KEY")]
    pub key: String,
    /// Requests in flight at once (closed loop): one connection per worker.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Threads the workers run on.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
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
    /// Company of the Allstacks route (the key's tenant: its slug or id).
    #[arg(long, default_value = "default")]
    pub company: String,
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

/// The one duration parser (`30s`, `2m`, `500ms`, `1h` or bare seconds).
pub use cistern_core::units::parse_duration;

/// The SEI run of about 2 KB (2 stages × 3 steps, 2 commits, params, an artifact), with `$name$`
/// where a run's own values go. `$prefix$` is replaced once, when the template is built.
const SEI_TEMPLATE: &str = concat!(
    r#"{"pipeline":"service-$svc$","job_full_name":"org/service-$svc$/main","qualified_name":"org/service-$svc$/main","#,
    r#""instance_name":"bench-jenkins","instance_guid":"b0000000-0000-4000-8000-$inst$","start_time":$start$,"#,
    r#""duration":$duration$,"result":"$result$","execution_id":"$prefix$-$w$-$n$","build_number":$n$,"#,
    r#""user_id":"SCMTrigger","repo_url":"https://github.com/acme/service.git","branch_name":"$branch$","#,
    r#""project_name":"Platform","scm_commit_ids":["$commit1$","$commit2$"],"#,
    r#""job_run_params":[{"type":"StringParameterValue","name":"TARGET","value":"qa"},{"type":"BooleanParameterValue","name":"FAST","value":true}],"#,
    r#""ci":true,"cd":$cd$,"artifacts":[{"input":false,"output":true,"type":"container","location":"registry.acme.com/service","name":"service","qualifier":"1.$n$"}],"#,
    r#""trigger_chain":[{"id":"SCMTrigger","type":"SCMTriggerCause"}],"job_run":{"stages":["#,
    r#"{"displayName":"build","displayDescription":"build stage","result":"$result$","state":"FINISHED","durationInMillis":20000,"startTime":$start$,"steps":["#,
    r#"{"displayName":"build-step-0","result":"SUCCESS","state":"FINISHED","durationInMillis":6000},"#,
    r#"{"displayName":"build-step-1","result":"SUCCESS","state":"FINISHED","durationInMillis":6100},"#,
    r#"{"displayName":"build-step-2","result":"SUCCESS","state":"FINISHED","durationInMillis":6200}]},"#,
    r#"{"displayName":"test","displayDescription":"test stage","result":"$result$","state":"FINISHED","durationInMillis":45000,"startTime":$start_test$,"steps":["#,
    r#"{"displayName":"test-step-0","result":"SUCCESS","state":"FINISHED","durationInMillis":6000},"#,
    r#"{"displayName":"test-step-1","result":"SUCCESS","state":"FINISHED","durationInMillis":6100},"#,
    r#"{"displayName":"test-step-2","result":"SUCCESS","state":"FINISHED","durationInMillis":6200}]}]},"#,
    r#""web_url":"https://jenkins.acme.com/job/service/$n$/"}"#,
);

/// An Allstacks custom CD job (a deploy or a build), varied like the SEI run. Allstacks
/// identifies a job by `job_id` and `job_start_time` together, so a repeat keeps both.
const ALLSTACKS_TEMPLATE: &str = concat!(
    r#"{"job_id":"$prefix$-$w$-$n$","status":"$status$","commit_sha":"$commit1$","triggered_by":"dev$dev$@acme.com","#,
    r#""repo_id":"repo-$svc$","service_id":$svc$,"job_start_time":$start_s$,"job_duration":$duration_s$,"job_type":"$kind$","#,
    r#""optional":[{"key":"microservice","value":["frontend","backend"],"type":"string"},{"key":"lead_time","value":$lead$,"type":"duration"}]}"#,
);

/// A value of the run substituted into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    N,
    W,
    Svc,
    Inst,
    Start,
    StartTest,
    StartS,
    Duration,
    DurationS,
    Result,
    Status,
    Branch,
    Commit1,
    Commit2,
    Cd,
    Kind,
    Dev,
    Lead,
}

impl Var {
    fn named(name: &str) -> Option<Var> {
        Some(match name {
            "n" => Var::N,
            "w" => Var::W,
            "svc" => Var::Svc,
            "inst" => Var::Inst,
            "start" => Var::Start,
            "start_test" => Var::StartTest,
            "start_s" => Var::StartS,
            "duration" => Var::Duration,
            "duration_s" => Var::DurationS,
            "result" => Var::Result,
            "status" => Var::Status,
            "branch" => Var::Branch,
            "commit1" => Var::Commit1,
            "commit2" => Var::Commit2,
            "cd" => Var::Cd,
            "kind" => Var::Kind,
            "dev" => Var::Dev,
            "lead" => Var::Lead,
            _ => return None,
        })
    }
}

/// One run's numbers: request `n` of worker `w`, started at `start_ms`.
#[derive(Debug, Clone, Copy)]
pub struct RunVars {
    /// The run's number (a repeat reuses it).
    pub n: u64,
    /// The worker (and its connection).
    pub w: u64,
    /// Start time, milliseconds since the epoch.
    pub start_ms: i64,
}

/// A body with holes: literal text and the run's values, in order.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Box<[u8]>),
    Var(Var),
}

impl Template {
    /// Parses `$name$` holes out of `src` (after putting `prefix` in place of `$prefix$`).
    fn parse(src: &str, prefix: &str) -> Result<Self> {
        let src = src.replace("$prefix$", prefix);
        let mut parts = Vec::new();
        let mut rest = src.as_str();
        while let Some(open) = rest.find('$') {
            let after = &rest[open + 1..];
            let close = after
                .find('$')
                .with_context(|| format!("unclosed hole in template at {:?}", &rest[open..]))?;
            let name = &after[..close];
            let var = Var::named(name).with_context(|| format!("unknown hole ${name}$"))?;
            if open > 0 {
                parts.push(Part::Lit(rest.as_bytes()[..open].into()));
            }
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.as_bytes().into()));
        }
        Ok(Template { parts })
    }

    /// The body of `dialect`, runs named `<prefix>-<worker>-<n>`.
    pub fn for_dialect(dialect: Dialect, prefix: &str) -> Result<Self> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            bail!("--run-prefix must be letters, digits, '-', '_' or '.', got {prefix:?}");
        }
        match dialect {
            Dialect::Sei => Self::parse(SEI_TEMPLATE, prefix),
            // The SEI run as a JSON string inside the envelope: the literal text escaped once
            // here; the holes hold digits and plain words, which need no escaping.
            Dialect::Propelo => Self::parse(
                &format!(
                    r#"{{"request_type":"JenkinsPluginJobRunComplete","payload":{}}}"#,
                    serde_json::to_string(SEI_TEMPLATE)?
                ),
                prefix,
            ),
            Dialect::Allstacks => Self::parse(ALLSTACKS_TEMPLATE, prefix),
        }
    }

    /// Appends the body of run `v` to `out`.
    pub fn render(&self, v: RunVars, out: &mut Vec<u8>) {
        let n = v.n;
        let mut num = itoa::Buffer::new();
        for part in &self.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(var) => match var {
                    Var::N => out.extend_from_slice(num.format(n).as_bytes()),
                    Var::W => out.extend_from_slice(num.format(v.w).as_bytes()),
                    Var::Svc => out.extend_from_slice(num.format(n % 50).as_bytes()),
                    Var::Inst => {
                        let s = num.format(v.w % 4);
                        out.extend(std::iter::repeat_n(b'0', 12 - s.len()));
                        out.extend_from_slice(s.as_bytes());
                    }
                    Var::Start => out.extend_from_slice(num.format(v.start_ms).as_bytes()),
                    Var::StartTest => {
                        out.extend_from_slice(num.format(v.start_ms + 25_000).as_bytes())
                    }
                    Var::StartS => out.extend_from_slice(num.format(v.start_ms / 1000).as_bytes()),
                    Var::Duration => {
                        out.extend_from_slice(num.format(65_000 + n % 1000).as_bytes())
                    }
                    Var::DurationS => out.extend_from_slice(num.format(60 + n % 600).as_bytes()),
                    Var::Result => out.extend_from_slice(if n.is_multiple_of(7) {
                        b"FAILURE"
                    } else {
                        b"SUCCESS"
                    }),
                    Var::Status => out.extend_from_slice(if n.is_multiple_of(7) {
                        b"Failed"
                    } else {
                        b"Succeeded"
                    }),
                    Var::Branch => out.extend_from_slice(if n.is_multiple_of(5) {
                        b"release"
                    } else {
                        b"main"
                    }),
                    Var::Commit1 => hex40(n.wrapping_mul(2_654_435_761), out),
                    Var::Commit2 => hex40(n.wrapping_mul(40_503).wrapping_add(7), out),
                    Var::Cd => out.extend_from_slice(if n.is_multiple_of(4) {
                        b"true"
                    } else {
                        b"false"
                    }),
                    Var::Kind => out.extend_from_slice(if n.is_multiple_of(4) {
                        b"Production Deploy"
                    } else {
                        b"Build"
                    }),
                    Var::Dev => out.extend_from_slice(num.format(n % 13).as_bytes()),
                    Var::Lead => out.extend_from_slice(num.format(20 + n % 100).as_bytes()),
                },
            }
        }
    }
}

/// `x` as 40 lowercase hex digits (a commit sha), zero-padded like `{:040x}`.
fn hex40(x: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend(std::iter::repeat_n(b'0', 24));
    for i in (0..16).rev() {
        out.push(HEX[((x >> (i * 4)) & 0xf) as usize]);
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// The start time of run `n`: within the 10 minutes before `t0` (when the load began), the same
/// for every repeat of the run, and never in the future however long the load runs.
fn start_of(t0_ms: i64, n: u64) -> i64 {
    t0_ms - 600_000 + ((n % 500) as i64) * 1000
}

/// The SEI body of run `n` of worker `worker` (execution id `<prefix>-<worker>-<n>`), started
/// a few minutes ago.
pub fn sei_body(n: u64, worker: u64, prefix: &str) -> Result<String> {
    let mut out = Vec::with_capacity(2400);
    Template::for_dialect(Dialect::Sei, prefix)?.render(
        RunVars {
            n,
            w: worker,
            start_ms: start_of(now_ms(), n),
        },
        &mut out,
    );
    Ok(String::from_utf8(out)?)
}

/// The route of a dialect.
fn path_of(dialect: Dialect, company: &str) -> String {
    match dialect {
        Dialect::Sei => "/v1/custom-cicd".into(),
        Dialect::Propelo => "/v1/generic-requests".into(),
        Dialect::Allstacks => format!("/webhook/company/{company}/cicd_job"),
    }
}

/// Resident memory of a process, in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What every worker of every thread shares.
struct Shared {
    ok: AtomicU64,
    created: AtomicU64,
    updated: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
    acks: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

/// What does not change during the load.
struct Plan {
    template: Template,
    /// `host:port` to connect to.
    addr: String,
    uri: hyper::Uri,
    host: hyper::header::HeaderValue,
    auth: hyper::header::HeaderValue,
    base: String,
    path: String,
    dialect: Dialect,
    prefix: String,
    unique: f64,
    limit: u64,
    deadline: Instant,
    interval: Option<Duration>,
    keep_going: bool,
    concurrency: usize,
    t0_ms: i64,
}

/// One line of the acknowledgement log.
fn ack_line(plan: &Plan, status: u16, v: RunVars, reply: &Value) -> Value {
    // Propelo replies carry the run ids in a JSON string.
    let inner: Value = reply["payload"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    let run_id = reply["id"]
        .as_str()
        .or_else(|| inner["run_ids"][0].as_str())
        .map(str::to_owned);
    let pipeline = match plan.dialect {
        Dialect::Allstacks => Value::Null,
        _ => format!("org/service-{}/main", v.n % 50).into(),
    };
    json!({
        "node": plan.base,
        "path": plan.path,
        "status": status,
        "execution_id": format!("{}-{}-{}", plan.prefix, v.w, v.n),
        "pipeline": pipeline,
        "run_id": run_id,
        "event_id": reply["event_id"],
        "created": reply["status"] == "created",
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens one HTTP/1.1 connection; its driver runs as a task of the current runtime.
async fn connect(addr: &str) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one body and reads the whole reply: (status, reply body).
async fn post(plan: &Plan, sender: &mut Option<Sender>, body: Bytes) -> Result<(u16, Bytes)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(&plan.addr).await?);
    }
    let Some(s) = sender.as_mut() else {
        bail!("no connection");
    };
    let req = hyper::Request::post(plan.uri.clone())
        .header(hyper::header::HOST, plan.host.clone())
        .header(hyper::header::AUTHORIZATION, plan.auth.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let exchange = async {
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            *sender = None;
            Err(e)
        }
        Err(_) => {
            *sender = None;
            bail!("no reply within 30 s")
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One worker: one connection, one request at a time.
async fn worker(plan: &Plan, shared: &Shared, hist: &RefCell<Histogram<u64>>, w: u64) {
    let mut next = Instant::now()
        + plan
            .interval
            .map(|i| i.mul_f64(w as f64 / plan.concurrency as f64))
            .unwrap_or_default();
    let mut made = 0u64;
    let mut sender: Option<Sender> = None;
    let mut rng = rand::rng();
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= plan.deadline {
            break;
        }
        let seq = shared.sent.fetch_add(1, Ordering::Relaxed);
        if plan.limit > 0 && seq >= plan.limit {
            break;
        }
        if plan.interval.is_some() {
            // Open loop: latency counts from the scheduled send time.
            tokio::time::sleep_until(next.into()).await;
        }
        let scheduled = if plan.interval.is_some() {
            next
        } else {
            Instant::now()
        };
        let n = if made > 0 && rng.random::<f64>() >= plan.unique {
            rng.random_range(0..made)
        } else {
            made += 1;
            made - 1
        };
        let v = RunVars {
            n,
            w,
            start_ms: start_of(plan.t0_ms, n),
        };
        let mut buf = Vec::with_capacity(2600);
        plan.template.render(v, &mut buf);
        let result = post(plan, &mut sender, Bytes::from(buf)).await;
        let micros = scheduled.elapsed().as_micros() as u64;
        let outcome = match result {
            Ok((status, text)) if (200..300).contains(&status) => {
                if let Some(acks) = &shared.acks {
                    let reply: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
                    let line = ack_line(plan, status, v, &reply);
                    if let Ok(mut f) = acks.lock() {
                        let _ = writeln!(f, "{line}");
                    }
                }
                if contains(&text, b"\"created\"") || contains(&text, b"run_ids") {
                    shared.created.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else if contains(&text, b"\"updated\"") {
                    shared.updated.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected reply: {}",
                        String::from_utf8_lossy(&text)
                    ))
                }
            }
            Ok((status, text)) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text))),
            Err(e) => Err(format!("{e:#}")),
        };
        match outcome {
            Ok(()) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                let _ = hist.borrow_mut().record(micros.max(1));
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = shared.first_error.lock() {
                    f.get_or_insert(e);
                }
                if plan.keep_going {
                    // The hub may be down: do not spin on refused connections.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some(interval) = plan.interval {
            next += interval;
        }
    }
}

/// Runs the load and prints the summary. Fails when any request failed.
pub async fn ingest(args: IngestArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let threads = args.threads.clamp(1, args.concurrency);
    let base = args.url.trim_end_matches('/').to_owned();
    let base_uri: hyper::Uri = base
        .parse()
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if base_uri.scheme_str() != Some("http") {
        bail!("--url must be plain http:// (the load generator speaks HTTP/1.1 without TLS), got {:?}", args.url);
    }
    let authority = base_uri
        .authority()
        .with_context(|| format!("--url {:?} has no host", args.url))?
        .clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let path = format!(
        "{}{}",
        base_uri.path().trim_end_matches('/'),
        path_of(args.dialect, &args.company)
    );
    let plan = Arc::new(Plan {
        template: Template::for_dialect(args.dialect, &args.run_prefix)?,
        addr,
        uri: path.parse().with_context(|| format!("path {path:?}"))?,
        host: authority.as_str().parse()?,
        auth: format!("ApiKey {}", args.key)
            .parse()
            .context("the key is not a valid header value")?,
        base: base.clone(),
        path: path_of(args.dialect, &args.company),
        dialect: args.dialect,
        prefix: args.run_prefix.clone(),
        unique: args.unique_ratio,
        limit: args.requests,
        deadline: Instant::now() + args.duration,
        interval: (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64)),
        keep_going: args.keep_going,
        concurrency: args.concurrency,
        t0_ms: now_ms(),
    });
    let shared = Arc::new(Shared {
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
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (plan, shared) = (plan.clone(), shared.clone());
        let workers: Vec<u64> = (0..args.concurrency as u64)
            .filter(|w| *w as usize % threads == t)
            .collect();
        handles.push(std::thread::spawn(move || -> Result<Histogram<u64>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let hist = RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3)?);
            rt.block_on(futures::future::join_all(
                workers
                    .into_iter()
                    .map(|w| worker(&plan, &shared, &hist, w)),
            ));
            Ok(hist.into_inner())
        }));
    }
    let mut peak_rss = 0u64;
    let mut last_tick = Instant::now();
    while handles.iter().any(|h| !h.is_finished()) {
        if let Some(rss) = args.server_pid.and_then(rss_bytes) {
            peak_rss = peak_rss.max(rss);
        }
        if last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            bar.set_position(secs as u64);
            bar.set_message(format!(
                "{} ok, {} errors, {:.0} req/s",
                shared.ok.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed),
                shared.ok.load(Ordering::Relaxed) as f64 / secs.max(0.001)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    for h in handles {
        let part = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        hist.add(part).context("merging latencies")?;
    }
    bar.finish_and_clear();
    if let Some(acks) = &shared.acks {
        acks.lock()
            .map_err(|_| anyhow::anyhow!("ack log poisoned"))?
            .flush()
            .context("writing the ack log")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = shared.ok.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "dialect": format!("{:?}", args.dialect).to_lowercase(),
        "concurrency": args.concurrency,
        "threads": threads,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference run the template must render (the shape the generator always posted).
    fn sei_reference(n: u64, w: u64, start: i64) -> Value {
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
            "instance_guid": format!("b0000000-0000-4000-8000-{:012}", w % 4),
            "start_time": start,
            "duration": 65_000 + (n % 1000) as i64,
            "result": result,
            "execution_id": format!("pfx-{w}-{n}"),
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

    fn render(d: Dialect, n: u64, w: u64, start_ms: i64) -> Value {
        let mut out = Vec::new();
        Template::for_dialect(d, "pfx")
            .unwrap()
            .render(RunVars { n, w, start_ms }, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn the_template_renders_the_reference_run() {
        for n in [0u64, 1, 7, 20, 35, 999_999, 3_000_123] {
            for w in [0u64, 3, 63] {
                let start = 1_764_000_000_000 + n as i64;
                assert_eq!(
                    render(Dialect::Sei, n, w, start),
                    sei_reference(n, w, start),
                    "n={n} w={w}"
                );
                let env = render(Dialect::Propelo, n, w, start);
                assert_eq!(env["request_type"], "JenkinsPluginJobRunComplete");
                let inner: Value = serde_json::from_str(env["payload"].as_str().unwrap()).unwrap();
                assert_eq!(inner, sei_reference(n, w, start));
            }
        }
        let b = sei_body(12_345, 7, "exec").unwrap().len();
        assert!((1800..2600).contains(&b), "a ~2 KB payload, got {b} bytes");
    }

    #[test]
    fn allstacks_bodies_carry_the_run_identity() {
        let v = render(Dialect::Allstacks, 42, 3, 1_764_000_123_456);
        assert_eq!(v["job_id"], "pfx-3-42");
        assert_eq!(v["job_start_time"], 1_764_000_123);
        assert_eq!(v["service_id"], 42);
        assert_eq!(v["commit_sha"].as_str().unwrap().len(), 40);
    }

    #[test]
    fn start_times_stay_in_the_past_and_are_stable_per_run() {
        let t0 = now_ms();
        for n in [0u64, 1, 499, 500, 10_000_000] {
            let s = start_of(t0, n);
            assert!(s < t0 && s > t0 - 3_600_000, "n={n}");
            assert_eq!(s, start_of(t0, n));
        }
    }

    #[test]
    fn prefixes_that_would_break_the_json_are_refused() {
        assert!(Template::for_dialect(Dialect::Sei, "a\"b").is_err());
        assert!(Template::for_dialect(Dialect::Sei, "").is_err());
        assert!(Template::for_dialect(Dialect::Sei, "crash-1.a_b").is_ok());
    }
}
