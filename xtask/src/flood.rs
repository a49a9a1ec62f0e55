//! `cargo xtask bench --only flood`: what a new flow costs as the tracked set
//! grows. Two captures of new flows to a watched prefix (a SYN, then half a
//! request, never finished), 20,000 and 200,000 flows, replayed with
//! `leakwatch replay`: past the flow tables' size (65,536) every new flow evicts
//! one, and that must cost the same whatever the number tracked. The time ratio
//! must stay ≤ 12× for 10× the flows. Then the live flood in the lab
//! (`flood_lab`). Both → target/bench/flood.json (`replay`, `lab`).

use std::{
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::shell::root;

const SMALL: u32 = 20_000;
const LARGE: u32 = 200_000;
const MAX_RATIO: f64 = 12.0;
/// Best of this many runs per capture.
const RUNS: usize = 3;

/// An Ethernet/IPv4/TCP frame from 192.0.2.0/24 to 198.51.100.2:80.
fn frame(flow: u32, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    // Distinct flows: client address from the low byte, port from the rest.
    f.extend_from_slice(&[192, 0, 2, (flow & 0xff) as u8]);
    f.extend_from_slice(&[198, 51, 100, 2]);
    let sport = 1024 + (flow >> 8) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A pcap of `flows` new flows, 5 µs apart.
fn write_capture(path: &Path, flows: u32) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    // pcap, microseconds, Ethernet.
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
    w.write_all(&65_535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    let half = b"GET /api.json/0.2/user/login?email=jane%40example.com&pass";
    let record = |w: &mut BufWriter<std::fs::File>, us: u64, f: &[u8]| -> std::io::Result<()> {
        w.write_all(&((us / 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&((us % 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(f)
    };
    for i in 0..flows {
        let us = 1_700_000_000_000_000 + u64::from(i) * 5;
        record(&mut w, us, &frame(i, 0x02, 1000, &[]))?;
        record(&mut w, us + 2, &frame(i, 0x18, 1001, half))?;
    }
    w.flush()?;
    Ok(())
}

/// Seconds `leakwatch replay` takes on `capture` (best of [`RUNS`]).
fn time_replay(bin: &Path, capture: &Path, state: &Path) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("replay")
            .arg(capture)
            .args(["--watch", "198.51.100.0/24=qobuz", "--progress", "never"])
            .arg("--state-dir")
            .arg(state)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "replay of {} failed: {}",
                capture.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

pub fn run() -> anyhow::Result<()> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let bin = root().join("target/release/leakwatch");
    let state = dir.join("flood-state");
    let mut times = Vec::new();
    for flows in [SMALL, LARGE] {
        let cap: PathBuf = dir.join(format!("flood-{flows}.pcap"));
        write_capture(&cap, flows)?;
        let secs = time_replay(&bin, &cap, &state)?;
        println!(
            "  {flows:>7} new flows: {secs:.3} s ({:.2} µs per flow)",
            secs * 1e6 / f64::from(flows)
        );
        times.push((flows, secs));
        let _ = std::fs::remove_file(&cap);
    }
    let ratio = times[1].1 / times[0].1;
    let ok = ratio <= MAX_RATIO;
    println!(
        "  ratio {ratio:.2}× for {}× the flows (target ≤ {MAX_RATIO}×): {}",
        LARGE / SMALL,
        if ok { "met" } else { "MISSED" }
    );
    let replay = serde_json::json!({
        "what": "leakwatch replay of new flows to a watched prefix (SYN + half a request), best of 3",
        "flows": times.iter().map(|(f, s)| serde_json::json!({"flows": f, "seconds": s, "us_per_flow": s * 1e6 / f64::from(*f)})).collect::<Vec<_>>(),
        "ratio": ratio,
        "target_max_ratio": MAX_RATIO,
        "met": ok,
    });
    println!("  the live flood in the lab:");
    let lab = crate::flood_lab::run(&bin);
    let json = serde_json::json!({
        "replay": replay,
        "lab": lab.as_ref().map_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }), Clone::clone),
    });
    std::fs::write(dir.join("flood.json"), serde_json::to_string_pretty(&json)?)?;
    if !ok {
        bail!("new-flow cost grows with the tracked flows: {ratio:.2}× > {MAX_RATIO}×");
    }
    lab.map(|_| ())
}
