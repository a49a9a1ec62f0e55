//! Where results go: Prometheus metrics, events, record logs, blocks, and
//! the app inventory with its advisories.

pub mod advisories;
pub mod block;
pub mod events;
pub mod inventory;
pub mod jsonl;
pub mod listing;
pub mod metrics;
pub mod records;
pub mod summary;
