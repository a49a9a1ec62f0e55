//! Routing to the blocker (`sinks::block`): findings and flagged records in;
//! `block` and `would_block` events and the block metrics out; expiry each tick;
//! the control socket's list and lift.

use std::time::Instant;

use sensor_common::record::{RecordKind, flags};

use super::{
    Pipeline,
    control::{Listed, Reply, Request},
};
use crate::{
    capture::{clock::Clock, record::Record},
    matcher::finding::Finding,
    proto::http::parse_request_head,
    sinks::{
        block::{self, Blocked, Blocker, Decision, SharedBlocker},
        events::{BlockInfo, Event, flow_id},
        metrics::{Metrics, ReasonLabels, block::BlockLabels, block::BlockMetrics},
    },
    targets::learning::WatchSink,
};

impl<W: WatchSink> Pipeline<W> {
    /// Adds blocking decisions.
    pub fn with_blocker(mut self, b: SharedBlocker) -> Self {
        self.blocker = Some(b);
        self
    }

    /// A record the kernel refused (or would have): its `block` or
    /// `would_block` event.
    pub(super) fn block_record(&mut self, rec: &Record, now: Instant) {
        let service = self.service(rec.hdr.service);
        let Some(b) = self.blocker.as_deref() else {
            return;
        };
        let head = parse_request_head(rec.payload());
        let host = head.as_ref().and_then(|h| h.host.as_deref());
        let Some(d) = block::lock(b).on_record(rec, &service, host, now) else {
            return;
        };
        let mut base = Event::new(
            "block",
            self.clock.rfc3339(rec.hdr.ts_ns),
            rec.src(),
            rec.dst(),
            true,
            self.iface(rec.hdr.ifindex),
            &service,
            head.as_ref(),
        );
        base.host = Some(self.host.clone());
        base.flow_id = Some(flow_id(&rec.hdr.flow));
        let ev = decision_event(&d, &base, &self.clock, &self.metrics);
        self.write_event(&ev);
    }

    /// A client's bare SYN on a known flow (`policy::restart`): a new
    /// connection on the old one's ports; its block, if any, ends.
    pub(super) fn block_restart(&mut self, rec: &Record) {
        let h = &rec.hdr;
        if rec.kind == RecordKind::Meta
            && h.is_bare_syn()
            && h.flags & flags::FROM_CLIENT != 0
            && let Some(b) = self.blocker.as_deref()
        {
            block::lock(b).restarted(&h.flow);
        }
    }

    /// Expires blocks and brings the block metrics up to date.
    pub(super) fn block_tick(&mut self, now: Instant) {
        if let Some(b) = self.blocker.as_deref() {
            block::lock(b).expire(now);
        }
        self.publish_blocks();
    }

    /// The block gauges and counters, from the blocker's state.
    pub(super) fn publish_blocks(&self) {
        let Some(b) = self.blocker.as_deref() else {
            return;
        };
        let b = block::lock(b);
        let m = &self.metrics.blocking;
        let (flows, quarantines) = b.active();
        for (scope, n) in [("flow", flows), ("quarantine", quarantines)] {
            m.active
                .get_or_create(&crate::sinks::metrics::block::ScopeLabels {
                    scope: scope.into(),
                })
                .set(n as i64);
        }
        let s = b.skipped;
        for (reason, n) in [
            ("not_lan", s.not_lan),
            ("allow_listed", s.allow_listed),
            ("not_tcp", s.not_tcp),
        ] {
            BlockMetrics::set_total(
                &m.skipped.get_or_create(&ReasonLabels {
                    reason: reason.into(),
                }),
                n,
            );
        }
        BlockMetrics::set_total(&m.errors, b.errors);
        for (name, e) in b.evictions() {
            self.metrics.set_evictions(name, e);
        }
    }

    /// A control-socket request.
    pub fn control(&mut self, req: &Request) -> Reply {
        if *req == Request::Apps {
            return Reply::Apps(self.app_rows());
        }
        let Some(b) = self.blocker.as_deref() else {
            return Reply::Error("blocking is not set up in this sensor".into());
        };
        let mut b = block::lock(b);
        match req {
            Request::Apps => Reply::Apps(self.app_rows()),
            Request::List => Reply::Blocks(
                b.list()
                    .into_iter()
                    .map(|a| Listed::new(&a, &self.clock))
                    .collect(),
            ),
            Request::Lift { id } => match b.lift(*id) {
                Some(a) => {
                    log::info!(
                        "block {id} lifted ({} {} of {} to {})",
                        a.scope,
                        a.reason,
                        a.client,
                        a.service
                    );
                    Reply::Lifted(Listed::new(&a, &self.clock))
                }
                None => Reply::Error(format!("no block {id} (see `leakwatch blocks list`)")),
            },
        }
    }
}

/// The `block`/`would_block` events of a finding's decisions (`blocked`: made
/// by the matcher worker; else decided here), built on its `leak` event
/// (client → server, interface, service, flow id, kind, rule, severity,
/// fingerprint; not its evidence).
pub(super) fn finding_events(
    b: &std::sync::Mutex<Blocker>,
    metrics: &Metrics,
    clock: &Clock,
    (f, blocked): (&Finding, Option<Blocked>),
    service: &str,
    leak: &Event,
    now: Instant,
) -> Vec<Event> {
    let mut base = leak.clone();
    base.evidence = None;
    base.context = None;
    base.outcome = None;
    base.crackable = None;
    base.blocked = None;
    let blocked = blocked.unwrap_or_else(|| block::decide(b, f, service, now));
    if let Some(ns) = blocked.latency_ns {
        metrics.blocking.latency.observe(ns as f64 / 1e9);
    }
    blocked
        .decisions
        .iter()
        .map(|d| decision_event(d, &base, clock, metrics))
        .collect()
}

/// The event of one decision, counted.
fn decision_event(d: &Decision, base: &Event, clock: &Clock, metrics: &Metrics) -> Event {
    let a = &d.active;
    let labels = BlockLabels {
        service: a.service.clone(),
        reason: a.reason.into(),
        mode: a.mode.into(),
    };
    let m = &metrics.blocking;
    if d.enforced {
        m.blocks.get_or_create(&labels).inc();
    } else {
        m.would_block.get_or_create(&labels).inc();
    }
    let mut ev = base.clone();
    ev.event_type = if d.enforced { "block" } else { "would_block" };
    ev.block = Some(BlockInfo {
        id: a.id,
        scope: a.scope,
        reason: a.reason,
        mode: a.mode,
        expires: (a.expires_ns != a.since_ns).then(|| clock.rfc3339(a.expires_ns)),
    });
    ev
}
