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
    pub flow: Option<FlowKey>,
    #[serde(skip)]
    pub service_id: u32,
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
    /// The blocked flow (for quarantine: the flow that caused it).
    pub key: FlowKey,
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
    /// Flows whose first payload the kernel refused: their findings are
    /// `"blocked": true` (the matcher reports them after the record).
    refused: FlowTable<FlowKey, ()>,
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

    pub fn settings(&self) -> &BlockSettings {
        &self.settings
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
        if !s.kinds.contains(&f.hit.kind) || f.severity < s.min_severity {
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
        if self.flows.contains_key(&f.key) {
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
            flow: Some(f.key),
            service_id: f.service,
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
                key: f.key,
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
                flow: None,
                service_id: f.service,
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
                out.push(Decision {
                    enforced,
                    active,
                    key: f.key,
                });
            }
        }
        out
    }

    /// A record the kernel flagged: its cleartext was refused (`BLOCKED`) or a
    /// dry-run policy would have refused it (`WOULD_BLOCK`). `service`: its name.
    pub fn on_record(&mut self, rec: &Record, service: &str, now: Instant) -> Option<Decision> {
        let h = &rec.hdr;
        let enforced = h.flags & flags::BLOCKED != 0;
        if !enforced && h.flags & flags::WOULD_BLOCK == 0 {
            return None;
        }
        self.refused.insert(h.flow, (), now);
        let client = endpoint(&h.flow, h.direction).0;
        let q = quarantine_key(client, h.service);
        let (reason, mode) = if enforced && self.quarantined.contains_key(&q) {
            (Reason::Quarantine, BlockMode::Quarantine)
        } else if enforced {
            (Reason::Cleartext, BlockMode::BlockCleartext)
        } else {
            (Reason::Cleartext, BlockMode::DryRun)
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
            flow: Some(h.flow),
            service_id: h.service,
            enforced,
        };
        Some(Decision {
            enforced,
            active,
            key: h.flow,
        })
    }

    /// Whether the flow's first payload was refused (or, dry-run, would be).
    pub fn refused(&self, key: &FlowKey) -> bool {
        self.refused.contains_key(key)
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
    BlockEntry {
        deadline_ns: mono_now_ns().saturating_add(secs_ns(secs)),
        service,
        reason: reason.code(),
        flags: 0,
        client_dir,
        _pad: 0,
    }
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
