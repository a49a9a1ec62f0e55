//! The lab topology: two clients ─ gateway ─ server, each a network namespace.
//!
//! ```text
//!  client (eth0)            gateway (lan0 | wan0)             server (eth0)
//!  192.0.2.10/24   ──veth── 192.0.2.1 | 198.51.100.1  ──veth── 198.51.100.2/24 (watched)
//!  2001:db8:c::10/64        2001:db8:c::1 | 2001:db8:5::1     198.51.100.3/24 (unwatched)
//!                                                             198.51.100.53/24 (DNS)
//!  client2 (eth0.100)       (lan1.100, VLAN 100 tagged)       2001:db8:5::2, ::3
//!  203.0.113.10/24 ──veth── 203.0.113.1
//!  2001:db8:d::10/64        2001:db8:d::1
//! ```
//! Documentation-range addresses only, routed only between these namespaces.
//! The sensor attaches to lan0 and lan1 as LAN interfaces (on lan1 client2's
//! frames carry their 802.1Q tag in the packet: VLAN offload is off) and to
//! wan0. The clients' eth0 run an XDP program that passes everything, so an
//! RST the sensor sends with XDP_TX reaches them. `masquerade` turns the gateway into a NAT.

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
pub const CLIENT2_V4: &str = "203.0.113.10";
pub const GW_LAN2_V4: &str = "203.0.113.1";
pub const CLIENT_V6: &str = "2001:db8:c::10";
pub const CLIENT2_V6: &str = "2001:db8:d::10";
pub const GW_LAN2_V6: &str = "2001:db8:d::1";
pub const GW_LAN_V6: &str = "2001:db8:c::1";
pub const GW_WAN_V6: &str = "2001:db8:5::1";
pub const SERVER_V6: &str = "2001:db8:5::2";
pub const OTHER_V6: &str = "2001:db8:5::3";
/// Gateway interfaces the sensor attaches to.
pub const LAN_IF: &str = "lan0";
pub const LAN2_IF: &str = "lan1";
pub const WAN_IF: &str = "wan0";
/// The 802.1Q id of the second LAN.
pub const LAN2_VLAN: u16 = 100;

/// The three namespaces, wired and routed. Dropping it tears everything down.
pub struct Lab {
    pub client: Netns,
    /// A second client, on a VLAN-tagged LAN.
    pub client2: Netns,
    pub gateway: Netns,
    pub server: Netns,
    /// The trunk's tc links and the clients' XDP links (live as long as these).
    vlan_links: Vec<std::os::fd::OwnedFd>,
    /// Where the sensor this lab starts serves `leakwatch blocks`.
    pub control_socket: PathBuf,
    /// The sensors' state directory (fingerprint key, rules cache, learned
    /// addresses): one per lab, so a restarted sensor finds its state.
    pub state_dir: PathBuf,
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

/// True (and says why on stderr) when the calling test cannot run here: it
/// needs root for network namespaces and XDP. Root tests start with
/// `if lab::skip_without_root("name") { return; }`.
pub fn skip_without_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping {test}: needs root (network namespaces, XDP)");
    }
    !root
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
        let mut lab = Self {
            client: Netns::new("c", dns)?,
            client2: Netns::new("d", dns)?,
            gateway: Netns::new("g", dns)?,
            server: Netns::new("s", dns)?,
            vlan_links: Vec::new(),
            control_socket: std::env::temp_dir().join(format!("{}.sock", unique("control"))),
            state_dir: std::env::temp_dir().join(unique("state")),
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
        lab.vlan_lan()?;
        // A frame the sensor sends back with XDP_TX (a blocking RST) is
        // delivered by a veth peer that has an XDP program of its own (GRO
        // alone enables NAPI, but nothing then flushes such frames).
        for ns in [&lab.client, &lab.client2] {
            let link = crate::vlan::xdp_pass(ns, "eth0")?;
            lab.vlan_links.push(link);
        }
        Ok(lab)
    }

    /// Masquerades what leaves the gateway on wan0 (IPv4 and IPv6): the LAN and
    /// WAN sides of one connection then have different tuples.
    pub fn masquerade(&self) -> anyhow::Result<()> {
        let rules = format!(
            "table inet lab_nat {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n  oifname \"{WAN_IF}\" masquerade\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}.nft", unique("nat")));
        std::fs::write(&path, rules)?;
        let r = crate::netns::run(self.gateway.command("nft").arg("-f").arg(&path))
            .context("masquerading on the gateway (apt-get install nftables)");
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// client2 ─ lan1: an 802.1Q trunk carrying VLAN 100 (see `vlan`).
    fn vlan_lan(&mut self) -> anyhow::Result<()> {
        let (d, g) = (&self.client2, &self.gateway);
        veth(g, LAN2_IF, d, "eth0")?;
        let mut links = crate::vlan::trunk_end(d, "eth0", LAN2_VLAN)?;
        links.extend(crate::vlan::trunk_end(g, LAN2_IF, LAN2_VLAN)?);
        for (ns, dev, v4, v6) in [
            (d, "eth0", CLIENT2_V4, CLIENT2_V6),
            (g, LAN2_IF, GW_LAN2_V4, GW_LAN2_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
        }
        d.ip(&["route", "add", "default", "via", GW_LAN2_V4])?;
        d.ip(&["-6", "route", "add", "default", "via", GW_LAN2_V6])?;
        self.vlan_links = links;
        Ok(())
    }

    /// Starts `leakwatch run` in the gateway on its three interfaces, with `args`
    /// appended, and waits until /healthz on `metrics_addr` says ready.
    pub fn start_sensor(
        &self,
        bin: &std::path::Path,
        metrics_addr: &str,
        args: &[&str],
    ) -> anyhow::Result<ChildGuard> {
        self.start_sensor_env(bin, metrics_addr, args, &[])
    }

    /// As `start_sensor`, with environment variables set for the sensor.
    pub fn start_sensor_env(
        &self,
        bin: &std::path::Path,
        metrics_addr: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<ChildGuard> {
        self.spawn_sensor(bin, metrics_addr, args, env, Stdio::inherit())
    }

    /// As `start_sensor_env`, its log (stderr) written to `log`.
    pub fn start_sensor_logged(
        &self,
        bin: &std::path::Path,
        metrics_addr: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        log: &std::path::Path,
    ) -> anyhow::Result<ChildGuard> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        self.spawn_sensor(bin, metrics_addr, args, env, Stdio::from(file))
    }

    fn spawn_sensor(
        &self,
        bin: &std::path::Path,
        metrics_addr: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        stderr: Stdio,
    ) -> anyhow::Result<ChildGuard> {
        let child = self
            .gateway
            .command(bin.to_str().context("non-UTF-8 path to leakwatch")?)
            .envs(env.iter().copied())
            .stderr(stderr)
            .args([
                "run",
                "--iface",
                &format!("{LAN_IF}:lan"),
                "--iface",
                &format!("{LAN2_IF}:lan"),
                "--iface",
                WAN_IF,
                "--metrics-addr",
                metrics_addr,
            ])
            .arg("--control-socket")
            .arg(&self.control_socket)
            // This run's fingerprint key stays with this run, not in /var/lib.
            .arg("--state-dir")
            .arg(&self.state_dir)
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

/// The streaming services of `scenarios::HOSTS` in the server namespace: their
/// addresses, DNS (dnsmasq, with api.qobuz.com as a CNAME), HTTP on 80 and
/// HTTPS on 443 on each address. Dropping it stops the servers.
pub struct Services {
    _dns: ChildGuard,
    _http: crate::http::HttpServer,
    _tls: crate::http::HttpServer,
}

impl Lab {
    /// Starts the scenario services; `ttl` is the DNS answers' TTL.
    pub fn serve_scenarios(&self, ttl: u32) -> anyhow::Result<Services> {
        use crate::{
            dns::{self, Zone},
            scenarios::{HOSTS, QOBUZ_API_CDN},
        };
        let mut addrs = Vec::new();
        let mut records: Vec<(&str, String)> = Vec::new();
        let mut cnames = Vec::new();
        for (name, v4, v6) in HOSTS {
            for (a, plen) in [(v4, "24"), (v6, "64")] {
                // Lab::up already gave the server some of them.
                let cidr = format!("{a}/{plen}");
                let mut args = vec!["addr", "add", &cidr, "dev", "eth0"];
                if a.contains(':') {
                    args.push("nodad");
                }
                if let Err(e) = self.server.ip(&args) {
                    let m = e.to_string();
                    anyhow::ensure!(m.contains("exists") || m.contains("already assigned"), e);
                }
                addrs.push(if a.contains(':') {
                    format!("[{a}]")
                } else {
                    (*a).to_owned()
                });
            }
            let target = if *name == "api.qobuz.com" {
                cnames.push((*name, QOBUZ_API_CDN));
                QOBUZ_API_CDN
            } else {
                name
            };
            records.push((target, format!("{v4},{v6}")));
        }
        let mut zones: Vec<Zone<'_>> = records.iter().map(|(n, a)| Zone::Host(n, a)).collect();
        zones.extend(cnames.iter().map(|(n, t)| Zone::Cname(n, t)));
        let dns = dns::start(&self.server, DNS_V4, &zones, ttl)?;
        let http = crate::http::HttpServer::start(
            &self.server,
            &addrs
                .iter()
                .map(|a| format!("{a}:80").parse())
                .collect::<Result<Vec<_>, _>>()?,
        )?;
        let names: Vec<&str> = HOSTS.iter().map(|(n, _, _)| *n).collect();
        let tls = crate::tls::start(
            &self.server,
            &addrs
                .iter()
                .map(|a| format!("{a}:443").parse())
                .collect::<Result<Vec<_>, _>>()?,
            &names,
        )?;
        Ok(Services {
            _dns: dns,
            _http: http,
            _tls: tls,
        })
    }
}

/// The `leakwatch` binary: $LEAKWATCH_BIN, else target/debug/leakwatch of this
/// workspace (built by `cargo test`/`cargo build` before tests run).
pub fn leakwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEAKWATCH_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/leakwatch");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p sensor-user) or set LEAKWATCH_BIN",
        bin.display()
    );
    bin
}
