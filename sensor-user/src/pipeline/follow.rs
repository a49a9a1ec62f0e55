//! Following apps (`follow_apps`): a probed request that names a catalog app
//! makes its flow followed (inserted into the kernel's `FLOWS` under the
//! app's service id, so the rest of it is sampled); findings say where they
//! went (`destination`, `destination_host`) and feed the third-party metrics.

use sensor_common::{flow::FlowState, policy::followed_flow, record::flags};

use super::Pipeline;
use crate::{
    capture::record::Record,
    matcher::finding::Finding,
    proto::http,
    sinks::{
        destinations::Destinations,
        events::Event,
        metrics::{
            Metrics,
            follow::{DestinationLabels, FollowedLabels},
        },
    },
    targets::{follow::Follower, learning::WatchSink},
};

/// What following keeps between records.
#[derive(Default)]
pub struct Following {
    follower: Follower,
    destinations: Destinations,
    /// The latest record time seen here (expiry runs on record time, so replay
    /// expires as live does).
    latest_ns: u64,
}

/// The probe record `rec` as its flow's first sample, under `service`.
pub(super) fn as_sample(mut rec: Record, service: u32, extra: u16) -> Record {
    rec.kind = sensor_common::record::RecordKind::Sample;
    rec.hdr.kind = rec.kind as u8;
    rec.hdr.service = service;
    rec.hdr.flags |= flags::FROM_CLIENT | extra;
    rec
}

/// Where finding `f` of `service` went, into its event and the metrics.
pub(super) fn destination(
    metrics: &Metrics,
    following: &mut Following,
    (f, service): (&Finding, &str),
    ev: &mut Event,
) {
    let d = if f.third_party {
        "third_party"
    } else {
        "service"
    };
    ev.destination = Some(d);
    metrics
        .follow
        .by_destination
        .get_or_create(&DestinationLabels {
            service: service.to_owned(),
            destination: d.into(),
        })
        .inc();
    if f.third_party {
        let host = f.head.as_ref().and_then(|h| h.host.clone());
        following.latest_ns = following.latest_ns.max(f.ts_ns);
        following
            .destinations
            .record(service, host.as_deref(), f.ts_ns);
        ev.destination_host = host;
    }
}

impl<W: WatchSink> Pipeline<W> {
    /// A probe's first cleartext payload to an unwatched host: with
    /// `follow_apps`, when its request names a catalog app, the flow is
    /// followed from now on and its service id returned. Only the probe's
    /// payload precedes the insert; what passed in between is not seen.
    pub(super) fn follow_probe(&mut self, rec: &Record) -> Option<u32> {
        let head_bytes = match &self.config {
            Some(c) if c.follow_apps => c.head_bytes,
            _ => return None,
        };
        let head = http::parse_request_head(rec.payload())?;
        let client = self.client_id(rec.src().0)?;
        let ts = rec.hdr.ts_ns;
        let f = &mut self.following;
        f.latest_ns = f.latest_ns.max(ts);
        let app = f
            .follower
            .app_of(self.targeting.catalog(), client, &head, ts)?;
        let service = self.targeting.ids().id_of(&app.service)?;
        let st: FlowState = followed_flow(
            head_bytes,
            service,
            rec.hdr.direction,
            ts,
            rec.payload().len() as u32,
        );
        if let Err(e) = self.targeting.sink_mut().follow(&rec.hdr.flow, &st) {
            // The probe itself is still matched; the rest of the flow is not seen.
            log::warn!("following a flow of the {} app: {e}", app.app);
            return Some(service);
        }
        if self.targeting.sink().live() {
            let ns = crate::capture::clock::mono_now_ns().saturating_sub(ts);
            self.metrics.follow.latency.observe(ns as f64 / 1e9);
        }
        log::debug!(
            "following a flow of the {} app to {}",
            app.app,
            head.host.as_deref().unwrap_or("?")
        );
        self.metrics
            .follow
            .followed
            .get_or_create(&FollowedLabels {
                service: app.service,
            })
            .inc();
        Some(service)
    }

    /// Once a second: forgets what aged out, refreshes the host gauge.
    pub(super) fn export_follow(&mut self) {
        let f = &mut self.following;
        f.follower.sweep(f.latest_ns);
        f.destinations.sweep(f.latest_ns);
        self.metrics.follow.set_hosts(f.destinations.series());
        for (name, e) in [f.follower.evictions(), f.destinations.evictions()] {
            self.metrics.set_evictions(name, e);
        }
    }
}
