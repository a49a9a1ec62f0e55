//! XDP per-packet cost, measured with BPF_PROG_TEST_RUN (large repeat counts) and
//! reported as a ratio to a null XDP_PASS program built and measured in the same
//! run, and for the paths that hand a packet up, to a reference program that
//! only reserves a record, copies the same bytes and submits it (`xdp-ref`).
//! Writes target/bench/xdp.json. Needs root. Run by `cargo xtask bench`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{path::PathBuf, time::Duration};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
};
use sensor_common::{
    block::{BlockEntry, reason},
    config::{Config, config_flags},
    flow::{FAMILY_V4, FlowKey, IPPROTO_TCP},
};
use sensor_user::{
    capture::{
        blocks::BlockSink as _,
        loader::{MapSizes, NULL_OBJECT, REF_OBJECT, Sensor, XDP_OBJECT},
    },
    fixtures::{FrameBuilder, dns_answer},
};

/// Repeats per BPF_PROG_TEST_RUN call; the ring is drained between calls so
/// sampled cases measure real ring output, not the ring-full path.
const REPEAT: u32 = 5_000;
const CALLS_PER_ROUND: u32 = 20;
const ROUNDS: usize = 5;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    config: Config,
    /// Packets run once before measuring (to spend a flow's head budget).
    warmup: u32,
    /// Target ratio to the null program, if any.
    target: Option<f64>,
    /// Target ratio to the reference program (which copies this frame to the
    /// ring), for the paths that hand the packet up.
    ref_target: Option<f64>,
    /// Blocking on (block maps consulted, loopback a LAN interface, 1 000
    /// blocked flows none of which is this one): compared with the monitor-mode
    /// case of the same name, target ≤ 1.1×.
    blocking: bool,
}

/// Blocking costs packets it does not block at most this much over monitor mode.
const BLOCKING_TARGET: f64 = 1.1;

fn measure(prog: &Xdp, frame: &[u8], mut ring: Option<&mut RingBuf<MapData>>) -> f64 {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut total = Duration::ZERO;
        for _ in 0..CALLS_PER_ROUND {
            let opts = TestRunOptions {
                data_in: Some(frame),
                repeat: REPEAT,
                ..TestRunOptions::default()
            };
            // The kernel reports the mean time per repetition.
            total += prog.test_run(opts).expect("BPF_PROG_TEST_RUN").duration;
            if let Some(r) = ring.as_deref_mut() {
                while r.next().is_some() {}
            }
        }
        rounds.push(total.as_nanos() as f64 / f64::from(CALLS_PER_ROUND));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    assert!(
        sensor_user::capture::privilege::can_load_xdp(),
        "the XDP benchmark loads programs into the kernel: run it as root (cargo xtask bench)"
    );
    let watched = |sport| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .payload(vec![b'q'; 1500 - 54])
            .build()
    };
    let cases = [
        Case {
            name: "unwatched_ipv4_tcp",
            frame: FrameBuilder::tcp("203.0.113.5", 443, "192.0.2.10", 40000)
                .payload(vec![0x17; 1400])
                .build(),
            config: Config::default(),
            warmup: 0,
            target: Some(1.3),
            ref_target: None,
            blocking: false,
        },
        Case {
            name: "watched_1500B_sampled",
            frame: watched(40001),
            config: Config {
                head_bytes: u32::MAX,
                ..Config::default()
            },
            warmup: 0,
            target: None,
            ref_target: Some(1.3),
            blocking: false,
        },
        Case {
            name: "watched_past_budget",
            frame: watched(40002),
            config: Config::default(),
            warmup: 64,
            target: Some(2.0),
            ref_target: None,
            blocking: false,
        },
        Case {
            name: "dns_answer",
            frame: FrameBuilder::udp("203.0.113.53", 53, "192.0.2.10", 33333)
                .payload(dns_answer(
                    7,
                    "api.qobuz.com",
                    &[[198, 51, 100, 2], [198, 51, 100, 3]],
                    300,
                ))
                .build(),
            config: Config::default(),
            warmup: 0,
            target: None,
            ref_target: Some(1.3),
            blocking: false,
        },
    ];
    // The same packets with blocking on.
    let blocking: Vec<Case> = cases[..3]
        .iter()
        .map(|c| Case {
            name: c.name,
            frame: c.frame.clone(),
            config: Config {
                flags: c.config.flags | config_flags::BLOCK,
                ..c.config
            },
            warmup: c.warmup,
            target: None,
            ref_target: None,
            blocking: true,
        })
        .collect();

    let mut null_obj = Ebpf::load(NULL_OBJECT).expect("load the null program");
    let null: &mut Xdp = null_obj
        .program_mut("xdp_null")
        .expect("xdp_null")
        .try_into()
        .expect("an XDP program");
    null.load().expect("verify the null program");
    let null_ns = measure(null, &cases[0].frame, None);

    let mut ref_obj = Ebpf::load(REF_OBJECT).expect("load the reference program");
    let mut ref_ring = RingBuf::try_from(ref_obj.take_map("EVENTS").expect("EVENTS"))
        .expect("the reference's ring");
    let reference: &mut Xdp = ref_obj
        .program_mut("xdp_ref")
        .expect("xdp_ref")
        .try_into()
        .expect("an XDP program");
    reference.load().expect("verify the reference program");

    let mut rows = vec![("null_xdp_pass".to_owned(), null_ns, 1.0, None)];
    // The program's size, as the kernel holds it (docs/performance.md).
    let size = {
        let (sensor, _ring) = prepare(&cases[0]);
        let info = sensor
            .program()
            .expect("program")
            .info()
            .expect("program info");
        let s = serde_json::json!({
            "xlated_insns": info.size_translated().map(|b| b / 8),
            "jited_bytes": info.size_jitted(),
            "verified_insns": info.verified_instruction_count(),
        });
        println!("leakwatch's XDP program: {s}");
        s
    };
    let mut ref_rows: Vec<(&str, f64, f64, f64)> = Vec::new();
    let mut blocking_rows: Vec<(&str, f64)> = Vec::new();
    for case in &cases {
        let (sensor, mut ring) = prepare(case);
        let prog = sensor.program().expect("program");
        let ns = measure(prog, &case.frame, Some(&mut ring));
        rows.push((case.name.to_owned(), ns, ns / null_ns, case.target));
        if let Some(t) = case.ref_target {
            let ref_ns = measure(reference, &case.frame, Some(&mut ref_ring));
            ref_rows.push((case.name, ref_ns, ns / ref_ns, t));
        }
    }
    // Blocking against monitor, measured in alternation (the same noise for both).
    for (b, m) in blocking.iter().zip(&cases) {
        let (monitor, mut mring) = prepare(m);
        let (block, mut bring) = prepare(b);
        let (mp, bp) = (monitor.program().expect("p"), block.program().expect("p"));
        let (mut ratios, mut times) = (Vec::new(), Vec::new());
        for _ in 0..PAIRED_ROUNDS {
            let mns = measure(mp, &m.frame, Some(&mut mring));
            let bns = measure(bp, &b.frame, Some(&mut bring));
            ratios.push(bns / mns);
            times.push(bns);
        }
        ratios.sort_by(f64::total_cmp);
        times.sort_by(f64::total_cmp);
        let ns = times[PAIRED_ROUNDS / 2];
        rows.push((format!("{}+blocking", b.name), ns, ns / null_ns, None));
        blocking_rows.push((b.name, ratios[PAIRED_ROUNDS / 2]));
    }
    let scaling = scale(&cases[1]);
    let reader = with_reader(&cases[1]);
    print_and_write(&rows, &ref_rows, &blocking_rows, &size, [scaling, reader]);
}

/// A reader may cost the sampled path at most this much over draining
/// between calls.
const READER_TARGET: f64 = 1.2;

/// The sampled path while the daemon's own ring reader (`RingReader`: poll,
/// drain, decode) runs on another CPU, as live, against the same path with
/// the ring drained between calls: what the ring's wake-ups of a reader that
/// keeps up cost the producer. Any `ring_full` makes the run invalid.
fn with_reader(sampled: &Case) -> serde_json::Value {
    use sensor_user::capture::ring::RingReader;
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let (mut sensor, mut ring) = prepare(sampled);
    let stats = sensor.take_stats().expect("stats");
    let prog = sensor.program().expect("program");
    pin(0);
    let frame = &sampled.frame;
    let (mut drained, mut read) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        drained.push(measure(prog, frame, Some(&mut ring)));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                pin(1);
                let mut reader = RingReader::new(ring);
                reader.run(&stop, |_| true).expect("the ring reader");
                reader.into_ring()
            })
        };
        read.push(measure(prog, frame, None));
        stop.store(true, Ordering::Relaxed);
        ring = reader.join().expect("the reader");
    }
    let ring_full = stats
        .get(1, sensor_common::counters::Counter::RingFull)
        .expect("stats");
    ratio_row(
        "with_reader_vs_drained",
        "sampled path with the ring reader running vs drained between calls",
        (("with_reader", read), ("drained", drained)),
        (READER_TARGET, ""),
        ring_full,
    )
}

/// A set of runs (ns/packet each) and its name in xdp.json.
type Runs<'a> = (&'a str, Vec<f64>);

/// The medians of two sets of runs (`a`, `b`, each named) and `a ÷ b`,
/// printed and as xdp.json's row `name`; `note` follows the target. Any
/// `ring_full` during the runs makes the comparison invalid.
fn ratio_row(
    name: &str,
    what: &str,
    ((a_name, mut a), (b_name, mut b)): (Runs, Runs),
    (target, note): (f64, &str),
    ring_full: u64,
) -> serde_json::Value {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (a, b) = (a[a.len() / 2], b[b.len() / 2]);
    let ratio = a / b;
    println!(
        "\n{what}: {a:.1} vs {b:.1} ns/packet, {ratio:.2}× (target ≤ {target}×{note}){}",
        if ring_full > 0 {
            format!(" — INVALID: {ring_full} ring_full")
        } else {
            String::new()
        }
    );
    serde_json::json!({
        "name": name,
        format!("{a_name}_ns_per_packet"): a,
        format!("{b_name}_ns_per_packet"): b,
        "ratio": ratio,
        "target_ratio": target,
        "ring_full": ring_full,
        "valid": ring_full == 0,
    })
}

/// Repeats per call and calls per CPU when every CPU runs at once.
const SCALE_REPEAT: u32 = 1_000;
const SCALE_CALLS: u32 = 100;
/// All CPUs at once may cost at most this much more per packet than one.
const SCALE_TARGET: f64 = 1.2;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// Issue #17, "Scale across cores": the sampled path's cost per packet with
/// every CPU running `BPF_PROG_TEST_RUN` at once (a distinct flow per CPU,
/// all producing into the one ring) against one CPU alone, the ring drained
/// between calls. Any `ring_full` makes the run invalid.
fn scale(sampled: &Case) -> serde_json::Value {
    use std::sync::Barrier;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let frames: Vec<Vec<u8>> = (0..cpus)
        .map(|c| {
            FrameBuilder::tcp("192.0.2.10", 41000 + c as u16, "198.51.100.2", 80)
                .payload(vec![b'q'; 1500 - 54])
                .build()
        })
        .collect();
    let (mut sensor, mut ring) = prepare(sampled);
    let stats = sensor.take_stats().expect("stats");
    let prog = sensor.program().expect("program");
    // `n` CPUs run one call each, then the ring is drained (between calls, as
    // for every case here: a concurrent consumer would measure its wake-ups);
    // the mean of the CPUs' ns/packet over all calls.
    let mut run = |n: usize| -> f64 {
        let go = Barrier::new(n + 1);
        let done = Barrier::new(n + 1);
        std::thread::scope(|s| {
            let handles: Vec<_> = frames[..n]
                .iter()
                .enumerate()
                .map(|(cpu, frame)| {
                    let (go, done) = (&go, &done);
                    s.spawn(move || {
                        pin(cpu);
                        let mut total = Duration::ZERO;
                        for _ in 0..SCALE_CALLS {
                            go.wait();
                            total += prog
                                .test_run(TestRunOptions {
                                    data_in: Some(frame),
                                    repeat: SCALE_REPEAT,
                                    ..TestRunOptions::default()
                                })
                                .expect("BPF_PROG_TEST_RUN")
                                .duration;
                            done.wait();
                        }
                        total.as_nanos() as f64 / f64::from(SCALE_CALLS)
                    })
                })
                .collect();
            for _ in 0..SCALE_CALLS {
                go.wait();
                done.wait();
                while ring.next().is_some() {}
            }
            let each: Vec<f64> = handles
                .into_iter()
                .map(|h| h.join().expect("a CPU"))
                .collect();
            each.iter().sum::<f64>() / each.len() as f64
        })
    };
    let (mut ones, mut alls) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ones.push(run(1));
        alls.push(run(cpus));
    }
    let ring_full = stats
        .get(1, sensor_common::counters::Counter::RingFull)
        .expect("stats");
    let mut row = ratio_row(
        "all_cpus_vs_one",
        &format!("all {cpus} CPUs at once vs one, sampled path"),
        (("all_cpus", alls), ("one_cpu", ones)),
        (SCALE_TARGET, " before per-CPU rings are needed"),
        ring_full,
    );
    row["cpus"] = cpus.into();
    row
}

/// Rounds of monitor/blocking pairs; the median ratio is reported. (Each round
/// runs 500 000 packets; more rounds would take the sampled flow past the u32
/// head counter into the over-budget path.)
const PAIRED_ROUNDS: usize = 5;

/// Loads the program for `case`, fills its maps, runs its warm-up.
fn prepare(case: &Case) -> (Sensor, RingBuf<MapData>) {
    let sizes = MapSizes {
        ring_bytes: 16 << 20,
        ..MapSizes::default()
    };
    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &case.config).expect("load leakwatch");
    let mut ring = sensor.take_ring().expect("ring");
    let mut watch = sensor.take_watch().expect("watch maps");
    watch.insert("198.51.100.0/24".parse().unwrap(), 1).unwrap();
    if case.blocking {
        let mut blocks = sensor.take_blocks().expect("block maps");
        blocks.set_role(1, true).unwrap();
        for port in 0..1000u16 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[192, 0, 2, 99]);
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&[198, 51, 100, 2]);
            let (key, dir) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &a, 20000 + port, &b, 80);
            let entry = BlockEntry::new(u64::MAX, 1, reason::FINDING, dir);
            blocks.block(&key, &entry).unwrap();
        }
    }
    let prog = sensor.program().expect("program");
    for _ in 0..case.warmup {
        prog.test_run(TestRunOptions {
            data_in: Some(&case.frame),
            ..TestRunOptions::default()
        })
        .unwrap();
    }
    while ring.next().is_some() {}
    (sensor, ring)
}

type Row = (String, f64, f64, Option<f64>);

fn print_and_write(
    rows: &[Row],
    ref_rows: &[(&str, f64, f64, f64)],
    blocking_rows: &[(&str, f64)],
    size: &serde_json::Value,
    extra: [serde_json::Value; 2],
) {
    println!(
        "\n{:<24} {:>14} {:>14} {:>10}",
        "case", "ns/packet", "ratio to null", "target"
    );
    for (name, ns, ratio, target) in rows {
        let t = target.map_or(String::from("-"), |t| {
            format!("≤{t:.1}× {}", if *ratio <= t { "met" } else { "MISSED" })
        });
        println!("{name:<24} {ns:>14.1} {ratio:>14.2} {t:>10}");
    }
    println!(
        "\n{:<24} {:>14} {:>14} {:>10}",
        "hands the packet up", "reference ns", "ratio to ref", "target"
    );
    for (name, ref_ns, r, t) in ref_rows {
        let met = if r <= t { "met" } else { "MISSED" };
        println!(
            "{name:<24} {ref_ns:>14.1} {r:>14.2} {:>10}",
            format!("≤{t:.1}× {met}")
        );
    }
    println!(
        "\n{:<24} {:>18} {:>10}",
        "blocking on, not blocked", "ratio to monitor", "target"
    );
    for (name, r) in blocking_rows {
        let met = if *r <= BLOCKING_TARGET {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "{name:<24} {r:>18.3} {:>10}",
            format!("≤{BLOCKING_TARGET}× {met}")
        );
    }
    let mut json: Vec<_> = rows
        .iter()
        .map(|(name, ns, ratio, target)| serde_json::json!({ "name": name, "ns_per_packet": ns, "ratio_to_null": ratio, "target_ratio_to_null": target }))
        .collect();
    for (name, ref_ns, r, t) in ref_rows {
        json.push(serde_json::json!({
            "name": format!("{name} vs reference"),
            "reference_ns_per_packet": ref_ns,
            "ratio_to_reference": r,
            "target_ratio_to_reference": t,
        }));
    }
    for (name, r) in blocking_rows {
        json.push(serde_json::json!({
            "name": format!("{name}+blocking"),
            "ratio_to_monitor": r,
            "target_ratio_to_monitor": BLOCKING_TARGET,
        }));
    }
    json.push(serde_json::json!({ "name": "program_size", "size": size }));
    json.extend(extra);
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).expect("write xdp.json");
    println!("\nwrote {}", path.display());
}
