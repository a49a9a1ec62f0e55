//! `cargo xtask demo`: the lab (client ─ gateway running leakwatch ─ server) with
//! live XDP on the gateway's veths, Qobuz-style leak traffic sent slowly enough to
//! watch, every record the kernel hands up printed as it arrives, and a final table.
//! The sensor's /metrics is forwarded to 127.0.0.1:PORT in the root namespace.

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
    dns::{self, Zone},
    http::{HttpServer, exchange},
    lab::{DNS_V4, LAN_IF, Lab, WAN_IF},
    netns::{Netns, unique},
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
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
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

/// The requests of the demo: what a streaming app sends, to which name and port.
fn scenarios() -> Vec<(&'static str, &'static str, u16, Vec<u8>)> {
    let get = |path: &str, host: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\n{extra}Connection: close\r\n\r\n")
            .into_bytes()
    };
    vec![
        (
            "Qobuz login: email and MD5 password hash in the query",
            "www.qobuz.com",
            80,
            get(
                "/api.json/0.2/user/login?email=jane.doe%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99&app_id=950096963",
                "www.qobuz.com",
                "",
            ),
        ),
        (
            "Qobuz API call with user_auth_token in the query",
            "api.qobuz.com",
            80,
            get(
                "/api.json/0.2/favorite/getUserFavorites?user_auth_token=QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf",
                "api.qobuz.com",
                "",
            ),
        ),
        (
            "Qobuz API call with an X-User-Auth-Token header",
            "api.qobuz.com",
            80,
            get(
                "/api.json/0.2/track/getFileUrl?track_id=1234",
                "api.qobuz.com",
                "X-User-Auth-Token: QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf\r\nX-App-Id: 950096963\r\n",
            ),
        ),
        (
            "The same secrets to an unrelated site (nothing leaves the kernel)",
            "www.example.org",
            8081,
            get(
                "/login?email=jane.doe%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99",
                "www.example.org",
                "",
            ),
        ),
    ]
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
        println!("  EVENT {line}");
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

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the demo builds network namespaces and attaches XDP: run `cargo xtask demo` as root"
        );
    }
    step(
        "building leakwatch",
        cargo().args(["build", "-p", "sensor-user"]),
    )?;
    let bin = root().join("target/debug/leakwatch");
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    println!("==> building the lab: client ─ gateway ({LAN_IF}|{WAN_IF}, leakwatch) ─ server");
    let lab = Lab::up()?;
    let _dns = dns::start(
        &lab.server,
        DNS_V4,
        &[
            Zone::Host("www.qobuz.com", "198.51.100.2"),
            Zone::Cname("api.qobuz.com", "qobuz-api.cdn.example.net"),
            Zone::Host("qobuz-api.cdn.example.net", "198.51.100.4"),
            Zone::Host("www.example.org", "198.51.100.3"),
        ],
        300,
    )?;
    lab.server
        .ip(&["addr", "add", "198.51.100.4/24", "dev", "eth0"])?;
    let _http = HttpServer::start(
        &lab.server,
        &["198.51.100.2:80", "198.51.100.4:80", "198.51.100.3:8081"]
            .map(|a| a.parse().expect("address")),
    )?;
    let dump = std::env::temp_dir().join(format!("{}.jsonl", unique("demo")));
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("events")));
    let sensor_metrics = "127.0.0.1:9477";
    let mut sensor = lab.start_sensor(
        &bin,
        sensor_metrics,
        &[
            "--dump-records",
            dump.to_str().context("temp path")?,
            "--events",
            events.to_str().context("temp path")?,
        ],
    )?;
    forward(args.metrics_port, &lab.gateway, sensor_metrics.parse()?)?;
    println!(
        "==> sensor attached; metrics at http://127.0.0.1:{}/metrics (root namespace)",
        args.metrics_port
    );
    println!(
        "==> nothing configured: the sensor learns Qobuz's addresses from the DNS answers it sees\n"
    );

    let (mut pos, mut all) = (0usize, Vec::new());
    let mut event_pos = 0usize;
    for (what, name, port, req) in scenarios() {
        if stopping() {
            break;
        }
        let addr = match dns::resolve_v4(&lab.client, name) {
            Ok(a) if !a.is_empty() => a[0].clone(),
            other => {
                println!("client: resolving {name} failed: {other:?}");
                continue;
            }
        };
        println!("client resolves {name} → {addr}");
        pause(0.3);
        drain(&dump, &mut pos, &mut all);
        let first = String::from_utf8_lossy(&req)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        println!("client → {addr}:{port}: {what}\n  {first}");
        match exchange(&lab.client, format!("{addr}:{port}").parse()?, req) {
            Ok(resp) => println!(
                "  ← {}",
                String::from_utf8_lossy(&resp).lines().next().unwrap_or("")
            ),
            Err(e) => println!("  request failed: {e:#}"),
        }
        pause(0.3);
        drain(&dump, &mut pos, &mut all);
        print_events(&events, &mut event_pos);
        println!();
        pause(args.pace);
    }
    pause(0.5);
    drain(&dump, &mut pos, &mut all);
    print_events(&events, &mut event_pos);

    // Final table: records by service and kind, and the kernel's counters.
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &all {
        let svc = r["service"].as_str().unwrap_or("-").to_owned();
        *table
            .entry((svc, r["kind"].as_str().unwrap_or("?").to_owned()))
            .or_default() += 1;
    }
    println!(
        "records handed to userspace:\n  {:<10} {:<8} {:>6}",
        "service", "kind", "count"
    );
    for ((svc, kind), n) in &table {
        println!("  {svc:<10} {kind:<8} {n:>6}");
    }
    let text = metrics_text(args.metrics_port).unwrap_or_default();
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
    println!("\nFlows, learned addresses and DNS answers:");
    for prefix in [
        "leakwatch_flows_total{",
        "leakwatch_watched_addresses{",
        "leakwatch_dns_answers_total{",
    ] {
        for line in text
            .lines()
            .filter(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
        {
            println!("  {line}");
        }
    }
    println!(
        "\nFindings (leakwatch_findings_total):\n  {:<10} {:<14} {:<9} {:>5}",
        "service", "kind", "severity", "count"
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("leakwatch_findings_total{"))
    {
        let label = |k: &str| {
            line.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_owned()
        };
        let n = line.rsplit(' ').next().unwrap_or("0");
        println!(
            "  {:<10} {:<14} {:<9} {:>5}",
            label("service"),
            label("kind"),
            label("severity"),
            n
        );
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
            "\nCleartext share of watched flows: {:.0} %",
            100.0 * flows("cleartext") / total
        );
    }

    if args.keep && !stopping() {
        println!("\n==> --keep: lab and sensor stay up; Ctrl-C to tear down");
        while !stopping() {
            drain(&dump, &mut pos, &mut all);
            if !sensor.running() {
                println!("leakwatch exited");
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    println!("==> tearing down");
    sensor.signal(libc::SIGTERM);
    let _ = sensor.wait_timeout(Duration::from_secs(10));
    let _ = std::fs::remove_file(&dump);
    let _ = std::fs::remove_file(&events);
    Ok(())
}
