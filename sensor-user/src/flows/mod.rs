//! Flows as userspace tracks them.

pub mod posture;
