//! `cargo xtask bench`: benchmarks that print ratios against a baseline measured
//! in the same run and write JSON under target/bench/.

use anyhow::bail;

use crate::shell::{cargo, is_root, step};

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the XDP benchmark loads programs into the kernel: run `cargo xtask bench` as root");
    }
    step(
        "matcher throughput vs a raw Hyperscan scan → target/bench/matcher.json",
        cargo().args(["bench", "-p", "sensor-user", "--bench", "matcher"]),
    )?;
    step(
        "XDP per-packet cost (BPF_PROG_TEST_RUN) → target/bench/xdp.json",
        cargo().args(["bench", "-p", "sensor-user", "--bench", "xdp"]),
    )?;
    step(
        "building leakwatch for the live benchmark",
        cargo().args(["build", "-p", "sensor-user"]),
    )?;
    println!("==> live: gateway forwarding with and without the sensor → target/bench/live.json");
    crate::live::run()
}
