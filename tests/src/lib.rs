//! The network-namespace lab: RAII guards for namespaces and processes, a
//! client/gateway/server topology built from documentation-range addresses, and
//! tiny HTTP peers that run inside the namespaces. Used by the end-to-end tests
//! in `tests/tests/` and by `cargo xtask demo`.
//!
//! Everything is undone on drop, names are unique per process, and nothing is
//! routed from the root namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

pub mod capture;
pub mod convo;
pub mod dashboard;
pub mod dialogue;
pub mod dns;
pub mod encode;
pub mod http;
pub mod lab;
pub mod netns;
pub mod process;
pub mod raw;
pub mod read;
pub mod scenarios;
pub mod tls;
pub mod vlan;
pub mod wait;
