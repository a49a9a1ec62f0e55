//! Where results go: Prometheus metrics, record logs.

pub mod events;
pub mod metrics;
pub mod records;
