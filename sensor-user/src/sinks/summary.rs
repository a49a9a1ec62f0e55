//! What `leakwatch replay` prints on stderr: a progress line while it reads
//! (on a terminal, for large inputs) and the final summary table, built from the
//! run's own metrics exposition so it always agrees with `--metrics-out`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write,
    time::{Duration, Instant},
};

use crate::capture::pcap::ReadCounts;

/// Series of `metric` in an exposition: (labels, value), zero values left out.
pub fn series(text: &str, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let value: f64 = value.trim().parse().ok()?;
            let mut m = BTreeMap::new();
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once("=\"")?;
                m.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
            (value != 0.0).then_some((m, value))
        })
        .collect()
}

/// Totals of a replay run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: usize,
    pub packets: u64,
    pub bytes: u64,
    /// What reading the captures counted (skipped link types, cut records…).
    pub capture: ReadCounts,
    pub records: u64,
    pub elapsed: Duration,
}

/// The summary table: totals, flows by service × transport, findings by
/// service × kind, replays by service.
pub fn table(t: &Totals, metrics: &str) -> String {
    let secs = t.elapsed.as_secs_f64();
    let mut out = format!(
        "replayed {} packets from {} file{} ({:.1} MB; {} of other link types skipped), {} sampled records, in {:.2} s ({:.1} MB/s)\n",
        t.packets,
        t.files,
        if t.files == 1 { "" } else { "s" },
        t.bytes as f64 / 1e6,
        t.capture.skipped,
        t.records,
        secs,
        t.bytes as f64 / 1e6 / secs.max(1e-9)
    );
    // Records taken as Wireshark takes them, said once each.
    let c = &t.capture;
    for (n, what) in [
        (
            c.truncated,
            "cut by the capture's snap length, analysed as far as they go",
        ),
        (
            c.oversized,
            "with an included length above the original, taken as captured",
        ),
        (
            c.bad_timestamps,
            "with a timestamp fraction out of range, clamped",
        ),
    ] {
        if n > 0 {
            let _ = writeln!(
                out,
                "warning: {n} record{} {what}",
                if n == 1 { "" } else { "s" }
            );
        }
    }
    let section = |out: &mut String, title: &str, metric: &str, col: &str| {
        let mut rows: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (labels, v) in series(metrics, metric) {
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            *rows.entry((get("service"), get(col))).or_default() += v;
        }
        // Writing to a String does not fail.
        let _ = write!(
            out,
            "\n  {title:<10} {:<16} {:<16} {:>8}\n",
            "service",
            if col.is_empty() { "" } else { col },
            "count"
        );
        if rows.is_empty() {
            out.push_str("  (none)\n");
        }
        for ((svc, c), n) in rows {
            let _ = writeln!(out, "  {:<10} {svc:<16} {c:<16} {n:>8}", "");
        }
    };
    section(&mut out, "flows", "leakwatch_flows_total", "transport");
    section(&mut out, "findings", "leakwatch_findings_total", "kind");
    section(&mut out, "replays", "leakwatch_replays_total", "");
    // `replay --block MODE`: what the mode would have blocked.
    if !series(metrics, "leakwatch_would_block_total").is_empty() {
        section(
            &mut out,
            "would block",
            "leakwatch_would_block_total",
            "reason",
        );
    }
    out
}

/// A one-line progress display, redrawn at most ten times a second.
pub struct Progress {
    total: u64,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        Self {
            total,
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    /// `done` bytes of `total` read, in file `file` of `files`.
    pub fn update(&mut self, out: &mut impl Write, done: u64, file: usize, files: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
        let pct = if self.total == 0 {
            100.0
        } else {
            100.0 * done as f64 / self.total as f64
        };
        let width = 30;
        let filled = ((pct / 100.0) * width as f64).round() as usize;
        let _ = write!(
            out,
            "\r[{}{}] {pct:>3.0} %  {:.1}/{:.1} MB  {:.1} MB/s  file {file}/{files}",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            done as f64 / 1e6,
            self.total as f64 / 1e6,
            done as f64 / 1e6 / secs,
        );
        let _ = out.flush();
    }

    /// Clears the line, if anything was drawn.
    pub fn finish(&mut self, out: &mut impl Write) {
        if self.shown {
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE leakwatch_flows counter\n\
        leakwatch_flows_total{service=\"qobuz\",transport=\"cleartext\"} 2\n\
        leakwatch_flows_total{service=\"qobuz\",transport=\"tls\"} 0\n\
        leakwatch_findings_total{service=\"qobuz\",kind=\"email\",severity=\"medium\"} 1\n\
        leakwatch_findings_total{service=\"qobuz\",kind=\"email\",severity=\"high\"} 2\n";

    #[test]
    fn series_skip_zero_and_read_labels() {
        let s = series(TEXT, "leakwatch_flows_total");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0["transport"], "cleartext");
        assert_eq!(s[0].1, 2.0);
    }

    #[test]
    fn table_sums_severities_per_kind() {
        let t = Totals {
            files: 1,
            packets: 31,
            bytes: 3_900,
            records: 12,
            elapsed: Duration::from_millis(10),
            ..Totals::default()
        };
        let out = table(&t, TEXT);
        assert!(
            out.starts_with("replayed 31 packets from 1 file ("),
            "{out}"
        );
        assert!(
            out.contains("qobuz            cleartext               2"),
            "{out}"
        );
        assert!(
            out.contains("qobuz            email                   3"),
            "{out}"
        );
        assert!(out.contains("replays"), "{out}");
        assert!(!out.contains("warning"), "{out}");
    }

    #[test]
    fn odd_records_are_warned_about_once_each() {
        let t = Totals {
            capture: ReadCounts {
                truncated: 12,
                bad_timestamps: 1,
                ..ReadCounts::default()
            },
            ..Totals::default()
        };
        let out = table(&t, TEXT);
        assert!(
            out.contains("warning: 12 records cut by the capture's snap length"),
            "{out}"
        );
        assert!(
            out.contains("warning: 1 record with a timestamp fraction out of range"),
            "{out}"
        );
        assert!(!out.contains("included length"), "{out}");
    }

    #[test]
    fn progress_draws_a_bar_and_clears_it() {
        let mut p = Progress::new(200);
        let mut out = Vec::new();
        p.update(&mut out, 100, 1, 2);
        p.update(&mut out, 150, 1, 2); // within 100 ms: not redrawn
        p.finish(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(" 50 %") && s.contains("file 1/2"), "{s}");
        assert!(!s.contains(" 75 %"));
        assert!(s.ends_with("\r\x1b[K"));
    }
}
