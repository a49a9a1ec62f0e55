//! `leakwatch`: the sensor daemon. The binary edge: argument parsing, anyhow errors
//! with context, signals. The work happens in the `sensor_user` library.

use std::{
    io::{IsTerminal as _, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    thread,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sensor_common::{
    config::{Config, DEFAULT_HEAD_BYTES, DEFAULT_TAIL_EVERY, MAX_PROBE_PORTS, config_flags},
    maps::{DEFAULT_FLOW_ENTRIES, DEFAULT_RING_BYTES},
};
use sensor_user::{
    capture::{
        loader::{self, AttachMode, MapSizes, Sensor, XDP_OBJECT},
        ring::{RecordResult, RingReader},
    },
    config::Config as FileConfig,
    flows::{posture::Posture, workers::Workers},
    matcher::{
        engine::RuleSet,
        findings::{EvidenceMode, Fingerprinter, ReplayDetector},
        rules,
    },
    pipeline::{Engine, MatchStage, Pipeline},
    sinks::{
        jsonl::JsonLines,
        metrics::{AttachLabels, Metrics},
        summary::{self, Progress, Totals},
    },
    targets::{StaticWatch, catalog::Catalog, learning::Targeting},
};
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(
    name = "leakwatch",
    version,
    about = "Finds streaming apps leaking credentials and personal data on the wire"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the XDP sensor to interfaces and watch live traffic.
    Run(Box<RunArgs>),
    /// Run the pipeline over pcap/pcapng captures, offline (no privileges needed).
    Replay(Box<ReplayArgs>),
    /// The service catalog.
    Catalog {
        #[command(subcommand)]
        cmd: CatalogCmd,
    },
    /// The leak rules.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng: Ethernet, raw IP, Linux cooked, loopback).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Admin config (TOML): services, domains, static prefixes, rules.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Watch a prefix as a service, e.g. 198.51.100.0/24=qobuz (repeatable).
    #[arg(long = "watch", value_name = "CIDR=SERVICE")]
    watch: Vec<StaticWatch>,
    /// Write events (JSON lines) to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// Write the final metrics exposition to FILE.
    #[arg(long, value_name = "FILE")]
    metrics_out: Option<PathBuf>,
    #[arg(long, default_value = "redacted", value_name = "MODE")]
    evidence: EvidenceMode,
    /// Where the fingerprint key is kept (default: ~/.local/state/leakwatch).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, default_value_t = DEFAULT_HEAD_BYTES)]
    head_bytes: u32,
    #[arg(long, default_value_t = DEFAULT_TAIL_EVERY, value_name = "K")]
    tail_every: u32,
    /// Progress line on stderr: auto (on a terminal, for inputs over 8 MB), always, never.
    #[arg(long, default_value = "auto", value_name = "WHEN")]
    progress: ProgressWhen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProgressWhen {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Compile the built-in and configured rules; report errors by rule id.
    Check {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the effective rules.
    List {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Print the effective catalog: built in, plus the config's services.
    List {
        /// Admin config (TOML) whose [[services]] extend the built-in catalog.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum XdpModeArg {
    /// Native (driver) XDP, falling back to generic.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Interface to attach to (repeat for several: a gateway's LAN and WAN sides).
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    xdp_mode: XdpModeArg,
    /// Watch a prefix as a service, e.g. 198.51.100.0/24=qobuz (repeatable).
    #[arg(long = "watch", value_name = "CIDR=SERVICE")]
    watch: Vec<StaticWatch>,
    /// Payload bytes sampled at the start of each direction of a watched flow.
    #[arg(long, default_value_t = DEFAULT_HEAD_BYTES)]
    head_bytes: u32,
    /// After the head, sample 1 in K packets per direction (0: none).
    #[arg(long, default_value_t = DEFAULT_TAIL_EVERY, value_name = "K")]
    tail_every: u32,
    /// TCP ports whose new flows are probed for SNI/Host even when unwatched.
    #[arg(long, value_delimiter = ',', default_values_t = [80u16, 443, 8080])]
    probe_ports: Vec<u16>,
    /// Do not hand DNS answers to userspace.
    #[arg(long)]
    no_dns: bool,
    /// Do not probe new flows on the probe ports.
    #[arg(long)]
    no_probe: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    #[arg(long, default_value_t = DEFAULT_RING_BYTES)]
    ring_bytes: u32,
    /// Watched flows the kernel tracks at once (LRU).
    #[arg(long, default_value_t = DEFAULT_FLOW_ENTRIES)]
    flow_table_size: u32,
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "127.0.0.1:9477")]
    metrics_addr: SocketAddr,
    /// Write one JSON line per ring record (metadata only, no payload) to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    dump_records: Option<PathBuf>,
    /// Admin config (TOML): services, domains, static prefixes, learning limits.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Write events (JSON lines, EVE style) to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// How leaked values appear in events: redacted (first/last 2 characters and
    /// the length), fingerprint (no characters) or full (the value itself).
    #[arg(long, default_value = "redacted", value_name = "MODE")]
    evidence: EvidenceMode,
    /// Where the per-installation fingerprint key is kept.
    #[arg(long, default_value = "/var/lib/leakwatch", value_name = "DIR")]
    state_dir: PathBuf,
    /// A token seen from a second client within this many seconds is a replay.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    replay_window: u64,
    /// Out-of-order bytes buffered per flow direction before a hole is skipped.
    #[arg(long, default_value_t = sensor_user::flows::streams::DEFAULT_FLOW_BUFFER, value_name = "BYTES")]
    flow_buffer_bytes: usize,
    /// Matcher threads (flows are sharded over them); default: available cores.
    #[arg(long, value_name = "N")]
    matcher_threads: Option<usize>,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<Config> {
        if self.probe_ports.len() > MAX_PROBE_PORTS {
            bail!(
                "--probe-ports takes at most {MAX_PROBE_PORTS} ports, got {}",
                self.probe_ports.len()
            );
        }
        if self.probe_ports.contains(&0) {
            bail!("--probe-ports: port 0 is not a port");
        }
        let mut c = Config {
            head_bytes: self.head_bytes,
            tail_every: self.tail_every,
            ..Config::default()
        };
        c.probe_ports = [0; MAX_PROBE_PORTS];
        c.probe_ports[..self.probe_ports.len()].copy_from_slice(&self.probe_ports);
        if self.no_dns {
            c.flags &= !config_flags::DNS;
        }
        if self.no_probe {
            c.flags &= !config_flags::PROBE;
        }
        Ok(c)
    }

    fn sizes(&self) -> anyhow::Result<MapSizes> {
        let page = 4096;
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            bail!(
                "--ring-bytes {} must be a power of two of at least {page}",
                self.ring_bytes
            );
        }
        if self.flow_table_size == 0 {
            bail!("--flow-table-size must be at least 1");
        }
        Ok(MapSizes {
            ring_bytes: self.ring_bytes,
            flow_entries: self.flow_table_size,
            ..MapSizes::default()
        })
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match Cli::parse().cmd {
        Cmd::Run(args) => run(*args),
        Cmd::Replay(args) => replay(*args),
        Cmd::Catalog {
            cmd: CatalogCmd::List { config },
        } => catalog_list(config.as_deref()),
        Cmd::Rules {
            cmd: RulesCmd::Check { config },
        } => rules_check(config.as_deref()),
        Cmd::Rules {
            cmd: RulesCmd::List { config },
        } => rules_list(config.as_deref()),
    };
    if let Err(e) = result {
        // A closed stdout (`leakwatch catalog list | head`) is not a failure.
        if e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            return;
        }
        // One line, the whole chain of causes: what failed and why.
        eprintln!("leakwatch: {e:#}");
        std::process::exit(1);
    }
}

/// The config file (or defaults) and the catalog it makes.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<(FileConfig, Catalog)> {
    let config = match path {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut catalog = Catalog::builtin();
    let src = path.map_or_else(
        || "the built-in catalog".to_owned(),
        |p| p.display().to_string(),
    );
    catalog
        .extend(config.services.clone())
        .with_context(|| format!("services in {src}"))?;
    Ok((config, catalog))
}

/// The built-in rules plus the config's, compiled (with the compiled-database
/// cache in `cache`, when given).
fn load_rules(
    config: &FileConfig,
    path: Option<&std::path::Path>,
    cache: Option<&std::path::Path>,
) -> anyhow::Result<RuleSet> {
    let mut all = rules::builtin();
    all.extend(config.rules.clone());
    let src = path.map_or_else(
        || "the built-in rules".to_owned(),
        |p| format!("the built-in rules and {}", p.display()),
    );
    match cache {
        Some(dir) => RuleSet::compile_cached(all, dir),
        None => RuleSet::compile(all),
    }
    .with_context(|| format!("compiling {src}"))
}

fn rules_check(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (file, _) = load_config(config)?;
    let set = load_rules(&file, config, None)?;
    println!(
        "{} rules compiled (version {})",
        set.rules().count(),
        set.version
    );
    for id in &set.triggers().untriggered {
        println!(
            "note: rule {id} has no triggers: every message section is decoded for it (slow); \
             give it `triggers` or a `^(name|…)=` pattern"
        );
    }
    Ok(())
}

fn rules_list(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (file, _) = load_config(config)?;
    let set = load_rules(&file, config, None)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<22} {:<14} {:<9} {:<7} {:<15} services",
        "id", "kind", "severity", "context", "validator"
    )?;
    for r in set.rules() {
        let validator = r
            .validator
            .map_or_else(|| "-".to_owned(), |v| format!("{v:?}").to_ascii_lowercase());
        let services = if r.services.is_empty() {
            "all".to_owned()
        } else {
            r.services.join(",")
        };
        let context = format!("{:?}", r.context).to_ascii_lowercase();
        writeln!(
            out,
            "{:<22} {:<14} {:<9} {:<7} {:<15} {services}",
            r.id,
            r.kind.name(),
            r.severity.name(),
            context,
            validator
        )?;
    }
    Ok(())
}

fn catalog_list(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (_, catalog) = load_config(config)?;
    let mut out = std::io::stdout().lock();
    for s in catalog.services() {
        writeln!(out, "{}", s.id)?;
        writeln!(out, "  domains:    {}", s.domains.join(", "))?;
        if !s.cidrs.is_empty() {
            let c: Vec<String> = s.cidrs.iter().map(ToString::to_string).collect();
            writeln!(out, "  cidrs:      {}", c.join(", "))?;
        }
        if !s.public_ids.is_empty() {
            writeln!(out, "  public ids: {}", s.public_ids.join(", "))?;
        }
    }
    Ok(())
}

/// `leakwatch replay`: the live pipeline, fed by the userspace twin of the XDP
/// program instead of the ring, with capture times as the clock.
fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

    use sensor_user::{
        capture::{clock::Clock, pcap, sampler::Sampler},
        flows::streams::{DEFAULT_FLOW_BUFFER, StreamTable},
        targets::learning::MemoryWatch,
    };

    let (file_config, catalog) = load_config(args.config.as_deref())?;
    let state = args.state_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".leakwatch"),
            |h| PathBuf::from(h).join(".local/state/leakwatch"),
        )
    });
    let rule_set = Arc::new(load_rules(
        &file_config,
        args.config.as_deref(),
        Some(&state),
    )?);
    let key_path = state.join("fingerprint.key");
    let fingerprints = Fingerprinter::load_or_create(&key_path).with_context(|| {
        format!(
            "fingerprint key {} (choose a writable --state-dir)",
            key_path.display()
        )
    })?;
    let events = args
        .events
        .as_deref()
        .map(|p| output(p, "--events"))
        .transpose()?;
    let mut targeting =
        Targeting::new(catalog, file_config.targets.clone(), MemoryWatch::default());
    targeting
        .add_catalog_statics()
        .map_err(anyhow::Error::msg)?;
    for w in &args.watch {
        targeting
            .add_static(w.net, &w.service)
            .map_err(anyhow::Error::msg)?;
    }
    let idle = Duration::from_secs(file_config.targets.flow_idle_secs);
    let table = StreamTable::new(Arc::clone(&rule_set), idle, 65_536, DEFAULT_FLOW_BUFFER)
        .context("Hyperscan scratch")?;
    let replay = ReplayDetector::new(Duration::from_secs(3600), 100_000);
    let matching = MatchStage::new(
        Engine::Inline(table),
        rule_set,
        fingerprints,
        args.evidence,
        replay,
    );
    let posture = Posture::new(idle, 65_536);
    let mut metrics = Metrics::new();
    let sampler_counts = metrics.register_sampler_counters("pcap");
    let metrics = Arc::new(metrics);
    let mut pipeline = Pipeline::new(
        targeting,
        posture,
        Arc::clone(&metrics),
        events,
        None,
        vec![(1, "pcap".into())],
    )
    .with_matching(matching)
    .with_clock(Clock::identity());
    let config = Config {
        head_bytes: args.head_bytes,
        tail_every: args.tail_every,
        ..Config::default()
    };
    let mut sampler = Sampler::new(config, 65_536, 65_536);

    let started = Instant::now();
    let base = Instant::now();
    let (mut first_ts, mut last_tick, mut bytes, mut records) =
        (None::<u64>, Duration::ZERO, 0u64, 0u64);
    let mut now = base;
    let mut failure = None;
    let mut packets = 0u64;
    let mut skipped = 0u64;
    let sizes: Vec<u64> = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .collect();
    let total: u64 = sizes.iter().sum();
    let show = match args.progress {
        ProgressWhen::Always => true,
        ProgressWhen::Never => false,
        ProgressWhen::Auto => std::io::stderr().is_terminal() && total > 8_000_000,
    };
    let mut progress = Progress::new(total);
    let mut done_before = 0u64;
    let files = args.files.len();
    for (i, file) in args.files.iter().enumerate() {
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
                bytes += frame.data.len() as u64;
                packets += 1;
                if let Some(rec) =
                    sampler.process(&frame.data, frame.ts_ns, 1, pipeline.targeting.sink())
                {
                    records += 1;
                    pipeline.handle(Ok(rec), now);
                }
            },
            |offset| {
                if show {
                    progress.update(&mut std::io::stderr(), done_before + offset, i + 1, files);
                }
            },
        );
        done_before += sizes[i];
        match result {
            Ok((_, s)) => skipped += s,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    progress.finish(&mut std::io::stderr());
    // End of input: every flow ends.
    pipeline.tick(now + Duration::from_secs(86_400));
    *sampler_counts.lock().unwrap_or_else(|e| e.into_inner()) = sampler.counters;

    let text = metrics.encode();
    if let Some(p) = &args.metrics_out {
        std::fs::write(p, &text)
            .with_context(|| format!("writing --metrics-out {}", p.display()))?;
    }
    let totals = Totals {
        files,
        packets,
        bytes,
        skipped,
        records,
        elapsed: started.elapsed(),
    };
    write!(
        std::io::stderr().lock(),
        "{}",
        summary::table(&totals, &text)
    )?;
    match failure {
        // Everything read before the damage was reported above.
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn output(path: &std::path::Path, what: &str) -> anyhow::Result<JsonLines> {
    JsonLines::open(path).with_context(|| format!("opening {what} file {}", path.display()))
}

/// What the pipeline thread receives.
enum Msg {
    Record(RecordResult),
    Tick,
    /// SIGHUP: reopen the output files (log rotation).
    Reopen,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let sizes = args.sizes()?;
    // The one sentence that matters to an unprivileged user comes first.
    if !sensor_user::capture::privilege::can_load_xdp() {
        return Err(loader::LoadError::NotPrivileged.into());
    }
    // Fail on the admin's typos before touching the kernel.
    for iface in &args.ifaces {
        loader::ifindex(iface)?;
    }
    let mode = match args.xdp_mode {
        XdpModeArg::Auto => AttachMode::Auto,
        XdpModeArg::Native => AttachMode::Native,
        XdpModeArg::Generic => AttachMode::Generic,
    };
    let (file_config, catalog) = load_config(args.config.as_deref())?;
    let dump = args
        .dump_records
        .as_deref()
        .map(|p| output(p, "--dump-records"))
        .transpose()?;
    let events = args
        .events
        .as_deref()
        .map(|p| output(p, "--events"))
        .transpose()?;

    let rule_set = Arc::new(load_rules(
        &file_config,
        args.config.as_deref(),
        Some(&args.state_dir),
    )?);
    let key_path = args.state_dir.join("fingerprint.key");
    let fingerprints = Fingerprinter::load_or_create(&key_path).with_context(|| {
        format!(
            "fingerprint key {} (choose a writable --state-dir)",
            key_path.display()
        )
    })?;
    if args.evidence == EvidenceMode::Full {
        log::warn!("--evidence full: events will carry leaked secrets and personal data in full");
    }
    log::info!(
        "{} leak rules loaded (version {})",
        rule_set.rules().count(),
        rule_set.version
    );

    let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &config)?;
    let mut targeting = Targeting::new(catalog, file_config.targets.clone(), sensor.take_watch()?);
    targeting
        .add_catalog_statics()
        .map_err(anyhow::Error::msg)
        .context("watching the catalog's static prefixes")?;
    for w in &args.watch {
        targeting
            .add_static(w.net, &w.service)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--watch {w}"))?;
        log::info!("watching {} as {}", w.net, w.service);
    }
    let mut metrics = Metrics::new();
    for iface in &args.ifaces {
        let a = sensor.attach(iface, mode)?;
        log::info!(
            "attached to {} (ifindex {}) in {} mode",
            a.iface,
            a.ifindex,
            a.mode
        );
        metrics
            .attached
            .get_or_create(&AttachLabels {
                interface: a.iface.clone(),
                mode: a.mode.to_string(),
            })
            .set(1);
    }
    let ifaces: Vec<(u32, String)> = sensor
        .attachments()
        .iter()
        .map(|a| (a.ifindex, a.iface.clone()))
        .collect();
    metrics.register_xdp_stats(sensor.take_stats()?, &ifaces);
    let metrics = Arc::new(metrics);
    let ring = sensor.take_ring()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel::<RecordResult>(8192);
    let (msg_tx, msg_rx) = crossbeam_channel::bounded::<Msg>(8192);

    // The pipeline runs on its own thread: record handling never blocks tokio.
    let posture = Posture::new(
        std::time::Duration::from_secs(file_config.targets.flow_idle_secs),
        args.flow_table_size as usize,
    );
    let idle = std::time::Duration::from_secs(file_config.targets.flow_idle_secs);
    let threads = args
        .matcher_threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let per_worker = (args.flow_table_size as usize).div_ceil(threads);
    let (workers, reports) =
        Workers::start(threads, &rule_set, idle, per_worker, args.flow_buffer_bytes)
            .context("starting the matcher threads")?;
    log::info!("matching on {threads} thread(s)");
    let replay = ReplayDetector::new(std::time::Duration::from_secs(args.replay_window), 100_000);
    let matching = MatchStage::new(
        Engine::Sharded(workers),
        rule_set,
        fingerprints,
        args.evidence,
        replay,
    );
    let mut pipeline = Pipeline::new(
        targeting,
        posture,
        Arc::clone(&metrics),
        events,
        dump,
        ifaces,
    )
    .with_matching(matching);
    let pipeline = thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(msg_rx) -> m => match m {
                        Ok(Msg::Record(r)) => pipeline.handle(r, std::time::Instant::now()),
                        Ok(Msg::Tick) => pipeline.tick(std::time::Instant::now()),
                        Ok(Msg::Reopen) => pipeline.reopen(),
                        Err(_) => break,
                    },
                    recv(reports) -> r => if let Ok(r) = r {
                        pipeline.report(r, std::time::Instant::now());
                    },
                }
            }
            // Input is done: let the workers drain, then take their last reports.
            pipeline.stop_workers();
            for r in reports.try_iter() {
                pipeline.report(r, std::time::Instant::now());
            }
        })
        .context("starting the pipeline thread")?;
    // Records and ticks meet in one queue, so the pipeline stays single-threaded.
    let forward_tx = msg_tx.clone();
    let forwarder = thread::Builder::new()
        .name("records".into())
        .spawn(move || {
            let mut rx = rx;
            while let Some(r) = rx.blocking_recv() {
                if forward_tx.send(Msg::Record(r)).is_err() {
                    break;
                }
            }
        })
        .context("starting the record forwarder")?;

    rt.block_on(async {
        let mut server_stop = stop_rx.clone();
        let server = sensor_user::sinks::metrics::serve(
            args.metrics_addr,
            Arc::clone(&metrics),
            async move {
                let _ = server_stop.wait_for(|s| *s).await;
            },
        )
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
        log::info!("metrics on http://{}/metrics", args.metrics_addr);
        let ring = RingReader::new(ring).context("registering the ring buffer with tokio")?;
        let reader = tokio::spawn(ring.run(tx, stop_rx));
        let hup_tx = msg_tx.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let reopener = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                log::info!("SIGHUP: reopening the output files");
                if hup_tx.send(Msg::Reopen).is_err() {
                    break;
                }
            }
        });
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        let ticker = tokio::spawn(async move {
            loop {
                ticks.tick().await;
                if msg_tx.send(Msg::Tick).is_err() {
                    break;
                }
            }
        });
        metrics.set_ready(true);

        wait_for_signal().await?;
        log::info!("shutting down");
        metrics.set_ready(false);
        let _ = stop_tx.send(true);
        reader
            .await
            .context("ring reader task")?
            .context("reading the ring buffer")?;
        ticker.abort();
        reopener.abort();
        server
            .await
            .context("metrics server task")?
            .context("metrics server")?;
        anyhow::Ok(())
    })?;
    // The reader is done (its sender dropped, so the forwarder ends); dropping the
    // runtime drops the ticker's sender: the pipeline then drains and ends.
    forwarder
        .join()
        .map_err(|_| anyhow::anyhow!("record forwarder panicked"))?;
    drop(rt);
    pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
    sensor.detach_all();
    std::io::stdout().flush().ok();
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
