//! Runs one path of the XDP program through BPF_PROG_TEST_RUN for a while, so
//! `perf record -a` can profile it (docs/performance.md, "Where the time
//! goes"). Needs root: `xdp_profile unwatched|unwatched6|vlan|qinq|pppoe|quic|past_budget|past_budget_vlan|past_budget_qinq|past_budget_pppoe|past_budget6|sampled|dns [SECONDS]
//! [JIT_FILE]`. With JIT_FILE it writes the program's x86 code there, for
//! `objdump -D -b binary -mi386:x86-64` (Debian's bpftool cannot disassemble
//! it: no libbfd), to read perf's offsets against.

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
    fixtures::{FrameBuilder, xdp_paths},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "unwatched".into());
    let secs: u64 = args.next().map_or(10, |s| s.parse().expect("seconds"));
    let jit_file = args.next();
    // The frames of the benchmark's cases of the same names.
    let (frame, warmup) = match path.as_str() {
        "unwatched" => (xdp_paths::unwatched_tcp().build(), 0),
        "unwatched6" => (xdp_paths::unwatched_tcp6().build(), 0),
        "quic" => (xdp_paths::unwatched_quic().build(), 0),
        "vlan" => (xdp_paths::unwatched_tcp_vlan().build(), 0),
        "qinq" => (xdp_paths::unwatched_tcp_qinq().build(), 0),
        "pppoe" => (xdp_paths::unwatched_tcp_pppoe().build(), 0),
        "past_budget" => (xdp_paths::watched(40002).build(), 64),
        "past_budget_vlan" => (xdp_paths::watched_vlan(40002).build(), 64),
        "past_budget_qinq" => (xdp_paths::watched_qinq(40002).build(), 64),
        "past_budget_pppoe" => (xdp_paths::watched_pppoe(40002).build(), 64),
        "past_budget6" => (
            FrameBuilder::tcp("2001:db8:c::10", 40002, "2001:db8:1::2", 80)
                .payload(vec![b'q'; 1426])
                .build(),
            64,
        ),
        "sampled" => (xdp_paths::watched(40001).build(), 0),
        "dns" => (xdp_paths::dns().build(), 0),
        other => {
            panic!(
                "unknown path {other}: unwatched, unwatched6, vlan, quic, past_budget, past_budget_vlan, past_budget6, sampled or dns"
            )
        }
    };
    let config = Config {
        // The sampled path stays sampled however long it runs.
        head_bytes: if path == "sampled" {
            u32::MAX
        } else {
            Config::default().head_bytes
        },
        ..Config::default()
    };
    // As the benchmark's: a call's records fit, so no call runs the ring-full path.
    let sizes = MapSizes {
        ring_bytes: sensor_user::capture::loader::ring_bytes_for_each(16 << 20),
        ..MapSizes::default()
    };
    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &config).expect("load leakwatch");
    let mut ring = sensor.take_rings().expect("ring");
    let stats = sensor.take_stats().expect("stats");
    let mut watch = sensor.take_watch().expect("watch maps");
    watch.insert("198.51.100.0/24".parse().unwrap(), 1).unwrap();
    if path == "past_budget6" {
        // Only here: the watched bucket stays clear of the others' addresses.
        watch.insert("2001:db8:1::/48".parse().unwrap(), 1).unwrap();
    }
    let prog = sensor.program().expect("program");
    let info = prog.info().expect("program info");
    // The verifier's work, against its 1,000,000-instruction limit.
    println!(
        "program: {:?} instructions verified, {:?} translated, {:?} bytes of JIT code",
        info.verified_instruction_count(),
        info.size_translated().map(|b| b / 8),
        info.size_jitted()
    );
    if let Some(path) = jit_file {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = prog.fd().expect("program fd").as_fd().as_raw_fd();
        std::fs::write(&path, jited_code(fd)).expect("write the JIT code");
        println!("wrote the JIT code to {path}");
    }
    let run = |repeat| {
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .duration
    };
    // The sampled path's records are drained between calls, as the benchmark does.
    let mut drain = || {
        ring.drain(|_| true);
    };
    for _ in 0..warmup {
        run(1);
    }
    // Calls the ring holds the records of, for the paths that hand packets up.
    let repeat = if matches!(path.as_str(), "sampled" | "dns") {
        5_000
    } else {
        100_000
    };
    let end = Instant::now() + Duration::from_secs(secs);
    let mut ns = Vec::new();
    while Instant::now() < end {
        ns.push(run(repeat).as_nanos());
        drain();
    }
    ns.sort_unstable();
    // Test runs count on loopback's slot, as in the benchmark.
    let full = stats
        .get(1, sensor_common::counters::Counter::RingFull)
        .expect("stats");
    assert_eq!(
        full, 0,
        "{full} ring_full: this measured the ring-full path"
    );
    println!(
        "{path}: median {} ns/packet over {} calls of {repeat}",
        ns[ns.len() / 2],
        ns.len()
    );
}

/// The program's JIT code (`BPF_OBJ_GET_INFO_BY_FD`'s `jited_prog_insns`).
fn jited_code(prog_fd: i32) -> Vec<u8> {
    /// The start of the kernel's `struct bpf_prog_info`: it fills what fits.
    #[repr(C)]
    #[derive(Default)]
    struct InfoHead {
        kind: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let get = |info: &mut InfoHead| {
        let attr = InfoAttr {
            bpf_fd: prog_fd as u32,
            info_len: size_of::<InfoHead>() as u32,
            info: std::ptr::from_mut(info) as u64,
        };
        // SAFETY: the attribute and the buffer it points at outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &raw const attr,
                size_of::<InfoAttr>(),
            )
        };
        assert_eq!(
            r,
            0,
            "BPF_OBJ_GET_INFO_BY_FD: {}",
            std::io::Error::last_os_error()
        );
    };
    let mut info = InfoHead::default();
    get(&mut info);
    let mut code = vec![0u8; info.jited_prog_len as usize];
    let mut info = InfoHead {
        jited_prog_len: code.len() as u32,
        jited_prog_insns: code.as_mut_ptr() as u64,
        ..InfoHead::default()
    };
    get(&mut info);
    code
}
