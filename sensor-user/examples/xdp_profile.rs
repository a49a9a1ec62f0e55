//! Runs one path of the XDP program through BPF_PROG_TEST_RUN for a while, so
//! `perf record -a` can profile it (docs/performance.md, "Where the time
//! goes"). Needs root: `xdp_profile unwatched|past_budget [SECONDS]`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a profiling tool: a failed step ends it"
)]

use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions};
use sensor_common::config::Config;
use sensor_user::{
    capture::loader::{MapSizes, Sensor, XDP_OBJECT},
    fixtures::FrameBuilder,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "unwatched".into());
    let secs: u64 = args.next().map_or(10, |s| s.parse().expect("seconds"));
    // The frames of the benchmark's cases of the same names.
    let (frame, warmup) = match path.as_str() {
        "unwatched" => (
            FrameBuilder::tcp("203.0.113.5", 443, "192.0.2.10", 40000)
                .payload(vec![0x17; 1400])
                .build(),
            0,
        ),
        "past_budget" => (
            FrameBuilder::tcp("192.0.2.10", 40002, "198.51.100.2", 80)
                .payload(vec![b'q'; 1446])
                .build(),
            64,
        ),
        other => panic!("unknown path {other}: unwatched or past_budget"),
    };
    let mut sensor =
        Sensor::load(XDP_OBJECT, &MapSizes::default(), &Config::default()).expect("load leakwatch");
    let mut watch = sensor.take_watch().expect("watch maps");
    watch.insert("198.51.100.0/24".parse().unwrap(), 1).unwrap();
    let prog = sensor.program().expect("program");
    let run = |repeat| {
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .duration
    };
    for _ in 0..warmup {
        run(1);
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut ns = Vec::new();
    while Instant::now() < end {
        ns.push(run(100_000).as_nanos());
    }
    ns.sort_unstable();
    println!(
        "{path}: median {} ns/packet over {} calls of 100,000",
        ns[ns.len() / 2],
        ns.len()
    );
}
