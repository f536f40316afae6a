//! The command line of `cistern report`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::payload::Dialect;

/// `cistern report …`: report CI runs to a Cistern hub from any CI.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where and how to send.
    #[command(flatten)]
    pub hub: HubArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ReportCommand,
}

/// Where reports go, and what happens when they cannot go there yet.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// The hub's base URL, e.g. https://cistern.example.com.
    #[arg(long, global = true, env = "CISTERN_URL", value_name = "URL")]
    pub url: Option<String>,
    /// An API key with the `ingest` scope (prefer the environment variable to the flag).
    #[arg(
        long,
        global = true,
        env = "CISTERN_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<String>,
    /// Where unsent reports wait [default: $XDG_CACHE_HOME/cistern/spool or ~/.cache/cistern/spool].
    #[arg(long, global = true, env = "CISTERN_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Attempts after the first when the hub is unreachable or busy (all within about 10 s).
    #[arg(
        long,
        global = true,
        env = "CISTERN_RETRIES",
        default_value_t = 3,
        value_name = "N"
    )]
    pub retries: u32,
    /// Tenant (company) named in the Allstacks path by `send`.
    #[arg(
        long,
        global = true,
        env = "CISTERN_TENANT",
        default_value = "default",
        value_name = "SLUG"
    )]
    pub tenant: String,
    /// Say nothing when all goes well (warnings are still printed).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// The reporter's subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Run a command and report it as one run: its output passes through unchanged and its exit
    /// code is passed on.
    Run(RunArgs),
    /// Start a run reported in several steps (state goes to a file in the workspace).
    Begin(BeginArgs),
    /// Run a command as one step of the run `begin` started; its exit code is passed on.
    Step(StepArgs),
    /// Finish the run `begin` started and post it, with all its stages and steps.
    End(EndArgs),
    /// Post a prepared payload (SEI, Jenkins Job Reporter or Allstacks; detected from its fields).
    Send(SendArgs),
    /// Deliver the reports waiting in the spool.
    Flush(FlushArgs),
}

/// What a report says about its run beyond what the CI's environment tells.
#[derive(Debug, Clone, Default, Args)]
pub struct MetaArgs {
    /// Pipeline name [default: from the CI, or CISTERN_PIPELINE, else the directory's name].
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// The run is a deployment (CD) rather than a CI run.
    #[arg(long)]
    pub cd: bool,
    /// The environment deployed to (with --cd), e.g. prod.
    #[arg(long, env = "CISTERN_ENVIRONMENT", value_name = "NAME")]
    pub environment: Option<String>,
}

/// `report run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run metadata.
    #[command(flatten)]
    pub meta: MetaArgs,
    /// Report the command as a stage of this name (its failure log goes on the stage).
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Output kept, from the end, as the failure log: a size (bytes, or e.g. 64KiB, 1MiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = cistern_core::units::parse_size_usize)]
    pub log_tail: usize,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// `report begin`.
#[derive(Debug, Args)]
pub struct BeginArgs {
    /// Run metadata.
    #[command(flatten)]
    pub meta: MetaArgs,
    /// The state file.
    #[arg(long, env = "CISTERN_REPORT_STATE", default_value = super::state::DEFAULT_FILE, value_name = "FILE")]
    pub state: PathBuf,
}

/// `report step`.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// The step's name.
    pub name: String,
    /// The stage it belongs to [default: CISTERN_STAGE, else the CI's stage or job name, else main].
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// The state file.
    #[arg(long, env = "CISTERN_REPORT_STATE", default_value = super::state::DEFAULT_FILE, value_name = "FILE")]
    pub state: PathBuf,
    /// Output kept, from the end, as the step's failure log: a size (bytes, or e.g. 64KiB, 1MiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = cistern_core::units::parse_size_usize)]
    pub log_tail: usize,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// `report end`.
#[derive(Debug, Args)]
pub struct EndArgs {
    /// Run metadata (overrides what `begin` was given).
    #[command(flatten)]
    pub meta: MetaArgs,
    /// The run's result [default: the worst of the steps' results and the job status the CI
    /// tells, else success]; e.g. success, failure, aborted, unstable, cancelled.
    #[arg(long, value_name = "RESULT", value_parser = parse_result)]
    pub result: Option<cistern_core::RunResult>,
    /// The state file.
    #[arg(long, env = "CISTERN_REPORT_STATE", default_value = super::state::DEFAULT_FILE, value_name = "FILE")]
    pub state: PathBuf,
}

/// `report send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The payload file, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub file: String,
    /// The payload's dialect [default: detected from its fields].
    #[arg(long, value_enum)]
    pub dialect: Option<Dialect>,
}

/// `report flush`.
#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Also retry the reports the hub refused before (after fixing a key, say).
    #[arg(long)]
    pub rejected: bool,
}

fn parse_result(s: &str) -> Result<cistern_core::RunResult, String> {
    cistern_core::RunResult::from_word(s).ok_or_else(|| {
        format!(
            "unknown result {s:?}; {}",
            cistern_core::RunResult::accepted_words()
        )
    })
}
