//! Inbound formats understood by Cistern. Each dialect turns raw request bytes into normalized
//! [`Inbound`] items, or a [`Rejection`] naming every bad field at once. Parsers never touch the
//! store and never panic on hostile input.

pub mod allstacks;
pub mod cdevents;
pub mod environment;
pub mod fields;
pub mod github;
pub mod gitlab;
pub mod jobserv;
pub mod json;
pub mod logzip;
pub mod multipart;
pub mod propelo;
pub mod sei;
pub mod times;
pub mod warnings;

use cistern_core::{FieldError, RunReport};
use time::OffsetDateTime;

/// What a parsed request asks Cistern to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Create or update a run.
    Run(Box<RunReport>),
    /// Register a CI/CD instance and hand back its GUID.
    RegisterInstance(InstanceRegistration),
    /// An incident opened or resolved.
    Incident(cistern_core::IncidentReport),
    /// The time a commit was made or merged (CDEvents `change.merged`), for lead time.
    CommitTime {
        /// Commit id.
        sha: String,
        /// When.
        at: OffsetDateTime,
        /// Repository, when known.
        repo: Option<String>,
    },
    /// An event understood but carrying nothing to store (a ping, an event type not tracked);
    /// acknowledged and kept in the events log.
    Ignored(String),
}

/// Request headers, looked up case-insensitively (dialects do not depend on an HTTP crate).
#[derive(Debug, Clone, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request to register a CI/CD instance (seed 000, "Generate UUID / GUID").
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRegistration {
    /// The GUID asked for (e.g. an Allstacks `service_id`); a random one is made when absent.
    pub guid: Option<String>,
    /// The integration the instance belongs to.
    pub integration_id: String,
    /// Name of the instance.
    pub name: String,
    /// Kind (`jenkins`, `custom`, …).
    pub kind: String,
    /// URL, when given.
    pub url: Option<String>,
}

/// Why a request was refused; every variant names the fields and the rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The body is not JSON (or not UTF-8, or empty): one error saying where.
    Malformed(FieldError),
    /// The body is JSON but fields break the rules: all of them, at once.
    Invalid(Vec<FieldError>),
}

impl Rejection {
    /// The field errors, whatever the variant.
    pub fn errors(&self) -> Vec<FieldError> {
        match self {
            Rejection::Malformed(e) => vec![e.clone()],
            Rejection::Invalid(errs) => errs.clone(),
        }
    }

    /// A one-line summary for logs and problem titles.
    pub fn summary(&self) -> String {
        match self {
            Rejection::Malformed(e) => e.to_string(),
            Rejection::Invalid(errs) => errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Settings that shape parsing.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Cap of each kept log, in bytes (the tail is kept).
    pub max_log_bytes: usize,
    /// "Now", for rejecting times in the future.
    pub now: OffsetDateTime,
}

impl ParseOptions {
    /// Options with the default 1 MiB log cap, at the current time.
    pub fn new(max_log_bytes: usize) -> Self {
        Self {
            max_log_bytes,
            now: OffsetDateTime::now_utc(),
        }
    }
}
