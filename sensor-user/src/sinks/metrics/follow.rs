//! Followed apps (`follow_apps`): findings by destination, the flows
//! followed, how long following took, and the third-party hosts findings
//! went to. Host labels are
//! bounded (`sinks::destinations`): plain names, the 20 busiest, else `other`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub service: String,
    /// `service` (the service's own hosts) or `third_party` (a followed flow).
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub service: String,
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowedLabels {
    pub service: String,
}

pub struct FollowMetrics {
    pub by_destination: Family<DestinationLabels, Counter>,
    pub followed: Family<FollowedLabels, Counter>,
    pub hosts: Family<HostLabels, Gauge>,
    /// The follow window: probe seen → flow in `FLOWS`.
    pub latency: Histogram,
}

impl FollowMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let by_destination = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "leakwatch_findings_by_destination",
            "Leaks found, by where they went: the service itself or a third party (follow_apps)",
            by_destination.clone(),
        );
        let followed = Family::<FollowedLabels, Counter>::default();
        registry.register(
            "leakwatch_followed_flows",
            "Cleartext flows to unwatched hosts followed because their request named the service's app",
            followed.clone(),
        );
        let hosts = Family::<HostLabels, Gauge>::default();
        registry.register(
            "leakwatch_third_party_findings",
            "Findings in the last 24 h per third-party host of followed apps (the 20 busiest; else other)",
            hosts.clone(),
        );
        let latency = super::seconds_histogram(
            registry,
            (
                "leakwatch_follow_latency",
                "Time from the kernel seeing a probe whose request named an app to its flow being followed in the kernel map (its packets in between are not sampled)",
            ),
            &super::WINDOW_BUCKETS,
        );
        Self {
            by_destination,
            followed,
            hosts,
            latency,
        }
    }

    /// Zero series for every service (and destination): alerts and
    /// dashboards see them before the first finding.
    pub fn init_services(&self, services: &[String]) {
        for s in services {
            let _ = self
                .followed
                .get_or_create(&FollowedLabels { service: s.clone() });
            for d in ["service", "third_party"] {
                let _ = self.by_destination.get_or_create(&DestinationLabels {
                    service: s.clone(),
                    destination: d.into(),
                });
            }
        }
    }

    /// Replaces the host series.
    pub fn set_hosts(&self, series: Vec<([String; 2], u64)>) {
        self.hosts.clear();
        for ([service, host], n) in series {
            self.hosts
                .get_or_create(&HostLabels { service, host })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
