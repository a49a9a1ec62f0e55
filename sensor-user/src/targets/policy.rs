//! The `[blocking]` table: blocking modes, set globally, per service and per
//! domain, and what they mean for a watched address (its policy bits in the
//! watch maps) and for a finding (its mode).
//!
//! ```toml
//! [blocking]
//! mode = "monitor"          # monitor | dry-run | reset | quarantine | block-cleartext
//! kinds = ["password", "password_hash", "auth_token"]  # findings that trigger
//! min_severity = "high"
//! block_secs = 3600         # a reset flow stays blocked this long
//! quarantine_secs = 900     # a quarantined client's cleartext is refused this long
//! allow_clients = ["192.0.2.50/32"]   # never blocked
//! max_blocks = 16384        # blocked flows, and quarantined pairs, at most
//! [blocking.services]
//! qobuz = "quarantine"
//! [blocking.domains]        # a domain and the names under it
//! "www.qobuz.com" = "block-cleartext"
//! ```

use std::{collections::BTreeMap, fmt, str::FromStr};

use ipnet::IpNet;
use sensor_common::block::{DEFAULT_BLOCKED_ENTRIES, policy};
use serde::Deserialize;

use super::catalog::normalize_domain;
use crate::matcher::rules::{Kind, Severity};

/// What the sensor does about leaks. The default only watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockMode {
    /// Report, never block.
    #[default]
    Monitor,
    /// Decide as `reset` (findings) and `block-cleartext` (cleartext) would,
    /// pass everything, report `would_block`.
    DryRun,
    /// A trigger finding blocks its flow: an RST to the client, then drops.
    Reset,
    /// As `reset`, and the client's new cleartext TCP flows to the service are
    /// refused for `quarantine_secs`.
    Quarantine,
    /// A client's first payload on a new TCP flow that is not TLS is dropped and
    /// the flow reset; trigger findings (of flows that raced the policy) reset.
    BlockCleartext,
}

impl BlockMode {
    pub const ALL: [BlockMode; 5] = [
        Self::Monitor,
        Self::DryRun,
        Self::Reset,
        Self::Quarantine,
        Self::BlockCleartext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::DryRun => "dry-run",
            Self::Reset => "reset",
            Self::Quarantine => "quarantine",
            Self::BlockCleartext => "block-cleartext",
        }
    }

    /// The policy bits a watched address of this mode carries to the kernel.
    pub fn watch_bits(self) -> u8 {
        match self {
            Self::BlockCleartext => policy::BLOCK_CLEARTEXT,
            Self::DryRun => policy::BLOCK_CLEARTEXT | policy::DRY_RUN,
            Self::Monitor | Self::Reset | Self::Quarantine => 0,
        }
    }
}

impl fmt::Display for BlockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BlockMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a blocking mode (monitor, dry-run, reset, quarantine, block-cleartext)"
                )
            })
    }
}

/// The `[blocking]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockSettings {
    pub mode: BlockMode,
    /// Finding kinds that trigger `reset` and `quarantine`.
    pub kinds: Vec<Kind>,
    pub min_severity: Severity,
    pub block_secs: u64,
    pub quarantine_secs: u64,
    pub allow_clients: Vec<IpNet>,
    pub max_blocks: usize,
    /// Service id → mode.
    pub services: BTreeMap<String, BlockMode>,
    /// Domain (and the names under it) → mode.
    pub domains: BTreeMap<String, BlockMode>,
}

impl Default for BlockSettings {
    fn default() -> Self {
        Self {
            mode: BlockMode::Monitor,
            kinds: vec![Kind::Password, Kind::PasswordHash, Kind::AuthToken],
            min_severity: Severity::High,
            block_secs: 3600,
            quarantine_secs: 900,
            allow_clients: Vec::new(),
            max_blocks: DEFAULT_BLOCKED_ENTRIES as usize,
            services: BTreeMap::new(),
            domains: BTreeMap::new(),
        }
    }
}

impl BlockSettings {
    /// What no value of the right type rules out. `known` says whether a
    /// service id exists.
    pub fn check(&self, known: impl Fn(&str) -> bool) -> Result<(), String> {
        for s in self.services.keys() {
            if !known(s) {
                return Err(format!(
                    "blocking.services: {s:?} is not a service of the catalog or the config"
                ));
            }
        }
        for d in self.domains.keys() {
            if normalize_domain(d).is_none() {
                return Err(format!("blocking.domains: {d:?} is not a DNS name"));
            }
        }
        for (name, v) in [
            ("blocking.block_secs", self.block_secs),
            ("blocking.quarantine_secs", self.quarantine_secs),
            ("blocking.max_blocks", self.max_blocks as u64),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_blocks > DEFAULT_BLOCKED_ENTRIES as usize {
            return Err(format!(
                "blocking.max_blocks is at most {DEFAULT_BLOCKED_ENTRIES} (the kernel maps' size)"
            ));
        }
        Ok(())
    }

    /// Whether any mode anywhere blocks or decides (the kernel then consults
    /// its block maps).
    pub fn any(&self) -> bool {
        self.modes().any(|m| m != BlockMode::Monitor)
    }

    fn modes(&self) -> impl Iterator<Item = BlockMode> + '_ {
        std::iter::once(self.mode)
            .chain(self.services.values().copied())
            .chain(self.domains.values().copied())
    }

    /// The mode for a flow of `service` to `host` (from Host or SNI, if known):
    /// the longest matching domain, else the service's, else the global mode.
    pub fn mode_for(&self, service: &str, host: Option<&str>) -> BlockMode {
        host.and_then(|h| self.domain_mode(h))
            .or_else(|| self.services.get(service).copied())
            .unwrap_or(self.mode)
    }

    /// Policy bits of an address learned from `name` (a name of `service`).
    pub fn name_bits(&self, service: &str, name: &str) -> u8 {
        self.mode_for(service, Some(name)).watch_bits()
    }

    /// Policy bits of `service`'s static prefixes.
    pub fn service_bits(&self, service: &str) -> u8 {
        self.mode_for(service, None).watch_bits()
    }

    /// Whether some name carries cleartext policy bits: only then do the names
    /// an address is shared with matter.
    pub fn has_cleartext_policy(&self) -> bool {
        self.modes().any(|m| m.watch_bits() != 0)
    }

    fn domain_mode(&self, host: &str) -> Option<BlockMode> {
        let host = normalize_domain(host)?;
        self.domains
            .iter()
            .filter_map(|(d, m)| Some((normalize_domain(d)?, *m)))
            .filter(|(d, _)| host == *d || host.ends_with(&format!(".{d}")))
            .max_by_key(|(d, _)| d.len())
            .map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> BlockSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn domain_then_service_then_global() {
        let s = settings(
            r#"
            mode = "dry-run"
            [services]
            qobuz = "reset"
            [domains]
            "www.qobuz.com" = "block-cleartext"
            "qobuz.com" = "quarantine"
            "#,
        );
        assert_eq!(
            s.mode_for("qobuz", Some("www.qobuz.com")),
            BlockMode::BlockCleartext
        );
        assert_eq!(
            s.mode_for("qobuz", Some("a.www.qobuz.com")),
            BlockMode::BlockCleartext
        );
        assert_eq!(
            s.mode_for("qobuz", Some("api.qobuz.com")),
            BlockMode::Quarantine
        );
        assert_eq!(s.mode_for("qobuz", Some("qobuz-cdn.net")), BlockMode::Reset);
        assert_eq!(s.mode_for("qobuz", None), BlockMode::Reset);
        assert_eq!(s.mode_for("deezer", None), BlockMode::DryRun);
        assert_eq!(
            s.name_bits("qobuz", "WWW.Qobuz.com."),
            policy::BLOCK_CLEARTEXT
        );
        assert_eq!(s.service_bits("qobuz"), 0);
        assert_eq!(
            s.service_bits("deezer"),
            policy::BLOCK_CLEARTEXT | policy::DRY_RUN
        );
        assert!(s.any() && s.has_cleartext_policy());
        assert!(!BlockSettings::default().any());
    }

    #[test]
    fn bad_values_are_named() {
        let e = settings("[services]\nnosuch = \"reset\"\n")
            .check(|s| s == "qobuz")
            .unwrap_err();
        assert!(e.contains("nosuch"), "{e}");
        let e = settings("[domains]\n\"bad name\" = \"reset\"\n")
            .check(|_| true)
            .unwrap_err();
        assert!(e.contains("bad name"), "{e}");
        let e = toml::from_str::<BlockSettings>("mode = \"drop\"\n").unwrap_err();
        assert!(e.to_string().contains("drop"), "{e}");
        assert_eq!("dry-run".parse::<BlockMode>(), Ok(BlockMode::DryRun));
        assert!(
            "x".parse::<BlockMode>()
                .unwrap_err()
                .contains("block-cleartext")
        );
    }
}
