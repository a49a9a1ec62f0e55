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
//! | `fixtures`  | frame builders for tests and benchmarks (feature `fixtures`)|

#![cfg_attr(
    test,
    allow(
        clippy::needless_pass_by_value,
        clippy::float_cmp,
        reason = "test helpers take fixtures by value; tests compare exact values"
    )
)]

pub mod capture;
// The doc comments are clap's help text, whose `[default]` brackets are not links.
#[allow(rustdoc::broken_intra_doc_links)]
pub mod cli;
pub mod config;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod flows;
pub mod matcher;
pub mod pipeline;
pub mod proto;
pub mod shared;
pub mod sinks;
pub mod targets;

#[cfg(test)]
mod imports;
