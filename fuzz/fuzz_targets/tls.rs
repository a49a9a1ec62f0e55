//! TLS ClientHello (SNI, versions) and ServerHello.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_user::proto::tls;

fuzz_target!(|b: &[u8]| {
    let _ = tls::parse_client_hello(b);
    let _ = tls::parse_server_hello(b);
});
