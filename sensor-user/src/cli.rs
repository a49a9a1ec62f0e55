//! The command line: clap types only, and how flags override the config file.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    capture::loader::AttachMode,
    config::{Config, Interface},
    matcher::evidence::EvidenceMode,
    targets::{StaticWatch, policy::BlockMode},
};

#[derive(Parser)]
#[command(
    name = "leakwatch",
    version,
    about = "Finds streaming apps leaking credentials and personal data on the wire"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Attach the XDP sensor to interfaces and watch live traffic.
    Run(Box<RunArgs>),
    /// Run the pipeline over pcap/pcapng captures, offline (no privileges needed).
    Replay(Box<ReplayArgs>),
    /// Validate a config file and its rules without starting (exit 1 and the
    /// error, with file, line and column, when something is wrong).
    Check {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Also require `interfaces` to be set: exit 1 when it is empty (the
        /// unit's ExecCondition: the service is skipped until it is), 255 when
        /// the config is broken.
        #[arg(long)]
        has_interfaces: bool,
    },
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
    /// The app inventory of the running sensor (over its control socket):
    /// per service, each app version with its clients, leak kinds and
    /// share of cleartext flows.
    Apps {
        /// One JSON object per app version instead of a table.
        #[arg(long)]
        json: bool,
        /// The sensor's control socket [/run/leakwatch/control.sock].
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
    },
    /// Blocks in force in the running sensor (over its control socket).
    Blocks {
        #[command(subcommand)]
        cmd: BlocksCmd,
    },
    /// Write the man page (leakwatch.1, .1.gz) and bash, zsh and fish
    /// completions into DIR (packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Writes the man page and the shell completions of [`Cli`] into `dir`.
pub fn generate(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut roff = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut roff)?;
    std::fs::write(dir.join("leakwatch.1"), &roff)?;
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("leakwatch.1.gz"))?,
        flate2::Compression::best(),
    );
    gz.write_all(&roff)?;
    gz.finish()?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "leakwatch.bash"),
        (clap_complete::Shell::Zsh, "_leakwatch"),
        (clap_complete::Shell::Fish, "leakwatch.fish"),
    ] {
        let mut out = std::fs::File::create(dir.join(file))?;
        clap_complete::generate(shell, &mut Cli::command(), "leakwatch", &mut out);
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum BlocksCmd {
    /// List the blocks: client, service, reason, since, expiry.
    List {
        /// One JSON object per block instead of a table.
        #[arg(long)]
        json: bool,
        /// The sensor's control socket [/run/leakwatch/control.sock].
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
    },
    /// Lift a block (a flow or a quarantine) by its id.
    Lift {
        #[arg(value_name = "ID")]
        id: u64,
        /// The sensor's control socket [/run/leakwatch/control.sock].
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum RulesCmd {
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
pub enum CatalogCmd {
    /// Print the effective catalog: built in, plus the config's services.
    List {
        /// Admin config (TOML) whose [[services]] extend the built-in catalog.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) XDP, falling back to generic.
    #[default]
    Auto,
    Native,
    Generic,
}

impl From<XdpModeArg> for AttachMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => Self::Auto,
            XdpModeArg::Native => Self::Native,
            XdpModeArg::Generic => Self::Generic,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressWhen {
    Auto,
    Always,
    Never,
}

/// What `run` and `replay` share: the pipeline's settings. Each flag, when
/// given, overrides its config key (same name, `_` for `-`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Pipeline {
    /// Admin config (TOML): settings, services, domains, static prefixes, rules.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Watch a prefix as a service, e.g. 198.51.100.0/24=qobuz (repeatable).
    #[arg(long = "watch", value_name = "CIDR=SERVICE")]
    pub watch: Vec<StaticWatch>,
    /// Write events (JSON lines, EVE style) to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// How leaked values appear in events: redacted (first/last 2 characters and
    /// the length; default), fingerprint (no characters) or full (the value itself).
    #[arg(long, value_name = "MODE")]
    pub evidence: Option<EvidenceMode>,
    /// Where the per-installation fingerprint key (and the compiled rules cache)
    /// is kept [run: /var/lib/leakwatch; replay: ~/.local/state/leakwatch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Payload bytes sampled at the start of each direction of a watched flow [16384].
    #[arg(long, value_name = "N")]
    pub head_bytes: Option<u32>,
    /// After the head, sample 1 in K packets per direction (0: none) [64].
    #[arg(long, value_name = "K")]
    pub tail_every: Option<u32>,
    /// TCP ports whose new flows are probed for SNI/Host even when unwatched [80,443,8080].
    #[arg(long, value_delimiter = ',', value_name = "P,…")]
    pub probe_ports: Option<Vec<u16>>,
    /// Do not hand DNS answers to userspace.
    #[arg(long)]
    pub no_dns: bool,
    /// Do not probe new flows on the probe ports.
    #[arg(long)]
    pub no_probe: bool,
    /// Follow the catalog's apps to any host: their cleartext flows to
    /// third parties (analytics, ads) are matched too [config follow_apps].
    #[arg(long)]
    pub follow_apps: bool,
    /// Watched flows tracked at once (the kernel's LRU and userspace tables) [65536].
    #[arg(long, value_name = "N")]
    pub flow_table_size: Option<u32>,
    /// A token seen from a second client within this many seconds is a replay [3600].
    #[arg(long = "replay-window", value_name = "SECS")]
    pub replay_window_secs: Option<u64>,
    /// Out-of-order bytes buffered per flow direction before a hole is skipped [262144].
    #[arg(long, value_name = "BYTES")]
    pub flow_buffer_bytes: Option<usize>,
    /// Blocking mode everywhere no [blocking] service or domain says otherwise:
    /// monitor, dry-run, reset, quarantine, block-cleartext [monitor]. Replay
    /// reports what it would have blocked.
    #[arg(long = "block", value_name = "MODE")]
    pub block: Option<BlockMode>,
    /// Memory the tables and buffers may hold together, e.g. 512MiB [512MiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::shared::budget::parse_size)]
    pub memory_limit: Option<u64>,
    /// Canary values of test accounts (TOML, mode 0600 or 0400, owned by the
    /// daemon's user or root): found in every encoding, reported `confirmed`.
    #[arg(long = "canaries", value_name = "PATH")]
    pub canaries_file: Option<PathBuf>,
    /// App versions known to leak (TOML `[[advisories]]`): a client running
    /// one raises a `vulnerable_app` event.
    #[arg(long = "advisories", value_name = "PATH")]
    pub advisories_file: Option<PathBuf>,
}

impl Pipeline {
    /// Lays the flags over `c` (the file's values or the defaults).
    pub fn apply(&self, c: &mut Config) {
        let Self {
            config: _,
            watch: _,
            events,
            evidence,
            state_dir,
            head_bytes,
            tail_every,
            probe_ports,
            no_dns,
            no_probe,
            follow_apps,
            flow_table_size,
            replay_window_secs,
            flow_buffer_bytes,
            block,
            memory_limit,
            canaries_file,
            advisories_file,
        } = self;
        set(&mut c.events, events.clone().map(Some));
        set(&mut c.evidence, *evidence);
        set(&mut c.state_dir, state_dir.clone().map(Some));
        set(&mut c.head_bytes, *head_bytes);
        set(&mut c.tail_every, *tail_every);
        set(&mut c.probe_ports, probe_ports.clone());
        c.dns &= !no_dns;
        c.probe &= !no_probe;
        c.follow_apps |= follow_apps;
        set(&mut c.flow_table_size, *flow_table_size);
        set(&mut c.replay_window_secs, *replay_window_secs);
        set(&mut c.flow_buffer_bytes, *flow_buffer_bytes);
        set(&mut c.blocking.mode, *block);
        set(&mut c.memory_limit, *memory_limit);
        set(&mut c.canaries_file, canaries_file.clone().map(Some));
        set(&mut c.advisories_file, advisories_file.clone().map(Some));
    }
}

fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *slot = v;
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Interface to attach to, with its role (repeat for several: a gateway's
    /// LAN and WAN sides); only clients on lan interfaces can be blocked [wan].
    /// Replaces the config's `interfaces`.
    #[arg(long = "iface", value_name = "IF[:lan|wan]")]
    pub ifaces: Vec<Interface>,
    /// How to attach [auto: native, else generic].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpModeArg>,
    /// Where `leakwatch blocks` reaches this sensor [/run/leakwatch/control.sock].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: Pipeline,
    /// Ring buffer bytes in all, shared evenly by the per-CPU rings (a power
    /// of two, at least one page) [8 MiB].
    #[arg(long, value_name = "N")]
    pub ring_bytes: Option<u32>,
    /// Where /metrics and /healthz are served [127.0.0.1:9477].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Write one JSON line per ring record (metadata only, no payload) to PATH, or - for stdout.
    #[arg(long, value_name = "PATH")]
    pub dump_records: Option<PathBuf>,
    /// Matcher threads (flows are sharded over them) [available cores].
    #[arg(long, value_name = "N")]
    pub matcher_threads: Option<usize>,
    /// SCHED_FIFO priority (1-99) of the threads a block waits for: ring reader,
    /// pipeline, matchers [0: off]. Needs CAP_SYS_NICE or RLIMIT_RTPRIO.
    #[arg(long, value_name = "N")]
    pub realtime_priority: Option<u8>,
}

impl RunArgs {
    /// The flags over `c`.
    pub fn apply(&self, c: &mut Config) {
        self.pipeline.apply(c);
        set(&mut c.ring_bytes, self.ring_bytes);
        set(&mut c.metrics_addr, self.metrics_addr);
        set(&mut c.dump_records, self.dump_records.clone().map(Some));
        set(&mut c.matcher_threads, self.matcher_threads.map(Some));
        set(&mut c.realtime_priority, self.realtime_priority);
        if !self.ifaces.is_empty() {
            c.interfaces.clone_from(&self.ifaces);
        }
        set(&mut c.xdp_mode, self.xdp_mode.map(AttachMode::from));
        set(&mut c.control_socket, self.control_socket.clone());
    }
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng: Ethernet, raw IP, Linux cooked, loopback).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub pipeline: Pipeline,
    /// Write the final metrics exposition to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// Progress line on stderr: auto (on a terminal, for inputs over 8 MB), always, never.
    #[arg(long, default_value = "auto", value_name = "WHEN")]
    pub progress: ProgressWhen,
    /// Print the app inventory (the report card of `leakwatch apps`) at the end.
    #[arg(long)]
    pub apps: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn flags_override_the_file_and_absent_flags_keep_it() {
        let file = Config::parse(
            "head_bytes = 100\nreplay_window_secs = 1\nevidence = \"fingerprint\"\nflow_table_size = 10\n",
            "c.toml",
        )
        .unwrap();
        let Cmd::Replay(r) = parse(&["leakwatch", "replay", "x.pcap", "--head-bytes", "200"]).cmd
        else {
            panic!("replay")
        };
        let mut c = file.clone();
        r.pipeline.apply(&mut c);
        assert_eq!(
            (
                c.head_bytes,
                c.replay_window_secs,
                c.evidence,
                c.flow_table_size
            ),
            (200, 1, EvidenceMode::Fingerprint, 10)
        );
        let Cmd::Run(r) = parse(&[
            "leakwatch",
            "run",
            "--iface",
            "lo",
            "--replay-window",
            "7",
            "--no-dns",
            "--ring-bytes",
            "8192",
            "--block",
            "quarantine",
            "--iface",
            "lan0:lan",
        ])
        .cmd
        else {
            panic!("run")
        };
        let mut c = file;
        r.apply(&mut c);
        assert_eq!(
            (c.head_bytes, c.replay_window_secs, c.dns, c.ring_bytes),
            (100, 7, false, 8192)
        );
        assert_eq!(c.blocking.mode, BlockMode::Quarantine);
        assert_eq!(
            c.interfaces,
            ["lo:wan".parse().unwrap(), "lan0:lan".parse().unwrap()]
        );
        assert!(Cli::try_parse_from(["leakwatch", "run", "--block", "drop"]).is_err());
    }
}
