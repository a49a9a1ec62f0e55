//! Capture: the XDP program in the kernel and what comes out of it.
//!
//! | module     | holds                                                           |
//! |------------|-----------------------------------------------------------------|
//! | `blocks`   | the blocking maps: blocked flows, quarantine, roles, allow-list  |
//! | `clock`    | kernel timestamps to wall-clock time                             |
//! | `loader`   | loading the program, sizing maps, config, attaching to interfaces|
//! | `privilege`| the capability check done before touching the kernel             |
//! | `record`   | decoding ring-buffer records                                     |
//! | `ring`     | the async ring reader                                            |
//! | `stats`    | reading the per-CPU counters                                     |
//! | `watch`    | the watched-prefix tries                                         |

pub mod blocks;
pub mod clock;
pub mod defrag;
pub mod loader;
pub mod pcap;
pub mod privilege;
pub mod record;
pub mod ring;
pub mod sampler;
pub mod sched;
pub mod stats;
pub mod watch;
