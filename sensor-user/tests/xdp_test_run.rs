//! The real XDP program, loaded into this kernel, run on crafted frames with
//! BPF_PROG_TEST_RUN: one test per frame shape, asserting the ring contents byte
//! for byte and the counters. Needs root (CAP_BPF, CAP_NET_ADMIN): `cargo xtask test`
//! runs it as such.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use aya::programs::{TestRun, TestRunOptions};
use sensor_common::{
    config::Config,
    counters::Counter,
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_TCP, IPPROTO_UDP},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    record::{HEADER_LEN, RECORD_VERSION, RecordKind, SNAPLEN, UNSTAMPED, flags},
};
use sensor_user::{
    capture::{
        loader::{MapSizes, Sensor, XDP_OBJECT},
        record::Record,
        ring::Rings,
        stats::Stats,
        watch::WatchMaps,
    },
    fixtures::{Ext6, FrameBuilder, dns_answer, tls_client_hello},
};

const XDP_PASS: u32 = 2;
/// BPF_PROG_TEST_RUN runs XDP programs as if received on the loopback device.
const LO: u32 = 1;
const QOBUZ: u32 = 1;

struct Harness {
    sensor: Sensor,
    ring: Rings,
    stats: Stats,
    watch: WatchMaps,
}

impl Harness {
    fn new(config: Config) -> Self {
        Self::with_ring(config, 1 << 20)
    }

    /// `ring_bytes`: the ring of the CPU the test runs on.
    fn with_ring(config: Config, ring_bytes: u32) -> Self {
        assert!(
            sensor_user::capture::privilege::can_load_xdp(),
            "these tests load XDP programs: run them as root (cargo xtask test does)"
        );
        // A flow's packets reach the program on one CPU, as from one receive
        // queue: its HOT slots are per CPU (sensor_common::hot).
        sensor_user::capture::sched::pin_here().expect("pin the test thread");
        let sizes = MapSizes {
            ring_bytes: sensor_user::capture::loader::ring_bytes_for_each(ring_bytes),
            ..MapSizes::default()
        };
        let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &config).expect("load the XDP program");
        let ring = sensor.take_rings().unwrap();
        let stats = sensor.take_stats().unwrap();
        let mut watch = sensor.take_watch().unwrap();
        watch
            .insert("198.51.100.0/24".parse().unwrap(), QOBUZ)
            .unwrap();
        watch
            .insert("2001:db8:1::/48".parse().unwrap(), QOBUZ)
            .unwrap();
        Self {
            sensor,
            ring,
            stats,
            watch,
        }
    }

    /// Runs the program on `frame`, asserts it passed the packet.
    fn run(&self, frame: &[u8]) {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        let r = self
            .sensor
            .program()
            .unwrap()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(
            r.return_value, XDP_PASS,
            "a passive sensor passes every packet"
        );
    }

    fn records(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        self.ring.drain(|item| {
            out.push(Record::decode(item).expect("a well-formed record"));
            true
        });
        out
    }

    fn count(&self, c: Counter) -> u64 {
        self.stats.get(LO, c).unwrap()
    }

    /// Every outcome counter except `expect` is zero; `expect` has `n`.
    fn assert_outcomes(&self, expect: &[(Counter, u64)]) {
        for &c in Counter::ALL.iter().filter(|c| c.is_outcome()) {
            let want = expect.iter().find(|(e, _)| *e == c).map_or(0, |(_, n)| *n);
            assert_eq!(self.count(c), want, "counter {}", c.name());
        }
    }
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0; 16];
    o[..4].copy_from_slice(&a);
    o
}

/// The key and direction of TCP from 192.0.2.10:`sport` to 198.51.100.2:80,
/// the tests' usual client and watched server.
fn web_key(sport: u16) -> (FlowKey, u8) {
    FlowKey::from_packet(
        FAMILY_V4,
        IPPROTO_TCP,
        &v4([192, 0, 2, 10]),
        sport,
        &v4([198, 51, 100, 2]),
        80,
    )
}

/// The online CPUs, for a test that needs two; `None` (the test skipped,
/// `why` said) on a single CPU.
fn online_cpus_if_several(why: &str) -> Option<Vec<usize>> {
    let cpus: Vec<usize> = aya::util::online_cpus()
        .unwrap()
        .into_iter()
        .map(|c| c as usize)
        .collect();
    if cpus.len() < 2 {
        eprintln!("skipping: {why}");
        return None;
    }
    Some(cpus)
}

/// A DNS answer from :53 to the client, naming a Qobuz address.
fn qobuz_answer() -> FrameBuilder {
    FrameBuilder::udp("203.0.113.53", 53, "192.0.2.10", 33333).payload(dns_answer(
        7,
        "api.qobuz.com",
        &[[198, 51, 100, 2]],
        300,
    ))
}

/// A VXLAN datagram to `port` carrying a client's request from `sport` to
/// the watched 198.51.100.2:80.
fn vxlan_request(port: u16, sport: u16) -> FrameBuilder {
    let inner = FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
        .payload(http_get())
        .build();
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
    vxlan.extend_from_slice(&inner);
    FrameBuilder::udp("203.0.113.7", 50000, "203.0.113.8", port).payload(vxlan)
}

fn http_get() -> &'static [u8] {
    b"GET /api.json/0.2/user/login?email=a%40example.com HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"
}

#[test]
fn ipv4_tcp_watched_record_byte_for_byte() {
    if skip_without_root("ipv4_tcp_watched_record_byte_for_byte") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let frame = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
        .seq(77)
        .payload(http_get())
        .build();
    h.run(&frame);
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    let (key, dir) = web_key(40000);
    let hd = &r.hdr;
    assert_eq!(hd.version, RECORD_VERSION);
    assert_eq!(r.kind, RecordKind::Sample);
    assert_eq!(hd.flags, flags::FROM_CLIENT | flags::FIRST_PAYLOAD);
    assert_eq!(hd.ifindex, LO);
    assert!(hd.ts_ns > 0);
    assert_eq!((hd.flow, hd.direction, hd.service), (key, dir, QOBUZ));
    assert_eq!(
        (hd.tcp_flags, hd.tcp_seq, hd.tcp_ack),
        (TCP_ACK | 0x08, 77, 1)
    );
    assert_eq!((hd.l3_off, hd.l4_off, hd.payload_off), (14, 34, 54));
    let len = frame.len() as u32;
    assert_eq!(
        (hd.pkt_len, hd.cap_len, hd.payload_len),
        (len, len, http_get().len() as u32)
    );
    assert_eq!((hd.dir_bytes, hd.dir_pkts), (u64::from(len) - 14, 1));
    assert_eq!(r.frame, frame, "the record carries the frame byte for byte");
    assert_eq!(r.payload(), http_get());
    h.assert_outcomes(&[(Counter::SampledHead, 1)]);
}

#[test]
fn ipv4_tcp_unwatched_sends_nothing() {
    if skip_without_root("ipv4_tcp_unwatched_sends_nothing") {
        return;
    }
    let mut h = Harness::new(Config::default());
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555)
            .payload(http_get())
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("203.0.113.5", 80, "192.0.2.10", 40000)
            .payload(b"HTTP/1.1 200 OK\r\n")
            .build(),
    );
    assert!(h.records().is_empty());
    h.assert_outcomes(&[(Counter::Unwatched, 2)]);
}

/// The fast path for plain IPv4 TCP (sensor_common::quick) between unwatched
/// addresses: what it decides is `unwatched`, as before; every near miss
/// still gets the full path's outcome.
#[test]
fn the_fast_path_keeps_the_full_paths_outcomes() {
    if skip_without_root("the_fast_path_keeps_the_full_paths_outcomes") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let plain = || FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555).payload(http_get());
    let good = plain().build();
    h.run(&good);
    h.run(&plain().ipv4_options(&[1, 1, 1, 1]).build());
    h.run(&plain().ipv4_fragment(0, true).build());
    h.run(&plain().ipv4_fragment(9, false).build());
    h.run(&good[..good.len() - 5]);
    let mut doff = good.clone();
    doff[46] = 0x40;
    h.run(&doff);
    // TCP options said to run past the datagram's 40 bytes after its header.
    let mut past = good[..14 + 20 + 40].to_vec();
    past[16..18].copy_from_slice(&60u16.to_be_bytes());
    past[46] = 0xf0;
    h.run(&past);
    // Ports that want the full path: a DNS answer over TCP, a probe port.
    h.run(
        &FrameBuilder::tcp("203.0.113.53", 53, "192.0.2.10", 40001)
            .payload([0, 30, 0, 7, 0x81, 0x80])
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40002, "203.0.113.5", 443)
            .flags(TCP_SYN)
            .build(),
    );
    assert_eq!(h.records().len(), 1, "the DNS answer");
    h.assert_outcomes(&[
        (Counter::Unwatched, 3),
        (Counter::Ipv4Fragment, 1),
        (Counter::BadIpv4, 1),
        (Counter::BadL4, 2),
        (Counter::DnsAnswer, 1),
        (Counter::ProbeSyn, 1),
    ]);
}

/// The same for plain IPv6 TCP. Its bucket folds the /32, so the harness's
/// watched 2001:db8:1::/48 sets the bit of all of 2001:db8::/32: the unwatched
/// frames use the other documentation prefix, 3fff::/20 (RFC 9637).
#[test]
fn the_ipv6_fast_path_keeps_the_full_paths_outcomes() {
    if skip_without_root("the_ipv6_fast_path_keeps_the_full_paths_outcomes") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let plain = || FrameBuilder::tcp("3fff:0:9::1", 40000, "3fff:0:5::5", 5555).payload(http_get());
    let good = plain().build();
    h.run(&good);
    h.run(&plain().ipv6_ext(Ext6::HopByHop).build());
    h.run(
        &plain()
            .ipv6_ext(Ext6::Fragment {
                offset: 0,
                more: true,
            })
            .build(),
    );
    h.run(&good[..good.len() - 5]);
    let mut doff = good.clone();
    doff[66] = 0x40;
    h.run(&doff);
    // A payload length one byte short of the TCP header.
    let mut short = good.clone();
    short[18..20].copy_from_slice(&19u16.to_be_bytes());
    h.run(&short);
    // Ports that want the full path: a DNS answer over TCP, a probe port.
    h.run(
        &FrameBuilder::tcp("3fff:0:53::53", 53, "3fff:0:9::1", 40001)
            .payload([0, 30, 0, 7, 0x81, 0x80])
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("3fff:0:9::1", 40002, "3fff:0:5::5", 443)
            .flags(TCP_SYN)
            .build(),
    );
    // A watched destination is not taken for unwatched.
    h.run(
        &FrameBuilder::tcp("3fff:0:9::1", 40003, "2001:db8:1::2", 80)
            .payload(http_get())
            .build(),
    );
    let kinds: Vec<_> = h.records().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RecordKind::Dns, RecordKind::Sample]);
    h.assert_outcomes(&[
        (Counter::Unwatched, 3),
        (Counter::BadIpv6, 1),
        (Counter::BadL4, 2),
        (Counter::DnsAnswer, 1),
        (Counter::ProbeSyn, 1),
        (Counter::SampledHead, 1),
    ]);
}

/// The same for plain UDP (QUIC, say): only DNS from port 53 and VXLAN on
/// its configured port want the full path (probes are TCP only).
#[test]
fn the_udp_fast_path_keeps_the_full_paths_outcomes() {
    if skip_without_root("the_udp_fast_path_keeps_the_full_paths_outcomes") {
        return;
    }
    let mut h = Harness::new(Config {
        vxlan_port: 8472,
        ..Config::default()
    });
    let quic = FrameBuilder::udp("192.0.2.10", 40000, "203.0.113.5", 443)
        .payload([0x40; 1200])
        .build();
    h.run(&quic);
    h.run(
        &FrameBuilder::udp("3fff:0:9::1", 40000, "3fff:0:5::5", 443)
            .payload([0x40; 1200])
            .build(),
    );
    // A UDP header said to end past its datagram.
    let mut past = quic[..14 + 20 + 8].to_vec();
    past[16..18].copy_from_slice(&27u16.to_be_bytes());
    past.resize(60, 0);
    h.run(&past);
    // From port 53: a query between servers (left alone), an answer.
    let mut query = dns_answer(7, "api.qobuz.com", &[[198, 51, 100, 2]], 300);
    query[2] &= 0x7f;
    h.run(
        &FrameBuilder::udp("203.0.113.53", 53, "203.0.113.54", 53)
            .payload(query)
            .build(),
    );
    h.run(&qobuz_answer().build());
    // QUIC to a watched address.
    h.run(
        &FrameBuilder::udp("192.0.2.10", 40001, "198.51.100.2", 443)
            .payload([0x40; 1200])
            .build(),
    );
    // VXLAN on the configured port is looked into; on 4789 it is plain UDP.
    for port in [4789, 8472] {
        h.run(&vxlan_request(port, 40002).build());
    }
    let recs = h.records();
    let kinds: Vec<_> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [RecordKind::Dns, RecordKind::Sample, RecordKind::Sample]
    );
    assert_eq!(recs[2].src(), ("192.0.2.10".parse().unwrap(), 40002));
    h.assert_outcomes(&[
        (Counter::Unwatched, 4),
        (Counter::BadL4, 1),
        (Counter::DnsAnswer, 1),
        (Counter::SampledHead, 2),
    ]);
}

#[test]
fn both_directions_of_a_watched_flow_are_seen() {
    if skip_without_root("both_directions_of_a_watched_flow_are_seen") {
        return;
    }
    let mut h = Harness::new(Config::default());
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .payload(http_get())
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
            .payload(b"HTTP/1.1 200 OK\r\n\r\n")
            .build(),
    );
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].hdr.flow, recs[1].hdr.flow);
    assert_ne!(recs[0].hdr.direction, recs[1].hdr.direction);
    assert_eq!(
        recs[1].hdr.flags,
        flags::FIRST_PAYLOAD,
        "server → client: not FROM_CLIENT"
    );
    assert_eq!(recs[1].src().1, 80);
}

#[test]
fn ipv6_tcp_watched_and_unwatched() {
    if skip_without_root("ipv6_tcp_watched_and_unwatched") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let frame = FrameBuilder::tcp("2001:db8:9::1", 40000, "2001:db8:1::2", 443)
        .payload(http_get())
        .build();
    h.run(&frame);
    h.run(
        &FrameBuilder::tcp("2001:db8:9::1", 40000, "2001:db8:2::2", 5555)
            .payload(http_get())
            .build(),
    );
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.hdr.flow.family, FAMILY_V6);
    assert_eq!((r.hdr.l4_off, r.hdr.payload_off), (54, 74));
    assert_eq!(r.frame, frame);
    assert_eq!(r.dst(), ("2001:db8:1::2".parse().unwrap(), 443));
    h.assert_outcomes(&[(Counter::SampledHead, 1), (Counter::Unwatched, 1)]);
}

#[test]
fn vlan_and_qinq() {
    if skip_without_root("vlan_and_qinq") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let one = FrameBuilder::tcp("192.0.2.10", 40001, "198.51.100.2", 80)
        .vlan(0x8100, 10)
        .payload(http_get())
        .build();
    let two = FrameBuilder::tcp("192.0.2.10", 40002, "198.51.100.2", 80)
        .vlan(0x88a8, 100)
        .vlan(0x8100, 10)
        .payload(http_get())
        .build();
    let three = FrameBuilder::tcp("192.0.2.10", 40003, "198.51.100.2", 80)
        .vlan(0x88a8, 100)
        .vlan(0x8100, 10)
        .vlan(0x8100, 11)
        .payload(http_get())
        .build();
    h.run(&one);
    h.run(&two);
    h.run(&three);
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].hdr.l3_off, recs[0].hdr.l4_off), (18, 38));
    assert_eq!((recs[1].hdr.l3_off, recs[1].hdr.l4_off), (22, 42));
    assert!(recs.iter().all(|r| r.hdr.flags & flags::VLAN != 0));
    assert_eq!(recs[1].frame, two);
    h.assert_outcomes(&[(Counter::SampledHead, 2), (Counter::VlanTooDeep, 1)]);
}

/// Frames with one VLAN tag (a trunk, a mirror port's feed), two (QinQ) or
/// PPPoE (an access link) between unwatched addresses take the fast path's
/// unwatched test (`quick::plain_tagged`, `quick::plain_two_tags`,
/// `quick::plain_pppoe`); everything else of theirs, and three tags, still
/// gets the full path's outcome.
#[test]
fn the_tagged_fast_path_keeps_the_full_paths_outcomes() {
    if skip_without_root("the_tagged_fast_path_keeps_the_full_paths_outcomes") {
        return;
    }
    let mut h = Harness::new(Config {
        vxlan_port: 8472,
        ..Config::default()
    });
    let tcp = || {
        FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555)
            .vlan(0x8100, 10)
            .payload(http_get())
    };
    let good = tcp().build();
    h.run(&good);
    h.run(
        &FrameBuilder::udp("3fff:0:9::1", 40000, "3fff:0:5::5", 443)
            .vlan(0x88a8, 100)
            .payload([0x40; 1200])
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555)
            .vlan(0x88a8, 100)
            .vlan(0x8100, 10)
            .payload(http_get())
            .build(),
    );
    // Near misses: the full path decides, as before.
    h.run(&tcp().ipv4_options(&[1, 1, 1, 1]).build());
    h.run(&tcp().ipv4_fragment(9, false).build());
    h.run(&good[..good.len() - 5]);
    h.run(&qobuz_answer().vlan(0x8100, 10).build());
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40002, "203.0.113.5", 443)
            .vlan(0x8100, 10)
            .flags(TCP_SYN)
            .build(),
    );
    // A watched destination, and VXLAN on its port carrying one.
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40003, "198.51.100.2", 80)
            .vlan(0x8100, 10)
            .payload(http_get())
            .build(),
    );
    h.run(&vxlan_request(8472, 40004).vlan(0x8100, 10).build());
    // The same with two tags, and three.
    let qinq = |b: FrameBuilder| b.vlan(0x88a8, 100).vlan(0x8100, 10);
    let tcp2 =
        || qinq(FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555)).payload(http_get());
    h.run(&tcp2().ipv4_options(&[1, 1, 1, 1]).build());
    h.run(&qinq(qobuz_answer()).build());
    h.run(
        &qinq(FrameBuilder::tcp("192.0.2.10", 40005, "203.0.113.5", 443))
            .flags(TCP_SYN)
            .build(),
    );
    h.run(
        &qinq(FrameBuilder::tcp("192.0.2.10", 40006, "198.51.100.2", 80))
            .payload(http_get())
            .build(),
    );
    h.run(&qinq(vxlan_request(8472, 40007)).build());
    h.run(&tcp2().vlan(0x8100, 11).build());
    // PPPoE, untagged and behind a tag: unwatched, a watched login.
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.5", 5555)
            .pppoe()
            .payload(http_get())
            .build(),
    );
    h.run(&tcp().pppoe().build());
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40008, "198.51.100.2", 80)
            .pppoe()
            .payload(http_get())
            .build(),
    );
    let recs = h.records();
    let kinds: Vec<_> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RecordKind::Dns,
            RecordKind::Sample,
            RecordKind::Sample,
            RecordKind::Dns,
            RecordKind::Sample,
            RecordKind::Sample,
            RecordKind::Sample
        ]
    );
    assert_eq!(recs[1].hdr.l3_off, 18);
    assert_eq!(recs[2].src(), ("192.0.2.10".parse().unwrap(), 40004));
    assert_eq!(recs[4].hdr.l3_off, 22);
    assert_eq!(recs[5].src(), ("192.0.2.10".parse().unwrap(), 40007));
    assert_eq!(recs[6].hdr.l3_off, 22);
    assert_eq!(recs[6].src(), ("192.0.2.10".parse().unwrap(), 40008));
    h.assert_outcomes(&[
        (Counter::Unwatched, 7),
        (Counter::Ipv4Fragment, 1),
        (Counter::BadIpv4, 1),
        (Counter::DnsAnswer, 2),
        (Counter::ProbeSyn, 2),
        (Counter::SampledHead, 5),
        (Counter::VlanTooDeep, 1),
    ]);
}

#[test]
fn pppoe_over_qinq_and_mpls() {
    if skip_without_root("pppoe_over_qinq_and_mpls") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let pppoe = FrameBuilder::tcp("192.0.2.10", 40001, "198.51.100.2", 80)
        .vlan(0x8100, 3704)
        .vlan(0x8100, 2474)
        .pppoe()
        .payload(http_get())
        .build();
    let mpls = FrameBuilder::tcp("2001:db8:9::1", 40002, "2001:db8:1::2", 80)
        .mpls(&[29, 30])
        .payload(http_get())
        .build();
    h.run(&pppoe);
    h.run(&mpls);
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].hdr.l3_off, recs[0].hdr.l4_off), (30, 50));
    assert_eq!(recs[0].payload(), http_get());
    assert_eq!(
        (recs[1].hdr.l3_off, recs[1].hdr.flow.family),
        (22, FAMILY_V6)
    );
    assert_eq!(recs[1].payload(), http_get());
    h.assert_outcomes(&[(Counter::SampledHead, 2)]);
}

#[test]
fn ipv4_options_move_the_l4_header() {
    if skip_without_root("ipv4_options_move_the_l4_header") {
        return;
    }
    let mut h = Harness::new(Config::default());
    // Record-route option, 39 bytes, padded to 40: the largest IPv4 header.
    let mut rr = vec![7, 39, 4];
    rr.resize(39, 0);
    let frame = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
        .ipv4_options(&rr)
        .payload(http_get())
        .build();
    h.run(&frame);
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].hdr.l4_off, recs[0].hdr.payload_off), (74, 94));
    assert_eq!(recs[0].payload(), http_get());
}

#[test]
fn fragments_first_sampled_rest_counted_and_passed() {
    if skip_without_root("fragments_first_sampled_rest_counted_and_passed") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let first = FrameBuilder::udp("192.0.2.10", 5000, "198.51.100.2", 443)
        .ipv4_fragment(0, true)
        .payload([1u8; 64])
        .build();
    let later = FrameBuilder::udp("192.0.2.10", 5000, "198.51.100.2", 443)
        .ipv4_fragment(9, false)
        .payload([2u8; 64])
        .build();
    let later6 = FrameBuilder::udp("2001:db8:9::1", 5000, "2001:db8:1::2", 443)
        .ipv6_ext(Ext6::Fragment {
            offset: 9,
            more: false,
        })
        .payload([3u8; 32])
        .build();
    h.run(&first);
    h.run(&later);
    h.run(&later6);
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].hdr.flags & flags::IP_FRAGMENT, flags::IP_FRAGMENT);
    assert_eq!(recs[0].hdr.flow.proto, IPPROTO_UDP);
    h.assert_outcomes(&[
        (Counter::SampledHead, 1),
        (Counter::Ipv4Fragment, 1),
        (Counter::Ipv6Fragment, 1),
    ]);
}

#[test]
fn ipv6_extension_headers() {
    if skip_without_root("ipv6_extension_headers") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let frame = FrameBuilder::tcp("2001:db8:9::1", 40000, "2001:db8:1::2", 80)
        .ipv6_ext(Ext6::HopByHop)
        .ipv6_ext(Ext6::Routing)
        .ipv6_ext(Ext6::Fragment {
            offset: 0,
            more: false,
        })
        .ipv6_ext(Ext6::DestOpts)
        .payload(http_get())
        .build();
    h.run(&frame);
    let mut deep = FrameBuilder::tcp("2001:db8:9::1", 40001, "2001:db8:1::2", 80);
    for _ in 0..7 {
        deep = deep.ipv6_ext(Ext6::DestOpts);
    }
    h.run(&deep.payload(http_get()).build());
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].hdr.l4_off, 14 + 40 + 32);
    assert_eq!(recs[0].payload(), http_get());
    h.assert_outcomes(&[(Counter::SampledHead, 1), (Counter::Ipv6ExtTooDeep, 1)]);
}

#[test]
fn dns_answers_go_up_whatever_the_address() {
    if skip_without_root("dns_answers_go_up_whatever_the_address") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let answer = dns_answer(0x1234, "api.qobuz.com", &[[198, 51, 100, 2]], 300);
    let udp = FrameBuilder::udp("203.0.113.53", 53, "192.0.2.10", 33333)
        .payload(&answer)
        .build();
    let mut tcp_msg = (answer.len() as u16).to_be_bytes().to_vec();
    tcp_msg.extend_from_slice(&answer);
    let tcp = FrameBuilder::tcp("2001:db8:53::1", 53, "2001:db8:9::1", 33334)
        .payload(&tcp_msg)
        .build();
    let mut query = answer.clone();
    query[2] = 0x01; // QR = 0: a query sent from port 53, not an answer
    let q = FrameBuilder::udp("203.0.113.53", 53, "203.0.113.54", 53)
        .payload(&query)
        .build();
    h.run(&udp);
    h.run(&tcp);
    h.run(&q);
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    // Left for the ring reader to stamp (no clock read in the kernel).
    assert!(
        recs.iter()
            .all(|r| r.kind == RecordKind::Dns && r.hdr.service == 0 && r.hdr.ts_ns == UNSTAMPED)
    );
    assert_eq!(recs[0].frame, udp);
    assert_eq!(recs[0].payload(), &answer[..]);
    assert_eq!(recs[1].frame, tcp);
    h.assert_outcomes(&[(Counter::DnsAnswer, 2), (Counter::Unwatched, 1)]);
}

#[test]
fn tls_flow_sends_the_hello_then_metadata_only() {
    if skip_without_root("tls_flow_sends_the_hello_then_metadata_only") {
        return;
    }
    let config = Config {
        tail_every: 2,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let hello = tls_client_hello("api.qobuz.com", 0);
    let c = |seq: u32, p: &[u8]| {
        FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 443)
            .seq(seq)
            .payload(p)
            .build()
    };
    h.run(&c(1, &hello));
    let app = [0x17, 0x03, 0x03, 0x01, 0x00]
        .iter()
        .copied()
        .chain([0xab; 256])
        .collect::<Vec<_>>();
    for i in 0..4 {
        h.run(&c(1000 + i, &app));
    }
    let recs = h.records();
    assert_eq!(recs.len(), 3, "hello + two 1-in-2 metadata records");
    assert_eq!(recs[0].kind, RecordKind::Sample);
    assert_eq!(
        recs[0].hdr.flags,
        flags::TLS | flags::FROM_CLIENT | flags::FIRST_PAYLOAD
    );
    assert_eq!(recs[0].payload(), &hello[..]);
    for m in &recs[1..] {
        assert_eq!(m.kind, RecordKind::Meta);
        assert_eq!(m.hdr.cap_len, 0);
        assert!(m.frame.is_empty(), "no application data leaves the kernel");
        assert_eq!(
            m.hdr.flags & (flags::TLS | flags::TAIL),
            flags::TLS | flags::TAIL
        );
    }
    // Direction packets 2 and 4 (the hello was packet 1) are the 1-in-2 picks.
    assert_eq!((recs[1].hdr.dir_pkts, recs[2].hdr.dir_pkts), (2, 4));
    h.assert_outcomes(&[
        (Counter::SampledHead, 1),
        (Counter::TlsMeta, 2),
        (Counter::OverBudget, 2),
    ]);
}

#[test]
fn split_client_hello_is_sampled_to_its_end() {
    if skip_without_root("split_client_hello_is_sampled_to_its_end") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let hello = tls_client_hello("api.qobuz.com", 1200);
    let (a, b) = hello.split_at(700);
    let c = |p: &[u8]| {
        FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 443)
            .payload(p)
            .build()
    };
    h.run(&c(a));
    h.run(&c(b));
    h.run(&c(&[0x17, 3, 3, 0, 4, 1, 2, 3, 4]));
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    let joined: Vec<u8> = recs.iter().flat_map(|r| r.payload().to_vec()).collect();
    assert_eq!(joined, hello);
    h.assert_outcomes(&[(Counter::SampledHead, 2), (Counter::OverBudget, 1)]);
}

/// Untagged, with one VLAN tag and with two, in PPPoE untagged and behind a
/// tag (the `HOT` slots read past them too).
#[test]
fn sampling_stops_after_the_head_then_one_in_k() {
    if skip_without_root("sampling_stops_after_the_head_then_one_in_k") {
        return;
    }
    let one = &[(0x8100, 10)][..];
    for (tags, pppoe) in [
        (&[][..], false),
        (one, false),
        (&[(0x88a8, 200), (0x8100, 10)], false),
        (&[], true),
        (one, true),
    ] {
        head_then_one_in_k(tags, pppoe);
    }
}

/// `tags`: (TPID, VID), the outer first; `pppoe`: in a PPPoE session.
fn head_then_one_in_k(tags: &[(u16, u16)], pppoe: bool) {
    let frame = |b: FrameBuilder| {
        let b = tags.iter().fold(b, |b, &(tpid, vid)| b.vlan(tpid, vid));
        if pppoe { b.pppoe() } else { b }.build()
    };
    let config = Config {
        head_bytes: 3000,
        tail_every: 4,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let flows = h.sensor.take_flows().unwrap();
    for i in 0..10u32 {
        let body = vec![b'a' + i as u8; 1000];
        h.run(&frame(
            FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
                .seq(1 + i * 1000)
                .payload(body),
        ));
    }
    let recs = h.records();
    // Packets only counted read no clock: the flow's time is its last
    // record's (the 8th packet's), not the 10th's. The 9th and 10th were
    // counted by this CPU's HOT slot (sensor_common::hot), not yet in FLOWS.
    let last = recs.last().unwrap();
    let d = usize::from(last.hdr.direction);
    let st = flows.get(&last.hdr.flow, 0).unwrap();
    assert_eq!(
        (st.last_ns, st.pkts[d]),
        (last.hdr.ts_ns, 8),
        "tags {tags:x?}, PPPoE {pppoe}"
    );
    // The next packet that needs a decision, a FIN, takes them in first.
    h.run(&frame(
        FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .seq(10_001)
            .flags(TCP_FIN | TCP_ACK),
    ));
    let fin = h.records();
    assert_eq!(
        (fin.len(), fin[0].kind, fin[0].hdr.dir_pkts),
        (1, RecordKind::Meta, 11)
    );
    assert_eq!(fin[0].hdr.dir_bytes, 10 * 1040 + 40);
    assert_eq!(flows.get(&last.hdr.flow, 0).unwrap().pkts[d], 11);
    let seqs: Vec<(u32, bool)> = recs
        .iter()
        .map(|r| (r.hdr.tcp_seq, r.hdr.flags & flags::TAIL != 0))
        .collect();
    // 3 × 1000 bytes fill the head; packets 4 and 8 of the direction are the
    // tail, 9 and 10 only counted.
    assert_eq!(
        seqs,
        [
            (1, false),
            (1001, false),
            (2001, false),
            (3001, true),
            (7001, true)
        ]
    );
    assert!(
        recs.iter()
            .all(|r| r.kind == RecordKind::Sample && r.hdr.cap_len == r.hdr.pkt_len)
    );
    h.assert_outcomes(&[
        (Counter::SampledHead, 3),
        (Counter::SampledTail, 2),
        (Counter::OverBudget, 5),
        (Counter::Control, 1),
    ]);
}

#[test]
fn control_packets_of_watched_flows_are_metadata() {
    if skip_without_root("control_packets_of_watched_flows_are_metadata") {
        return;
    }
    let mut h = Harness::new(Config::default());
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .flags(TCP_SYN)
            .seq(99)
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
            .flags(TCP_SYN | TCP_ACK)
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .flags(TCP_ACK)
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .flags(TCP_FIN | TCP_ACK)
            .build(),
    );
    // The bare SYN is deferred: the flow starts at the SYN+ACK.
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter()
            .all(|r| r.kind == RecordKind::Meta && r.frame.is_empty())
    );
    // The SYN+ACK tells who the client is (not its sender) and, by its
    // acknowledgment, where the client's stream starts.
    assert_eq!(recs[0].hdr.flags, 0);
    assert_eq!(recs[0].hdr.tcp_flags, TCP_SYN | TCP_ACK);
    assert_eq!(recs[1].hdr.flags, flags::FROM_CLIENT);
    h.assert_outcomes(&[
        (Counter::SynDeferred, 1),
        (Counter::Control, 2),
        (Counter::WatchedNoPayload, 1),
    ]);
}

#[test]
fn a_syn_flood_reaches_neither_the_flow_table_nor_the_ring() {
    if skip_without_root("a_syn_flood_reaches_neither_the_flow_table_nor_the_ring") {
        return;
    }
    let mut h = Harness::new(Config::default());
    for port in 1024..3024u16 {
        h.run(
            &FrameBuilder::tcp("203.0.113.66", port, "198.51.100.2", 80)
                .flags(TCP_SYN)
                .build(),
        );
    }
    assert!(h.records().is_empty(), "no record for a bare SYN");
    // A real client's handshake and login right after are sampled whole.
    let login = b"GET /login?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n";
    let c = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80);
    h.run(&c.clone().flags(TCP_SYN).seq(99).build());
    h.run(
        &FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
            .flags(TCP_SYN | TCP_ACK)
            .ack(100)
            .build(),
    );
    h.run(
        &c.clone()
            .flags(TCP_ACK | 0x08)
            .seq(100)
            .payload(login)
            .build(),
    );
    let recs = h.records();
    assert_eq!(recs.len(), 2, "the SYN+ACK and the login");
    assert_eq!(recs[1].kind, RecordKind::Sample);
    assert_eq!(&recs[1].frame[recs[1].frame.len() - login.len()..], login);
    h.assert_outcomes(&[
        (Counter::SynDeferred, 2001),
        (Counter::Control, 1),
        (Counter::SampledHead, 1),
    ]);
}

#[test]
fn a_source_over_its_budget_of_new_flows_is_not_tracked() {
    if skip_without_root("a_source_over_its_budget_of_new_flows_is_not_tracked") {
        return;
    }
    let mut h = Harness::new(Config {
        new_flows_per_source: 3,
        ..Config::default()
    });
    // One byte each, as a flood of stalled flows sends.
    let one = |client: &str, port: u16| {
        FrameBuilder::tcp(client, port, "198.51.100.2", 80)
            .flags(TCP_ACK | 0x08)
            .payload(b"G")
            .build()
    };
    for port in 40000..40005u16 {
        h.run(&one("203.0.113.66", port));
    }
    // Another client is not held back by the first one's flood.
    h.run(&one("192.0.2.10", 40000));
    assert_eq!(h.records().len(), 4);
    h.assert_outcomes(&[(Counter::SampledHead, 4), (Counter::SourceBudget, 2)]);
}

#[test]
fn probe_sends_the_first_payload_of_new_flows_to_probe_ports() {
    if skip_without_root("probe_sends_the_first_payload_of_new_flows_to_probe_ports") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let c = |f: u8, p: &[u8]| {
        FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.80", 443)
            .flags(f)
            .payload(p)
            .build()
    };
    let hello = tls_client_hello("api.qobuz.com", 0);
    h.run(&c(TCP_SYN, b""));
    h.run(&c(TCP_ACK, b""));
    h.run(&c(TCP_ACK | 0x08, &hello));
    h.run(&c(TCP_ACK | 0x08, b"more"));
    // No SYN seen: a flow that predates the sensor is not new.
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40001, "203.0.113.80", 443)
            .payload(&hello)
            .build(),
    );
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].kind, RecordKind::Probe);
    assert_eq!(recs[0].hdr.service, 0);
    assert_eq!(recs[0].payload(), &hello[..]);
    h.assert_outcomes(&[
        (Counter::ProbeSyn, 1),
        (Counter::Probe, 1),
        (Counter::Unwatched, 3),
    ]);
}

#[test]
fn truncated_and_garbage_frames_are_counted_and_passed() {
    if skip_without_root("truncated_and_garbage_frames_are_counted_and_passed") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let good = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
        .payload(http_get())
        .build();
    // IP total length says more than the frame holds.
    h.run(&good[..good.len() - 5]);
    // VLAN ethertype with no tag after it.
    let mut vlan_cut = good[..14].to_vec();
    vlan_cut[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    h.run(&vlan_cut);
    // ARP.
    let mut arp = good[..42].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    h.run(&arp);
    // ICMP.
    let mut icmp = good.clone();
    icmp[23] = 1;
    h.run(&icmp);
    // TCP data offset below 5 words.
    let mut doff = good.clone();
    doff[46] = 0x40;
    h.run(&doff);
    // Pseudo-random garbage after an IPv6 ethertype.
    let mut junk = vec![0u8; 120];
    let mut x = 0x2545_f491_u32;
    for b in &mut junk {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    junk[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    h.run(&junk);
    assert!(h.records().is_empty());
    h.assert_outcomes(&[
        (Counter::BadIpv4, 1),
        (Counter::ShortEthernet, 1),
        (Counter::NotIp, 1),
        (Counter::NotTcpUdp, 1),
        (Counter::BadL4, 1),
        (Counter::BadIpv6, 1),
    ]);
}

#[test]
fn frames_beyond_snaplen_are_truncated_and_noted() {
    if skip_without_root("frames_beyond_snaplen_are_truncated_and_noted") {
        return;
    }
    let mut h = Harness::new(Config::default());
    // 6000 bytes: larger than the linear part BPF_PROG_TEST_RUN gives a frags
    // program, so the tail lives in XDP fragments.
    let body = vec![b'x'; 6000 - 54];
    let frame = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
        .payload(&body)
        .build();
    assert_eq!(frame.len(), 6000);
    h.run(&frame);
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!((r.hdr.pkt_len, r.hdr.cap_len), (6000, SNAPLEN as u32));
    assert_eq!(r.hdr.flags & flags::TRUNCATED, flags::TRUNCATED);
    assert_eq!(r.frame, frame[..SNAPLEN]);
    assert_eq!(h.count(Counter::SnapTruncated), 1);
    h.assert_outcomes(&[(Counter::SampledHead, 1)]);
}

#[test]
fn a_full_ring_is_counted_never_fatal() {
    if skip_without_root("a_full_ring_is_counted_never_fatal") {
        return;
    }
    // One page of ring: a handful of full-size records fit, the rest are counted.
    let mut h = Harness::with_ring(Config::default(), 4096);
    let n = 20;
    for i in 0..n {
        let body = vec![b'x'; 1400];
        h.run(
            &FrameBuilder::tcp("192.0.2.10", 40000 + i, "198.51.100.2", 80)
                .payload(body)
                .build(),
        );
    }
    let got = h.records().len() as u64;
    assert!(got > 0 && got < u64::from(n), "{got} records");
    assert_eq!(h.count(Counter::SampledHead), got);
    assert_eq!(h.count(Counter::RingFull), u64::from(n) - got);
    // Drained: records flow again.
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 39999, "198.51.100.2", 80)
            .payload(http_get())
            .build(),
    );
    assert_eq!(h.records().len(), 1);
}

#[test]
fn the_ring_is_read_in_order_across_its_wrap_and_after_an_early_stop() {
    if skip_without_root("the_ring_is_read_in_order_across_its_wrap_and_after_an_early_stop") {
        return;
    }
    // Four pages of ring (room for two full-size records and two small
    // ones): records of both sizes wrap its end dozens of times, some
    // straddling it (read through the second mapping of the data pages).
    let mut h = Harness::with_ring(Config::default(), 16384);
    let mut sport = 20000;
    let mut frame = |len: usize| {
        sport += 1;
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .payload(vec![b'a' + (len % 26) as u8; len])
            .build()
    };
    let rounds = 200;
    for round in 0..rounds {
        let frames = [(round * 37) % 1200 + 1, (round * 91) % 700 + 1].map(&mut frame);
        for f in &frames {
            h.run(f);
        }
        // Stopping after the first record leaves the second for the next drain.
        let mut first = Vec::new();
        let seen = h.ring.drain(|b| {
            first.push(Record::decode(b).expect("a well-formed record"));
            false
        });
        assert_eq!(seen, 1, "round {round}");
        let rest = h.records();
        assert_eq!(rest.len(), 1, "round {round}");
        for (r, f) in first.iter().chain(&rest).zip(&frames) {
            assert_eq!(r.frame, *f, "round {round}");
        }
    }
    assert_eq!(h.count(Counter::RingFull), 0);
    assert_eq!(h.count(Counter::SampledHead), 2 * rounds as u64);
}

#[test]
fn the_reader_frees_ring_space_while_it_is_still_reading() {
    if skip_without_root("the_reader_frees_ring_space_while_it_is_still_reading") {
        return;
    }
    // Seven full-size records nearly fill four pages of ring. The reader
    // publishes its position every quarter of the ring, so while it takes
    // the fifth record, four are free again: room for three more records
    // that arrive then (without the publishing, room for none).
    let mut h = Harness::with_ring(Config::default(), 16384);
    let full = |sport| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .payload(vec![b'x'; 1400])
            .build()
    };
    let record_bytes = 8 + HEADER_LEN + SNAPLEN;
    assert!(7 * record_bytes <= 16384 && 10 * record_bytes > 16384);
    for sport in 30000..30007 {
        h.run(&full(sport));
    }
    let sensor = &h.sensor;
    let mut taken = 0;
    let seen = h.ring.drain(|_| {
        taken += 1;
        if taken == 5 {
            for sport in 30007..30010 {
                let frame = full(sport);
                let opts = TestRunOptions {
                    data_in: Some(&frame),
                    ..TestRunOptions::default()
                };
                sensor.program().unwrap().test_run(opts).unwrap();
            }
        }
        true
    });
    // The same drain read the three as well.
    assert_eq!(seen, 10);
    assert_eq!(h.count(Counter::RingFull), 0);
    assert_eq!(h.count(Counter::SampledHead), 10);
}

#[test]
fn each_cpu_has_its_ring_and_the_reader_puts_them_back_in_order() {
    use sensor_user::capture::{ring::RingReader, sched};
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    if skip_without_root("each_cpu_has_its_ring_and_the_reader_puts_them_back_in_order") {
        return;
    }
    let Some(cpus) = online_cpus_if_several("one CPU, one ring") else {
        return;
    };
    let mut h = Harness::new(Config::default());
    assert_eq!(h.ring.len(), cpus.len(), "a ring per online CPU");
    let frame = |sport: u16| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .payload(http_get())
            .build()
    };
    let on = |h: &Harness, cpu: usize, sport: u16| {
        sched::pin(cpu).unwrap();
        h.run(&frame(sport));
    };
    // The second CPU first: drained ring by ring, the first CPU's record
    // comes out first, so they are in two rings (one ring would keep the
    // order they were made in).
    let (first, second) = (cpus[0], cpus[1]);
    on(&h, second, 10_001);
    on(&h, first, 10_002);
    let sports: Vec<u16> = h.records().iter().map(|r| r.hdr.flow.port_a).collect();
    assert_eq!(sports, [10_002, 10_001]);

    // Through the daemon's reader they come out as made, CPUs taking turns
    // unevenly.
    let order: Vec<(usize, u16)> = (0..40u16)
        .map(|i| (if i % 3 == 0 { first } else { second }, 20_000 + i))
        .collect();
    for &(cpu, sport) in &order {
        on(&h, cpu, sport);
    }
    sched::pin_to(&cpus).unwrap();
    let rings = std::mem::replace(&mut h.ring, Rings::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut reader = RingReader::new(rings);
            reader
                .run(&stop, |rs| {
                    got.extend(rs.drain(..).map(|r| r.expect("a well-formed record")));
                    true
                })
                .unwrap();
            got
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let got = reader.join().unwrap();
    let got: Vec<u16> = got.iter().map(|r| r.hdr.flow.port_a).collect();
    let want: Vec<u16> = order.iter().map(|&(_, s)| s).collect();
    assert_eq!(got, want);
    assert_eq!(h.count(Counter::SampledHead), 42);
}

#[test]
fn without_config_everything_passes_untouched() {
    if skip_without_root("without_config_everything_passes_untouched") {
        return;
    }
    let mut h = Harness::new(Config::default());
    h.sensor
        .set_config(&Config {
            version: 0,
            ..Config::default()
        })
        .unwrap();
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .payload(http_get())
            .build(),
    );
    assert!(h.records().is_empty());
    h.assert_outcomes(&[(Counter::Unconfigured, 1)]);
}

#[test]
fn removing_a_watch_stops_sampling_new_flows() {
    if skip_without_root("removing_a_watch_stops_sampling_new_flows") {
        return;
    }
    let mut h = Harness::new(Config::default());
    h.watch.remove("198.51.100.0/24".parse().unwrap()).unwrap();
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .payload(http_get())
            .build(),
    );
    assert!(h.records().is_empty());
    h.assert_outcomes(&[(Counter::Unwatched, 1)]);
}

#[test]
fn prefilter_bucket_mates_are_decided_by_the_trie() {
    if skip_without_root("prefilter_bucket_mates_are_decided_by_the_trie") {
        return;
    }
    let mut h = Harness::new(Config::default());
    // 198.51.101.0/24 shares the /16 bucket of the watched 198.51.100.0/24.
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40000, "198.51.101.7", 5555)
            .payload(http_get())
            .build(),
    );
    assert!(h.records().is_empty());
    // Two prefixes in one bucket: removing one keeps the other watched.
    h.watch
        .insert("198.51.102.0/24".parse().unwrap(), 2)
        .unwrap();
    h.watch.remove("198.51.100.0/24".parse().unwrap()).unwrap();
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40001, "198.51.102.9", 80)
            .payload(http_get())
            .build(),
    );
    h.run(
        &FrameBuilder::tcp("192.0.2.10", 40002, "198.51.100.9", 5555)
            .payload(http_get())
            .build(),
    );
    let recs = h.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].hdr.service, 2);
    h.assert_outcomes(&[(Counter::Unwatched, 2), (Counter::SampledHead, 1)]);
}

#[test]
fn a_known_flow_stays_watched_while_its_bucket_is() {
    if skip_without_root("a_known_flow_stays_watched_while_its_bucket_is") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let pkt = |seq| {
        FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
            .seq(seq)
            .payload(http_get())
            .build()
    };
    h.run(&pkt(1));
    // The /24 expires but a /16-mate keeps the bucket: the flow is known, so it
    // keeps its budget and service rather than vanishing mid-stream.
    h.watch.insert("198.51.0.0/24".parse().unwrap(), 3).unwrap();
    h.watch.remove("198.51.100.0/24".parse().unwrap()).unwrap();
    h.run(&pkt(100));
    let recs = h.records();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.hdr.service == QOBUZ));
}

#[test]
fn probe_follows_a_client_hello_split_over_segments() {
    if skip_without_root("probe_follows_a_client_hello_split_over_segments") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let c = |f: u8, seq: u32, p: &[u8]| {
        FrameBuilder::tcp("192.0.2.10", 40000, "203.0.113.80", 443)
            .flags(f)
            .seq(seq)
            .payload(p)
            .build()
    };
    let hello = tls_client_hello("api.qobuz.com", 1500);
    let (a, b) = hello.split_at(1200);
    h.run(&c(TCP_SYN, 0, b""));
    h.run(&c(TCP_ACK | 0x08, 1, a));
    h.run(&c(TCP_ACK | 0x08, 1201, b));
    h.run(&c(
        TCP_ACK | 0x08,
        1201 + b.len() as u32,
        b"\x17\x03\x03\x00\x10application-data",
    ));
    let recs = h.records();
    assert_eq!(recs.len(), 2, "both segments of the hello, nothing after");
    assert!(recs.iter().all(|r| r.kind == RecordKind::Probe));
    assert_eq!(recs[0].hdr.flags, flags::FROM_CLIENT | flags::FIRST_PAYLOAD);
    assert_eq!(recs[1].hdr.flags, flags::FROM_CLIENT);
    let joined: Vec<u8> = recs.iter().flat_map(|r| r.payload().to_vec()).collect();
    assert_eq!(joined, hello);
    h.assert_outcomes(&[
        (Counter::ProbeSyn, 1),
        (Counter::Probe, 2),
        (Counter::Unwatched, 1),
    ]);
}

/// `follow_apps`: a flow userspace inserts into FLOWS after its probe is
/// sampled from then on, both ways, under the app's service and flagged
/// FOLLOWED; without FOLLOW the program never looks it up. The userspace
/// sampler, told the same, produces the same records.
#[test]
fn a_followed_flow_is_sampled_after_its_probe() {
    if skip_without_root("a_followed_flow_is_sampled_after_its_probe") {
        return;
    }
    // IPv4, and IPv6 between addresses outside the bitmap bucket of the
    // harness's watched 2001:db8:1::/48 (3fff::/20 is for documentation too).
    for (client, server) in [("192.0.2.10", "203.0.113.80"), ("3fff:c::10", "3fff:1::80")] {
        followed_flow_case(client, server);
    }
}

fn followed_flow_case(client: &str, server: &str) {
    use sensor_common::{config::config_flags, policy::followed_flow};
    use sensor_user::{capture::sampler::Sampler, targets::learning::MemoryWatch};
    let c = |f: u8, seq: u32, p: &[u8]| {
        FrameBuilder::tcp(client, 40000, server, 80)
            .flags(f)
            .seq(seq)
            .payload(p)
            .build()
    };
    let s = |p: &[u8]| {
        FrameBuilder::tcp(server, 80, client, 40000)
            .flags(TCP_ACK | 0x08)
            .payload(p)
            .build()
    };
    let probe = b"GET /v1/config HTTP/1.1\r\nHost: stats.example\r\nUser-Agent: Qobuz/6.1\r\n\r\n";
    let after = [
        c(
            TCP_ACK | 0x08,
            1 + probe.len() as u32,
            b"POST /v1/track HTTP/1.1\r\n\r\n",
        ),
        s(b"HTTP/1.1 200 OK\r\n\r\n"),
        c(TCP_ACK, 100, b""),
    ];
    for follow in [true, false] {
        let mut config = Config::default();
        if follow {
            config.flags |= config_flags::FOLLOW;
        }
        let mut h = Harness::new(config);
        let mut sampler = Sampler::new(config, 1024, 1024);
        let watch = MemoryWatch::default();
        let mut flows = h.sensor.take_flows().unwrap();
        h.run(&c(TCP_SYN, 0, b""));
        h.run(&c(TCP_ACK | 0x08, 1, probe));
        let _ = sampler.process(&c(TCP_SYN, 0, b""), 0, LO, &watch);
        let _ = sampler.process(&c(TCP_ACK | 0x08, 1, probe), 0, LO, &watch);
        let recs = h.records();
        assert_eq!(recs.len(), 1, "{client}");
        assert_eq!(recs[0].kind, RecordKind::Probe, "{client}");
        let st = followed_flow(
            config.head_bytes,
            QOBUZ,
            recs[0].hdr.direction,
            0,
            probe.len() as u32,
        );
        flows.insert(recs[0].hdr.flow, st, 0).unwrap();
        sampler.follow(recs[0].hdr.flow, st);
        for f in &after {
            h.run(f);
        }
        let mut kernel = h.records();
        if !follow {
            assert!(
                kernel.is_empty(),
                "{client}: never looked up without FOLLOW"
            );
            h.assert_outcomes(&[
                (Counter::ProbeSyn, 1),
                (Counter::Probe, 1),
                (Counter::Unwatched, 3),
            ]);
            continue;
        }
        let got: Vec<(RecordKind, u16, u32)> = kernel
            .iter()
            .map(|r| (r.kind, r.hdr.flags, r.hdr.service))
            .collect();
        assert_eq!(
            got,
            [
                (
                    RecordKind::Sample,
                    flags::FROM_CLIENT | flags::FOLLOWED,
                    QOBUZ
                ),
                (
                    RecordKind::Sample,
                    flags::FIRST_PAYLOAD | flags::FOLLOWED,
                    QOBUZ
                ),
            ]
        );
        h.assert_outcomes(&[
            (Counter::ProbeSyn, 1),
            (Counter::Probe, 1),
            (Counter::SampledHead, 2),
            (Counter::WatchedNoPayload, 1),
        ]);
        let user: Vec<Record> = after
            .iter()
            .filter_map(|f| sampler.process(f, 0, LO, &watch))
            .collect();
        assert_eq!(user.len(), kernel.len(), "{client}");
        for (k, u) in kernel.iter_mut().zip(&user) {
            k.hdr.ts_ns = 0;
            assert_eq!(k.hdr.as_bytes(), u.hdr.as_bytes());
            assert_eq!(k.frame, u.frame);
        }
    }
}

/// A busy flow past its head, counted by this CPU's HOT slot, whose client
/// opens a new connection on the same ports: the SYN takes the full path,
/// which empties the slot, and the new login is a first payload again
/// (policy::restart), not a packet past the old connection's head.
#[test]
fn a_new_connection_on_a_busy_flows_ports_is_sampled_from_its_start() {
    if skip_without_root("a_new_connection_on_a_busy_flows_ports_is_sampled_from_its_start") {
        return;
    }
    let mut h = Harness::new(Config::default());
    let b = FrameBuilder::tcp("192.0.2.10", 40600, "198.51.100.2", 80);
    // 20 KiB: past the default 16 KiB head, the last ones counted by the slot.
    for i in 0..40u32 {
        h.run(&b.clone().seq(1 + i * 512).payload(vec![b'a'; 512]).build());
    }
    assert_eq!(h.count(Counter::OverBudget), 8);
    let _ = h.records();
    h.run(&b.clone().seq(500_000).flags(TCP_SYN).build());
    h.run(&b.clone().seq(500_001).payload(http_get()).build());
    let recs = h.records();
    let kinds: Vec<(RecordKind, u16)> = recs.iter().map(|r| (r.kind, r.hdr.flags)).collect();
    assert_eq!(
        kinds,
        [
            (RecordKind::Meta, flags::FROM_CLIENT),
            (
                RecordKind::Sample,
                flags::FROM_CLIENT | flags::FIRST_PAYLOAD
            ),
        ]
    );
    assert_eq!(recs[1].payload(), http_get());
    assert_eq!(h.count(Counter::OverBudget), 8, "nothing more past a head");
}

/// The server's direction of a busy flow, counted by the other slot: when the
/// client opens a new connection on the same ports, the new connection's
/// server packets are counted from its start, not on top of the old one's
/// that slot held (`FlowState::conn`; found by the `hot` fuzz target),
/// also when the old flow had left `FLOWS`.
#[test]
fn a_new_connection_counts_nothing_of_the_old_ones_replies() {
    if skip_without_root("a_new_connection_counts_nothing_of_the_old_ones_replies") {
        return;
    }
    let c = FrameBuilder::tcp("192.0.2.10", 40620, "198.51.100.2", 80);
    let s = FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40620);
    // A busy old connection: the client's data and the server's ACKs past
    // the head, most of them counted by this CPU's two slots.
    let old_connection = |h: &mut Harness| {
        for i in 0..40u32 {
            h.run(&c.clone().seq(1 + i * 512).payload(vec![b'a'; 512]).build());
            h.run(&s.clone().ack(1 + (i + 1) * 512).flags(TCP_ACK).build());
        }
        assert!(h.count(Counter::WatchedNoPayload) > 30);
        let _ = h.records();
    };
    // A new one on the same ports: each record's flags and direction counts.
    let new_connection = |h: &mut Harness| -> Vec<(u16, u64, u64)> {
        h.run(&c.clone().seq(500_000).flags(TCP_SYN).build());
        h.run(
            &s.clone()
                .seq(9_000)
                .ack(500_001)
                .flags(TCP_SYN | TCP_ACK)
                .build(),
        );
        h.run(&c.clone().seq(500_001).payload(http_get()).build());
        h.run(
            &s.clone()
                .seq(9_001)
                .flags(TCP_ACK)
                .payload(b"HTTP/1.1 200 OK\r\n\r\n")
                .build(),
        );
        h.records()
            .iter()
            .map(|r| (r.hdr.flags, r.hdr.dir_pkts, r.hdr.dir_bytes))
            .collect()
    };
    // The old flow still in FLOWS: the SYN starts it over.
    let mut h = Harness::new(Config::default());
    old_connection(&mut h);
    let reply = *new_connection(&mut h).last().unwrap();
    assert_eq!(reply.0 & flags::FROM_CLIENT, 0);
    assert_eq!(reply.1, 2, "the SYN-ACK and the reply");

    // The old flow evicted from FLOWS before the SYN (which then waits in
    // SYN_PENDING): both directions' counts are the new connection's alone,
    // as on a sensor that never saw the old one.
    let want = new_connection(&mut Harness::new(Config::default()));
    let mut h = Harness::new(Config::default());
    let mut flows = h.sensor.take_flows().unwrap();
    old_connection(&mut h);
    let (key, _) = web_key(40620);
    flows.remove(&key).unwrap();
    assert_eq!(new_connection(&mut h), want);
}

/// As above with the SYN on another CPU than the old connection's packets:
/// the first CPU's slot, still holding that connection past its head, must
/// not count the new connection's login (`hot::HotFlow::absorb`'s epoch) —
/// whether the old flow is still in `FLOWS` (the SYN starts it over) or has
/// left it (the SYN waits in `SYN_PENDING`, the login starts a flow).
#[test]
fn a_new_connection_is_sampled_whichever_cpu_held_its_old_flow() {
    use sensor_user::capture::sched;
    if skip_without_root("a_new_connection_is_sampled_whichever_cpu_held_its_old_flow") {
        return;
    }
    let Some(cpus) = online_cpus_if_several("one CPU, one set of slots") else {
        return;
    };
    let login = (
        RecordKind::Sample,
        flags::FROM_CLIENT | flags::FIRST_PAYLOAD,
    );
    let restart = (RecordKind::Meta, flags::FROM_CLIENT);
    for (evicted, want) in [(false, vec![restart, login]), (true, vec![login])] {
        let mut h = Harness::new(Config::default());
        let mut flows = h.sensor.take_flows().unwrap();
        let b = FrameBuilder::tcp("192.0.2.10", 40610, "198.51.100.2", 80);
        sched::pin(cpus[0]).unwrap();
        for i in 0..40u32 {
            h.run(&b.clone().seq(1 + i * 512).payload(vec![b'a'; 512]).build());
        }
        assert_eq!(h.count(Counter::OverBudget), 8, "the slot holds the flow");
        let _ = h.records();
        if evicted {
            let (key, _) = web_key(40610);
            flows.remove(&key).unwrap();
        }
        sched::pin(cpus[1]).unwrap();
        h.run(&b.clone().seq(500_000).flags(TCP_SYN).build());
        sched::pin(cpus[0]).unwrap();
        h.run(&b.clone().seq(500_001).payload(http_get()).build());
        sched::pin_to(&cpus).unwrap();
        // Two CPUs' rings, drained one after the other: in the order made.
        let mut recs = h.records();
        recs.sort_by_key(|r| r.hdr.ts_ns);
        let kinds: Vec<(RecordKind, u16)> = recs.iter().map(|r| (r.kind, r.hdr.flags)).collect();
        assert_eq!(kinds, want, "evicted: {evicted}");
        assert_eq!(recs.last().unwrap().payload(), http_get());
        assert_eq!(h.count(Counter::OverBudget), 8, "nothing more past a head");
        // The first CPU's slot held 7 of the old connection's packets: none
        // of them is the new one's (`FlowState::conn`). Counted: the SYN
        // that started the flow over, the login.
        assert_eq!(
            recs.last().unwrap().hdr.dir_pkts,
            if evicted { 1 } else { 2 },
            "evicted: {evicted}"
        );
    }
}

/// A slot that holds the old connection of a flow started over on another
/// CPU, taken over by another flow: the counts it gives back are dropped,
/// not added to the new connection's.
#[test]
fn a_slot_gives_an_old_connections_counts_to_nobody() {
    use sensor_user::capture::sched;
    if skip_without_root("a_slot_gives_an_old_connections_counts_to_nobody") {
        return;
    }
    let Some(cpus) = online_cpus_if_several("one CPU, one set of slots") else {
        return;
    };
    let mut h = Harness::new(Config::default());
    let flows = h.sensor.take_flows().unwrap();
    let x = FrameBuilder::tcp("192.0.2.10", 40640, "198.51.100.2", 80);
    let y = FrameBuilder::tcp("192.0.2.10", 40641, "198.51.100.2", 80);
    let segment = |b: &FrameBuilder, i: u32| b.clone().seq(1 + i * 512).payload(vec![b'a'; 512]);
    sched::pin(cpus[0]).unwrap();
    // 33 of x's segments in FLOWS, the next 7 in this CPU's slot.
    for i in 0..40 {
        h.run(&segment(&x, i).build());
    }
    let (k, d) = web_key(40640);
    let in_flows = || flows.get(&k, 0).unwrap().pkts[usize::from(d)];
    assert_eq!(in_flows(), 33);
    sched::pin(cpus[1]).unwrap();
    h.run(&x.clone().seq(500_000).flags(TCP_SYN).build());
    assert_eq!(in_flows(), 1, "started over");
    // y past its head on the first CPU: its slot is x's, missed since.
    sched::pin(cpus[0]).unwrap();
    for i in 0..40 {
        h.run(&segment(&y, i).build());
    }
    sched::pin_to(&cpus).unwrap();
    assert_eq!(
        in_flows(),
        1,
        "x's old packets are not its new connection's"
    );
    h.assert_outcomes(&[
        (Counter::SampledHead, 64),
        (Counter::OverBudget, 16),
        (Counter::Control, 1),
    ]);
}

/// A bare SYN retires only the `HOT` slots whose flows share its epoch
/// group (`hot::epoch_slot`): a SYN flood to a watched service does not
/// send every busy flow back to the full path.
#[test]
fn a_syn_retires_only_the_slots_of_its_epoch_group() {
    use sensor_common::{block::flow_bucket, hot::epoch_slot};
    if skip_without_root("a_syn_retires_only_the_slots_of_its_epoch_group") {
        return;
    }
    let group = |sport: u16| epoch_slot(flow_bucket(&web_key(sport).0));
    let busy = 40630u16;
    let ports = 40631..50000;
    let other = ports.clone().find(|&p| group(p) != group(busy)).unwrap();
    let same = ports.clone().find(|&p| group(p) == group(busy)).unwrap();
    let mut h = Harness::new(Config::default());
    let flows = h.sensor.take_flows().unwrap();
    let b = FrameBuilder::tcp("192.0.2.10", busy, "198.51.100.2", 80);
    let segment = |i: u32| b.clone().seq(1 + i * 512).payload(vec![b'a'; 512]).build();
    // 32 segments fill the head; the 33rd is counted by the full path and
    // hands the flow to the slot, which counts the next 7.
    for i in 0..40 {
        h.run(&segment(i));
    }
    let (k, d) = web_key(busy);
    let in_flows = || flows.get(&k, 0).unwrap().pkts[usize::from(d)];
    assert_eq!(in_flows(), 33);
    let syn = |sport: u16| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .flags(TCP_SYN)
            .build()
    };
    h.run(&syn(other));
    h.run(&segment(40));
    assert_eq!(in_flows(), 33, "still counted by the slot");
    h.run(&syn(same));
    h.run(&segment(41));
    assert_eq!(in_flows(), 42, "the full path took the slot's counts in");
    h.assert_outcomes(&[
        (Counter::SampledHead, 32),
        (Counter::OverBudget, 10),
        (Counter::SynDeferred, 2),
    ]);
}

/// Bare SYNs of one epoch group on two CPUs at once: every one bumps the
/// group's counter (an atomic add), so connection numbers only grow. With a
/// load and a store, bumps racing on the two CPUs were lost, and the flow
/// started after them took a number an older connection may have had.
#[test]
fn syns_on_two_cpus_at_once_each_bump_their_epoch_group() {
    use sensor_user::capture::sched;
    const CALLS: u32 = 40;
    const REPEAT: u32 = 5_000;
    if skip_without_root("syns_on_two_cpus_at_once_each_bump_their_epoch_group") {
        return;
    }
    let Some(cpus) = online_cpus_if_several("one CPU, no race") else {
        return;
    };
    let mut h = Harness::new(Config::default());
    let flows = h.sensor.take_flows().unwrap();
    let b = FrameBuilder::tcp("192.0.2.10", 40650, "198.51.100.2", 80);
    let syn = b.clone().flags(TCP_SYN).build();
    let prog = h.sensor.program().unwrap();
    std::thread::scope(|s| {
        for &cpu in &cpus[..2] {
            let syn = &syn;
            s.spawn(move || {
                sched::pin(cpu).unwrap();
                for _ in 0..CALLS {
                    let opts = TestRunOptions {
                        data_in: Some(syn),
                        repeat: REPEAT,
                        ..TestRunOptions::default()
                    };
                    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
                    assert_eq!(r.return_value, XDP_PASS);
                }
            });
        }
    });
    let syns = 2 * u64::from(CALLS * REPEAT);
    assert_eq!(h.count(Counter::SynDeferred), syns);
    // The login starts the flow: numbered with its group's counter.
    h.run(&b.clone().seq(1).payload(http_get()).build());
    let (key, _) = web_key(40650);
    assert_eq!(
        u64::from(flows.get(&key, 0).unwrap().conn),
        syns,
        "every bump counted"
    );
}

/// The frames of every shape above, in one sequence.
/// `inner` carried in GRE of protocol `proto` (with `fields` after the base
/// header, per `flags`) from 10.200.0.3 to 10.200.0.224, as a mirror feed
/// delivers it; `frag`: the outer IPv4 flags/offset field.
fn gre(flags: u16, proto: u16, fields: &[u8], inner: &[u8], frag: u16) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(fields);
    g.extend_from_slice(inner);
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, 47, 0, 0, 10, 200, 0, 3, 10, 200, 0, 224,
    ];
    ip[2..4].copy_from_slice(&((20 + g.len()) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&g);
    f
}

/// Each tunnel the parser looks through, around a login to the watched
/// address (`sport` tells them apart), and the ones it counts instead.
fn tunnelled() -> Vec<Vec<u8>> {
    let inner = |sport: u16| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .payload(http_get())
            .build()
    };
    let erspan2 = [0, 0, 0, 9, 0x10, 0x01, 0, 0, 0, 0, 0, 0];
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
    vxlan.extend_from_slice(&inner(40104));
    let once = gre(0, 0x6558, &[], &inner(40105), 0);
    let mut cut = gre(0x1000, 0x88be, &erspan2, &inner(40106), 0x2000);
    cut.truncate(cut.len() - 20);
    let outer_len = (cut.len() - 14) as u16;
    cut[16..18].copy_from_slice(&outer_len.to_be_bytes());
    vec![
        gre(0x2000, 0x6558, &[0, 0, 0, 5], &inner(40101), 0),
        gre(0x1000, 0x88be, &erspan2, &inner(40102), 0),
        gre(0, 0x0800, &[], &inner(40103)[14..], 0),
        FrameBuilder::udp("10.200.0.3", 50000, "10.200.0.224", 4789)
            .payload(vxlan)
            .build(),
        gre(0, 0x6558, &[], &once, 0),
        cut,
    ]
}

#[test]
fn tunnelled_flows_are_seen_inside() {
    if skip_without_root("tunnelled_flows_are_seen_inside") {
        return;
    }
    let mut h = Harness::new(Config::default());
    for f in tunnelled() {
        h.run(&f);
    }
    let recs = h.records();
    let ports: Vec<u16> = recs.iter().map(|r| r.src().1).collect();
    assert_eq!(
        ports,
        [40101, 40102, 40103, 40104],
        "GRE, ERSPAN, raw GRE, VXLAN"
    );
    for r in &recs {
        assert_eq!(r.kind, RecordKind::Sample);
        assert_eq!(r.hdr.service, QOBUZ);
        assert_eq!(r.dst(), ("198.51.100.2".parse().unwrap(), 80));
        assert_eq!(r.payload(), http_get());
    }
    h.assert_outcomes(&[
        (Counter::SampledHead, 4),
        (Counter::TunnelTooDeep, 1),
        (Counter::TunnelFragment, 1),
    ]);
}

fn every_shape() -> Vec<Vec<u8>> {
    let up = |sport: u16, f: u8, seq: u32, p: &[u8]| {
        FrameBuilder::tcp("192.0.2.10", sport, "198.51.100.2", 80)
            .flags(f)
            .seq(seq)
            .payload(p)
            .build()
    };
    let hello = tls_client_hello("api.qobuz.com", 1500);
    let (h1, h2) = hello.split_at(1200);
    let mut v = vec![
        FrameBuilder::tcp("192.0.2.10", 40011, "198.51.100.2", 80)
            .vlan(0x8100, 3704)
            .vlan(0x8100, 2474)
            .pppoe()
            .payload(http_get())
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40012, "198.51.100.2", 80)
            .mpls(&[29])
            .payload(http_get())
            .build(),
        up(40000, TCP_SYN, 99, b""),
        FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
            .flags(TCP_SYN | TCP_ACK)
            .build(),
        up(40000, TCP_ACK | 0x08, 100, http_get()),
        FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
            .payload(b"HTTP/1.1 200 OK\r\n\r\n")
            .build(),
        up(40000, TCP_FIN | TCP_ACK, 100 + http_get().len() as u32, b""),
        FrameBuilder::tcp("192.0.2.10", 40001, "203.0.113.5", 5555)
            .payload(http_get())
            .build(),
        FrameBuilder::tcp("2001:db8:9::1", 40002, "2001:db8:1::2", 443)
            .payload(http_get())
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40003, "198.51.100.2", 80)
            .vlan(0x88a8, 100)
            .vlan(0x8100, 10)
            .payload(http_get())
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40004, "198.51.100.2", 80)
            .ipv4_options(&[7, 11, 4])
            .payload(http_get())
            .build(),
        FrameBuilder::udp("192.0.2.10", 5000, "198.51.100.2", 443)
            .ipv4_fragment(0, true)
            .payload([1u8; 64])
            .build(),
        FrameBuilder::udp("192.0.2.10", 5000, "198.51.100.2", 443)
            .ipv4_fragment(9, false)
            .payload([2u8; 64])
            .build(),
        FrameBuilder::tcp("2001:db8:9::1", 40005, "2001:db8:1::2", 80)
            .ipv6_ext(Ext6::HopByHop)
            .ipv6_ext(Ext6::Routing)
            .payload(http_get())
            .build(),
        qobuz_answer().build(),
        FrameBuilder::tcp("192.0.2.10", 40006, "198.51.100.2", 443)
            .payload(tls_client_hello("api.qobuz.com", 0))
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40006, "198.51.100.2", 443)
            .seq(2000)
            .payload([0x17u8, 3, 3, 0, 4, 1, 2, 3, 4])
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40007, "203.0.113.80", 443)
            .flags(TCP_SYN)
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40007, "203.0.113.80", 443)
            .seq(1)
            .payload(h1)
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40007, "203.0.113.80", 443)
            .seq(1201)
            .payload(h2)
            .build(),
        FrameBuilder::tcp("192.0.2.10", 40008, "198.51.100.2", 80)
            .payload(vec![b'x'; 6000 - 54])
            .build(),
    ];
    // Past the head: 1-in-K tail samples.
    for i in 0..20u32 {
        v.push(up(40009, TCP_ACK, 1 + i * 1400, &[b'a'; 1400]));
    }
    let good = up(40010, TCP_ACK, 1, http_get());
    v.push(good[..good.len() - 5].to_vec()); // IP length beyond the frame
    let mut arp = good[..42].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    v.push(arp);
    v.extend(tunnelled());
    v
}

#[test]
fn the_userspace_sampler_matches_the_kernel_byte_for_byte() {
    if skip_without_root("the_userspace_sampler_matches_the_kernel_byte_for_byte") {
        return;
    }
    let config = Config {
        head_bytes: 4096,
        tail_every: 4,
        ..Config::default()
    };
    assert_sampler_matches(config, &every_shape());
}

/// Busy flows past their head, as the kernel's per-CPU HOT slots count them
/// without the full path (`sensor_common::hot`), against the userspace
/// sampler, which has no such slots: every record and counter alike. Three
/// TCP flows (one VLAN-tagged) and a UDP one share a client and a server, so
/// their packets contend for the same two slots; a tagged IPv6 TCP flow beside them; runs of
/// varying length, pure ACKs and data both ways, flows ending with FIN and
/// RST, query-shaped then answer-shaped datagrams from the server's port 53.
#[test]
fn busy_flows_are_sampled_alike_with_and_without_hot_slots() {
    if skip_without_root("busy_flows_are_sampled_alike_with_and_without_hot_slots") {
        return;
    }
    let (client, server) = ("192.0.2.10", "198.51.100.2");
    let mut frames = Vec::new();
    let (client6, server6) = ("2001:db8:c::10", "2001:db8:1::2");
    let mut seq = [1u32; 4];
    // A small deterministic generator: the same frames every run.
    let mut state = 0x2545_f491_u32;
    let mut next = move |n: u32| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state % n
    };
    for round in 0..120u32 {
        let flow = next(6) as usize;
        let run = 1 + next(12);
        for _ in 0..run {
            let frame =
                match flow {
                    0..=2 => {
                        let sport = 41000 + flow as u16;
                        let f =
                            if next(2) == 0 {
                                let len = 200 + next(1200) as usize;
                                let b = FrameBuilder::tcp(client, sport, server, 80)
                                    .seq(seq[flow])
                                    .payload(vec![b'a' + flow as u8; len]);
                                seq[flow] += len as u32;
                                b
                            } else if next(3) == 0 {
                                FrameBuilder::tcp(server, 80, client, sport)
                                    .payload(vec![b'z'; 1 + next(1400) as usize])
                            } else {
                                FrameBuilder::tcp(server, 80, client, sport).ack(seq[flow])
                            };
                        // One flow arrives with a VLAN tag (its FIN does not).
                        let f = f.flags(TCP_ACK);
                        if flow == 1 { f.vlan(0x8100, 10) } else { f }.build()
                    }
                    5 => {
                        let f = if next(2) == 0 {
                            let len = 200 + next(1200) as usize;
                            let b = FrameBuilder::tcp(client6, 41010, server6, 80)
                                .seq(seq[3])
                                .payload(vec![b'6'; len]);
                            seq[3] += len as u32;
                            b
                        } else {
                            FrameBuilder::tcp(server6, 80, client6, 41010).ack(seq[3])
                        };
                        f.flags(TCP_ACK).vlan(0x88a8, 20).build()
                    }
                    3 => FrameBuilder::udp(client, 5000, server, 443)
                        .payload(vec![0x40; 100 + next(1100) as usize])
                        .build(),
                    _ => {
                        // From the server's :53: query-shaped (QR clear), then answers.
                        let mut m = dns_answer(7, "api.qobuz.com", &[[198, 51, 100, 2]], 300);
                        if round < 60 {
                            m[2] &= 0x7f;
                        }
                        FrameBuilder::udp(server, 53, client, 33333)
                            .payload(m)
                            .build()
                    }
                };
            frames.push(frame);
        }
        if round == 70 {
            frames.push(
                FrameBuilder::tcp(client, 41001, server, 80)
                    .seq(seq[1])
                    .flags(TCP_FIN | TCP_ACK)
                    .build(),
            );
        }
        if round == 90 {
            frames.push(
                FrameBuilder::tcp(server, 80, client, 41002)
                    .flags(TCP_RST)
                    .build(),
            );
        }
        // The client's ports come round again: new connections on the flow
        // that ended with a FIN and on one busy in its slot (policy::restart).
        if round == 80 || round == 100 {
            let flow = usize::from(round == 80);
            seq[flow] = 7_000_000 * round;
            frames.push(
                FrameBuilder::tcp(client, 41000 + flow as u16, server, 80)
                    .seq(seq[flow])
                    .flags(TCP_SYN)
                    .build(),
            );
            seq[flow] += 1;
        }
    }
    frames.push(
        FrameBuilder::tcp(client, 41000, server, 80)
            .seq(seq[0])
            .flags(TCP_FIN | TCP_ACK)
            .build(),
    );
    frames.push(
        FrameBuilder::tcp(client6, 41010, server6, 80)
            .seq(seq[3])
            .flags(TCP_FIN | TCP_ACK)
            .build(),
    );
    let config = Config {
        head_bytes: 3000,
        tail_every: 8,
        ..Config::default()
    };
    let (kernel_records, _) = assert_sampler_matches(config, &frames);
    // Enough happened: heads, tails, metadata, DNS.
    assert!(kernel_records > 40, "{kernel_records} records");
}

/// Runs `frames` through the kernel program and the userspace sampler with
/// `config`; asserts every frame gets the same record (header and bytes, the
/// time aside) or none from both, and that every counter ends alike. Returns
/// the records and the frames.
fn assert_sampler_matches(config: Config, frames: &[Vec<u8>]) -> (usize, usize) {
    use sensor_user::{capture::sampler::Sampler, targets::learning::MemoryWatch};
    let mut h = Harness::new(config);
    let mut watch = MemoryWatch::default();
    watch.0.insert("198.51.100.0/24".parse().unwrap(), QOBUZ);
    watch.0.insert("2001:db8:1::/48".parse().unwrap(), QOBUZ);
    let mut sampler = Sampler::new(config, 1024, 1024);
    let mut records = 0;
    for (i, frame) in frames.iter().enumerate() {
        h.run(frame);
        let mut kernel = h.records();
        let user = sampler.process(frame, 0, LO, &watch);
        for r in &mut kernel {
            r.hdr.ts_ns = 0;
        }
        assert_eq!(
            kernel.len(),
            usize::from(user.is_some()),
            "frame {i}: record or not"
        );
        if let (Some(k), Some(u)) = (kernel.first(), user.as_ref()) {
            assert_eq!(
                k.hdr.as_bytes(),
                u.hdr.as_bytes(),
                "frame {i}: header\nkernel {:?}\nuser   {:?}",
                k.hdr,
                u.hdr
            );
            assert_eq!(k.frame, u.frame, "frame {i}: frame bytes");
            records += 1;
        }
    }
    for &c in Counter::ALL {
        assert_eq!(
            h.count(c),
            sampler.counters[c as usize],
            "counter {}",
            c.name()
        );
    }
    (records, frames.len())
}

#[test]
fn the_sampler_matches_the_kernel_on_every_test_capture() {
    use sensor_user::{
        capture::{pcap, sampler::Sampler},
        targets::learning::MemoryWatch,
    };
    if skip_without_root("the_sampler_matches_the_kernel_on_every_test_capture") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut captures: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    captures.sort();
    assert!(captures.len() >= 4, "{captures:?}");
    for cap in captures {
        // Everything watched: every flow goes through the sampling policy.
        let mut h = Harness::new(Config::default());
        h.watch.insert("0.0.0.0/0".parse().unwrap(), 7).unwrap();
        h.watch.insert("::/0".parse().unwrap(), 7).unwrap();
        // The same tries in userspace, the harness's own prefixes included.
        let mut watch = MemoryWatch::default();
        watch.0.insert("0.0.0.0/0".parse().unwrap(), 7);
        watch.0.insert("::/0".parse().unwrap(), 7);
        watch.0.insert("198.51.100.0/24".parse().unwrap(), QOBUZ);
        watch.0.insert("2001:db8:1::/48".parse().unwrap(), QOBUZ);
        let mut sampler = Sampler::new(Config::default(), 65_536, 65_536);
        let mut frames = 0;
        pcap::read(
            &cap,
            |f| {
                frames += 1;
                // BPF_PROG_TEST_RUN needs at least an Ethernet header.
                if f.data.len() < 14 {
                    return;
                }
                h.run(&f.data);
                let mut kernel = h.records();
                let user = sampler.process(&f.data, 0, LO, &watch);
                for r in &mut kernel {
                    r.hdr.ts_ns = 0;
                }
                let name = cap.display();
                assert_eq!(
                    kernel.len(),
                    usize::from(user.is_some()),
                    "{name} frame {frames}"
                );
                if let (Some(k), Some(u)) = (kernel.first(), user.as_ref()) {
                    assert_eq!(
                        k.hdr.as_bytes(),
                        u.hdr.as_bytes(),
                        "{name} frame {frames}: header"
                    );
                    assert_eq!(k.frame, u.frame, "{name} frame {frames}: bytes");
                }
            },
            |_| {},
        )
        .expect("read capture");
        for &c in Counter::ALL {
            assert_eq!(
                h.count(c),
                sampler.counters[c as usize],
                "{}: counter {}",
                cap.display(),
                c.name()
            );
        }
    }
}

/// True (and says why) when not root: BPF_PROG_TEST_RUN needs CAP_BPF.
fn skip_without_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping {test}: needs root (loads XDP programs)");
    }
    !root
}
