//! Keeps the kernel's watched addresses current: static prefixes from the catalog
//! and config, addresses learned from DNS answers and from the SNI or Host of
//! probed flows, expired after their TTL.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sensor_common::{
    block::watch_value,
    flow::{FlowKey, IPPROTO_TCP},
    record::flags,
};

use super::{
    ServiceIds,
    catalog::Catalog,
    dns::{self, DnsError},
    learned::{Change, Learned, Source, family},
    policy::BlockSettings,
    settings::TargetSettings,
};
use crate::{
    capture::record::Record,
    proto::{http, tls},
    shared::table::{Evictions, FlowTable},
};

mod restart;

pub use super::sink::{MemoryWatch, WatchSink};

/// What one DNS record led to (the `result` label of `leakwatch_dns_answers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsOutcome {
    /// At least one address was learned for a service.
    Learned,
    /// A valid answer about nothing in the catalog.
    Unrelated,
    /// Malformed or cut short: skipped.
    Skipped(&'static str),
}

impl DnsOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Unrelated => "unrelated",
            Self::Skipped(reason) => reason,
        }
    }
}

/// What one probe record led to (`leakwatch_probes_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The SNI named a catalog service: its server address is now watched.
    LearnedSni,
    /// The Host header did.
    LearnedHost,
    /// The name belongs to no service.
    Unrelated,
    /// A ClientHello split over segments: waiting for the rest.
    Incomplete,
    /// Neither a ClientHello with SNI nor an HTTP request with Host.
    NoName,
}

impl ProbeOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::LearnedSni => "sni",
            Self::LearnedHost => "host",
            Self::Unrelated => "unrelated",
            Self::Incomplete => "incomplete",
            Self::NoName => "no_name",
        }
    }
}

/// Most split ClientHellos assembled at once, and how long one may wait.
const MAX_PENDING_HELLOS: usize = 1024;
const HELLO_WAIT: Duration = Duration::from_secs(10);

pub struct Targeting<W: WatchSink> {
    catalog: Catalog,
    ids: ServiceIds,
    settings: TargetSettings,
    learned: Learned,
    statics: Vec<(IpNet, u32)>,
    sink: W,
    /// Probe payloads of split ClientHellos: bytes so far, next TCP sequence number.
    /// Stamped when the hello's first record came (not touched after).
    hellos: FlowTable<FlowKey, (u32, Vec<u8>)>,
    /// Blocking modes: the policy bits each watched address carries.
    blocking: BlockSettings,
    /// Addresses recently answered for names without cleartext policy (kept
    /// only while some name has one): a learned address among them carries none.
    shared: FlowTable<IpAddr, ()>,
    /// Errors writing to the sink (kept, not fatal: the next change retries).
    pub sink_errors: u64,
}

impl<W: WatchSink> Targeting<W> {
    /// Service ids follow the catalog's order (1 = its first service).
    pub fn new(catalog: Catalog, settings: TargetSettings, sink: W) -> Self {
        let mut ids = ServiceIds::default();
        for s in catalog.services() {
            ids.id(&s.id);
        }
        let learned = Learned::new(settings.max_learned_per_family);
        Self {
            catalog,
            ids,
            learned,
            statics: Vec::new(),
            sink,
            hellos: FlowTable::new("split_hellos", MAX_PENDING_HELLOS),
            shared: FlowTable::new("shared_addresses", settings.max_learned_per_family),
            settings,
            blocking: BlockSettings::default(),
            sink_errors: 0,
        }
    }

    /// Sets the blocking modes. Statics added later carry their service's
    /// policy from the start ([`Self::reload`] adds them again); learned
    /// addresses get their bits worked out again from the names they were
    /// learned from (none, or more than `learned::MAX_NAMES`: no bits, fail
    /// open), or none while the address is shared with a name outside the
    /// catalog.
    pub fn set_blocking(&mut self, blocking: BlockSettings) {
        self.blocking = blocking;
        let (blocking, shared, ids) = (&self.blocking, &self.shared, &self.ids);
        let changes = self.learned.recompute(|service, addr, names| {
            let (Some(names), Some(service)) = (names, ids.name(service)) else {
                return 0;
            };
            if names.is_empty() || shared.contains_key(addr) {
                return 0;
            }
            names
                .iter()
                .fold(u8::MAX, |bits, n| bits & blocking.name_bits(service, n))
        });
        self.apply(changes);
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn ids(&self) -> &ServiceIds {
        &self.ids
    }

    pub fn sink(&self) -> &W {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut W {
        &mut self.sink
    }

    /// The split-hello and shared-address tables' evictions (by name).
    pub fn table_evictions(&self) -> [(&'static str, Evictions); 2] {
        [
            (self.hellos.name(), self.hellos.evictions()),
            (self.shared.name(), self.shared.evictions()),
        ]
    }

    /// The service an address is watched as now: a static prefix (the longest)
    /// or a learned address.
    pub fn service_of(&self, addr: IpAddr) -> Option<u32> {
        self.statics
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, s)| *s)
            .or_else(|| self.learned.service_of(&addr))
    }

    /// Watches `net` as `service` for good (catalog CIDRs, `--watch`).
    pub fn add_static(&mut self, net: IpNet, service: &str) -> Result<(), String> {
        let id = self.ids.id(service);
        let value = watch_value(id, self.blocking.service_bits(service));
        self.sink.watch(net.trunc(), value)?;
        self.statics.push((net.trunc(), id));
        Ok(())
    }

    /// A reload: the new catalog (services, domains, static prefixes, public
    /// ids) and blocking modes; `extra` are the `--watch` prefixes, kept.
    /// Service ids are never reused; learned addresses stay (with the policy
    /// bits they were learned with) until they expire.
    pub fn reload(
        &mut self,
        catalog: Catalog,
        blocking: BlockSettings,
        extra: &[(IpNet, String)],
    ) -> Result<(), String> {
        for s in catalog.services() {
            self.ids.id(&s.id);
        }
        self.catalog = catalog;
        self.set_blocking(blocking);
        let mut want: Vec<(IpNet, String)> = self
            .catalog
            .services()
            .iter()
            .flat_map(|s| s.cidrs.iter().map(|n| (n.trunc(), s.id.clone())))
            .collect();
        want.extend(extra.iter().map(|(n, s)| (n.trunc(), s.clone())));
        for (net, _) in std::mem::take(&mut self.statics) {
            if !want.iter().any(|(n, _)| *n == net) {
                self.sink.unwatch(net)?;
            }
        }
        for (net, service) in want {
            self.add_static(net, &service)
                .map_err(|e| format!("{net}={service}: {e}"))?;
        }
        Ok(())
    }

    /// Adds every catalog service's static prefixes.
    pub fn add_catalog_statics(&mut self) -> Result<(), String> {
        let nets: Vec<(IpNet, String)> = self
            .catalog
            .services()
            .iter()
            .flat_map(|s| s.cidrs.iter().map(|n| (*n, s.id.clone())))
            .collect();
        for (net, svc) in nets {
            self.add_static(net, &svc)
                .map_err(|e| format!("{net}={svc}: {e}"))?;
        }
        Ok(())
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            let r = match c {
                Change::Watch(a, s) => self.sink.watch(IpNet::from(a), s),
                Change::Unwatch(a) => self.sink.unwatch(IpNet::from(a)),
            };
            if let Err(e) = r {
                self.sink_errors += 1;
                log::warn!("updating watched addresses: {e}");
            }
        }
    }

    /// Learns `addr` for the service `name` belongs to, if any.
    fn learn_name(
        &mut self,
        name: &str,
        addr: IpAddr,
        source: Source,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(service) = self.catalog.service_for(name) else {
            return false;
        };
        // A static prefix already covers it (and owns the trie entry): leave it.
        if self.statics.iter().any(|(n, _)| n.contains(&addr)) {
            return true;
        }
        let mut bits = self.blocking.name_bits(service, name);
        if self.shared.contains_key(&addr) {
            bits = 0;
        }
        let id = self.ids.id(service);
        let changes = self
            .learned
            .learn(addr, id, (Some(name), bits), source, ttl, now);
        self.apply(changes);
        true
    }

    /// `addr` was answered for names none of which is the catalog's: a learned
    /// address shared with them (a CDN) loses its cleartext policy.
    fn seen_for_other_names(&mut self, addr: IpAddr, now: Instant) {
        if !self.blocking.has_cleartext_policy() {
            return;
        }
        self.shared.insert(addr, (), now);
        let changes = self.learned.restrict(&addr, 0).into_iter().collect();
        self.apply(changes);
    }

    /// A DNS record from the kernel (UDP payload, or a TCP segment holding a
    /// whole length-prefixed message; messages spanning segments are skipped and
    /// counted as `truncated`).
    pub fn on_dns(&mut self, rec: &Record, now: Instant) -> DnsOutcome {
        let mut payload = rec.payload();
        if payload.len() < rec.hdr.payload_len as usize {
            return DnsOutcome::Skipped("truncated");
        }
        if rec.hdr.flow.proto == IPPROTO_TCP {
            let Some(len) = payload
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            else {
                return DnsOutcome::Skipped("truncated");
            };
            match payload.get(2..2 + len) {
                Some(m) => payload = m,
                None => return DnsOutcome::Skipped("truncated"),
            }
        }
        let resp = match dns::parse(payload) {
            Ok(r) => r,
            Err(e @ (DnsError::Truncated | DnsError::NotResponse | DnsError::BadName(_))) => {
                return DnsOutcome::Skipped(e.reason());
            }
        };
        let mut learned = false;
        for r in resp.resolved() {
            let ttl = self.settings.dns_ttl(r.ttl);
            // Any name of the chain attributes the address (the question, a CNAME).
            if let Some(name) = r
                .names
                .iter()
                .find(|n| self.catalog.service_for(n).is_some())
                .cloned()
            {
                learned |= self.learn_name(&name, r.addr, Source::Dns, ttl, now);
            } else {
                self.seen_for_other_names(r.addr, now);
            }
        }
        if learned {
            DnsOutcome::Learned
        } else {
            DnsOutcome::Unrelated
        }
    }

    /// A probe record: the first client payload of a new flow to a probe port (and,
    /// for a ClientHello split over segments, its continuations, joined here by
    /// TCP sequence number).
    pub fn on_probe(&mut self, rec: &Record, now: Instant) -> ProbeOutcome {
        let key = rec.hdr.flow;
        let payload = rec.payload();
        let first = rec.hdr.flags & flags::FIRST_PAYLOAD != 0;
        let joined: Vec<u8>;
        let bytes: &[u8] = if first {
            payload
        } else {
            let Some((next, buf)) = self.hellos.get_mut(&key) else {
                return ProbeOutcome::NoName;
            };
            if rec.hdr.tcp_seq != *next {
                // Out of order or retransmitted: give up on this hello.
                self.hellos.remove(&key);
                return ProbeOutcome::NoName;
            }
            buf.extend_from_slice(payload);
            *next = next.wrapping_add(payload.len() as u32);
            joined = buf.clone();
            &joined
        };
        let server = rec.dst().0;
        match tls::parse_client_hello(bytes) {
            Ok(ch) => {
                self.hellos.remove(&key);
                let ttl = Duration::from_secs(self.settings.sni_ttl_secs);
                return match ch.sni {
                    Some(sni) if self.learn_name(&sni, server, Source::Sni, ttl, now) => {
                        ProbeOutcome::LearnedSni
                    }
                    Some(_) => ProbeOutcome::Unrelated,
                    None => ProbeOutcome::NoName,
                };
            }
            Err(tls::TlsError::Incomplete { .. }) => {
                if first {
                    // A full table forgets its oldest hello, so a flood of
                    // split hellos cannot lock out the next real one.
                    let next = rec.hdr.tcp_seq.wrapping_add(payload.len() as u32);
                    self.hellos.insert(key, (next, payload.to_vec()), now);
                }
                return ProbeOutcome::Incomplete;
            }
            Err(_) => {}
        }
        match http::parse_request_head(bytes).and_then(|h| h.host) {
            Some(host) => {
                let ttl = Duration::from_secs(self.settings.sni_ttl_secs);
                if self.learn_name(&host, server, Source::Host, ttl, now) {
                    ProbeOutcome::LearnedHost
                } else {
                    ProbeOutcome::Unrelated
                }
            }
            None => ProbeOutcome::NoName,
        }
    }

    /// Expires learned addresses and stale split hellos.
    pub fn sweep(&mut self, now: Instant) {
        let changes = self.learned.expire(now);
        self.apply(changes);
        if let Some(cutoff) = now.checked_sub(HELLO_WAIT) {
            while self.hellos.expire(cutoff).is_some() {}
        }
        let shared_for = Duration::from_secs(self.settings.dns_ttl_max_secs);
        if let Some(cutoff) = now.checked_sub(shared_for) {
            while self.shared.expire(cutoff).is_some() {}
        }
    }

    /// Watched addresses per (family, source), statics included (as prefixes).
    pub fn watched_counts(&self) -> Vec<((&'static str, Source), usize)> {
        let learned = self.learned.counts();
        let mut out = Vec::new();
        for fam in ["ipv4", "ipv6"] {
            for src in Source::ALL {
                let n = if src == Source::Static {
                    self.statics
                        .iter()
                        .filter(|(n, _)| family(&n.addr()) == fam)
                        .count()
                } else {
                    learned.get(&(fam, src)).copied().unwrap_or(0)
                };
                out.push(((fam, src), n));
            }
        }
        out
    }

    /// The learned addresses' table: its evictions, its budget.
    pub fn learned_mut(&mut self) -> &mut super::learned::Learned {
        &mut self.learned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::record::Record,
        fixtures::{FrameBuilder, tls_client_hello},
    };
    use sensor_common::record::RecordKind;

    fn record(kind: RecordKind, rflags: u16, frame: Vec<u8>) -> Record {
        crate::fixtures::record(kind, rflags, &frame)
    }

    fn targeting(settings: TargetSettings) -> Targeting<MemoryWatch> {
        Targeting::new(Catalog::builtin(), settings, MemoryWatch::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        IpNet::from(ip(s))
    }

    #[test]
    fn dns_chain_learns_every_address_with_a_clamped_ttl() {
        let mut t = targeting(TargetSettings {
            dns_ttl_min_secs: 30,
            ..TargetSettings::default()
        });
        let msg = dns::build_response(
            9,
            "api.qobuz.com",
            &["qobuz.cdn.example.net"],
            &[ip("198.51.100.2"), ip("198.51.100.4")],
            5,
        );
        let rec = record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(&msg)
                .build(),
        );
        let t0 = Instant::now();
        assert_eq!(t.on_dns(&rec, t0), DnsOutcome::Learned);
        let qobuz = t.ids().id_of("qobuz").unwrap();
        assert_eq!(t.sink().0.get(&net("198.51.100.2")), Some(&qobuz));
        assert_eq!(t.sink().0.get(&net("198.51.100.4")), Some(&qobuz));
        // TTL 5 s clamped up to 30 s.
        t.sweep(t0 + Duration::from_secs(29));
        assert_eq!(t.sink().0.len(), 2);
        t.sweep(t0 + Duration::from_secs(30));
        assert!(t.sink().0.is_empty());
    }

    fn answer(name: &str, addr: &str) -> Record {
        let msg = dns::build_response(9, name, &[], &[ip(addr)], 300);
        record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(&msg)
                .build(),
        )
    }

    #[test]
    fn watched_addresses_carry_the_cleartext_policy_of_their_names() {
        use sensor_common::block::{policy, split_watch_value};
        let mut t = targeting(TargetSettings::default());
        t.set_blocking(
            toml::from_str(
                "[services]\ndeezer = \"dry-run\"\n[domains]\n\"www.qobuz.com\" = \"block-cleartext\"\n",
            )
            .unwrap(),
        );
        t.add_static("203.0.113.0/24".parse().unwrap(), "deezer")
            .unwrap();
        let bits = |t: &Targeting<MemoryWatch>, n: &str| {
            t.sink()
                .0
                .get(&n.parse::<IpNet>().unwrap())
                .map(|v| split_watch_value(*v).1)
        };
        assert_eq!(
            bits(&t, "203.0.113.0/24"),
            Some(policy::BLOCK_CLEARTEXT | policy::DRY_RUN),
            "a static prefix has its service's policy"
        );
        let now = Instant::now();
        t.on_dns(&answer("www.qobuz.com", "198.51.100.2"), now);
        assert_eq!(bits(&t, "198.51.100.2/32"), Some(policy::BLOCK_CLEARTEXT));
        // Another name of the service without the policy shares the address.
        t.on_dns(&answer("api.qobuz.com", "198.51.100.2"), now);
        assert_eq!(bits(&t, "198.51.100.2/32"), Some(0));
        // A CDN address: first answered for a name outside the catalog.
        t.on_dns(&answer("cdn.example.net", "198.51.100.9"), now);
        t.on_dns(&answer("www.qobuz.com", "198.51.100.9"), now);
        assert_eq!(bits(&t, "198.51.100.9/32"), Some(0), "shared: no policy");
        // …and the other way round.
        t.on_dns(&answer("www.qobuz.com", "198.51.100.10"), now);
        t.on_dns(&answer("cdn.example.net", "198.51.100.10"), now);
        assert_eq!(bits(&t, "198.51.100.10/32"), Some(0));
        let qobuz = t.ids().id_of("qobuz").unwrap();
        assert_eq!(t.service_of(ip("198.51.100.10")), Some(qobuz));
    }

    /// A reload that changes a name's blocking mode reaches the addresses
    /// learned from it before the reload, both ways; a shared address stays
    /// without policy.
    #[test]
    fn a_reloaded_blocking_mode_reaches_addresses_learned_before_it() {
        use sensor_common::block::{policy, split_watch_value};
        let modes = |m: &str| -> BlockSettings {
            toml::from_str(&format!("[domains]\n\"www.qobuz.com\" = \"{m}\"\n")).unwrap()
        };
        let mut t = targeting(TargetSettings::default());
        t.set_blocking(modes("block-cleartext"));
        let now = Instant::now();
        t.on_dns(&answer("www.qobuz.com", "198.51.100.2"), now);
        t.on_dns(&answer("cdn.example.net", "198.51.100.9"), now);
        t.on_dns(&answer("www.qobuz.com", "198.51.100.9"), now);
        let bits = |t: &Targeting<MemoryWatch>, n: &str| {
            t.sink()
                .0
                .get(&n.parse::<IpNet>().unwrap())
                .map(|v| split_watch_value(*v).1)
        };
        assert_eq!(bits(&t, "198.51.100.2/32"), Some(policy::BLOCK_CLEARTEXT));
        t.reload(Catalog::builtin(), modes("monitor"), &[]).unwrap();
        assert_eq!(bits(&t, "198.51.100.2/32"), Some(0), "monitor: no bits");
        t.reload(Catalog::builtin(), modes("dry-run"), &[]).unwrap();
        assert_eq!(
            bits(&t, "198.51.100.2/32"),
            Some(policy::BLOCK_CLEARTEXT | policy::DRY_RUN)
        );
        assert_eq!(bits(&t, "198.51.100.9/32"), Some(0), "shared: no policy");
    }

    /// A restart brings learned addresses back with their names: their
    /// policy bits are those names' under the modes of the new start; a
    /// shared address stays without; one saved without names (an older
    /// file) has none until a fresh answer.
    #[test]
    fn a_restart_restores_learned_addresses_with_their_policy() {
        use crate::targets::store::Saved;
        use sensor_common::block::{policy, split_watch_value};
        let modes = |m: &str| -> BlockSettings {
            toml::from_str(&format!("[domains]\n\"www.qobuz.com\" = \"{m}\"\n")).unwrap()
        };
        let bits = |t: &Targeting<MemoryWatch>, n: &str| {
            t.sink()
                .0
                .get(&n.parse::<IpNet>().unwrap())
                .map(|v| split_watch_value(*v).1)
        };
        let now = Instant::now();
        let mut before = targeting(TargetSettings::default());
        before.set_blocking(modes("block-cleartext"));
        before.on_dns(&answer("www.qobuz.com", "198.51.100.2"), now);
        before.on_dns(&answer("cdn.example.net", "198.51.100.9"), now);
        before.on_dns(&answer("www.qobuz.com", "198.51.100.9"), now);
        let mut saved = before.learned_snapshot(now);
        saved.sort_by_key(|e| e.addr);
        assert_eq!(saved.len(), 2);
        assert_eq!(
            saved[0].names.as_deref(),
            Some(&["www.qobuz.com".to_owned()][..])
        );
        assert!(!saved[0].shared && saved[1].shared);

        let mut after = targeting(TargetSettings::default());
        after.set_blocking(modes("dry-run"));
        assert_eq!(after.restore(&saved, now), 2);
        assert_eq!(
            bits(&after, "198.51.100.2/32"),
            Some(policy::BLOCK_CLEARTEXT | policy::DRY_RUN),
            "the name's mode at the new start"
        );
        assert_eq!(
            bits(&after, "198.51.100.9/32"),
            Some(0),
            "shared: no policy"
        );
        // Still shared: a fresh answer for the service's name gives none.
        after.on_dns(&answer("www.qobuz.com", "198.51.100.9"), now);
        assert_eq!(bits(&after, "198.51.100.9/32"), Some(0));

        // Without names: watched, no bits (fail open) until answered again.
        let mut older = targeting(TargetSettings::default());
        older.set_blocking(modes("block-cleartext"));
        let nameless: Vec<_> = saved
            .iter()
            .map(|e| Saved {
                names: None,
                shared: false,
                ..e.clone()
            })
            .collect();
        older.restore(&nameless, now);
        assert_eq!(bits(&older, "198.51.100.2/32"), Some(0));
        older.on_dns(&answer("www.qobuz.com", "198.51.100.2"), now);
        assert_eq!(
            bits(&older, "198.51.100.2/32"),
            Some(policy::BLOCK_CLEARTEXT)
        );
    }

    #[test]
    fn a_cname_into_a_service_domain_attributes_too() {
        let mut t = targeting(TargetSettings::default());
        let msg = dns::build_response(
            9,
            "music.partner.example",
            &["e1.dzcdn.net"],
            &[ip("2001:db8:5::9")],
            300,
        );
        let rec = record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("2001:db8:5::53", 53, "2001:db8:c::10", 5353)
                .payload(&msg)
                .build(),
        );
        assert_eq!(t.on_dns(&rec, Instant::now()), DnsOutcome::Learned);
        assert_eq!(
            t.sink().0.get(&net("2001:db8:5::9")),
            t.ids().id_of("deezer").as_ref()
        );
        assert_eq!(
            t.watched_counts()
                .iter()
                .find(|(k, _)| *k == ("ipv6", Source::Dns))
                .unwrap()
                .1,
            1
        );
    }

    #[test]
    fn unrelated_and_malformed_answers() {
        let mut t = targeting(TargetSettings::default());
        let msg = dns::build_response(9, "www.example.org", &[], &[ip("198.51.100.3")], 300);
        let rec = record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(&msg)
                .build(),
        );
        assert_eq!(t.on_dns(&rec, Instant::now()), DnsOutcome::Unrelated);
        let bad = record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(&msg[..20])
                .build(),
        );
        assert_eq!(
            t.on_dns(&bad, Instant::now()),
            DnsOutcome::Skipped("truncated")
        );
        assert!(t.sink().0.is_empty());
    }

    #[test]
    fn dns_over_tcp() {
        let mut t = targeting(TargetSettings::default());
        let msg = dns::build_response(9, "api.tidal.com", &[], &[ip("198.51.100.8")], 300);
        let mut tcp = (msg.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&msg);
        let rec = record(
            RecordKind::Dns,
            0,
            FrameBuilder::tcp("198.51.100.53", 53, "192.0.2.10", 40000)
                .payload(&tcp)
                .build(),
        );
        assert_eq!(t.on_dns(&rec, Instant::now()), DnsOutcome::Learned);
        let cut = record(
            RecordKind::Dns,
            0,
            FrameBuilder::tcp("198.51.100.53", 53, "192.0.2.10", 40000)
                .payload(&tcp[..30])
                .build(),
        );
        assert_eq!(
            t.on_dns(&cut, Instant::now()),
            DnsOutcome::Skipped("truncated")
        );
    }

    #[test]
    fn probes_learn_from_sni_split_hellos_and_host() {
        let mut t = targeting(TargetSettings::default());
        let now = Instant::now();
        let first = flags::FROM_CLIENT | flags::FIRST_PAYLOAD;
        let hello = tls_client_hello("www.qobuz.com", 0);
        let rec = record(
            RecordKind::Probe,
            first,
            FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.7", 443)
                .seq(1)
                .payload(&hello)
                .build(),
        );
        assert_eq!(t.on_probe(&rec, now), ProbeOutcome::LearnedSni);
        assert!(t.sink().0.contains_key(&net("203.0.113.7")));

        let hello = tls_client_hello("api.spotify.com", 1400);
        let (a, b) = hello.split_at(1000);
        let c = |seq: u32, f: u16, p: &[u8]| {
            record(
                RecordKind::Probe,
                f,
                FrameBuilder::tcp("192.0.2.10", 40001, "203.0.113.8", 443)
                    .seq(seq)
                    .payload(p)
                    .build(),
            )
        };
        assert_eq!(t.on_probe(&c(1, first, a), now), ProbeOutcome::Incomplete);
        assert_eq!(
            t.on_probe(&c(1001, flags::FROM_CLIENT, b), now),
            ProbeOutcome::LearnedSni
        );
        assert_eq!(
            t.sink().0.get(&net("203.0.113.8")),
            t.ids().id_of("spotify").as_ref()
        );

        let get = b"GET / HTTP/1.1\r\nHost: www.deezer.com\r\n\r\n";
        let rec = record(
            RecordKind::Probe,
            first,
            FrameBuilder::tcp("192.0.2.10", 40002, "203.0.113.9", 80)
                .payload(get)
                .build(),
        );
        assert_eq!(t.on_probe(&rec, now), ProbeOutcome::LearnedHost);
        let other = b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n";
        let rec = record(
            RecordKind::Probe,
            first,
            FrameBuilder::tcp("192.0.2.10", 40003, "203.0.113.10", 80)
                .payload(other)
                .build(),
        );
        assert_eq!(t.on_probe(&rec, now), ProbeOutcome::Unrelated);
        let counts = t.watched_counts();
        assert_eq!(
            counts
                .iter()
                .find(|(k, _)| *k == ("ipv4", Source::Sni))
                .unwrap()
                .1,
            2
        );
        assert_eq!(
            counts
                .iter()
                .find(|(k, _)| *k == ("ipv4", Source::Host))
                .unwrap()
                .1,
            1
        );
    }

    #[test]
    fn statics_never_expire_and_shadow_learning() {
        let mut t = targeting(TargetSettings {
            dns_ttl_max_secs: 60,
            ..TargetSettings::default()
        });
        t.add_static("198.51.100.0/24".parse().unwrap(), "qobuz")
            .unwrap();
        let msg = dns::build_response(9, "api.qobuz.com", &[], &[ip("198.51.100.2")], 300);
        let rec = record(
            RecordKind::Dns,
            0,
            FrameBuilder::udp("198.51.100.53", 53, "192.0.2.10", 5353)
                .payload(&msg)
                .build(),
        );
        let t0 = Instant::now();
        t.on_dns(&rec, t0);
        t.sweep(t0 + Duration::from_hours(1));
        assert_eq!(t.sink().0.len(), 1);
        assert!(t.sink().0.contains_key(&"198.51.100.0/24".parse().unwrap()));
    }
}
