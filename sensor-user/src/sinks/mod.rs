//! Where results go: Prometheus metrics, events, record logs, and blocks.

pub mod block;
pub mod events;
pub mod jsonl;
pub mod listing;
pub mod metrics;
pub mod records;
pub mod summary;
