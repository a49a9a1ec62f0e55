//! Reading what a running sensor writes: JSON-lines files and the metrics text.

use std::path::Path;

use serde_json::Value;

/// The complete lines of a JSON-lines file the sensor may still be appending to
/// (a trailing line without its newline is left for the next read).
pub fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// The value of the series `name{labels}` in a Prometheus text exposition:
/// summed over every series of `name` whose labels include these (a label
/// added to a metric does not change what a test reads).
pub fn metric(exposition: &str, series: &str) -> Option<u64> {
    let (name, want) = labels_of(series);
    let mut sum = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, have) = labels_of(head);
        if n == name
            && want.iter().all(|w| have.contains(w))
            && let Ok(v) = value.trim().parse::<f64>()
        {
            *sum.get_or_insert(0) += v as u64;
        }
    }
    sum
}

/// `name{a="x",b="y"}` → (name, [(a, x), (b, y)]).
fn labels_of(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.trim(), Vec::new());
    };
    let body = rest.trim_end().trim_end_matches('}');
    let labels = body
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((
                k.trim_start_matches(',').to_owned(),
                v.trim_end_matches('"').to_owned(),
            ))
        })
        .collect();
    (name, labels)
}

/// Non-zero `leakwatch_findings_total` summed over severities, by (service, kind).
pub fn findings(exposition: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut m = std::collections::BTreeMap::new();
    for line in exposition
        .lines()
        .filter(|l| l.starts_with("leakwatch_findings_total{"))
    {
        let label = |k: &str| {
            line.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if n > 0 {
            *m.entry((label("service"), label("kind"))).or_default() += n;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_lookup() {
        let text = "# HELP x\nx_total{a=\"1\"} 5\nx_total{a=\"10\"} 7\n";
        assert_eq!(metric(text, "x_total{a=\"1\"}"), Some(5));
        assert_eq!(metric(text, "x_total{a=\"10\"}"), Some(7));
        assert_eq!(metric(text, "y_total"), None);
    }

    #[test]
    fn findings_sum_severities() {
        let text = "leakwatch_findings_total{service=\"q\",kind=\"email\",severity=\"low\"} 1\n\
                    leakwatch_findings_total{service=\"q\",kind=\"email\",severity=\"high\"} 2\n\
                    leakwatch_findings_total{service=\"q\",kind=\"gender\",severity=\"low\"} 0\n";
        let f = findings(text);
        assert_eq!(f.len(), 1);
        assert_eq!(f[&("q".to_owned(), "email".to_owned())], 3);
    }

    #[test]
    fn partial_last_line_is_left() {
        let p = std::env::temp_dir().join(crate::netns::unique("jl"));
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert_eq!(json_lines(&p).len(), 1);
        let _ = std::fs::remove_file(p);
    }
}
