//! `cargo xtask bench`: benchmarks that print ratios against a baseline measured
//! in the same run and write JSON under target/bench/.

use anyhow::bail;

use crate::shell::{cargo, is_root, step};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Matcher,
    Xdp,
    Live,
    Replay,
    Flood,
    Block,
}

pub fn run(only: Option<Which>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the XDP benchmark loads programs into the kernel: run `cargo xtask bench` as root");
    }
    crate::setup::bench_extras()?;
    let want = |w: Which| only.is_none_or(|o| o == w);
    if want(Which::Matcher) {
        step(
            "matcher throughput vs a raw Hyperscan scan → target/bench/matcher.json",
            cargo().args(["bench", "-p", "sensor-user", "--bench", "matcher"]),
        )?;
    }
    if want(Which::Xdp) {
        step(
            "XDP per-packet cost (BPF_PROG_TEST_RUN) → target/bench/xdp.json",
            cargo().args(["bench", "-p", "sensor-user", "--bench", "xdp"]),
        )?;
    }
    if want(Which::Live) {
        step(
            "building leakwatch (release) for the live benchmark",
            cargo().args(["build", "--release", "-p", "sensor-user"]),
        )?;
        println!(
            "==> live: gateway forwarding with and without the sensor → target/bench/live.json"
        );
        crate::live::run()?;
    }
    if want(Which::Replay) {
        step(
            "building leakwatch (release) for the side by side with Suricata",
            cargo().args(["build", "--release", "-p", "sensor-user"]),
        )?;
        println!(
            "==> replay: leakwatch against Suricata 7 on the same captures → target/bench/replay.json"
        );
        crate::suricata::run()?;
    }
    if want(Which::Block) {
        step(
            "building leakwatch (release) for the blocking latency",
            cargo().args(["build", "--release", "-p", "sensor-user"]),
        )?;
        println!(
            "==> block: time from a leaking packet to its block in place, under load → target/bench/block.json"
        );
        crate::block::run()?;
    }
    if want(Which::Flood) {
        step(
            "building leakwatch (release) for the new-flow flood",
            cargo().args(["build", "--release", "-p", "sensor-user"]),
        )?;
        println!(
            "==> flood: cost per new flow at 20,000 vs 200,000 flows → target/bench/flood.json"
        );
        crate::flood::run()?;
    }
    Ok(())
}
