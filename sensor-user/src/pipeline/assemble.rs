//! One assembly for `run` and `replay`: a loaded config in, a pipeline out.
//! Both commands build their pipeline here, from the same keys, so a capture
//! replayed with the live sensor's config behaves like the sensor.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use sensor_common::config::{Config as KernelConfig, config_flags};

use super::{Engine, MatchStage, Pipeline};
use crate::{
    capture::{
        blocks::{BlockSink, NoBlocks},
        clock::Clock,
    },
    config::Config,
    flows::{posture::Posture, streams::StreamTable, workers::Workers},
    matcher::{
        engine::RuleSet,
        evidence::{EvidenceMode, Fingerprinter, ReplayDetector},
        finding::Services,
        rules,
    },
    sinks::{block::Blocker, jsonl::JsonLines, metrics::Metrics, records::RecordLog},
    targets::{
        StaticWatch,
        catalog::Catalog,
        learning::{Targeting, WatchSink},
    },
};

/// A config file (or the defaults), where it came from, and its catalog.
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    pub catalog: Catalog,
    /// A hash of the file's bytes (`leakwatch_config_info`); "none" without one.
    pub hash: String,
}

impl Loaded {
    /// Reads and checks the file at `path` (defaults without one).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let config = match path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let hash = path
            .and_then(|p| std::fs::read(p).ok())
            .map_or_else(|| "none".to_owned(), |b| file_hash(&b));
        let mut catalog = Catalog::builtin();
        let src = path.map_or_else(
            || "the built-in catalog".to_owned(),
            |p| p.display().to_string(),
        );
        catalog
            .extend(config.services.clone())
            .with_context(|| format!("services in {src}"))?;
        config
            .blocking
            .check(|id| catalog.services().iter().any(|s| s.id == id))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("[blocking] in {src}"))?;
        Ok(Self {
            config,
            path: path.map(Path::to_path_buf),
            catalog,
            hash,
        })
    }

    /// The built-in rules plus the config's, compiled (with the compiled-database
    /// cache in `cache`, when given).
    pub fn rules(&self, cache: Option<&Path>) -> anyhow::Result<RuleSet> {
        let mut all = rules::builtin();
        all.extend(self.config.rules.clone());
        let src = self.path.as_deref().map_or_else(
            || "the built-in rules".to_owned(),
            |p| format!("the built-in rules and {}", p.display()),
        );
        let set = match cache {
            Some(dir) => RuleSet::compile_cached(all, dir),
            None => RuleSet::compile(all),
        }
        .with_context(|| format!("compiling {src}"))?;
        let Some(path) = &self.config.canaries_file else {
            return Ok(set);
        };
        let canaries = crate::matcher::canaries::load(path)?;
        let n = canaries.len();
        let set = set.with_canaries(canaries)?;
        log::info!("{n} canaries registered from {}", path.display());
        Ok(set)
    }

    /// The advisories file's entries (none without one).
    pub fn advisories(&self) -> anyhow::Result<crate::sinks::advisories::Advisories> {
        let Some(path) = &self.config.advisories_file else {
            return Ok(crate::sinks::advisories::Advisories::default());
        };
        let known = |id: &str| self.catalog.services().iter().any(|s| s.id == id);
        let a = crate::sinks::advisories::Advisories::load(path, known)?;
        log::info!("{} advisories from {}", a.0.len(), path.display());
        Ok(a)
    }

    /// What the XDP program (or its userspace twin) is configured with.
    pub fn kernel_config(&self) -> KernelConfig {
        let c = &self.config;
        let mut k = KernelConfig {
            head_bytes: c.head_bytes,
            tail_every: c.tail_every,
            new_flows_per_source: c.new_flows_per_source,
            vxlan_port: c.vxlan_port,
            ..KernelConfig::default()
        };
        // `Config::check` bounded the list to the kernel's slots.
        k.probe_ports = [0; sensor_common::config::MAX_PROBE_PORTS];
        for (slot, p) in k.probe_ports.iter_mut().zip(&c.probe_ports) {
            *slot = *p;
        }
        if !c.dns {
            k.flags &= !config_flags::DNS;
        }
        if !c.probe {
            k.flags &= !config_flags::PROBE;
        }
        if c.blocking.any() {
            k.flags |= config_flags::BLOCK;
        }
        if c.follow_apps {
            k.flags |= config_flags::FOLLOW;
        }
        k
    }

    /// Flow idle timeout.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.config.targets.flow_idle_secs)
    }
}

/// 48 bits of FNV-1a over a file's bytes, in hex.
fn file_hash(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:012x}", h >> 16)
}

/// What the findings policy needs of the services targeting knows: their ids
/// and the fields each publishes.
pub fn services<W: WatchSink>(targeting: &Targeting<W>) -> Services {
    let catalog = targeting.catalog();
    Services::new(targeting.ids().clone(), |name| {
        catalog
            .services()
            .iter()
            .find(|s| s.id == name)
            .map(|s| s.public_ids.clone())
            .unwrap_or_default()
    })
}

/// Opens a JSON-lines output named by a config key or flag: 0600, or 0640
/// and `group`'s (config `output_group`).
pub fn output(path: &Path, what: &str, group: Option<&str>) -> anyhow::Result<JsonLines> {
    let gid = group
        .map(crate::sinks::jsonl::group_id)
        .transpose()
        .context("output_group")?;
    JsonLines::open_for(path, gid)
        .with_context(|| format!("opening the {what} file {}", path.display()))
}

/// Where matching runs.
pub enum Matching {
    /// On the pipeline thread: deterministic (replay).
    Inline,
    /// Sharded over this many worker threads (run).
    Sharded(usize),
}

/// What the pipeline is assembled from, besides the config.
pub struct Parts<'a, W: WatchSink> {
    pub loaded: &'a Loaded,
    pub rules: Arc<RuleSet>,
    pub state_dir: &'a Path,
    pub watch: &'a [StaticWatch],
    pub sink: W,
    pub metrics: Arc<Metrics>,
    /// (ifindex, name) of the interfaces records come from.
    pub ifaces: Vec<(u32, String)>,
    pub matching: Matching,
    pub dump: Option<RecordLog>,
    pub clock: Clock,
    /// `--watch` may name a service neither the catalog nor the config has
    /// (replay: an ad-hoc label, warned about); else that is an error (a typo
    /// would silently make a new service).
    pub adhoc_services: bool,
    /// Live: the kernel's block maps and the LAN interfaces. `None` (replay):
    /// blocking decisions are reported, never enforced.
    pub blocks: Option<(Box<dyn BlockSink + Send>, HashSet<u32>)>,
}

/// The pipeline, and the matcher workers' report channel when sharded.
pub fn assemble<W: WatchSink>(
    parts: Parts<'_, W>,
) -> anyhow::Result<(
    Pipeline<W>,
    Option<crate::flows::workers::Reports<crate::sinks::block::Blocked>>,
)> {
    let Parts {
        loaded,
        rules,
        state_dir,
        watch,
        sink,
        metrics,
        ifaces,
        matching,
        dump,
        clock,
        adhoc_services,
        blocks,
    } = parts;
    let c = &loaded.config;
    let fingerprints = if let Some(fleet) = &c.fingerprint_key_file {
        Fingerprinter::load(fleet)
            .with_context(|| format!("fingerprint_key_file {}", fleet.display()))?
    } else {
        let key_path = state_dir.join("fingerprint.key");
        Fingerprinter::load_or_create(&key_path).with_context(|| {
            format!(
                "fingerprint key {} (choose a writable --state-dir)",
                key_path.display()
            )
        })?
    };
    if c.evidence == EvidenceMode::Full {
        log::warn!("evidence = full: events will carry leaked secrets and personal data in full");
    }
    let events = c
        .events
        .as_deref()
        .map(|p| output(p, "events", c.output_group.as_deref()))
        .transpose()?;
    let mut targeting = Targeting::new(loaded.catalog.clone(), c.targets.clone(), sink);
    targeting.set_blocking(c.blocking.clone());
    // One budget for the learned addresses, the matcher's flows, the posture
    // flows and the replay detector's fingerprints.
    let budget = Arc::new(crate::shared::budget::Budget::new(c.memory_limit));
    targeting.learned_mut().set_budget(Arc::clone(&budget));
    // Decoding limits are Copy and travel into every dissector: they carry the
    // budget as a reference that lives as long as the process (one small leak
    // per assembled pipeline).
    let mut limits = c.decode_limits();
    limits.budget = Some(&**Box::leak(Box::new(Arc::clone(&budget))));
    targeting
        .add_catalog_statics()
        .map_err(anyhow::Error::msg)
        .context("watching the catalog's static prefixes")?;
    for w in watch {
        if targeting.ids().id_of(&w.service).is_none() {
            if !adhoc_services {
                anyhow::bail!(
                    "--watch {w}: no service {:?} in the catalog or the config (`leakwatch catalog list`; declare it under [[services]])",
                    w.service
                );
            }
            log::warn!(
                "--watch {w}: {:?} is no catalog service; findings are labelled with it as given",
                w.service
            );
        }
        targeting
            .add_static(w.net, &w.service)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--watch {w}"))?;
        log::debug!("watching {} as {}", w.net, w.service);
    }
    let idle = loaded.idle();
    let flows = c.flow_table_size as usize;
    // Live, the blocker always exists: a reload may turn blocking on.
    let blocker = match blocks {
        Some((sink, lan)) => Some(Blocker::new(c.blocking.clone(), Some(lan), true, sink)),
        None => c
            .blocking
            .any()
            .then(|| Blocker::new(c.blocking.clone(), None, false, Box::new(NoBlocks))),
    }
    .map(|b| Arc::new(Mutex::new(b)));
    let services = Arc::new(services(&targeting));
    let (engine, reports) = match matching {
        Matching::Inline => {
            let mut t = StreamTable::new(
                Arc::clone(&rules),
                services,
                idle,
                flows,
                c.flow_buffer_bytes,
                limits,
            )
            .context("Hyperscan scratch")?;
            t.set_budget(Arc::clone(&budget));
            (Engine::Inline(Box::new(t)), None)
        }
        Matching::Sharded(n) => {
            let n = n.max(1);
            let (w, r) = Workers::start(
                n,
                &rules,
                &services,
                idle,
                flows.div_ceil(n),
                c.flow_buffer_bytes,
                limits,
                blocker.as_ref(),
                Some(&budget),
            )
            .context("starting the matcher threads")?;
            log::info!("matching on {n} thread(s)");
            (Engine::Sharded(w), Some(r))
        }
    };
    let mut replay = ReplayDetector::new(
        Duration::from_secs(c.replay_window_secs),
        c.replay_fingerprints,
    );
    replay.set_budget(Arc::clone(&budget));
    let mut posture = Posture::new(idle, flows);
    posture.set_budget(Arc::clone(&budget));
    let stage = MatchStage::new(engine, rules, fingerprints, c.evidence, replay);
    let mut pipeline = Pipeline::new(targeting, posture, metrics, events, dump, ifaces)
        .with_matching(stage)
        .with_budget(budget)
        .with_clock(clock)
        .with_host(
            c.sensor_name
                .clone()
                .unwrap_or_else(crate::sinks::events::host_name),
        );
    if let Some(b) = blocker {
        pipeline = pipeline.with_blocker(b);
    }
    pipeline.metrics().set_config_hash(&loaded.hash);
    let pipeline = pipeline
        .with_config(c.clone())
        .with_watch(watch)
        .with_advisories(loaded.advisories()?);
    Ok((pipeline, reports))
}
