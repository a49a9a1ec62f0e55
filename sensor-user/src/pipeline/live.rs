//! `leakwatch run`: load the XDP program, attach it, assemble the pipeline from
//! the config, and serve until a stop signal. The program is attached through
//! bpf_link, so it is detached when the process ends, however it ends.

use std::{path::Path, sync::Arc, thread};

use anyhow::Context as _;
use sensor_common::maps::DEFAULT_WATCH_ENTRIES;

use super::assemble::{Loaded, Matching, Parts, assemble, output};
use crate::{
    capture::{
        clock::Clock,
        loader::{self, AttachMode, MapSizes, Sensor, XDP_OBJECT},
        privilege,
    },
    sinks::metrics::{AttachLabels, Metrics},
    targets::StaticWatch,
};

/// What `run` attaches to, besides the config.
pub struct Attach<'a> {
    pub ifaces: &'a [String],
    pub mode: AttachMode,
    pub watch: &'a [StaticWatch],
    pub state_dir: &'a Path,
}

pub fn run(a: &Attach<'_>, loaded: &Loaded) -> anyhow::Result<()> {
    let c = &loaded.config;
    // The one sentence that matters to an unprivileged user comes first.
    if !privilege::can_load_xdp() {
        return Err(loader::LoadError::NotPrivileged.into());
    }
    // Fail on the admin's typos before touching the kernel.
    for iface in a.ifaces {
        loader::ifindex(iface)?;
    }
    let dump = c
        .dump_records
        .as_deref()
        .map(|p| output(p, "dump_records"))
        .transpose()?;
    let rules = Arc::new(loaded.rules(Some(a.state_dir))?);
    log::info!(
        "{} leak rules loaded (version {})",
        rules.rules().count(),
        rules.version
    );
    // Every listener is bound before the program is attached: a taken port
    // fails the start before traffic is touched.
    let listener = std::net::TcpListener::bind(c.metrics_addr)
        .with_context(|| format!("metrics_addr {}: cannot listen", c.metrics_addr))?;
    let sizes = MapSizes {
        ring_bytes: c.ring_bytes,
        flow_entries: c.flow_table_size,
        watch_entries: DEFAULT_WATCH_ENTRIES,
        ..MapSizes::default()
    };
    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &loaded.kernel_config())?;
    let ifaces = a
        .ifaces
        .iter()
        .map(|i| Ok((loader::ifindex(i)?, i.clone())))
        .collect::<Result<Vec<_>, loader::LoadError>>()?;
    let mut metrics = Metrics::new();
    metrics.register_xdp_stats(sensor.take_stats()?, &ifaces);
    let metrics = Arc::new(metrics);
    let ring = sensor.take_ring()?;
    let threads = c
        .matcher_threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from));
    // Static prefixes go into the maps before the program sees a packet.
    let (pipeline, reports) = assemble(Parts {
        loaded,
        rules,
        state_dir: a.state_dir,
        watch: a.watch,
        sink: sensor.take_watch()?,
        metrics: Arc::clone(&metrics),
        ifaces,
        matching: Matching::Sharded(threads),
        dump,
        clock: Clock::new(),
        adhoc_services: false,
    })
    .context("assembling the pipeline")?;
    for iface in a.ifaces {
        let at = sensor.attach(iface, a.mode)?;
        log::info!(
            "attached to {} (ifindex {}) in {} mode",
            at.iface,
            at.ifindex,
            at.mode
        );
        metrics
            .attached
            .get_or_create(&AttachLabels {
                interface: at.iface.clone(),
                mode: at.mode.to_string(),
            })
            .set(1);
    }
    pipeline.serve(ring, reports, listener)?;
    sensor.detach_all();
    Ok(())
}
