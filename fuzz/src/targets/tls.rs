//! TLS ClientHello (SNI, versions) and ServerHello.

use sensor_user::proto::tls;

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let b = data;

    let _ = tls::parse_client_hello(b);
    let _ = tls::parse_server_hello(b);
}
