//! Types shared by the leakwatch XDP program (`sensor-ebpf`) and its userspace
//! (`sensor-user`). Every type that crosses the kernel/user boundary is declared
//! here once, `#[repr(C)]`, with its byte offsets documented and asserted by tests.
//!
//! | module      | holds                                                          |
//! |-------------|----------------------------------------------------------------|
//! | [`admit`]   | which packets may start tracking a flow (flood defence)        |
//! | [`record`]  | ring-buffer record header, record kinds and flags, `SNAPLEN`   |
//! | [`flow`]    | direction-normalised flow key, per-flow kernel state            |
//! | [`hot`]     | the per-CPU cache of flows the fast path counts past their head |
//! | [`block`]   | blocking maps, policy bits, the RST the program sends          |
//! | [`config`]  | the sampling policy userspace writes into the `CONFIG` map      |
//! | [`counters`]| names of the per-CPU counters, one per exit path                |
//! | [`parse`]   | L2–L4 header parser over any byte source (kernel or pcap)       |
//! | [`tunnel`]  | GRE, ERSPAN and VXLAN headers the parser looks through          |
//! | [`policy`]  | the sampling decision for one packet of a flow                  |
//! | [`quick`]   | the plain IPv4 TCP case, read before the full parser            |
//! | [`maps`]    | map names, sizes and LPM key types                              |
//! | [`watch`]   | the watched-address prefilter bitmap                            |
#![no_std]

pub mod admit;
pub mod block;
pub mod config;
pub mod counters;
pub mod flow;
pub mod hot;
pub mod maps;
pub mod parse;
pub mod policy;
pub mod quick;
pub mod record;
pub mod tunnel;
pub mod watch;

#[cfg(feature = "user")]
mod pod {
    //! Userspace: these types travel through aya maps as plain old data.
    use crate::{
        admit::{SourceBudget, SourceKey},
        block::{BlockEntry, QuarantineKey},
        config::Config,
        flow::{FlowKey, FlowState},
        record::RecordHeader,
    };

    // SAFETY: repr(C), no padding holes (layout tests), every bit pattern valid.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RecordHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BlockEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for QuarantineKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SourceBudget {}
}
