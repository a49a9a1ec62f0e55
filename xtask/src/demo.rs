//! `cargo xtask demo`: the lab (two clients ─ gateway running leakwatch ─ server)
//! with live XDP on the gateway's veths, streaming-app traffic sent slowly enough
//! to watch (leaks in cleartext, the same over TLS, a token replayed from the
//! second client, an app followed to an analytics host nobody watches, an
//! unrelated site), every record the kernel hands up and every
//! event printed as they arrive, and a final table. The sensor's /metrics is
//! forwarded to 127.0.0.1:PORT in the root namespace.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use leakwatch_tests::{
    http::{RecordingServer, requests_on_one_connection_then},
    lab::{LAN_IF, LAN2_IF, Lab, Services, WAN_IF},
    netns::{Netns, unique},
    process::ChildGuard,
    read,
    scenarios::{self, Scenario},
    tls,
};
use serde_json::Value;

use crate::shell::{cargo, is_root, root, step};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the lab and sensor running after the traffic, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Seconds between requests.
    #[arg(long, default_value_t = 1.0)]
    pace: f64,
    /// Root-namespace loopback port where the sensor's /metrics is reachable.
    #[arg(long, default_value_t = 9477)]
    metrics_port: u16,
    /// Blocking mode for the sensor: monitor (default), dry-run, reset,
    /// quarantine, block-cleartext — see the leaking connections cut.
    #[arg(long, default_value = "monitor", value_name = "MODE")]
    block: String,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ctrl-C and SIGTERM end the run (and tear the lab down) instead of killing it.
pub fn catch_signals() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Sleeps `secs`, waking early on Ctrl-C.
fn pause(secs: f64) {
    let mut left = Duration::from_secs_f64(secs);
    while !left.is_zero() && !stopping() {
        let d = left.min(Duration::from_millis(100));
        thread::sleep(d);
        left -= d;
    }
}

/// Forwards `127.0.0.1:port` in the root namespace to `target` inside `ns`.
fn forward(port: u16, ns: &Netns, target: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("127.0.0.1:{port} is taken; pick another with --metrics-port"))?;
    let ns_name = ns.name().to_owned();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let path = PathBuf::from("/var/run/netns").join(&ns_name);
            thread::spawn(move || {
                let Ok(file) = std::fs::File::open(path) else {
                    return;
                };
                // SAFETY: a valid namespace fd; affects only this thread.
                if unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                } != 0
                {
                    return;
                }
                let Ok(upstream) = TcpStream::connect(target) else {
                    return;
                };
                let (mut a, mut b) = (conn, upstream);
                let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
                    return;
                };
                let t = thread::spawn(move || {
                    let _ = std::io::copy(&mut a2, &mut b2);
                    let _ = b2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut b, &mut a);
                // Upstream is done: close the client side so its reader sees EOF
                // and the copy thread above ends.
                let _ = a.shutdown(std::net::Shutdown::Both);
                let _ = t.join();
            });
        }
    });
    Ok(())
}

fn describe(r: &Value) -> String {
    let flags: Vec<&str> = r["flags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "  [{:<4}] {:>6} {}:{} → {}:{}  {}  {} payload {} B{}",
        r["interface"].as_str().unwrap_or("?"),
        r["kind"].as_str().unwrap_or("?"),
        r["src_ip"].as_str().unwrap_or("?"),
        r["src_port"],
        r["dest_ip"].as_str().unwrap_or("?"),
        r["dest_port"],
        r["service"].as_str().unwrap_or("-"),
        match r["proto"].as_str() {
            Some("tcp") => format!("tcp[{}]", r["tcp_flags"].as_str().unwrap_or("")),
            other => other.unwrap_or("?").to_owned(),
        },
        r["payload_len"],
        if flags.is_empty() {
            String::new()
        } else {
            format!("  ({})", flags.join(","))
        },
    )
}

/// Prints dump lines appended since `pos`; returns the new position and the records.
fn drain(path: &PathBuf, pos: &mut usize, all: &mut Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete <= *pos {
        return;
    }
    for line in text[*pos..complete].lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            println!("{}", describe(&v));
            all.push(v);
        }
    }
    *pos = complete;
}

/// Prints events appended since `pos`.
fn print_events(path: &PathBuf, pos: &mut usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text.get(*pos..complete).unwrap_or("").lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let s = |k: &str| e[k].as_str().unwrap_or("?").to_owned();
        match e["event_type"].as_str() {
            Some("leak") => println!(
                "  ⚠ LEAK   {} {} ({}, {}, {}) in the {}: {}  [{} → {}{}]",
                s("service"),
                s("kind"),
                s("severity"),
                s("rule"),
                s("confidence"),
                s("context"),
                s("evidence"),
                s("src_ip"),
                s("dest_ip"),
                e["destination_host"]
                    .as_str()
                    .map_or(String::new(), |h| format!(", third party {h}"))
            ),
            Some("replay") => println!(
                "  ⚠ REPLAY {} {} first sent by {} {:.1} s earlier, now by {}",
                s("service"),
                s("kind"),
                e["replay"]["first_client_ip"].as_str().unwrap_or("?"),
                e["replay"]["seconds_since_first"].as_f64().unwrap_or(0.0),
                s("src_ip")
            ),
            Some(t @ ("block" | "would_block")) => println!(
                "  ⛔ {} {} client {} → {} ({}: {}, mode {}){}",
                if t == "block" {
                    "BLOCKED"
                } else {
                    "WOULD BLOCK"
                },
                s("service"),
                s("src_ip"),
                s("dest_ip"),
                e["block"]["scope"].as_str().unwrap_or("?"),
                e["block"]["reason"].as_str().unwrap_or("?"),
                e["block"]["mode"].as_str().unwrap_or("?"),
                e["block"]["expires"]
                    .as_str()
                    .map_or(String::new(), |x| format!(" until {x}"))
            ),
            Some("cleartext_flow") => println!(
                "  · cleartext flow to {} ({}:{})",
                s("service"),
                s("dest_ip"),
                e["dest_port"]
            ),
            _ => println!("  EVENT {line}"),
        }
    }
    *pos = complete.max(*pos);
}

fn metrics_text(port: u16) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// The lab with its services and the sensor, running.
pub struct Running {
    pub lab: Lab,
    _services: Services,
    pub sensor: ChildGuard,
    pub dump: PathBuf,
    pub events: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sensor.signal(libc::SIGTERM);
        let _ = self.sensor.wait_timeout(Duration::from_secs(10));
        let _ = std::fs::remove_file(&self.dump);
        let _ = std::fs::remove_file(&self.events);
    }
}

/// Builds leakwatch, the lab, its services and the sensor (learning from DNS,
/// following the catalog's apps, nothing configured but the blocking mode
/// `block`); forwards its /metrics to
/// 127.0.0.1:`metrics_port`.
pub fn start(metrics_port: u16, block: &str) -> anyhow::Result<Running> {
    if !is_root() {
        bail!("the lab builds network namespaces and attaches XDP: run it as root");
    }
    step(
        "building leakwatch",
        cargo().args(["build", "-p", "sensor-user"]),
    )?;
    let bin = root().join("target/debug/leakwatch");
    println!(
        "==> building the lab: client ({LAN_IF}) and client2 ({LAN2_IF}, VLAN-tagged) ─ gateway (leakwatch, {WAN_IF}) ─ server"
    );
    let lab = Lab::up()?;
    let services = lab.serve_scenarios(300)?;
    let dump = std::env::temp_dir().join(format!("{}.jsonl", unique("demo")));
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("events")));
    let sensor_metrics = "127.0.0.1:9477";
    let sensor = lab.start_sensor(
        &bin,
        sensor_metrics,
        &[
            "--dump-records",
            dump.to_str().context("temp path")?,
            "--events",
            events.to_str().context("temp path")?,
            "--block",
            block,
            "--follow-apps",
        ],
    )?;
    forward(metrics_port, &lab.gateway, sensor_metrics.parse()?)?;
    println!(
        "==> sensor attached; metrics at http://127.0.0.1:{metrics_port}/metrics (root namespace)"
    );
    Ok(Running {
        lab,
        _services: services,
        sensor,
        dump,
        events,
    })
}

/// What the demo prints while it runs.
struct Watch {
    pos: usize,
    event_pos: usize,
    all: Vec<Value>,
}

impl Watch {
    fn show(&mut self, r: &Running) {
        drain(&r.dump, &mut self.pos, &mut self.all);
        print_events(&r.events, &mut self.event_pos);
    }
}

fn cleartext(r: &Running, w: &mut Watch, ns: &Netns, who: &str, s: &Scenario) {
    println!(
        "{who} → {} (cleartext): {}\n  {}",
        s.host,
        s.what,
        s.first_line()
    );
    match scenarios::send(ns, s, false) {
        Ok((ip, resp)) => println!(
            "  {} resolved to {ip}; ← {}",
            s.host,
            String::from_utf8_lossy(&resp).lines().next().unwrap_or("")
        ),
        Err(e) => println!("  request failed: {e:#}"),
    }
    pause(0.4);
    w.show(r);
    println!();
}

/// The Qobuz app's analytics SDK talks to a host no one watches, on one
/// connection; its first request names the app, so the sensor follows the
/// flow and the second request's e-mail and name are found.
fn followed_app(r: &Running, w: &mut Watch, metrics_port: u16) -> anyhow::Result<()> {
    let (host, ip) = scenarios::ANALYTICS;
    println!(
        "client → {host} ({ip}, watched by no one): the Qobuz app's analytics SDK, one connection:\n  a config fetch naming the app (the sensor follows the flow: --follow-apps), then the user's e-mail and name"
    );
    if let Err(e) = r
        .lab
        .server
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
        && !e.to_string().contains("exists")
    {
        return Err(e);
    }
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    let _server = RecordingServer::start(&r.lab.server, &[addr])?;
    let followed = || {
        read::metric(
            &metrics_text(metrics_port).unwrap_or_default(),
            r#"leakwatch_followed_flows_total{service="qobuz"}"#,
        )
        .unwrap_or(0)
    };
    let before = followed();
    requests_on_one_connection_then(
        &r.lab.client,
        addr,
        scenarios::analytics_requests(scenarios::user_agent("qobuz"))
            .map(String::into_bytes)
            .into(),
        |_| {
            // The sensor decides on the first request before the second is
            // sent: what a flow carries meanwhile is not seen live, by design.
            for _ in 0..50 {
                if followed() > before || stopping() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        },
    )?;
    pause(0.4);
    w.show(r);
    println!();
    Ok(())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    catch_signals();
    let r = start(args.metrics_port, &args.block)?;
    println!(
        "==> nothing configured: the sensor learns the services' addresses from the DNS answers it sees\n"
    );
    let mut w = Watch {
        pos: 0,
        event_pos: 0,
        all: Vec::new(),
    };
    let all = scenarios::scenarios();
    for s in &all {
        if stopping() {
            break;
        }
        cleartext(&r, &mut w, &r.lab.client, "client", s);
        pause(args.pace);
    }
    if !stopping() {
        let s = &all[0];
        println!(
            "client → {} over HTTPS: the same login; TLS hides it, the flow counts as tls",
            s.host
        );
        match tls::curl(&r.lab.client, &s.curl_args("https")) {
            Ok(_) => println!("  ← answered over TLS"),
            Err(e) => println!("  request failed: {e:#}"),
        }
        pause(0.4);
        w.show(&r);
        println!();
        pause(args.pace);
    }
    if !stopping() {
        let replayed = scenarios::qobuz_token_param(scenarios::TOKEN);
        cleartext(
            &r,
            &mut w,
            &r.lab.client2,
            "client2 (VLAN 100) replays client's token",
            &replayed,
        );
        pause(args.pace);
    }
    if !stopping()
        && let Err(e) = followed_app(&r, &mut w, args.metrics_port)
    {
        println!("  the analytics exchange failed: {e:#}\n");
    }
    if !stopping() {
        cleartext(&r, &mut w, &r.lab.client, "client", &scenarios::unwatched());
    }
    pause(0.5);
    w.show(&r);
    summary(&w.all, args.metrics_port);
    // The app inventory: each app version seen, its clients, leak kinds and
    // cleartext share (`leakwatch apps`, over the control socket).
    println!("\nApp inventory (leakwatch apps):");
    match std::process::Command::new(root().join("target/debug/leakwatch"))
        .arg("apps")
        .arg("--control-socket")
        .arg(&r.lab.control_socket)
        .output()
    {
        Ok(o) => print!("{}", String::from_utf8_lossy(&o.stdout)),
        Err(e) => println!("  leakwatch apps: {e}"),
    }

    if args.keep && !stopping() {
        println!(
            "\n==> --keep: lab and sensor stay up; enter a namespace with `ip netns exec {} bash`; Ctrl-C to tear down",
            r.lab.client.name()
        );
        let mut r = r;
        while !stopping() {
            drain(&r.dump, &mut w.pos, &mut w.all);
            if !r.sensor.running() {
                println!("leakwatch exited");
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!("==> tearing down");
        return Ok(());
    }
    println!("==> tearing down");
    Ok(())
}

/// The final table: records by service and kind, the kernel's counters,
/// findings by service × kind, and the cleartext share.
fn summary(all: &[Value], metrics_port: u16) {
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in all {
        let svc = r["service"].as_str().unwrap_or("-").to_owned();
        *table
            .entry((svc, r["kind"].as_str().unwrap_or("?").to_owned()))
            .or_default() += 1;
    }
    println!(
        "records handed to userspace:\n  {:<12} {:<8} {:>6}",
        "service", "kind", "count"
    );
    for ((svc, kind), n) in &table {
        println!("  {svc:<12} {kind:<8} {n:>6}");
    }
    let text = metrics_text(metrics_port).unwrap_or_default();
    println!("\nXDP packet outcomes (leakwatch_xdp_packets_total, non-zero):");
    for line in text
        .lines()
        .filter(|l| l.starts_with("leakwatch_xdp_packets_total{") && !l.ends_with(" 0"))
    {
        println!(
            "  {}",
            line.trim_start_matches("leakwatch_xdp_packets_total")
        );
    }
    println!("\nFlows, learned addresses, DNS answers, replays and followed apps:");
    for prefix in [
        "leakwatch_flows_total{",
        "leakwatch_watched_addresses{",
        "leakwatch_dns_answers_total{",
        "leakwatch_replays_total{",
        "leakwatch_followed_flows_total{",
        "leakwatch_third_party_findings{",
        "leakwatch_follow_latency_seconds_sum",
        "leakwatch_follow_latency_seconds_count",
    ] {
        for line in text
            .lines()
            .filter(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
        {
            println!("  {line}");
        }
    }
    let findings = leakwatch_tests::read::findings(&text);
    println!(
        "\nFindings (leakwatch_findings_total):\n  {:<12} {:<14} {:>5}",
        "service", "kind", "count"
    );
    for ((svc, kind), n) in &findings {
        println!("  {svc:<12} {kind:<14} {n:>5}");
    }
    let flows = |t: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("leakwatch_flows_total{") && l.contains(&format!("transport=\"{t}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let total = flows("cleartext") + flows("tls") + flows("quic") + flows("unknown");
    if total > 0.0 {
        println!(
            "\nCleartext share of watched flows: {:.0} % ({} of {})",
            100.0 * flows("cleartext") / total,
            flows("cleartext"),
            total
        );
    }
}
