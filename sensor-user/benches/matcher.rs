//! Matcher throughput: a synthetic mixed HTTP corpus (mostly benign requests,
//! about 1 % leaking) through the full matcher — HTTP parsing, decoding, the
//! Hyperscan stream, confirmation — on one core, next to a Hyperscan block scan
//! of the bytes that database sees, as the ceiling. Writes target/bench/matcher.json.
//! Run by `cargo xtask bench`.

use std::{path::PathBuf, time::Instant};

use hyperscan::prelude::*;
use sensor_user::{
    matcher::{engine::RuleSet, rules, validators::Date},
    proto::{fields::FieldBatch, http_stream::HttpStream},
};

/// A deterministic pseudo-random generator (xorshift), so every run scans the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
}

fn corpus(requests: usize) -> (Vec<Vec<u8>>, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(requests);
    let mut leaking = 0;
    for i in 0..requests {
        let leak = i % 100 == 7;
        let q = if leak {
            leaking += 1;
            format!(
                "email=jane{i}%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99&user_auth_token=QkX3u9rVb0dY7nWq2LpZsT5hG{i:07}"
            )
        } else {
            format!(
                "track_id={}&limit=50&offset={}&q={}",
                rng.next() % 1_000_000,
                rng.next() % 1000,
                rng.word(12)
            )
        };
        let body = format!(
            r#"{{"items":[{}],"page":{},"locale":"fr_FR","client":"{}"}}"#,
            (0..20)
                .map(|_| format!(
                    r#"{{"id":{},"title":"{}","duration":{}}}"#,
                    rng.next() % 100_000,
                    rng.word(18),
                    rng.next() % 600
                ))
                .collect::<Vec<_>>()
                .join(","),
            rng.next() % 50,
            rng.word(8)
        );
        let req = format!(
            "POST /api.json/0.2/catalog/search?{q} HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\nAccept: application/json\r\nAccept-Language: fr-FR,fr;q=0.9\r\nCookie: _ga=GA1.2.{}.{}; lang=fr\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            rng.next() % 1_000_000_000,
            rng.next() % 1_000_000_000,
            body.len()
        );
        out.push(req.into_bytes());
    }
    (out, leaking)
}

fn main() {
    let set = RuleSet::compile(rules::builtin()).expect("built-in rules");
    let scratch = set.scratch().expect("scratch");
    let (reqs, leaking) = corpus(20_000);
    let bytes: usize = reqs.iter().map(Vec::len).sum();
    let today = Date::today();

    // The matcher, one flow direction per request, as in the sensor.
    let mut findings = 0;
    let mut serialized = Vec::with_capacity(reqs.len());
    let mut best = f64::MAX;
    for round in 0..3 {
        let t = Instant::now();
        for r in &reqs {
            let mut http = HttpStream::new(true);
            let mut batch = FieldBatch::default();
            http.feed(r, &mut batch);
            http.finish(&mut batch);
            let mut scan = set.open().expect("stream");
            let hits = scan.scan(&set, &scratch, &batch, today).expect("scan");
            if round == 0 {
                findings += hits.len();
                let mut buf = Vec::new();
                batch.serialize(0, &mut buf);
                serialized.push(buf);
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let matcher_bps = bytes as f64 / best;

    // Ceiling: a Hyperscan block scan of what the database sees, same expressions.
    let patterns: Vec<Pattern> = set
        .rules()
        .enumerate()
        .map(|(i, r)| {
            let mut p = Pattern::with_flags(r.hyperscan_expression(), CompileFlags::empty())
                .expect("pattern");
            p.id = Some(i);
            p
        })
        .collect();
    let block: BlockDatabase = Patterns(patterns).build().expect("block database");
    let bscratch = block.alloc_scratch().expect("scratch");
    let mut raw_hits = 0usize;
    let mut best_raw = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for s in &serialized {
            block
                .scan(&s[..], &bscratch, |_, _, _, _| {
                    raw_hits += 1;
                    Matching::Continue
                })
                .expect("scan");
        }
        best_raw = best_raw.min(t.elapsed().as_secs_f64());
    }
    let raw_bps = bytes as f64 / best_raw;

    println!(
        "\ncorpus: {} requests, {:.1} MB, {leaking} leaking",
        reqs.len(),
        bytes as f64 / 1e6
    );
    println!(
        "{:<34} {:>12}",
        "matcher (parse+decode+scan+confirm)",
        format!("{:.0} MB/s", matcher_bps / 1e6)
    );
    println!(
        "{:<34} {:>12}",
        "raw Hyperscan block scan (ceiling)",
        format!("{:.0} MB/s", raw_bps / 1e6)
    );
    println!(
        "ratio matcher / ceiling: {:.2} (target ≥ 0.5); target ≥ 1 GB/s per core: {}",
        matcher_bps / raw_bps,
        if matcher_bps >= 1e9 { "met" } else { "MISSED" }
    );
    println!(
        "findings: {findings} (3 per leaking request expected: {})",
        leaking * 3
    );
    assert_eq!(
        findings,
        leaking * 3,
        "the benchmark's corpus leaks exactly this much"
    );
    let json = serde_json::json!({
        "requests": reqs.len(),
        "bytes": bytes,
        "leaking_requests": leaking,
        "findings": findings,
        "matcher_bytes_per_sec": matcher_bps,
        "raw_scan_bytes_per_sec": raw_bps,
        "ratio_to_raw_scan": matcher_bps / raw_bps,
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("matcher.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap())
        .expect("write matcher.json");
    println!("wrote {}", path.display());
}
