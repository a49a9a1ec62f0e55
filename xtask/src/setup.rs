//! `cargo xtask setup`: installs, idempotently and with a line per step, what a
//! fresh Debian 12 machine lacks to build and test leakwatch.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::shell::{output, step};

/// Debian packages: the BPF linker's LLVM, Hyperscan, the lab's tools.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",      // bpf-linker links against LLVM 22 (nightly's LLVM)
    "libhyperscan-dev", // the matcher's pattern engine
    "pkg-config",
    "iproute2",   // ip netns / veth for the lab
    "procps",     // sysctl in lab namespaces
    "util-linux", // setpriv for the unprivileged-run test
    "curl",
    "dnsmasq-base", // the lab's DNS server (binary only, no system service)
    "ethtool",      // the lab's VLAN trunk: tags written into frames
    "openssl",      // the lab's HTTPS certificate
    "prometheus",   // promtool for the alert rules; the end-to-end scrape test
    "nftables",     // the lab's masquerading gateway (blocking on the LAN side)
];

const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_MAJOR: &str = "22";

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

pub fn run() -> anyhow::Result<()> {
    apt()?;
    toolchain()?;
    bpf_linker()?;
    check_llvm()?;
    println!("==> setup: everything is in place");
    Ok(())
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!(
            "==> apt packages: all present ({})",
            APT_PACKAGES.join(", ")
        );
        return Ok(());
    }
    if !crate::shell::is_root() {
        bail!(
            "apt packages missing: {}; run `cargo xtask setup` as root (or apt-get install them)",
            missing.join(" ")
        );
    }
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-q"]),
    )?;
    step(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// The benchmarks' extra tools: iperf3 (live traffic) and Suricata 7 from
/// bookworm-backports (the side by side), installed only by `cargo xtask bench`.
pub fn bench_extras() -> anyhow::Result<()> {
    const BACKPORTS: &str = "/etc/apt/sources.list.d/leakwatch-bench-backports.sources";
    let suricata7 =
        output(Command::new("suricata").arg("-V")).is_some_and(|v| v.contains("version 7."));
    if installed("iperf3") && suricata7 {
        println!("==> bench tools: iperf3 and Suricata 7 present");
        return Ok(());
    }
    if !crate::shell::is_root() {
        bail!("the benchmarks need iperf3 and Suricata 7: run `cargo xtask bench` as root");
    }
    if !std::path::Path::new(BACKPORTS).exists() {
        println!("==> adding bookworm-backports (for Suricata 7) in {BACKPORTS}");
        std::fs::write(
            BACKPORTS,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .with_context(|| format!("writing {BACKPORTS}"))?;
    }
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-q"]),
    )?;
    step(
        "apt-get install iperf3 suricata (bookworm-backports)",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends", "iperf3"])
            .args(["-t", "bookworm-backports", "suricata"]),
    )
}

fn toolchain() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is not installed")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the `nightly` Rust toolchain is missing: the XDP program builds with it (rustup toolchain install nightly)"
        );
    }
    let have = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    for comp in ["rust-src", "clippy", "rustfmt"] {
        if have.lines().any(|l| l.starts_with(comp)) {
            println!("==> nightly {comp}: present");
        } else {
            step(
                &format!("rustup component add {comp} --toolchain nightly"),
                Command::new("rustup").args(["component", "add", comp, "--toolchain", "nightly"]),
            )?;
        }
    }
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    output(Command::new("bpf-linker").arg("--version")).map(|s| s.trim().to_owned())
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(v) = bpf_linker_version().filter(|v| v.contains(&format!(" {BPF_LINKER_VERSION}.")))
    {
        println!("==> {v}: present");
        return Ok(());
    }
    step(
        &format!(
            "cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR}; takes a minute)"
        ),
        Command::new("cargo")
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                &format!("^{BPF_LINKER_VERSION}"),
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ]),
    )
}

/// The LLVM major of `rustc +nightly -vV`'s "LLVM version: X.Y.Z".
fn rustc_llvm_major(vv: &str) -> Option<String> {
    let v = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?
        .trim();
    Some(v.split('.').next()?.to_owned())
}

/// The LLVM major bpf-linker is linked against, from `ldd` ("libLLVM.so.22.1").
fn linker_llvm_major(ldd: &str) -> Option<String> {
    let rest = ldd.split("libLLVM").nth(1)?;
    let ver = rest
        .trim_start_matches(['-', '.'])
        .trim_start_matches("so.");
    let major: String = ver.chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then_some(major)
}

fn check_llvm() -> anyhow::Result<()> {
    let rustc = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("running rustc +nightly -vV")?;
    let rustc_major =
        rustc_llvm_major(&rustc).context("rustc +nightly -vV printed no LLVM version")?;
    let linker =
        output(Command::new("which").arg("bpf-linker")).context("bpf-linker is not on PATH")?;
    let ldd = output(Command::new("ldd").arg(linker.trim())).unwrap_or_default();
    match linker_llvm_major(&ldd) {
        Some(m) if m == rustc_major => {
            println!("==> LLVM: nightly rustc and bpf-linker both use LLVM {m}");
            Ok(())
        }
        Some(m) => bail!(
            "nightly rustc emits LLVM {rustc_major} bitcode but bpf-linker is built against LLVM {m}; \
             bpf-linker cannot read newer bitcode. Rebuild it for LLVM {rustc_major}: \
             apt-get install llvm-{rustc_major}-dev, then LLVM_PREFIX=/usr/lib/llvm-{rustc_major} \
             cargo install bpf-linker --force --no-default-features --features llvm-{rustc_major}"
        ),
        None => {
            println!(
                "==> LLVM: nightly uses LLVM {rustc_major}; bpf-linker's LLVM is linked statically, not checked"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_versions_are_read() {
        assert_eq!(
            rustc_llvm_major("binary: rustc\nLLVM version: 22.1.4\n").as_deref(),
            Some("22")
        );
        let ldd = "\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f)\n";
        assert_eq!(linker_llvm_major(ldd).as_deref(), Some("22"));
        assert_eq!(
            linker_llvm_major("\tlibLLVM-19.so => /x\n").as_deref(),
            Some("19")
        );
        assert_eq!(linker_llvm_major("\tlibc.so.6 => /x\n"), None);
    }
}
