//! Following apps to third-party hosts (`follow_apps`), end to end: a Qobuz
//! app that sends the user's e-mail and name in cleartext to an analytics
//! host nobody watches. In replay, on captures built here, and live in the
//! lab with the analytics host on the server side; IPv4 and IPv6 each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    convo::Conversation,
    http::{RecordingServer, requests_on_one_connection, requests_on_one_connection_then},
    lab::{self, Lab, OTHER_V4, OTHER_V6, SERVER_V4, SERVER_V6},
    netns::unique,
    read,
    scenarios::{self, BROWSER_UA, MD5, analytics_requests},
    wait::wait_for,
};
use serde_json::Value;

mod common;

const APP_UA: &str = "Qobuz/6.1.2 (iPhone; iOS 17.4; Scale/3.00)";
const ANALYTICS: &str = scenarios::ANALYTICS.0;

fn login(ua: &str) -> String {
    format!(
        "GET /api.json/0.2/user/login?username=jane&password={MD5} HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: {ua}\r\n\r\n"
    )
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("follow"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `leak` events by destination: (kind, destination, destination_host, client).
fn leaks(events: &[Value]) -> Vec<(String, String, Option<String>, String)> {
    let mut v: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "leak")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["destination"].as_str().unwrap().to_owned(),
                e["destination_host"].as_str().map(str::to_owned),
                e["src_ip"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn replay(pcap: &Path, d: &Path, watch: &str, follow: bool) -> (Vec<Value>, String) {
    let events = d.join(format!("events-{follow}.jsonl"));
    let metrics = d.join(format!("metrics-{follow}.txt"));
    let mut cmd = Command::new(lab::leakwatch_bin());
    cmd.arg("replay")
        .arg(pcap)
        .args(["--watch", watch, "--events"])
        .arg(&events)
        .arg("--metrics-out")
        .arg(&metrics)
        .arg("--state-dir")
        .arg(d.join("state"));
    if follow {
        cmd.arg("--follow-apps");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    (ev, std::fs::read_to_string(&metrics).unwrap())
}

/// The e-mail, and the first and last names (two values).
fn third_party(client: &str) -> Vec<(String, String, Option<String>, String)> {
    ["email", "person_name", "person_name"]
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                "third_party".to_owned(),
                Some(ANALYTICS.to_owned()),
                client.to_owned(),
            )
        })
        .collect()
}

fn service_leaks(client: &str) -> Vec<(String, String, Option<String>, String)> {
    ["password_hash", "username"]
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                "service".to_owned(),
                None,
                client.to_owned(),
            )
        })
        .collect()
}

/// Addresses of one family for the replay test: the app's client, the
/// browser's, the service (watched) and the analytics host (not watched).
struct Hosts {
    app: &'static str,
    browser: &'static str,
    service: &'static str,
    analytics: &'static str,
}

#[test]
fn replay_follows_the_app_to_its_analytics_host_and_nothing_else() {
    for h in [
        Hosts {
            app: "192.0.2.10",
            browser: "192.0.2.11",
            service: "198.51.100.2",
            analytics: "203.0.113.80",
        },
        Hosts {
            app: "2001:db8:1::10",
            browser: "2001:db8:1::11",
            service: "2001:db8:2::2",
            analytics: "2001:db8:3::80",
        },
    ] {
        replay_follows(&h);
    }
}

fn replay_follows(h: &Hosts) {
    let d = dir();
    let watch = if h.service.contains(':') {
        format!("{}/128=qobuz", h.service)
    } else {
        format!("{}/32=qobuz", h.service)
    };
    // The app logs in to Qobuz, then talks to the analytics host; a browser
    // sends the very same requests there: not an app's.
    let mut convos = Vec::new();
    let mut c = Conversation::new(h.app, 41000, h.service, 80);
    c.client(login(APP_UA).as_bytes()).server(OK).close();
    convos.push(c);
    for (client, port, ua) in [(h.app, 41001, APP_UA), (h.browser, 41002, BROWSER_UA)] {
        let mut c = Conversation::new(client, port, h.analytics, 80);
        let [hello, track] = analytics_requests(ua);
        c.client(hello.as_bytes())
            .server(OK)
            .client(track.as_bytes())
            .server(OK)
            .close();
        convos.push(c);
    }
    let pcap = d.join("follow.pcap");
    Conversation::write(&pcap, &convos.iter().collect::<Vec<_>>()).unwrap();

    let (ev, metrics) = replay(&pcap, &d, &watch, true);
    let mut want = service_leaks(h.app);
    want.extend(third_party(h.app));
    want.sort();
    assert_eq!(leaks(&ev), want, "{ev:#?}");
    let tp = ev
        .iter()
        .find(|e| e["destination"] == "third_party")
        .unwrap();
    assert_eq!(tp["service"], "qobuz");
    assert_eq!(tp["dest_ip"], h.analytics);
    // A followed flow is not the service's: no cleartext_flow event for it.
    assert!(
        !ev.iter()
            .any(|e| e["event_type"] == "cleartext_flow" && e["dest_ip"] == h.analytics),
        "{ev:#?}"
    );
    for line in [
        r#"leakwatch_findings_by_destination_total{service="qobuz",destination="third_party"} 3"#,
        r#"leakwatch_findings_by_destination_total{service="qobuz",destination="service"} 2"#,
        r#"leakwatch_followed_flows_total{service="qobuz"} 1"#,
        r#"leakwatch_third_party_findings{service="qobuz",host="collector.stats-example.net"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // follow_apps off: the service's leaks only.
    let (ev, metrics) = replay(&pcap, &d, &watch, false);
    assert_eq!(leaks(&ev), service_leaks(h.app), "{ev:#?}");
    assert!(metrics.contains(
        r#"leakwatch_findings_by_destination_total{service="qobuz",destination="third_party"} 0"#
    ));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn live_follows_the_app_to_an_analytics_host_on_the_server_side() {
    if lab::skip_without_root("live_follows_the_app_to_an_analytics_host_on_the_server_side") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let sa = |host: &str| -> SocketAddr {
        if host.contains(':') {
            format!("[{host}]:80")
        } else {
            format!("{host}:80")
        }
        .parse()
        .unwrap()
    };
    // (the app's client, the service, the analytics host), per family; the
    // browser is the second client.
    let families = [
        (lab::CLIENT_V4, SERVER_V4, OTHER_V4),
        (lab::CLIENT_V6, SERVER_V6, OTHER_V6),
    ];
    let listen: Vec<SocketAddr> = families
        .iter()
        .flat_map(|(_, service, analytics)| [sa(service), sa(analytics)])
        .collect();
    let _server = RecordingServer::start(&lab.server, &listen).expect("server");
    let d = dir();
    let events = d.join("events.jsonl");
    let metrics_addr = "127.0.0.1:9477";
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            metrics_addr,
            &[
                "--watch",
                &format!("{SERVER_V4}/32=qobuz"),
                "--watch",
                &format!("{SERVER_V6}/128=qobuz"),
                "--follow-apps",
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    // One keep-alive connection per client: the first request is the probe,
    // the second comes once the sensor decided on it (what it sends in
    // between is not seen live, by design: docs/app-audit.md). The app's
    // flow is followed; the browser's probe is counted and left alone.
    let metric = |series: &str| {
        read::metric(
            &lab.gateway_http_get(metrics_addr, "/metrics").unwrap(),
            series,
        )
        .unwrap_or(0)
    };
    let talk = |ns, to, reqs: Vec<String>, decided: &dyn Fn() -> bool| {
        let reqs = reqs.into_iter().map(String::into_bytes).collect();
        requests_on_one_connection_then(ns, to, reqs, |_| {
            wait_for(
                "the sensor's decision on the probe",
                Duration::from_secs(15),
                decided,
            );
        })
        .unwrap();
    };
    let unrelated = r#"leakwatch_probes_total{result="unrelated"}"#;
    let mut want = Vec::new();
    for (n, (client, service, analytics)) in (1..).zip(families) {
        let (service, analytics) = (sa(service), sa(analytics));
        requests_on_one_connection(&lab.client, service, vec![login(APP_UA).into_bytes()]).unwrap();
        talk(
            &lab.client,
            analytics,
            analytics_requests(APP_UA).into(),
            &|| metric(r#"leakwatch_followed_flows_total{service="qobuz"}"#) == n,
        );
        assert_eq!(metric(unrelated), 2 * n - 1);
        talk(
            &lab.client2,
            analytics,
            analytics_requests(BROWSER_UA).into(),
            &|| metric(unrelated) == 2 * n,
        );
        want.extend(service_leaks(client));
        want.extend(third_party(client));
    }
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(15);
    while leaks(&read::json_lines(&events)).len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let a late, wrong finding (the browser's) show up before judging.
    std::thread::sleep(Duration::from_secs(1));
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    assert_eq!(leaks(&ev), want, "{ev:#?}");
    let exposition = lab.gateway_http_get(metrics_addr, "/metrics").unwrap();
    for line in [
        r#"leakwatch_followed_flows_total{service="qobuz"} 2"#,
        r#"leakwatch_third_party_findings{service="qobuz",host="collector.stats-example.net"} 6"#,
        // The follow window, once per followed flow: under a second here.
        "leakwatch_follow_latency_seconds_count 2",
        r#"leakwatch_follow_latency_seconds_bucket{le="1.0"} 2"#,
    ] {
        assert!(exposition.contains(line), "{line} not in\n{exposition}");
    }
    let _ = std::fs::remove_dir_all(d);
}
