//! `leakwatch`: the binary edge. Parses the command line, lays its flags over the
//! config file, and hands each command to the library; errors print as one line.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use sensor_user::{
    cli::{BlocksCmd, CatalogCmd, Cli, Cmd, ProgressWhen, RulesCmd},
    config::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR},
    pipeline::{
        assemble::Loaded,
        control,
        live::{self, Attach},
        replay::{self, Replay, ShowProgress},
    },
    sinks::listing,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match Cli::parse().cmd {
        Cmd::Run(args) => run(&args),
        Cmd::Replay(args) => replay(&args),
        Cmd::Check {
            config,
            has_interfaces,
        } => check(&config, has_interfaces),
        Cmd::Catalog {
            cmd: CatalogCmd::List { config },
        } => catalog_list(config.as_deref()),
        Cmd::Rules { cmd } => rules(&cmd),
        Cmd::Apps {
            json,
            control_socket,
        } => control::apps(&socket(control_socket), json),
        Cmd::Blocks {
            cmd:
                BlocksCmd::List {
                    json,
                    control_socket,
                },
        } => control::list(&socket(control_socket), json, &mut std::io::stdout().lock()),
        Cmd::Blocks {
            cmd: BlocksCmd::Lift { id, control_socket },
        } => control::lift(&socket(control_socket), id),
        Cmd::Generate { dir } => sensor_user::cli::generate(&dir).map_err(Into::into),
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

/// The config file with `apply` laid over it, checked again.
fn loaded(path: Option<&Path>, apply: impl FnOnce(&mut Loaded)) -> anyhow::Result<Loaded> {
    let mut l = Loaded::load(path)?;
    apply(&mut l);
    l.config.check().map_err(anyhow::Error::msg)?;
    Ok(l)
}

fn run(args: &sensor_user::cli::RunArgs) -> anyhow::Result<()> {
    let l = loaded(args.pipeline.config.as_deref(), |l| {
        args.apply(&mut l.config);
    })?;
    let state_dir = (l.config.state_dir.clone()).unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    // A reload lays the same flags over the file again.
    let flags = args.clone();
    let attach = Attach {
        watch: &args.pipeline.watch,
        state_dir: &state_dir,
        flags: std::sync::Arc::new(move |c| flags.apply(c)),
    };
    live::run(&attach, &l)
}

fn replay(args: &sensor_user::cli::ReplayArgs) -> anyhow::Result<()> {
    let l = loaded(args.pipeline.config.as_deref(), |l| {
        args.pipeline.apply(&mut l.config);
    })?;
    let state_dir = l.config.state_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".leakwatch"),
            |h| PathBuf::from(h).join(".local/state/leakwatch"),
        )
    });
    replay::replay(&Replay {
        files: &args.files,
        loaded: &l,
        watch: &args.pipeline.watch,
        state_dir,
        metrics_out: args.metrics_out.clone(),
        progress: match args.progress {
            ProgressWhen::Auto => ShowProgress::Auto,
            ProgressWhen::Always => ShowProgress::Always,
            ProgressWhen::Never => ShowProgress::Never,
        },
        apps: args.apps,
    })
}

fn socket(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

fn check(config: &Path, has_interfaces: bool) -> anyhow::Result<()> {
    // For systemd's ExecCondition: 1 skips the unit, 255 fails it.
    let fail = |e: anyhow::Error| {
        has_interfaces.then(|| listing::exit(&e, 255));
        e
    };
    let l = loaded(Some(config), |_| {}).map_err(fail)?;
    let set = l.rules(None).map_err(fail)?;
    l.advisories().map_err(fail)?;
    if has_interfaces && l.config.interfaces.is_empty() {
        let e = anyhow::anyhow!("{}: no interfaces set", config.display());
        listing::exit(&e.context("the service waits for them"), 1);
    }
    println!(
        "{}: OK ({} services, {} rules, version {})",
        config.display(),
        l.catalog.services().len(),
        set.rules().count(),
        set.version
    );
    Ok(())
}

fn rules(cmd: &RulesCmd) -> anyhow::Result<()> {
    let (RulesCmd::Check { config } | RulesCmd::List { config }) = cmd;
    let set = Loaded::load(config.as_deref())?.rules(None)?;
    let out = &mut std::io::stdout().lock();
    match cmd {
        RulesCmd::Check { .. } => Ok(listing::rules_check(out, &set)?),
        RulesCmd::List { .. } => Ok(listing::rules(out, &set)?),
    }
}

fn catalog_list(config: Option<&Path>) -> anyhow::Result<()> {
    let l = Loaded::load(config)?;
    Ok(listing::catalog(&mut std::io::stdout().lock(), &l.catalog)?)
}
