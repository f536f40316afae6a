//! The relay's spool: every accepted request, durable on disk before it is acknowledged, kept
//! until the hub took it. Entries are numbered in the order they were accepted and forwarded in
//! that order.
//!
//! One file per request, `<sequence, 20 digits>.req`: a JSON header line (endpoint, headers,
//! when and where from), then the body bytes as received. A file is written as a temporary file,
//! fsynced, renamed into place and the directory fsynced, all before `put` returns: a crash at
//! any point leaves either the whole entry or none. Requests the hub refused move to
//! `rejected/` with the reason beside them.
//!
//! The spool is bounded: past `max_bytes` new requests are refused (the relay answers 503 with
//! `Retry-After`, so senders retry later), and from 80 % on the satellite warns.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Share of the bound from which the satellite warns.
pub const WARN_RATIO: f64 = 0.8;
/// Folder of refused requests.
pub const REJECTED: &str = "rejected";
const SUFFIX: &str = ".req";

/// Why the spool could not take or give an entry.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The bound is reached.
    #[error("the spool is full ({used} of {limit} bytes used; the request needs {needed}): the hub has not taken what waits — is it reachable?")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The bound.
        limit: u64,
        /// Bytes the refused request needed.
        needed: u64,
    },
    /// Another satellite holds the spool.
    #[error("another satellite is using the spool {} (one satellite per spool directory: give each its own --spool)", .0.display())]
    Busy(PathBuf),
    /// A file in the spool is not an entry.
    #[error("{} is not a spool entry: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The header line of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version.
    pub v: u32,
    /// Path (and query) at the hub, e.g. `/v1/custom-cicd`.
    pub endpoint: String,
    /// Request headers to pass on (content type, signatures), never the sender's credentials.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// When the satellite accepted it, epoch milliseconds.
    pub accepted_at_ms: i64,
    /// Who produced it: `relay` or `poller:<integration id>`.
    pub origin: String,
}

/// One spooled request.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Sequence number: the order of acceptance.
    pub seq: u64,
    /// The header.
    pub header: Header,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Index {
    next: u64,
    sizes: BTreeMap<u64, u64>,
    bytes: u64,
}

/// What the spool holds, for heartbeats and warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Entries waiting.
    pub depth: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// The bound.
    pub limit: u64,
}

impl Usage {
    /// True from [`WARN_RATIO`] of the bound on.
    pub fn near_full(&self) -> bool {
        self.limit > 0 && self.bytes as f64 >= self.limit as f64 * WARN_RATIO
    }
}

/// A spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Held while the spool is open: two satellites forwarding one spool would break its order.
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Spool {
    /// Opens (creating) the spool at `dir`, bounded to `max_bytes`. Entries left by an earlier
    /// run are picked up; temporary files of a write that was cut short are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        create_private_dir(dir).map_err(io_err("creating the spool directory", dir))?;
        #[cfg(unix)]
        let lock = {
            let path = dir.join(".lock");
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("opening", &path))?;
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|_| SpoolError::Busy(dir.to_owned()))?
        };
        let mut index = Index::default();
        for e in fs::read_dir(dir)
            .map_err(io_err("reading", dir))?
            .filter_map(Result::ok)
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(e.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            index.sizes.insert(seq, size);
            index.bytes += size;
        }
        // Numbers continue above the rejected entries too, so that names never collide. (A
        // delivered entry's number may come again after a restart; nothing refers to it.)
        let highest_rejected = fs::read_dir(dir.join(REJECTED))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(SUFFIX)
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max();
        index.next = index
            .sizes
            .keys()
            .next_back()
            .copied()
            .max(highest_rejected)
            .map_or(1, |s| s + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(index),
            #[cfg(unix)]
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as it was before the write.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes an entry durably and returns its sequence number. Blocking: call it off the async
    /// threads.
    pub fn put(&self, header: &Header, body: &[u8]) -> Result<u64, SpoolError> {
        let mut head = serde_json::to_vec(header).map_err(|e| SpoolError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        head.push(b'\n');
        let needed = (head.len() + body.len()) as u64;
        // The lock is held through the write so that numbers follow acceptance order exactly.
        let mut index = self.lock();
        if index.bytes + needed > self.max_bytes {
            return Err(SpoolError::Full {
                used: index.bytes,
                limit: self.max_bytes,
                needed,
            });
        }
        let seq = index.next;
        let path = self.path(seq);
        let tmp = self.dir.join(format!(".tmp-{seq:020}"));
        let write = || -> io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(&head)?;
            f.write_all(body)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("writing", &tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("renaming into place", &path)(e));
        }
        sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        index.next = seq + 1;
        index.sizes.insert(seq, needed);
        index.bytes += needed;
        Ok(seq)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// The oldest waiting entry's number.
    pub fn first(&self) -> Option<u64> {
        self.lock().sizes.keys().next().copied()
    }

    /// Entries waiting, bytes and bound.
    pub fn usage(&self) -> Usage {
        let index = self.lock();
        Usage {
            depth: index.sizes.len() as u64,
            bytes: index.bytes,
            limit: self.max_bytes,
        }
    }

    /// Reads an entry.
    pub fn read(&self, seq: u64) -> Result<Entry, SpoolError> {
        let path = self.path(seq);
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: path.clone(),
            reason,
        };
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no header line".into()))?;
        let header: Header =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| corrupt(e.to_string()))?;
        Ok(Entry {
            seq,
            header,
            body: bytes[nl + 1..].to_vec(),
        })
    }

    /// Removes a delivered entry.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path(seq);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("removing", &path)(e))
            }
            _ => {}
        }
        // Durable removal: after a crash a delivered entry must not come back more than once
        // (the hub would take it as an update, but a person reading the logs would wonder).
        let _ = sync_dir(&self.dir);
        self.forget(seq);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut index = self.lock();
        if let Some(size) = index.sizes.remove(&seq) {
            index.bytes = index.bytes.saturating_sub(size);
        }
    }

    /// Moves a refused entry to `rejected/` with the reason in `<name>.reason.txt`.
    pub fn reject(&self, seq: u64, reason: &str) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(REJECTED);
        create_private_dir(&dir).map_err(io_err("creating", &dir))?;
        let from = self.path(seq);
        let to = dir.join(from.file_name().unwrap_or_default());
        fs::rename(&from, &to).map_err(io_err("moving to rejected/", &from))?;
        let mut why = to.clone().into_os_string();
        why.push(".reason.txt");
        let _ = fs::write(PathBuf::from(why), format!("{reason}\n"));
        let _ = sync_dir(&self.dir);
        self.forget(seq);
        Ok(to)
    }

    /// Refused entries (their files), oldest first.
    pub fn rejected(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.join(REJECTED))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(SUFFIX))
            .collect();
        v.sort();
        v
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Requests can hold logs and tokens: only the satellite's user may read them.
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endpoint: &str) -> Header {
        Header {
            v: 1,
            endpoint: endpoint.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            accepted_at_ms: 1,
            origin: "relay".into(),
        }
    }

    #[test]
    fn entries_keep_their_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let a = spool.put(&header("/v1/custom-cicd"), b"{\"n\":1}").unwrap();
        let b = spool
            .put(&header("/v1/generic-requests"), b"\x00bin\n")
            .unwrap();
        assert!(a < b);
        assert_eq!(spool.first(), Some(a));
        assert_eq!(spool.usage().depth, 2);
        // A write cut short leaves a temporary file: removed on open.
        fs::write(dir.path().join(".tmp-00000000000000000009"), b"half").unwrap();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(
            matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::Busy(_))),
            "one satellite per spool"
        );
        assert_eq!(spool.usage().depth, 2);
        assert!(!dir.path().join(".tmp-00000000000000000009").exists());
        let e = spool.read(b).unwrap();
        assert_eq!(e.header.endpoint, "/v1/generic-requests");
        assert_eq!(e.body, b"\x00bin\n", "bodies are kept byte for byte");
        spool.remove(a).unwrap();
        assert_eq!(spool.first(), Some(b));
        let c = spool.put(&header("/x"), b"{}").unwrap();
        assert!(c > b, "numbers are never reused");
        spool.reject(b, "400: pipeline is required").unwrap();
        assert_eq!(spool.first(), Some(c));
        assert_eq!(spool.rejected().len(), 1);
        spool.remove(c).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let d = spool.put(&header("/x"), b"{}").unwrap();
        assert!(
            d > b,
            "above the rejected ones after a reopen, so a name never collides"
        );
    }

    #[test]
    fn the_bound_refuses_and_warns_before() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1000).unwrap();
        let body = vec![b'x'; 300];
        spool.put(&header("/a"), &body).unwrap();
        assert!(!spool.usage().near_full());
        spool.put(&header("/a"), &body).unwrap();
        assert!(spool.usage().near_full(), "{:?}", spool.usage());
        let err = spool.put(&header("/a"), &body).unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert_eq!(spool.usage().depth, 2);
        let first = spool.first().unwrap();
        spool.remove(first).unwrap();
        spool.put(&header("/a"), &body).unwrap();
    }
}
