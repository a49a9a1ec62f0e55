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
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use sensor_common::{
    block::{BlockEntry, reason},
    config::{Config, config_flags},
    flow::{FAMILY_V4, FlowKey, IPPROTO_TCP},
};
use sensor_user::{
    capture::{
        blocks::BlockSink as _,
        loader::{AttachMode, MapSizes, NULL_OBJECT, REF_OBJECT, Sensor, XDP_OBJECT},
        ring::{Ring, Rings},
    },
    fixtures::{FrameBuilder, xdp_paths},
};

/// Repeats per BPF_PROG_TEST_RUN call; the ring is drained between calls so
/// sampled cases measure real ring output, not the ring-full path (any
/// `ring_full` fails the run). A round is 1,000,000 repetitions; the median
/// of `ROUNDS` is reported.
const REPEAT: u32 = 5_000;
const CALLS_PER_ROUND: u32 = 200;
const ROUNDS: usize = 5;
/// Both programs' ring: room for a call's records (5,000 of 2,160 bytes at
/// most), so no call measures the ring-full path.
const RING_BYTES: u32 = 16 << 20;
/// Flows a watched case cycles through, one per call: a single flow's u32
/// head counter would fill within a few rounds of 1,500-byte packets and
/// turn the sampled case into the past-budget one.
const FLOWS_PER_CASE: u16 = 200;

struct Case {
    name: &'static str,
    /// The packet, one per flow the case cycles through (call `i` runs
    /// `frames[i % len]`).
    frames: Vec<Vec<u8>>,
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

fn measure(prog: &Xdp, frames: &[Vec<u8>], ring: Option<&mut Rings>) -> f64 {
    measure_calls(prog, frames, ring, (CALLS_PER_ROUND, None)).0
}

/// `prog` against a baseline program in alternating rounds, each run on the
/// same frames: the median of `prog`'s rounds (ns/packet), the median of the
/// per-round ratios and the median of the baseline's rounds. A slow spell of the machine then weighs on both
/// sides of a ratio, not on whichever program it happened to fall in (a
/// case once read 48 ns against a 21 ns null measured minutes earlier,
/// its twin 34 ns). `base_ring`: the baseline's, when it has one; every
/// repetition must then hand up a record (the reference counts nothing: a
/// full ring would make it look cheaper than it is).
fn measure_paired(
    (prog, ring): (&Xdp, Option<&mut Rings>),
    (base, base_ring): (&Xdp, Option<&mut Rings>),
    frames: &[Vec<u8>],
    case: &str,
) -> (f64, f64, f64) {
    let (mut ring, mut base_ring) = (ring, base_ring);
    let checks_records = base_ring.is_some();
    let (mut times, mut ratios, mut bases) = (Vec::new(), Vec::new(), Vec::new());
    let mut base_records = 0;
    for _ in 0..ROUNDS {
        let (b, records) = round(
            base,
            frames,
            base_ring.as_deref_mut(),
            (CALLS_PER_ROUND, None),
        );
        let (ns, _) = round(prog, frames, ring.as_deref_mut(), (CALLS_PER_ROUND, None));
        base_records += records;
        times.push(ns);
        ratios.push(ns / b);
        bases.push(b);
    }
    let want = ROUNDS as u64 * u64::from(CALLS_PER_ROUND) * u64::from(REPEAT);
    assert!(
        !checks_records || base_records == want,
        "{case}: the reference handed up {base_records} of {want} records (its ring was full): the run is invalid"
    );
    for v in [&mut times, &mut ratios, &mut bases] {
        v.sort_by(f64::total_cmp);
    }
    (times[ROUNDS / 2], ratios[ROUNDS / 2], bases[ROUNDS / 2])
}

/// [`measure`] with `calls` calls a round and `pause` after each; also the
/// records drained from `ring`.
fn measure_calls(
    prog: &Xdp,
    frames: &[Vec<u8>],
    mut ring: Option<&mut Rings>,
    calls: (u32, Option<Duration>),
) -> (f64, u64) {
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut records = 0;
    for _ in 0..ROUNDS {
        let (ns, n) = round(prog, frames, ring.as_deref_mut(), calls);
        rounds.push(ns);
        records += n;
    }
    rounds.sort_by(f64::total_cmp);
    (rounds[ROUNDS / 2], records)
}

/// One round: `calls` calls of [`REPEAT`] repetitions, `ring` drained and
/// `pause` slept after each. The mean ns per repetition, and the records
/// drained.
fn round(
    prog: &Xdp,
    frames: &[Vec<u8>],
    mut ring: Option<&mut Rings>,
    (calls, pause): (u32, Option<Duration>),
) -> (f64, u64) {
    let mut total = Duration::ZERO;
    let mut records = 0;
    for call in 0..calls {
        let opts = TestRunOptions {
            data_in: Some(&frames[call as usize % frames.len()]),
            repeat: REPEAT,
            ..TestRunOptions::default()
        };
        // The kernel reports the mean time per repetition.
        total += prog.test_run(opts).expect("BPF_PROG_TEST_RUN").duration;
        if let Some(r) = ring.as_deref_mut() {
            records += r.drain(|_| true) as u64;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    }
    (total.as_nanos() as f64 / f64::from(calls), records)
}

fn main() {
    assert!(
        sensor_user::capture::privilege::can_load_xdp(),
        "the XDP benchmark loads programs into the kernel: run it as root (cargo xtask bench)"
    );
    // Counted before the pin below, which narrows what the process may use.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Every program measured on one CPU: the null program's and the sensor's
    // numbers share it, and the sensor's per-CPU flow slots stay warm.
    pin(sensor_user::capture::sched::current_cpu());
    let flows = |path: fn(u16) -> FrameBuilder, first_sport: u16| -> Vec<Vec<u8>> {
        (first_sport..first_sport + FLOWS_PER_CASE)
            .map(|sport| path(sport).build())
            .collect()
    };
    let watched = |first_sport| flows(xdp_paths::watched, first_sport);
    // One packet nobody watches, against the null program.
    let unwatched = |name, frame: FrameBuilder| Case {
        name,
        frames: vec![frame.build()],
        config: Config::default(),
        warmup: 0,
        target: Some(1.3),
        ref_target: None,
        blocking: false,
    };
    // Watched flows, each run past its head budget before measuring.
    let past_budget = |name, frames| Case {
        name,
        frames,
        config: Config::default(),
        warmup: 64,
        target: Some(2.0),
        ref_target: None,
        blocking: false,
    };
    let cases = [
        unwatched("unwatched_ipv4_tcp", xdp_paths::unwatched_tcp()),
        Case {
            name: "watched_1500B_sampled",
            frames: watched(40000),
            config: Config {
                head_bytes: u32::MAX,
                ..Config::default()
            },
            warmup: 0,
            target: None,
            ref_target: Some(1.3),
            blocking: false,
        },
        past_budget("watched_past_budget", watched(41000)),
        Case {
            name: "dns_answer",
            frames: vec![xdp_paths::dns().build()],
            config: Config::default(),
            warmup: 0,
            target: None,
            ref_target: Some(1.3),
            blocking: false,
        },
        unwatched("unwatched_ipv4_udp_quic", xdp_paths::unwatched_quic()),
        unwatched("unwatched_ipv6_tcp", xdp_paths::unwatched_tcp6()),
        unwatched("unwatched_ipv4_tcp_vlan", xdp_paths::unwatched_tcp_vlan()),
        unwatched("unwatched_ipv4_tcp_qinq", xdp_paths::unwatched_tcp_qinq()),
        unwatched("unwatched_ipv4_tcp_pppoe", xdp_paths::unwatched_tcp_pppoe()),
        past_budget(
            "watched_past_budget_vlan",
            flows(xdp_paths::watched_vlan, 42000),
        ),
        past_budget(
            "watched_past_budget_qinq",
            flows(xdp_paths::watched_qinq, 43000),
        ),
        past_budget(
            "watched_past_budget_pppoe",
            flows(xdp_paths::watched_pppoe, 44000),
        ),
    ];
    // The same packets with blocking on.
    let blocking: Vec<Case> = cases[..3]
        .iter()
        .map(|c| Case {
            name: c.name,
            frames: c.frames.clone(),
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
    let null_home = Resident::new();
    null.attach(&null_home.iface, XdpMode::Skb)
        .expect("attach the null program to its interface");
    let null_ns = measure(null, &cases[0].frames, None);

    let mut ref_obj = EbpfLoader::new()
        .map_max_entries("EVENTS", RING_BYTES)
        .load(REF_OBJECT)
        .expect("load the reference program");
    let ref_ring =
        Ring::try_from(ref_obj.take_map("EVENTS").expect("EVENTS")).expect("the reference's ring");
    let mut ref_ring = Rings::new(vec![ref_ring]);
    let reference: &mut Xdp = ref_obj
        .program_mut("xdp_ref")
        .expect("xdp_ref")
        .try_into()
        .expect("an XDP program");
    reference.load().expect("verify the reference program");
    let ref_home = Resident::new();
    reference
        .attach(&ref_home.iface, XdpMode::Skb)
        .expect("attach the reference to its interface");

    let mut rows = vec![("null_xdp_pass".to_owned(), null_ns, 1.0, None)];
    // The program's size, as the kernel holds it (docs/performance.md).
    let size = {
        let (sensor, _ring, _home) = prepare(&cases[0]);
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
        let (mut sensor, mut ring, _home) = prepare(case);
        let stats = sensor.take_stats().expect("stats");
        let prog = sensor.program().expect("program");
        let (ns, ratio, _) = measure_paired(
            (prog, Some(&mut ring)),
            (null, None),
            &case.frames,
            case.name,
        );
        rows.push((case.name.to_owned(), ns, ratio, case.target));
        if let Some(t) = case.ref_target {
            let (_, ratio, ref_ns) = measure_paired(
                (prog, Some(&mut ring)),
                (reference, Some(&mut ref_ring)),
                &case.frames,
                case.name,
            );
            ref_rows.push((case.name, ref_ns, ratio, t));
        }
        no_ring_full(&stats, case.name);
    }
    // Blocking against monitor, measured in alternation (the same noise for both).
    for (b, m) in blocking.iter().zip(&cases) {
        let (mut monitor, mut mring, _mhome) = prepare(m);
        let (mut block, mut bring, _bhome) = prepare(b);
        let (mstats, bstats) = (
            monitor.take_stats().expect("stats"),
            block.take_stats().expect("stats"),
        );
        let (mp, bp) = (monitor.program().expect("p"), block.program().expect("p"));
        let (mut ratios, mut times) = (Vec::new(), Vec::new());
        for _ in 0..PAIRED_ROUNDS {
            let mns = measure(mp, &m.frames, Some(&mut mring));
            let bns = measure(bp, &b.frames, Some(&mut bring));
            ratios.push(bns / mns);
            times.push(bns);
        }
        no_ring_full(&mstats, m.name);
        no_ring_full(&bstats, b.name);
        ratios.sort_by(f64::total_cmp);
        times.sort_by(f64::total_cmp);
        let ns = times[PAIRED_ROUNDS / 2];
        rows.push((format!("{}+blocking", b.name), ns, ns / null_ns, None));
        blocking_rows.push((b.name, ratios[PAIRED_ROUNDS / 2]));
    }
    // The main thread only drains the ring there: let it run where it may,
    // not tied to one of the producers' CPUs (docs/performance.md: that
    // round read 1.11–2.76× this session, pinned or not).
    let all: Vec<usize> = (0..cpus).collect();
    sensor_user::capture::sched::pin_to(&all).expect("unpin the benchmark thread");
    let scaling = scale(&cases[1], cpus, FULL);
    let small = scale(&cases[1], cpus, SMALL);
    let reader = with_reader(&cases[1]);
    print_and_write(
        &rows,
        &ref_rows,
        &blocking_rows,
        &size,
        [scaling, small, reader],
    );
}

/// A reader may cost the sampled path at most this much over draining
/// between calls.
const READER_TARGET: f64 = 1.2;
/// The reader's time to empty the ring between calls.
const READER_PAUSE: Duration = Duration::from_millis(20);

/// The sampled path while the daemon's own ring reader (`RingReader`: poll,
/// drain, decode) runs on another CPU, as live, against the same path with
/// the ring drained between calls: what the ring's wake-ups of a reader that
/// keeps up cost the producer. Any `ring_full` fails the run. A producer
/// doing nothing else hands up 4 GB/s of records: no reader keeps up for
/// long, and a full ring measures the ring-full path, not wake-ups. So each
/// call (5,000 records, half the ring) is followed by `READER_PAUSE`, in
/// which the reader empties the ring, as a live reader does between bursts.
fn with_reader(sampled: &Case) -> serde_json::Value {
    use sensor_user::capture::ring::RingReader;
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let (mut sensor, mut ring, _home) = prepare(sampled);
    let stats = sensor.take_stats().expect("stats");
    let prog = sensor.program().expect("program");
    pin(0);
    let frames = &sampled.frames;
    let (mut drained, mut read) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        drained.push(measure(prog, frames, Some(&mut ring)));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                pin(1);
                let mut reader = RingReader::new(ring);
                reader.run(&stop, |_| true).expect("the ring reader");
                reader.into_rings()
            })
        };
        read.push(measure_calls(prog, frames, None, (CALLS_PER_ROUND, Some(READER_PAUSE))).0);
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
/// `ring_full` during the runs makes the comparison invalid: it fails.
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
    assert_eq!(ring_full, 0, "{name}: the run is invalid");
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
    sensor_user::capture::sched::pin(cpu).expect("pin the benchmark thread");
}

/// A scale round's packets: its xdp.json row, what it says, the payload.
type ScaleShape = (&'static str, &'static str, usize);
/// 1,500-byte packets: what the issue asks, where copying the bytes (memory
/// bandwidth both CPUs share) weighs as much as anything else.
const FULL: ScaleShape = ("all_cpus_vs_one", "sampled path", 1500 - 54);
/// 200-byte packets (a 256-byte record slot): what the records' shared parts
/// cost with little to copy. One shared ring read 1.53–1.57× here, per-CPU
/// rings 1.00× (docs/performance.md).
const SMALL: ScaleShape = (
    "all_cpus_vs_one_small",
    "sampled path, 200-byte packets",
    146,
);

/// Issue #17, "Scale across cores": the sampled path's cost per packet with
/// every CPU running `BPF_PROG_TEST_RUN` at once (a distinct flow per CPU,
/// each producing into its CPU's ring) against one CPU alone, the rings
/// drained between calls. Any `ring_full` makes the run invalid.
fn scale(sampled: &Case, cpus: usize, (name, what, payload): ScaleShape) -> serde_json::Value {
    use std::sync::Barrier;
    let frames: Vec<Vec<u8>> = (0..cpus)
        .map(|c| {
            FrameBuilder::tcp("192.0.2.10", 41000 + c as u16, "198.51.100.2", 80)
                .payload(vec![b'q'; payload])
                .build()
        })
        .collect();
    let (mut sensor, mut ring, _home) = prepare(sampled);
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
                ring.drain(|_| true);
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
        name,
        &format!("all {cpus} CPUs at once vs one, {what}"),
        (("all_cpus", alls), ("one_cpu", ones)),
        (SCALE_TARGET, ""),
        ring_full,
    );
    row["cpus"] = cpus.into();
    row
}

/// Rounds of monitor/blocking pairs; the median ratio is reported.
const PAIRED_ROUNDS: usize = 5;

/// A run that found the ring full measured the ring-full path, not the one
/// it names: it fails.
fn no_ring_full(stats: &sensor_user::capture::stats::Stats, case: &str) {
    let full = stats
        .get(1, sensor_common::counters::Counter::RingFull)
        .expect("stats");
    assert_eq!(full, 0, "{case}: {full} ring_full: the run is invalid");
}

/// Loads the program for `case`, fills its maps, runs its warm-up.
fn prepare(case: &Case) -> (Sensor, Rings, Resident) {
    let sizes = MapSizes {
        // RING_BYTES for each CPU's ring, as the reference has.
        ring_bytes: sensor_user::capture::loader::ring_bytes_for_each(RING_BYTES),
        ..MapSizes::default()
    };
    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &case.config).expect("load leakwatch");
    let mut ring = sensor.take_rings().expect("rings");
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
    for frame in &case.frames {
        for _ in 0..case.warmup {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .unwrap();
        }
    }
    ring.drain(|_| true);
    let home = Resident::new();
    sensor
        .attach(&home.iface, AttachMode::Generic)
        .expect("attach leakwatch to its interface");
    (sensor, ring, home)
}

/// An interface (a veth pair left down) that keeps a program in the kernel's XDP dispatcher
/// while it is measured. BPF_PROG_TEST_RUN adds a program that is not there
/// yet and removes it after the call, waiting for an RCU grace period each
/// way (about 15 ms a call on the lab VM): at 200 calls a run the benchmark
/// took the better part of an hour. Attached (generic mode, to an interface
/// without traffic; this kernel has no dummy interfaces), the program is already in the dispatcher and the calls
/// only count its users; each repetition runs exactly as before. Dropped
/// after the program's sensor or link, it deletes the pair.
struct Resident {
    iface: String,
}

impl Resident {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let iface = format!("lwbench{}", NEXT.fetch_add(1, Ordering::Relaxed));
        // A leftover of an interrupted run goes first.
        let _ = ip(&["link", "del", &iface]);
        let peer = format!("{iface}p");
        assert!(
            ip(&["link", "add", &iface, "type", "veth", "peer", "name", &peer]),
            "ip link add {iface} type veth peer name {peer}"
        );
        Self { iface }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.iface]);
    }
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

type Row = (String, f64, f64, Option<f64>);

fn print_and_write(
    rows: &[Row],
    ref_rows: &[(&str, f64, f64, f64)],
    blocking_rows: &[(&str, f64)],
    size: &serde_json::Value,
    extra: [serde_json::Value; 3],
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
            "copy_ref_ns_per_packet": ref_ns,
            "ratio_to_copy_ref": r,
            "target_ratio_to_copy_ref": t,
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
