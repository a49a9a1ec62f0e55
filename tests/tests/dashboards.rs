//! The Grafana dashboard: structure, and every expression valid PromQL for
//! Prometheus (`promtool check rules`). That the metrics it uses exist is checked
//! against the live sensor in tests/prometheus.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::collections::HashSet;

use leakwatch_tests::{dashboard, netns::unique};

#[test]
fn structure() {
    let d = dashboard::load();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars: Vec<(&str, &str)> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("datasource", "datasource"),
        ("instance", "query"),
        ("service", "query"),
    ] {
        assert!(vars.contains(&want), "variable {want:?} missing: {vars:?}");
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = HashSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let g = &p["gridPos"];
        let (x, w, h) = (
            g["x"].as_u64().expect("x"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(
            g["y"].as_u64().is_some() && w > 0 && h > 0 && x + w <= 24,
            "panel {id}: gridPos {g}"
        );
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {id} must use the datasource variable"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {id} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "panel {id}"
                );
            }
        }
    }
    // Panels of the same row band do not overlap.
    let mut cells = HashSet::new();
    for p in panels {
        let g = &p["gridPos"];
        for x in g["x"].as_u64().unwrap()..g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() {
            for y in g["y"].as_u64().unwrap()..g["y"].as_u64().unwrap() + g["h"].as_u64().unwrap() {
                assert!(cells.insert((x, y)), "panels overlap at ({x}, {y})");
            }
        }
    }
}

#[test]
fn every_expression_is_valid_promql() {
    let exprs = dashboard::expressions(&dashboard::load());
    assert!(exprs.len() >= 15);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = dashboard::substitute(e);
        assert!(!e.contains('$'), "a Grafana variable is left in {e}");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let path = std::env::temp_dir().join(format!("{}.yml", unique("dash")));
    std::fs::write(&path, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (apt-get install prometheus)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "promtool check rules:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every aggregation keeps `instance` (`sum by (instance, …)`), so two
/// gateways are never added together: no bare `sum(…)`, no `by` list
/// without it (dashboards/README.md).
#[test]
fn every_aggregation_keeps_the_instance() {
    let mut bad = Vec::new();
    for (id, title, expr) in dashboard::queries(&dashboard::load()) {
        for problem in aggregations_without_instance(&expr) {
            bad.push(format!("panel {id} ({title}): {problem} in {expr}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    // The check itself: it finds both ways of losing the instance.
    assert_eq!(aggregations_without_instance("sum(rate(x[5m]))").len(), 1);
    assert_eq!(
        aggregations_without_instance("max by (service) (x) + clamp_max(y, 1)").len(),
        1
    );
    assert!(
        aggregations_without_instance("histogram_quantile(0.5, sum by (instance, le) (x))")
            .is_empty()
    );
}

/// The aggregations of `expr` that drop `instance`.
fn aggregations_without_instance(expr: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for op in ["sum", "avg", "min", "max", "count"] {
        let mut from = 0;
        while let Some(i) = expr[from..].find(op).map(|i| i + from) {
            from = i + op.len();
            let before_ok = expr[..i].chars().next_back().is_none_or(|c| !word(c));
            let rest = &expr[from..];
            if !before_ok || rest.starts_with(|c: char| word(c)) {
                continue;
            }
            let rest = rest.trim_start();
            if let Some(list) = rest.strip_prefix("by") {
                let list = list.trim_start();
                let groups = list
                    .strip_prefix('(')
                    .and_then(|l| l.split_once(')'))
                    .map_or("", |(g, _)| g);
                if !groups.split(',').any(|g| g.trim() == "instance") {
                    out.push(format!("{op} by ({groups})"));
                }
            } else if rest.starts_with('(') {
                out.push(format!("{op}(…) without by"));
            }
        }
    }
    out
}
