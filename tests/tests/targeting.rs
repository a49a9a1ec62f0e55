//! Address learning end to end: a DNS server in the lab answers a Qobuz name with
//! a CNAME to a CDN name and an A record; the client resolves it like an app; the
//! sensor learns the address from the answer it sees on the wire, watches the
//! client's flow to it as qobuz (cleartext), leaves an unrelated name's address
//! alone, and forgets the address when its TTL runs out. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{net::SocketAddr, path::Path, time::Duration};

use leakwatch_tests::{
    dns::{self, Zone},
    http::{HttpServer, exchange},
    lab::{self, DNS_V4, Lab, OTHER_V4, SERVER_V4},
    netns::unique,
    read,
    wait::wait_for,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";
const TTL: u32 = 4;

fn lines(path: &Path) -> Vec<Value> {
    read::json_lines(path)
}

/// The value of one series, 0 if absent.
fn metric(lab: &Lab, series: &str) -> u64 {
    read::metric(
        &lab.gateway_http_get(METRICS, "/metrics").expect("metrics"),
        series,
    )
    .unwrap_or(0)
}

fn has_from_client(r: &Value) -> bool {
    r["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == "from_client"))
}

fn get(host: &str) -> Vec<u8> {
    format!("GET /api.json/0.2/catalog/search?query=x HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Qobuz/6.1 (iPhone)\r\n\r\n").into_bytes()
}

#[test]
fn dns_answers_teach_the_sensor_service_addresses_until_their_ttl() {
    if leakwatch_tests::lab::skip_without_root(
        "dns_answers_teach_the_sensor_service_addresses_until_their_ttl",
    ) {
        return;
    }
    let lab = Lab::up().expect("lab");
    let _dns = dns::start(
        &lab.server,
        DNS_V4,
        &[
            Zone::Cname("api.qobuz.com", "qobuz-api.cdn.example.net"),
            Zone::Host("qobuz-api.cdn.example.net", SERVER_V4),
            Zone::Host("www.example.org", OTHER_V4),
        ],
        TTL,
    )
    .expect("dnsmasq");
    let _http = HttpServer::start(
        &lab.server,
        &[format!("{SERVER_V4}:80"), format!("{OTHER_V4}:8081")]
            .map(|a| a.parse::<SocketAddr>().unwrap()),
    )
    .expect("http");
    let dir = std::env::temp_dir().join(unique("targeting"));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, dump, events) = (
        dir.join("leakwatch.toml"),
        dir.join("records.jsonl"),
        dir.join("events.jsonl"),
    );
    // The TTL clamp's floor below the test's TTL, so the answer's TTL counts.
    std::fs::write(&config, "[targets]\ndns_ttl_min_secs = 1\n").unwrap();
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--config",
                config.to_str().unwrap(),
                "--dump-records",
                dump.to_str().unwrap(),
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    assert_eq!(
        metric(
            &lab,
            "leakwatch_watched_addresses{family=\"ipv4\",source=\"dns\"}"
        ),
        0
    );

    // The client resolves the Qobuz name: CNAME to the CDN, then its address.
    let addrs = dns::resolve_v4(&lab.client, "api.qobuz.com").expect("resolve");
    assert_eq!(addrs, [SERVER_V4]);
    wait_for("the address to be learned", Duration::from_secs(15), || {
        metric(
            &lab,
            "leakwatch_watched_addresses{family=\"ipv4\",source=\"dns\"}",
        ) == 1
    });
    assert!(metric(&lab, "leakwatch_dns_answers_total{result=\"learned\"}") >= 1);

    // Its HTTP flow is watched and attributed to qobuz, in cleartext.
    let resp = exchange(
        &lab.client,
        format!("{SERVER_V4}:80").parse().unwrap(),
        get("api.qobuz.com"),
    )
    .expect("http");
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    wait_for("the flow to be counted", Duration::from_secs(15), || {
        metric(
            &lab,
            "leakwatch_flows_total{service=\"qobuz\",transport=\"cleartext\"}",
        ) == 1
    });
    assert!(
        metric(
            &lab,
            "leakwatch_flow_bytes_total{service=\"qobuz\",transport=\"cleartext\",direction=\"to_server\"}"
        ) > 0
    );
    let recs = lines(&dump);
    let flow: Vec<&Value> = recs
        .iter()
        .filter(|r| r["dest_ip"] == SERVER_V4 && r["kind"] == "sample")
        .collect();
    assert!(
        !flow.is_empty() && flow.iter().all(|r| r["service"] == "qobuz"),
        "{recs:?}"
    );
    let ev = lines(&events);
    common::assert_valid_events(&ev);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["event_type"], "cleartext_flow");
    assert_eq!(ev[0]["service"], "qobuz");
    assert_eq!(
        (ev[0]["dest_ip"].as_str(), ev[0]["dest_port"].as_u64()),
        (Some(SERVER_V4), Some(80))
    );
    assert_eq!(ev[0]["http"]["hostname"], "api.qobuz.com");
    assert_eq!(
        ev[0]["http"]["path"], "/api.json/0.2/catalog/search",
        "no query values in events"
    );

    // An unrelated name: answered, seen, not watched.
    assert_eq!(
        dns::resolve_v4(&lab.client, "www.example.org").expect("resolve"),
        [OTHER_V4]
    );
    exchange(
        &lab.client,
        format!("{OTHER_V4}:8081").parse().unwrap(),
        get("www.example.org"),
    )
    .expect("http");
    wait_for("the unrelated answer", Duration::from_secs(15), || {
        metric(&lab, "leakwatch_dns_answers_total{result=\"unrelated\"}") >= 1
    });
    assert!(
        !lines(&dump).iter().any(|r| r["dest_ip"] == OTHER_V4),
        "unrelated address reached userspace"
    );
    assert_eq!(
        metric(
            &lab,
            "leakwatch_watched_addresses{family=\"ipv4\",source=\"dns\"}"
        ),
        1
    );

    // After the TTL the address leaves the trie: a new flow to it is not watched.
    wait_for(
        "the address to expire",
        Duration::from_secs(u64::from(TTL) + 5),
        || {
            metric(
                &lab,
                "leakwatch_watched_addresses{family=\"ipv4\",source=\"dns\"}",
            ) == 0
        },
    );
    let before = lines(&dump).len();
    exchange(
        &lab.client,
        format!("{SERVER_V4}:80").parse().unwrap(),
        get("api.qobuz.com"),
    )
    .expect("http");
    wait_for("the new flow's records", Duration::from_secs(15), || {
        lines(&dump).len() > before
    });
    let after = lines(&dump);
    let new = &after[before..];
    // The client's SYN and request were not watched: the request went up only as
    // the probe of a new flow to port 80 …
    assert_eq!(new[0]["kind"], "probe", "{new:?}");
    assert!(
        !new.iter()
            .any(|r| r["kind"] == "sample" && has_from_client(r)),
        "{new:?}"
    );
    // … whose Host header names Qobuz, so the address is learned again (source
    // host), the request is matched as the flow's first sample, and the rest of
    // the flow is watched from then on.
    wait_for(
        "the Host header to re-learn it",
        Duration::from_secs(15),
        || {
            metric(
                &lab,
                "leakwatch_watched_addresses{family=\"ipv4\",source=\"host\"}",
            ) == 1
        },
    );
    assert_eq!(
        metric(
            &lab,
            "leakwatch_flows_total{service=\"qobuz\",transport=\"cleartext\"}"
        ),
        2,
        "the probed flow counts too"
    );
    assert_eq!(metric(&lab, "leakwatch_probes_total{result=\"host\"}"), 1);
    let _ = std::fs::remove_dir_all(dir);
}
