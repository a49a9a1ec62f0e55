//! The live half of `cargo xtask bench --only flood`: a million distinct flows
//! to watched addresses, crafted and sent from the lab client's namespace as
//! fast as one AF_PACKET socket goes, through the gateway where the sensor is
//! attached, while a real client logs in with its password hash:
//!
//! - SYN flood: bare SYNs from 192.0.2.0/24 (the server answers each with a
//!   SYN-ACK: half-open flows, seen by the sensor on the WAN side);
//! - one byte and stall: one 1-byte segment per flow, from IPv6 addresses
//!   each in a /64 of its own (spoofed: every flow admitted) and from random
//!   addresses of the client's /64 (one host: its budget holds it back);
//! - tiny out-of-order segments: three 1-byte segments per flow, last first.
//!
//! Reported in target/bench/flood.json (`lab`): the rate, peak RSS, the
//! login's finding, the kernel's counters, and the XDP program's own cost per
//! packet (kernel BPF stats) of a pure ACK to one of 1,000 known flows with
//! about 1,000 flows tracked and again with the table full of the flood.

use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use leakwatch_tests::{
    http::RecordingServer,
    lab::{CLIENT_V4, Lab, SERVER_V4, SERVER_V6},
    netns::unique,
    raw::{ETH_P_IPV4, ETH_P_IPV6, Sender, mac, tcp4, tcp6},
    read,
    scenarios::MD5,
};

/// Flows of each kind.
const SYN_FLOWS: u32 = 400_000;
const STALL_FLOWS: u32 = 400_000;
/// One-byte flows from the one host's /64.
const HOST_FLOWS: u32 = 100_000;
const OOO_FLOWS: u32 = 200_000;
/// Known flows the per-packet cost is measured on, and ACKs sent to them.
const PROBE_FLOWS: u32 = 1_000;
const PROBE_ROUNDS: u32 = 100;
/// The probe's cost is the least of this many sends (other work on the
/// CPUs only ever adds to it).
const PROBE_REPEATS: usize = 7;
const FLOW_TABLE: &str = "1048576";
/// Below what the flood's flows would take: the budget must hold.
const MEMORY_LIMIT: &str = "256MiB";
const METRICS: &str = "127.0.0.1:9479";

const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const SYN: u8 = 0x02;

/// Flow `i` of a kind: its client address and port (documentation ranges,
/// never the real client 192.0.2.10 or the gateway).
fn v4_client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(192, 0, 2, 20 + (i % 230) as u8),
        1024 + (i / 230) as u16,
    )
}

fn v6_client(i: u32) -> (Ipv6Addr, u16) {
    // A pseudo-random host part in the client's /64 (one host's prefix).
    let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let seg = |s: u32| (h >> s) as u16;
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, seg(48), seg(32), seg(16), seg(0)),
        1024 + (i % 60_000) as u16,
    )
}

/// Flow `i` from a /64 of its own (a spoofing flood: no budget holds it).
fn v6_spoofed(i: u32) -> (Ipv6Addr, u16) {
    (
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x1000 + (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ),
        40_000,
    )
}

/// Kernel BPF stats of the sensor's program: (run time ns, runs).
fn prog_stats() -> anyhow::Result<(u64, u64)> {
    let mut best = None;
    for p in aya::programs::loaded_programs() {
        let p = p.context("listing BPF programs")?;
        if p.name_as_str() == Some(sensor_common::maps::PROGRAM)
            && best.as_ref().is_none_or(|(id, _, _)| p.id() > *id)
        {
            best = Some((p.id(), p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    let (_, t, n) = best.context("the sensor's XDP program is not loaded")?;
    Ok((t, n))
}

/// Nanoseconds per run of the program while `f` sends, the least of
/// [`PROBE_REPEATS`].
fn cost(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..PROBE_REPEATS {
        let (t0, n0) = prog_stats()?;
        f()?;
        let (t1, n1) = prog_stats()?;
        if n1 <= n0 {
            bail!("the XDP program did not run while the probe was sent");
        }
        best = best.min((t1 - t0) as f64 / (n1 - n0) as f64);
    }
    Ok(best)
}

/// Entries in the sensor's FLOWS map.
fn tracked_flows() -> anyhow::Result<usize> {
    for m in aya::maps::loaded_maps() {
        let m = m.context("listing BPF maps")?;
        if m.name_as_str() == Some(sensor_common::maps::FLOWS) {
            let data = aya::maps::MapData::from_id(m.id()).context("opening FLOWS")?;
            let map: aya::maps::HashMap<
                _,
                sensor_common::flow::FlowKey,
                sensor_common::flow::FlowState,
            > = aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))
                .context("FLOWS as a hash map")?;
            return Ok(map.keys().flatten().count());
        }
    }
    bail!("no FLOWS map loaded")
}

fn kb(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The probe: a pure ACK to each of the known flows, `PROBE_ROUNDS` times,
/// with a hop limit of 1: the gateway does not forward them, so no answer
/// from the server adds its own runs of the program to the measure.
fn probe(s: &mut Sender) -> anyhow::Result<()> {
    let server: Ipv6Addr = SERVER_V6.parse()?;
    for r in 0..PROBE_ROUNDS {
        for i in 0..PROBE_FLOWS {
            let (c, port) = v6_client(u32::MAX - i);
            let mut p = tcp6(c, server, (port, 80), 2 + r, ACK, b"");
            p[7] = 1;
            s.send(&p, ETH_P_IPV6)?;
        }
    }
    Ok(())
}

/// The known flows (re)made: one byte each, in a fresh budget window of
/// their /64 (the flood's one-byte flows share it).
fn known(s: &mut Sender) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(1100));
    let server: Ipv6Addr = SERVER_V6.parse()?;
    for i in 0..PROBE_FLOWS {
        let (c, port) = v6_client(u32::MAX - i);
        s.send(&tcp6(c, server, (port, 80), 1, PSH_ACK, b"G"), ETH_P_IPV6)?;
    }
    Ok(())
}

fn flood(s: &mut Sender) -> anyhow::Result<()> {
    let (v4s, v6s): (Ipv4Addr, Ipv6Addr) = (SERVER_V4.parse()?, SERVER_V6.parse()?);
    for i in 0..SYN_FLOWS.max(STALL_FLOWS).max(OOO_FLOWS) {
        if i < SYN_FLOWS {
            let (c, port) = v4_client(i);
            s.send(&tcp4(c, v4s, (port, 80), 1000, SYN, b""), ETH_P_IPV4)?;
        }
        if i < STALL_FLOWS {
            let (c, port) = v6_spoofed(i);
            s.send(&tcp6(c, v6s, (port, 80), 1, PSH_ACK, b"G"), ETH_P_IPV6)?;
        }
        if i < HOST_FLOWS {
            let (c, port) = v6_client(i);
            s.send(&tcp6(c, v6s, (port, 80), 1, PSH_ACK, b"G"), ETH_P_IPV6)?;
        }
        if i < OOO_FLOWS {
            let (c, port) = v4_client(i);
            for k in [2u32, 1, 0] {
                let b = [b'a' + k as u8];
                s.send(&tcp4(c, v4s, (port, 8080), 1 + k, PSH_ACK, &b), ETH_P_IPV4)?;
            }
        }
    }
    Ok(())
}

/// The real client's login (run in its namespace): milliseconds until it is
/// connected and sent (the recording server does not answer).
fn login(to: SocketAddr) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    let req = format!(
        "GET /api.json/0.2/user/login?email=jane.doe%40example.com&password={MD5}&app_id=950096963 HTTP/1.1\r\nHost: www.qobuz.com\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    // Open until the flood is over, as an app's connection would be.
    std::thread::sleep(Duration::from_secs(2));
    Ok(ms)
}

pub fn run(bin: &Path) -> anyhow::Result<serde_json::Value> {
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let lab = Lab::up()?;
    let web: SocketAddr = format!("{SERVER_V4}:80").parse()?;
    let _web = RecordingServer::start(&lab.server, &[web])?;
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("flood")));
    let sensor = lab.start_sensor(
        bin,
        METRICS,
        &[
            "--watch",
            "198.51.100.2/32=qobuz",
            "--watch",
            "2001:db8:5::2/128=qobuz",
            "--flow-table-size",
            FLOW_TABLE,
            "--memory-limit",
            MEMORY_LIMIT,
            "--events",
            events.to_str().context("path")?,
        ],
    )?;
    let status = || std::fs::read_to_string(format!("/proc/{}/status", sensor.pid()));
    let idle_rss_kb = kb(&status()?, "VmRSS:");
    let (gateway_mac, _) = mac(&lab.gateway, leakwatch_tests::lab::LAN_IF)?;
    let mut s = Sender::new(&lab.client, "eth0", gateway_mac)?;

    known(&mut s)?;
    std::thread::sleep(Duration::from_millis(500));
    // One unmeasured round first: the first packets of a run pay for cold
    // caches and the sender's first writes.
    probe(&mut s)?;
    let small = tracked_flows()?;
    let cost_small = cost(|| probe(&mut s))?;

    let before = lab.gateway_http_get(METRICS, "/metrics")?;
    let sent0 = s.sent;
    let t = Instant::now();
    let client = lab.client.spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        login(web)
    })?;
    flood(&mut s)?;
    let secs = t.elapsed().as_secs_f64();
    let pps = (s.sent - sent0) as f64 / secs;
    let login_ms = client
        .join()
        .map_err(|_| anyhow::anyhow!("the login thread panicked"))??;

    // The sensor catches up first: its backlog would share the CPUs with the probe.
    let samples = || -> anyhow::Result<u64> {
        let m = lab.gateway_http_get(METRICS, "/metrics")?;
        Ok(read::metric(&m, "leakwatch_ring_records_total{kind=\"sample\"}").unwrap_or(0))
    };
    let settle = Instant::now() + Duration::from_mins(2);
    let mut last = samples()?;
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_secs(1));
        let now = samples()?;
        if now == last {
            break;
        }
        last = now;
    }
    known(&mut s)?;
    std::thread::sleep(Duration::from_millis(500));
    let large = tracked_flows()?;
    let cost_large = cost(|| probe(&mut s))?;

    // The login's finding, once the sensor caught up.
    let found = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            let hit = text.lines().any(|l| {
                l.contains("\"event_type\":\"leak\"")
                    && l.contains(&format!("\"src_ip\":\"{CLIENT_V4}\""))
                    && l.contains("password_hash")
            });
            if hit || Instant::now() > deadline {
                break hit;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let after = lab.gateway_http_get(METRICS, "/metrics")?;
    let peak_rss_kb = kb(&status()?, "VmHWM:");
    let accounted = read::metric(&after, "leakwatch_memory_accounted_bytes").unwrap_or(0);
    let limit = read::metric(&after, "leakwatch_memory_limit_bytes").unwrap_or(0);
    // The bound: RSS within the limit + the idle RSS + 64 MiB
    // (Hyperscan databases, the ring mapping and stacks are not accounted).
    let rss_bound_kb = limit / 1024 + idle_rss_kb + 64 * 1024;
    drop(sensor);
    let _ = std::fs::remove_file(&events);

    // A counter summed over every series of `metric` that has `label`.
    let sum = |m: &str, metric: &str, label: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let reason =
        |m: &str, r: &str| sum(m, "leakwatch_xdp_packets_total", &format!("reason=\"{r}\""));
    let mut counters = serde_json::Map::new();
    for r in [
        "syn_deferred",
        "source_budget",
        "sampled_head",
        "control",
        "watched_no_payload",
        "ring_full",
        "flow_insert_failed",
    ] {
        counters.insert(r.into(), (reason(&after, r) - reason(&before, r)).into());
    }
    let evictions = |label: &str| sum(&after, "leakwatch_evictions_total", label);
    counters.insert("userspace_evictions".into(), evictions("").into());
    counters.insert(
        "budget_evictions".into(),
        evictions("reason=\"budget\"").into(),
    );
    let ring =
        |m: &str| read::metric(m, "leakwatch_ring_records_total{kind=\"sample\"}").unwrap_or(0);
    counters.insert(
        "sample_records_read".into(),
        (ring(&after) - ring(&before)).into(),
    );

    let flows = SYN_FLOWS + STALL_FLOWS + HOST_FLOWS + OOO_FLOWS;
    println!(
        "  lab flood: {flows} flows, {} packets at {pps:.0} pps; the login was sent {login_ms:.0} ms after its connect began, its finding {}",
        s.sent - sent0,
        if found { "reported" } else { "MISSING" }
    );
    println!(
        "  XDP cost of an ACK to a known flow: {cost_small:.0} ns with {small} flows tracked, {cost_large:.0} ns with {large} ({:.2}×)",
        cost_large / cost_small
    );
    println!(
        "  sensor RSS: idle {} MiB, peak {} MiB (bound: limit {} MiB + idle + 64 MiB = {} MiB: {}); accounted after {} MiB; counters {}",
        idle_rss_kb / 1024,
        peak_rss_kb / 1024,
        limit >> 20,
        rss_bound_kb / 1024,
        if peak_rss_kb <= rss_bound_kb {
            "met"
        } else {
            "MISSED"
        },
        accounted >> 20,
        serde_json::Value::Object(counters.clone())
    );
    let json = serde_json::json!({
        "what": "a million distinct flows to watched addresses sent through the lab gateway (bare SYNs, which the server answers: half-open flows; one byte and stall, each from a /64 of its own and from one host's /64; three tiny out-of-order segments) while a real client logs in with its password hash",
        "flows": { "syn": SYN_FLOWS, "one_byte_stall_spoofed": STALL_FLOWS, "one_byte_stall_one_host": HOST_FLOWS, "out_of_order": OOO_FLOWS },
        "packets": s.sent - sent0,
        "seconds": secs,
        "pps": pps,
        "login_finding_reported": found,
        "login_sent_ms": login_ms,
        "idle_rss_mib": idle_rss_kb as f64 / 1024.0,
        "peak_rss_mib": peak_rss_kb as f64 / 1024.0,
        "memory_limit_mib": limit as f64 / 1_048_576.0,
        "accounted_after_mib": accounted as f64 / 1_048_576.0,
        "rss_bound_mib": rss_bound_kb as f64 / 1024.0,
        "rss_within_bound": peak_rss_kb <= rss_bound_kb,
        "xdp_ns_per_known_flow_ack": {
            "what": "kernel BPF stats (run time / runs) while pure ACKs go to 1,000 known flows",
            "small": { "tracked_flows": small, "ns": cost_small },
            "large": { "tracked_flows": large, "ns": cost_large },
            "ratio": cost_large / cost_small,
        },
        "counters": counters,
    });
    if !found {
        bail!("the real login's finding was not reported during the flood: {json}");
    }
    Ok(json)
}
