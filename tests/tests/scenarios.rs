//! The lab's streaming-app scenarios end to end: two clients (one on a
//! VLAN-tagged LAN), the gateway running leakwatch with XDP on all three of its
//! interfaces, a server namespace with DNS, HTTP and HTTPS for the catalog hosts.
//! Addresses are learned from the DNS answers the clients' lookups carry; nothing
//! is configured. Asserted through /metrics and events. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{path::PathBuf, time::Duration};

use leakwatch_tests::{
    lab::{self, CLIENT_V4, CLIENT2_V4, LAN_IF, LAN2_IF, Lab},
    netns::{Netns, unique},
    read,
    scenarios::{self, Scenario},
    tls,
    wait::wait_for,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";

/// A lab with the scenario services and a sensor writing events.
struct World {
    lab: Lab,
    _services: lab::Services,
    _sensor: leakwatch_tests::process::ChildGuard,
    events: PathBuf,
}

impl World {
    fn up(extra: &[&str]) -> Self {
        let lab = Lab::up().expect("lab");
        let services = lab.serve_scenarios(300).expect("services");
        let events = std::env::temp_dir().join(format!("{}.jsonl", unique("scen")));
        let mut args = vec!["--events", events.to_str().unwrap()];
        args.extend_from_slice(extra);
        let sensor = lab
            .start_sensor(&lab::leakwatch_bin(), METRICS, &args)
            .expect("sensor");
        Self {
            lab,
            _services: services,
            _sensor: sensor,
            events,
        }
    }

    /// Sends the scenario's request in cleartext from `ns`, resolving its host
    /// first (a method so tests read as what the world does).
    #[expect(clippy::unused_self, reason = "reads as an action of the world")]
    fn send(&self, ns: &Netns, s: &Scenario, v6: bool) {
        let (_, resp) = scenarios::send(ns, s, v6).expect("request");
        assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", s.what);
    }

    fn metrics(&self) -> String {
        self.lab
            .gateway_http_get(METRICS, "/metrics")
            .expect("metrics")
    }

    fn events(&self) -> Vec<Value> {
        let ev = read::json_lines(&self.events);
        common::assert_valid_events(&ev);
        ev
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.events);
    }
}

#[test]
fn every_streaming_scenario_is_found_and_nothing_else() {
    if leakwatch_tests::lab::skip_without_root("every_streaming_scenario_is_found_and_nothing_else")
    {
        return;
    }
    let w = World::up(&[]);
    let all = scenarios::scenarios();
    for s in &all {
        w.send(&w.lab.client, s, false);
    }
    // The same secrets to a host that is no streaming service: nothing.
    w.send(&w.lab.client, &scenarios::unwatched(), false);
    let want = scenarios::expected_of(&all);
    wait_for("every finding", Duration::from_secs(15), || {
        read::findings(&w.metrics()) == want
    });
    std::thread::sleep(Duration::from_millis(500));
    let text = w.metrics();
    assert_eq!(read::findings(&text), want, "exactly these, nothing more");
    for svc in ["qobuz", "deezer", "spotify", "soundcloud"] {
        assert!(
            read::metric(
                &text,
                &format!("leakwatch_flows_total{{service=\"{svc}\",transport=\"cleartext\"}}")
            )
            .unwrap_or(0)
                >= 1,
            "{svc} flows counted as cleartext"
        );
    }
    let ev = w.events();
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event_type"] == "leak").collect();
    assert_eq!(
        leaks.len() as u64,
        want.values().sum::<u64>(),
        "one event per finding"
    );
    assert!(leaks.iter().all(|e| e["src_ip"] == CLIENT_V4
        && e["interface"] == LAN_IF
        && e["dest_ip"] != "198.51.100.3"));
    assert!(
        !ev.iter().any(|e| e["event_type"] == "replay"),
        "one client reusing its own token is no replay"
    );
    // Each service's app, as its requests' User-Agent names it.
    for e in &leaks {
        let app = match e["service"].as_str().unwrap() {
            "qobuz" => "Qobuz",
            "deezer" => "Deezer",
            "spotify" => "Spotify",
            "soundcloud" => "SoundCloud",
            other => panic!("a finding for {other}"),
        };
        assert_eq!(e["app"]["name"], app, "{e}");
    }
    // The registration's fields, from its JSON body.
    let reg: Vec<&str> = leaks
        .iter()
        .filter(|e| e["http"]["path"] == "/api.json/0.2/user/create")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["person_name", "email", "birthdate", "gender", "device_info"] {
        assert!(reg.contains(&k), "registration: {k} in {reg:?}");
    }
    // Privacy: no secret in full anywhere in the events.
    let text = std::fs::read_to_string(&w.events).unwrap();
    for secret in [
        scenarios::MD5,
        scenarios::TOKEN,
        scenarios::ARL,
        scenarios::JWT,
        scenarios::BASIC,
        scenarios::IDFA,
        "hunter2",
        "jane.doe@",
    ] {
        assert!(!text.contains(secret), "{secret} in full in the events");
    }
}

#[test]
fn ipv6_and_the_vlan_tagged_lan() {
    if leakwatch_tests::lab::skip_without_root("ipv6_and_the_vlan_tagged_lan") {
        return;
    }
    let dump = std::env::temp_dir().join(format!("{}.jsonl", unique("vlan")));
    let w = World::up(&["--dump-records", dump.to_str().unwrap()]);
    let login = scenarios::qobuz_login();
    w.send(&w.lab.client, &login, true);
    let reg = &scenarios::scenarios()[3];
    w.send(&w.lab.client2, reg, false);
    w.send(&w.lab.client2, &login, true);
    wait_for("the leaks", Duration::from_secs(15), || {
        let ev = read::json_lines(&w.events);
        ev.iter().filter(|e| e["event_type"] == "leak").count() >= 2 + 7 + 2
    });
    let ev = w.events();
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event_type"] == "leak").collect();
    let from = |ip: &str, iface: &str| {
        leaks
            .iter()
            .filter(|e| e["src_ip"].as_str().unwrap().starts_with(ip) && e["interface"] == iface)
            .count()
    };
    assert_eq!(
        from("2001:db8:c::10", LAN_IF),
        2,
        "IPv6 from client: {leaks:?}"
    );
    assert_eq!(from(CLIENT2_V4, LAN2_IF), 7, "over VLAN 100: {leaks:?}");
    assert_eq!(from("2001:db8:d::10", LAN2_IF), 2, "IPv6 over VLAN 100");
    assert!(
        leaks
            .iter()
            .filter(|e| e["src_ip"].as_str().unwrap().contains(':'))
            .all(|e| e["dest_ip"] == "2001:db8:5::2")
    );
    // The tag is in the frames XDP parsed: records from client2 say so, and
    // only those.
    let records = read::json_lines(&dump);
    let _ = std::fs::remove_file(&dump);
    let tagged = |r: &Value| {
        r["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "vlan"))
    };
    let from2: Vec<&Value> = records
        .iter()
        .filter(|r| r["interface"] == LAN2_IF)
        .collect();
    assert!(!from2.is_empty());
    assert!(from2.iter().all(|r| tagged(r)), "{from2:?}");
    assert!(
        records
            .iter()
            .filter(|r| r["interface"] != LAN2_IF)
            .all(|r| !tagged(r))
    );
}

#[test]
fn the_same_requests_over_tls_leak_nothing() {
    if leakwatch_tests::lab::skip_without_root("the_same_requests_over_tls_leak_nothing") {
        return;
    }
    let w = World::up(&[]);
    let all = scenarios::scenarios();
    for s in &all {
        let body = tls::curl(&w.lab.client, &s.curl_args("https")).expect("curl https");
        assert!(!body.is_empty(), "{}: an answer over TLS", s.what);
    }
    wait_for("the TLS flows", Duration::from_secs(15), || {
        let t = w.metrics();
        ["qobuz", "deezer", "spotify", "soundcloud"]
            .iter()
            .all(|svc| {
                read::metric(
                    &t,
                    &format!("leakwatch_flows_total{{service=\"{svc}\",transport=\"tls\"}}"),
                )
                .unwrap_or(0)
                    >= 1
            })
    });
    let text = w.metrics();
    assert!(
        read::findings(&text).is_empty(),
        "{:?}",
        read::findings(&text)
    );
    assert!(
        read::metric(&text, "leakwatch_probes_total{result=\"sni\"}").unwrap_or(0) >= 1
            || read::metric(&text, "leakwatch_dns_answers_total{result=\"learned\"}").unwrap_or(0)
                >= 4,
        "{text}"
    );
    assert!(
        read::metric(
            &text,
            "leakwatch_tls_flows_total{service=\"qobuz\",version=\"1.3\"}"
        )
        .unwrap_or(0)
            >= 1,
        "TLS 1.3 recorded"
    );
    let ev = w.events();
    assert!(!ev.iter().any(|e| e["event_type"] == "leak"));
    assert!(!ev.iter().any(|e| e["event_type"] == "cleartext_flow"));
}

#[test]
fn tls_to_an_address_learned_only_from_its_sni() {
    if leakwatch_tests::lab::skip_without_root("tls_to_an_address_learned_only_from_its_sni") {
        return;
    }
    // No DNS answer crosses the gateway (curl --resolve): the sensor learns
    // www.deezer.com's address from the ClientHello's SNI alone. The flow that
    // teaches it started unwatched; the next one is watched from its SYN.
    let w = World::up(&[]);
    let s = &scenarios::scenarios()[4];
    let mut args = vec![
        "--resolve".to_owned(),
        "www.deezer.com:443:198.51.100.5".into(),
    ];
    args.extend(s.curl_args("https"));
    tls::curl(&w.lab.client, &args).expect("curl");
    wait_for("the SNI", Duration::from_secs(15), || {
        read::metric(&w.metrics(), "leakwatch_probes_total{result=\"sni\"}").unwrap_or(0) >= 1
    });
    tls::curl(&w.lab.client, &args).expect("curl");
    wait_for("the TLS flow", Duration::from_secs(15), || {
        read::metric(
            &w.metrics(),
            "leakwatch_flows_total{service=\"deezer\",transport=\"tls\"}",
        )
        .unwrap_or(0)
            >= 1
    });
}

#[test]
fn a_token_sent_from_a_second_client_is_one_replay() {
    if leakwatch_tests::lab::skip_without_root("a_token_sent_from_a_second_client_is_one_replay") {
        return;
    }
    let w = World::up(&[]);
    let token = "Rpl4yT0kenZx9Qw3Er7Ty1Ui5Op8As2Df";
    let call = scenarios::qobuz_token_param(token);
    w.send(&w.lab.client, &call, false);
    w.send(&w.lab.client, &call, false);
    wait_for("two findings", Duration::from_secs(15), || {
        read::findings(&w.metrics()).get(&("qobuz".into(), "auth_token".into())) == Some(&2)
    });
    assert!(
        !w.events().iter().any(|e| e["event_type"] == "replay"),
        "the same client twice is no replay"
    );
    // The second client (another LAN, another address) sends the first one's token.
    w.send(&w.lab.client2, &call, false);
    wait_for("the replay", Duration::from_secs(15), || {
        w.events().iter().any(|e| e["event_type"] == "replay")
    });
    w.send(&w.lab.client2, &call, false);
    std::thread::sleep(Duration::from_millis(700));
    let ev = w.events();
    let replays: Vec<&Value> = ev.iter().filter(|e| e["event_type"] == "replay").collect();
    assert_eq!(replays.len(), 1, "once per new client: {replays:?}");
    let r = replays[0];
    assert_eq!(r["src_ip"], CLIENT2_V4);
    assert_eq!(r["replay"]["first_client_ip"], CLIENT_V4);
    assert_eq!(r["kind"], "auth_token");
    assert_eq!(
        read::metric(&w.metrics(), "leakwatch_replays_total{service=\"qobuz\"}"),
        Some(1)
    );
}

/// `run` reads `replay_window_secs` from the config: with one second, a token
/// the second client sends two seconds after the first is no replay.
#[test]
fn a_one_second_replay_window_from_the_config_reports_no_replay() {
    if leakwatch_tests::lab::skip_without_root(
        "a_one_second_replay_window_from_the_config_reports_no_replay",
    ) {
        return;
    }
    let config = std::env::temp_dir().join(format!("{}.toml", unique("window")));
    std::fs::write(&config, "replay_window_secs = 1\n").unwrap();
    let w = World::up(&["--config", config.to_str().unwrap()]);
    let token = "W1nd0wT0kenZx9Qw3Er7Ty1Ui5Op8As2";
    let call = scenarios::qobuz_token_param(token);
    w.send(&w.lab.client, &call, false);
    wait_for("the first finding", Duration::from_secs(15), || {
        read::findings(&w.metrics()).get(&("qobuz".into(), "auth_token".into())) == Some(&1)
    });
    std::thread::sleep(Duration::from_millis(2500));
    w.send(&w.lab.client2, &call, false);
    wait_for("the second finding", Duration::from_secs(15), || {
        read::findings(&w.metrics()).get(&("qobuz".into(), "auth_token".into())) == Some(&2)
    });
    std::thread::sleep(Duration::from_millis(700));
    let _ = std::fs::remove_file(&config);
    assert!(
        !w.events().iter().any(|e| e["event_type"] == "replay"),
        "outside the configured window"
    );
    assert_eq!(
        read::metric(&w.metrics(), "leakwatch_replays_total{service=\"qobuz\"}"),
        Some(0)
    );
}
