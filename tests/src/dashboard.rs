//! Reading the Grafana dashboard for tests: panels, expressions, metric names.

use serde_json::Value;

pub const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dashboards/grafana/leakwatch.json"
);

pub fn load() -> Value {
    let text = std::fs::read_to_string(PATH).unwrap_or_else(|e| panic!("{PATH}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{PATH}: {e}"))
}

/// (panel id, title, expression) of every query of every panel.
pub fn queries(d: &Value) -> Vec<(u64, String, String)> {
    d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let id = p["id"].as_u64().unwrap_or(0);
            let title = p["title"].as_str().unwrap_or("").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((id, title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// Every PromQL expression of every panel.
pub fn expressions(d: &Value) -> Vec<String> {
    d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The expression as Prometheus sees it once Grafana filled its variables in.
pub fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
        .replace("$service", ".*")
        .replace("$job", "leakwatch")
}

/// `leakwatch_*` metric names an expression uses (histogram series mapped to
/// their family's exposed names).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leakwatch_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}
