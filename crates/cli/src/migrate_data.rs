//! `cistern migrate-data`: SQLite → PostgreSQL, with a progress bar and the per-table check.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `cistern migrate-data`.
#[derive(Args)]
pub struct MigrateDataArgs {
    /// The SQLite database to copy (sqlite://path, or a path). Stop its hub first.
    #[arg(long)]
    from: String,
    /// The PostgreSQL database to copy into (postgres://user@host/db): new and empty, or a
    /// stopped copy's target with --resume.
    #[arg(long)]
    to: String,
    /// Continue a copy that was stopped part-way (after the last committed batch).
    #[arg(long)]
    resume: bool,
    /// Rows per transaction.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
}

pub async fn run(args: MigrateDataArgs) -> Result<()> {
    let from: PathBuf = cistern_store::sqlite::path_from_url(&args.from)?;
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        bail!("--to must be a PostgreSQL URL (postgres://user@host/db)");
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows ({per_sec}, {eta} left) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let opts = cistern_store::copy::CopyOptions {
        resume: args.resume,
        batch_rows: args.batch.max(1),
    };
    let started = std::time::Instant::now();
    let result = cistern_store::copy::sqlite_to_postgres(&from, &args.to, &opts, |p| {
        bar.set_length(p.all_total);
        bar.set_position(p.all_done);
        bar.set_message(format!("{} {}/{}", p.table, p.done, p.total));
    })
    .await;
    bar.finish_and_clear();
    let checks = result?;
    let mut bad = 0;
    eprintln!("TABLE\tSOURCE ROWS\tTARGET ROWS\tCHECKSUM");
    for c in &checks {
        let verdict = if c.matches() {
            "same".to_owned()
        } else {
            bad += 1;
            format!("DIFFERENT ({} vs {})", c.source_checksum, c.target_checksum)
        };
        eprintln!(
            "{}\t{}\t{}\t{verdict}",
            c.table, c.source_rows, c.target_rows
        );
    }
    let rows: u64 = checks.iter().map(|c| c.target_rows).sum();
    if bad > 0 {
        bail!(
            "{bad} of {} tables differ after the copy; the target keeps its progress: fix the cause and run again with --resume",
            checks.len()
        );
    }
    eprintln!(
        "copied {rows} rows of {} tables in {:.1} s; every table's row count and checksum match. Point the hub at the new database with the same master key (CISTERN_MASTER_KEY or the key file).",
        checks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
