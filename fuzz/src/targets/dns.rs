//! DNS answers (compression pointers, CNAME chains, truncation).

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let m = data;

    if let Ok(r) = sensor_user::targets::dns::parse(m) {
        let _ = r.resolved();
    }
}
