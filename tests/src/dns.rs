//! The lab's DNS server: Debian's dnsmasq, answering from records given on its
//! command line only (no upstream, no /etc/hosts), inside a lab namespace.

use std::process::Stdio;

use anyhow::Context as _;

use crate::{netns::Netns, process::ChildGuard};

/// A name and what it resolves to.
pub enum Zone<'a> {
    /// `name` → A/AAAA `addr`.
    Host(&'a str, &'a str),
    /// `name` CNAME `target` (the target must be a `Host`).
    Cname(&'a str, &'a str),
}

/// Starts dnsmasq on `listen`:53 in `ns` with `zone` and TTL `ttl` seconds.
pub fn start(ns: &Netns, listen: &str, zone: &[Zone<'_>], ttl: u32) -> anyhow::Result<ChildGuard> {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--pid-file=",
        "--user=root",
        "--log-facility=-",
    ])
    .arg(format!("--listen-address={listen}"))
    .arg(format!("--local-ttl={ttl}"))
    .arg(format!("--auth-ttl={ttl}"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for z in zone {
        match z {
            Zone::Host(name, addr) => cmd.arg(format!("--host-record={name},{addr}")),
            Zone::Cname(name, target) => cmd.arg(format!("--cname={name},{target}")),
        };
    }
    let child = cmd
        .spawn()
        .context("starting dnsmasq (apt-get install dnsmasq-base)")?;
    let mut guard = ChildGuard::new(child, "dnsmasq");
    // Ready when it answers; it exits at once on a bad argument.
    for _ in 0..50 {
        if !guard.running() {
            anyhow::bail!("dnsmasq exited at start");
        }
        let listening = ns
            .command("ss")
            .args(["-Hlun", "sport", "= :53"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(listen));
        if listening {
            return Ok(guard);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("dnsmasq did not start listening on {listen}:53")
}

/// Resolves `name` in `ns` through its resolv.conf (glibc, like an app would).
pub fn resolve_v4(ns: &Netns, name: &str) -> anyhow::Result<Vec<String>> {
    resolve(ns, name, "ahostsv4")
}

/// As `resolve_v4`, for AAAA records.
pub fn resolve_v6(ns: &Netns, name: &str) -> anyhow::Result<Vec<String>> {
    resolve(ns, name, "ahostsv6")
}

fn resolve(ns: &Netns, name: &str, db: &str) -> anyhow::Result<Vec<String>> {
    let out = ns
        .command("getent")
        .args([db, name])
        .output()
        .context("running getent")?;
    anyhow::ensure!(out.status.success(), "getent {db} {name} failed");
    let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    addrs.dedup();
    Ok(addrs)
}
