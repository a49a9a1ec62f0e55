//! The sampling policy: what of a packet goes to userspace. Pure functions over
//! [`Config`] and [`FlowState`], used by the XDP program and the offline replay.

use crate::{
    config::{Config, config_flags},
    counters::Counter,
    flow::{FlowState, IPPROTO_UDP, flow_flags},
    parse::{Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    record::{RecordKind, flags},
};

pub const DNS_PORT: u16 = 53;

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing goes to userspace; count the packet under this outcome.
    Skip(Counter),
    /// Send a record of `kind` with `flags`; on success count it under `counter`.
    Record {
        kind: RecordKind,
        flags: u16,
        counter: Counter,
    },
}

/// Content type and length (header included) of the TLS record starting a
/// payload, if these first five payload bytes are a record header: type 20–23
/// (change_cipher_spec, alert, handshake, application_data), version 3.0–3.4.
#[inline(always)]
pub fn tls_record(first: [u8; 5]) -> Option<(u8, u32)> {
    if (0x14..=0x17).contains(&first[0]) && first[1] == 0x03 && first[2] <= 0x04 {
        Some((
            first[0],
            u16::from_be_bytes([first[3], first[4]]) as u32 + 5,
        ))
    } else {
        None
    }
}

/// Length of the TLS handshake record starting a payload (header included), if
/// these first five payload bytes are one: content type 22, version 3.0–3.4.
#[inline(always)]
pub fn tls_handshake_len(first: [u8; 5]) -> Option<u32> {
    match tls_record(first) {
        Some((0x16, len)) => Some(len),
        _ => None,
    }
}

/// Whether a packet is a DNS answer to hand up: from port 53 with payload; for UDP
/// the QR bit (byte 2, top bit) must say "response" so server-to-server queries
/// from port 53 are left alone. TCP segments go up as they are (length-prefixed
/// messages may span segments; userspace reassembles).
#[inline(always)]
pub fn is_dns_answer(cfg: &Config, p: &Parsed, peek3: impl FnOnce() -> Option<[u8; 3]>) -> bool {
    if cfg.flags & config_flags::DNS == 0 || p.sport != DNS_PORT || p.payload_len == 0 {
        return false;
    }
    if p.proto != IPPROTO_UDP {
        return true;
    }
    match peek3() {
        Some(h) => h[2] & 0x80 != 0,
        None => false,
    }
}

/// `PROBE_PENDING` value of a flow whose SYN was seen and no payload yet.
pub const PROBE_AWAITING: u64 = u64::MAX;

/// What the probe path does with a client payload packet of an unwatched flow
/// whose `PROBE_PENDING` value is `pending`: the bytes of the first TLS record
/// still due after this packet (0: done, remove the entry). The packet itself
/// always goes up; when it starts a TLS
/// handshake record longer than the packet (a ClientHello split over segments),
/// the entry stays and the following segments go up until the record is complete.
#[inline(always)]
pub fn probe_remaining(
    pending: u64,
    payload_len: u32,
    peek5: impl FnOnce() -> Option<[u8; 5]>,
) -> u64 {
    let due = if pending == PROBE_AWAITING {
        match peek5().and_then(tls_handshake_len) {
            Some(len) => len as u64,
            None => return 0,
        }
    } else {
        pending
    };
    due.saturating_sub(payload_len as u64)
}

/// Whether an unwatched packet may belong to a followed flow (`follow_apps`):
/// TCP with either port a probe port, the only flows userspace can follow.
#[inline(always)]
pub fn may_be_followed(cfg: &Config, p: &Parsed) -> bool {
    cfg.flags & config_flags::FOLLOW != 0
        && p.is_tcp()
        && (cfg.is_probe_port(p.dport) || cfg.is_probe_port(p.sport))
}

/// The `FLOWS` entry of a flow userspace follows from its probe record: as if
/// the watched path had sampled that first client payload (`probe_payload`
/// bytes, of a head of `head_bytes`) at `now_ns`, so the next client packet
/// continues the head and the server's first payload starts its own.
pub fn followed_flow(
    head_bytes: u32,
    service: u32,
    client_dir: u8,
    now_ns: u64,
    probe_payload: u32,
) -> FlowState {
    let cd = client_dir & 1;
    let mut st = FlowState::new(service, cd, now_ns);
    st.flags = flow_flags::FOLLOWED
        | flow_flags::OPENED
        | if cd == 0 {
            flow_flags::PAYLOAD_SEEN_A
        } else {
            flow_flags::PAYLOAD_SEEN_B
        };
    *slot(&mut st.budget, cd) = head_bytes;
    *slot(&mut st.sampled, cd) = probe_payload;
    st
}

/// Direction index (0/1) in which the client of a new flow sends, from the packet
/// that created it travelling in `dir`.
#[inline(always)]
pub fn client_dir(p: &Parsed, dir: u8, src_watched: bool, dst_watched: bool) -> u8 {
    if p.is_tcp() && p.tcp_flags & TCP_SYN != 0 {
        // SYN comes from the client, SYN+ACK from the server.
        return if p.tcp_flags & TCP_ACK != 0 {
            dir ^ 1
        } else {
            dir
        };
    }
    // Mid-stream: the watched endpoint is the service, else the lower port serves.
    if dst_watched != src_watched {
        return if dst_watched { dir } else { dir ^ 1 };
    }
    if p.dport <= p.sport { dir } else { dir ^ 1 }
}

#[inline(always)]
fn pick<T: Copy>(a: &[T; 2], d: u8) -> T {
    // Constant indices: no bounds-check branch that could reach a panic.
    if d == 0 { a[0] } else { a[1] }
}

#[inline(always)]
fn slot<T>(a: &mut [T; 2], d: u8) -> &mut T {
    if d == 0 { &mut a[0] } else { &mut a[1] }
}

/// A known flow's addresses and ports opening a new connection (a bare SYN
/// from `client_dir`): an ephemeral port come round again while the old
/// connection's state is still in the table. What the flow learned belongs to
/// the old connection — its first payloads, head budgets, TLS, a refusal —
/// and kept, the new connection's login would count as past its head and go
/// unsampled. It starts over as a flow seen from its SYN, keeping its
/// service, policy and whether an app's flow is followed.
#[inline(always)]
pub fn restart(st: &mut FlowState, client_dir: u8) {
    let mut fresh = FlowState::new(st.service, client_dir, st.first_ns);
    fresh.last_ns = st.last_ns;
    fresh.policy = st.policy;
    fresh.flags = flow_flags::OPENED | (st.flags & flow_flags::FOLLOWED);
    // The kernel numbers the new connection once it has bumped the epoch.
    fresh.conn = st.conn;
    *st = fresh;
}

/// Updates a watched flow's state with one packet travelling in `dir` and decides
/// what userspace gets. `peek5` reads the first five payload bytes; it is called at
/// most once, for the first payload packet of a direction. No clock: a packet
/// that is only counted reads none (`FlowState::last_ns` is the caller's, set
/// with the record's time when a packet is sampled).
///
/// A bare SYN on a known flow starts it over ([`restart`]).
#[inline(always)]
pub fn watched_packet(
    cfg: &Config,
    st: &mut FlowState,
    dir: u8,
    p: &Parsed,
    peek5: impl FnOnce() -> Option<[u8; 5]>,
) -> Decision {
    let dir = dir & 1;
    if crate::admit::is_bare_syn(p) {
        restart(st, dir);
    }
    *slot(&mut st.bytes, dir) += p.l3_len as u64;
    *slot(&mut st.pkts, dir) += 1;

    let mut f = 0u16;
    if dir == st.client_dir {
        f |= flags::FROM_CLIENT;
    }
    if st.flags & flow_flags::FOLLOWED != 0 {
        f |= flags::FOLLOWED;
    }
    let control = p.is_tcp() && p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0;
    if p.payload_len == 0 {
        return if control {
            Decision::Record {
                kind: RecordKind::Meta,
                flags: f,
                counter: Counter::Control,
            }
        } else {
            Decision::Skip(Counter::WatchedNoPayload)
        };
    }

    let seen = if dir == 0 {
        flow_flags::PAYLOAD_SEEN_A
    } else {
        flow_flags::PAYLOAD_SEEN_B
    };
    let first = st.flags & seen == 0;
    if first {
        st.flags |= seen;
        f |= flags::FIRST_PAYLOAD;
        // Any TLS record marks the flow TLS: a flow first seen mid-stream (its
        // address learned after its handshake) starts with application data.
        let record = peek5().and_then(tls_record);
        if p.is_tcp() && dir == st.client_dir && record.is_some() {
            st.flags |= flow_flags::TLS;
        }
        let hello = match record {
            Some((0x16, len)) => Some(len),
            _ => None,
        };
        // A TLS flow samples each direction's first record (the hello, even when it
        // spans segments); cleartext flows get the configured head.
        let budget = if st.flags & flow_flags::TLS != 0 {
            match hello {
                Some(len) if len < cfg.head_bytes => len,
                Some(_) => cfg.head_bytes,
                None => 0,
            }
        } else {
            cfg.head_bytes
        };
        *slot(&mut st.budget, dir) = budget;
    }
    let tls = st.flags & flow_flags::TLS != 0;
    if tls {
        f |= flags::TLS;
    }

    let sampled = pick(&st.sampled, dir);
    if first || sampled < pick(&st.budget, dir) {
        *slot(&mut st.sampled, dir) = sampled.saturating_add(p.payload_len);
        return Decision::Record {
            kind: RecordKind::Sample,
            flags: f,
            counter: Counter::SampledHead,
        };
    }
    let every = cfg.tail_every;
    if every != 0 && pick(&st.pkts, dir).is_multiple_of(every as u64) {
        f |= flags::TAIL;
        return if tls {
            Decision::Record {
                kind: RecordKind::Meta,
                flags: f,
                counter: Counter::TlsMeta,
            }
        } else {
            Decision::Record {
                kind: RecordKind::Sample,
                flags: f,
                counter: Counter::SampledTail,
            }
        };
    }
    if control {
        Decision::Record {
            kind: RecordKind::Meta,
            flags: f,
            counter: Counter::Control,
        }
    } else {
        Decision::Skip(Counter::OverBudget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FAMILY_V4, IPPROTO_TCP};

    fn pkt(payload_len: u32, tcp_flags: u8) -> Parsed {
        Parsed {
            family: FAMILY_V4,
            proto: IPPROTO_TCP,
            src: [0; 16],
            dst: [0; 16],
            sport: 40000,
            dport: 80,
            l3_off: 14,
            l4_off: 34,
            payload_off: 54,
            l3_len: 40 + payload_len,
            payload_len,
            tcp_flags,
            tcp_seq: 0,
            tcp_ack: 0,
            vlan: false,
            first_fragment: false,
            tunnel: 0,
        }
    }

    fn cfg(head: u32, every: u32) -> Config {
        Config {
            head_bytes: head,
            tail_every: every,
            ..Config::default()
        }
    }

    fn kind(d: Decision) -> Option<(RecordKind, Counter)> {
        match d {
            Decision::Record { kind, counter, .. } => Some((kind, counter)),
            Decision::Skip(_) => None,
        }
    }

    #[test]
    fn head_then_one_in_k() {
        let c = cfg(3000, 4);
        let mut st = FlowState::new(1, 0, 0);
        let http = || Some(*b"GET /");
        let mut got = [None; 8];
        for g in &mut got {
            *g = kind(watched_packet(&c, &mut st, 0, &pkt(1000, TCP_ACK), http));
        }
        // 3 × 1000 bytes fill the head; then packets 4 and 8 of the direction.
        let head = Some((RecordKind::Sample, Counter::SampledHead));
        let tail = Some((RecordKind::Sample, Counter::SampledTail));
        assert_eq!(got, [head, head, head, tail, None, None, None, tail]);
        assert_eq!((st.bytes[0], st.pkts[0], st.sampled[0]), (8320, 8, 3000));
        assert_eq!(st.flags & flow_flags::TLS, 0);
    }

    #[test]
    fn a_bare_syn_starts_a_known_flow_over() {
        let c = cfg(1000, 0);
        let mut st = FlowState::new(7, 0, 5);
        st.policy = 3;
        st.flags = flow_flags::FOLLOWED;
        let http = || Some(*b"GET /");
        let first = |d: Decision| matches!(d, Decision::Record { flags: f, .. } if f & flags::FIRST_PAYLOAD != 0);
        assert!(first(watched_packet(
            &c,
            &mut st,
            0,
            &pkt(1000, TCP_ACK),
            http
        )));
        assert_eq!(
            kind(watched_packet(&c, &mut st, 0, &pkt(500, TCP_ACK), http)),
            None
        );
        st.flags |= flow_flags::REFUSED | flow_flags::TLS;
        // A retransmitted or late SYN-ACK changes nothing.
        let _ = watched_packet(&c, &mut st, 1, &pkt(0, TCP_SYN | TCP_ACK), http);
        assert_ne!(st.flags & flow_flags::REFUSED, 0);
        // The client's ports come round again: a new connection, seen from its SYN.
        let syn = watched_packet(&c, &mut st, 1, &pkt(0, TCP_SYN), http);
        assert_eq!(kind(syn), Some((RecordKind::Meta, Counter::Control)));
        assert_eq!(
            (st.service, st.policy, st.client_dir, st.first_ns),
            (7, 3, 1, 5)
        );
        assert_eq!(st.flags, flow_flags::OPENED | flow_flags::FOLLOWED);
        assert_eq!((st.bytes, st.pkts, st.sampled), ([0, 40], [0, 1], [0, 0]));
        // Its login is a first payload again, within a fresh head.
        assert!(first(watched_packet(
            &c,
            &mut st,
            1,
            &pkt(800, TCP_ACK),
            http
        )));
        assert_eq!(st.sampled, [0, 800]);
    }

    #[test]
    fn a_tls_flow_first_seen_mid_stream_is_tls() {
        // Its address was learned after the handshake: the first client payload
        // the program sees is application data.
        let c = cfg(3000, 4);
        let mut st = FlowState::new(1, 0, 0);
        let appdata = || Some([0x17, 0x03, 0x03, 0x00, 0x40]);
        let d = watched_packet(&c, &mut st, 0, &pkt(69, TCP_ACK), appdata);
        assert!(
            matches!(d, Decision::Record { flags: f, .. } if f & flags::TLS != 0),
            "{d:?}"
        );
        assert_ne!(st.flags & flow_flags::TLS, 0);
        // Nothing past the first record: no hello to sample.
        assert_eq!(
            kind(watched_packet(&c, &mut st, 0, &pkt(500, TCP_ACK), appdata)),
            None
        );
        assert_eq!(tls_record(*b"GET /"), None);
        assert_eq!(tls_record([0x15, 3, 3, 0, 2]), Some((0x15, 7)));
        assert_eq!(tls_handshake_len([0x17, 3, 3, 0, 2]), None);
    }

    #[test]
    fn directions_have_their_own_budget() {
        let c = cfg(100, 0);
        let mut st = FlowState::new(1, 0, 0);
        let http = || Some(*b"HTTP/");
        assert!(kind(watched_packet(&c, &mut st, 0, &pkt(150, TCP_ACK), http)).is_some());
        assert_eq!(
            watched_packet(&c, &mut st, 0, &pkt(10, TCP_ACK), http),
            Decision::Skip(Counter::OverBudget)
        );
        assert!(kind(watched_packet(&c, &mut st, 1, &pkt(10, TCP_ACK), http)).is_some());
    }

    #[test]
    fn tls_flow_sends_hello_then_metadata() {
        let c = cfg(16384, 2);
        let mut st = FlowState::new(1, 0, 0);
        // ClientHello record of 600 bytes + 5 header, split over two segments.
        let ch = || Some([0x16, 0x03, 0x01, 0x02, 0x58]);
        let d = watched_packet(&c, &mut st, 0, &pkt(400, TCP_ACK | 0x08), ch);
        assert!(
            matches!(d, Decision::Record { kind: RecordKind::Sample, flags, .. }
            if flags & (flags::TLS | flags::FIRST_PAYLOAD | flags::FROM_CLIENT) == flags::TLS | flags::FIRST_PAYLOAD | flags::FROM_CLIENT)
        );
        assert_eq!(st.budget[0], 605);
        let never = || -> Option<[u8; 5]> { panic!("peeked after the first payload") };
        assert_eq!(
            kind(watched_packet(&c, &mut st, 0, &pkt(205, TCP_ACK), never)),
            Some((RecordKind::Sample, Counter::SampledHead))
        );
        // Application data: 1 in 2 as metadata only.
        assert_eq!(
            watched_packet(&c, &mut st, 0, &pkt(500, TCP_ACK), never),
            Decision::Skip(Counter::OverBudget)
        );
        assert_eq!(
            kind(watched_packet(&c, &mut st, 0, &pkt(500, TCP_ACK), never)),
            Some((RecordKind::Meta, Counter::TlsMeta))
        );
        // The server's first record (ServerHello) is sampled too.
        let sh = || Some([0x16, 0x03, 0x03, 0x00, 0x7a]);
        assert_eq!(
            kind(watched_packet(&c, &mut st, 1, &pkt(1400, TCP_ACK), sh)),
            Some((RecordKind::Sample, Counter::SampledHead))
        );
        assert_eq!(st.budget[1], 127);
        // Its second packet is the direction's 1-in-2 pick: metadata only.
        assert_eq!(
            kind(watched_packet(&c, &mut st, 1, &pkt(1400, TCP_ACK), never)),
            Some((RecordKind::Meta, Counter::TlsMeta))
        );
        assert_eq!(
            watched_packet(&c, &mut st, 1, &pkt(1400, TCP_ACK), never),
            Decision::Skip(Counter::OverBudget)
        );
    }

    #[test]
    fn tls_from_the_server_side_does_not_mark_the_flow() {
        let c = cfg(100, 0);
        let mut st = FlowState::new(1, 1, 0);
        watched_packet(&c, &mut st, 0, &pkt(10, TCP_ACK), || {
            Some([0x16, 3, 1, 0, 5])
        });
        assert_eq!(st.flags & flow_flags::TLS, 0);
    }

    #[test]
    fn control_packets_are_reported() {
        let c = cfg(0, 0);
        let mut st = FlowState::new(1, 0, 0);
        assert_eq!(
            kind(watched_packet(&c, &mut st, 0, &pkt(0, TCP_SYN), || None)),
            Some((RecordKind::Meta, Counter::Control))
        );
        assert_eq!(
            watched_packet(&c, &mut st, 0, &pkt(0, TCP_ACK), || None),
            Decision::Skip(Counter::WatchedNoPayload)
        );
        // head 0: only the first payload packet goes up, a FIN past it as metadata.
        assert!(kind(watched_packet(&c, &mut st, 0, &pkt(5, TCP_ACK), || None)).is_some());
        assert_eq!(
            kind(watched_packet(
                &c,
                &mut st,
                0,
                &pkt(5, TCP_FIN | TCP_ACK),
                || None
            )),
            Some((RecordKind::Meta, Counter::Control))
        );
    }

    #[test]
    fn client_direction() {
        assert_eq!(client_dir(&pkt(0, TCP_SYN), 1, false, true), 1);
        assert_eq!(client_dir(&pkt(0, TCP_SYN | TCP_ACK), 1, true, false), 0);
        assert_eq!(client_dir(&pkt(10, TCP_ACK), 0, false, true), 0);
        assert_eq!(client_dir(&pkt(10, TCP_ACK), 0, true, false), 1);
        // Neither or both watched: the lower port (80 < 40000) is the server.
        assert_eq!(client_dir(&pkt(10, TCP_ACK), 0, true, true), 0);
    }

    #[test]
    fn probes_follow_a_split_client_hello() {
        let hello = || Some([0x16, 0x03, 0x01, 0x02, 0x00]); // 512 + 5 bytes
        assert_eq!(probe_remaining(PROBE_AWAITING, 300, hello), 217);
        assert_eq!(probe_remaining(217, 217, || None), 0);
        assert_eq!(probe_remaining(PROBE_AWAITING, 600, hello), 0);
        assert_eq!(probe_remaining(PROBE_AWAITING, 80, || Some(*b"GET /")), 0);
    }

    #[test]
    fn dns_answers() {
        let c = Config::default();
        let mut p = pkt(30, 0);
        p.proto = IPPROTO_UDP;
        p.sport = 53;
        assert!(is_dns_answer(&c, &p, || Some([0, 1, 0x81])));
        assert!(!is_dns_answer(&c, &p, || Some([0, 1, 0x01])));
        p.proto = IPPROTO_TCP;
        assert!(is_dns_answer(&c, &p, || None));
        p.sport = 5353;
        assert!(!is_dns_answer(&c, &p, || Some([0, 1, 0x81])));
    }

    #[test]
    fn a_followed_flow_continues_after_its_probe() {
        let mut c = cfg(1000, 0);
        let mut p = pkt(10, TCP_ACK);
        assert!(!may_be_followed(&c, &p), "off without FOLLOW");
        c.flags |= config_flags::FOLLOW;
        assert!(may_be_followed(&c, &p));
        (p.sport, p.dport) = (80, 40000);
        assert!(may_be_followed(&c, &p), "the server's side too");
        p.sport = 22;
        assert!(!may_be_followed(&c, &p));
        p.proto = IPPROTO_UDP;
        (p.sport, p.dport) = (40000, 80);
        assert!(!may_be_followed(&c, &p));

        // The probe carried 600 client bytes: 400 more of the head, no
        // second first payload; the server's first payload is its own.
        let mut st = followed_flow(c.head_bytes, 7, 0, 5, 600);
        let http = || Some(*b"GET /");
        let d = watched_packet(&c, &mut st, 0, &pkt(300, TCP_ACK), http);
        let Decision::Record { flags: f, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            f,
            flags::FROM_CLIENT | flags::FOLLOWED,
            "not a first payload"
        );
        let d = watched_packet(&c, &mut st, 0, &pkt(300, TCP_ACK), http);
        assert!(matches!(d, Decision::Record { .. }), "900 < 1000");
        let d = watched_packet(&c, &mut st, 0, &pkt(300, TCP_ACK), http);
        assert_eq!(d, Decision::Skip(Counter::OverBudget));
        let resp = || Some(*b"HTTP/");
        let d = watched_packet(&c, &mut st, 1, &pkt(300, TCP_ACK), resp);
        let Decision::Record { flags: f, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(f, flags::FIRST_PAYLOAD | flags::FOLLOWED);
        assert_eq!(st.service, 7);
        assert_ne!(st.flags & flow_flags::OPENED, 0);
    }
}
