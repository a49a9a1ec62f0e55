//! pcap and pcapng reading: damaged files are errors with an offset, never panics.

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let path = std::env::temp_dir().join(format!("leakwatch-fuzz-{}.pcap", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut frames = 0u64;
    let _ = sensor_user::capture::pcap::read(&path, |f| frames += f.data.len() as u64, |_| {});
    let _ = std::fs::remove_file(&path);
}
