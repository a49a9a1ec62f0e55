//! Blocking decisions: which findings block their flow (`reset`), quarantine
//! their client (`quarantine`) or only say they would (`dry-run`); the cleartext
//! payloads the kernel refused; the blocks in force, their expiry and eviction,
//! kept in step with the kernel maps (`capture::blocks`).
//!
//! Only TCP flows whose client came in on a LAN interface and is not
//! allow-listed are ever blocked. In replay (`enforce` off) every decision is a
//! `would_block` and nothing leaves this table.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use sensor_common::{
    block::{BlockEntry, QuarantineKey, reason},
    flow::{FAMILY_V4, FlowKey, IPPROTO_TCP},
    record::flags,
};
use serde::Serialize;

use crate::{
    capture::{
        blocks::{BlockSink, quarantine_key},
        clock::mono_now_ns,
        record::Record,
    },
    flows::workers::OnFinding,
    matcher::finding::Finding,
    shared::table::{Evictions, FlowTable},
    targets::policy::{BlockMode, BlockSettings},
};

/// Why a block was decided (event and metric `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A trigger finding on the flow.
    Finding,
    /// The client is quarantined for the service (set, or applied to a new
    /// cleartext flow).
    Quarantine,
    /// Cleartext to an address with the `block-cleartext` policy.
    Cleartext,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Finding => "finding",
            Self::Quarantine => "quarantine",
            Self::Cleartext => "cleartext",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Finding => reason::FINDING,
            Self::Quarantine => reason::QUARANTINE,
            Self::Cleartext => reason::CLEARTEXT,
        }
    }
}

/// A block in force (or, not enforced, one that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Active {
    pub id: u64,
    /// `flow` (a blocked flow) or `quarantine` (a client and a service).
    pub scope: &'static str,
    pub client: IpAddr,
    /// The server endpoint of a blocked flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<(IpAddr, u16)>,
    pub service: String,
    pub reason: &'static str,
    pub mode: &'static str,
    /// Record-time ns (monotonic live, capture time in replay) it began and ends.
    #[serde(skip)]
    pub since_ns: u64,
    #[serde(skip)]
    pub expires_ns: u64,
    #[serde(skip)]
    enforced: bool,
}

impl Active {
    /// In force (not a dry-run decision).
    pub fn is_enforced(&self) -> bool {
        self.enforced
    }
}

/// One decision to report as a `block` or `would_block` event.
#[derive(Debug, Clone)]
pub struct Decision {
    pub enforced: bool,
    pub active: Active,
}

/// The blocker, shared by the pipeline (records, expiry, control socket) and
/// the matcher workers, which decide a finding's block where it is found: the
/// block is in the kernel map before the finding travels on.
pub type SharedBlocker = Arc<Mutex<Blocker>>;

/// The blocker, even after a thread panicked holding it: its tables stay
/// consistent between calls, and blocking must go on.
pub fn lock(b: &Mutex<Blocker>) -> MutexGuard<'_, Blocker> {
    b.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A finding's block decisions, and how long after the kernel saw its packet
/// an enforced one was in force.
#[derive(Debug, Default)]
pub struct Blocked {
    pub decisions: Vec<Decision>,
    pub latency_ns: Option<u64>,
}

/// Decides a finding's blocks (`service`: its name).
pub fn decide(b: &Mutex<Blocker>, f: &Finding, service: &str, now: Instant) -> Blocked {
    let decisions = lock(b).on_finding(f, service, now);
    let latency_ns = decisions
        .iter()
        .any(|d| d.enforced)
        .then(|| mono_now_ns().saturating_sub(f.ts_ns));
    Blocked {
        decisions,
        latency_ns,
    }
}

/// The matcher workers decide blocks where they find the leak.
impl OnFinding for Mutex<Blocker> {
    type Out = Blocked;
    fn on_finding(&self, f: &Finding, service: &str, now: Instant) -> Blocked {
        decide(self, f, service, now)
    }
}

/// What the blocker did not block, and why (metric `reason` of skipped blocks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Skipped {
    pub not_lan: u64,
    pub allow_listed: u64,
    pub not_tcp: u64,
}

pub struct Blocker {
    settings: BlockSettings,
    /// LAN interfaces; `None`: every client counts as LAN (replay).
    lan: Option<HashSet<u32>>,
    enforce: bool,
    sink: Box<dyn BlockSink + Send>,
    /// Stamped with their deadlines (constant durations: oldest expires first).
    flows: FlowTable<FlowKey, Active>,
    quarantined: FlowTable<QuarantineKey, Active>,
    /// Flows whose first payload the kernel refused (`true`: their findings are
    /// `"blocked": true`; the matcher reports them after the record) or, in
    /// replay, would have refused (`false`). Either way no finding blocks them.
    refused: FlowTable<FlowKey, bool>,
    next_id: u64,
    pub skipped: Skipped,
    /// Kernel map writes that failed (the block is then not in force).
    pub errors: u64,
}

impl Blocker {
    /// `lan`: the LAN interfaces (`None` in replay). `enforce`: write the kernel
    /// maps (live) or only report (replay).
    pub fn new(
        settings: BlockSettings,
        lan: Option<HashSet<u32>>,
        enforce: bool,
        sink: Box<dyn BlockSink + Send>,
    ) -> Self {
        let cap = settings.max_blocks;
        Self {
            settings,
            lan,
            enforce,
            sink,
            flows: FlowTable::new("blocked_flows", cap),
            quarantined: FlowTable::new("quarantine", cap),
            refused: FlowTable::new("refused_flows", cap),
            next_id: 1,
            skipped: Skipped::default(),
            errors: 0,
        }
    }

    /// New modes and triggers (a reload); blocks in force stay until they end.
    pub fn set_settings(&mut self, settings: BlockSettings) {
        self.settings = settings;
    }

    fn allowed(&self, client: IpAddr) -> bool {
        self.settings
            .allow_clients
            .iter()
            .any(|n| n.contains(&client))
    }

    fn is_lan(&self, ifindex: u32) -> bool {
        self.lan.as_ref().is_none_or(|l| l.contains(&ifindex))
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether a finding blocks: the decisions to report (the flow's block, and
    /// under `quarantine` the client's quarantine). `service`: its name.
    pub fn on_finding(&mut self, f: &Finding, service: &str, now: Instant) -> Vec<Decision> {
        let s = &self.settings;
        // A followed app's flow to a third party blocks nothing: its address
        // is not the service's, and unwatched addresses are never dropped.
        if f.third_party || !s.kinds.contains(&f.hit.kind) || f.severity < s.min_severity {
            return Vec::new();
        }
        let host = f.head.as_ref().and_then(|h| h.host.as_deref());
        let mode = s.mode_for(service, host);
        if mode == BlockMode::Monitor {
            return Vec::new();
        }
        if f.key.proto != IPPROTO_TCP {
            self.skipped.not_tcp += 1;
            return Vec::new();
        }
        let client_dir = if f.from_client {
            f.direction
        } else {
            f.direction ^ 1
        };
        let client = endpoint(&f.key, client_dir).0;
        if self.allowed(client) {
            self.skipped.allow_listed += 1;
            return Vec::new();
        }
        if !self.is_lan(f.ifindex) {
            self.skipped.not_lan += 1;
            return Vec::new();
        }
        // Already blocked, or its first payload refused: the flow is dead.
        if self.flows.contains_key(&f.key) || self.refused.contains_key(&f.key) {
            return Vec::new();
        }
        let enforced = self.enforce && mode != BlockMode::DryRun;
        let mut out = Vec::new();
        let block = Active {
            id: self.id(),
            scope: "flow",
            client,
            server: Some(endpoint(&f.key, client_dir ^ 1)),
            service: service.to_owned(),
            reason: Reason::Finding.name(),
            mode: mode.name(),
            since_ns: f.ts_ns,
            expires_ns: f.ts_ns + secs_ns(self.settings.block_secs),
            enforced,
        };
        let entry = kernel_entry(
            f.service,
            Reason::Finding,
            client_dir,
            self.settings.block_secs,
        );
        if enforced && let Err(e) = self.sink.block(&f.key, &entry) {
            self.fail("blocking a flow", &e);
        } else {
            let deadline = now + Duration::from_secs(self.settings.block_secs);
            if let Some((k, old)) = self.flows.insert(f.key, block.clone(), deadline) {
                self.end_flow(&k, &old);
            }
            out.push(Decision {
                enforced,
                active: block,
            });
        }
        let q = quarantine_key(client, f.service);
        if mode == BlockMode::Quarantine && !self.quarantined.contains_key(&q) {
            let secs = self.settings.quarantine_secs;
            let active = Active {
                id: self.id(),
                scope: "quarantine",
                client,
                server: None,
                service: service.to_owned(),
                reason: Reason::Quarantine.name(),
                mode: mode.name(),
                since_ns: f.ts_ns,
                expires_ns: f.ts_ns + secs_ns(secs),
                enforced,
            };
            let entry = kernel_entry(f.service, Reason::Quarantine, 0, secs);
            if enforced && let Err(e) = self.sink.quarantine(&q, &entry) {
                self.fail("quarantining a client", &e);
            } else {
                let deadline = now + Duration::from_secs(secs);
                if let Some((k, old)) = self.quarantined.insert(q, active.clone(), deadline) {
                    self.end_quarantine(&k, &old);
                }
                out.push(Decision { enforced, active });
            }
        }
        out
    }

    /// A record the kernel flagged: its cleartext was refused (`BLOCKED`) or a
    /// dry-run policy would have refused it (`WOULD_BLOCK`). `service`: its
    /// name; `host`: the request's Host, if any.
    pub fn on_record(
        &mut self,
        rec: &Record,
        service: &str,
        host: Option<&str>,
        now: Instant,
    ) -> Option<Decision> {
        let h = &rec.hdr;
        let enforced = h.flags & flags::BLOCKED != 0;
        if !enforced && h.flags & flags::WOULD_BLOCK == 0 {
            return None;
        }
        // Live dry-run flows go on: their findings are decided as `reset` would.
        if enforced || !self.enforce {
            self.refused.insert(h.flow, enforced, now);
        }
        let client = endpoint(&h.flow, h.direction).0;
        let q = quarantine_key(client, h.service);
        let (reason, mode) = if enforced && self.quarantined.contains_key(&q) {
            (Reason::Quarantine, BlockMode::Quarantine)
        } else if enforced {
            (Reason::Cleartext, BlockMode::BlockCleartext)
        } else {
            // The mode that would have refused it: dry-run live, the policy's
            // own mode in replay.
            let mode = self.settings.mode_for(service, host);
            let mode = if self.enforce || mode == BlockMode::Monitor {
                BlockMode::DryRun
            } else {
                mode
            };
            (Reason::Cleartext, mode)
        };
        let active = Active {
            id: self.id(),
            scope: "flow",
            client,
            server: Some(endpoint(&h.flow, h.direction ^ 1)),
            service: service.to_owned(),
            reason: reason.name(),
            mode: mode.name(),
            since_ns: h.ts_ns,
            expires_ns: h.ts_ns,
            enforced,
        };
        Some(Decision { enforced, active })
    }

    /// Whether the flow's first payload was refused: it never left.
    pub fn refused(&self, key: &FlowKey) -> bool {
        self.refused.get(key).copied().unwrap_or(false)
    }

    /// Ends the blocks whose time is up, in the kernel maps too. Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        // A refused flow's findings arrive within the matcher's idle time.
        if let Some(cutoff) = now.checked_sub(REFUSED_MEMORY) {
            while self.refused.take_due(cutoff).is_some() {}
        }
        while let Some((k, a)) = self.flows.take_due(now) {
            self.end_flow(&k, &a);
            n += 1;
        }
        while let Some((k, a)) = self.quarantined.take_due(now) {
            self.end_quarantine(&k, &a);
            n += 1;
        }
        n
    }

    /// Lifts block `id` (a flow or a quarantine); the lifted block.
    pub fn lift(&mut self, id: u64) -> Option<Active> {
        if let Some(k) = self.flows.find(|_, a| a.id == id) {
            let a = self.flows.remove(&k)?;
            self.end_flow(&k, &a);
            return Some(a);
        }
        let k = self.quarantined.find(|_, a| a.id == id)?;
        let a = self.quarantined.remove(&k)?;
        self.end_quarantine(&k, &a);
        Some(a)
    }

    /// Blocks in force (or, in dry-run, that would be), oldest first.
    pub fn list(&self) -> Vec<Active> {
        let mut v: Vec<Active> = self
            .flows
            .iter()
            .map(|(_, a)| a.clone())
            .chain(self.quarantined.iter().map(|(_, a)| a.clone()))
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Enforced blocks in force: (flows, quarantines).
    pub fn active(&self) -> (usize, usize) {
        let flows = self.flows.iter().filter(|(_, a)| a.enforced).count();
        let quarantines = self.quarantined.iter().filter(|(_, a)| a.enforced).count();
        (flows, quarantines)
    }

    /// A new connection on a blocked or refused flow's ports (a bare SYN
    /// from its client, which the kernel let through, ending its own entry):
    /// the old connection's block and refusal end, so the new one's leaks
    /// are decided afresh. Whether a block ended.
    pub fn restarted(&mut self, key: &FlowKey) -> bool {
        self.refused.remove(key);
        let Some(a) = self.flows.remove(key) else {
            return false;
        };
        self.end_flow(key, &a);
        true
    }

    pub fn evictions(&self) -> [(&'static str, Evictions); 3] {
        [
            (self.flows.name(), self.flows.evictions()),
            (self.quarantined.name(), self.quarantined.evictions()),
            (self.refused.name(), self.refused.evictions()),
        ]
    }

    fn end_flow(&mut self, k: &FlowKey, a: &Active) {
        if a.enforced
            && let Err(e) = self.sink.unblock(k)
        {
            self.fail("unblocking a flow", &e);
        }
    }

    fn end_quarantine(&mut self, k: &QuarantineKey, a: &Active) {
        if a.enforced
            && let Err(e) = self.sink.release(k)
        {
            self.fail("ending a quarantine", &e);
        }
    }

    fn fail(&mut self, what: &str, e: &str) {
        self.errors += 1;
        log::warn!("{what} in the kernel maps: {e}");
    }
}

/// How long a refused flow is remembered for its findings.
const REFUSED_MEMORY: Duration = Duration::from_mins(5);

fn secs_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

fn kernel_entry(service: u32, reason: Reason, client_dir: u8, secs: u64) -> BlockEntry {
    BlockEntry::new(
        mono_now_ns().saturating_add(secs_ns(secs)),
        service,
        reason.code(),
        client_dir,
    )
}

/// The address and port a packet in `direction` comes from.
fn endpoint(k: &FlowKey, direction: u8) -> (IpAddr, u16) {
    let (a, port) = k.src(direction);
    let ip = if k.family == FAMILY_V4 {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(*a)
    };
    (ip, port)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{
        matcher::{
            engine::Hit,
            rules::{Kind, Severity},
        },
        proto::fields::Ctx,
    };

    /// What the blocker wrote to the kernel maps.
    #[derive(Default)]
    struct Maps {
        blocked: Vec<(FlowKey, BlockEntry)>,
        quarantined: Vec<QuarantineKey>,
        full: bool,
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Maps>>);

    impl BlockSink for Sink {
        fn block(&mut self, key: &FlowKey, entry: &BlockEntry) -> Result<(), String> {
            let mut m = self.0.lock().unwrap();
            if m.full {
                return Err("no space left".into());
            }
            m.blocked.push((*key, *entry));
            Ok(())
        }
        fn unblock(&mut self, key: &FlowKey) -> Result<(), String> {
            self.0.lock().unwrap().blocked.retain(|(k, _)| k != key);
            Ok(())
        }
        fn quarantine(&mut self, key: &QuarantineKey, _: &BlockEntry) -> Result<(), String> {
            self.0.lock().unwrap().quarantined.push(*key);
            Ok(())
        }
        fn release(&mut self, key: &QuarantineKey) -> Result<(), String> {
            self.0.lock().unwrap().quarantined.retain(|k| k != key);
            Ok(())
        }
    }

    const LAN: u32 = 3;
    const WAN: u32 = 4;

    fn blocker(toml: &str) -> (Blocker, Sink) {
        let settings: BlockSettings = toml::from_str(toml).unwrap();
        let sink = Sink::default();
        let b = Blocker::new(
            settings,
            Some(HashSet::from([LAN])),
            true,
            Box::new(sink.clone()),
        );
        (b, sink)
    }

    /// A finding of `kind` in what 192.0.2.10:`port` sent to 198.51.100.2:80.
    fn finding(kind: Kind, severity: Severity, port: u16, ifindex: u32) -> Finding {
        let c: std::net::Ipv4Addr = "192.0.2.10".parse().unwrap();
        let s: std::net::Ipv4Addr = "198.51.100.2".parse().unwrap();
        let mut ca = [0u8; 16];
        ca[..4].copy_from_slice(&c.octets());
        let mut sa = [0u8; 16];
        sa[..4].copy_from_slice(&s.octets());
        let (key, direction) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &ca, port, &sa, 80);
        Finding {
            hit: Hit {
                rule: 0,
                kind,
                value: "5f4dcc3b5aa765d61d8327deb882cf99".into(),
                ctx: Ctx::Query,
                name: "password".into(),
                message: 0,
                canary: None,
            },
            rule: "qobuz_password_md5".into(),
            severity,
            ts_ns: 1_000_000_000,
            ifindex,
            key,
            direction,
            third_party: false,
            from_client: true,
            service: 1,
            head: None,
            outcome: None,
            crackable: None,
            protocol: None,
        }
    }

    #[test]
    fn a_third_party_finding_blocks_nothing() {
        for mode in ["reset", "quarantine", "block-cleartext"] {
            let (mut b, _) = blocker(&format!("mode = \"{mode}\"\n"));
            let mut f = finding(Kind::PasswordHash, Severity::Critical, 40000, LAN);
            f.third_party = true;
            assert!(
                b.on_finding(&f, "qobuz", Instant::now()).is_empty(),
                "{mode}"
            );
            f.third_party = false;
            assert!(
                !b.on_finding(&f, "qobuz", Instant::now()).is_empty(),
                "{mode}"
            );
        }
    }

    #[test]
    fn reset_blocks_the_flow_once_in_the_client_direction() {
        let (mut b, sink) = blocker("mode = \"reset\"\n");
        let now = Instant::now();
        let f = finding(Kind::PasswordHash, Severity::Critical, 40000, LAN);
        let d = b.on_finding(&f, "qobuz", now);
        assert_eq!(d.len(), 1);
        assert!(d[0].enforced);
        let a = &d[0].active;
        assert_eq!((a.scope, a.reason, a.mode), ("flow", "finding", "reset"));
        assert_eq!(a.client.to_string(), "192.0.2.10");
        assert_eq!(a.expires_ns - a.since_ns, 3600 * 1_000_000_000);
        {
            let m = sink.0.lock().unwrap();
            assert_eq!(m.blocked.len(), 1);
            let (k, e) = m.blocked[0];
            assert_eq!(k, f.key);
            assert_eq!(e.client_dir, f.direction);
            assert_eq!(e.reason, reason::FINDING);
            assert!(e.deadline_ns > mono_now_ns());
        }
        // A second finding on the blocked flow adds nothing.
        assert!(b.on_finding(&f, "qobuz", now).is_empty());
        assert_eq!(b.active(), (1, 0));
        // Expiry ends it in the kernel too.
        assert_eq!(b.expire(now + Duration::from_secs(3599)), 0);
        assert_eq!(b.expire(now + Duration::from_secs(3601)), 1);
        assert!(sink.0.lock().unwrap().blocked.is_empty());
        assert_eq!(b.active(), (0, 0));
    }

    #[test]
    fn a_new_connection_on_a_blocked_flows_ports_is_decided_afresh() {
        let (mut b, sink) = blocker("mode = \"reset\"\n");
        let now = Instant::now();
        let f = finding(Kind::PasswordHash, Severity::Critical, 40000, LAN);
        assert_eq!(b.on_finding(&f, "qobuz", now).len(), 1);
        assert!(!b.restarted(&finding(Kind::PasswordHash, Severity::Critical, 40001, LAN).key));
        assert_eq!(b.active(), (1, 0));
        // The client's SYN on the same ports: the old block ends, here and in
        // the kernel, and the new connection's leak is blocked again.
        assert!(b.restarted(&f.key));
        assert_eq!(b.active(), (0, 0));
        assert!(sink.0.lock().unwrap().blocked.is_empty());
        assert_eq!(b.on_finding(&f, "qobuz", now).len(), 1);
        assert_eq!(sink.0.lock().unwrap().blocked.len(), 1);
    }

    #[test]
    fn only_trigger_kinds_at_the_severity_from_lan_clients_not_allow_listed() {
        let (mut b, sink) = blocker(
            "mode = \"reset\"\nallow_clients = [\"192.0.2.0/28\"]\nkinds = [\"password\"]\n",
        );
        let now = Instant::now();
        let mut f = finding(Kind::Password, Severity::Critical, 40001, LAN);
        assert!(b.on_finding(&f, "qobuz", now).is_empty(), "allow-listed");
        assert_eq!(b.skipped.allow_listed, 1);
        let (mut b, _) = blocker("mode = \"reset\"\n");
        assert!(
            b.on_finding(
                &finding(Kind::Email, Severity::High, 40002, LAN),
                "qobuz",
                now
            )
            .is_empty(),
            "not a trigger kind"
        );
        assert!(
            b.on_finding(
                &finding(Kind::Password, Severity::Medium, 40003, LAN),
                "qobuz",
                now
            )
            .is_empty(),
            "below the severity"
        );
        f.ifindex = WAN;
        assert!(b.on_finding(&f, "qobuz", now).is_empty(), "WAN client");
        assert_eq!(b.skipped.not_lan, 1);
        f.ifindex = LAN;
        f.key.proto = sensor_common::flow::IPPROTO_UDP;
        assert!(b.on_finding(&f, "qobuz", now).is_empty(), "UDP");
        assert_eq!(b.skipped.not_tcp, 1);
        assert!(sink.0.lock().unwrap().blocked.is_empty());
    }

    #[test]
    fn modes_by_service_dry_run_and_quarantine() {
        let (mut b, sink) = blocker(
            "mode = \"dry-run\"\n[services]\ndeezer = \"monitor\"\nqobuz = \"quarantine\"\n",
        );
        let now = Instant::now();
        let f = finding(Kind::AuthToken, Severity::High, 40010, LAN);
        assert!(b.on_finding(&f, "deezer", now).is_empty(), "monitor");
        let d = b.on_finding(&f, "spotify", now);
        assert_eq!(d.len(), 1);
        assert!(!d[0].enforced, "dry-run decides and does not enforce");
        assert_eq!(d[0].active.mode, "dry-run");
        assert!(sink.0.lock().unwrap().blocked.is_empty());
        assert_eq!(b.active(), (0, 0), "not in force");
        let g = finding(Kind::AuthToken, Severity::High, 40011, LAN);
        let d = b.on_finding(&g, "qobuz", now);
        let scopes: Vec<_> = d
            .iter()
            .map(|d| (d.active.scope, d.active.reason))
            .collect();
        assert_eq!(scopes, [("flow", "finding"), ("quarantine", "quarantine")]);
        assert_eq!(sink.0.lock().unwrap().quarantined.len(), 1);
        // Another leak of the same client: its flow is blocked, no new quarantine.
        let h = finding(Kind::AuthToken, Severity::High, 40012, LAN);
        assert_eq!(b.on_finding(&h, "qobuz", now).len(), 1);
        assert_eq!(b.active(), (2, 1));
        // Lifted by id, in the kernel too.
        let q = b
            .list()
            .into_iter()
            .find(|a| a.scope == "quarantine")
            .unwrap();
        assert_eq!(b.lift(q.id).map(|a| a.id), Some(q.id));
        assert!(sink.0.lock().unwrap().quarantined.is_empty());
        assert!(b.lift(q.id).is_none());
        // The quarantine expires after quarantine_secs (900), flows later.
        assert_eq!(b.list().len(), 3, "two flows and the dry-run decision");
    }

    #[test]
    fn a_full_kernel_map_is_an_error_counted_and_nothing_pretends() {
        let (mut b, sink) = blocker("mode = \"reset\"\n");
        sink.0.lock().unwrap().full = true;
        let f = finding(Kind::Password, Severity::High, 40020, LAN);
        assert!(b.on_finding(&f, "qobuz", Instant::now()).is_empty());
        assert_eq!(b.errors, 1);
        assert_eq!(b.active(), (0, 0));
    }

    #[test]
    fn at_capacity_the_oldest_block_makes_room_and_leaves_the_kernel() {
        let (mut b, sink) = blocker("mode = \"reset\"\nmax_blocks = 2\n");
        let now = Instant::now();
        for port in [41000, 41001, 41002] {
            let f = finding(Kind::Password, Severity::High, port, LAN);
            assert_eq!(b.on_finding(&f, "qobuz", now).len(), 1);
        }
        let m = sink.0.lock().unwrap();
        assert_eq!(m.blocked.len(), 2);
        assert!(
            m.blocked
                .iter()
                .all(|(k, _)| k.port_a != 41000 && k.port_b != 41000)
        );
        drop(m);
        assert_eq!(b.evictions()[0].1.cap, 1);
    }

    #[test]
    fn refused_records_become_decisions_and_mark_their_flow() {
        let (mut b, _) = blocker("mode = \"block-cleartext\"\n");
        let frame = crate::fixtures::FrameBuilder::tcp("192.0.2.10", 42000, "198.51.100.2", 80)
            .payload(b"GET / HTTP/1.1\r\n\r\n")
            .build();
        let mut rec = crate::fixtures::record(
            sensor_common::record::RecordKind::Sample,
            flags::FROM_CLIENT | flags::FIRST_PAYLOAD | flags::BLOCKED,
            &frame,
        );
        rec.hdr.service = 1;
        let now = Instant::now();
        let d = b.on_record(&rec, "qobuz", None, now).unwrap();
        assert!(d.enforced);
        assert_eq!(
            (d.active.reason, d.active.mode),
            ("cleartext", "block-cleartext")
        );
        assert!(b.refused(&rec.hdr.flow));
        rec.hdr.flow.port_a += 1;
        rec.hdr.flags = flags::FROM_CLIENT | flags::FIRST_PAYLOAD | flags::WOULD_BLOCK;
        let d = b.on_record(&rec, "qobuz", None, now).unwrap();
        assert!(!d.enforced);
        assert_eq!(d.active.mode, "dry-run");
        assert!(!b.refused(&rec.hdr.flow), "a dry-run flow goes on");
        rec.hdr.flags = flags::FROM_CLIENT;
        assert!(b.on_record(&rec, "qobuz", None, now).is_none());
    }
    #[test]
    fn a_finding_is_blocked_by_the_worker_before_it_is_reported() {
        use crate::{
            capture::{blocks::NoBlocks, record::Record},
            fixtures::{FrameBuilder, record},
            flows::workers::{Report, Workers},
            matcher::{engine::RuleSet, rules},
        };
        use sensor_common::record::{RecordKind, flags as rflags};
        let set = Arc::new(RuleSet::compile(rules::builtin()).unwrap());
        let settings = toml::from_str("mode = \"reset\"").unwrap();
        let blocker: SharedBlocker = Arc::new(std::sync::Mutex::new(Blocker::new(
            settings,
            None,
            true,
            Box::new(NoBlocks),
        )));
        let (mut w, reports) = Workers::start(
            1,
            &set,
            &Arc::default(),
            Duration::from_mins(1),
            100,
            1 << 16,
            crate::proto::coding::Limits::default(),
            Some(&blocker),
            None,
        )
        .unwrap();
        let mut r: Record = record(
            RecordKind::Sample,
            rflags::FROM_CLIENT | rflags::FIRST_PAYLOAD,
            &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
                .payload("GET /x?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n")
                .build(),
        );
        r.hdr.service = 1;
        r.hdr.ts_ns = crate::capture::clock::mono_now_ns();
        assert_eq!((w.dispatch(r), w.flush()), (0, 0));
        let rep = reports.recv_timeout(Duration::from_secs(10)).unwrap();
        // The block is in the table by the time its finding arrives.
        assert_eq!(lock(&blocker).list().len(), 1);
        let Report::Found(v) = rep else {
            panic!("expected a finding first: {rep:?}");
        };
        let (f, b) = &v[0];
        assert_eq!(f.hit.kind, crate::matcher::rules::Kind::PasswordHash);
        let b = b.as_ref().expect("decided on the worker");
        assert_eq!(b.decisions.len(), 1);
        assert!(b.decisions[0].enforced);
        assert!(b.latency_ns.is_some());
        w.shutdown();
    }
}
