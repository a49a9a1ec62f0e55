//! Blocking in the real XDP program, run with BPF_PROG_TEST_RUN: the RST it
//! sends in a blocked packet's place, checked byte for byte with checksums and
//! sequence numbers verified independently; what is dropped and what passes in
//! each mode; the outcome counters. Needs root: `cargo xtask test` runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use aya::programs::{TestRun, TestRunOptions};
use sensor_common::{
    block::{BlockEntry, RST_INTERVAL_NS, policy, reason, watch_value},
    config::{Config, config_flags},
    counters::Counter,
    flow::FlowKey,
    parse::{TCP_FIN, TCP_SYN},
    record::flags,
};
use sensor_user::{
    capture::{
        blocks::{BlockMaps, BlockSink, quarantine_key},
        clock::mono_now_ns,
        loader::{MapSizes, Sensor, XDP_OBJECT},
        record::Record,
        ring::Rings,
        stats::Stats,
        watch::WatchMaps,
    },
    fixtures::{Ext6, FrameBuilder, tls_client_hello},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// BPF_PROG_TEST_RUN runs XDP programs as if received on the loopback device.
const LO: u32 = 1;
const QOBUZ: u32 = 1;
const CLIENT: &str = "192.0.2.10";
const SERVER: &str = "198.51.100.2";
const CLIENT6: &str = "2001:db8:c::10";
const SERVER6: &str = "2001:db8:1::2";

struct Harness {
    sensor: Sensor,
    ring: Rings,
    stats: Stats,
    /// Owns the watch maps' descriptors for the harness's life.
    _watch: WatchMaps,
    blocks: BlockMaps,
}

impl Harness {
    /// Blocking on, loopback a LAN interface, 198.51.100.0/24 and
    /// 2001:db8:1::/48 watched as Qobuz with `policy` bits.
    fn new(policy: u8) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
            return None;
        }
        // One CPU, as one receive queue: the HOT slots are per CPU.
        sensor_user::capture::sched::pin_here().expect("pin the test thread");
        let config = Config {
            flags: Config::default().flags | config_flags::BLOCK,
            ..Config::default()
        };
        let sizes = MapSizes {
            ring_bytes: 1 << 20,
            ..MapSizes::default()
        };
        let mut sensor = Sensor::load(XDP_OBJECT, &sizes, &config).expect("load the XDP program");
        let ring = sensor.take_rings().unwrap();
        let stats = sensor.take_stats().unwrap();
        let mut watch = sensor.take_watch().unwrap();
        let value = watch_value(QOBUZ, policy);
        watch
            .insert("198.51.100.0/24".parse().unwrap(), value)
            .unwrap();
        watch
            .insert("2001:db8:1::/48".parse().unwrap(), value)
            .unwrap();
        let mut blocks = sensor.take_blocks().unwrap();
        blocks.set_role(LO, true).unwrap();
        Some(Self {
            sensor,
            ring,
            stats,
            _watch: watch,
            blocks,
        })
    }

    /// Runs the program on `frame`: its return value and the frame after it.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        opts.repeat = 1;
        let r = self
            .sensor
            .program()
            .unwrap()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
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

    /// Blocks the flow of `frame` (a client packet) for a minute.
    fn block(&mut self, frame: &[u8]) {
        let p = sensor_common::parse::parse(frame).unwrap();
        let (key, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        let entry = BlockEntry::new(mono_now_ns() + 60_000_000_000, QOBUZ, reason::FINDING, dir);
        self.blocks.block(&key, &entry).unwrap();
    }

    /// The client's leaking request on `b`'s flow passes, then its flow is
    /// blocked, as after a finding.
    fn leak_then_block(&mut self, b: &FrameBuilder, what: &str) {
        let leaking = b.clone().ack(0x1111_2222).payload(leak()).build();
        assert_eq!(self.run(&leaking).0, XDP_PASS, "{what}: before the block");
        self.block(&leaking);
    }
}

fn leak() -> &'static [u8] {
    b"GET /api.json/0.2/user/login?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n"
}

/// RFC 1071 verification: a correct header sums (with its checksum) to 0xffff.
fn sums_to_ones(parts: &[&[u8]]) -> bool {
    let bytes: Vec<u8> = parts.concat();
    let mut s: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Checks `rst` answers `trigger` (both whole frames): MACs swapped, the link
/// header up to IP kept (VLAN tags included), a bare IP header, a 20-byte TCP
/// RST from the server to the client with seq = the trigger's ack, checksums
/// right, nothing after it.
fn assert_rst_answers(rst: &[u8], trigger: &[u8], l3: usize, v4: bool, ack: u32) {
    assert_eq!(
        &rst[..6],
        &trigger[6..12],
        "destination MAC = trigger's source"
    );
    assert_eq!(
        &rst[6..12],
        &trigger[..6],
        "source MAC = trigger's destination"
    );
    assert_eq!(&rst[12..l3], &trigger[12..l3], "link header and tags kept");
    let (ip_len, src, dst, proto_ok) = if v4 {
        let ip = &rst[l3..l3 + 20];
        assert_eq!(ip[0], 0x45, "IPv4 without options");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 40, "total length");
        assert!(sums_to_ones(&[ip]), "IPv4 header checksum");
        let t = &trigger[l3..];
        let ihl = usize::from(t[0] & 0x0f) * 4;
        assert_eq!(&ip[12..16], &t[16..20], "from the trigger's destination");
        assert_eq!(&ip[16..20], &t[12..16], "to the trigger's source");
        (
            20,
            ip[12..16].to_vec(),
            ip[16..20].to_vec(),
            ip[9] == 6 && ihl >= 20,
        )
    } else {
        let ip = &rst[l3..l3 + 40];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 20, "payload length");
        assert_eq!(&ip[8..24], &trigger[l3 + 24..l3 + 40]);
        assert_eq!(&ip[24..40], &trigger[l3 + 8..l3 + 24]);
        (40, ip[8..24].to_vec(), ip[24..40].to_vec(), ip[6] == 6)
    };
    assert!(proto_ok, "next protocol TCP");
    assert_eq!(rst.len(), l3 + ip_len + 20, "trimmed to the headers");
    let tcp = &rst[l3 + ip_len..];
    let tp = sensor_common::parse::parse(trigger).unwrap();
    assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), tp.dport);
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), tp.sport);
    assert_eq!(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]), ack);
    assert_eq!(&tcp[8..12], &[0; 4], "no acknowledgment number");
    assert_eq!(tcp[12], 0x50, "no TCP options");
    assert_eq!(tcp[13], 0x04, "RST alone, no ACK");
    let len = [0u8, 20];
    let pseudo: Vec<u8> = if v4 {
        [&src[..], &dst[..], &[0, 6], &len[..]].concat()
    } else {
        [&src[..], &dst[..], &[0, 0, 0, 20, 0, 0, 0, 6][..]].concat()
    };
    assert!(sums_to_ones(&[&pseudo, tcp]), "TCP checksum");
}

#[test]
fn reset_answers_the_next_client_packet_with_an_rst_then_drops() {
    let Some(mut h) = Harness::new(0) else { return };
    let cases = [
        (
            "IPv4",
            FrameBuilder::tcp(CLIENT, 40000, SERVER, 80),
            14,
            true,
        ),
        (
            "IPv4 with options, 802.1Q",
            FrameBuilder::tcp(CLIENT, 40001, SERVER, 80)
                .vlan(0x8100, 100)
                .ipv4_options(&[0x94, 0x04, 0, 0])
                .tcp_options(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
            18,
            true,
        ),
        (
            "IPv6 with an extension header",
            FrameBuilder::tcp(CLIENT6, 40002, SERVER6, 80).ipv6_ext(Ext6::DestOpts),
            14,
            false,
        ),
        (
            "IPv6, 802.1Q, TCP options",
            FrameBuilder::tcp(CLIENT6, 40003, SERVER6, 80)
                .vlan(0x8100, 7)
                .tcp_options(&[2, 4, 5, 0xb4]),
            18,
            false,
        ),
    ];
    let mut n = 0;
    for (name, b, l3, v4) in cases {
        h.leak_then_block(&b, name);
        let next = b
            .clone()
            .seq(5000)
            .ack(0xfeed_f00d)
            .payload(b"more")
            .build();
        let (ret, rst) = h.run(&next);
        assert_eq!(ret, XDP_TX, "{name}: the next client packet becomes an RST");
        assert_rst_answers(&rst, &next, l3, v4, 0xfeed_f00d);
        let (ret, _) = h.run(&next);
        assert_eq!(ret, XDP_DROP, "{name}: later client packets are dropped");
        // A retransmission after a lost RST (TCP waits ≥ 200 ms) gets another.
        // The program reads the coarse clock, a tick (≤ 4 ms at HZ=250; longer
        // on a CPU that idled tickless) behind: wait a little past the interval.
        std::thread::sleep(std::time::Duration::from_nanos(
            RST_INTERVAL_NS + 20_000_000,
        ));
        let retry = b
            .clone()
            .seq(5000)
            .ack(0xfeed_f00e)
            .payload(b"more")
            .build();
        let (ret, rst) = h.run(&retry);
        assert_eq!(ret, XDP_TX, "{name}: a retransmission gets an RST");
        assert_rst_answers(&rst, &retry, l3, v4, 0xfeed_f00e);
        assert_eq!(
            h.run(&retry).0,
            XDP_DROP,
            "{name}: at most one per interval"
        );
        // The server's packets on the flow pass.
        let p = sensor_common::parse::parse(next.as_slice()).unwrap();
        let (src, dst) = if v4 {
            (SERVER, CLIENT)
        } else {
            (SERVER6, CLIENT6)
        };
        let reply = FrameBuilder::tcp(src, 80, dst, p.sport).payload(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.run(&reply.build()).0, XDP_PASS, "{name}: server side");
        n += 1;
    }
    assert_eq!(h.count(Counter::BlockedRst), 2 * n);
    assert_eq!(h.count(Counter::BlockedDrop), 2 * n);
    assert_eq!(h.count(Counter::RstFailed), 0);
}

/// A busy flow past its head is counted by the CPU's HOT slot without the
/// full path (`sensor_common::hot`); a block userspace sets then still
/// answers its very next client packet, and the slot never takes a later one.
#[test]
fn a_busy_flow_counted_by_the_fast_path_is_still_blocked() {
    let Some(mut h) = Harness::new(0) else { return };
    let b = FrameBuilder::tcp(CLIENT, 40100, SERVER, 80);
    // 20 KiB: past the default 16 KiB head, then counted only.
    for i in 0..40u32 {
        let f = b.clone().seq(1 + i * 512).payload(vec![b'a'; 512]).build();
        assert_eq!(h.run(&f).0, XDP_PASS);
    }
    let heads = h.records().len();
    assert_eq!(h.count(Counter::OverBudget), 8, "{heads} records");
    let next = b
        .clone()
        .seq(1 + 40 * 512)
        .ack(0xfeed_f00d)
        .payload(b"more")
        .build();
    h.block(&next);
    let (ret, rst) = h.run(&next);
    assert_eq!(ret, XDP_TX, "the next client packet becomes an RST");
    assert_rst_answers(&rst, &next, 14, true, 0xfeed_f00d);
    assert_eq!(h.run(&next).0, XDP_DROP);
    assert_eq!(
        h.count(Counter::OverBudget),
        8,
        "none counted after the block"
    );
}

/// A client opening a new connection on a blocked flow's ports (an ephemeral
/// port come round again): no RST can answer a SYN without an ACK, so a
/// dropped SYN would time out for as long as the block lasts. It passes, the
/// block ends, and the new connection is a new flow: its login is a first
/// payload again, sampled and decided afresh.
#[test]
fn a_new_connection_on_a_blocked_flows_ports_passes_and_starts_over() {
    let Some(mut h) = Harness::new(0) else { return };
    let b = FrameBuilder::tcp(CLIENT, 40200, SERVER, 80);
    h.leak_then_block(&b, "the old connection");
    let next = b
        .clone()
        .seq(5000)
        .ack(0x1111_2223)
        .payload(b"more")
        .build();
    assert_eq!(h.run(&next).0, XDP_TX, "the old connection is reset");
    let _ = h.records();
    let syn = b.clone().seq(90_000).flags(TCP_SYN).build();
    assert_eq!(h.run(&syn).0, XDP_PASS, "the new connection's SYN passes");
    let ack = b.clone().seq(90_001).ack(0x0a0b_0c0d).build();
    assert_eq!(h.run(&ack).0, XDP_PASS, "its handshake completes");
    let login = b
        .clone()
        .seq(90_001)
        .ack(0x0a0b_0c0d)
        .payload(leak())
        .build();
    assert_eq!(h.run(&login).0, XDP_PASS);
    let recs = h.records();
    let first = recs
        .iter()
        .find(|r| r.hdr.tcp_seq == 90_001 && r.hdr.flags & flags::FIRST_PAYLOAD != 0);
    assert!(
        first.is_some(),
        "the new login is a first payload: {recs:?}"
    );
    assert_eq!(h.count(Counter::BlockedRst), 1);
    assert_eq!(h.count(Counter::BlockedDrop), 0);

    // A refused first payload likewise: the next connection's is refused
    // again (the policy still holds), not dropped unseen.
    let Some(h) = Harness::new(policy::BLOCK_CLEARTEXT) else {
        return;
    };
    let b = FrameBuilder::tcp(CLIENT, 42100, SERVER, 80);
    assert_eq!(open_and_send(&h, &b, leak()).0, XDP_TX);
    assert_eq!(open_and_send(&h, &b, leak()).0, XDP_TX, "refused afresh");
    assert_eq!(h.count(Counter::CleartextDrop), 2);
    assert_eq!(h.count(Counter::BlockedDrop), 0);
}

#[test]
fn blocks_apply_only_live_on_a_lan_interface_with_blocking_on() {
    let Some(mut h) = Harness::new(0) else { return };
    let b = FrameBuilder::tcp(CLIENT, 41000, SERVER, 80).payload(leak());
    let frame = b.build();
    // Expired: ignored before userspace removes it (by more than a tick: the
    // program compares deadlines with the coarse clock).
    let p = sensor_common::parse::parse(frame.as_slice()).unwrap();
    let (key, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
    let stale = BlockEntry::new(mono_now_ns() - 20_000_000, QOBUZ, reason::FINDING, dir);
    h.blocks.block(&key, &stale).unwrap();
    assert_eq!(h.run(&frame).0, XDP_PASS, "expired block");
    // The server direction of a blocked flow is never the client's.
    h.block(&frame);
    let reply = FrameBuilder::tcp(SERVER, 80, CLIENT, 41000)
        .payload(b"x")
        .build();
    assert_eq!(h.run(&reply).0, XDP_PASS);
    // Not a LAN interface: nothing is blocked.
    h.blocks.set_role(LO, false).unwrap();
    assert_eq!(h.run(&frame).0, XDP_PASS, "WAN interface");
    h.blocks.set_role(LO, true).unwrap();
    // Blocking off in the config: the maps are not even read.
    h.sensor.set_config(&Config::default()).unwrap();
    assert_eq!(h.run(&frame).0, XDP_PASS, "monitor");
    h.sensor
        .set_config(&Config {
            flags: Config::default().flags | config_flags::BLOCK,
            ..Config::default()
        })
        .unwrap();
    assert_eq!(h.run(&frame).0, XDP_TX, "blocking on again");
    // Unwatched destinations and DNS are never looked up in the block maps.
    let other = FrameBuilder::tcp(CLIENT, 41000, "203.0.113.5", 80)
        .payload(leak())
        .build();
    h.block(&other);
    assert_eq!(h.run(&other).0, XDP_PASS, "unwatched");
    let dns = FrameBuilder::udp(CLIENT, 5353, SERVER, 53)
        .payload([0; 12])
        .build();
    h.block(&dns);
    assert_eq!(h.run(&dns).0, XDP_PASS, "DNS");
    assert_eq!(h.count(Counter::BlockedRst), 1);
    assert_eq!(h.count(Counter::BlockedDrop), 0);
}

/// A new flow from the client: SYN, then its first payload. Returns the first
/// payload's verdict and frame after the program.
fn open_and_send(h: &Harness, b: &FrameBuilder, payload: &[u8]) -> (u32, Vec<u8>) {
    let syn = b.clone().flags(TCP_SYN).build();
    assert_eq!(h.run(&syn).0, XDP_PASS, "a SYN always passes");
    h.run(&b.clone().ack(0x0102_0304).payload(payload).build())
}

#[test]
fn block_cleartext_refuses_the_first_cleartext_payload_and_passes_tls() {
    let Some(mut h) = Harness::new(policy::BLOCK_CLEARTEXT) else {
        return;
    };
    let b = FrameBuilder::tcp(CLIENT, 42000, SERVER, 80);
    let (ret, rst) = open_and_send(&h, &b, leak());
    assert_eq!(ret, XDP_TX, "cleartext refused with an RST");
    let trigger = b.clone().ack(0x0102_0304).payload(leak()).build();
    assert_rst_answers(&rst, &trigger, 14, true, 0x0102_0304);
    // The refused payload was still sampled, flagged blocked.
    let recs = h.records();
    let sample = recs
        .iter()
        .find(|r| r.hdr.flags & flags::FIRST_PAYLOAD != 0);
    let sample = sample.expect("the refused payload is sampled");
    assert_ne!(sample.hdr.flags & flags::BLOCKED, 0);
    assert!(sample.frame.ends_with(leak()));
    // Its retransmission is dropped.
    assert_eq!(h.run(&trigger).0, XDP_DROP);
    // TLS to the same address passes, and so does its cleartext-looking tail.
    let t = FrameBuilder::tcp(CLIENT, 42001, SERVER, 443);
    let (ret, _) = open_and_send(&h, &t, &tls_client_hello("www.qobuz.com", 0));
    assert_eq!(ret, XDP_PASS, "TLS passes");
    assert_eq!(h.run(&t.clone().payload(b"GET /").build()).0, XDP_PASS);
    // A flow first seen mid-stream (it raced its DNS answer) passes, counted.
    let raced = FrameBuilder::tcp(CLIENT, 42002, SERVER, 80)
        .payload(leak())
        .build();
    assert_eq!(h.run(&raced).0, XDP_PASS);
    assert_eq!(h.count(Counter::CleartextRace), 1);
    // An allow-listed client passes.
    h.blocks.allow("192.0.2.10/32".parse().unwrap()).unwrap();
    let (ret, _) = open_and_send(&h, &FrameBuilder::tcp(CLIENT, 42003, SERVER, 80), leak());
    assert_eq!(ret, XDP_PASS, "allow-listed");
    // UDP is never refused.
    let udp = FrameBuilder::udp("192.0.2.11", 5000, SERVER, 80)
        .payload(leak())
        .build();
    assert_eq!(h.run(&udp).0, XDP_PASS);
    assert_eq!(h.count(Counter::CleartextDrop), 1);
    assert_eq!(h.count(Counter::BlockedDrop), 1);
}

#[test]
fn dry_run_policy_passes_and_flags_the_record() {
    let Some(mut h) = Harness::new(policy::BLOCK_CLEARTEXT | policy::DRY_RUN) else {
        return;
    };
    let (ret, _) = open_and_send(&h, &FrameBuilder::tcp(CLIENT, 43000, SERVER, 80), leak());
    assert_eq!(ret, XDP_PASS);
    let recs = h.records();
    let sample = recs
        .iter()
        .find(|r| r.hdr.flags & flags::FIRST_PAYLOAD != 0)
        .expect("sampled");
    assert_ne!(sample.hdr.flags & flags::WOULD_BLOCK, 0);
    assert_eq!(sample.hdr.flags & flags::BLOCKED, 0);
    assert_eq!(h.count(Counter::WouldBlock), 1);
    assert_eq!(h.count(Counter::CleartextDrop), 0);
}

#[test]
fn quarantine_refuses_a_clients_new_cleartext_flows_to_the_service() {
    let Some(mut h) = Harness::new(0) else { return };
    let q = quarantine_key(CLIENT.parse().unwrap(), QOBUZ);
    let entry = BlockEntry::new(mono_now_ns() + 60_000_000_000, QOBUZ, reason::QUARANTINE, 0);
    h.blocks.quarantine(&q, &entry).unwrap();
    let (ret, _) = open_and_send(&h, &FrameBuilder::tcp(CLIENT, 44000, SERVER, 80), leak());
    assert_eq!(ret, XDP_TX, "the retry is refused");
    let tls = FrameBuilder::tcp(CLIENT, 44001, SERVER, 443);
    let (ret, _) = open_and_send(&h, &tls, &tls_client_hello("www.qobuz.com", 0));
    assert_eq!(ret, XDP_PASS, "its TLS flow passes");
    // Another client is not quarantined.
    let (ret, _) = open_and_send(
        &h,
        &FrameBuilder::tcp("192.0.2.11", 44002, SERVER, 80),
        leak(),
    );
    assert_eq!(ret, XDP_PASS);
    // Lifted: the client may connect again.
    h.blocks.release(&q).unwrap();
    let (ret, _) = open_and_send(&h, &FrameBuilder::tcp(CLIENT, 44003, SERVER, 80), leak());
    assert_eq!(ret, XDP_PASS);
    h.records();
    assert_eq!(h.count(Counter::CleartextDrop), 1);
}

#[test]
fn no_rst_can_be_written_into_pppoe_the_packet_is_dropped() {
    let Some(mut h) = Harness::new(0) else { return };
    let b = FrameBuilder::tcp(CLIENT, 45000, SERVER, 80).pppoe();
    let frame = b.clone().payload(leak()).build();
    h.block(&frame);
    assert_eq!(h.run(&frame).0, XDP_DROP);
    assert_eq!(h.count(Counter::RstFailed), 1);
    assert_eq!(h.count(Counter::BlockedDrop), 1);
    // Packets without ACK get no RST either (a bare SYN passes: a new
    // connection on the ports, a_new_connection_on_a_blocked_flows_ports...).
    let no_ack = FrameBuilder::tcp(CLIENT, 45001, SERVER, 80)
        .flags(TCP_FIN)
        .build();
    h.block(&no_ack);
    assert_eq!(h.run(&no_ack).0, XDP_DROP);
    assert_eq!(h.count(Counter::RstFailed), 2);
}
