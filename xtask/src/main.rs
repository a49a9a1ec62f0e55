//! `cargo xtask …`: everything a newcomer or CI types.
//!
//! | command | does                                                              |
//! |---------|-------------------------------------------------------------------|
//! | setup   | installs what a fresh Debian 12 machine lacks (idempotent)         |
//! | test    | setup, fmt check, clippy (host and BPF), unit and root-only tests   |
//! | bench   | setup, XDP per-packet cost against a null program                  |
//! | demo    | setup, the namespace lab with the live sensor and streaming traffic |
//! | lab     | `up`: the demo's lab in the foreground for exploring; `down`: cleanup |
//! | fuzz    | the libFuzzer targets in fuzz/, seeded from the real captures      |
//! | package | the Debian package (amd64), checked: contents, unit, man page       |

mod bench;
mod block;
mod demo;
mod flood;
mod flood_lab;
mod fuzz;
mod lab;
mod live;
mod package;
mod setup;
mod shell;
mod suricata;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install apt packages, nightly rust-src and bpf-linker where missing.
    Setup,
    /// Run every check and test (what CI runs).
    Test,
    /// Benchmarks; results in target/bench/.
    Bench {
        /// Run one benchmark only.
        #[arg(long, value_enum)]
        only: Option<bench::Which>,
    },
    /// The lab with the live sensor and leak traffic.
    Demo(demo::DemoArgs),
    /// The fuzz targets (cargo-fuzz); `--report` writes docs/reliability.md.
    Fuzz(fuzz::FuzzArgs),
    /// Build the Debian package (target/debian/) and check it.
    Package,
    /// The lab alone, for manual exploration.
    Lab {
        #[command(subcommand)]
        cmd: lab::LabCmd,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test => {
            setup::run()?;
            test::run()
        }
        Cmd::Bench { only } => {
            setup::run()?;
            bench::run(only)
        }
        Cmd::Fuzz(args) => {
            setup::run()?;
            fuzz::run(&args)
        }
        Cmd::Package => {
            setup::run()?;
            package::run()
        }
        Cmd::Demo(args) => {
            setup::run()?;
            demo::run(&args)
        }
        Cmd::Lab { cmd } => {
            if matches!(cmd, lab::LabCmd::Up { .. }) {
                setup::run()?;
            }
            lab::run(&cmd)
        }
    }
}
