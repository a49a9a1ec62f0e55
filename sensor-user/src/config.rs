//! The admin's TOML config file (`--config PATH`).
//!
//! ```toml
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

use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::{matcher::rules::Rule, targets::catalog::ServiceDef};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetSettings {
    pub dns_ttl_min_secs: u64,
    pub dns_ttl_max_secs: u64,
    pub sni_ttl_secs: u64,
    pub max_learned_per_family: usize,
    pub flow_idle_secs: u64,
}

impl Default for TargetSettings {
    fn default() -> Self {
        Self {
            dns_ttl_min_secs: 60,
            dns_ttl_max_secs: 3600,
            sni_ttl_secs: 600,
            max_learned_per_family: 65_536,
            flow_idle_secs: 120,
        }
    }
}

impl TargetSettings {
    /// A DNS TTL clamped into [min, max].
    pub fn dns_ttl(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl).clamp(self.dns_ttl_min_secs, self.dns_ttl_max_secs))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub targets: TargetSettings,
    #[serde(default)]
    pub services: Vec<ServiceDef>,
    /// Admin rules, added to the built-in ones.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Config {
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        // toml's message names line and column and quotes the offending line.
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
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
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.targets.dns_ttl(99_999), Duration::from_secs(3600));
        assert_eq!(c.targets.dns_ttl(300), Duration::from_secs(300));
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
            e.contains("/etc/leakwatch.toml") && e.contains("line 2"),
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
