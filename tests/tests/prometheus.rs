//! Real Prometheus (Debian's) scrapes the real sensor in the lab with the
//! project's alert rules; a Qobuz leak shows up in `leakwatch_findings_total`
//! through Prometheus's HTTP API, and `LeakwatchLeakFound` fires. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    http::{HttpServer, exchange},
    lab::{self, Lab, OTHER_V4, SERVER_V4},
    netns::unique,
    process::ChildGuard,
    wait::wait_for,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9477";
const PROMETHEUS: &str = "127.0.0.1:9090";

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn api(lab: &Lab, path: &str) -> Value {
    let body = lab.gateway_http_get(PROMETHEUS, path).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn query(lab: &Lab, q: &str) -> Option<f64> {
    let v = api(lab, &format!("/api/v1/query?query={}", encode(q)));
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_sees_the_leak_and_the_alert_fires() {
    if leakwatch_tests::lab::skip_without_root("prometheus_sees_the_leak_and_the_alert_fires") {
        return;
    }
    let lab = Lab::up().expect("lab");
    // OTHER_V4: an analytics host nobody watches, which the app is followed to.
    let _http = HttpServer::start(
        &lab.server,
        &[
            format!("{SERVER_V4}:80").parse().unwrap(),
            format!("{OTHER_V4}:80").parse().unwrap(),
        ],
    )
    .expect("http");
    let dir = std::env::temp_dir().join(unique("prom"));
    std::fs::create_dir_all(&dir).unwrap();
    // An advisory naming the login's app version: the apps panels have data.
    let advisories = dir.join("advisories.toml");
    std::fs::write(
        &advisories,
        "[[advisories]]\nid = \"lab-1\"\nservice = \"qobuz\"\napp = \"Qobuz\"\nversions = \"<7\"\n",
    )
    .unwrap();
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--advisories",
                advisories.to_str().unwrap(),
                "--follow-apps",
            ],
        )
        .expect("sensor");

    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards/prometheus/alerts.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: leakwatch\n    static_configs:\n      - targets: ['{METRICS}']\n",
            rules.canonicalize().expect("alerts.yml").display()
        ),
    )
    .unwrap();
    let child = lab
        .gateway
        .command("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start prometheus (apt-get install prometheus)");
    let _prom = ChildGuard::new(child, "prometheus");
    wait_for(
        "Prometheus to scrape the sensor",
        Duration::from_secs(30),
        || query(&lab, "up{job=\"leakwatch\"}") == Some(1.0),
    );
    // A baseline sample before the leak, so increase() sees it.
    wait_for("the findings series", Duration::from_secs(10), || {
        query(&lab, "sum(leakwatch_xdp_packets_total)").is_some()
    });

    let login = b"GET /api.json/0.2/user/login?email=jane.doe%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\n\r\n";
    exchange(
        &lab.client,
        format!("{SERVER_V4}:80").parse().unwrap(),
        login.to_vec(),
    )
    .expect("request");
    // The same app sends the e-mail to the analytics host: the third-party
    // panels have data.
    let track = b"GET /v1/track?email=jane.doe%40example.com HTTP/1.1\r\nHost: collector.stats-example.net\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\n\r\n";
    exchange(
        &lab.client,
        format!("{OTHER_V4}:80").parse().unwrap(),
        track.to_vec(),
    )
    .expect("request");

    // Every metric the Grafana dashboard uses exists in the sensor's exposition
    // (the TLS-version series appear only with TLS traffic).
    // The apps gauges are brought up to date once a second.
    wait_for("the apps gauges", Duration::from_secs(10), || {
        lab.gateway_http_get(METRICS, "/metrics").is_ok_and(|t| {
            t.contains("leakwatch_vulnerable_app_clients{")
                && t.contains("leakwatch_third_party_findings{")
        })
    });
    let exposition = lab.gateway_http_get(METRICS, "/metrics").expect("metrics");
    let names: std::collections::HashSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for e in leakwatch_tests::dashboard::expressions(&leakwatch_tests::dashboard::load()) {
        for m in leakwatch_tests::dashboard::metric_names(&e) {
            assert!(
                names.contains(m.as_str()) || m == "leakwatch_tls_flows_total",
                "dashboard uses {m}, not exposed"
            );
        }
    }

    let findings = "sum(leakwatch_findings_total{service=\"qobuz\",kind=\"password_hash\"})";
    wait_for(
        "Prometheus to see the finding",
        Duration::from_secs(20),
        || query(&lab, findings).is_some_and(|v| v >= 1.0),
    );
    wait_for(
        "LeakwatchLeakFound to fire",
        Duration::from_secs(30),
        || {
            let alerts = api(&lab, "/api/v1/alerts");
            alerts["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|al| {
                    al["labels"]["alertname"] == "LeakwatchLeakFound"
                        && al["labels"]["service"] == "qobuz"
                        && al["labels"]["kind"] == "password_hash"
                        && al["state"] == "firing"
                })
            })
        },
    );
    // Every panel shows data after the lab ran: each query, as Grafana sends
    // it, returns at least one series (TLS versions need TLS traffic).
    // (A rate needs two scrapes of a series: give new series a few seconds.)
    let d = leakwatch_tests::dashboard::load();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut empty = Vec::new();
        for (id, title, expr) in leakwatch_tests::dashboard::queries(&d) {
            if expr.contains("leakwatch_tls_flows_total") {
                continue;
            }
            let q = leakwatch_tests::dashboard::substitute(&expr);
            let v = api(&lab, &format!("/api/v1/query?query={}", encode(&q)));
            if v["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                empty.push(format!("panel {id} ({title}): {q} → {v}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = std::fs::remove_dir_all(dir);
}
