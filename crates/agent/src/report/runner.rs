//! Runs the wrapped command: its stdout and stderr pass through unchanged while the tail of the
//! combined output is kept for the failure log; its exit status becomes a result and the exit
//! code the reporter passes on.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cistern_core::RunResult;

use super::now_ms;
use super::signals::Forwarder;

/// How long to keep reading output after the command exited: a background process it left
/// behind may hold the pipes open, and the reporter must not wait for that one.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The last `cap` bytes of everything written to it.
#[derive(Debug)]
pub struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    seen: u64,
}

impl Tail {
    /// An empty tail that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
            seen: 0,
        }
    }

    /// Appends output, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, chunk: &[u8]) {
        self.seen += chunk.len() as u64;
        if self.cap == 0 {
            return;
        }
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(chunk);
    }

    /// True when more was written than kept.
    pub fn truncated(&self) -> bool {
        self.seen > self.buf.len() as u64
    }

    /// The kept bytes as text. A cut through a multi-byte character drops its remains; other
    /// invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let mut start = 0;
        if self.truncated() {
            while start < bytes.len().min(3) && bytes[start] & 0xc0 == 0x80 {
                start += 1;
            }
        }
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// How the command ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Start, epoch milliseconds.
    pub started_at_ms: i64,
    /// Wall time, milliseconds.
    pub duration_ms: i64,
    /// success (exit 0), failure (non-zero), aborted (killed by a signal, or we were told to stop).
    pub result: RunResult,
    /// The exit code to pass on: the command's, 128 + signal number, or 126/127 when it could
    /// not be started (as a shell does).
    pub exit_code: i32,
    /// The tail of the combined output.
    pub log: String,
    /// The output was longer than the tail.
    pub log_truncated: bool,
}

/// Runs `argv`, streaming its output through and keeping the last `tail_cap` bytes of it.
/// Termination signals the reporter receives meanwhile are passed on to the command.
pub fn run(argv: &[String], tail_cap: usize) -> Finished {
    let started_at_ms = now_ms();
    let clock = Instant::now();
    let tail = Arc::new(Mutex::new(Tail::new(tail_cap)));
    // Before the spawn, so that a cancel arriving at once is not fatal to the reporter.
    let forwarder = Forwarder::install();
    let Some((program, args)) = argv.split_first() else {
        return not_started(started_at_ms, clock, 127, "no command given".into());
    };
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let msg = format!("cistern report: cannot run {program:?}: {e}\n");
            let _ = io::stderr().write_all(msg.as_bytes());
            return not_started(started_at_ms, clock, code, msg);
        }
    };
    forwarder.watch(child.id());
    let (done_tx, done_rx) = mpsc::channel::<()>();
    if let Some(out) = child.stdout.take() {
        pump(out, Sink::Stdout, tail.clone(), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, Sink::Stderr, tail.clone(), done_tx.clone());
    }
    drop(done_tx);
    let status = child.wait();
    let stopped = forwarder.finish();
    let duration_ms = clock.elapsed().as_millis() as i64;
    // Both pumps hang up at end of output; past the grace they go on in the background.
    let deadline = Instant::now() + DRAIN_GRACE;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match done_rx.recv_timeout(left) {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
    let (result, exit_code) = match status {
        Ok(s) => outcome(s),
        Err(e) => {
            let _ = writeln!(io::stderr(), "cistern report: waiting for the command: {e}");
            (RunResult::Error, 1)
        }
    };
    // A cancelled job is aborted even when the command exits normally after the signal.
    let result = if stopped && result != RunResult::Success {
        RunResult::Aborted
    } else {
        result
    };
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    Finished {
        started_at_ms,
        duration_ms,
        result,
        exit_code,
        log: tail.text(),
        log_truncated: tail.truncated(),
    }
}

fn not_started(started_at_ms: i64, clock: Instant, code: i32, msg: String) -> Finished {
    Finished {
        started_at_ms,
        duration_ms: clock.elapsed().as_millis() as i64,
        result: RunResult::Failure,
        exit_code: code,
        log: msg,
        log_truncated: false,
    }
}

#[cfg(unix)]
fn outcome(s: ExitStatus) -> (RunResult, i32) {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(0), _) => (RunResult::Success, 0),
        (Some(c), _) => (RunResult::Failure, c),
        (None, Some(sig)) => (RunResult::Aborted, 128 + sig),
        (None, None) => (RunResult::Error, 1),
    }
}

#[cfg(not(unix))]
fn outcome(s: ExitStatus) -> (RunResult, i32) {
    match s.code() {
        Some(0) => (RunResult::Success, 0),
        Some(c) => (RunResult::Failure, c),
        None => (RunResult::Aborted, 1),
    }
}

#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
}

/// Copies one pipe to our stdout or stderr as it comes, and into the tail. When our own output
/// is closed (`cistern report run -- cmd | head`), the pipe is closed too, so the command sees
/// the broken pipe it would have seen without the reporter.
fn pump(
    mut from: impl Read + Send + 'static,
    sink: Sink,
    tail: Arc<Mutex<Tail>>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let chunk = &buf[..n];
            let written = match sink {
                Sink::Stdout => {
                    let mut o = io::stdout().lock();
                    o.write_all(chunk).and_then(|_| o.flush())
                }
                Sink::Stderr => io::stderr().lock().write_all(chunk),
            };
            tail.lock().unwrap_or_else(|p| p.into_inner()).push(chunk);
            if written.is_err() {
                break;
            }
        }
        let _ = done.send(());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut t = Tail::new(8);
        t.push(b"hello ");
        assert!(!t.truncated());
        t.push(b"world");
        assert_eq!(t.text(), "lo world");
        assert!(t.truncated());
        t.push(b"0123456789abc");
        assert_eq!(t.text(), "56789abc");
    }

    #[test]
    fn a_cut_character_is_dropped_not_mangled() {
        let mut t = Tail::new(4);
        t.push("xé€".as_bytes()); // x, é (2 bytes), € (3 bytes): the tail starts inside é
        assert_eq!(t.text(), "€");
        let mut z = Tail::new(0);
        z.push(b"abc");
        assert!(z.truncated());
        assert_eq!(z.text(), "");
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_and_signals() {
        let sh = |script: &str| run(&["sh".into(), "-c".into(), script.into()], 1024);
        let ok = sh("exit 0");
        assert_eq!((ok.result, ok.exit_code), (RunResult::Success, 0));
        let bad = sh("echo boom >&2; exit 42");
        assert_eq!((bad.result, bad.exit_code), (RunResult::Failure, 42));
        assert_eq!(bad.log, "boom\n");
        let killed = sh("kill -TERM $$");
        assert_eq!((killed.result, killed.exit_code), (RunResult::Aborted, 143));
        let missing = run(&["/nonexistent/cistern-test".into()], 1024);
        assert_eq!(missing.exit_code, 127);
        assert_eq!(missing.result, RunResult::Failure);
    }
}
