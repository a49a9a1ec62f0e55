//! Running commands with a line that says what is happening.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// Prints `==> what` and runs `cmd`, failing if it fails.
pub fn step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("==> {what}");
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{what} failed ({st}): {cmd:?}");
    }
    Ok(())
}

/// Standard output of `cmd`, or None if it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` with the workspace root as working directory.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `rustup run nightly cargo` in the workspace root (the eBPF crate's toolchain).
pub fn rustup_nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]).current_dir(root());
    c
}

pub fn root() -> PathBuf {
    // xtask lives in the workspace, one level down.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.join(".."), std::path::Path::to_path_buf)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
