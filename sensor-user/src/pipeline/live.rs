//! `leakwatch run`: load the XDP program, attach it, assemble the pipeline from
//! the config, and serve until a stop signal. The program is attached through
//! bpf_link, so it is detached when the process ends, however it ends: blocking
//! fails open, since the block maps are only read by the attached program.

use std::{collections::HashSet, path::Path, sync::Arc, thread};

use anyhow::Context as _;
use sensor_common::maps::DEFAULT_WATCH_ENTRIES;

use super::{
    assemble::{Loaded, Matching, Parts, assemble, output},
    daemon::ControlSocket,
};
use crate::{
    capture::{
        clock::Clock,
        loader::{self, MapSizes, Sensor, XDP_OBJECT},
        privilege,
    },
    config::Role,
    sinks::metrics::{AttachLabels, Metrics},
    targets::StaticWatch,
};

/// What `run` needs besides the config (whose `interfaces`, `xdp_mode` and
/// `control_socket` the flags already overrode).
pub struct Attach<'a> {
    pub watch: &'a [StaticWatch],
    pub state_dir: &'a Path,
    /// The command line's flags, laid again over a reloaded config.
    pub flags: Arc<dyn Fn(&mut crate::config::Config) + Send + Sync>,
}

pub fn run(a: &Attach<'_>, loaded: &Loaded) -> anyhow::Result<()> {
    let c = &loaded.config;
    // The one sentence that matters to an unprivileged user comes first.
    let missing = privilege::missing();
    if !missing.is_empty() {
        return Err(loader::LoadError::NotPrivileged(missing.join(", ")).into());
    }
    if c.interfaces.is_empty() {
        anyhow::bail!(
            "no interface to attach to: give --iface NAME[:lan|wan] or set `interfaces` in the config"
        );
    }
    // Fail on the admin's typos before touching the kernel.
    for iface in &c.interfaces {
        loader::ifindex(&iface.name)?;
    }
    if c.blocking.any() && !c.interfaces.iter().any(|i| i.role == Role::Lan) {
        log::warn!(
            "blocking mode {} is set, but no interface has the lan role: nothing can be blocked (--iface NAME:lan)",
            c.blocking.mode
        );
    }
    crate::capture::sched::set(c.realtime_priority)?;
    let dump = c
        .dump_records
        .as_deref()
        .map(|p| output(p, "dump_records", c.output_group.as_deref()))
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
    let (listener_unix, _socket_file) = super::control::bind(&c.control_socket)?;
    let control = ControlSocket {
        listener: listener_unix,
        path: c.control_socket.clone(),
    };
    let sizes = MapSizes {
        ring_bytes: c.ring_bytes,
        flow_entries: c.flow_table_size,
        watch_entries: DEFAULT_WATCH_ENTRIES,
        ..MapSizes::default()
    };
    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &loaded.kernel_config())?;
    let ifaces = c
        .interfaces
        .iter()
        .map(|i| Ok((loader::ifindex(&i.name)?, i.name.clone())))
        .collect::<Result<Vec<_>, loader::LoadError>>()?;
    let mut blocks = sensor.take_blocks()?;
    let mut lan = HashSet::new();
    for (iface, (ifindex, _)) in c.interfaces.iter().zip(&ifaces) {
        if iface.role == Role::Lan {
            blocks
                .set_role(*ifindex, true)
                .with_context(|| format!("interface {}: setting its role", iface.name))?;
            lan.insert(*ifindex);
        }
    }
    for net in &c.blocking.allow_clients {
        blocks
            .allow(*net)
            .with_context(|| format!("blocking.allow_clients {net}"))?;
    }
    let mut metrics = Metrics::new();
    metrics.register_xdp_stats(sensor.take_stats()?, &ifaces);
    let metrics = Arc::new(metrics);
    let ring = sensor.take_rings()?;
    log::info!(
        "ring buffers: {} of {} bytes, one per online CPU (--ring-bytes {} in all)",
        ring.len(),
        ring.bytes_each(),
        c.ring_bytes
    );
    let kernel_config = sensor.take_config()?;
    let threads = c
        .matcher_threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from));
    // Static prefixes go into the maps before the program sees a packet.
    let (pipeline, reports) = assemble(Parts {
        loaded,
        rules,
        state_dir: a.state_dir,
        watch: a.watch,
        sink: sensor.take_watch()?.with_flows(sensor.take_flows()?),
        metrics: Arc::clone(&metrics),
        ifaces,
        matching: Matching::Sharded(threads),
        dump,
        clock: Clock::new(),
        adhoc_services: false,
        blocks: Some((Box::new(blocks), lan)),
    })
    .context("assembling the pipeline")?;
    let pipeline = pipeline
        .with_kernel_config(kernel_config)
        .with_learned_file(a.state_dir.join(crate::targets::store::FILE));
    // A reload re-reads the config and the files it names; without a config,
    // the canaries file a flag named.
    let reload = (loaded.path.is_some()
        || c.canaries_file.is_some()
        || c.advisories_file.is_some())
    .then(|| {
        Arc::new(super::reload::ReloadSource {
            path: loaded.path.clone(),
            apply: Arc::clone(&a.flags),
            state_dir: a.state_dir.to_owned(),
        })
    });
    if c.blocking.any() {
        log::info!(
            "blocking: {} (see [blocking] for per-service modes)",
            c.blocking.mode
        );
    }
    for iface in &c.interfaces {
        let at = sensor.attach(&iface.name, c.xdp_mode)?;
        log::info!(
            "attached to {} (ifindex {}, {}) in {} mode",
            at.iface,
            at.ifindex,
            iface.role.name(),
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
    pipeline.serve(ring, reports, listener, Some(control), reload)?;
    sensor.detach_all();
    Ok(())
}
