//! The lab topology: client ─ gateway ─ server, each a network namespace.
//!
//! ```text
//!  client (eth0)            gateway (lan0 | wan0)             server (eth0)
//!  192.0.2.10/24   ──veth── 192.0.2.1 | 198.51.100.1  ──veth── 198.51.100.2/24 (watched)
//!  2001:db8:c::10/64        2001:db8:c::1 | 2001:db8:5::1     198.51.100.3/24 (unwatched)
//!                                                             198.51.100.53/24 (DNS)
//!                                                             2001:db8:5::2, ::3
//! ```
//! Documentation-range addresses only, routed only between these namespaces.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    netns::{Netns, ip, unique},
    process::ChildGuard,
};

pub const CLIENT_V4: &str = "192.0.2.10";
pub const GW_LAN_V4: &str = "192.0.2.1";
pub const GW_WAN_V4: &str = "198.51.100.1";
pub const SERVER_V4: &str = "198.51.100.2";
pub const OTHER_V4: &str = "198.51.100.3";
/// The lab's DNS server (in the server namespace); every namespace's resolv.conf.
pub const DNS_V4: &str = "198.51.100.53";
pub const CLIENT_V6: &str = "2001:db8:c::10";
pub const GW_LAN_V6: &str = "2001:db8:c::1";
pub const GW_WAN_V6: &str = "2001:db8:5::1";
pub const SERVER_V6: &str = "2001:db8:5::2";
pub const OTHER_V6: &str = "2001:db8:5::3";
/// Gateway interfaces the sensor attaches to.
pub const LAN_IF: &str = "lan0";
pub const WAN_IF: &str = "wan0";

/// The three namespaces, wired and routed. Dropping it tears everything down.
pub struct Lab {
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
}

fn veth(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str) -> anyhow::Result<()> {
    // Created directly inside the namespaces: nothing appears in the root one.
    let tmp = unique("v");
    ip(&[
        "link",
        "add",
        &tmp,
        "netns",
        a_ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        b_ns.name(),
    ])?;
    a_ns.ip(&["link", "set", &tmp, "name", a])?;
    a_ns.ip(&["link", "set", a, "up"])?;
    b_ns.ip(&["link", "set", b, "up"])?;
    Ok(())
}

impl Lab {
    pub fn up() -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "the lab builds network namespaces and attaches XDP: run as root (cargo xtask test does)"
            );
        }
        let dns = DNS_V4;
        let lab = Self {
            client: Netns::new("c", dns)?,
            gateway: Netns::new("g", dns)?,
            server: Netns::new("s", dns)?,
        };
        veth(&lab.gateway, LAN_IF, &lab.client, "eth0")?;
        veth(&lab.gateway, WAN_IF, &lab.server, "eth0")?;
        let (c, g, s) = (&lab.client, &lab.gateway, &lab.server);
        c.ip(&["addr", "add", &format!("{CLIENT_V4}/24"), "dev", "eth0"])?;
        c.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{CLIENT_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        c.ip(&["route", "add", "default", "via", GW_LAN_V4])?;
        c.ip(&["-6", "route", "add", "default", "via", GW_LAN_V6])?;
        g.ip(&["addr", "add", &format!("{GW_LAN_V4}/24"), "dev", LAN_IF])?;
        g.ip(&["addr", "add", &format!("{GW_WAN_V4}/24"), "dev", WAN_IF])?;
        g.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{GW_LAN_V6}/64"),
            "dev",
            LAN_IF,
            "nodad",
        ])?;
        g.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{GW_WAN_V6}/64"),
            "dev",
            WAN_IF,
            "nodad",
        ])?;
        g.sysctl("net.ipv4.ip_forward=1")?;
        g.sysctl("net.ipv6.conf.all.forwarding=1")?;
        for a in [SERVER_V4, OTHER_V4, DNS_V4] {
            s.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        for a in [SERVER_V6, OTHER_V6] {
            s.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        s.ip(&["route", "add", "default", "via", GW_WAN_V4])?;
        s.ip(&["-6", "route", "add", "default", "via", GW_WAN_V6])?;
        Ok(lab)
    }

    /// Starts `leakwatch run` in the gateway on both its interfaces, with `args`
    /// appended, and waits until /healthz on `metrics_addr` says ready.
    pub fn start_sensor(
        &self,
        bin: &std::path::Path,
        metrics_addr: &str,
        args: &[&str],
    ) -> anyhow::Result<ChildGuard> {
        let child = self
            .gateway
            .command(bin.to_str().context("non-UTF-8 path to leakwatch")?)
            .args([
                "run",
                "--iface",
                LAN_IF,
                "--iface",
                WAN_IF,
                "--metrics-addr",
                metrics_addr,
            ])
            // This run's fingerprint key stays with this run, not in /var/lib.
            .arg("--state-dir")
            .arg(std::env::temp_dir().join(unique("state")))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .context("starting leakwatch")?;
        let mut guard = ChildGuard::new(child, "leakwatch");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !guard.running() {
                bail!("leakwatch exited during start-up");
            }
            if self
                .gateway_http_get(metrics_addr, "/healthz")
                .is_ok_and(|b| b.starts_with("ok"))
            {
                return Ok(guard);
            }
            if Instant::now() > deadline {
                bail!("leakwatch did not become ready within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` from a server listening in the gateway namespace.
    pub fn gateway_http_get(&self, addr: &str, path: &str) -> anyhow::Result<String> {
        let addr: std::net::SocketAddr = addr.parse()?;
        let path = path.to_owned();
        let body = self.gateway.run(move || crate::http::get(addr, &path))??;
        Ok(body)
    }
}

/// The `leakwatch` binary: $LEAKWATCH_BIN, else target/debug/leakwatch of this
/// workspace (built by `cargo test`/`cargo build` before tests run).
pub fn leakwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEAKWATCH_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/leakwatch");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p sensor-user) or set LEAKWATCH_BIN",
        bin.display()
    );
    bin
}
