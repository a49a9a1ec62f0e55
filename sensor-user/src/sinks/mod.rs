//! Where results go: Prometheus metrics, events, record logs, blocks, the
//! app inventory with its advisories, and followed apps' destinations.

pub mod advisories;
pub mod block;
pub mod destinations;
pub mod events;
pub mod inventory;
pub mod jsonl;
pub mod listing;
pub mod metrics;
pub mod records;
pub mod summary;
