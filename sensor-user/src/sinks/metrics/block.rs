//! Blocking metrics: decisions by service, reason and mode, blocks in force,
//! what was not blocked and why, kernel map errors. The kernel's drops and RSTs
//! per interface are `leakwatch_xdp_packets_total` outcomes (`blocked_drop`,
//! `blocked_rst`, `cleartext_drop`, notes `rst_failed`, `would_block`,
//! `cleartext_race`). No label carries an address.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::ReasonLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabels {
    pub service: String,
    /// `finding`, `quarantine`, `cleartext`.
    pub reason: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `flow` or `quarantine`.
    pub scope: String,
}

pub struct BlockMetrics {
    pub blocks: Family<BlockLabels, Counter>,
    pub would_block: Family<BlockLabels, Counter>,
    pub active: Family<ScopeLabels, Gauge>,
    pub skipped: Family<ReasonLabels, Counter>,
    pub errors: Counter,
    pub latency: prometheus_client::metrics::histogram::Histogram,
}

impl BlockMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let blocks = Family::<BlockLabels, Counter>::default();
        registry.register(
            "leakwatch_blocks",
            "Blocks put in force, by service, reason (finding, quarantine, cleartext) and mode",
            blocks.clone(),
        );
        let would_block = Family::<BlockLabels, Counter>::default();
        registry.register(
            "leakwatch_would_block",
            "Blocks a dry-run policy (or replay --block) decided and did not enforce",
            would_block.clone(),
        );
        let active = Family::<ScopeLabels, Gauge>::default();
        registry.register(
            "leakwatch_blocks_active",
            "Blocks in force: blocked flows (flow) and quarantined client-service pairs (quarantine)",
            active.clone(),
        );
        let skipped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "leakwatch_blocks_skipped",
            "Trigger findings not blocked: client not on a LAN interface (not_lan), allow-listed, or not TCP",
            skipped.clone(),
        );
        let errors = Counter::default();
        registry.register(
            "leakwatch_block_errors",
            "Writes to the kernel's block maps that failed (the block was not put in force)",
            errors.clone(),
        );
        let latency = super::seconds_histogram(
            registry,
            (
                "leakwatch_block_latency",
                "Time from the kernel seeing the packet that completed a trigger finding to its flow's block being in the kernel map",
            ),
            &super::WINDOW_BUCKETS,
        );
        for scope in ["flow", "quarantine"] {
            let _ = active.get_or_create(&ScopeLabels {
                scope: scope.into(),
            });
        }
        for r in ["not_lan", "allow_listed", "not_tcp"] {
            let _ = skipped.get_or_create(&ReasonLabels { reason: r.into() });
        }
        Self {
            blocks,
            would_block,
            active,
            skipped,
            errors,
            latency,
        }
    }

    /// Series at 0 for every service and every (reason, mode) the live sensor
    /// can count, so alerts see an increase from the first block.
    pub fn init_services(&self, services: &[String]) {
        for service in services {
            for (reason, mode) in [
                ("finding", "reset"),
                ("finding", "quarantine"),
                ("finding", "block-cleartext"),
                ("quarantine", "quarantine"),
                ("cleartext", "block-cleartext"),
            ] {
                let _ = self.blocks.get_or_create(&BlockLabels {
                    service: service.clone(),
                    reason: reason.into(),
                    mode: mode.into(),
                });
            }
            for reason in ["finding", "cleartext"] {
                let _ = self.would_block.get_or_create(&BlockLabels {
                    service: service.clone(),
                    reason: reason.into(),
                    mode: "dry-run".into(),
                });
            }
        }
    }

    /// Brings a cumulative count to its counter.
    pub fn set_total(c: &Counter, n: u64) {
        let now = c.get();
        if n > now {
            c.inc_by(n - now);
        }
    }
}
