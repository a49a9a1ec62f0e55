//! `cargo xtask package`: the Debian package (amd64: Hyperscan is x86-64 only),
//! built with cargo-deb from the metadata in sensor-user/Cargo.toml — the daemon
//! with its XDP program embedded, the default config (a conffile), the systemd
//! unit, the man page and shell completions generated from the clap
//! definitions, the dashboards and alert rules — then checked: its contents
//! listed, the unit verified by `systemd-analyze verify`, the man page rendered.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::shell::{cargo, output, root, step};

/// What the package must hold (`dpkg-deb --contents` paths).
const CONTENTS: &[&str] = &[
    "./usr/bin/leakwatch",
    "./etc/leakwatch/leakwatch.toml",
    "./etc/leakwatch/advisories.toml",
    "./usr/lib/systemd/system/leakwatch.service",
    "./usr/share/man/man1/leakwatch.1.gz",
    "./usr/share/bash-completion/completions/leakwatch",
    "./usr/share/zsh/vendor-completions/_leakwatch",
    "./usr/share/fish/vendor_completions.d/leakwatch.fish",
    "./usr/share/leakwatch/grafana/leakwatch.json",
    "./usr/share/leakwatch/prometheus/alerts.yml",
    "./usr/share/doc/leakwatch/operations.md",
];

fn ensure_cargo_deb() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["deb", "--version"])).is_some() {
        println!("==> cargo-deb: present");
        return Ok(());
    }
    step(
        "cargo install cargo-deb (takes a minute or two)",
        Command::new("cargo").args(["install", "cargo-deb", "--locked"]),
    )
}

/// Builds the package; returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    if std::env::consts::ARCH != "x86_64" {
        bail!("the package is amd64 only: Hyperscan runs on x86-64");
    }
    ensure_cargo_deb()?;
    step(
        "building leakwatch (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "sensor-user",
            "--bin",
            "leakwatch",
        ]),
    )?;
    let bin = root().join("target/release/leakwatch");
    let gen_dir = root().join("target/package");
    std::fs::create_dir_all(&gen_dir)?;
    step(
        "man page and shell completions from the clap definitions",
        Command::new(&bin).arg("generate").arg(&gen_dir),
    )?;
    step(
        "cargo deb (Debian package)",
        cargo().args(["deb", "-p", "sensor-user", "--no-build", "--no-strip"]),
    )?;
    let dir = root().join("target/debian");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    let deb = debs.pop().map(|(_, p)| p).context("no .deb was built")?;
    println!("==> built {}", deb.display());
    Ok(deb)
}

/// Builds the package and checks it: contents, unit, man page.
pub fn run() -> anyhow::Result<()> {
    let deb = build()?;
    check(&deb)
}

pub fn check(deb: &std::path::Path) -> anyhow::Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .context("dpkg-deb --contents")?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in CONTENTS {
        if !paths.contains(want) {
            bail!("{} lacks {want}:\n{listing}", deb.display());
        }
    }
    println!(
        "==> package contents: all {} expected files",
        CONTENTS.len()
    );
    let conffiles = output(
        Command::new("dpkg-deb")
            .args(["--info"])
            .arg(deb)
            .arg("conffiles"),
    )
    .unwrap_or_default();
    if !conffiles.contains("/etc/leakwatch/leakwatch.toml") {
        bail!("/etc/leakwatch/leakwatch.toml is not a conffile: {conffiles:?}");
    }
    // The unit as installed, with its binary where this build put it.
    let tmp = root().join("target/package/verify");
    std::fs::create_dir_all(&tmp)?;
    let unit = std::fs::read_to_string(root().join("packaging/leakwatch.service"))?;
    let bin = root().join("target/release/leakwatch");
    let unit = unit.replace("/usr/bin/leakwatch", &bin.to_string_lossy());
    let path = tmp.join("leakwatch.service");
    std::fs::write(&path, unit)?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .context("systemd-analyze (apt-get install systemd)")?;
    let said = String::from_utf8_lossy(&out.stderr);
    // Lines about the host's other units are not ours.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("leakwatch.service"))
        .collect();
    if !out.status.success() || !ours.is_empty() {
        bail!("systemd-analyze verify leakwatch.service:\n{said}");
    }
    println!("==> systemd-analyze verify leakwatch.service: clean");
    let man = root().join("target/package/leakwatch.1");
    let text = output(
        Command::new("man")
            .args(["-l", "-Tutf8"])
            .arg(&man)
            .env("MANWIDTH", "80"),
    )
    .context("man -l leakwatch.1 (apt-get install man-db)")?;
    for want in ["leakwatch", "run", "replay", "blocks"] {
        if !text.contains(want) {
            bail!("the man page does not render {want:?}:\n{text}");
        }
    }
    println!("==> man -l leakwatch.1: renders");
    Ok(())
}
