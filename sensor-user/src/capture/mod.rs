//! Capture: the XDP program in the kernel and what comes out of it.
//!
//! | module     | holds                                                           |
//! |------------|-----------------------------------------------------------------|
//! | `blocks`   | the blocking maps: blocked flows, quarantine, roles, allow-list  |
//! | `clock`    | kernel timestamps to wall-clock time                             |
//! | `loader`   | loading the program, sizing maps, config, attaching to interfaces|
//! | `merge`    | the per-CPU rings' records put back in timestamp order          |
//! | `privilege`| the capability check done before touching the kernel             |
//! | `record`   | decoding ring-buffer records                                     |
//! | `ring`     | the per-CPU ring buffers and their reader thread                 |
//! | `stats`    | reading the per-CPU counters                                     |
//! | `watch`    | the watched-prefix tries                                         |

pub mod blocks;
pub mod clock;
pub mod defrag;
pub mod loader;
pub mod merge;
pub mod pcap;
pub mod privilege;
pub mod record;
pub mod ring;
pub mod sampler;
pub mod sched;
pub mod stats;
pub mod watch;
