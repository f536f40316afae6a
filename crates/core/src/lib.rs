//! Cistern's core: the normalized model of a CI/CD run, the vocabulary of results, and the
//! field-level validation error every inbound format reports. Pure data and functions, no I/O.

pub mod error;
pub mod glob;
pub mod metrics;
pub mod model;
pub mod result;
pub mod signatures;
pub mod units;

pub use error::FieldError;
pub use model::*;
pub use result::RunResult;
