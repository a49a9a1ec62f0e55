//! The XDP program's decisions in userspace, for `leakwatch replay`: the same
//! shared parser (sensor_common::parse) and sampling policy
//! (sensor_common::policy), with hash maps for the kernel's maps, producing the
//! records the kernel would. The differential test in tests/xdp_test_run.rs runs
//! both over the same frames and compares the records byte for byte.
//!
//! Differences by design: the kernel keeps a known flow watched while its
//! address's prefilter bucket is set; here a known flow stays watched until it
//! leaves the flow table. Replay never drops: with blocking on, a cleartext
//! refusal is decided as the kernel would for a LAN client (no quarantine,
//! no allow-list here) and only flagged `WOULD_BLOCK`.

use std::net::IpAddr;

use sensor_common::{
    admit::{SourceBudget, SourceKey, is_bare_syn, opened},
    block::{policy, split_watch_value},
    config::{Config, config_flags},
    counters::{Counter, NUM_COUNTERS},
    flow::{FAMILY_V4, FlowKey, FlowState, flow_flags},
    maps::NO_SERVICE,
    parse::{PacketBytes, Parsed, TCP_ACK, TCP_SYN, parse_with},
    policy::{
        Decision, PROBE_AWAITING, client_dir, is_dns_answer, may_be_followed, probe_remaining,
        watched_packet,
    },
    record::{RecordKind, flags},
};

use super::record::{Origin, Record};
use crate::shared::table::{Evictions, FlowTable};

/// Where the sampler asks which service an address belongs to (the tries):
/// the watch-map value, service id and policy bits (`sensor_common::block`).
pub trait Watched {
    fn service_of(&self, addr: IpAddr) -> Option<u32>;
}

fn ip(p: &Parsed, a: &[u8; 16]) -> IpAddr {
    if p.family == FAMILY_V4 {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(*a)
    }
}

pub struct Sampler {
    cfg: Config,
    /// The kernel's FLOWS and PROBES: LRU hashes, stamped with capture time.
    flows: FlowTable<FlowKey, FlowState, u64>,
    probes: FlowTable<FlowKey, u64, u64>,
    /// The kernel's SYN_PENDING and SOURCES (`sensor_common::admit`).
    syns: FlowTable<FlowKey, (), u64>,
    sources: FlowTable<SourceKey, SourceBudget, u64>,
    /// Per-reason packet counts, as the kernel's STATS.
    pub counters: [u64; NUM_COUNTERS],
}

impl Sampler {
    pub fn new(cfg: Config, flow_cap: usize, probe_cap: usize) -> Self {
        Self {
            cfg,
            flows: FlowTable::new("sampler_flows", flow_cap),
            probes: FlowTable::new("sampler_probes", probe_cap),
            syns: FlowTable::new("sampler_syns", probe_cap),
            sources: FlowTable::new("sampler_sources", probe_cap),
            counters: [0; NUM_COUNTERS],
        }
    }

    /// Evictions of the flow, probe, SYN and source tables (the kernel's LRU
    /// maps do not count theirs).
    pub fn evictions(&self) -> [(&'static str, Evictions); 4] {
        [
            (self.flows.name(), self.flows.evictions()),
            (self.probes.name(), self.probes.evictions()),
            (self.syns.name(), self.syns.evictions()),
            (self.sources.name(), self.sources.evictions()),
        ]
    }

    /// What `leakwatch run` writes into the kernel's `FLOWS` for a flow it
    /// follows (`policy::followed_flow`); an existing entry is kept, as the
    /// kernel's `BPF_NOEXIST` insert keeps it.
    pub fn follow(&mut self, key: FlowKey, st: FlowState) {
        if !self.flows.contains_key(&key) {
            self.flows.insert(key, st, st.first_ns);
        }
    }

    /// The kernel's `source_admits`: one more new flow from the client address
    /// `cdir` sends from, if its budget allows.
    fn source_admits(&mut self, key: &FlowKey, cdir: u8, ts: u64) -> bool {
        let per_second = self.cfg.new_flows_per_source;
        if per_second == 0 {
            return true;
        }
        let mut source = SourceKey::default();
        source.set(
            if cdir == 0 { &key.addr_a } else { &key.addr_b },
            key.family,
        );
        if let Some(b) = self.sources.touch(&source, ts) {
            return b.admit(ts, per_second);
        }
        let mut b = SourceBudget::default();
        let admitted = b.admit(ts, per_second);
        self.sources.insert(source, b, ts);
        admitted
    }

    /// What the XDP program would hand up for this frame, if anything.
    pub fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        ifindex: u32,
        watch: &impl Watched,
    ) -> Option<Record> {
        let (outcome, rec) = self.decide(frame, ts_ns, ifindex, watch);
        self.counters[outcome as usize] += 1;
        if rec
            .as_ref()
            .is_some_and(|r| r.hdr.flags & flags::TRUNCATED != 0)
        {
            self.counters[Counter::SnapTruncated as usize] += 1;
        }
        rec
    }

    fn decide(
        &mut self,
        frame: &[u8],
        ts: u64,
        ifindex: u32,
        watch: &impl Watched,
    ) -> (Counter, Option<Record>) {
        let p = match parse_with(frame, self.cfg.vxlan_port) {
            Ok(p) => p,
            Err(c) => return (c, None),
        };
        let (key, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        let out = Out {
            frame,
            p: &p,
            key: &key,
            dir,
            ifindex,
            ts,
        };
        if is_dns_answer(&self.cfg, &p, || frame.peek(p.payload_off as usize)) {
            return (
                Counter::DnsAnswer,
                Some(out.record(RecordKind::Dns, 0, NO_SERVICE, (0, 0))),
            );
        }
        // A followed flow is found only where the kernel looks for it: on a
        // probe port with FOLLOW on (or, as any known flow, when watched).
        let known = match self.flows.get(&key) {
            Some(st) if st.flags & flow_flags::FOLLOWED != 0 => {
                may_be_followed(&self.cfg, &p)
                    || watch.service_of(ip(&p, &p.src)).is_some()
                    || watch.service_of(ip(&p, &p.dst)).is_some()
            }
            Some(_) => true,
            None => false,
        };
        if !known {
            let src = watch.service_of(ip(&p, &p.src));
            let dst = watch.service_of(ip(&p, &p.dst));
            let Some(value) = dst.or(src) else {
                return self.unwatched(&out);
            };
            if is_bare_syn(&p) {
                self.syns.insert(key, (), ts);
                return (Counter::SynDeferred, None);
            }
            let (service, policy) = split_watch_value(value);
            let cdir = client_dir(&p, dir, src.is_some(), dst.is_some());
            if !self.source_admits(&key, cdir, ts) {
                return (Counter::SourceBudget, None);
            }
            let syn_seen = p.is_tcp() && self.syns.remove(&key).is_some();
            // LRU, as the kernel's map: a full table forgets its least recent flow.
            let mut st = FlowState::new(service, cdir, ts);
            st.policy = policy;
            if opened(&p, syn_seen) {
                st.flags = flow_flags::OPENED;
            }
            self.flows.insert(key, st, ts);
        }
        let Some(st) = self.flows.touch(&key, ts) else {
            return (Counter::Unwatched, None);
        };
        match watched_packet(&self.cfg, st, dir, &p, || {
            frame.peek(p.payload_off as usize)
        }) {
            Decision::Skip(c) => (c, None),
            Decision::Record {
                kind,
                mut flags,
                counter,
            } => {
                let first = flags::FROM_CLIENT | flags::FIRST_PAYLOAD;
                let blocking =
                    self.cfg.flags & config_flags::BLOCK != 0 && p.is_tcp() && p.tunnel == 0;
                if blocking
                    && flags & (first | flags::TLS) == first
                    && st.policy & policy::BLOCK_CLEARTEXT != 0
                {
                    if st.flags & flow_flags::OPENED == 0 {
                        self.counters[Counter::CleartextRace as usize] += 1;
                    } else {
                        self.counters[Counter::WouldBlock as usize] += 1;
                        flags |= flags::WOULD_BLOCK;
                    }
                }
                let d = usize::from(dir & 1);
                let counts = (st.bytes[d], st.pkts[d]);
                st.last_ns = ts;
                (counter, Some(out.record(kind, flags, st.service, counts)))
            }
        }
    }

    fn unwatched(&mut self, out: &Out) -> (Counter, Option<Record>) {
        let p = out.p;
        if !p.is_tcp()
            || self.cfg.flags & config_flags::PROBE == 0
            || !self.cfg.is_probe_port(p.dport)
        {
            return (Counter::Unwatched, None);
        }
        let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if syn {
            self.probes.insert(*out.key, PROBE_AWAITING, out.ts);
            return (Counter::ProbeSyn, None);
        }
        if p.payload_len == 0 {
            return (Counter::Unwatched, None);
        }
        let Some(&mut was) = self.probes.touch(out.key, out.ts) else {
            return (Counter::Unwatched, None);
        };
        let frame = out.frame;
        let left = probe_remaining(was, p.payload_len, || frame.peek(p.payload_off as usize));
        if left == 0 {
            self.probes.remove(out.key);
        } else {
            self.probes.insert(*out.key, left, out.ts);
        }
        let mut f = flags::FROM_CLIENT;
        if was == PROBE_AWAITING {
            f |= flags::FIRST_PAYLOAD;
        }
        (
            Counter::Probe,
            Some(out.record(RecordKind::Probe, f, NO_SERVICE, (0, 0))),
        )
    }
}

struct Out<'a> {
    frame: &'a [u8],
    p: &'a Parsed,
    key: &'a FlowKey,
    dir: u8,
    ifindex: u32,
    ts: u64,
}

impl Out<'_> {
    fn record(&self, kind: RecordKind, rflags: u16, service: u32, counts: (u64, u64)) -> Record {
        let origin = Origin {
            ifindex: self.ifindex,
            ts_ns: self.ts,
            service,
            counts,
        };
        Record::build(kind, rflags, self.p, self.key, self.dir, self.frame, origin)
    }
}
