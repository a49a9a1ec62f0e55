//! SIGHUP: the config file and its rules are read and compiled off the
//! pipeline thread ([`prepare`]), then swapped in at once ([`Pipeline::reload`]).
//!
//! What reloads: services, domains, static prefixes, public ids, rules,
//! evidence mode, blocking modes, and the sampling policy the kernel reads
//! (head, tail, probe ports, DNS, probe and follow_apps switches). Open flows keep the rules
//! they started with; learned addresses, counters and blocks in force stay;
//! service ids are never reused. What needs a restart is named in the log when
//! it changed. A file that does not load changes nothing.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::{Engine, Pipeline, assemble::Loaded};
use crate::{
    capture::loader::KernelConfig,
    config::Config,
    matcher::engine::RuleSet,
    sinks::metrics::ResultLabels,
    targets::{StaticWatch, learning::WatchSink},
};

/// Where a reload reads from: the file (none: the defaults, when only the
/// flags name files to re-read, as `--canaries` does), the command line's
/// flags laid over it, and the rules cache.
pub struct ReloadSource {
    pub path: Option<PathBuf>,
    pub apply: Arc<dyn Fn(&mut Config) + Send + Sync>,
    pub state_dir: PathBuf,
}

/// A config read and its rules compiled, ready to swap in.
pub struct Reloaded {
    pub loaded: Loaded,
    pub rules: RuleSet,
    pub advisories: crate::sinks::advisories::Advisories,
}

/// Reads and compiles (slow: run it off the pipeline thread).
pub fn prepare(src: &ReloadSource) -> anyhow::Result<Reloaded> {
    let mut loaded = Loaded::load(src.path.as_deref())?;
    (src.apply)(&mut loaded.config);
    loaded.config.check().map_err(anyhow::Error::msg)?;
    let rules = loaded.rules(Some(&src.state_dir))?;
    let advisories = loaded.advisories()?;
    Ok(Reloaded {
        loaded,
        rules,
        advisories,
    })
}

/// Settings read once at start: a change is reported, and waits for a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name, changed: bool| {
        if changed {
            out.push(name);
        }
    };
    check("interfaces", old.interfaces != new.interfaces);
    check("memory_limit", old.memory_limit != new.memory_limit);
    check(
        "realtime_priority",
        old.realtime_priority != new.realtime_priority,
    );
    check("xdp_mode", old.xdp_mode != new.xdp_mode);
    check("ring_bytes", old.ring_bytes != new.ring_bytes);
    check(
        "flow_table_size",
        old.flow_table_size != new.flow_table_size,
    );
    check(
        "flow_buffer_bytes",
        old.flow_buffer_bytes != new.flow_buffer_bytes,
    );
    check("metrics_addr", old.metrics_addr != new.metrics_addr);
    check("control_socket", old.control_socket != new.control_socket);
    check(
        "matcher_threads",
        old.matcher_threads != new.matcher_threads,
    );
    check("events", old.events != new.events);
    check("dump_records", old.dump_records != new.dump_records);
    check("output_group", old.output_group != new.output_group);
    check("state_dir", old.state_dir != new.state_dir);
    check(
        "fingerprint_key_file",
        old.fingerprint_key_file != new.fingerprint_key_file,
    );
    check("sensor_name", old.sensor_name != new.sensor_name);
    check(
        "replay_window_secs",
        old.replay_window_secs != new.replay_window_secs,
    );
    check(
        "replay_fingerprints",
        old.replay_fingerprints != new.replay_fingerprints,
    );
    check(
        "max_inflated_bytes",
        old.max_inflated_bytes != new.max_inflated_bytes,
    );
    check(
        "max_inflate_ratio",
        old.max_inflate_ratio != new.max_inflate_ratio,
    );
    check(
        "max_decode_depth",
        old.max_decode_depth != new.max_decode_depth,
    );
    check("[targets]", old.targets != new.targets);
    out
}

impl<W: WatchSink> Pipeline<W> {
    /// The config the pipeline was assembled from (for reloads to compare).
    pub fn with_config(mut self, c: Config) -> Self {
        self.config = Some(c);
        self
    }

    /// The `--watch` prefixes (kept across reloads).
    pub fn with_watch(mut self, watch: &[StaticWatch]) -> Self {
        self.reload_watch = watch.to_vec();
        self
    }

    /// Keeps learned addresses in `path` across restarts (live): restores
    /// what it holds now, writes it every minute and at exit.
    pub fn with_learned_file(mut self, path: std::path::PathBuf) -> Self {
        let now = std::time::Instant::now();
        match crate::targets::store::load(&path, std::time::SystemTime::now()) {
            Ok(entries) => {
                let n = self.targeting.restore(&entries, now);
                log::info!("{n} learned addresses restored from {}", path.display());
                self.publish_watched();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("learned addresses not restored: {e}"),
        }
        self.learned_file = Some((path, now));
        self
    }

    /// Writes the learned addresses when a minute has passed (or `force`).
    pub fn save_learned(&mut self, now: std::time::Instant, force: bool) {
        let Some((path, last)) = self.learned_file.as_mut() else {
            return;
        };
        if !force && now.duration_since(*last) < crate::targets::store::EVERY {
            return;
        }
        *last = now;
        let entries = self.targeting.learned_snapshot(now);
        if let Err(e) = crate::targets::store::save(path, &entries, std::time::SystemTime::now()) {
            log::warn!("keeping learned addresses in {}: {e}", path.display());
        }
    }

    /// The kernel's `CONFIG` map (live), for reloads of the sampling policy.
    pub fn with_kernel_config(mut self, k: KernelConfig) -> Self {
        self.kernel_config = Some(k);
        self
    }

    /// Counts and logs a reload that did not load; the running config stays.
    pub fn reload_failed(&self, e: &anyhow::Error) {
        log::error!("reload: {e:#}; the running config stays");
        self.count_reload("error");
    }

    fn count_reload(&self, result: &str) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Swaps a prepared config in.
    pub fn reload(&mut self, r: Reloaded) {
        if let Err(e) = self.apply_reload(r) {
            self.reload_failed(&e);
        }
    }

    fn apply_reload(&mut self, r: Reloaded) -> anyhow::Result<()> {
        let Reloaded {
            loaded,
            rules,
            advisories,
        } = r;
        self.set_advisories(advisories);
        let c = &loaded.config;
        if let Some(old) = &self.config {
            let wait = needs_restart(old, c);
            if !wait.is_empty() {
                log::warn!(
                    "reload: {} changed: that takes effect at the next restart",
                    wait.join(", ")
                );
            }
        }
        let watch: Vec<_> = self
            .reload_watch
            .iter()
            .map(|w| (w.net, w.service.clone()))
            .collect();
        self.targeting
            .reload(loaded.catalog.clone(), c.blocking.clone(), &watch)
            .map_err(anyhow::Error::msg)
            .context("watching the new static prefixes")?;
        if let Some(k) = self.kernel_config.as_mut() {
            k.set(&loaded.kernel_config())
                .context("writing the sampling policy to the kernel")?;
        }
        let services = Arc::new(super::assemble::services(&self.targeting));
        let rules = Arc::new(rules);
        if let Some(m) = self.matching.as_mut() {
            m.rules = Arc::clone(&rules);
            m.evidence = c.evidence;
            match &mut m.engine {
                Engine::Inline(t) => t
                    .set_rules(Arc::clone(&rules), Arc::clone(&services))
                    .context("scratch for the new rules")?,
                Engine::Sharded(w) => {
                    let lost = w.set_rules(&rules, &services);
                    m.lose(lost);
                }
                Engine::Stopped => {}
            }
        }
        if let Some(b) = self.blocker.as_deref() {
            crate::sinks::block::lock(b).set_settings(c.blocking.clone());
        }
        // New services and rules get their series at 0, as at start.
        let n_services = self.init_series(&rules);
        self.metrics.set_config_hash(&loaded.hash);
        self.publish_watched();
        self.count_reload("ok");
        log::info!(
            "reloaded {}: {} services, {} rules (version {})",
            loaded
                .path
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string()),
            n_services,
            rules.rules().count(),
            rules.version
        );
        self.config = Some(loaded.config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A reload re-reads the canaries file: a changed file takes effect, a
    /// refused one fails the reload (the running rules stay).
    #[test]
    fn a_reload_picks_up_a_changed_canaries_file() {
        let dir = std::env::temp_dir().join(format!("lw-reload-canaries-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("canaries.toml");
        let write = |n: usize, mode: u32| {
            let doc = (0..n).fold(String::new(), |mut d, i| {
                d += &format!(
                    "[[canaries]]\nlabel = \"c{i}\"\nkind = \"auth_token\"\nvalue = \"tok-{i}-abcdef\"\n"
                );
                d
            });
            std::fs::write(&file, doc).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let flag = file.clone();
        let src = ReloadSource {
            path: None,
            apply: Arc::new(move |c: &mut Config| c.canaries_file = Some(flag.clone())),
            state_dir: dir.join("state"),
        };
        let count = |r: &Reloaded| {
            r.rules
                .canaries()
                .map_or(0, crate::matcher::canary_db::Canaries::len)
        };
        write(1, 0o600);
        assert_eq!(count(&prepare(&src).unwrap()), 1);
        write(3, 0o400);
        assert_eq!(count(&prepare(&src).unwrap()), 3);
        write(3, 0o644);
        let e = format!("{:#}", prepare(&src).err().unwrap());
        assert!(e.contains("refused") && e.contains("0644"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
