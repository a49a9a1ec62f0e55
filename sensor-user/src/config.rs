//! The admin's TOML config file (`--config PATH`).
//!
//! ```toml
//! # Everything `run` does besides attaching; `replay` reads the same keys.
//! # A command-line flag overrides its key.
//! head_bytes = 16384           # payload bytes sampled at the start of each direction
//! tail_every = 64              # then 1 in K packets per direction (0: none)
//! new_flows_per_source = 1000  # new watched flows a client may start per second (0: no limit)
//! vxlan_port = 4789            # UDP port whose VXLAN packets are looked into (0: none)
//! probe_ports = [80, 443, 8080]
//! dns = true                   # hand DNS answers to userspace
//! probe = true                 # probe new flows on probe_ports for SNI/Host
//! follow_apps = false          # also match an app's cleartext flows to any host (docs/app-audit.md)
//! ring_bytes = 8388608         # run only: all per-CPU rings together (power of two)
//! flow_table_size = 65536      # watched flows tracked (kernel LRU and userspace tables)
//! metrics_addr = "127.0.0.1:9477"
//! events = "/var/log/leakwatch/events.json"
//! dump_records = "/var/log/leakwatch/records.json"
//! evidence = "redacted"        # redacted | fingerprint | full
//! state_dir = "/var/lib/leakwatch"
//! replay_window_secs = 3600    # a token from a second client within this is a replay
//! replay_fingerprints = 100000 # fingerprints the replay detector remembers
//! matcher_threads = 2          # default: available cores
//! realtime_priority = 0        # run only: SCHED_FIFO priority of the decision path (0: off)
//! flow_buffer_bytes = 262144   # out-of-order bytes buffered per flow direction
//! memory_limit = "512MiB"      # what every table and buffer may hold together
//! max_inflated_bytes = 1048576 # a compressed body inflates to at most this
//! max_inflate_ratio = 200      # …and at most this × its compressed size
//! max_decode_depth = 3         # content codings stacked on one body
//! sensor_name = "gw1"          # `host` in events (default: the host name)
//! fingerprint_key_file = "/etc/leakwatch/fleet.key"  # a key shared by a fleet
//! canaries_file = "/etc/leakwatch/canaries.toml"    # test-account values (0600, see docs/app-audit.md)
//! advisories_file = "/etc/leakwatch/advisories.toml"  # app versions known to leak
//! output_group = "adm"         # events/records files 0640 and this group's
//! interfaces = [{ name = "lan0", role = "lan" }, { name = "wan0" }]  # run only; role: lan | wan (default)
//! xdp_mode = "auto"            # run only: auto | native | generic
//! control_socket = "/run/leakwatch/control.sock"  # run only: `leakwatch blocks`
//!
//! [blocking]                   # see targets::policy
//! mode = "monitor"             # monitor | dry-run | reset | quarantine | block-cleartext
//!
//! [targets]
//! dns_ttl_min_secs = 60        # learned addresses live their DNS TTL, clamped
//! dns_ttl_max_secs = 3600
//! sni_ttl_secs = 600           # addresses learned from SNI or Host
//! max_learned_per_family = 65536
//! flow_idle_secs = 120         # userspace forgets a flow idle this long
//!
//! [[services]]                 # add a service, or extend one by its id
//! id = "qobuz"
//! domains = ["qobuz-cdn.example"]
//! cidrs = ["198.51.100.0/24", "2001:db8:5::/48"]
//! public_ids = ["app_id"]
//!
//! [[rules]]                    # admin rules, added to the built-in ones
//! id = "corp_sso_ticket"
//! kind = "auth_token"
//! severity = "high"
//! context = "query"
//! pattern = '^ticket=(?P<v>ST-[A-Za-z0-9-]{20,})$'
//! ```

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use sensor_common::{
    config::{DEFAULT_HEAD_BYTES, DEFAULT_PROBE_PORTS, DEFAULT_TAIL_EVERY, MAX_PROBE_PORTS},
    maps::{DEFAULT_FLOW_ENTRIES, DEFAULT_RING_BYTES},
};
use serde::Deserialize;

pub use crate::targets::{policy::BlockSettings, settings::TargetSettings};
use crate::{
    capture::loader::AttachMode,
    flows::streams::DEFAULT_FLOW_BUFFER,
    matcher::{evidence::EvidenceMode, rules::Rule},
    proto::coding::Limits,
    targets::catalog::ServiceDef,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is in the message, not chained: one line, said once.
    #[error("reading config {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The config file. Its top-level keys are every `run` setting but the
/// attachment (interfaces, XDP mode), read by `replay` too; this is the one
/// place their defaults live, and flags override them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub head_bytes: u32,
    pub tail_every: u32,
    /// New watched flows one client address may start per second; beyond it
    /// the kernel neither tracks nor samples them (0: no limit).
    pub new_flows_per_source: u32,
    /// UDP port whose VXLAN packets are decapsulated (0: none).
    pub vxlan_port: u16,
    pub probe_ports: Vec<u16>,
    pub dns: bool,
    pub probe: bool,
    /// Follow the apps of the catalog to any host (`targets::follow`): their
    /// cleartext flows to third parties are matched too. Off by default: it
    /// widens what the sensor reads.
    pub follow_apps: bool,
    pub ring_bytes: u32,
    pub flow_table_size: u32,
    pub metrics_addr: SocketAddr,
    pub events: Option<PathBuf>,
    pub dump_records: Option<PathBuf>,
    pub evidence: EvidenceMode,
    pub state_dir: Option<PathBuf>,
    pub replay_window_secs: u64,
    pub replay_fingerprints: usize,
    pub matcher_threads: Option<usize>,
    /// SCHED_FIFO priority of the threads between a packet and its block (ring
    /// reader, pipeline, matchers); 0: ordinary scheduling.
    pub realtime_priority: u8,
    pub flow_buffer_bytes: usize,
    /// What the tables and buffers may hold together (`shared::budget`).
    #[serde(deserialize_with = "size")]
    pub memory_limit: u64,
    /// Bytes one message's compressed body may inflate to.
    pub max_inflated_bytes: u64,
    /// Output bytes per compressed byte.
    pub max_inflate_ratio: u64,
    /// Content codings stacked on one body.
    pub max_decode_depth: usize,
    /// The sensor's name in events (`host`); default: the host name.
    pub sensor_name: Option<String>,
    /// A fingerprint key shared by a fleet (default: the per-host key in
    /// `state_dir`).
    pub fingerprint_key_file: Option<PathBuf>,
    /// Registered canary values (`matcher::canaries`): owner-only, re-read
    /// on reload.
    pub canaries_file: Option<PathBuf>,
    /// App versions known to leak (`sinks::advisories`), re-read on reload.
    pub advisories_file: Option<PathBuf>,
    /// Events and records files are 0640 and this group's (e.g. a log
    /// shipper's); default: 0600, the daemon's alone.
    pub output_group: Option<String>,
    /// Interfaces `run` attaches to, with their roles.
    pub interfaces: Vec<Interface>,
    pub xdp_mode: AttachMode,
    /// Where `run` listens for `leakwatch blocks`.
    pub control_socket: PathBuf,
    pub blocking: BlockSettings,
    pub targets: TargetSettings,
    pub services: Vec<ServiceDef>,
    /// Admin rules, added to the built-in ones.
    pub rules: Vec<Rule>,
}

/// Where `run` listens for `leakwatch blocks` when neither flag nor file says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/leakwatch/control.sock";

/// What an interface faces: clients on a `lan` interface can be blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Lan,
    #[default]
    Wan,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lan => "lan",
            Self::Wan => "wan",
        }
    }
}

/// An interface to attach to: `--iface NAME[:ROLE]`, or `interfaces` in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub role: Role,
}

impl FromStr for Interface {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, role) = match s.rsplit_once(':') {
            Some((n, "lan")) => (n, Role::Lan),
            Some((n, "wan")) => (n, Role::Wan),
            Some((_, r)) => return Err(format!("{s:?}: role {r:?} is not lan or wan")),
            None => (s, Role::Wan),
        };
        if name.is_empty() {
            return Err(format!("{s:?}: no interface name"));
        }
        Ok(Self {
            name: name.to_owned(),
            role,
        })
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.role.name())
    }
}

/// Where `run` keeps its fingerprint key when neither flag nor file says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/leakwatch";
/// Where `/metrics` is served when neither flag nor file says.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9477);

impl Default for Config {
    fn default() -> Self {
        Self {
            head_bytes: DEFAULT_HEAD_BYTES,
            tail_every: DEFAULT_TAIL_EVERY,
            new_flows_per_source: sensor_common::admit::DEFAULT_NEW_FLOWS_PER_SOURCE,
            vxlan_port: sensor_common::tunnel::VXLAN_PORT,
            probe_ports: DEFAULT_PROBE_PORTS.to_vec(),
            dns: true,
            probe: true,
            follow_apps: false,
            ring_bytes: DEFAULT_RING_BYTES,
            flow_table_size: DEFAULT_FLOW_ENTRIES,
            metrics_addr: DEFAULT_METRICS_ADDR,
            events: None,
            dump_records: None,
            evidence: EvidenceMode::Redacted,
            state_dir: None,
            replay_window_secs: 3600,
            replay_fingerprints: 100_000,
            matcher_threads: None,
            realtime_priority: 0,
            flow_buffer_bytes: DEFAULT_FLOW_BUFFER,
            memory_limit: crate::shared::budget::DEFAULT_MEMORY_LIMIT,
            max_inflated_bytes: Limits::default().max_out,
            max_inflate_ratio: Limits::default().max_ratio,
            max_decode_depth: Limits::default().max_depth,
            sensor_name: None,
            fingerprint_key_file: None,
            canaries_file: None,
            advisories_file: None,
            output_group: None,
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Auto,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            blocking: BlockSettings::default(),
            targets: TargetSettings::default(),
            services: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl Config {
    /// Bounds on undoing content codings.
    pub fn decode_limits(&self) -> Limits {
        Limits {
            max_out: self.max_inflated_bytes,
            max_ratio: self.max_inflate_ratio,
            max_depth: self.max_decode_depth,
            budget: None,
        }
    }

    /// What no value of the right type can rule out (also run on the values
    /// after flags override the file).
    pub fn check(&self) -> Result<(), String> {
        let page = 4096;
        if self.probe_ports.len() > MAX_PROBE_PORTS {
            return Err(format!(
                "probe_ports takes at most {MAX_PROBE_PORTS} ports, got {}",
                self.probe_ports.len()
            ));
        }
        if self.probe_ports.contains(&0) {
            return Err("probe_ports: port 0 is not a port".into());
        }
        if self.follow_apps && (!self.probe || self.probe_ports.is_empty()) {
            return Err(
                "follow_apps needs probe = true and probe_ports: the probe hands up the request that names the app".into(),
            );
        }
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            return Err(format!(
                "ring_bytes {} must be a power of two of at least {page}",
                self.ring_bytes
            ));
        }
        if self.memory_limit < crate::shared::budget::MIN_MEMORY_LIMIT {
            return Err(format!(
                "memory_limit {} is below {} MiB: too little for the sensor's tables",
                self.memory_limit,
                crate::shared::budget::MIN_MEMORY_LIMIT >> 20
            ));
        }
        if self.realtime_priority > crate::capture::sched::MAX_PRIORITY {
            return Err(format!(
                "realtime_priority {} is above {} (SCHED_FIFO priorities are 1 to 99; 0 turns it off)",
                self.realtime_priority,
                crate::capture::sched::MAX_PRIORITY
            ));
        }
        for (name, v) in [
            ("flow_table_size", self.flow_table_size as usize),
            ("replay_fingerprints", self.replay_fingerprints),
            ("flow_buffer_bytes", self.flow_buffer_bytes),
            ("matcher_threads", self.matcher_threads.unwrap_or(1)),
            ("max_inflated_bytes", self.max_inflated_bytes as usize),
            ("max_inflate_ratio", self.max_inflate_ratio as usize),
            ("max_decode_depth", self.max_decode_depth),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// `memory_limit`: bytes as a number, or a string with a unit ("512MiB").
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => crate::shared::budget::parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// A TOML error as one line: where (line, column) and what.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return what;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {what}")
}

/// The largest config file read (a bigger one is a mistake, not a config).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl Config {
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(text, &e),
        })?;
        let t = &c.targets;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if t.dns_ttl_min_secs > t.dns_ttl_max_secs {
            return Err(invalid(format!(
                "[targets] dns_ttl_min_secs ({}) is above dns_ttl_max_secs ({})",
                t.dns_ttl_min_secs, t.dns_ttl_max_secs
            )));
        }
        if t.max_learned_per_family == 0 {
            return Err(invalid(
                "[targets] max_learned_per_family must be at least 1".into(),
            ));
        }
        if t.flow_idle_secs == 0 {
            return Err(invalid(
                "[targets] flow_idle_secs must be at least 1".into(),
            ));
        }
        c.check().map_err(invalid)?;
        let mut names = std::collections::HashSet::new();
        for i in &c.interfaces {
            if !names.insert(&i.name) {
                return Err(invalid(format!("interfaces: {:?} is listed twice", i.name)));
            }
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        if let Ok(m) = std::fs::metadata(path)
            && m.len() > MAX_CONFIG_BYTES
        {
            return Err(ConfigError::Invalid {
                path: p,
                message: format!(
                    "{} bytes: a config is at most {} MiB (is this the right file?)",
                    m.len(),
                    MAX_CONFIG_BYTES >> 20
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
            path: p.clone(),
            err,
        })?;
        Self::parse(&text, &p)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Config::parse("", "c.toml").unwrap(), Config::default());
        let c = Config::parse(
            "[targets]\ndns_ttl_min_secs = 5\n\n[[services]]\nid = \"qobuz\"\ncidrs = [\"2001:db8::/32\"]\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.targets.dns_ttl_min_secs, 5);
        assert_eq!(c.targets.dns_ttl_max_secs, 3600);
        assert_eq!(c.services[0].cidrs[0].to_string(), "2001:db8::/32");
        assert_eq!(c.targets.dns_ttl(1), Duration::from_secs(5));
        assert_eq!(c.targets.dns_ttl(99_999), Duration::from_hours(1));
        assert_eq!(c.targets.dns_ttl(300), Duration::from_mins(5));
    }

    /// The packaged /etc/leakwatch/leakwatch.toml shows every key, with its
    /// default (but where the package writes events and keeps state).
    #[test]
    fn the_packaged_config_holds_every_key_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/leakwatch.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut c = Config::parse(&text, path).unwrap();
        assert_eq!(
            c.events.as_deref(),
            Some(Path::new("/var/log/leakwatch/events.json"))
        );
        assert_eq!(c.state_dir.as_deref(), Some(Path::new(DEFAULT_STATE_DIR)));
        (c.events, c.state_dir) = (None, None);
        assert_eq!(c, Config::default());
        // Destructured in full: a new key fails to compile here until it is
        // added to the packaged file.
        let Config {
            head_bytes: _,
            tail_every: _,
            new_flows_per_source: _,
            vxlan_port: _,
            probe_ports: _,
            dns: _,
            probe: _,
            follow_apps: _,
            ring_bytes: _,
            flow_table_size: _,
            metrics_addr: _,
            events: _,
            dump_records: _,
            evidence: _,
            state_dir: _,
            replay_window_secs: _,
            replay_fingerprints: _,
            matcher_threads: _,
            realtime_priority: _,
            flow_buffer_bytes: _,
            memory_limit: _,
            max_inflated_bytes: _,
            max_inflate_ratio: _,
            max_decode_depth: _,
            sensor_name: _,
            fingerprint_key_file: _,
            canaries_file: _,
            advisories_file: _,
            output_group: _,
            interfaces: _,
            xdp_mode: _,
            control_socket: _,
            blocking: _,
            targets: _,
            services: _,
            rules: _,
        } = Config::default();
        for key in [
            "head_bytes",
            "tail_every",
            "new_flows_per_source",
            "vxlan_port",
            "probe_ports",
            "dns",
            "probe",
            "follow_apps",
            "ring_bytes",
            "flow_table_size",
            "metrics_addr",
            "events",
            "dump_records",
            "evidence",
            "state_dir",
            "replay_window_secs",
            "replay_fingerprints",
            "matcher_threads",
            "realtime_priority",
            "flow_buffer_bytes",
            "memory_limit",
            "max_inflated_bytes",
            "max_inflate_ratio",
            "max_decode_depth",
            "sensor_name",
            "fingerprint_key_file",
            "canaries_file",
            "advisories_file",
            "interfaces",
            "xdp_mode",
            "control_socket",
            "[blocking]",
            "[targets]",
            "[[services]]",
            "[[rules]]",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches(['#', ' ']).starts_with(key)),
                "{key} is not in packaging/leakwatch.toml"
            );
        }
    }

    #[test]
    fn interfaces_and_roles() {
        let c = Config::parse(
            "interfaces = [{ name = \"lan0\", role = \"lan\" }, { name = \"wan0\" }]\nxdp_mode = \"generic\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(
            c.interfaces,
            ["lan0:lan".parse().unwrap(), "wan0".parse().unwrap()]
        );
        assert_eq!(c.interfaces[1].role, Role::Wan);
        assert_eq!(c.xdp_mode, AttachMode::Generic);
        assert!("lan0:dmz".parse::<Interface>().unwrap_err().contains("dmz"));
        let e = Config::parse(
            "interfaces = [{ name = \"a\", role = \"dmz\" }]\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dmz") && e.contains("line 1"), "{e}");
        let e = Config::parse(
            "interfaces = [{ name = \"a\" }, { name = \"a\" }]\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    /// Malformed configs: each gives one line naming the file, where, and
    /// what is wrong.
    #[test]
    fn bad_configs_give_one_clear_line_each() {
        for (text, want) in [
            (
                "head_bytes = \"x\"\n",
                "line 1, column 14: invalid type: string \"x\", expected u32",
            ),
            (
                "heed_bytes = 1\n",
                "line 1, column 1: unknown field `heed_bytes`",
            ),
            ("[targets]\nsni_ttl_secs = -5\n", "line 2, column 16"),
            (
                "[[services]]\nid = \"x\"\ncidrs = [\"10.0.0.0/33\"]\n",
                "line 3, column 10",
            ),
            (
                "head_bytes = 1\nhead_bytes = 2\n",
                "line 2, column 1: duplicate key",
            ),
            (
                "interfaces = [{ name = \"a\", role = \"dmz\" }]\n",
                "line 1, column 36: unknown variant `dmz`",
            ),
            (
                "[blocking]\nmode = \"drop\"\n",
                "line 2, column 8: unknown variant `drop`",
            ),
            ("metrics_addr = \"localhost\"\n", "line 1, column 16"),
            (
                "probe_ports = [80, 0]\n",
                "probe_ports: port 0 is not a port",
            ),
            (
                "follow_apps = true\nprobe = false\n",
                "follow_apps needs probe = true",
            ),
            (
                "ring_bytes = 1000\n",
                "ring_bytes 1000 must be a power of two",
            ),
            ("memory_limit = \"lots\"\n", "is not a size"),
            (
                "memory_limit = \"1MiB\"\n",
                "memory_limit 1048576 is below 16 MiB",
            ),
            (
                "realtime_priority = 120\n",
                "realtime_priority 120 is above 99",
            ),
            ("[rules]\n", "line 1, column 1"),
            ("= 1\n", "line 1, column 1"),
        ] {
            let e = Config::parse(text, "/etc/leakwatch/leakwatch.toml")
                .unwrap_err()
                .to_string();
            assert!(
                !e.contains('\n')
                    && e.starts_with("config /etc/leakwatch/leakwatch.toml: ")
                    && e.contains(want),
                "{text:?}: {e}"
            );
        }
        // A 100 MB file is refused before it is read.
        let dir = std::env::temp_dir().join(format!("lw-config-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(100 << 20).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("104857600 bytes") && e.contains("16 MiB"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = Config::parse(
            "[targets]\ndns_ttl_min_secs = \"soon\"\n",
            "/etc/leakwatch.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/etc/leakwatch.toml") && e.contains("line 2, column"),
            "{e}"
        );
        let e = Config::parse("[[services]]\nid = \"x\"\ncidr = []\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `cidr`") && e.contains("line 3"),
            "{e}"
        );
        let e = Config::parse(
            "[[services]]\nid = \"x\"\ncidrs = [\"198.51.100.0/33\"]\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = Config::parse(
            "[targets]\ndns_ttl_min_secs = 10\ndns_ttl_max_secs = 5\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("dns_ttl_min_secs (10) is above dns_ttl_max_secs (5)"),
            "{e}"
        );
    }
}
