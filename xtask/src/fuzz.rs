//! `cargo xtask fuzz [--time SECS] [--report] [TARGET]`: the libFuzzer targets
//! in fuzz/ (cargo-fuzz, installed if missing), each seeded from the real
//! captures (tests/data and ../shared/corpus: whole files for the capture
//! reader, frames for the parser, payloads for the dissectors). A crash fails
//! the run; its input is kept under fuzz/regressions/TARGET/, replayed by a
//! normal test (fuzz/tests/regressions.rs, in `cargo xtask test`) and by
//! every later run (`cargo xtask test` runs them all briefly, regressions
//! first). The targets' code lives in fuzz/src/targets/, callable without
//! libFuzzer. `--report` writes each target's row of the table in
//! docs/reliability.md as it finishes; `--runs N --no-sanitizer` is the
//! recorded long run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::shell::{root, rustup_nightly_cargo, step};

/// Every target: (name, what it reads). Kept in step with fuzz/Cargo.toml.
pub const TARGETS: [(&str, Seeds); 20] = [
    ("parse", Seeds::Frames),
    ("record", Seeds::Records),
    ("reassembly", Seeds::None),
    ("hot", Seeds::None),
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
    ("canary", Seeds::Payloads),
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    None,
    Frames,
    /// Ring records the XDP program would write for the frames.
    Records,
    Payloads,
    Dns,
    Tls,
    Files,
    Config,
}

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target (with `--runs`: a cap, 0 = none).
    #[arg(long)]
    pub time: Option<u64>,
    /// Executions per target: the run stops after this many (the recorded
    /// long run uses 10,000,000).
    #[arg(long)]
    pub runs: Option<u64>,
    /// Build without the address sanitizer: several times the executions per
    /// second. The parsers are safe Rust and Hyperscan is not instrumented
    /// either way, so a long run trades little for it; panics, overflow
    /// checks and debug assertions stay on.
    #[arg(long)]
    pub no_sanitizer: bool,
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

/// A ring record of `frame` as the XDP program writes one (a sample from the
/// client), if the shared parser takes it.
fn record(frame: &[u8]) -> Option<Vec<u8>> {
    use sensor_common::{
        flow::FlowKey,
        parse::parse_with,
        record::{RecordHeader, RecordKind, flags},
        tunnel::VXLAN_PORT,
    };
    let p = parse_with(frame, VXLAN_PORT).ok()?;
    let (key, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
    let rflags = flags::FROM_CLIENT | flags::FIRST_PAYLOAD;
    let mut h = RecordHeader::of_packet(RecordKind::Sample, rflags, &p, &key, dir, frame.len());
    h.service = 1;
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&frame[..h.cap_len as usize]);
    Some(out)
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
                        (Seeds::Records, _) => {
                            if let Some(r) = record(fr) {
                                add(&r);
                            }
                        }
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

const REPORT_START: &str = "<!-- fuzz-report";
const REPORT_END: &str = "<!-- /fuzz-report -->";
const REPORT_HEAD: &str = "<!-- fuzz-report: written by `cargo xtask fuzz --report`; do not edit by hand -->\n| target | date | seconds | executions | coverage (edges) | crashes | sanitizer |\n|---|---|---|---|---|---|---|\n";

/// `doc` with `name`'s row in the report table replaced (or added), the rows
/// kept in the order of [`TARGETS`].
fn with_row(doc: &str, name: &str, row: &str) -> String {
    let (before, rows, after) = match (doc.find(REPORT_START), doc.find(REPORT_END)) {
        (Some(a), Some(b)) if a < b => (&doc[..a], &doc[a..b], &doc[b + REPORT_END.len()..]),
        _ => (doc, "", "\n"),
    };
    let mut kept: BTreeMap<usize, String> = BTreeMap::new();
    for line in rows.lines() {
        if let Some(t) = line
            .strip_prefix("| `")
            .and_then(|l| l.split('`').next())
            .and_then(|t| TARGETS.iter().position(|(n, _)| *n == t))
        {
            kept.insert(t, line.to_owned());
        }
    }
    if let Some(t) = TARGETS.iter().position(|(n, _)| *n == name) {
        kept.insert(t, row.to_owned());
    }
    let mut table = String::from(REPORT_HEAD);
    for line in kept.values() {
        // Rows from before the sanitizer column get its default.
        table.push_str(line);
        if line.matches('|').count() == 7 {
            table.push_str(" address |");
        }
        table.push('\n');
    }
    format!("{before}{table}{REPORT_END}{after}")
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One target's result, read from libFuzzer's last status line.
struct Result1 {
    seconds: u64,
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

fn run_one(name: &str, kind: Seeds, args: &FuzzArgs) -> anyhow::Result<Result1> {
    let fuzz = root().join("fuzz");
    let corpus = root()
        .join(if args.no_sanitizer {
            "target/fuzz-corpus-long"
        } else {
            "target/fuzz-corpus"
        })
        .join(name);
    let n = seed(kind, &corpus)?;
    // Regression inputs first: each must pass on its own.
    let regressions = fuzz.join("regressions").join(name);
    if let Ok(rd) = std::fs::read_dir(&regressions) {
        for input in rd.flatten() {
            let out = rustup_nightly_cargo()
                .current_dir(&fuzz)
                .args(["fuzz", "run", name])
                .args(sanitizer(args))
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
    let secs = args
        .time
        .unwrap_or(if args.runs.is_some() { 0 } else { 60 });
    let mut limits = vec![format!("-max_total_time={secs}")];
    if let Some(runs) = args.runs {
        limits.push(format!("-runs={runs}"));
    }
    println!("==> fuzz {name}: {} from {n} seeds", limits.join(" "));
    let started = Instant::now();
    let out = rustup_nightly_cargo()
        .current_dir(&fuzz)
        .args(["fuzz", "run", name])
        .args(sanitizer(args))
        .arg(&corpus)
        .arg("--")
        .args(&limits)
        .args([
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-print_final_stats=1",
        ])
        .output()
        .context("cargo fuzz run")?;
    let seconds = started.elapsed().as_secs();
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
        seconds,
        execs,
        cov,
        crashed,
    })
}

/// cargo-fuzz flags for the build asked for; a build without the sanitizer
/// gets its own target directory, so a long run and `cargo xtask test` can
/// run side by side without rebuilding each other's binaries.
fn sanitizer(args: &FuzzArgs) -> Vec<String> {
    if args.no_sanitizer {
        vec![
            "--sanitizer".into(),
            "none".into(),
            "--target-dir".into(),
            root().join("target/fuzz-nosan").display().to_string(),
        ]
    } else {
        Vec::new()
    }
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
        if args.no_sanitizer {
            "building the fuzz targets (nightly, no sanitizer)"
        } else {
            "building the fuzz targets (nightly, address sanitizer)"
        },
        rustup_nightly_cargo()
            .current_dir(root().join("fuzz"))
            .args(["fuzz", "build"])
            .args(sanitizer(args)),
    )?;
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut crashed = Vec::new();
    for (name, kind) in targets {
        let r = run_one(name, kind, args)?;
        if r.crashed {
            crashed.push(name);
        }
        // Each target's row as soon as it is done: a long run stopped half
        // way keeps what it measured.
        if args.report {
            let row = format!(
                "| `{name}` | {date} | {} | {} | {} | {} | {} |",
                r.seconds,
                r.execs,
                r.cov,
                u8::from(r.crashed),
                if args.no_sanitizer { "none" } else { "address" }
            );
            let path = root().join("docs/reliability.md");
            let doc = std::fs::read_to_string(&path).unwrap_or_default();
            std::fs::write(&path, with_row(&doc, name, &row))?;
            println!("==> {name}: row written to {}", path.display());
        }
    }
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs kept under fuzz/regressions/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_row_replaces_its_target_and_keeps_the_others() {
        let doc = "# Title\n\nintro\n\n".to_owned();
        let one = with_row(&doc, "http", "| `http` | d | 1 | 10 | 5 | 0 | none |");
        let two = with_row(&one, "parse", "| `parse` | d | 2 | 20 | 6 | 0 | none |");
        let three = with_row(&two, "http", "| `http` | e | 3 | 30 | 7 | 0 | none |");
        assert!(three.starts_with("# Title\n\nintro\n\n<!-- fuzz-report"));
        let rows: Vec<&str> = three.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(
            rows,
            [
                "| `parse` | d | 2 | 20 | 6 | 0 | none |",
                "| `http` | e | 3 | 30 | 7 | 0 | none |"
            ]
        );
        assert_eq!(three.matches(REPORT_END).count(), 1);
        // An old row without the sanitizer column gets it.
        let old = "<!-- fuzz-report -->\n| `tls` | d | 60 | 9 | 1 | 0 |\n<!-- /fuzz-report -->\n";
        assert!(
            with_row(old, "dns", "| `dns` | d | 1 | 1 | 1 | 0 | none |")
                .contains("| `tls` | d | 60 | 9 | 1 | 0 | address |")
        );
    }
}
