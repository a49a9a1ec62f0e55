//! The live benchmark: packets per second forwarded by the lab's gateway with
//! and without the sensor attached, under mixed traffic: Debian's iperf3 sends
//! bulk TCP to a watched service address, bulk TCP to an unwatched one and
//! small UDP datagrams to an unwatched one, as fast as the gateway forwards,
//! while the client asks the lab's dnsmasq `DNS_QPS` queries a second (their
//! answers take the XDP program's DNS path), all at once. Rounds alternate
//! (without, with, …) and the best of each is kept, so drift hits both alike.
//! Offloads are off on every lab veth so a packet is one wire frame either way.
//! The sensor is the release build. Writes target/bench/live.json, with the
//! mix's shares as the sensor counted them.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use leakwatch_tests::{
    dns::Zone,
    lab::{DNS_V4, LAN_IF, Lab, OTHER_V4, SERVER_V4, WAN_IF},
    netns::Netns,
    process::ChildGuard,
};

use sensor_common::counters::Counter;

use crate::shell::root;

const SECONDS: u64 = 4;
const ROUNDS: usize = 3;
/// The sensor's packets per second ÷ the null program's, in each mode.
const TARGET_TO_NULL: f64 = 0.95;
/// DNS queries a second in the mix.
const DNS_QPS: u64 = 5_000;
/// What the DNS load asks for: no catalog name, so nothing is learned and the
/// watched share stays the mix's.
const DNS_NAME: &str = "live-bench.example";

/// Packets the gateway forwarded to the server side: wan0's TX counter.
fn tx_packets(gw: &Netns) -> anyhow::Result<u64> {
    let out = gw.ip(&["-j", "-s", "link", "show", "dev", WAN_IF])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .context("no tx packet counter")
}

/// An iperf3 process in `ns` with `args`; `nice` runs it at the lowest priority.
pub fn iperf_at(ns: &Netns, args: &[&str], nice: bool) -> anyhow::Result<ChildGuard> {
    let mut cmd = if nice {
        let mut c = ns.command("nice");
        c.args(["-n", "19", "iperf3"]);
        c
    } else {
        ns.command("iperf3")
    };
    let child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 (apt-get install iperf3)")?;
    Ok(ChildGuard::new(child, format!("iperf3 {}", args.join(" "))))
}

fn iperf(ns: &Netns, args: &[&str]) -> anyhow::Result<ChildGuard> {
    iperf_at(ns, args, false)
}

/// A DNS query for `DNS_NAME`'s A record, with recursion desired.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in DNS_NAME.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Sends `DNS_QPS` queries a second from the client to the lab's DNS server
/// for `secs`, reading the answers as they come; returns (sent, answered).
fn dns_load(
    lab: &Lab,
    secs: u64,
) -> anyhow::Result<std::thread::JoinHandle<std::io::Result<(u64, u64)>>> {
    lab.client.spawn(move || {
        use std::io::ErrorKind::WouldBlock;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.connect((DNS_V4, 53))?;
        sock.set_nonblocking(true)?;
        let start = Instant::now();
        let (mut sent, mut answered) = (0u64, 0u64);
        let mut buf = [0u8; 512];
        while start.elapsed() < Duration::from_secs(secs) {
            let due = start.elapsed().as_micros() as u64 * DNS_QPS / 1_000_000;
            while sent < due {
                match sock.send(&dns_query(sent as u16)) {
                    Ok(_) => sent += 1,
                    Err(e) if e.kind() == WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            loop {
                match sock.recv(&mut buf) {
                    Ok(_) => answered += 1,
                    Err(e) if e.kind() == WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok((sent, answered))
    })
}

/// The three iperf3 servers the mix sends to.
fn servers(lab: &Lab) -> anyhow::Result<Vec<ChildGuard>> {
    [(SERVER_V4, "5201"), (OTHER_V4, "5202"), (OTHER_V4, "5203")]
        .into_iter()
        .map(|(addr, port)| iperf(&lab.server, &["-s", "-B", addr, "-p", port]))
        .collect()
}

/// One round of mixed traffic, forwarded packets per second. iperf3 3.12's
/// client now and then never exits after a test over the saturated path (it
/// waits for the server's results with no timeout): such a round is run
/// again with fresh servers, once.
fn measured(lab: &Lab, running: &mut Vec<ChildGuard>) -> anyhow::Result<f64> {
    if let Some(pps) = round(lab)? {
        return Ok(pps);
    }
    println!("==> live: an iperf3 client hung; restarting the servers and running the round again");
    // The old servers go first: the new ones bind their ports.
    running.clear();
    *running = servers(lab)?;
    std::thread::sleep(Duration::from_millis(500));
    round(lab)?.context("an iperf3 client hung in two rounds running")
}

/// One round of mixed traffic; returns forwarded packets per second, or
/// `None` if an iperf3 client did not exit.
fn round(lab: &Lab) -> anyhow::Result<Option<f64>> {
    let t = SECONDS.to_string();
    let before = tx_packets(&lab.gateway)?;
    let start = Instant::now();
    let dns = dns_load(lab, SECONDS)?;
    let mut clients = vec![
        iperf(&lab.client, &["-c", SERVER_V4, "-p", "5201", "-t", &t])?,
        iperf(&lab.client, &["-c", OTHER_V4, "-p", "5202", "-t", &t])?,
        iperf(
            &lab.client,
            &[
                "-c", OTHER_V4, "-p", "5203", "-u", "-b", "0", "-l", "200", "-t", &t,
            ],
        )?,
    ];
    let mut hung = false;
    for c in &mut clients {
        // A hung client is killed when `clients` drops.
        let Ok(st) = c.wait_timeout(Duration::from_secs(SECONDS + 20)) else {
            hung = true;
            continue;
        };
        if !st.success() {
            bail!("an iperf3 client failed ({st})");
        }
    }
    let (sent, answered) = dns
        .join()
        .map_err(|_| anyhow::anyhow!("the DNS load panicked"))?
        .context("the DNS load")?;
    if answered * 2 < sent {
        bail!("the lab's DNS server answered {answered} of {sent} queries");
    }
    if hung {
        return Ok(None);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Some((tx_packets(&lab.gateway)? - before) as f64 / secs))
}

/// The reasons of `leakwatch_xdp_packets_total` a watched flow's packets count under.
const WATCHED: [Counter; 10] = [
    Counter::WatchedNoPayload,
    Counter::SampledHead,
    Counter::SampledTail,
    Counter::TlsMeta,
    Counter::Control,
    Counter::OverBudget,
    Counter::RingFull,
    Counter::FlowInsertFailed,
    Counter::SynDeferred,
    Counter::SourceBudget,
];

/// The mix as the running sensor counted it: packets, and the shares that were
/// watched, unwatched and DNS answers (the rest: ARP and the like).
fn mix_seen(lab: &Lab, metrics: &str) -> anyhow::Result<serde_json::Value> {
    use leakwatch_tests::read::metric;
    let text = lab.gateway_http_get(metrics, "/metrics")?;
    let count = |reason: Counter| {
        metric(
            &text,
            &format!(
                "leakwatch_xdp_packets_total{{reason=\"{}\"}}",
                reason.name()
            ),
        )
        .unwrap_or(0)
    };
    let total = metric(&text, "leakwatch_xdp_packets_total").context("no packet counters")?;
    let watched: u64 = WATCHED.into_iter().map(count).sum();
    let share = |n: u64| n as f64 / total.max(1) as f64;
    Ok(serde_json::json!({
        "packets": total,
        "watched": share(watched),
        "unwatched": share(count(Counter::Unwatched)),
        "dns": share(count(Counter::DnsAnswer)),
    }))
}

/// Frames as on a wire: no TSO/GSO at the senders, no GRO at the receivers, so
/// attaching XDP (which turns veth GRO aggregation off) does not change what a
/// packet is, and packet rates compare.
fn wire_frames(lab: &Lab) -> anyhow::Result<()> {
    for (ns, dev) in [
        (&lab.client, "eth0"),
        (&lab.gateway, LAN_IF),
        (&lab.gateway, WAN_IF),
        (&lab.server, "eth0"),
    ] {
        leakwatch_tests::netns::run(
            ns.command("ethtool")
                .args(["-K", dev, "tso", "off", "gso", "off", "gro", "off"]),
        )?;
    }
    Ok(())
}

/// CPU time (user and system) process `pid` has used, in seconds: what the
/// daemon takes from the two cores the forwarding also runs on.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("a /proc stat field")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15: 11 and 12 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// The null XDP program `cargo build --release -p sensor-user` just built (the newest).
fn null_object() -> anyhow::Result<std::path::PathBuf> {
    let mut found: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
    for e in std::fs::read_dir(root().join("target/release/build"))?.flatten() {
        let p = e.path().join("out/xdp-null");
        if e.file_name().to_string_lossy().starts_with("sensor-user-")
            && let Ok(m) = p.metadata().and_then(|m| m.modified())
        {
            found.push((m, p));
        }
    }
    found.sort();
    found.pop().map(|(_, p)| p).context(
        "no xdp-null object under target/release/build (cargo build --release -p sensor-user)",
    )
}

pub fn run() -> anyhow::Result<()> {
    let bin = root().join("target/release/leakwatch");
    let lab = Lab::up()?;
    wire_frames(&lab)?;
    let _dns =
        leakwatch_tests::dns::start(&lab.server, DNS_V4, &[Zone::Host(DNS_NAME, OTHER_V4)], 60)?;
    let mut running = servers(&lab)?;
    std::thread::sleep(Duration::from_millis(500));
    let metrics = "127.0.0.1:9478";
    let null = null_object()?;
    let null = null.to_str().context("path")?;
    // (attach mode for `ip link set … xdp…`, for `leakwatch run --xdp-mode`)
    let modes = [("xdpdrv", "native"), ("xdpgeneric", "generic")];
    let mut best = std::collections::BTreeMap::<String, f64>::new();
    let mut mix = serde_json::Map::new();
    for i in 0..ROUNDS {
        let mut line = format!("round {}:", i + 1);
        let mut keep = |name: String, pps: f64, line: &mut String| {
            line.push_str(&format!(" {name} {pps:.0};"));
            let b = best.entry(name).or_default();
            *b = b.max(pps);
        };
        keep("none".into(), measured(&lab, &mut running)?, &mut line);
        for (ip_mode, mode) in modes {
            for dev in [LAN_IF, WAN_IF] {
                lab.gateway.ip(&[
                    "link",
                    "set",
                    "dev",
                    dev,
                    ip_mode,
                    "obj",
                    null,
                    "sec",
                    "xdp.frags",
                ])?;
            }
            keep(
                format!("null/{mode}"),
                measured(&lab, &mut running)?,
                &mut line,
            );
            for dev in [LAN_IF, WAN_IF] {
                lab.gateway
                    .ip(&["link", "set", "dev", dev, ip_mode, "off"])?;
            }
            let mut sensor = lab.start_sensor(
                &bin,
                metrics,
                &["--watch", "198.51.100.2/32=qobuz", "--xdp-mode", mode],
            )?;
            let (cpu0, t0) = (cpu_seconds(sensor.pid())?, Instant::now());
            keep(
                format!("sensor/{mode}"),
                measured(&lab, &mut running)?,
                &mut line,
            );
            let share = (cpu_seconds(sensor.pid())? - cpu0) / t0.elapsed().as_secs_f64();
            let mut seen = mix_seen(&lab, metrics)?;
            seen["daemon_cpu_share"] = serde_json::json!(share);
            mix.insert(mode.into(), seen);
            sensor.signal(libc::SIGTERM);
            let _ = sensor.wait_timeout(Duration::from_secs(10));
        }
        println!("{line} (pkt/s)");
    }
    let get = |k: &str| best.get(k).copied().unwrap_or(0.0);
    let without = get("none");
    println!(
        "forwarded through the gateway ({LAN_IF} → {WAN_IF}), best of {ROUNDS} rounds, pkt/s:"
    );
    println!(
        "  {:<8} {:>10} {:>14} {:>12} {:>10} {:>8}   target",
        "mode", "no XDP", "null program", "sensor", "÷ no XDP", "÷ null"
    );
    let mut json_modes = serde_json::Map::new();
    for (_, mode) in modes {
        let (n, w) = (get(&format!("null/{mode}")), get(&format!("sensor/{mode}")));
        let to_null = w / n;
        let met = to_null >= TARGET_TO_NULL;
        println!(
            "  {mode:<8} {without:>10.0} {n:>14.0} {w:>12.0} {:>10.2} {to_null:>8.2}   ≥ {TARGET_TO_NULL} ÷ null: {}",
            w / without,
            if met { "met" } else { "MISSED" }
        );
        json_modes.insert(
            mode.into(),
            serde_json::json!({
                "pps_with_null_xdp": n,
                "pps_with_sensor": w,
                "ratio": w / without,
                "ratio_to_null_xdp": to_null,
                "target_ratio_to_null_xdp": TARGET_TO_NULL,
                "met": met,
                "mix_seen_by_sensor": mix.get(mode),
            }),
        );
    }
    println!("(÷ no XDP is veth's own cost of running any XDP program: reported, not a target)");
    for (mode, m) in &mix {
        println!("the sensor's last round ({mode}): mix counted and daemon CPU {m}");
    }
    let json = serde_json::json!({
        "traffic": "iperf3: TCP to a watched address, TCP and 200-byte UDP to an unwatched one, as fast as the gateway forwards; DNS queries at a fixed rate, answered from :53 through the gateway; concurrently; TSO/GSO/GRO off (wire-sized frames)",
        "mix": {
            "watched": format!("iperf3 TCP to {SERVER_V4}:5201 (--watch {SERVER_V4}/32), unlimited"),
            "unwatched": format!("iperf3 TCP to {OTHER_V4}:5202 and 200-byte UDP to {OTHER_V4}:5203, unlimited"),
            "dns": format!("{DNS_QPS} A queries/s from the client to dnsmasq at {DNS_V4}"),
            "rate": "what the gateway forwards: pps_without_xdp and each mode's pps below; each mode's mix_seen_by_sensor gives the shares the sensor counted",
        },
        "dns_queries_per_second": DNS_QPS,
        "seconds_per_round": SECONDS,
        "rounds": ROUNDS,
        "pps_without_xdp": without,
        "modes": json_modes,
    });
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("live.json"), serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", dir.join("live.json").display());
    drop(running);
    Ok(())
}
