//! Cistern's HTTP hub: configuration, the axum application, authentication, problem+json errors
//! and one route module per API area.

pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;

pub mod delivery;
pub mod error;
pub mod import;
pub mod keys;
pub mod ops;
pub mod routes;
pub mod secrets;
pub mod seed;
pub mod serve;
pub mod triggers;

pub use app::{AppState, Application};
pub use config::Config;
