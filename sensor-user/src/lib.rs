//! leakwatch: a passive sensor that finds streaming apps leaking credentials,
//! session tokens, password hashes and personal data in cleartext.
//!
//! ```text
//!  NIC/veth ─► XDP `leakwatch` (sensor-ebpf) ─ parse L2–L4, watched? sample ─┐
//!                                                                             │ ring buffer
//!  capture::ring ◄────────────────────────────────────────────────────────────┘
//!     │ Record (header + frame bytes)
//!     ▼
//!  pipeline thread ─► (flows → proto → matcher → findings) ─► sinks
//!                                                              ├─ metrics (/metrics, /healthz)
//!                                                              └─ records (--dump-records)
//! ```
//!
//! | module      | holds                                                       |
//! |-------------|-------------------------------------------------------------|
//! | [`capture`] | XDP loader, attach, ring reader, kernel counters, tries      |
//! | [`targets`] | service ids and watched prefixes                            |
//! | [`sinks`]   | Prometheus metrics and endpoint, record log                 |
//! | [`fixtures`]| frame builders for tests and benchmarks                     |

pub mod capture;
pub mod config;
pub mod fixtures;
pub mod flows;
pub mod matcher;
pub mod pipeline;
pub mod proto;
pub mod sinks;
pub mod targets;

/// Per-flow tables: foldhash, randomly seeded per table (flow tuples come from
/// the network), several times cheaper than SipHash on these small keys.
pub type FlowMap<V> =
    std::collections::HashMap<sensor_common::flow::FlowKey, V, foldhash::fast::RandomState>;

/// Keys of the flows whose last activity is `idle` or more before `now`.
pub fn idle_flows<V>(
    flows: &FlowMap<V>,
    now: std::time::Instant,
    idle: std::time::Duration,
    last: impl Fn(&V) -> std::time::Instant,
) -> Vec<sensor_common::flow::FlowKey> {
    flows
        .iter()
        .filter(|(_, f)| now.duration_since(last(f)) >= idle)
        .map(|(k, _)| *k)
        .collect()
}
