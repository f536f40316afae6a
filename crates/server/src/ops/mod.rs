//! Running the hub in production: Prometheus metrics, limits (rate, in-flight, bodies) and
//! retention.

pub mod limits;
pub mod retention;
pub mod telemetry;
