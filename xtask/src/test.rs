//! `cargo xtask test`: every check CI runs, in order of speed.

use std::process::Command;

use anyhow::bail;

use crate::shell::{cargo, is_root, rustup_nightly_cargo, step};

pub fn run() -> anyhow::Result<()> {
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "clippy: host crates, -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "sensor-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "rustdoc: host crates, -D warnings (links in the docs resolve)",
        cargo().env("RUSTDOCFLAGS", "-D warnings").args([
            "doc",
            "--workspace",
            "--exclude",
            "sensor-ebpf",
            "--no-deps",
        ]),
    )?;
    step(
        "clippy: sensor-ebpf for bpfel-unknown-none, -D warnings",
        rustup_nightly_cargo().args([
            "clippy",
            "-p",
            "sensor-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let prom = crate::shell::root().join("dashboards/prometheus");
    step(
        "promtool: alert rules and example config",
        Command::new("promtool")
            .current_dir(&prom)
            .args(["check", "rules", "alerts.yml"]),
    )?;
    step(
        "promtool: alert rule unit tests",
        Command::new("promtool")
            .current_dir(&prom)
            .args(["test", "rules", "alerts_test.yml"]),
    )?;
    step(
        "promtool: example scrape config",
        Command::new("promtool")
            .current_dir(&prom)
            .args(["check", "config", "prometheus.yml"]),
    )?;
    step(
        "unit tests",
        cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "sensor-ebpf",
            "--lib",
            "--bins",
        ]),
    )?;
    step(
        "building leakwatch for the replay and namespace tests",
        cargo().args(["build", "-p", "sensor-user", "--bin", "leakwatch"]),
    )?;
    let bin = crate::shell::root().join("target/debug/leakwatch");
    step(
        "unprivileged tests: replay of real captures, the corpus contract, HTTP breadth, authentication protocols, event schema, dashboards",
        cargo().env("LEAKWATCH_BIN", &bin).args([
            "test",
            "-p",
            "leakwatch-tests",
            "--test",
            "replay",
            "--test",
            "events_schema",
            "--test",
            "dashboards",
            "--test",
            "auth_protocols",
            "--test",
            "corpus_contract",
            "--test",
            "http_breadth",
        ]),
    )?;
    println!("==> Debian package: build and check (contents, systemd-analyze verify, man page)");
    crate::package::run()?;
    if !is_root() {
        bail!(
            "the remaining tests load XDP programs and build network namespaces: run `cargo xtask test` as root"
        );
    }
    step(
        "BPF_PROG_TEST_RUN tests (root)",
        cargo().args([
            "test",
            "-p",
            "sensor-user",
            "--test",
            "xdp_test_run",
            "--test",
            "xdp_block",
        ]),
    )?;
    step(
        "network-namespace tests (root)",
        cargo().env("LEAKWATCH_BIN", &bin).args([
            "test",
            "-p",
            "leakwatch-tests",
            "--tests",
            "--",
            "--test-threads=1",
        ]),
    )?;
    step(
        "fuzz regressions replayed as a normal test (fuzz/tests/regressions.rs)",
        cargo().args([
            "test",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target-dir",
            "target/fuzz-tests",
            "--test",
            "regressions",
        ]),
    )?;
    crate::fuzz::run(&crate::fuzz::FuzzArgs {
        time: Some(10),
        runs: None,
        no_sanitizer: false,
        report: false,
        target: None,
    })?;
    println!("==> all checks and tests passed");
    Ok(())
}
