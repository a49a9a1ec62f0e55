//! Flows as userspace tracks them.

pub mod posture;
pub mod reassembly;
pub mod role;
pub mod streams;
pub mod workers;
