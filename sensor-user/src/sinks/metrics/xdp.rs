//! The XDP outcome counters as a collector: read from the kernel's per-CPU
//! maps at scrape time (or the replay sampler's counts), never copied.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::MetricType,
};
use sensor_common::counters::{Counter as XdpCounter, NUM_COUNTERS};

use crate::capture::stats::Stats;

/// Where the XDP outcome counters come from.
pub(super) enum Source {
    /// The kernel's per-CPU maps, per interface slot.
    Kernel {
        stats: Mutex<Stats>,
        slots: Vec<(u32, String)>,
    },
    /// The replay sampler's, under one label.
    Sampler {
        label: String,
        counts: Arc<Mutex<[u64; NUM_COUNTERS]>>,
    },
}

pub(super) struct XdpCollector {
    pub(super) source: Source,
}

impl fmt::Debug for XdpCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpCollector").finish_non_exhaustive()
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut rows = Vec::new();
        match &self.source {
            Source::Kernel { stats, slots } => {
                let stats = stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (ifindex, label) in slots {
                    match stats.snapshot(*ifindex) {
                        Ok(s) => rows.push((label.clone(), s)),
                        Err(e) => log::warn!("reading XDP counters of {label}: {e}"),
                    }
                }
            }
            Source::Sampler { label, counts } => {
                let counts = counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let s = XdpCounter::ALL
                    .iter()
                    .map(|&c| (c, counts[c as usize]))
                    .collect();
                rows.push((label.clone(), s));
            }
        }
        for (name, help, outcome) in [
            (
                "leakwatch_xdp_packets",
                "Packets seen by the XDP program, by interface and outcome (every packet ends in exactly one reason)",
                true,
            ),
            (
                "leakwatch_xdp_notes",
                "Side events in the XDP program (e.g. snap_truncated: a record carries fewer bytes than the frame)",
                false,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, snapshot) in &rows {
                for (c, v) in snapshot.iter().filter(|(c, _)| c.is_outcome() == outcome) {
                    let labels = [("interface", label.as_str()), ("reason", c.name())];
                    let counter = prometheus_client::metrics::counter::ConstCounter::new(*v);
                    counter.encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
