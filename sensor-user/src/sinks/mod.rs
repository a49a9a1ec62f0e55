//! Where results go: Prometheus metrics, events, record logs.

pub mod events;
pub mod jsonl;
pub mod listing;
pub mod metrics;
pub mod records;
pub mod summary;
