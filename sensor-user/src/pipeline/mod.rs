//! The record pipeline: one thread, records in order, every stage fed from here.
//!
//! Dns → targeting (learn addresses) · Probe → targeting (SNI/Host) ·
//! Sample/Meta → posture (service, transport, bytes) → metrics and events.

pub mod apps;
pub mod assemble;
mod blocking;
pub mod control;
pub mod daemon;
mod follow;
pub mod live;
pub mod reload;
pub mod replay;
mod route;
mod stats;

use std::{collections::HashMap, sync::Arc, time::Instant};

use crate::{
    capture::{clock::Clock, record::Record, ring::RecordResult},
    flows::{
        posture::{Output, Posture, Transport},
        streams::{StreamStats, StreamTable},
        workers::{Report, Workers},
    },
    matcher::{
        engine::RuleSet,
        evidence::{EvidenceMode, Fingerprinter, ReplayDetector},
        finding::Finding,
    },
    sinks::{
        block::SharedBlocker,
        events::EventLog,
        metrics::{KindLabels, Metrics, ReasonLabels, ResultLabels, WatchedLabels},
        records::{RecordLine, RecordLog},
    },
    targets::learning::{DnsOutcome, ProbeOutcome, Targeting, WatchSink},
};
use prometheus_client::metrics::counter::Counter;
use sensor_common::record::{RecordKind, flags};

/// Where flows are matched: on the pipeline thread, or sharded over workers.
pub enum Engine {
    Inline(Box<StreamTable>),
    Sharded(Workers),
    /// The workers were stopped at shutdown; records are no longer matched.
    Stopped,
}

/// Leak matching: per-flow streams, the rules, and what findings need.
pub struct MatchStage {
    pub engine: Engine,
    pub rules: Arc<RuleSet>,
    pub fingerprints: Fingerprinter,
    pub evidence: EvidenceMode,
    pub replay: ReplayDetector,
    /// Latest cumulative counters per worker (inline: one).
    stats: HashMap<usize, StreamStats>,
    /// Totals already exported.
    exported: StreamStats,
    /// Records a dead matcher thread could not take.
    lost: u64,
}

impl MatchStage {
    /// Counts records a dead matcher thread could not take; says so once.
    pub(super) fn lose(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.lost == 0 {
            log::error!(
                "a matcher thread has died: records of its flows are no longer matched (counted in leakwatch_matcher_scan_errors_total)"
            );
        }
        self.lost += n as u64;
    }

    /// Sends the matcher workers the records queued for them: after each
    /// batch from the ring, so a batch wakes each worker once.
    pub fn flush(&mut self) {
        if let Engine::Sharded(w) = &mut self.engine {
            let lost = w.flush();
            self.lose(lost);
        }
    }

    pub fn new(
        engine: Engine,
        rules: Arc<RuleSet>,
        fingerprints: Fingerprinter,
        evidence: EvidenceMode,
        replay: ReplayDetector,
    ) -> Self {
        Self {
            engine,
            rules,
            fingerprints,
            evidence,
            replay,
            stats: HashMap::new(),
            exported: StreamStats::default(),
            lost: 0,
        }
    }
}

pub struct Pipeline<W: WatchSink> {
    pub targeting: Targeting<W>,
    posture: Posture,
    metrics: Arc<Metrics>,
    events: Option<EventLog>,
    dump: Option<RecordLog>,
    ifaces: Vec<(u32, String)>,
    clock: Clock,
    /// The sensor's name, in every event.
    host: String,
    out: Vec<Output>,
    matching: Option<MatchStage>,
    /// `leakwatch_ring_records_total` per record kind, looked up once: the
    /// family's lookup allocates its label set, and this runs per record.
    ring_records: [Counter; 4],
    /// `leakwatch_flow_bytes_total` by (service id, transport, to_server), for
    /// the same reason.
    flow_bytes: HashMap<(u32, Transport, bool), Counter>,
    /// Blocking decisions (run and replay; replay never enforces).
    blocker: Option<SharedBlocker>,
    /// The memory budget the tables draw from, for its gauges.
    budget: Option<Arc<crate::shared::budget::Budget>>,
    /// When the output files' paths were last checked.
    outputs_checked: Option<Instant>,
    /// The config assembled from (reloads compare against it).
    config: Option<crate::config::Config>,
    /// The kernel's `CONFIG` map (live only).
    kernel_config: Option<crate::capture::loader::KernelConfig>,
    /// `--watch` prefixes, kept across reloads.
    reload_watch: Vec<crate::targets::StaticWatch>,
    /// Where learned addresses are kept across restarts, and when last written.
    learned_file: Option<(std::path::PathBuf, Instant)>,
    /// The app inventory and the advisories its versions are matched with.
    inventory: crate::sinks::inventory::Inventory,
    advisories: crate::sinks::advisories::Advisories,
    /// Followed apps and where their findings went (`follow_apps`).
    following: follow::Following,
}

impl<W: WatchSink> Pipeline<W> {
    pub fn new(
        targeting: Targeting<W>,
        posture: Posture,
        metrics: Arc<Metrics>,
        events: Option<EventLog>,
        dump: Option<RecordLog>,
        ifaces: Vec<(u32, String)>,
    ) -> Self {
        let ring_records = [
            RecordKind::Sample,
            RecordKind::Meta,
            RecordKind::Dns,
            RecordKind::Probe,
        ]
        .map(|k| {
            metrics
                .ring_records
                .get_or_create(&KindLabels {
                    kind: k.name().into(),
                })
                .clone()
        });
        let p = Self {
            targeting,
            posture,
            metrics,
            events,
            dump,
            ifaces,
            clock: Clock::new(),
            host: crate::sinks::events::host_name(),
            out: Vec::new(),
            matching: None,
            ring_records,
            flow_bytes: HashMap::new(),
            blocker: None,
            budget: None,
            outputs_checked: None,
            config: None,
            kernel_config: None,
            reload_watch: Vec::new(),
            learned_file: None,
            inventory: crate::sinks::inventory::Inventory::default(),
            advisories: crate::sinks::advisories::Advisories::default(),
            following: follow::Following::default(),
        };
        p.publish_watched();
        p
    }

    /// Uses `clock` for event timestamps (offline replay: capture times).
    /// The memory budget, exported on every tick.
    pub fn with_budget(mut self, budget: Arc<crate::shared::budget::Budget>) -> Self {
        self.metrics.memory_limit.set(budget.limit() as i64);
        self.inventory.set_budget(&budget);
        self.budget = Some(budget);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Names the sensor in events (`host`).
    pub fn with_host(mut self, host: String) -> Self {
        self.host = host;
        self
    }

    /// The metrics this pipeline updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds leak matching.
    pub fn with_matching(mut self, m: MatchStage) -> Self {
        self.init_series(&m.rules);
        self.matching = Some(m);
        self
    }

    /// The rules' version, and every series alerts rely on at 0 for every
    /// catalog service × (kind, severity) the rules produce (at start and after
    /// a reload). Returns how many services the catalog has.
    fn init_series(&self, rules: &RuleSet) -> usize {
        self.metrics.set_rules_version(&rules.version);
        let services: Vec<String> = self
            .targeting
            .catalog()
            .services()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let mut kinds: Vec<(&'static str, &'static str)> = rules
            .rules()
            .map(|r| (r.kind.name(), r.severity.name()))
            .collect();
        // Basic auth also yields usernames, at the rule's severity.
        kinds.extend(
            rules
                .rules()
                .filter(|r| r.validator == Some(crate::matcher::rules::Validator::BasicAuth))
                .map(|r| ("username", r.severity.name())),
        );
        kinds.sort_unstable();
        kinds.dedup();
        self.metrics.init_service_series(&services, &kinds);
        self.metrics.blocking.init_services(&services);
        self.metrics.follow.init_services(&services);
        services.len()
    }

    fn iface(&self, ifindex: u32) -> &str {
        self.ifaces
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map_or("unknown", |(_, n)| n.as_str())
    }

    fn service(&self, id: u32) -> String {
        self.targeting
            .ids()
            .name(id)
            .unwrap_or("unknown")
            .to_owned()
    }

    /// Records the ring reader released together; the matcher workers get
    /// theirs in one send each.
    pub fn handle_batch(&mut self, recs: Vec<RecordResult>, now: Instant) {
        for rec in recs {
            self.handle(rec, now);
        }
        if let Some(m) = self.matching.as_mut() {
            m.flush();
        }
    }

    /// One record; matcher workers get theirs with [`Self::handle_batch`]'s
    /// flush, the next tick, or in a full batch.
    pub fn handle(&mut self, rec: RecordResult, now: Instant) {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                log::debug!("skipping ring record: {e}");
                self.metrics
                    .ring_invalid
                    .get_or_create(&ReasonLabels {
                        reason: e.reason().into(),
                    })
                    .inc();
                return;
            }
        };
        self.ring_records[rec.kind as usize - 1].inc();
        if let Some(log) = self.dump.as_mut() {
            let iface = self
                .ifaces
                .iter()
                .find(|(i, _)| *i == rec.hdr.ifindex)
                .map_or("unknown", |(_, n)| n.as_str());
            let line = RecordLine::new(&rec, iface, self.targeting.ids().name(rec.hdr.service));
            // Counted and logged by the writer; the record itself was read.
            if log.write(&line).is_err() {
                self.metrics.output_error("records");
            }
        }
        match rec.kind {
            RecordKind::Dns => {
                let o = self.targeting.on_dns(&rec, now);
                self.metrics
                    .dns_answers
                    .get_or_create(&ResultLabels {
                        result: o.label().into(),
                    })
                    .inc();
                // The watched set changes only when something was learned.
                if o == DnsOutcome::Learned {
                    self.publish_watched();
                }
            }
            RecordKind::Probe => {
                let o = self.targeting.on_probe(&rec, now);
                self.metrics
                    .probes
                    .get_or_create(&ResultLabels {
                        result: o.label().into(),
                    })
                    .inc();
                if matches!(o, ProbeOutcome::LearnedSni | ProbeOutcome::LearnedHost) {
                    self.publish_watched();
                }
                // A probe is the first client payload of a flow that began before
                // its server was watched: typically a connection racing the DNS
                // answer that teaches the address, and its first request is often
                // the login. In cleartext, to a server watched now, it is matched
                // as the flow's first sample (the kernel samples the rest). To
                // another host, it may be an app's that `follow_apps` follows.
                if rec.hdr.flags & flags::FIRST_PAYLOAD != 0 && rec.payload().first() != Some(&0x16)
                {
                    if let Some(service) = self.targeting.service_of(rec.dst().0) {
                        self.sample(follow::as_sample(rec, service, 0), now);
                    } else if let Some(service) = self.follow_probe(&rec) {
                        self.sample(follow::as_sample(rec, service, flags::FOLLOWED), now);
                    }
                }
            }
            RecordKind::Sample | RecordKind::Meta => {
                if rec.hdr.flags & (flags::BLOCKED | flags::WOULD_BLOCK) != 0 {
                    self.block_record(&rec, now);
                }
                self.block_restart(&rec);
                self.sample(rec, now);
            }
        }
    }

    /// A record of a watched flow: posture, then matching.
    fn sample(&mut self, rec: Record, now: Instant) {
        // A followed flow is the app's, not the service's: matched only.
        if rec.hdr.flags & flags::FOLLOWED == 0 {
            let mut out = std::mem::take(&mut self.out);
            self.posture.on_record(&rec, now, &mut out);
            self.emit(&mut out);
            self.out = out;
        }
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        match &mut m.engine {
            Engine::Inline(t) => {
                let mut found: Vec<Finding> = Vec::new();
                t.on_record(&rec, now, &mut found);
                self.findings(found.into_iter().map(|f| (f, None)).collect(), now);
            }
            Engine::Sharded(w) => {
                let lost = w.dispatch(rec);
                m.lose(lost);
            }
            Engine::Stopped => {}
        }
    }

    /// Reopens the event and record files (SIGHUP after log rotation).
    pub fn reopen(&mut self) {
        for (what, log) in [
            ("--events", self.events.as_mut()),
            ("--dump-records", self.dump.as_mut()),
        ] {
            if let Some(l) = log
                && let Err(e) = l.reopen()
            {
                log::error!("reopening the {what} file: {e}; still writing to the old one");
            }
        }
    }

    /// What a matcher worker reported.
    pub fn report(&mut self, r: Report<crate::sinks::block::Blocked>, now: Instant) {
        match r {
            Report::Found(found) => self.findings(found, now),
            Report::Stats(i, st) => {
                if let Some(m) = self.matching.as_mut() {
                    m.stats.insert(i, st);
                }
                self.export_stream_stats();
            }
        }
    }

    /// Stops the matcher workers after they drained their queues (their last
    /// reports are still to be read).
    pub fn stop_workers(&mut self) {
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        if let Engine::Sharded(w) = std::mem::replace(&mut m.engine, Engine::Stopped) {
            let lost = w.shutdown();
            m.lose(lost);
        }
    }

    /// Once a second or so: expiries and idle flows.
    pub fn tick(&mut self, now: Instant) {
        if let Some(b) = &self.budget {
            self.metrics.memory_accounted.set(b.used() as i64);
        }
        if let Some(m) = self.matching.as_mut() {
            m.replay.sweep(now);
            match &mut m.engine {
                Engine::Inline(t) => {
                    let mut found = Vec::new();
                    t.sweep(now, &mut found);
                    self.findings(found.into_iter().map(|f| (f, None)).collect(), now);
                }
                Engine::Sharded(w) => {
                    let lost = w.tick(now);
                    m.lose(lost);
                }
                Engine::Stopped => {}
            }
        }
        self.export_stream_stats();
        self.targeting.sweep(now);
        self.publish_watched();
        let mut out = std::mem::take(&mut self.out);
        self.posture.sweep(now, &mut out);
        self.emit(&mut out);
        self.out = out;
        self.block_tick(now);
        self.export_evictions();
        self.export_apps();
        self.export_follow();
        self.follow_outputs(now);
        self.save_learned(now, false);
    }

    /// Every 10 s: reopens an output file deleted or moved without SIGHUP.
    fn follow_outputs(&mut self, now: Instant) {
        if self
            .outputs_checked
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(10))
        {
            return;
        }
        self.outputs_checked = Some(now);
        for (what, log) in [
            ("--events", self.events.as_mut()),
            ("--dump-records", self.dump.as_mut()),
        ] {
            if let Some(l) = log
                && let Err(e) = l.follow_path()
            {
                log::error!("reopening the {what} file: {e}");
            }
        }
    }

    fn publish_watched(&self) {
        for ((family, source), n) in self.targeting.watched_counts() {
            let l = WatchedLabels {
                family: family.into(),
                source: source.name().into(),
            };
            self.metrics
                .watched_addresses
                .get_or_create(&l)
                .set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use sensor_common::parse::TCP_ACK;

    use super::*;
    use crate::{
        config::TargetSettings,
        fixtures::{FrameBuilder, record},
        matcher::rules,
        sinks::events::EventLog,
        targets::{
            catalog::Catalog,
            learning::{MemoryWatch, Targeting},
        },
    };

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pipeline() -> (Pipeline<MemoryWatch>, Buf, Arc<Metrics>) {
        let targeting = Targeting::new(
            Catalog::builtin(),
            TargetSettings::default(),
            MemoryWatch::default(),
        );
        let metrics = Arc::new(Metrics::new());
        let buf = Buf::default();
        let rules = Arc::new(RuleSet::compile(rules::builtin()).unwrap());
        let table = StreamTable::new(
            Arc::clone(&rules),
            Arc::new(assemble::services(&targeting)),
            Duration::from_mins(1),
            100,
            1 << 16,
            crate::proto::coding::Limits::default(),
        )
        .unwrap();
        let m = MatchStage::new(
            Engine::Inline(Box::new(table)),
            rules,
            Fingerprinter::from_key([1; 32]),
            EvidenceMode::Redacted,
            ReplayDetector::new(Duration::from_mins(1), 100),
        );
        let p = Pipeline::new(
            targeting,
            Posture::new(Duration::from_mins(1), 100),
            Arc::clone(&metrics),
            Some(EventLog::new(Box::new(buf.clone()))),
            None,
            vec![(1, "lan0".into())],
        )
        .with_matching(m);
        (p, buf, metrics)
    }

    /// One client request of a watched qobuz flow.
    fn request(p: &mut Pipeline<MemoryWatch>, client: &str, port: u16, req: &[u8]) {
        request_to(p, "qobuz", client, port, req);
    }

    fn request_to(
        p: &mut Pipeline<MemoryWatch>,
        service: &str,
        client: &str,
        port: u16,
        req: &[u8],
    ) {
        let qobuz = p.targeting.ids().id_of(service).unwrap();
        let frame = FrameBuilder::tcp(client, port, "198.51.100.2", 80)
            .flags(TCP_ACK | 0x08)
            .payload(req)
            .build();
        let mut r = record(
            RecordKind::Sample,
            flags::FROM_CLIENT | flags::FIRST_PAYLOAD,
            &frame,
        );
        r.hdr.service = qobuz;
        r.hdr.ifindex = 1;
        p.handle(Ok(r), Instant::now());
    }

    fn events(buf: &Buf) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    const TOKEN: &str = "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf";

    /// A connection racing the DNS answer: its SYN passed before the address was
    /// watched, so its first request came up as a probe. The Host teaches the
    /// address, and the request is still matched.
    #[test]
    fn the_request_of_a_probe_to_a_service_is_matched() {
        let (mut p, buf, _) = pipeline();
        let req = b"GET /api.json/0.2/user/login?email=jane%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n";
        let frame = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.9", 80)
            .flags(TCP_ACK | 0x08)
            .payload(req)
            .build();
        let r = record(RecordKind::Probe, flags::FIRST_PAYLOAD, &frame);
        p.handle(Ok(r), Instant::now());
        let kinds: Vec<String> = events(&buf)
            .iter()
            .filter(|e| e["event_type"] == "leak")
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds.contains(&"password_hash".into()) && kinds.contains(&"email".into()));
        // A probe to an address no service owns is only a probe.
        let other = FrameBuilder::tcp("192.0.2.10", 40001, "198.51.100.99", 80)
            .flags(TCP_ACK | 0x08)
            .payload(&b"GET /?password=hunter2 HTTP/1.1\r\nHost: www.example.org\r\n\r\n"[..])
            .build();
        p.handle(
            Ok(record(RecordKind::Probe, flags::FIRST_PAYLOAD, &other)),
            Instant::now(),
        );
        assert_eq!(
            events(&buf)
                .iter()
                .filter(|e| e["event_type"] == "leak")
                .count(),
            2
        );
    }

    #[test]
    fn a_token_from_a_second_client_is_one_replay() {
        let (mut p, buf, metrics) = pipeline();
        let req = format!(
            "GET /api.json/0.2/track/getFileUrl?track_id=1 HTTP/1.1\r\nHost: www.qobuz.com\r\nX-User-Auth-Token: {TOKEN}\r\nX-App-Id: 950096963\r\n\r\n"
        );
        request(&mut p, "192.0.2.10", 40000, req.as_bytes());
        request(&mut p, "192.0.2.10", 40001, req.as_bytes());
        request(&mut p, "192.0.2.11", 40002, req.as_bytes());
        request(&mut p, "192.0.2.11", 40003, req.as_bytes());
        let ev = events(&buf);
        let leaks: Vec<_> = ev.iter().filter(|e| e["event_type"] == "leak").collect();
        let replays: Vec<_> = ev.iter().filter(|e| e["event_type"] == "replay").collect();
        assert_eq!(leaks.len(), 4, "one per flow: {ev:?}");
        assert!(
            leaks
                .iter()
                .all(|e| e["kind"] == "auth_token" && e["rule"] == "auth_token_header")
        );
        assert_eq!(replays.len(), 1, "{ev:?}");
        assert_eq!(replays[0]["src_ip"], "192.0.2.11");
        assert_eq!(replays[0]["replay"]["first_client_ip"], "192.0.2.10");
        assert_eq!(replays[0]["fingerprint"], leaks[0]["fingerprint"]);
        let text = metrics.encode();
        assert!(
            text.contains("leakwatch_replays_total{service=\"qobuz\"} 1"),
            "{text}"
        );
        assert!(text.contains("leakwatch_findings_total{service=\"qobuz\",kind=\"auth_token\",severity=\"critical\"} 4"), "{text}");
        // The public app id is not a secret, and no event holds the token in full.
        assert!(!ev.iter().any(|e| {
            e["evidence"]
                .as_str()
                .is_some_and(|s| s.contains("950096963"))
        }));
        assert!(
            !String::from_utf8(buf.0.lock().unwrap().clone())
                .unwrap()
                .contains(TOKEN)
        );
        assert_eq!(leaks[0]["evidence"], "x-user-auth-token=Qk…Ef (32 chars)");
        assert_eq!(leaks[0]["http"]["path"], "/api.json/0.2/track/getFileUrl");
    }

    #[test]
    fn public_identifiers_are_not_findings() {
        let (mut p, buf, _) = pipeline();
        // Tidal's `token` parameter is its public client token: matched by the
        // token rule, suppressed by the catalog. The same under Qobuz is a leak.
        let req = format!("GET /v1/tracks/1?token={TOKEN}&countryCode=FR HTTP/1.1\r\n\r\n");
        request_to(&mut p, "tidal", "192.0.2.10", 40000, req.as_bytes());
        assert!(
            events(&buf).iter().all(|e| e["event_type"] != "leak"),
            "{:?}",
            events(&buf)
        );
        request_to(&mut p, "qobuz", "192.0.2.10", 40001, req.as_bytes());
        let ev = events(&buf);
        assert_eq!(
            ev.iter().filter(|e| e["event_type"] == "leak").count(),
            1,
            "{ev:?}"
        );
        // Qobuz request signatures (32 hex) are neither password hashes nor tokens.
        request(&mut p, "192.0.2.10", 40002, b"GET /x?app_id=950096963&request_ts=1700000000&request_sig=0123456789abcdef0123456789abcdef HTTP/1.1\r\n\r\n");
        assert_eq!(
            events(&buf)
                .iter()
                .filter(|e| e["event_type"] == "leak")
                .count(),
            1
        );
    }

    /// Learned addresses dropped at their family's cap are evictions of the
    /// `learned_ipv4` table (the one eviction metric, as every table's).
    #[test]
    fn learned_addresses_over_the_cap_are_counted_as_evictions() {
        let (mut p, _buf, metrics) = pipeline();
        p.targeting = Targeting::new(
            Catalog::builtin(),
            TargetSettings {
                max_learned_per_family: 2,
                ..TargetSettings::default()
            },
            MemoryWatch::default(),
        );
        let answer = crate::fixtures::dns_answer(
            9,
            "www.qobuz.com",
            &[[198, 51, 100, 2], [198, 51, 100, 3], [198, 51, 100, 4]],
            300,
        );
        let rec = crate::fixtures::record(
            RecordKind::Dns,
            0,
            &crate::fixtures::FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(answer)
                .build(),
        );
        let now = Instant::now();
        p.handle(Ok(rec), now);
        p.tick(now);
        let text = metrics.encode();
        assert!(
            text.contains("leakwatch_evictions_total{table=\"learned_ipv4\",reason=\"cap\"} 1"),
            "{text}"
        );
        assert!(!text.contains("leakwatch_learned_addresses_evicted"));
    }
}
