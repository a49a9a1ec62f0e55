//! Side by side with Suricata 7 (`cargo xtask bench`): `leakwatch replay`
//! against Suricata running equivalent content/pcre rules
//! (xtask/data/suricata.rules, Hyperscan on, one thread each) over the same
//! real captures (tests/data, plus ../shared/corpus/pcaps when present). Reports
//! which leak kinds each finds per capture, and wall time and MB/s over all of
//! them (copied several times so start-up does not dominate), with each tool's
//! start-up on a tiny capture shown apart. Writes target/bench/replay.json.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::shell::root;

/// Copies of the inputs in the throughput run.
const COPIES: usize = 4;
const ROUNDS: usize = 3;

fn captures() -> Vec<PathBuf> {
    let mut by_name = BTreeMap::new();
    for dir in [
        root().join("tests/data"),
        root().join("../shared/corpus/pcaps"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("pcap") || x.eq_ignore_ascii_case("pcapng"))
            {
                by_name.entry(name).or_insert(p);
            }
        }
    }
    by_name.into_values().collect()
}

fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

struct Tools {
    leakwatch: PathBuf,
    yaml: PathBuf,
    rules: PathBuf,
    work: PathBuf,
}

impl Tools {
    fn leakwatch(&self, inputs: &[PathBuf], events: Option<&Path>) -> anyhow::Result<f64> {
        let mut c = Command::new(&self.leakwatch);
        c.arg("replay")
            .args(inputs)
            .args(["--watch", "0.0.0.0/0=any", "--watch", "::/0=any"])
            .args(["--progress", "never", "--state-dir"])
            .arg(self.work.join("state"));
        if let Some(e) = events {
            c.arg("--events").arg(e);
        }
        run_ok(&mut c, "leakwatch replay")
    }

    fn suricata(&self, input: &Path, log: &Path) -> anyhow::Result<f64> {
        std::fs::create_dir_all(log)?;
        run_ok(
            Command::new("suricata")
                .arg("-c")
                .arg(&self.yaml)
                .arg("-S")
                .arg(&self.rules)
                .arg("-r")
                .arg(input)
                .arg("-l")
                .arg(log)
                .args(["--runmode", "single", "-k", "none"]),
            "suricata",
        )
    }
}

/// Leak kinds in leakwatch events.
fn leakwatch_kinds(events: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event_type"] == "leak")
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// Leak kinds in Suricata alerts (the last word of each rule's msg; Basic
/// credentials are a username too, as leakwatch reports them).
fn suricata_kinds(eve: &Path) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for e in std::fs::read_to_string(eve)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let msg = e["alert"]["signature"].as_str().unwrap_or("");
        if let Some(kind) = msg.rsplit(' ').next() {
            kinds.insert(kind.to_owned());
        }
        if msg.contains("http_basic_auth") {
            kinds.insert("username".into());
        }
    }
    kinds
}

pub fn run() -> anyhow::Result<()> {
    let tools = Tools {
        leakwatch: root().join("target/release/leakwatch"),
        yaml: root().join("xtask/data/suricata.yaml"),
        rules: root().join("xtask/data/suricata.rules"),
        work: std::env::temp_dir().join(format!("lw-suricata-{}", std::process::id())),
    };
    let inputs = captures();
    std::fs::create_dir_all(&tools.work)?;
    let version = Command::new("suricata")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("{version}; {} captures", inputs.len());

    // Detections, capture by capture.
    println!(
        "\n{:<48} {:<36} {:<36} only suricata",
        "capture", "leakwatch", "suricata"
    );
    let mut per_file = serde_json::Map::new();
    let mut missed_total = 0;
    for f in &inputs {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ev = tools.work.join(format!("{name}.events"));
        let _ = std::fs::remove_file(&ev);
        tools.leakwatch(std::slice::from_ref(f), Some(&ev))?;
        let log = tools.work.join(format!("{name}.suricata"));
        tools.suricata(f, &log)?;
        let (lw, su) = (leakwatch_kinds(&ev), suricata_kinds(&log.join("eve.json")));
        let missed: Vec<&String> = su.difference(&lw).collect();
        missed_total += missed.len();
        println!(
            "{:<48} {:<36} {:<36} {}",
            name,
            lw.iter().cloned().collect::<Vec<_>>().join(","),
            su.iter().cloned().collect::<Vec<_>>().join(","),
            if missed.is_empty() {
                String::from("-")
            } else {
                missed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        );
        per_file.insert(
            name,
            serde_json::json!({"leakwatch": lw, "suricata": su, "suricata_only": missed}),
        );
    }

    // Throughput: every capture, COPIES times, in one run of each tool.
    let many = tools.work.join("many");
    std::fs::create_dir_all(&many)?;
    let mut copies = Vec::new();
    let mut bytes = 0u64;
    for i in 0..COPIES {
        for f in &inputs {
            let dst = many.join(format!(
                "{i}-{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::copy(f, &dst)?;
            bytes += std::fs::metadata(&dst)?.len();
            copies.push(dst);
        }
    }
    let tiny = [root().join("tests/data/csl_http-get-auth.pcap")];
    let (mut lw_wall, mut su_wall, mut lw_start, mut su_start) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for r in 0..ROUNDS {
        lw_wall = lw_wall.min(tools.leakwatch(&copies, None)?);
        su_wall = su_wall.min(tools.suricata(&many, &tools.work.join(format!("all{r}")))?);
        lw_start = lw_start.min(tools.leakwatch(&tiny, None)?);
        su_start = su_start.min(tools.suricata(&tiny[0], &tools.work.join(format!("tiny{r}")))?);
    }
    let mb = bytes as f64 / 1e6;
    let (lw_proc, su_proc) = (
        (lw_wall - lw_start).max(1e-6),
        (su_wall - su_start).max(1e-6),
    );
    println!(
        "\nthroughput over {} files ({mb:.1} MB), one thread each, best of {ROUNDS}:",
        copies.len()
    );
    println!(
        "  {:<10} {:>9} {:>10} {:>12} {:>14}",
        "", "wall s", "MB/s", "start-up s", "MB/s w/o it"
    );
    for (n, w, s, p) in [
        ("leakwatch", lw_wall, lw_start, lw_proc),
        ("suricata", su_wall, su_start, su_proc),
    ] {
        println!(
            "  {n:<10} {w:>9.2} {:>10.1} {s:>12.2} {:>14.1}",
            mb / w,
            mb / p
        );
    }
    let ratio = su_wall / lw_wall;
    let ratio_proc = su_proc / lw_proc;
    println!(
        "leakwatch / suricata throughput: {ratio:.1}x wall, {ratio_proc:.1}x without start-up (target ≥ 3x): {}; kinds only Suricata reported: {missed_total}",
        if ratio >= 3.0 { "met" } else { "MISSED" }
    );
    let json = serde_json::json!({
        "suricata": version,
        "captures": inputs.len(),
        "copies": COPIES,
        "bytes": bytes,
        "leakwatch_wall_s": lw_wall,
        "suricata_wall_s": su_wall,
        "leakwatch_startup_s": lw_start,
        "suricata_startup_s": su_start,
        "ratio_wall": ratio,
        "ratio_without_startup": ratio_proc,
        "suricata_only_kinds": missed_total,
        "detections": per_file,
    });
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("replay.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}", dir.join("replay.json").display());
    let _ = std::fs::remove_dir_all(&tools.work);
    Ok(())
}
