//! `cistern report`: one line in any CI job reports the run, with stages, steps and failure logs.
//!
//! - [`runner`] runs the wrapped command (output streamed through, tail kept, signals passed on);
//! - [`env`] reads what the CI tells about the run;
//! - [`payload`] shapes the SEI report (and recognises prepared payloads for `send`);
//! - [`state`] keeps a run reported in several steps between `begin` and `end`;
//! - [`spool`] keeps every report on disk until the hub acknowledged it;
//! - [`sender`] posts with retries.
//!
//! Rule of the house: a reporting problem is a warning on stderr, never a changed exit code of
//! the wrapped command.

pub mod cli;
pub mod env;
pub mod payload;
pub mod runner;
pub mod sender;
pub mod signals;
pub mod spool;
pub mod state;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cistern_core::RunResult;
use serde_json::Value;

use cli::{BeginArgs, EndArgs, FlushArgs, HubArgs, MetaArgs, RunArgs, SendArgs, StepArgs};
pub use cli::{ReportArgs, ReportCommand};
use env::CiContext;
use payload::{Dialect, HeaderOptions, JobRun, RunHeader, SeiRun, SeiStage, LOG_BUDGET};
use sender::{Hub, Outcome, Policy};
use spool::{Spool, SpoolError};
use state::{RunState, StepState};

/// Runs `cistern report …` and returns the process exit code.
pub fn main(args: ReportArgs) -> i32 {
    let ReportArgs { hub, command } = args;
    let reporter = Reporter::new(hub);
    match command {
        ReportCommand::Run(a) => reporter.run(a),
        ReportCommand::Begin(a) => reporter.begin(a),
        ReportCommand::Step(a) => reporter.step(a),
        ReportCommand::End(a) => reporter.end(a),
        ReportCommand::Send(a) => reporter.send(a),
        ReportCommand::Flush(a) => reporter.flush(a),
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes one line to stderr. Never `eprintln!`: it panics when stderr is closed (`… 2>&1 | head`),
/// and a panic would change the exit code that the reporter must pass on.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "cistern report: {line}");
}

fn warn(msg: impl std::fmt::Display) {
    say(format_args!("warning: {msg}"));
}

fn error(msg: impl std::fmt::Display) {
    say(format_args!("error: {msg}"));
}

/// What became of a new report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The hub has it.
    Delivered,
    /// It waits in the spool.
    Spooled,
    /// The hub refused it; it waits in `rejected/`.
    Rejected,
    /// Neither sent nor spooled (a warning said why).
    Lost,
}

/// How a flush of the spool went.
#[derive(Debug, Default)]
struct Tally {
    delivered: usize,
    rejected: usize,
    left: usize,
}

struct Reporter {
    args: HubArgs,
    spool: Spool,
}

impl Reporter {
    fn new(args: HubArgs) -> Self {
        let dir = args
            .spool
            .clone()
            .unwrap_or_else(|| Spool::default_dir(&|n| std::env::var(n).ok()));
        Self {
            args,
            spool: Spool::new(dir),
        }
    }

    fn note(&self, msg: impl std::fmt::Display) {
        if !self.args.quiet {
            say(format_args!("{msg}"));
        }
    }

    fn hub(&self) -> Result<Hub, String> {
        let url = self
            .args
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or("CISTERN_URL (or --url) is not set")?;
        let key = self.args.key.clone().filter(|k| !k.trim().is_empty());
        if key.is_none() {
            return Err("CISTERN_API_KEY (or --key) is not set".into());
        }
        Hub::new(url, key).map_err(|e| e.to_string())
    }

    // ---- the subcommands ----

    fn run(&self, a: RunArgs) -> i32 {
        let finished = runner::run(&a.command, a.log_tail);
        let code = finished.exit_code;
        guarded(|| self.report_run(a, finished));
        code
    }

    fn report_run(&self, a: RunArgs, finished: runner::Finished) {
        let ctx = env::detect();
        let header = RunHeader::new(&ctx, &header_options(&a.meta), || random_id(&ctx));
        let failed = finished.result != RunResult::Success;
        let log = failed
            .then(|| finished.log.clone())
            .filter(|l| !l.is_empty());
        let truncated = log.is_some() && finished.log_truncated;
        let job_run = match a.stage {
            Some(stage) => JobRun {
                stages: vec![SeiStage {
                    display_name: stage,
                    result: finished.result,
                    state: "FINISHED",
                    duration_in_millis: finished.duration_ms,
                    start_time: finished.started_at_ms,
                    log,
                    log_truncated: truncated,
                    steps: Vec::new(),
                }],
                ..JobRun::default()
            },
            None => JobRun {
                log,
                log_truncated: truncated,
                stages: Vec::new(),
            },
        };
        let run = SeiRun {
            header,
            start_time: finished.started_at_ms,
            duration: finished.duration_ms,
            result: finished.result,
            job_run,
        };
        self.report(run, |_| ());
    }

    fn begin(&self, a: BeginArgs) -> i32 {
        let ctx = env::detect();
        let header = RunHeader::new(&ctx, &header_options(&a.meta), || random_id(&ctx));
        match RunState::load(&a.state) {
            Ok(Some(old)) if old.header.execution_id == header.execution_id => {
                self.note(format!(
                    "a report of this run ({}) is already in progress in {}; keeping its steps",
                    header.execution_id,
                    a.state.display()
                ));
                self.flush_on_the_side();
                return 0;
            }
            Ok(Some(old)) => self.send_unfinished(old, &a.state),
            Ok(None) => {}
            Err(e) => warn(format!("{e}; starting over")),
        }
        if let Err(e) = RunState::new(header, now_ms()).save(&a.state) {
            warn(format!("{e}; the steps of this run will not be reported"));
        }
        self.flush_on_the_side();
        0
    }

    fn step(&self, a: StepArgs) -> i32 {
        let finished = runner::run(&a.command, a.log_tail);
        let code = finished.exit_code;
        guarded(|| self.record_step(a, finished));
        code
    }

    fn record_step(&self, a: StepArgs, finished: runner::Finished) {
        let ctx = env::detect();
        let mut state = match RunState::load(&a.state) {
            Ok(Some(old)) if is_stale(&old, &ctx) => {
                self.send_unfinished(old, &a.state);
                None
            }
            Ok(found) => found,
            Err(e) => {
                warn(format!("{e}; starting over"));
                None
            }
        }
        .unwrap_or_else(|| {
            // No `begin`: this step begins the run.
            let header = RunHeader::new(&ctx, &header_options(&MetaArgs::default()), || {
                random_id(&ctx)
            });
            RunState::new(header, finished.started_at_ms)
        });
        let stage = a
            .stage
            .or_else(|| ctx.stage.clone())
            .unwrap_or_else(|| "main".to_owned());
        let failed = finished.result != RunResult::Success;
        let log = failed.then_some(finished.log).filter(|l| !l.is_empty());
        state.add_step(
            &stage,
            StepState {
                name: a.name,
                result: finished.result,
                started_at_ms: finished.started_at_ms,
                duration_ms: finished.duration_ms,
                exit_code: finished.exit_code,
                log_truncated: log.is_some() && finished.log_truncated,
                log,
            },
        );
        if let Err(e) = state.save(&a.state) {
            warn(format!("{e}; this step will not be reported"));
        }
        self.flush_on_the_side();
    }

    fn end(&self, a: EndArgs) -> i32 {
        let mut state = match RunState::load(&a.state) {
            Ok(Some(s)) => s,
            Ok(None) => {
                warn(format!(
                    "no run in progress ({} does not exist); start one with `cistern report begin`",
                    a.state.display()
                ));
                self.flush_on_the_side();
                return 0;
            }
            Err(e) => {
                warn(e);
                return 0;
            }
        };
        let ctx = env::detect();
        let result = a.result.unwrap_or_else(|| {
            let told = ctx.job_status.as_deref().and_then(RunResult::from_word);
            state::worst(state.steps_result().into_iter().chain(told)).unwrap_or(RunResult::Success)
        });
        state.header.apply(&header_options(&a.meta));
        let run = state.finish(result, now_ms());
        let path = a.state;
        self.report(run, |spooled| {
            // Once the spool holds the report, the state has done its job; if neither could keep
            // it, the state stays so that `end` can be run again.
            if spooled {
                if let Err(e) = RunState::remove(&path) {
                    warn(format!("removing {}: {e}", path.display()));
                }
            }
        });
        if path.exists() {
            warn(format!(
                "the run was not reported; its state stays in {}",
                path.display()
            ));
        }
        0
    }

    fn send(&self, a: SendArgs) -> i32 {
        let text = if a.file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(&a.file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                error(format_args!("reading {}: {e}", a.file));
                return 1;
            }
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                error(format_args!(
                    "{} is not JSON: {e}",
                    if a.file == "-" {
                        "standard input"
                    } else {
                        &a.file
                    }
                ));
                return 1;
            }
        };
        let dialect = a.dialect.unwrap_or_else(|| Dialect::detect(&value));
        let tenant = &self.args.tenant;
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            eprintln!(
                "cistern report: error: tenant {tenant:?} must be letters, digits, '-' and '_'"
            );
            return 1;
        }
        let endpoint = dialect.endpoint(tenant);
        match self.deliver(&endpoint, &text, |_| ()) {
            Delivery::Delivered | Delivery::Spooled => 0,
            Delivery::Rejected | Delivery::Lost => 1,
        }
    }

    fn flush(&self, a: FlushArgs) -> i32 {
        if a.rejected {
            match self.spool.requeue_rejected() {
                Ok(n) if n > 0 => self.note(format!("{n} refused reports queued again")),
                Ok(_) => {}
                Err(e) => warn(e),
            }
        }
        let waiting = self.spool.pending().len();
        if waiting == 0 {
            self.note(format!("nothing waits in {}", self.spool.dir().display()));
            return 0;
        }
        let hub = match self.hub() {
            Ok(h) => h,
            Err(e) => {
                error(format_args!(
                    "{e}; {waiting} reports wait in {}",
                    self.spool.dir().display()
                ));
                return 1;
            }
        };
        let policy = Policy::report(self.args.retries);
        let Some(tally) = block_on(self.flush_pending(&hub, policy, None)) else {
            return 1;
        };
        self.note(format!(
            "delivered {}, refused {}, still waiting {} (spool {})",
            tally.delivered,
            tally.rejected,
            tally.left,
            self.spool.dir().display()
        ));
        i32::from(tally.left > 0)
    }

    // ---- delivery ----

    /// Sends a finished run. `spooled(true)` is called once the report is safe in the spool (or
    /// at the hub).
    fn report(&self, mut run: SeiRun, spooled: impl FnOnce(bool)) -> Delivery {
        run.fit_logs(LOG_BUDGET);
        let body = match serde_json::to_string(&run) {
            Ok(b) => b,
            Err(e) => {
                warn(format!("cannot encode the report: {e}"));
                return Delivery::Lost;
            }
        };
        self.deliver(payload::SEI_ENDPOINT, &body, spooled)
    }

    /// Spools a new report first (so that nothing is lost if we are killed while sending), then
    /// delivers the reports that were already waiting, then this one.
    fn deliver(&self, endpoint: &str, body: &str, spooled: impl FnOnce(bool)) -> Delivery {
        let ticket = match self.spool.put(endpoint, body, now_ms()) {
            Ok(p) => Some(p),
            Err(e) => {
                warn(format!("cannot spool the report: {e}"));
                None
            }
        };
        let mut spooled = Some(spooled);
        let mut safe = |yes: bool| {
            if let Some(f) = spooled.take() {
                f(yes);
            }
        };
        if ticket.is_some() {
            safe(true);
        }
        let hub = match self.hub() {
            Ok(h) => h,
            Err(e) => {
                return match &ticket {
                    Some(p) => {
                        warn(format!(
                            "{e}; the report waits in {} until `cistern report flush` with a hub",
                            p.display()
                        ));
                        Delivery::Spooled
                    }
                    None => {
                        warn(format!("{e}; the report is lost"));
                        Delivery::Lost
                    }
                };
            }
        };
        let policy = Policy::report(self.args.retries);
        let outcome = block_on(async {
            if !self
                .spool
                .pending()
                .iter()
                .all(|p| Some(p) == ticket.as_ref())
            {
                self.flush_pending(&hub, Policy::once(), ticket.as_deref())
                    .await;
            }
            hub.deliver(endpoint, body, policy).await
        });
        let Some(outcome) = outcome else {
            return if ticket.is_some() {
                Delivery::Spooled
            } else {
                Delivery::Lost
            };
        };
        match outcome {
            Outcome::Delivered { run_id, word, .. } => {
                safe(true);
                if let Some(p) = &ticket {
                    if let Err(e) = Spool::remove(p) {
                        warn(e);
                    }
                }
                let what = match (run_id, word) {
                    (Some(id), Some(w)) => format!(" (run {id}, {w})"),
                    (Some(id), None) => format!(" (run {id})"),
                    _ => String::new(),
                };
                self.note(format!("reported to {}{what}", hub.base()));
                Delivery::Delivered
            }
            Outcome::Rejected { message, .. } => {
                let kept = match &ticket {
                    Some(p) => self.spool.reject(p, &message),
                    None => self.spool.put_rejected(endpoint, body, now_ms(), &message),
                };
                match kept {
                    Ok(p) => {
                        safe(true);
                        warn(format!(
                            "the hub refused the report: {message}; it is kept in {}",
                            p.display()
                        ));
                        Delivery::Rejected
                    }
                    Err(e) => {
                        warn(format!(
                            "the hub refused the report: {message}; keeping it failed too: {e}"
                        ));
                        Delivery::Lost
                    }
                }
            }
            Outcome::Unreachable { reason } => match &ticket {
                Some(p) => {
                    warn(format!(
                        "{reason}; the report waits in {} and goes with the next `cistern report` (or `cistern report flush`)",
                        p.display()
                    ));
                    Delivery::Spooled
                }
                None => {
                    warn(format!("{reason}; the report is lost"));
                    Delivery::Lost
                }
            },
        }
    }

    /// Delivers waiting reports, oldest first, skipping `skip`; stops at the first that cannot
    /// reach the hub (the others would not either).
    async fn flush_pending(&self, hub: &Hub, policy: Policy, skip: Option<&Path>) -> Tally {
        let mut tally = Tally::default();
        let pending: Vec<PathBuf> = self
            .spool
            .pending()
            .into_iter()
            .filter(|p| Some(p.as_path()) != skip)
            .collect();
        let total = pending.len();
        for (i, path) in pending.into_iter().enumerate() {
            let entry = match Spool::read(&path) {
                Ok(e) => e,
                // Delivered meanwhile by another reporter.
                Err(SpoolError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(e) => {
                    let reason = e.to_string();
                    if self.spool.reject(&path, &reason).is_ok() {
                        tally.rejected += 1;
                    }
                    warn(reason);
                    continue;
                }
            };
            match hub.deliver(&entry.endpoint, &entry.body, policy).await {
                Outcome::Delivered { .. } => {
                    if let Err(e) = Spool::remove(&path) {
                        warn(e);
                    }
                    tally.delivered += 1;
                }
                Outcome::Rejected { message, .. } => {
                    tally.rejected += 1;
                    match self.spool.reject(&path, &message) {
                        Ok(to) => warn(format!(
                            "the hub refused a spooled report: {message}; it is kept in {}",
                            to.display()
                        )),
                        Err(e) => warn(format!("the hub refused a spooled report: {message}; {e}")),
                    }
                }
                Outcome::Unreachable { reason } => {
                    tally.left = total - i;
                    warn(format!(
                        "{reason}; {} spooled reports wait in {}",
                        tally.left,
                        self.spool.dir().display()
                    ));
                    break;
                }
            }
        }
        if tally.delivered > 0 {
            self.note(format!("delivered {} spooled reports", tally.delivered));
        }
        tally
    }

    /// Delivers waiting reports on the side of `begin`, `step` and `end`: one attempt each, and
    /// only when there are some.
    fn flush_on_the_side(&self) {
        if self.spool.pending().is_empty() {
            return;
        }
        if let Ok(hub) = self.hub() {
            block_on(self.flush_pending(&hub, Policy::once(), None));
        }
    }

    /// Reports a run whose `end` never came (its job was cancelled, or `end` was not reached)
    /// as aborted, or failed when a step failed, and clears its state.
    fn send_unfinished(&self, old: RunState, path: &Path) {
        warn(format!(
            "{} holds an unfinished run ({}); reporting it as it stands",
            path.display(),
            old.header.execution_id
        ));
        let result = match old.steps_result() {
            Some(r @ (RunResult::Failure | RunResult::Error | RunResult::Aborted)) => r,
            _ => RunResult::Aborted,
        };
        let end = old
            .stages
            .iter()
            .flat_map(|s| &s.steps)
            .map(|s| s.started_at_ms + s.duration_ms)
            .max()
            .unwrap_or(old.started_at_ms);
        let run = old.finish(result, end);
        self.report(run, |_| ());
        let _ = RunState::remove(path);
    }
}

/// Runs the reporting half after a wrapped command: a bug there becomes a warning, never another
/// exit code.
fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        warn("reporting failed (a bug in cistern); the command's exit code stands");
    }
}

/// Whether a state file belongs to an earlier run than the one the CI is running now. Without a
/// CI run id there is nothing to compare, and the state is taken as this run's.
fn is_stale(state: &RunState, ctx: &CiContext) -> bool {
    ctx.execution_id()
        .is_some_and(|id| id != state.header.execution_id)
}

fn header_options(meta: &MetaArgs) -> HeaderOptions {
    HeaderOptions {
        pipeline: meta.pipeline.clone().filter(|p| !p.trim().is_empty()),
        cd: meta.cd,
        environment: meta.environment.clone().filter(|e| !e.trim().is_empty()),
        fallback_pipeline: std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".to_owned()),
    }
}

/// A fresh execution id for a run the CI does not identify: `<ci>-<random>`.
fn random_id(ctx: &CiContext) -> String {
    format!("{}-{:032x}", ctx.kind.as_str(), rand::random::<u128>())
}

/// Runs a future on a small runtime made only when there is something to send, so that nothing
/// is set up before the wrapped command starts.
fn block_on<F: std::future::Future>(f: F) -> Option<F::Output> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(f)),
        Err(e) => {
            warn(format!("cannot start the HTTP runtime: {e}"));
            None
        }
    }
}
