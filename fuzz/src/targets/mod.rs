//! Every target's body, callable without libFuzzer: the fuzz binaries call
//! them, and so does the regression test (tests/regressions.rs).

pub mod canary;
pub mod coding;
pub mod config;
pub mod dns;
pub mod fields;
pub mod flow;
pub mod ftp;
pub mod hot;
pub mod http;
pub mod imap;
pub mod lines;
pub mod mqtt;
pub mod parse;
pub mod pcap;
pub mod pop3;
pub mod reassembly;
pub mod record;
pub mod smtp;
pub mod tls;
pub mod websocket;

/// Runs target `name` on one input; `false` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "canary" => canary::run(data),
        "coding" => coding::run(data),
        "config" => config::run(data),
        "dns" => dns::run(data),
        "fields" => fields::run(data),
        "flow" => flow::run(data),
        "ftp" => ftp::run(data),
        "hot" => hot::run(data),
        "http" => http::run(data),
        "imap" => imap::run(data),
        "lines" => lines::run(data),
        "mqtt" => mqtt::run(data),
        "parse" => parse::run(data),
        "pcap" => pcap::run(data),
        "pop3" => pop3::run(data),
        "reassembly" => reassembly::run(data),
        "record" => record::run(data),
        "smtp" => smtp::run(data),
        "tls" => tls::run(data),
        "websocket" => websocket::run(data),
        _ => return false,
    }
    true
}

/// Every target's name.
pub const NAMES: [&str; 20] = [
    "canary",
    "coding",
    "config",
    "dns",
    "fields",
    "flow",
    "ftp",
    "hot",
    "http",
    "imap",
    "lines",
    "mqtt",
    "parse",
    "pcap",
    "pop3",
    "reassembly",
    "record",
    "smtp",
    "tls",
    "websocket",
];
