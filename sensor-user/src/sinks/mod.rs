//! Where results go: Prometheus metrics, record logs.

pub mod metrics;
pub mod records;
