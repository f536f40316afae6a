//! The spool: reports the hub has not acknowledged yet, one file each, so nothing is lost when
//! the hub is down. A report is written here before it is sent (write a temporary file, fsync,
//! rename), and removed only after the hub answered 2xx. Reports the hub refused (4xx) move to
//! `rejected/` with the hub's reason beside them, for a person to look at.
//!
//! Files are named `<epoch ms>-<pid>-<random>.json`, so the name order is the order they were
//! written in and the oldest is delivered first. Two reporters may deliver the same file at once
//! (parallel jobs sharing a cache directory); the hub treats the second post as an update of the
//! same run, so that costs a request, never a duplicate.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file in the spool is not a spooled report.
    #[error("{} is not a spooled report: {reason}", path.display())]
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

/// One spooled report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spooled {
    /// Format version of the file.
    pub version: u32,
    /// The hub path it goes to (`/v1/custom-cicd`, …).
    pub endpoint: String,
    /// When it was spooled, epoch milliseconds.
    pub spooled_at_ms: i64,
    /// The request body, byte for byte. The hub URL and key are not stored: the key is a secret,
    /// and both come from the environment of whichever `cistern report` delivers it.
    pub body: String,
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// Name of the folder of refused reports.
pub const REJECTED: &str = "rejected";

impl Spool {
    /// The spool at `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The per-user default: `$XDG_CACHE_HOME/cistern/spool`, else `~/.cache/cistern/spool`,
    /// else a folder in the temporary directory.
    pub fn default_dir(get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        let var = |n: &str| get(n).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
        if let Some(cache) = var("XDG_CACHE_HOME") {
            return cache.join("cistern").join("spool");
        }
        if let Some(home) = var("HOME").or_else(|| var("USERPROFILE")) {
            return home.join(".cache").join("cistern").join("spool");
        }
        std::env::temp_dir().join("cistern-spool")
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a report durably and returns its file.
    pub fn put(&self, endpoint: &str, body: &str, now_ms: i64) -> Result<PathBuf, SpoolError> {
        create_private_dir(&self.dir).map_err(io_err("creating the spool directory", &self.dir))?;
        let name = format!(
            "{now_ms:013}-{}-{:08x}.json",
            std::process::id(),
            rand::random::<u32>()
        );
        let entry = Spooled {
            version: 1,
            endpoint: endpoint.to_owned(),
            spooled_at_ms: now_ms,
            body: body.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| SpoolError::Corrupt {
            path: self.dir.join(&name),
            reason: e.to_string(),
        })?;
        let path = self.dir.join(&name);
        write_atomically(&path, &bytes)?;
        Ok(path)
    }

    /// The spooled reports, oldest first. A missing directory holds none.
    pub fn pending(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        files
    }

    /// Reads one spooled report.
    pub fn read(path: &Path) -> Result<Spooled, SpoolError> {
        let bytes = fs::read(path).map_err(io_err("reading", path))?;
        serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Removes a delivered report (already gone is fine: another reporter delivered it).
    pub fn remove(path: &Path) -> Result<(), SpoolError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
            _ => Ok(()),
        }
    }

    /// Moves a refused report to `rejected/`, with `reason` in `<name>.reason.txt` beside it.
    pub fn reject(&self, path: &Path, reason: &str) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(REJECTED);
        create_private_dir(&dir).map_err(io_err("creating", &dir))?;
        let name = path.file_name().unwrap_or_default();
        let to = dir.join(name);
        fs::rename(path, &to).map_err(io_err("moving to rejected/", path))?;
        let mut why = to.clone().into_os_string();
        why.push(".reason.txt");
        let _ = fs::write(PathBuf::from(why), format!("{reason}\n"));
        Ok(to)
    }

    /// Spools a copy of a refused body straight into `rejected/` (when the write-ahead copy
    /// could not be made) and returns where it is.
    pub fn put_rejected(
        &self,
        endpoint: &str,
        body: &str,
        now_ms: i64,
        reason: &str,
    ) -> Result<PathBuf, SpoolError> {
        let path = self.put(endpoint, body, now_ms)?;
        self.reject(&path, reason)
    }

    /// Moves every refused report back to the queue (after fixing a key, say) and returns how
    /// many.
    pub fn requeue_rejected(&self) -> Result<usize, SpoolError> {
        let dir = self.dir.join(REJECTED);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut n = 0;
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".reason.txt") {
                let _ = fs::remove_file(&p);
            } else if name.ends_with(".json") {
                fs::rename(&p, self.dir.join(&name)).map_err(io_err("moving back", &p))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Temp file in the same directory, fsync, rename over, fsync the directory: a reader sees the
/// whole file or none, and a crash after `put` returned loses nothing.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("writing", &tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("renaming into place", path)(e));
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reports can hold logs, and logs can hold secrets: only the user may read them.
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

    #[test]
    fn put_list_read_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::new(tmp.path().join("a/b"));
        assert!(spool.pending().is_empty());
        let first = spool.put("/v1/custom-cicd", "{\"x\":1}", 1_000).unwrap();
        let second = spool.put("/v1/generic-requests", "{}", 2_000).unwrap();
        assert_eq!(spool.pending(), vec![first.clone(), second.clone()]);
        let s = Spool::read(&first).unwrap();
        assert_eq!(s.endpoint, "/v1/custom-cicd");
        assert_eq!(s.body, "{\"x\":1}");
        Spool::remove(&first).unwrap();
        Spool::remove(&first).unwrap();
        assert_eq!(spool.pending(), vec![second]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(spool.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn rejected_reports_wait_aside_and_can_be_requeued() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::new(tmp.path().to_owned());
        let p = spool.put("/v1/custom-cicd", "{}", 1).unwrap();
        let moved = spool.reject(&p, "400: pipeline is required").unwrap();
        assert!(spool.pending().is_empty());
        let reason = fs::read_to_string(format!("{}.reason.txt", moved.display())).unwrap();
        assert!(reason.contains("pipeline is required"));
        assert_eq!(spool.requeue_rejected().unwrap(), 1);
        assert_eq!(spool.pending().len(), 1);
    }

    #[test]
    fn the_default_directory_is_per_user() {
        let get = |n: &str| (n == "HOME").then(|| "/home/ci".to_owned());
        assert_eq!(
            Spool::default_dir(&get),
            PathBuf::from("/home/ci/.cache/cistern/spool")
        );
        let xdg = |n: &str| (n == "XDG_CACHE_HOME").then(|| "/c".to_owned());
        assert_eq!(Spool::default_dir(&xdg), PathBuf::from("/c/cistern/spool"));
    }
}
