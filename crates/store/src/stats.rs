//! What a store tells about itself for monitoring: the group-commit writer's counters (kept in
//! atomics by the writer, read without locks by the metrics endpoint), the connection pool, and
//! what retention pruned.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the batch-size histogram's buckets (writes per group commit).
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Counters of a group-commit writer, updated once per batch.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    writes: AtomicU64,
    commit_micros: AtomicU64,
    /// Batches whose size is at most the bucket's bound (not cumulative: one bucket per batch).
    buckets: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
}

impl WriterStats {
    /// Counts one batch of `size` jobs that took `elapsed` from its first statement to its
    /// commit (or failure).
    pub fn record(&self, size: usize, elapsed: std::time::Duration, committed: bool) {
        let size = size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(size, Ordering::Relaxed);
        self.commit_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if !committed {
            self.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        let slot = BATCH_SIZE_BUCKETS
            .iter()
            .position(|b| size <= *b)
            .unwrap_or(BATCH_SIZE_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> WriterSnapshot {
        let mut cumulative = Vec::with_capacity(BATCH_SIZE_BUCKETS.len());
        let mut running = 0;
        for (i, bound) in BATCH_SIZE_BUCKETS.iter().enumerate() {
            running += self.buckets[i].load(Ordering::Relaxed);
            cumulative.push((*bound as f64, running));
        }
        WriterSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            busy_seconds: self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            size_buckets: cumulative,
        }
    }
}

/// The writer's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriterSnapshot {
    /// Group commits attempted.
    pub batches: u64,
    /// Group commits that failed as a whole.
    pub failed_batches: u64,
    /// Jobs (writes and writer tasks) in those batches; the sum of the batch sizes.
    pub writes: u64,
    /// Seconds spent applying and committing batches.
    pub busy_seconds: f64,
    /// Cumulative batch-size buckets `(upper bound, batches of at most that size)`; batches
    /// larger than the last bound are counted only in `batches`.
    pub size_buckets: Vec<(f64, u64)>,
}

/// A store's health numbers, read without touching the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Jobs queued for the writer, not yet taken into a batch.
    pub queue_depth: u64,
    /// Most jobs the writer's queue holds before senders wait.
    pub queue_capacity: u64,
    /// The writer's counters.
    pub writer: WriterSnapshot,
    /// Connections of the pool (SQLite: read connections; PostgreSQL: the pool).
    pub pool_size: u64,
    /// Of those, idle ones.
    pub pool_idle: u64,
}

/// Deliveries waiting in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Not yet delivered nor given up (waiting for their next attempt or a disabled subscription).
    pub pending: u64,
    /// Of those, due now.
    pub due: u64,
}

/// What one retention pass over deliveries removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedDeliveries {
    /// Finished deliveries (delivered or failed) removed.
    pub deliveries: u64,
    /// Their attempt-log rows.
    pub attempts: u64,
    /// Outbound messages left without any delivery.
    pub messages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_land_in_cumulative_buckets() {
        let s = WriterStats::default();
        for size in [1, 3, 3, 200, 1000] {
            s.record(size, std::time::Duration::from_millis(2), true);
        }
        s.record(4, std::time::Duration::from_millis(2), false);
        let snap = s.snapshot();
        assert_eq!(snap.batches, 6);
        assert_eq!(snap.failed_batches, 1);
        assert_eq!(snap.writes, 1 + 3 + 3 + 200 + 1000 + 4);
        let at = |bound: f64| {
            snap.size_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(1.0), Some(1));
        assert_eq!(at(2.0), Some(1));
        assert_eq!(at(4.0), Some(4));
        assert_eq!(at(256.0), Some(5));
        assert_eq!(at(512.0), Some(5), "1000 is above every bound");
        assert!((snap.busy_seconds - 0.012).abs() < 1e-9);
    }
}
