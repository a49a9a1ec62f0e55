//! Protocol sniffers: what a flow's first bytes say.

pub mod http;
pub mod tls;
