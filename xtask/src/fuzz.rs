//! `cargo xtask fuzz [--time SECS] [--report] [TARGET]`: the libFuzzer targets
//! in fuzz/ (cargo-fuzz, installed if missing), each seeded from the real
//! captures (tests/data and ../shared/corpus: whole files for the capture
//! reader, frames for the parser, payloads for the dissectors). A crash fails
//! the run; its input is kept under fuzz/regressions/TARGET/ and replayed by
//! every later run (`cargo xtask test` runs them all briefly, regressions
//! first). `--report` writes the table in docs/reliability.md.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell::{root, rustup_nightly_cargo, step};

/// Every target: (name, what it reads). Kept in step with fuzz/Cargo.toml.
pub const TARGETS: [(&str, Seeds); 18] = [
    ("parse", Seeds::Frames),
    ("record", Seeds::None),
    ("reassembly", Seeds::None),
    ("http", Seeds::Payloads),
    ("ftp", Seeds::Payloads),
    ("pop3", Seeds::Payloads),
    ("imap", Seeds::Payloads),
    ("smtp", Seeds::Payloads),
    ("mqtt", Seeds::Payloads),
    ("lines", Seeds::Payloads),
    ("dns", Seeds::Dns),
    ("tls", Seeds::Tls),
    ("fields", Seeds::Payloads),
    ("coding", Seeds::Payloads),
    ("websocket", Seeds::Payloads),
    ("pcap", Seeds::Files),
    ("config", Seeds::Config),
    ("flow", Seeds::Payloads),
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    None,
    Frames,
    Payloads,
    Dns,
    Tls,
    Files,
    Config,
}

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Write the results into docs/reliability.md.
    #[arg(long)]
    pub report: bool,
    /// One target (default: all).
    pub target: Option<String>,
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = rustup_nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        println!("==> cargo-fuzz: present");
        return Ok(());
    }
    step(
        "cargo install cargo-fuzz (takes a minute)",
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
    )
}

/// Frames of a pcap or pcapng file (link types as written; seeds need no more).
fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let u32le = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize)
    };
    match u32le(data, 0) {
        Some(0xa1b2_c3d4 | 0xa1b2_3c4d) => {
            let mut at = 24;
            while let Some(incl) = u32le(data, at + 8) {
                let Some(f) = data.get(at + 16..at + 16 + incl) else {
                    break;
                };
                out.push(f);
                at += 16 + incl;
            }
        }
        Some(0x0a0d_0d0a) => {
            let mut at = 0;
            while let (Some(kind), Some(len)) = (u32le(data, at), u32le(data, at + 4)) {
                if len < 12 {
                    break;
                }
                if kind == 6
                    && let Some(cap) = u32le(data, at + 20)
                    && let Some(f) = data.get(at + 28..at + 28 + cap)
                {
                    out.push(f);
                }
                at += len;
            }
        }
        _ => {}
    }
    out
}

/// The transport payload of an Ethernet/IPv4 or IPv6 frame: (is TCP, ports, payload).
fn payload(f: &[u8]) -> Option<(bool, u16, u16, &[u8])> {
    let mut at = 12;
    let mut et = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
    while et == 0x8100 || et == 0x88a8 {
        at += 4;
        et = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
    }
    at += 2;
    let (proto, l4) = match et {
        0x0800 => (*f.get(at + 9)?, at + usize::from(f.get(at)? & 0x0f) * 4),
        0x86dd => (*f.get(at + 6)?, at + 40),
        _ => return None,
    };
    let sport = u16::from_be_bytes([*f.get(l4)?, *f.get(l4 + 1)?]);
    let dport = u16::from_be_bytes([*f.get(l4 + 2)?, *f.get(l4 + 3)?]);
    match proto {
        6 => Some((
            true,
            sport,
            dport,
            f.get(l4 + usize::from(f.get(l4 + 12)? >> 4) * 4..)?,
        )),
        17 => Some((false, sport, dport, f.get(l4 + 8..)?)),
        _ => None,
    }
}

/// Writes up to 400 seeds for `kind` into `dir`.
fn seed(kind: Seeds, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<PathBuf> = Vec::new();
    for d in [
        root().join("tests/data"),
        root().join("../shared/corpus/pcaps"),
    ] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            files.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                p.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("pcap") || x.eq_ignore_ascii_case("pcapng")
                })
            }));
        }
    }
    files.sort();
    let mut seeds: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut add = |bytes: &[u8]| {
        if !bytes.is_empty() && seeds.len() < 400 {
            let key = format!("{:016x}", fnv(bytes));
            seeds
                .entry(key)
                .or_insert_with(|| bytes[..bytes.len().min(4096)].to_vec());
        }
    };
    match kind {
        Seeds::None => {}
        Seeds::Config => {
            let doc = std::fs::read_to_string(root().join("docs/configuration.md"))?;
            for block in doc.split("```toml").skip(1) {
                add(block.split("```").next().unwrap_or("").as_bytes());
            }
        }
        Seeds::Files => {
            for f in &files {
                let data = std::fs::read(f)?;
                if data.len() <= 64 * 1024 {
                    add(&data);
                }
            }
        }
        _ => {
            for f in &files {
                let data = std::fs::read(f)?;
                for fr in frames(&data) {
                    match (kind, payload(fr)) {
                        (Seeds::Frames, _) => add(fr),
                        (Seeds::Payloads, Some((true, _, _, p))) if p.len() > 8 => add(p),
                        (Seeds::Dns, Some((false, 53, _, p))) => add(p),
                        (Seeds::Tls, Some((true, _, _, p))) if p.starts_with(&[0x16, 0x03]) => {
                            add(p);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(seeds.len())
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One target's result, read from libFuzzer's last status line.
struct Result1 {
    execs: u64,
    cov: u64,
    crashed: bool,
}

fn parse_status(stderr: &str) -> (u64, u64) {
    let mut execs = 0;
    let mut cov = 0;
    for line in stderr.lines() {
        let mut w = line.split_whitespace();
        if let Some(n) = w
            .next()
            .and_then(|x| x.strip_prefix('#'))
            .and_then(|n| n.parse().ok())
        {
            execs = n;
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|x| *x == "cov:") {
                cov = words.get(i + 1).and_then(|c| c.parse().ok()).unwrap_or(cov);
            }
        }
    }
    (execs, cov)
}

fn run_one(name: &str, kind: Seeds, secs: u64) -> anyhow::Result<Result1> {
    let fuzz = root().join("fuzz");
    let corpus = root().join("target/fuzz-corpus").join(name);
    let n = seed(kind, &corpus)?;
    // Regression inputs first: each must pass on its own.
    let regressions = fuzz.join("regressions").join(name);
    if let Ok(rd) = std::fs::read_dir(&regressions) {
        for input in rd.flatten() {
            let out = rustup_nightly_cargo()
                .current_dir(&fuzz)
                .args(["fuzz", "run", name])
                .arg(input.path())
                .output()
                .context("cargo fuzz run (regression)")?;
            if !out.status.success() {
                bail!(
                    "fuzz regression {} fails again:\n{}",
                    input.path().display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    println!("==> fuzz {name}: {secs} s from {n} seeds");
    let out = rustup_nightly_cargo()
        .current_dir(&fuzz)
        .args(["fuzz", "run", name])
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={secs}"),
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-print_final_stats=1",
        ])
        .output()
        .context("cargo fuzz run")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (execs, cov) = parse_status(&stderr);
    let crashed = !out.status.success();
    if crashed {
        // Keep what libFuzzer saved, for a regression test.
        std::fs::create_dir_all(&regressions)?;
        if let Ok(rd) = std::fs::read_dir(fuzz.join("artifacts").join(name)) {
            for a in rd.flatten() {
                std::fs::copy(a.path(), regressions.join(a.file_name()))?;
            }
        }
        eprintln!(
            "{}",
            stderr
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!(
        "    {execs} executions, coverage {cov} edges{}",
        if crashed { ", CRASHED" } else { "" }
    );
    Ok(Result1 {
        execs,
        cov,
        crashed,
    })
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let targets: Vec<(&str, Seeds)> = TARGETS
        .iter()
        .copied()
        .filter(|(n, _)| args.target.as_deref().is_none_or(|t| t == *n))
        .collect();
    if targets.is_empty() {
        bail!(
            "no fuzz target {:?}; targets: {}",
            args.target,
            TARGETS.map(|t| t.0).join(", ")
        );
    }
    step(
        "building the fuzz targets (nightly, address sanitizer)",
        rustup_nightly_cargo()
            .current_dir(root().join("fuzz"))
            .args(["fuzz", "build"]),
    )?;
    let mut rows = Vec::new();
    let mut crashed = Vec::new();
    for (name, kind) in targets {
        let r = run_one(name, kind, args.time)?;
        if r.crashed {
            crashed.push(name);
        }
        rows.push((name, r));
    }
    if args.report {
        let date = Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut table = String::from(
            "<!-- fuzz-report: written by `cargo xtask fuzz --report`; do not edit by hand -->\n| target | date | seconds | executions | coverage (edges) | crashes |\n|---|---|---|---|---|---|\n",
        );
        for (name, r) in &rows {
            table.push_str(&format!(
                "| `{name}` | {date} | {} | {} | {} | {} |\n",
                args.time,
                r.execs,
                r.cov,
                u8::from(r.crashed)
            ));
        }
        table.push_str("<!-- /fuzz-report -->\n");
        let path = root().join("docs/reliability.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let doc = match (
            doc.find("<!-- fuzz-report"),
            doc.find("<!-- /fuzz-report -->"),
        ) {
            (Some(a), Some(b)) => format!(
                "{}{table}{}",
                &doc[..a],
                &doc[b + "<!-- /fuzz-report -->\n".len().min(doc.len() - b)..]
            ),
            _ => format!("{doc}\n{table}"),
        };
        std::fs::write(&path, doc)?;
        println!("==> wrote the table to {}", path.display());
    }
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs kept under fuzz/regressions/)",
            crashed.join(", ")
        );
    }
    Ok(())
}
