//! `leakwatch replay`: the pcap driver. Frames go through the userspace twin of
//! the XDP program (the sampler) into the same pipeline `run` assembles, with
//! capture times as the clock.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::assemble::{Loaded, Matching, Parts, assemble};
use crate::{
    capture::{
        clock::Clock,
        defrag::{Defrag, Defragged},
        pcap,
        sampler::Sampler,
    },
    sinks::{
        metrics::Metrics,
        summary::{self, Progress, Totals},
    },
    targets::{StaticWatch, learning::MemoryWatch},
};

/// When to draw the progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowProgress {
    /// On a terminal, for inputs over 8 MB.
    Auto,
    Always,
    Never,
}

/// What to replay and where its results go.
pub struct Replay<'a> {
    pub files: &'a [PathBuf],
    pub loaded: &'a Loaded,
    pub watch: &'a [StaticWatch],
    pub state_dir: PathBuf,
    pub metrics_out: Option<PathBuf>,
    pub progress: ShowProgress,
    /// Print the app inventory at the end.
    pub apps: bool,
}

/// Replays the files in order. A damaged file ends the run after everything
/// read before the damage was reported (events, summary, metrics).
pub fn replay(r: &Replay<'_>) -> anyhow::Result<()> {
    let loaded = r.loaded;
    let rules = Arc::new(loaded.rules(Some(&r.state_dir))?);
    let mut metrics = Metrics::new();
    let sampler_counts = metrics.register_sampler_counters("pcap");
    let metrics = Arc::new(metrics);
    let (mut pipeline, _) = assemble(Parts {
        loaded,
        rules,
        state_dir: &r.state_dir,
        watch: r.watch,
        sink: MemoryWatch::default(),
        metrics: Arc::clone(&metrics),
        ifaces: vec![(1, "pcap".into())],
        matching: Matching::Inline,
        dump: None,
        clock: Clock::identity(),
        adhoc_services: true,
        blocks: None,
    })?;
    // The kernel's maps, sized as `run` sizes them.
    let entries = loaded.config.flow_table_size as usize;
    let mut sampler = Sampler::new(
        loaded.kernel_config(),
        entries,
        sensor_common::maps::DEFAULT_PROBE_ENTRIES as usize,
    );

    let mut defrag = Defrag::default();
    let started = Instant::now();
    let base = Instant::now();
    let (mut first_ts, mut last_tick, mut bytes, mut records) =
        (None::<u64>, Duration::ZERO, 0u64, 0u64);
    let mut now = base;
    let mut failure = None;
    let (mut packets, mut counts) = (0u64, pcap::ReadCounts::default());
    let sizes: Vec<u64> = r
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .collect();
    let total: u64 = sizes.iter().sum();
    let show = match r.progress {
        ShowProgress::Always => true,
        ShowProgress::Never => false,
        ShowProgress::Auto => std::io::stderr().is_terminal() && total > 8_000_000,
    };
    let mut progress = Progress::new(total);
    let mut done_before = 0u64;
    let files = r.files.len();
    for (i, (file, size)) in r.files.iter().zip(&sizes).enumerate() {
        let result = pcap::read(
            file,
            |frame| {
                let t0 = *first_ts.get_or_insert(frame.ts_ns);
                // Capture time drives expiry; out-of-order timestamps do not go back.
                let at = Duration::from_nanos(frame.ts_ns.saturating_sub(t0));
                now = now.max(base + at);
                if at >= last_tick + Duration::from_secs(1) {
                    last_tick = at;
                    pipeline.tick(now);
                }
                bytes += (frame.data.len() + frame.cut) as u64;
                packets += 1;
                // A frame a snap length cut is parsed at its original length
                // (the parser trusts the IP header's), and only its captured
                // bytes are analysed.
                let padded;
                let whole;
                let data: &[u8] = if frame.cut > 0 {
                    padded = [&frame.data[..], &vec![0; frame.cut]].concat();
                    &padded
                } else {
                    // Outer fragments of a tunnel wait for their datagram.
                    match defrag.push(&frame.data, frame.ts_ns) {
                        Defragged::Frame(d) => d,
                        Defragged::Held => return,
                        Defragged::Whole(w) => {
                            whole = w;
                            &whole
                        }
                    }
                };
                if let Some(mut rec) =
                    sampler.process(data, frame.ts_ns, 1, pipeline.targeting.sink())
                {
                    if frame.cut > 0 && rec.frame.len() > frame.data.len() {
                        rec.frame.truncate(frame.data.len());
                        rec.hdr.flags |= sensor_common::record::flags::TRUNCATED;
                    }
                    records += 1;
                    pipeline.handle(Ok(rec), now);
                    // Flows the pipeline follows from now on (`follow_apps`).
                    for (key, st) in pipeline.targeting.sink_mut().1.drain(..) {
                        sampler.follow(key, st);
                    }
                }
            },
            |offset| {
                if show {
                    progress.update(&mut std::io::stderr(), done_before + offset, i + 1, files);
                }
            },
        );
        done_before += size;
        match result {
            Ok(c) => counts += c,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    progress.finish(&mut std::io::stderr());
    // End of input: every flow ends.
    pipeline.tick(now + Duration::from_hours(24));
    *sampler_counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = sampler.counters;
    for (name, e) in sampler.evictions() {
        metrics.set_evictions(name, e);
    }
    defrag.finish();
    let (name, e) = defrag.evictions();
    metrics.set_evictions(name, e);

    let text = metrics.encode();
    if let Some(p) = &r.metrics_out {
        std::fs::write(p, &text)
            .with_context(|| format!("writing --metrics-out {}", p.display()))?;
    }
    let totals = Totals {
        files,
        packets,
        bytes,
        capture: counts,
        records,
        elapsed: started.elapsed(),
    };
    write!(
        std::io::stderr().lock(),
        "{}",
        summary::table(&totals, &text)
    )?;
    let d = defrag.stats;
    if d.fragments > 0 {
        eprintln!(
            "{} tunnelled datagrams put together from {} outer fragments ({} incomplete, dropped); live, the kernel counts such fragments instead",
            d.reassembled, d.fragments, d.dropped
        );
    }
    if r.apps {
        super::apps::print_rows(&pipeline.app_rows(), false, &mut std::io::stdout().lock())?;
    }
    match failure {
        // Everything read before the damage was reported above.
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
