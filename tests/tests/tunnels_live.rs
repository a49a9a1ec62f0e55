//! The gateway fed a mirror of the traffic inside tunnels: the live sensor
//! finds a Qobuz login in each feed an admin can give it.
//!
//! - VXLAN from the kernel's own `vxlan` device in the client namespace (the
//!   client writes the inner frame to it; the kernel encapsulates);
//! - GRE (transparent Ethernet) and ERSPAN types II and III, crafted: this
//!   kernel has no `ip_gre`, so the frames a router or switch would send are
//!   built here and sent from the client's interface.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on setup errors"
)]

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use leakwatch_tests::{
    lab::{self, CLIENT_V4, GW_LAN_V4, LAN_IF, Lab, SERVER_V4},
    netns::unique,
    raw::{ETH_P_IPV4, Sender, ethernet, ipv4, mac, tcp4},
    read,
    scenarios::MD5,
};

const METRICS: &str = "127.0.0.1:9477";
/// The mirrored client: an address of a network behind the switch.
const INNER_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 10);

/// The inner frame: the client's Qobuz login (one segment) to the watched server.
fn login(sport: u16) -> Vec<u8> {
    let req = format!(
        "GET /api.json/0.2/user/login?email=jane.doe%40example.com&password={MD5} HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"
    );
    let ip = tcp4(
        INNER_CLIENT,
        SERVER_V4.parse().unwrap(),
        (sport, 80),
        1,
        0x18,
        req.as_bytes(),
    );
    ethernet(
        [0x02, 0, 0, 0, 0, 0x20],
        [0x02, 0, 0, 0, 0, 0x10],
        ETH_P_IPV4,
        &ip,
    )
}

/// GRE of `proto` with `fields` (per `flags`) around `inner`.
fn gre(flags: u16, proto: u16, fields: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(fields);
    g.extend_from_slice(inner);
    g
}

fn wait_leaks(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaks: Vec<_> = read::json_lines(path)
            .into_iter()
            .filter(|e| e["event_type"] == "leak" && e["kind"] == "password_hash")
            .collect();
        if leaks.len() >= n || Instant::now() > deadline {
            return leaks;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn logins_inside_gre_erspan_and_vxlan_feeds_are_found() {
    if lab::skip_without_root("logins_inside_gre_erspan_and_vxlan_feeds_are_found") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let events: PathBuf = std::env::temp_dir().join(format!("{}.jsonl", unique("tunnels")));
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");

    // VXLAN: the kernel's device encapsulates what the client writes to it.
    let c = &lab.client;
    c.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", "42", "local", CLIENT_V4, "remote", GW_LAN_V4,
        "dstport", "4789",
    ])
    .expect("vxlan device");
    c.ip(&["link", "set", "vx0", "up"]).unwrap();
    Sender::new(c, "vx0", [0; 6])
        .unwrap()
        .send_frame(&login(41001))
        .unwrap();

    // GRE and ERSPAN, as a router or switch sends them to the gateway.
    let (gw_mac, _) = mac(&lab.gateway, LAN_IF).unwrap();
    let mut s = Sender::new(c, "eth0", gw_mac).unwrap();
    let (from, to) = (CLIENT_V4.parse().unwrap(), GW_LAN_V4.parse().unwrap());
    let erspan2 = [0, 0, 0, 7, 0x10, 0x64, 0, 0, 0, 0, 0, 0];
    let mut erspan3 = vec![0, 0, 0, 8];
    erspan3.extend_from_slice(&[0x20, 0, 0, 0x65, 0, 0, 0, 1, 0, 0, 0, 0]);
    for g in [
        gre(0x2000, 0x6558, &[0, 0, 0, 9], &login(41002)),
        gre(0x1000, 0x88be, &erspan2, &login(41003)),
        gre(0x1000, 0x22eb, &erspan3, &login(41004)),
    ] {
        s.send(&ipv4(from, to, 47, &g), ETH_P_IPV4).unwrap();
    }

    let leaks = wait_leaks(&events, 4);
    let mut ports: Vec<u64> = leaks
        .iter()
        .map(|e| e["src_port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [41001, 41002, 41003, 41004], "{leaks:#?}");
    for e in &leaks {
        assert_eq!(e["src_ip"], INNER_CLIENT.to_string());
        assert_eq!(e["dest_ip"], SERVER_V4);
        assert_eq!(e["dest_port"], 80);
        assert_eq!(e["interface"], LAN_IF);
        assert_eq!(e["service"], "qobuz");
    }
    let _ = std::fs::remove_file(&events);
}
