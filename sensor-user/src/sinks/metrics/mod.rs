//! Prometheus metrics and the HTTP endpoint serving them (`/metrics`, `/healthz`).

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use sensor_common::counters::{Counter as XdpCounter, NUM_COUNTERS};

use crate::capture::stats::Stats;

pub mod apps;
pub mod block;
pub mod follow;
mod labels;
mod serve;
mod xdp;

pub use labels::*;
pub use serve::serve;
use xdp::{Source, XdpCollector};

/// Buckets (seconds) of the windows a decision leaves open: a block, a follow.
pub const WINDOW_BUCKETS: [f64; 11] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0,
];

/// A histogram in seconds (`NAME_seconds`), registered.
pub fn seconds_histogram(
    registry: &mut Registry,
    (name, help): (&str, &str),
    buckets: &[f64],
) -> prometheus_client::metrics::histogram::Histogram {
    let h = prometheus_client::metrics::histogram::Histogram::new(buckets.iter().copied());
    registry.register_with_unit(
        name,
        help,
        prometheus_client::registry::Unit::Seconds,
        h.clone(),
    );
    h
}

/// Everything the sensor exports.
pub struct Metrics {
    registry: Registry,
    pub ring_records: Family<KindLabels, Counter>,
    pub ring_invalid: Family<ReasonLabels, Counter>,
    pub attached: Family<AttachLabels, Gauge>,
    pub flows: Family<FlowLabels, Counter>,
    pub flow_bytes: Family<FlowBytesLabels, Counter>,
    pub tls_flows: Family<TlsLabels, Counter>,
    pub watched_addresses: Family<WatchedLabels, Gauge>,
    pub dns_answers: Family<ResultLabels, Counter>,
    pub probes: Family<ResultLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub findings: Family<FindingLabels, Counter>,
    pub replays: Family<ServiceLabels, Counter>,
    pub bytes_scanned: Counter,
    pub prefiltered: Counter,
    pub sections: Family<ResultLabels, Counter>,
    pub scan_errors: Counter,
    pub evictions: Family<TableLabels, Counter>,
    pub decode_limits: Family<LimitLabels, Counter>,
    pub reassembly_gaps: Counter,
    pub detection_latency: prometheus_client::metrics::histogram::Histogram,
    rules_info: Family<VersionLabels, Gauge>,
    pub blocking: block::BlockMetrics,
    pub apps: apps::AppMetrics,
    pub follow: follow::FollowMetrics,
    output_errors: Family<OutputLabels, Counter>,
    config_info: Family<HashLabels, Gauge>,
    /// The memory budget: charged now, and its limit.
    pub memory_accounted: Gauge,
    pub memory_limit: Gauge,
    pub config_reloads: Family<ResultLabels, Counter>,
    ready: AtomicBool,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Brings `leakwatch_decode_limits_total{limit}` (coding bounds and HTTP's
    /// head, body and chunk-line caps) up to the matcher's
    /// cumulative counts.
    pub fn set_decode_limits(&self, d: crate::proto::coding::DecodeStats) {
        for (limit, n) in d.by_limit() {
            let c = self.decode_limits.get_or_create(&LimitLabels {
                limit: limit.into(),
            });
            let now = c.get();
            if n > now {
                c.inc_by(n - now);
            }
        }
    }

    /// Brings `leakwatch_evictions_total{table}` up to a table's cumulative
    /// counts (counters only go up; a count below what was exported is ignored).
    pub fn set_evictions(&self, table: &str, e: crate::shared::table::Evictions) {
        for (reason, n) in e.by_reason() {
            let c = self.evictions.get_or_create(&TableLabels {
                table: table.into(),
                reason: reason.name().into(),
            });
            let now = c.get();
            if n > now {
                c.inc_by(n - now);
            }
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let ring_records = Family::<KindLabels, Counter>::default();
        registry.register(
            "leakwatch_ring_records",
            "Records read from the XDP ring buffer, by record kind",
            ring_records.clone(),
        );
        let ring_invalid = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "leakwatch_ring_records_invalid",
            "Ring records rejected by the decoder (version, kind, length), skipped",
            ring_invalid.clone(),
        );
        let attached = Family::<AttachLabels, Gauge>::default();
        registry.register(
            "leakwatch_xdp_attached",
            "1 for each interface the XDP program is attached to, with the mode the kernel accepted",
            attached.clone(),
        );
        registry.register(
            "leakwatch_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let flows = Family::<FlowLabels, Counter>::default();
        registry.register(
            "leakwatch_flows",
            "Watched flows by service and transport class (cleartext, tls, quic, unknown), counted once each",
            flows.clone(),
        );
        let flow_bytes = Family::<FlowBytesLabels, Counter>::default();
        registry.register_with_unit(
            "leakwatch_flow",
            "IP bytes of watched flows by service, transport class and direction",
            prometheus_client::registry::Unit::Bytes,
            flow_bytes.clone(),
        );
        let tls_flows = Family::<TlsLabels, Counter>::default();
        registry.register(
            "leakwatch_tls_flows",
            "TLS flows of watched services by the highest version the client offered",
            tls_flows.clone(),
        );
        let watched_addresses = Family::<WatchedLabels, Gauge>::default();
        registry.register(
            "leakwatch_watched_addresses",
            "Watched addresses (static: prefixes) by family and where they were learned",
            watched_addresses.clone(),
        );
        let dns_answers = Family::<ResultLabels, Counter>::default();
        registry.register(
            "leakwatch_dns_answers",
            "DNS answers read, by result (learned, unrelated, truncated, not_response, bad_name)",
            dns_answers.clone(),
        );
        let probes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "leakwatch_probes",
            "Probed first payloads of new flows, by result (sni, host, unrelated, incomplete, no_name)",
            probes.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "leakwatch_events",
            "Events written, by event_type",
            events.clone(),
        );
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register(
            "leakwatch_findings",
            "Leaks found (once per value per flow), by service, kind and severity",
            findings.clone(),
        );
        let replays = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "leakwatch_replays",
            "Tokens or password hashes seen again from another client within the replay window",
            replays.clone(),
        );
        let bytes_scanned = Counter::default();
        registry.register_with_unit(
            "leakwatch_matcher_scanned",
            "Bytes of decoded fields the matcher scanned",
            prometheus_client::registry::Unit::Bytes,
            bytes_scanned.clone(),
        );
        let prefiltered = Counter::default();
        registry.register_with_unit(
            "leakwatch_matcher_prefiltered",
            "Raw bytes of message sections the trigger prefilter scanned",
            prometheus_client::registry::Unit::Bytes,
            prefiltered.clone(),
        );
        let sections = Family::<ResultLabels, Counter>::default();
        registry.register(
            "leakwatch_matcher_sections",
            "Message sections (heads, bodies, raw runs) by prefilter result: decoded or skipped",
            sections.clone(),
        );
        for r in ["decoded", "skipped"] {
            let _ = sections.get_or_create(&ResultLabels { result: r.into() });
        }
        let scan_errors = Counter::default();
        registry.register(
            "leakwatch_matcher_scan_errors",
            "Hyperscan errors while scanning a flow's fields (the batch is skipped), and records a dead matcher thread could not take",
            scan_errors.clone(),
        );
        let evictions = Family::<TableLabels, Counter>::default();
        registry.register(
            "leakwatch_evictions",
            "Entries a bounded userspace table dropped to stay within its size (cap) or for idleness (idle), by table",
            evictions.clone(),
        );
        let decode_limits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "leakwatch_decode_limits",
            "Compressed bodies whose decoding a bound stopped: size (max_inflated_bytes), ratio (max_inflate_ratio), depth (too many or unknown codings: not decoded), cut (cut short by sampling or a gap: inflated as far as it went); HTTP's caps: head (a header block past 64 KiB), body (a body past 256 KiB), chunk_line (a chunk-size line past 1 KiB); budget (no room in the memory budget for the output: not decoded)",
            decode_limits.clone(),
        );
        let reassembly_gaps = Counter::default();
        registry.register(
            "leakwatch_reassembly_gaps",
            "Holes in reassembled TCP streams (lost or unsampled bytes)",
            reassembly_gaps.clone(),
        );
        let detection_latency = seconds_histogram(
            &mut registry,
            (
                "leakwatch_detection_latency",
                "Time from the packet completing a leak to the finding",
            ),
            &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        );
        let rules_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "leakwatch_rules_info",
            "The loaded rule set (1), by version hash",
            rules_info.clone(),
        );
        // Bounded label sets start at 0, so dashboards and alerts see a series
        // from the first scrape rather than "no data".
        for r in [
            "learned",
            "unrelated",
            "truncated",
            "not_response",
            "bad_name",
        ] {
            let _ = dns_answers.get_or_create(&ResultLabels { result: r.into() });
        }
        for r in ["sni", "host", "unrelated", "incomplete", "no_name"] {
            let _ = probes.get_or_create(&ResultLabels { result: r.into() });
        }
        for r in ["too_short", "version", "kind", "cap_len"] {
            let _ = ring_invalid.get_or_create(&ReasonLabels { reason: r.into() });
        }
        for e in ["cleartext_flow", "leak", "replay", "block", "would_block"] {
            let _ = events.get_or_create(&EventLabels {
                event_type: e.into(),
            });
        }
        let blocking = block::BlockMetrics::register(&mut registry);
        let apps = apps::AppMetrics::register(&mut registry);
        let follow = follow::FollowMetrics::register(&mut registry);
        let output_errors = Family::<OutputLabels, Counter>::default();
        registry.register(
            "leakwatch_output_errors",
            "Lines an output file could not take (a full disk, an I/O error): dropped, counted, and writing goes on",
            output_errors.clone(),
        );
        let config_info = Family::<HashLabels, Gauge>::default();
        registry.register(
            "leakwatch_config_info",
            "The loaded config (1), by a hash of the file (\"none\" without one)",
            config_info.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "leakwatch_config_reload",
            "Reloads of the config and rules (SIGHUP), by result: ok, or error (the running config stayed)",
            config_reloads.clone(),
        );
        for r in ["ok", "error"] {
            let _ = config_reloads.get_or_create(&ResultLabels { result: r.into() });
        }
        let memory_accounted = Gauge::default();
        registry.register_with_unit(
            "leakwatch_memory_accounted",
            "Memory the tables and buffers hold, as the budget counts it (flows with their buffers and Hyperscan stream state, learned addresses, posture flows, replay fingerprints)",
            prometheus_client::registry::Unit::Bytes,
            memory_accounted.clone(),
        );
        let memory_limit = Gauge::default();
        registry.register_with_unit(
            "leakwatch_memory_limit",
            "The memory budget (memory_limit): past it the growing table evicts its least recent entries (leakwatch_evictions_total{reason=\"budget\"})",
            prometheus_client::registry::Unit::Bytes,
            memory_limit.clone(),
        );
        for o in ["events", "records"] {
            let _ = output_errors.get_or_create(&OutputLabels { output: o.into() });
        }
        Self {
            blocking,
            apps,
            follow,
            output_errors,
            config_info,
            memory_accounted,
            memory_limit,
            config_reloads,
            findings,
            replays,
            bytes_scanned,
            prefiltered,
            sections,
            scan_errors,
            evictions,
            decode_limits,
            reassembly_gaps,
            detection_latency,
            rules_info,
            registry,
            ring_records,
            ring_invalid,
            attached,
            flows,
            flow_bytes,
            tls_flows,
            watched_addresses,
            dns_answers,
            probes,
            events,
            ready: AtomicBool::new(false),
        }
    }

    /// Exports the kernel's per-CPU counters for these interfaces at every scrape.
    pub fn register_xdp_stats(&mut self, stats: Stats, interfaces: &[(u32, String)]) {
        // Interfaces sharing a counter slot (ifindex modulo the slot count) are one
        // series, labelled with both names.
        let mut slots: Vec<(u32, String)> = Vec::new();
        for (ifindex, name) in interfaces {
            let slot = sensor_common::counters::stats_index(*ifindex, XdpCounter::ALL[0]);
            match slots
                .iter_mut()
                .find(|(i, _)| sensor_common::counters::stats_index(*i, XdpCounter::ALL[0]) == slot)
            {
                Some((_, label)) => {
                    log::warn!(
                        "interfaces {label} and {name} share a counter slot; their counters are summed"
                    );
                    label.push('+');
                    label.push_str(name);
                }
                None => slots.push((*ifindex, name.clone())),
            }
        }
        self.registry.register_collector(Box::new(XdpCollector {
            source: Source::Kernel {
                stats: Mutex::new(stats),
                slots,
            },
        }));
    }

    /// Exports counters kept in userspace (the replay sampler's, the twin of
    /// the kernel's) as `leakwatch_xdp_*{interface=label}`; the caller updates them.
    pub fn register_sampler_counters(&mut self, label: &str) -> Arc<Mutex<[u64; NUM_COUNTERS]>> {
        let counts = Arc::new(Mutex::new([0; NUM_COUNTERS]));
        self.registry.register_collector(Box::new(XdpCollector {
            source: Source::Sampler {
                label: label.to_owned(),
                counts: Arc::clone(&counts),
            },
        }));
        counts
    }

    /// Creates, at 0, every series a finding, replay or flow of these services can
    /// increment: a counter born at 1 hides its first increase from `increase()`,
    /// so the first leak of a kind would never alert.
    pub fn init_service_series(&self, services: &[String], kinds: &[(&'static str, &'static str)]) {
        for s in services {
            for (kind, severity) in kinds {
                let l = FindingLabels {
                    service: s.clone(),
                    kind: (*kind).into(),
                    severity: (*severity).into(),
                };
                let _ = self.findings.get_or_create(&l);
            }
            let _ = self
                .replays
                .get_or_create(&ServiceLabels { service: s.clone() });
            // The usual (transport, protocol) pairs, so dashboards start at zero.
            for (t, p) in [
                ("cleartext", "http"),
                ("tls", "tls"),
                ("quic", "tls"),
                ("unknown", "other"),
            ] {
                let _ = self.flows.get_or_create(&FlowLabels {
                    service: s.clone(),
                    transport: t.into(),
                    protocol: p.into(),
                });
            }
        }
    }

    /// Marks `version` as the loaded rule set.
    pub fn set_rules_version(&self, version: &str) {
        self.rules_info.clear();
        self.rules_info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
    }

    /// A line `output` (`events`, `records`) could not take.
    pub fn output_error(&self, output: &str) {
        self.output_errors
            .get_or_create(&OutputLabels {
                output: output.into(),
            })
            .inc();
    }

    /// `leakwatch_config_info{hash}`: the loaded config file's hash.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    /// `/healthz` turns ready once programs are attached and the ring is read.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail; a metric that could not be
        // encoded is said, and the rest is still served.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("encoding metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_base_metrics() {
        let m = Metrics::new();
        m.ring_records
            .get_or_create(&KindLabels { kind: "dns".into() })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("leakwatch_ring_records_total{kind=\"dns\"} 1"),
            "{text}"
        );
        assert!(text.contains("leakwatch_build_info{version="), "{text}");
        assert!(!m.is_ready());
    }
}
