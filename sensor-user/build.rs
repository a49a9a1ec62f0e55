//! Builds the XDP program (sensor-ebpf) for the BPF target with the nightly
//! toolchain and bpf-linker; the objects land in OUT_DIR and are embedded by
//! `capture::loader`. `cargo xtask setup` installs what this needs.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest).parent().context("workspace root")?;
    let ebpf = root.join("sensor-ebpf");
    // aya-build watches sensor-ebpf; the shared types and parser live here too.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sensor-common").display()
    );
    let ebpf_dir = ebpf.to_str().context("non-UTF-8 path to sensor-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sensor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building sensor-ebpf: run `cargo xtask setup` (nightly rust-src, bpf-linker)")
}
