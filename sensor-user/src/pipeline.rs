//! The record pipeline: one thread, records in order, every stage fed from here.
//!
//! Dns → targeting (learn addresses) · Probe → targeting (SNI/Host) ·
//! Sample/Meta → posture (service, transport, bytes) → metrics and events.

use std::{sync::Arc, time::Instant};

use crate::{
    capture::{clock::Clock, ring::RecordResult},
    flows::posture::{Output, Posture},
    sinks::{
        events::{Event, EventLog},
        metrics::{
            EventLabels, FamilyLabels, FlowBytesLabels, FlowLabels, KindLabels, Metrics,
            ReasonLabels, ResultLabels, TlsLabels, WatchedLabels,
        },
        records::{RecordLine, RecordLog},
    },
    targets::learning::{Targeting, WatchSink},
};
use sensor_common::record::RecordKind;

pub struct Pipeline<W: WatchSink> {
    pub targeting: Targeting<W>,
    posture: Posture,
    metrics: Arc<Metrics>,
    events: Option<EventLog>,
    dump: Option<RecordLog>,
    ifaces: Vec<(u32, String)>,
    clock: Clock,
    evicted_seen: [u64; 2],
    out: Vec<Output>,
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
        let p = Self {
            targeting,
            posture,
            metrics,
            events,
            dump,
            ifaces,
            clock: Clock::new(),
            evicted_seen: [0; 2],
            out: Vec::new(),
        };
        p.publish_watched();
        p
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
        self.metrics
            .ring_records
            .get_or_create(&KindLabels {
                kind: rec.kind.name().into(),
            })
            .inc();
        if let Some(log) = self.dump.as_mut() {
            let iface = self
                .ifaces
                .iter()
                .find(|(i, _)| *i == rec.hdr.ifindex)
                .map_or("unknown", |(_, n)| n.as_str());
            let line = RecordLine::new(&rec, iface, self.targeting.ids().name(rec.hdr.service));
            if let Err(e) = log.write(&line) {
                log::error!("writing --dump-records: {e}; no more records are dumped");
                self.dump = None;
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
                self.publish_watched();
            }
            RecordKind::Probe => {
                let o = self.targeting.on_probe(&rec, now);
                self.metrics
                    .probes
                    .get_or_create(&ResultLabels {
                        result: o.label().into(),
                    })
                    .inc();
                self.publish_watched();
            }
            RecordKind::Sample | RecordKind::Meta => {
                let mut out = std::mem::take(&mut self.out);
                self.posture.on_record(&rec, now, &mut out);
                self.emit(&mut out);
                self.out = out;
            }
        }
    }

    /// Once a second or so: expiries and idle flows.
    pub fn tick(&mut self, now: Instant) {
        self.targeting.sweep(now);
        self.publish_watched();
        let mut out = std::mem::take(&mut self.out);
        self.posture.sweep(now, &mut out);
        self.emit(&mut out);
        self.out = out;
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

    fn emit(&mut self, out: &mut Vec<Output>) {
        let evicted = self.targeting.evicted();
        for (i, fam) in ["ipv4", "ipv6"].into_iter().enumerate() {
            let d = evicted[i] - self.evicted_seen[i];
            if d > 0 {
                self.metrics
                    .learned_evicted
                    .get_or_create(&FamilyLabels { family: fam.into() })
                    .inc_by(d);
            }
        }
        self.evicted_seen = evicted;
        for o in out.drain(..) {
            match o {
                Output::Flow { service, transport } => {
                    let l = FlowLabels {
                        service: self.service(service),
                        transport: transport.name().into(),
                    };
                    self.metrics.flows.get_or_create(&l).inc();
                }
                Output::Bytes {
                    service,
                    transport,
                    to_server,
                    bytes,
                } => {
                    let l = FlowBytesLabels {
                        service: self.service(service),
                        transport: transport.name().into(),
                        direction: if to_server { "to_server" } else { "to_client" }.into(),
                    };
                    self.metrics.flow_bytes.get_or_create(&l).inc_by(bytes);
                }
                Output::Tls {
                    service,
                    version,
                    sni,
                } => {
                    log::debug!(
                        "TLS flow of {} ({version}, sni {sni:?})",
                        self.service(service)
                    );
                    let l = TlsLabels {
                        service: self.service(service),
                        version: version.into(),
                    };
                    self.metrics.tls_flows.get_or_create(&l).inc();
                }
                Output::Cleartext { record, http } => {
                    let ev = Event::cleartext_flow(
                        &record,
                        self.clock.rfc3339(record.hdr.ts_ns),
                        self.iface(record.hdr.ifindex),
                        &self.service(record.hdr.service),
                        http.as_ref(),
                    );
                    self.write_event(&ev);
                }
            }
        }
    }

    fn write_event(&mut self, ev: &Event) {
        self.metrics
            .events
            .get_or_create(&EventLabels {
                event_type: ev.event_type.into(),
            })
            .inc();
        if let Some(log) = self.events.as_mut()
            && let Err(e) = log.write(ev)
        {
            log::error!("writing --events: {e}; no more events are written");
            self.events = None;
        }
    }
}
