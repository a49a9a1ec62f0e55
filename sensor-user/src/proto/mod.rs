//! Protocol sniffers: what a flow's first bytes say.

pub mod fields;
pub mod http;
pub mod http_stream;
pub mod tls;
pub mod user_agent;
