//! Cistern's client side: the job reporter that any CI job calls (`cistern report`), and the
//! on-premise relay (`cistern satellite`).
//!
//! The reporter wraps a command (or several steps of a job), streams its output through
//! unchanged, and posts the finished run to the hub in the Harness SEI dialect. When the hub
//! cannot be reached the report waits in a spool directory until the next `cistern report`
//! delivers it. Nothing here ever changes the exit code of the command it wraps.
//!
//! The satellite runs inside a customer's network: it serves the hub's ingestion endpoints
//! locally, spools every request durably and forwards it in order, polls Jenkins and GitLab for
//! runs, and sends heartbeats.

pub mod report;
pub mod satellite;
