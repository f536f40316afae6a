//! Termination signals while a command runs. When a CI cancels a job, the reporter must outlive
//! the command to report it aborted, so it catches SIGINT, SIGTERM, SIGHUP and SIGQUIT and passes
//! them on to the command. A signal from the terminal (Ctrl-C) already reached the command
//! through its process group and is not sent twice.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// True once a termination signal arrived: the reporter then stops retrying (the report is
/// already in the spool) and gets out of the way.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

#[cfg(unix)]
pub use unix::Forwarder;

#[cfg(unix)]
mod unix {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;
    use std::thread;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::iterator::SignalsInfo;
    use signal_hook::low_level::siginfo::Cause;

    use super::STOP;

    /// Catches termination signals and forwards them to the watched process.
    pub struct Forwarder {
        pid: Arc<AtomicI32>,
        last: Arc<AtomicI32>,
    }

    impl Forwarder {
        /// Starts catching. If that fails the signals keep their default effect, which only
        /// loses the report of a cancelled job, so the failure is not worth a word.
        pub fn install() -> Self {
            let pid = Arc::new(AtomicI32::new(0));
            let last = Arc::new(AtomicI32::new(0));
            if let Ok(mut signals) =
                SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
            {
                let (pid, last) = (pid.clone(), last.clone());
                // The thread lives until the process exits: signals arriving while the report
                // is sent still only set STOP.
                thread::spawn(move || {
                    for origin in signals.forever() {
                        STOP.store(true, Ordering::SeqCst);
                        last.store(origin.signal, Ordering::SeqCst);
                        let from_terminal = matches!(origin.cause, Cause::Kernel);
                        let target = pid.load(Ordering::SeqCst);
                        if target > 0 && !from_terminal {
                            send(target, origin.signal);
                        }
                    }
                });
            }
            Self { pid, last }
        }

        /// Forwards from now on to `pid`; a signal that came before the command existed is
        /// delivered at once.
        pub fn watch(&self, pid: u32) {
            let pid = pid as i32;
            self.pid.store(pid, Ordering::SeqCst);
            let early = self.last.load(Ordering::SeqCst);
            if early != 0 {
                send(pid, early);
            }
        }

        /// Stops forwarding (the command was reaped; its pid may be reused) and tells whether
        /// a termination signal arrived.
        pub fn finish(&self) -> bool {
            self.pid.store(0, Ordering::SeqCst);
            super::stop_requested()
        }
    }

    fn send(pid: i32, signal: i32) {
        if let Ok(sig) = Signal::try_from(signal) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

#[cfg(not(unix))]
pub use other::Forwarder;

#[cfg(not(unix))]
mod other {
    /// Elsewhere the console delivers Ctrl-C to the whole process group by itself.
    pub struct Forwarder;

    impl Forwarder {
        /// Nothing to install.
        pub fn install() -> Self {
            Forwarder
        }
        /// Nothing to watch.
        pub fn watch(&self, _pid: u32) {}
        /// Whether a stop was requested.
        pub fn finish(&self) -> bool {
            super::stop_requested()
        }
    }
}
