//! Per-flow matching state: for each direction of a watched cleartext flow, TCP
//! reassembly → HTTP/1.x (or raw lines) → decoded fields → the Hyperscan stream.
//! Produces confirmed hits with their flow context; bounded in flows, evicted on
//! FIN/RST, idleness and the cap (each counted), streams always closed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hyperscan::Scratch;
use sensor_common::{
    flow::{FlowKey, IPPROTO_TCP},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    record::{RecordKind, flags},
};

use super::{
    reassembly::{Chunk, Reassembler},
    role::Role,
};
use crate::{
    capture::record::Record,
    matcher::{
        engine::{DirScanner, RuleError, RuleSet},
        finding::{Finding, FlowFindings, Place, Services},
        triggers::{Gate, GateStats},
        validators::Date,
    },
    proto::{
        Credential, Dissection, Out,
        coding::{DecodeStats, Limits},
        fields::FieldBatch,
    },
    shared::table::FlowTable,
};

/// Out-of-order bytes held per direction, by default.
pub const DEFAULT_FLOW_BUFFER: usize = 256 * 1024;

struct Dir {
    reasm: Reassembler,
    scan: DirScanner,
}

struct Flow {
    dirs: [Option<Dir>; 2],
    /// The flow's protocol, both directions.
    proto: Dissection,
    role: Role,
    service: u32,
    /// A followed flow (record flag `FOLLOWED`): an app's, to a third party.
    followed: bool,
    /// Time and interface of the latest record, for hits found at close.
    last_ts_ns: u64,
    ifindex: u32,
    fins: u8,
    /// The rule generation the flow started with (kept across a reload: its
    /// Hyperscan streams belong to those databases).
    generation: u64,
    /// What the findings stage keeps of this flow.
    findings: FlowFindings,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub bytes_scanned: u64,
    /// The trigger prefilter in front of decoding.
    pub gate: GateStats,
    pub gaps: u64,
    pub scan_errors: u64,
    /// The flow table's own cap and idle evictions.
    pub table: crate::shared::table::Evictions,
    /// What the content-decoding bounds stopped.
    pub decode: DecodeStats,
}

/// A rule set with what matching with it needs: flows match with the
/// generation they started with; new flows take the newest.
struct Generation {
    id: u64,
    rules: Arc<RuleSet>,
    services: Arc<Services>,
    scratch: Scratch,
    /// Flows matching with it; an older generation goes when this is 0.
    flows: usize,
}

/// The generation `id` (the newest if it is gone, which cannot happen while
/// a flow holds it).
fn generation(gens: &[Generation], id: u64) -> &Generation {
    let newest = gens.len() - 1;
    gens.iter().find(|g| g.id == id).unwrap_or(&gens[newest])
}

pub struct StreamTable {
    /// Oldest first; the last is the current one (never empty).
    gens: Vec<Generation>,
    limits: Limits,
    flows: FlowTable<FlowKey, Flow>,
    idle: Duration,
    buffer: usize,
    pub stats: StreamStats,
}

impl StreamTable {
    /// `cap` flows; `buffer` out-of-order bytes per flow direction.
    pub fn new(
        rules: Arc<RuleSet>,
        services: Arc<Services>,
        idle: Duration,
        cap: usize,
        buffer: usize,
        limits: Limits,
    ) -> Result<Self, RuleError> {
        let scratch = rules.scratch()?;
        Ok(Self {
            gens: vec![Generation {
                id: 0,
                rules,
                services,
                scratch,
                flows: 0,
            }],
            limits,
            flows: FlowTable::new("matcher_flows", cap),
            idle,
            buffer,
            stats: StreamStats::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Draws the flows from the shared memory budget: each is charged its
    /// slot, buffers and Hyperscan stream state, kept current as it grows.
    pub fn set_budget(&mut self, budget: Arc<crate::shared::budget::Budget>) {
        self.flows.set_budget(budget);
    }

    /// What `flow` holds besides its slot.
    fn held(flow: &Flow, stream_bytes: usize) -> u64 {
        let dirs: usize = flow
            .dirs
            .iter()
            .flatten()
            .map(|d| d.reasm.pending_bytes() + if d.scan.is_open() { stream_bytes } else { 0 })
            .sum();
        (dirs + flow.proto.heap_bytes()) as u64
    }

    /// New rules (a reload): flows from now on match with them; open flows
    /// keep theirs until they end. On error (no scratch) nothing changes.
    pub fn set_rules(
        &mut self,
        rules: Arc<RuleSet>,
        services: Arc<Services>,
    ) -> Result<(), RuleError> {
        let scratch = rules.scratch()?;
        let id = self.current().id + 1;
        self.gens.push(Generation {
            id,
            rules,
            services,
            scratch,
            flows: 0,
        });
        self.prune();
        Ok(())
    }

    /// Rule generations in use (the current one included).
    pub fn generations(&self) -> usize {
        self.gens.len()
    }

    fn current(&self) -> &Generation {
        &self.gens[self.gens.len() - 1]
    }

    /// Drops older generations no flow matches with any more.
    fn prune(&mut self) {
        let newest = self.gens.len() - 1;
        let mut i = 0;
        self.gens.retain(|g| {
            i += 1;
            i - 1 == newest || g.flows > 0
        });
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Feeds one record of a watched flow; confirmed hits go to `out`.
    pub fn on_record(&mut self, rec: &Record, now: Instant, out: &mut Vec<Finding>) {
        let h = &rec.hdr;
        // TLS payload is opaque; only watched flows are matched.
        if !matches!(rec.kind, RecordKind::Sample | RecordKind::Meta)
            || h.service == 0
            || h.flags & flags::TLS != 0
        {
            return;
        }
        // A bare SYN: a new connection on the flow's ports (the old one may
        // never have ended here: a block's RST comes from the sensor). It
        // starts a new flow, as in the kernel (`policy::restart`): kept, the
        // old one's findings would hide the new one's.
        if h.is_bare_syn() {
            self.close(h.flow, out);
        }
        if !self.flows.contains_key(&h.flow) {
            if rec.kind == RecordKind::Meta && h.tcp_flags & TCP_SYN == 0 {
                return; // nothing to match in a flow whose data we never saw
            }
            let new = Flow {
                dirs: [None, None],
                proto: Dissection::new(self.limits),
                role: Role::default(),
                service: h.service,
                followed: h.flags & flags::FOLLOWED != 0,
                last_ts_ns: h.ts_ns,
                ifindex: h.ifindex,
                fins: 0,
                findings: FlowFindings::default(),
                generation: self.current().id,
            };
            let n = self.gens.len() - 1;
            self.gens[n].flows += 1;
            if let Some((k, old)) = self.flows.insert(h.flow, new, now) {
                self.finish(k, old, out);
            }
        }
        let Some(flow) = self.flows.touch(&h.flow, now) else {
            return;
        };
        flow.last_ts_ns = h.ts_ns;
        flow.ifindex = h.ifindex;
        let d = h.direction & 1;
        let requests = flow.role.observe(h, rec.payload());
        let g = generation(&self.gens, flow.generation);
        // A flow first seen at its SYN-ACK (the kernel defers bare SYNs): the
        // client's stream starts after the ISN the SYN-ACK acknowledges.
        let syn_ack = TCP_SYN | TCP_ACK;
        if h.flow.proto == IPPROTO_TCP && h.tcp_flags & syn_ack == syn_ack {
            let other = &mut flow.dirs[usize::from(d ^ 1)];
            if other.is_none() {
                let mut reasm = Reassembler::new(self.buffer);
                reasm.syn(h.tcp_ack.wrapping_sub(1));
                *other = Some(Dir {
                    reasm,
                    scan: g.rules.open(),
                });
            }
        }
        let dir = flow.dirs[d as usize].get_or_insert_with(|| Dir {
            reasm: Reassembler::new(self.buffer),
            scan: g.rules.open(),
        });
        let mut batch = FieldBatch::default();
        let mut creds = Vec::new();
        let mut gate = Gate::new(&mut batch, g.rules.triggers(), &g.scratch);
        let mut o = Out {
            fields: &mut gate,
            credentials: &mut creds,
            decode: &mut self.stats.decode,
        };
        let payload = rec.payload();
        let proto = &mut flow.proto;
        if h.flow.proto == IPPROTO_TCP {
            if h.tcp_flags & TCP_SYN != 0 {
                dir.reasm.syn(h.tcp_seq);
            }
            let reasm = &mut dir.reasm;
            let mut feed = |c: Chunk<'_>| match c {
                Chunk::Data(b) => proto.feed(d, requests, b, &mut o),
                Chunk::Gap(_) => proto.gap(d, requests, &mut o),
            };
            if h.flags & flags::TAIL != 0 {
                reasm.jump(h.tcp_seq, &mut feed);
            }
            if !payload.is_empty() {
                reasm.segment(h.tcp_seq, payload, &mut feed);
            }
        } else if !payload.is_empty() {
            // UDP: each datagram stands alone.
            proto.feed(d, requests, payload, &mut o);
            proto.finish(d, requests, &mut o);
        }
        let end = h.tcp_flags & (TCP_FIN | TCP_RST) != 0;
        if end {
            proto.finish(d, requests, &mut o);
        }
        self.stats.gate.add(gate.stats);
        if end {
            flow.fins |= if h.tcp_flags & TCP_RST != 0 {
                3
            } else {
                1 << d
            };
        }
        self.scan_batch(h.flow, d, h.ts_ns, h.ifindex, (&batch, creds), out);
        if let Some(flow) = self.flows.get(&h.flow) {
            let stream_bytes = generation(&self.gens, flow.generation).rules.stream_bytes();
            let held = Self::held(flow, stream_bytes);
            self.flows.recharge(&h.flow, held);
        }
        while let Some((k, old)) = self.flows.evict_over_budget() {
            self.finish(k, old, out);
        }
        if let Some(flow) = self.flows.get(&h.flow)
            && flow.fins == 3
        {
            self.close(h.flow, out);
        }
    }

    fn scan_batch(
        &mut self,
        key: FlowKey,
        d: u8,
        ts_ns: u64,
        ifindex: u32,
        found: (&FieldBatch, Vec<Credential>),
        out: &mut Vec<Finding>,
    ) {
        let Self {
            gens, flows, stats, ..
        } = self;
        if let Some(flow) = flows.get_mut(&key) {
            let at = At {
                key,
                d,
                ts_ns,
                ifindex,
            };
            let g = generation(gens, flow.generation);
            Self::scan_flow(
                (&g.rules, &g.services),
                &g.scratch,
                stats,
                flow,
                at,
                found,
                out,
            );
        }
    }

    /// Scans one decoded batch of a flow direction; what becomes a finding goes to `out`.
    fn scan_flow(
        (rules, services): (&RuleSet, &Services),
        scratch: &Scratch,
        stats: &mut StreamStats,
        flow: &mut Flow,
        at: At,
        (batch, creds): (&FieldBatch, Vec<Credential>),
        out: &mut Vec<Finding>,
    ) {
        // Built only when something was found: the head is parsed on demand.
        let place = |flow: &Flow| Place {
            ts_ns: at.ts_ns,
            ifindex: at.ifindex,
            key: at.key,
            direction: at.d,
            from_client: flow.role.client_dir() == Some(at.d),
            service: flow.service,
            head: flow.proto.request_head(),
            protocol: flow.proto.protocol(),
            third_party: flow.followed,
        };
        let mut hits = Vec::new();
        if !batch.fields.is_empty()
            && let Some(dir) = flow.dirs[at.d as usize].as_mut()
        {
            let before = dir.scan.offset();
            match dir.scan.scan(rules, scratch, batch, Date::today()) {
                Ok(h) => hits = h,
                Err(e) => {
                    stats.scan_errors += 1;
                    log::warn!("scanning: {e}");
                }
            }
            stats.bytes_scanned += dir.scan.offset() - before;
        }
        // Canaries first: a protocol's credential or a pattern on the same
        // value is then the canary's finding, not a second one.
        let (canaries, hits): (Vec<_>, Vec<_>) = hits.into_iter().partition(|h| h.canary.is_some());
        if !canaries.is_empty() {
            let p = place(flow);
            flow.findings.admit(rules, services, canaries, &p, out);
        }
        if !creds.is_empty() {
            let p = place(flow);
            flow.findings.credentials(creds, &p, out);
        }
        if !hits.is_empty() {
            let p = place(flow);
            flow.findings.admit(rules, services, hits, &p, out);
        }
    }

    /// Ends a flow's matching: scans what its parsers still held, closes its
    /// streams (dropping a DirScanner closes its Hyperscan stream). Held gender
    /// values that never met other PII are dropped.
    fn close(&mut self, key: FlowKey, out: &mut Vec<Finding>) {
        if let Some(flow) = self.flows.remove(&key) {
            self.finish(key, flow, out);
        }
    }

    /// [`Self::close`] for a flow already out of the table.
    fn finish(&mut self, key: FlowKey, mut flow: Flow, out: &mut Vec<Finding>) {
        let (ts_ns, ifindex) = (flow.last_ts_ns, flow.ifindex);
        let g = generation(&self.gens, flow.generation);
        for d in 0..2u8 {
            let Some(dir) = flow.dirs[usize::from(d)].as_mut() else {
                continue;
            };
            self.stats.gaps += dir.reasm.stats.gaps;
            let mut batch = FieldBatch::default();
            let mut creds = Vec::new();
            let mut gate = Gate::new(&mut batch, g.rules.triggers(), &g.scratch);
            let client = flow.role.client_dir() == Some(d);
            flow.proto.finish(
                d,
                client,
                &mut Out {
                    fields: &mut gate,
                    credentials: &mut creds,
                    decode: &mut self.stats.decode,
                },
            );
            self.stats.gate.add(gate.stats);
            let at = At {
                key,
                d,
                ts_ns,
                ifindex,
            };
            Self::scan_flow(
                (&g.rules, &g.services),
                &g.scratch,
                &mut self.stats,
                &mut flow,
                at,
                (&batch, creds),
                out,
            );
        }
        // The flow's streams close here, before its generation may go.
        let id = flow.generation;
        drop(flow);
        if let Some(g) = self.gens.iter_mut().find(|g| g.id == id) {
            g.flows = g.flows.saturating_sub(1);
        }
        self.prune();
        self.stats.table = self.flows.evictions();
    }

    /// Drops flows idle past the timeout (from the least recent; stops at the
    /// first live one).
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<Finding>) {
        let Some(cutoff) = now.checked_sub(self.idle) else {
            return;
        };
        while let Some((k, flow)) = self.flows.expire(cutoff) {
            self.finish(k, flow, out);
        }
        self.stats.table = self.flows.evictions();
    }
}

/// Where a batch was found: flow, key direction, and its latest record's time and interface.
#[derive(Clone, Copy)]
struct At {
    key: FlowKey,
    d: u8,
    ts_ns: u64,
    ifindex: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{FrameBuilder, record},
        matcher::{canaries::Canary, canary_db::tests::encodings, rules, rules::Kind},
        proto::coding::tests::{brotli, gzip, zlib},
    };
    use sensor_common::parse::TCP_ACK;

    fn table() -> StreamTable {
        // Compiling the rules takes a while: once per test binary.
        static RULES: std::sync::OnceLock<Arc<RuleSet>> = std::sync::OnceLock::new();
        let rules = RULES.get_or_init(|| Arc::new(RuleSet::compile(rules::builtin()).unwrap()));
        table_of(rules)
    }

    /// The built-in rules plus one without triggers: every section is decoded.
    fn decode_all_table() -> StreamTable {
        static RULES: std::sync::OnceLock<Arc<RuleSet>> = std::sync::OnceLock::new();
        let rules = RULES.get_or_init(|| {
            let mut all = rules::builtin();
            all.push(rules::Rule::bare("no_trigger", "(?P<v>zz-never-zz)"));
            Arc::new(RuleSet::compile(all).unwrap())
        });
        table_of(rules)
    }

    fn table_of(rules: &Arc<RuleSet>) -> StreamTable {
        StreamTable::new(
            Arc::clone(rules),
            Arc::default(),
            Duration::from_mins(1),
            100,
            DEFAULT_FLOW_BUFFER,
            Limits::default(),
        )
        .unwrap()
    }

    /// Client segments of `msg` cut at `cuts`, fed in `order`; the hits' (kind, value).
    fn run(msg: &[u8], cuts: &[usize], order: &[usize]) -> Vec<(&'static str, String)> {
        run_on(table(), msg, cuts, order).0
    }

    /// As `run`, on a given table; also its prefilter counts.
    fn run_on(
        t: StreamTable,
        msg: &[u8],
        cuts: &[usize],
        order: &[usize],
    ) -> (Vec<(&'static str, String)>, GateStats) {
        let (out, stats) = findings_on(t, msg, cuts, order);
        let mut v: Vec<(&'static str, String)> = out
            .into_iter()
            .map(|l| (l.hit.kind.name(), l.hit.value))
            .collect();
        v.sort();
        (v, stats)
    }

    /// As `run_on`, the findings themselves.
    fn findings_on(
        mut t: StreamTable,
        msg: &[u8],
        cuts: &[usize],
        order: &[usize],
    ) -> (Vec<Finding>, GateStats) {
        let mut out = Vec::new();
        let now = Instant::now();
        let syn = record(
            RecordKind::Meta,
            flags::FROM_CLIENT,
            &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
                .flags(TCP_SYN)
                .seq(999)
                .build(),
        );
        let mut syn = syn;
        syn.hdr.service = 1;
        t.on_record(&syn, now, &mut out);
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(msg.len());
        let segs: Vec<(u32, &[u8])> = bounds
            .windows(2)
            .map(|w| (1000 + w[0] as u32, &msg[w[0]..w[1]]))
            .collect();
        for &i in order {
            let (seq, data) = segs[i];
            let mut r = record(
                RecordKind::Sample,
                flags::FROM_CLIENT,
                &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
                    .flags(TCP_ACK | 0x08)
                    .seq(seq)
                    .payload(data)
                    .build(),
            );
            r.hdr.service = 1;
            t.on_record(&r, now, &mut out);
        }
        (out, t.stats.gate)
    }

    /// A client segment of flow `port` (its SYN when `data` is empty).
    fn segment(port: u16, seq: u32, data: &[u8], tcp_flags: u8) -> Record {
        let kind = if data.is_empty() {
            RecordKind::Meta
        } else {
            RecordKind::Sample
        };
        let mut r = record(
            kind,
            flags::FROM_CLIENT,
            &FrameBuilder::tcp("192.0.2.10", port, "198.51.100.2", 80)
                .flags(tcp_flags)
                .seq(seq)
                .payload(data)
                .build(),
        );
        r.hdr.service = 1;
        r
    }

    /// The kernel defers bare SYNs: a flow may start at its SYN-ACK, whose
    /// acknowledgment gives the client's stream start, so a first request
    /// whose segments arrive out of order is still put together.
    #[test]
    fn a_flow_first_seen_at_its_syn_ack_knows_where_the_client_starts() {
        let mut t = table();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut syn_ack = record(
            RecordKind::Meta,
            0,
            &FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
                .flags(TCP_SYN | TCP_ACK)
                .seq(7000)
                .ack(1000)
                .build(),
        );
        syn_ack.hdr.service = 1;
        t.on_record(&syn_ack, now, &mut out);
        let req = b"GET /x?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n";
        // The second half first: without the stream start it would be taken
        // as the start, and the first half dropped as old.
        t.on_record(&segment(40000, 1020, &req[20..], TCP_ACK), now, &mut out);
        assert!(out.is_empty());
        t.on_record(&segment(40000, 1000, &req[..20], TCP_ACK), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].hit.kind.name(), "password_hash");
    }

    /// A client reusing a flow's ports before the flow ended here (its
    /// connection reset by a block, which the sensor answers itself): the
    /// bare SYN opens a new connection, whose login is found again.
    #[test]
    fn a_bare_syn_on_an_open_flow_starts_a_new_one() {
        let mut t = table();
        let now = Instant::now();
        let mut out = Vec::new();
        let req = b"GET /x?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n";
        t.on_record(&segment(40500, 999, b"", TCP_SYN), now, &mut out);
        t.on_record(&segment(40500, 1000, &req[..30], TCP_ACK), now, &mut out);
        t.on_record(&segment(40500, 1030, &req[30..], TCP_ACK), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        t.on_record(&segment(40500, 50_000, b"", TCP_SYN), now, &mut out);
        t.on_record(&segment(40500, 50_001, req, TCP_ACK), now, &mut out);
        assert_eq!(out.len(), 2, "the new connection's login: {out:?}");
        assert_eq!(t.len(), 1);
    }

    /// A reload: open flows keep the rules they started with, new flows take
    /// the new ones, and the old rules go when their last flow ends.
    #[test]
    fn open_flows_keep_their_rules_across_a_reload() {
        let mut t = table();
        let now = Instant::now();
        let mut out = Vec::new();
        let req = |v: &str| format!("GET /x?corp_ticket={v} HTTP/1.1\r\nHost: a\r\n\r\n");
        // Flow A opens under the built-in rules.
        t.on_record(&segment(41000, 999, b"", TCP_SYN), now, &mut out);
        t.on_record(
            &segment(41000, 1000, b"GET / HTTP/1.1\r\n\r\n", TCP_ACK),
            now,
            &mut out,
        );
        let mut with_ticket = rules::builtin();
        with_ticket.push(rules::Rule {
            triggers: Some(vec!["corp_ticket=".into()]),
            ..rules::Rule::bare("corp_ticket", "^corp_ticket=(?P<v>ST-[0-9]{6})$")
        });
        t.set_rules(
            Arc::new(RuleSet::compile(with_ticket).unwrap()),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(t.generations(), 2);
        // Flow B, new: the new rule finds its ticket.
        t.on_record(&segment(41001, 999, b"", TCP_SYN), now, &mut out);
        t.on_record(
            &segment(41001, 1000, req("ST-123456").as_bytes(), TCP_ACK),
            now,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].hit.value, "ST-123456");
        // Flow A, still on the old rules: a built-in rule finds its token, the
        // new rule nothing.
        out.clear();
        let a_req = req("ST-654321&user_auth_token=QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf");
        t.on_record(
            &segment(41000, 1018, a_req.as_bytes(), TCP_ACK),
            now,
            &mut out,
        );
        let kinds: Vec<&str> = out.iter().map(|f| f.hit.kind.name()).collect();
        assert_eq!(kinds, ["auth_token"], "{out:?}");
        // A ends: the old rules go.
        let end = 1018 + a_req.len() as u32;
        t.on_record(&segment(41000, end, b"", TCP_ACK | TCP_RST), now, &mut out);
        assert_eq!(t.generations(), 1);
    }

    const LOGIN: &[u8] = b"GET /api.json/0.2/user/login?email=jane.doe%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99&app_id=950096963&request_sig=0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: www.qobuz.com\r\nX-User-Auth-Token: QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf\r\n\r\n";

    #[test]
    fn qobuz_login_findings() {
        let got = run(LOGIN, &[], &[0]);
        assert_eq!(
            got,
            [
                ("auth_token", "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf".to_owned()),
                ("email", "jane.doe@example.com".to_owned()),
                (
                    "password_hash",
                    "5f4dcc3b5aa765d61d8327deb882cf99".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn split_at_every_byte_in_order_and_reversed() {
        let whole = run(LOGIN, &[], &[0]);
        for cut in 1..LOGIN.len() {
            assert_eq!(run(LOGIN, &[cut], &[0, 1]), whole, "cut {cut}");
            assert_eq!(run(LOGIN, &[cut], &[1, 0]), whole, "cut {cut} reversed");
        }
    }

    #[test]
    fn retransmitted_and_out_of_order_three_pieces() {
        let whole = run(LOGIN, &[], &[0]);
        assert_eq!(run(LOGIN, &[40, 90], &[2, 0, 0, 1, 2]), whole);
    }

    #[test]
    fn duplicates_in_a_flow_are_reported_once_and_gender_needs_company() {
        let two = [LOGIN, LOGIN].concat();
        assert_eq!(run(&two, &[], &[0]).len(), 3);
        // One token in a parameter and a header, found by two rules each: once.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl";
        let req =
            format!("GET /x?access_token={jwt} HTTP/1.1\r\nAuthorization: Bearer {jwt}\r\n\r\n");
        assert_eq!(run(req.as_bytes(), &[], &[0]), [("auth_token", jwt.into())]);
        let alone = b"POST /p HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nsex=male";
        assert!(
            run(alone, &[], &[0]).is_empty(),
            "gender alone is too common"
        );
        let body = br#"{"gender":"female","firstname":"Jane"}"#;
        let mut with = format!(
            "POST /p HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        with.extend_from_slice(body);
        let got = run(&with, &[], &[0]);
        assert!(
            got.contains(&("gender", "female".into()))
                && got.contains(&("person_name", "Jane".into())),
            "{got:?}"
        );
    }

    #[test]
    fn tls_and_unwatched_records_are_not_matched() {
        let mut t = table();
        let mut out = Vec::new();
        let mut r = record(
            RecordKind::Sample,
            flags::FROM_CLIENT | flags::TLS,
            &FrameBuilder::tcp("192.0.2.10", 1, "198.51.100.2", 443)
                .payload(LOGIN)
                .build(),
        );
        r.hdr.service = 1;
        t.on_record(&r, Instant::now(), &mut out);
        r.hdr.flags = flags::FROM_CLIENT;
        r.hdr.service = 0;
        t.on_record(&r, Instant::now(), &mut out);
        assert!(out.is_empty() && t.is_empty());
    }

    /// `name=value` carried in each context a client can use.
    fn in_every_context(
        name: &str,
        value: &str,
        extra: Option<(&str, &str)>,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let pct = |v: &str| {
            v.replace('%', "%25")
                .replace('@', "%40")
                .replace(' ', "+")
                .replace('&', "%26")
        };
        let (en, ev) = extra.unwrap_or(("x", "1"));
        let form = format!("{name}={}&{en}={}", pct(value), pct(ev));
        let json = format!(
            r#"{{"{name}":"{}","{en}":"{}"}}"#,
            value.replace('@', "\\u0040"),
            ev.replace('@', "\\u0040")
        );
        let esc = |v: &str| v.replace('&', "&amp;").replace('<', "&lt;");
        let xml = format!(
            "<?xml version=\"1.0\"?><r><{name}>{}</{name}><{en}>{}</{en}></r>",
            esc(value),
            esc(ev)
        );
        let multipart = format!(
            "--B0und\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--B0und\r\nContent-Disposition: form-data; name=\"{en}\"\r\n\r\n{ev}\r\n--B0und--\r\n"
        );
        let plain_json = serde_json::json!({ name: value, en: ev }).to_string();
        let nested = format!(
            "v=1&data={}",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                plain_json
            )
        );
        vec![
            ("query", format!("GET /p?{name}={}&{en}={} HTTP/1.1\r\n\r\n", pct(value), pct(ev)).into_bytes()),
            ("header", format!("GET /p HTTP/1.1\r\n{name}: {value}\r\n{en}: {ev}\r\n\r\n").into_bytes()),
            ("cookie", format!("GET /p HTTP/1.1\r\nCookie: {name}={value}; {en}={ev}\r\n\r\n").into_bytes()),
            (
                "form",
                format!("POST /p HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}", form.len())
                    .into_bytes(),
            ),
            ("json", format!("POST /p HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}", json.len()).into_bytes()),
            ("xml", post("application/xml", None, xml.as_bytes())),
            ("multipart", post("multipart/form-data; boundary=B0und", None, multipart.as_bytes())),
            ("gzip json", post("application/json", Some("gzip"), &gzip(json.as_bytes()))),
            ("deflate form", post("application/x-www-form-urlencoded", Some("deflate"), &zlib(form.as_bytes()))),
            ("br form", post("application/x-www-form-urlencoded", Some("br"), &brotli(form.as_bytes()))),
            ("base64 json in a form value", post("application/x-www-form-urlencoded", None, nested.as_bytes())),
        ]
    }

    fn post(ct: &str, coding: Option<&str>, body: &[u8]) -> Vec<u8> {
        let ce = coding
            .map(|c| format!("Content-Encoding: {c}\r\n"))
            .unwrap_or_default();
        let mut m = format!(
            "POST /p HTTP/1.1\r\nContent-Type: {ct}\r\n{ce}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        m.extend_from_slice(body);
        m
    }

    /// (kind, field name, value, another field of the same message).
    type Case<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, &'a str)>);

    #[test]
    fn every_kind_in_every_context() {
        let positives: &[Case<'_>] = &[
            (
                "password_hash",
                "password",
                "5f4dcc3b5aa765d61d8327deb882cf99",
                None,
            ),
            ("password", "pass", "hunter2!x", None),
            ("username", "username", "jane_doe", None),
            ("person_name", "firstname", "Jane", None),
            ("email", "email", "jane.doe@example.com", None),
            ("birthdate", "birthdate", "1990-02-28", None),
            (
                "gender",
                "gender",
                "female",
                Some(("email", "jane.doe@example.com")),
            ),
            (
                "auth_token",
                "user_auth_token",
                "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf",
                None,
            ),
            (
                "device_info",
                "idfa",
                "6D92078A-8246-4BA4-AE5B-76104861E7DC",
                None,
            ),
            ("device_info", "imei", "490154203237518", None),
            ("payment_card", "card", "4111111111111111", None),
        ];
        for (kind, name, value, extra) in positives {
            for (ctx, req) in in_every_context(name, value, *extra) {
                let got = run(&req, &[], &[0]);
                assert!(
                    got.iter().any(|(k, v)| k == kind && v == value),
                    "{kind} in {ctx}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn lookalikes_in_every_context_are_not_leaks() {
        let negatives: &[(&str, &str)] = &[
            ("password", ""),
            ("password", "00000000000000000000000000000000"),
            ("request_sig", "0123456789abcdef0123456789abcdef"),
            ("idfa", "00000000-0000-0000-0000-000000000000"),
            ("card", "4111111111111112"),
            ("gender", "female"),
            ("user_auth_token", "short"),
            ("user_auth_token", "aaaaaaaaaaaaaaaaaaaaaaaa"),
            ("birthdate", "2024-01-01"),
            ("email", "jane@localhost"),
            ("imei", "490154203237519"),
            // A form's submit button: the value repeats the name.
            ("login", "Login"),
        ];
        for (name, value) in negatives {
            for (ctx, req) in in_every_context(name, value, None) {
                let got = run(&req, &[], &[0]);
                assert!(got.is_empty(), "{name}={value} in {ctx}: {got:?}");
            }
        }
    }

    /// The prefilter only ever saves work: with it, every leak in every context
    /// and wire encoding is found exactly as when every section is decoded.
    #[test]
    fn the_prefilter_never_costs_a_finding() {
        let mut msgs: Vec<Vec<u8>> = vec![LOGIN.to_vec()];
        let cases: &[(&str, &str)] = &[
            ("password", "5f4dcc3b5aa765d61d8327deb882cf99"),
            ("pwd", "hunter2!x"),
            ("login", "jane_doe"),
            ("last_name", "Doe"),
            ("mail", "jane.doe@example.com"),
            ("dob", "1990-02-28"),
            ("session_id", "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"),
            ("x-session-id", "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"),
            ("android_id", "9774d56d682e549c"),
            ("device_model", "iPhone15,2"),
            ("cc", "4111 1111 1111 1111"),
            (
                "jwt",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
            ),
        ];
        for (name, value) in cases {
            msgs.extend(
                in_every_context(name, value, None)
                    .into_iter()
                    .map(|(_, m)| m),
            );
        }
        let card20 = "GET /pay?n=4111%201111%201111%201111 HTTP/1.1\r\n\r\n";
        let spaced_json = r#"{"password" : "hunter2!x", "email":"a\u0040b.example.com"}"#;
        let basic = "GET / HTTP/1.1\r\nAuthorization:Basic dGVzdDpwYTpzcw==\r\n\r\n";
        let bearer =
            "GET / HTTP/1.1\r\nauthorization: Bearer QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf\r\n\r\n";
        let chunked = "POST /r HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n5\r\npassw\r\n10\r\nord=hunter2!x&a=\r\n0\r\n\r\n";
        msgs.push(card20.into());
        msgs.push(format!("POST /j HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{spaced_json}", spaced_json.len()).into_bytes());
        msgs.push(basic.into());
        msgs.push(bearer.into());
        msgs.push(chunked.into());
        let mut leaking = 0;
        for m in &msgs {
            let (gated, _) = run_on(table(), m, &[], &[0]);
            let (all, stats) = run_on(decode_all_table(), m, &[], &[0]);
            assert_eq!(
                stats.decoded, stats.sections,
                "the reference decodes everything"
            );
            assert_eq!(gated, all, "{}", String::from_utf8_lossy(m));
            leaking += usize::from(!all.is_empty());
        }
        // Header-only rules do not fire in other contexts; everything else leaks.
        let contexts = in_every_context("a", "b", None).len();
        assert!(
            leaking >= msgs.len() - contexts,
            "{leaking} of {}",
            msgs.len()
        );
    }

    /// One canary of every leak kind.
    const CANARIES: [(&str, Kind, &str); 10] = [
        ("qobuz-test-pw", Kind::Password, "Tr0ub4dor&3x?"),
        ("qobuz-test-token", Kind::AuthToken, "tKn_9fQ2xLm4Vb7Rz1Wc"),
        ("qobuz-test-mail", Kind::Email, "audit.user@example.com"),
        (
            "qobuz-test-device",
            Kind::DeviceInfo,
            "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF",
        ),
        ("qobuz-test-user", Kind::Username, "audit_user_42"),
        (
            "qobuz-test-hash",
            Kind::PasswordHash,
            "0d107d09f5bbe40cade3de5c71e9e9b7",
        ),
        ("qobuz-test-name", Kind::PersonName, "Jeanne Dupont-Audit"),
        ("qobuz-test-dob", Kind::Birthdate, "1987-03-14"),
        ("qobuz-test-gender", Kind::Gender, "nonbinary"),
        ("qobuz-test-card", Kind::PaymentCard, "4000 0566 5566 5556"),
    ];

    /// The built-in rules with the test canaries; `all`: every section decoded.
    fn canary_table(all: bool) -> StreamTable {
        static RULES: [std::sync::OnceLock<Arc<RuleSet>>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let rules = RULES[usize::from(all)].get_or_init(|| {
            let mut r = rules::builtin();
            if all {
                r.push(rules::Rule::bare("no_trigger", "(?P<v>zz-never-zz)"));
            }
            let cs = CANARIES.map(|(l, k, v)| Canary::new(l, k, v)).to_vec();
            Arc::new(RuleSet::compile(r).unwrap().with_canaries(cs).unwrap())
        });
        table_of(rules)
    }

    /// Every encoding of each canary kind, in every context a request
    /// carries data (query, header, cookie, form, JSON, XML, multipart,
    /// compressed, nested): found, confirmed, and the same with and without
    /// the prefilter; one character off: found nowhere.
    #[test]
    fn canaries_in_every_encoding_and_context_and_the_prefilter_agrees() {
        for (label, kind, value) in CANARIES {
            for (enc, wire) in encodings(value) {
                for (ctx, msg) in in_every_context("x_field", &wire, None) {
                    let (gated, _) = findings_on(canary_table(false), &msg, &[], &[0]);
                    let (all, _) = findings_on(canary_table(true), &msg, &[], &[0]);
                    let key = |v: &[Finding]| {
                        let mut k: Vec<_> = v
                            .iter()
                            .map(|f| (f.rule.clone(), f.hit.kind, f.hit.canary.clone()))
                            .collect();
                        k.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                        k
                    };
                    assert_eq!(key(&gated), key(&all), "{label} {enc} in {ctx}");
                    let digest = enc.starts_with("md5") || enc.starts_with("sha");
                    let want = if digest && kind == Kind::Password {
                        Kind::PasswordHash
                    } else {
                        kind
                    };
                    let hit = gated.iter().find(|f| {
                        f.hit.canary.as_ref().is_some_and(|c| &*c.label == label)
                            && f.hit.kind == want
                    });
                    assert!(
                        hit.is_some(),
                        "{label} as {enc} in {ctx}: {:?}",
                        key(&gated)
                    );
                    assert_eq!(hit.unwrap().rule, "canary");
                }
            }
        }
        // One character off, in every encoding and context: no canary.
        for (enc, wire) in encodings("Tr0ub4dor&3y?") {
            for (ctx, msg) in in_every_context("x_field", &wire, None) {
                let (got, _) = findings_on(canary_table(false), &msg, &[], &[0]);
                assert!(
                    got.iter().all(|f| f.hit.canary.is_none()),
                    "near miss as {enc} in {ctx}"
                );
            }
        }
    }

    /// A pattern rule and a canary on the same value make one finding, the
    /// canary's; so do a protocol's credential and a canary.
    #[test]
    fn a_canary_and_a_pattern_on_one_value_are_one_finding() {
        let md5 = "GET /api/user/login?username=audit&password=TOKEN HTTP/1.1\r\n\r\n".replace(
            "TOKEN",
            &encodings("Tr0ub4dor&3x?")
                .into_iter()
                .find(|(e, _)| *e == "md5 hex")
                .unwrap()
                .1,
        );
        let (got, _) = findings_on(canary_table(false), md5.as_bytes(), &[], &[0]);
        let hashes: Vec<_> = got
            .iter()
            .filter(|f| f.hit.kind == Kind::PasswordHash)
            .collect();
        assert_eq!(hashes.len(), 1, "{got:?}");
        assert_eq!(hashes[0].rule, "canary");
    }

    /// Benign API traffic is not decoded at all.
    #[test]
    fn benign_sections_skip_decoding() {
        let body = r#"{"items":[{"id":81234,"title":"pwxsidsexdobmodel","duration":213}],"page":2,"locale":"fr_FR"}"#;
        let req = format!(
            "POST /api.json/0.2/catalog/search?track_id=4411&limit=50&q=passenger HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\nCookie: _ga=GA1.2.123456789.987654321; lang=fr\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (hits, stats) = run_on(table(), req.as_bytes(), &[], &[0]);
        assert!(hits.is_empty(), "{hits:?}");
        assert_eq!(
            (stats.sections, stats.decoded),
            (2, 0),
            "head and body skipped"
        );
    }

    /// The memory budget: flows holding out-of-order data are charged it;
    /// past the limit the least recent flows go (`budget`), the accounted
    /// memory comes back under the limit, and what leaves is credited.
    #[test]
    fn flows_past_the_memory_budget_are_evicted_and_credited() {
        // A record carries at most SNAPLEN frame bytes: about 2.7 KiB a flow.
        let limit = 64 * 1024;
        let budget = Arc::new(crate::shared::budget::Budget::new(limit));
        let mut t = table();
        t.set_budget(Arc::clone(&budget));
        let now = Instant::now();
        let mut out = Vec::new();
        // Each flow: its SYN, then 1,800 bytes that wait behind a hole.
        for port in 42000..42100u16 {
            t.on_record(&segment(port, 999, b"", TCP_SYN), now, &mut out);
            t.on_record(&segment(port, 2000, &[b'x'; 1800], TCP_ACK), now, &mut out);
            assert!(
                budget.used() <= limit + 4 * 1024,
                "accounted {} past the limit {limit}",
                budget.used()
            );
        }
        assert!(t.flows.evictions().budget > 50, "{:?}", t.flows.evictions());
        assert!(t.len() < 40, "{} flows kept", t.len());
        // The newest flows stayed; closing them all credits everything.
        let keys: Vec<FlowKey> = t.flows.iter().map(|(k, _)| *k).collect();
        for k in keys {
            t.close(k, &mut out);
        }
        assert_eq!(budget.used(), 0);
    }
}
