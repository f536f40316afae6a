//! The zip of failure logs that the Jenkins Job Reporter attaches to a multipart report: the
//! `log` field of a run, stage or step names a file inside it. Entries are never extracted to
//! disk; only the named ones are read, with limits against zip bombs: entry count, total
//! decompressed bytes, and the ratio of decompressed to compressed size.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use cistern_core::{FieldError, LogText, RunReport};

/// Limits applied while reading a log zip.
#[derive(Debug, Clone)]
pub struct ZipLimits {
    /// Most entries in the archive.
    pub max_entries: usize,
    /// Most decompressed bytes read in total (an entry named twice counts twice).
    pub max_total_bytes: u64,
    /// Largest accepted ratio of decompressed to compressed bytes for one entry.
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            // A few dozen failure logs of up to a few MiB each; a zip that inflates further is
            // a bomb (a small one naming one entry from hundreds of stages inflated 448 MB).
            max_total_bytes: 64 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

/// An opened log zip.
pub struct LogZip {
    archive: zip::ZipArchive<Cursor<Vec<u8>>>,
    /// Entry name (and its base name) → index.
    names: HashMap<String, usize>,
    limits: ZipLimits,
    read_total: u64,
}

/// Why a zip could not be used.
pub fn zip_error(message: impl Into<String>) -> FieldError {
    FieldError::new("file", message)
}

impl LogZip {
    /// Opens the archive and indexes its entry names. An entry whose name tries to leave the
    /// archive's root (`..`, an absolute path) marks the zip as hostile: it is refused whole (no
    /// plugin makes one; nothing is ever extracted, but a sender doing this is told so).
    pub fn open(bytes: Vec<u8>, limits: ZipLimits) -> Result<Self, FieldError> {
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            zip_error(format!(
                "the `file` part is not a readable zip archive: {e}"
            ))
        })?;
        if archive.len() > limits.max_entries {
            return Err(zip_error(format!(
                "the zip holds {} entries; at most {} are accepted",
                archive.len(),
                limits.max_entries
            )));
        }
        let mut archive = archive;
        let mut names = HashMap::new();
        for i in 0..archive.len() {
            let Ok(entry) = archive.by_index_raw(i) else {
                continue;
            };
            let Some(path) = entry.enclosed_name() else {
                let shown: String = entry.name().chars().take(100).collect();
                return Err(zip_error(format!(
                    "zip entry {shown:?} leaves the archive (an absolute path or `..`): refused"
                )));
            };
            if entry.is_dir() {
                continue;
            }
            let full = path.to_string_lossy().replace('\\', "/");
            if let Some(base) = path.file_name().map(|b| b.to_string_lossy().into_owned()) {
                names.entry(base).or_insert(i);
            }
            names.insert(full, i);
        }
        Ok(Self {
            archive,
            names,
            limits,
            read_total: 0,
        })
    }

    /// Reads the entry named `name` (full path or base name), keeping its last `cap` bytes.
    /// `Ok(None)` when the archive has no such entry.
    pub fn read_tail(&mut self, name: &str, cap: usize) -> Result<Option<LogText>, FieldError> {
        let Some(&index) = self.names.get(name.trim()) else {
            return Ok(None);
        };
        let mut entry = self
            .archive
            .by_index(index)
            .map_err(|e| zip_error(format!("zip entry {name:?} cannot be read: {e}")))?;
        let compressed = entry.compressed_size().max(1);
        let ratio_limit = compressed
            .saturating_mul(self.limits.max_ratio)
            .max(64 * 1024);
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read: u64 = 0;
        let mut truncated = false;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| zip_error(format!("zip entry {name:?} is corrupt: {e}")))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            self.read_total += n as u64;
            if read > ratio_limit {
                return Err(zip_error(format!(
                    "zip entry {name:?} expands more than {}× its compressed size: refused as a zip bomb",
                    self.limits.max_ratio
                )));
            }
            if self.read_total > self.limits.max_total_bytes {
                return Err(zip_error(format!(
                    "the logs read from the zip expand beyond {} bytes in total (the hub's max_zip_inflated_bytes): refused as a zip bomb",
                    self.limits.max_total_bytes
                )));
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > cap.saturating_mul(2).max(cap + 64 * 1024) {
                let drop = kept.len() - cap;
                kept.drain(..drop);
                truncated = true;
            }
        }
        let text = String::from_utf8_lossy(&kept);
        let mut log = LogText::capped(&text, cap);
        log.truncated |= truncated;
        Ok(Some(log))
    }
}

/// Replaces every `log` reference of a run (run, stages, steps) by the text of the zip entry it
/// names. Returns the references the zip lacks.
pub fn attach_logs(
    report: &mut RunReport,
    zip: &mut LogZip,
    cap: usize,
) -> Result<Vec<String>, FieldError> {
    let mut missing = Vec::new();
    if let Some(log) = &report.log {
        let name = log.text.clone();
        match zip.read_tail(&name, cap)? {
            Some(text) => report.log = Some(text),
            None => missing.push(name),
        }
    }
    for stage in &mut report.stages {
        attach_stage(stage, zip, cap, &mut missing)?;
        for step in &mut stage.steps {
            attach_stage(step, zip, cap, &mut missing)?;
        }
    }
    Ok(missing)
}

fn attach_stage(
    stage: &mut cistern_core::Stage,
    zip: &mut LogZip,
    cap: usize,
    missing: &mut Vec<String>,
) -> Result<(), FieldError> {
    if let Some(name) = stage.log.clone() {
        match zip.read_tail(&name, cap)? {
            Some(text) => {
                stage.log = Some(text.text);
                stage.log_truncated = text.truncated;
            }
            None => missing.push(name),
        }
    }
    Ok(())
}
