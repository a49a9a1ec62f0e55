//! The `[targets]` table of the config: how learned addresses and flows age.

use std::time::Duration;

use serde::Deserialize;

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
