//! The XDP program's `HOT` slots (`sensor_common::hot`) against the full path
//! alone: two watched flows between one client and one server (IPv4 or IPv6,
//! TCP or UDP; untagged, behind one or two VLAN tags or in PPPoE behind at
//! most one: each way the fast path reads), packets either way with any
//! flags and payload,
//! the tail rate changed and blocked buckets set between them, run through
//! the full path alone and through two CPUs' four slots each in front of it
//! (each direction of each flow on either CPU, as RSS steers it: a
//! direction that moves between CPUs may see its tail samples fall a few
//! packets off, on purpose, docs/data-plane.md), handed over and taken back
//! by the program's own steps (`hot::around_decision`, which its
//! `flow_packet` runs; `fast_path` as `HotFlow::absorb`). Invariants:
//! a packet a slot absorbs is one the full path would only have counted,
//! under the same outcome; every other packet gets the same decision; after
//! every packet each flow's state plus what the slots hold of its current
//! connection (`FlowState::conn`) is its state without them.

use arbitrary::Arbitrary;
use sensor_common::{
    block::flow_bucket,
    config::{Config, config_flags},
    counters::Counter,
    flow::{FAMILY_V4, FlowKey, FlowState},
    hot::{
        EPOCH_SLOTS, HOT_SLOTS, HotFlow, around_decision, epoch_slot, rest, slot_of, slot_of6,
    },
    parse::{Parsed, TCP_ACK, parse},
    policy::{Decision, watched_packet},
    quick::{plain, plain_tagged, plain_two_tags_or_pppoe, reread_ipv4, reread_ipv6},
    tunnel::VXLAN_PORT,
};
use sensor_user::fixtures::FrameBuilder;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A packet of flow `second` (else the first), from the server if `reply`.
    Packet {
        second: bool,
        reply: bool,
        payload: u16,
        tcp_flags: u8,
        /// The payload's bytes: a TLS record's first byte (0x16) makes the
        /// flow TLS when it is the client's first payload.
        fill: u8,
    },
    TailEvery(u8),
    /// Blocking on or off, and every bucket's block bit set or clear.
    Block {
        on: bool,
        bits: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    v6: bool,
    /// The second flow is UDP.
    udp: bool,
    /// How the frames are carried: `encap % 5` is [`build`]'s `encap`.
    encap: u8,
    /// Bit `2 * flow + reply`: that direction runs on the second CPU.
    cpus: u8,
    head: u16,
    ops: Vec<Op>,
}

/// Two CPUs' slots, the restart epochs and the block bits, as the program
/// holds them, and the CPU the packet at hand runs on.
struct Kernel {
    slots: [[HotFlow; HOT_SLOTS as usize]; 2],
    cpu: usize,
    epochs: Vec<u32>,
    blocked: bool,
}

impl Kernel {
    /// The fast path for a watched frame: its slot's outcome, or `None`.
    fn absorb(&mut self, cfg: &Config, frame: &[u8]) -> Option<Counter> {
        // The program's order (`fast_path`).
        let (q, tag) = match plain(frame, cfg.vxlan_port) {
            Some(q) => (q, 0),
            None => match plain_tagged(frame, cfg.vxlan_port) {
                Some(q) => (q, 4),
                None => plain_two_tags_or_pppoe(frame, cfg.vxlan_port)?,
            },
        };
        // The program reads the header again, past the tags and PPPoE.
        let f = &frame[tag..];
        let (epochs, blocked) = (&self.epochs, self.blocked);
        let epoch = |b| epochs[epoch_slot(b)];
        let slots = &mut self.slots[self.cpu];
        if q.family == FAMILY_V4 {
            let q = reread_ipv4(f)?;
            slots[slot_of(&q.src, &q.dst) as usize].absorb(cfg, &q, None, epoch, |_| blocked)
        } else {
            let (q, s, d) = reread_ipv6(f)?;
            let r = rest(&s, &d);
            slots[slot_of6(&s, &d) as usize].absorb(cfg, &q, Some(&r), epoch, |_| blocked)
        }
    }
}

/// The slot of the packet in `p` on its CPU (`hot_slot` in the program).
fn slot_index(p: &Parsed) -> usize {
    let v4 = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
    let i = if p.family == FAMILY_V4 {
        slot_of(&v4(&p.src), &v4(&p.dst))
    } else {
        slot_of6(&p.src, &p.dst)
    };
    i as usize
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let (client, server) = if input.v6 {
        ("2001:db8:c::10", "2001:db8:1::2")
    } else {
        ("192.0.2.10", "198.51.100.2")
    };
    let mut cfg = Config {
        head_bytes: u32::from(input.head % 8192),
        flags: config_flags::DNS | config_flags::PROBE,
        vxlan_port: VXLAN_PORT,
        ..Config::default()
    };
    let ports = [41000u16, 41001];
    let udp = [false, input.udp];
    // Each flow's key, client direction and state: alone, and with the slots.
    let mut keys = [FlowKey::zeroed(); 2];
    let mut alone = [FlowState::new(1, 0, 0); 2];
    for i in 0..2 {
        let frame = build(
            (client, ports[i], server, 80),
            udp[i],
            (0, TCP_ACK),
            Vec::new(),
            input.encap,
        );
        let p = parse(&frame[..]).expect("a built frame parses");
        let (k, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        keys[i] = k;
        alone[i] = FlowState::new(1, dir, 0);
    }
    let mut both = alone;
    let mut k = Kernel {
        slots: [[HotFlow::empty(); HOT_SLOTS as usize]; 2],
        cpu: 0,
        epochs: vec![0; EPOCH_SLOTS],
        blocked: false,
    };
    let mut seq = [[1u32; 2]; 2];
    for (n, op) in input.ops.iter().take(2000).enumerate() {
        let (second, reply, payload, tcp_flags, fill) = match *op {
            Op::Packet {
                second,
                reply,
                payload,
                tcp_flags,
                fill,
            } => {
                let bit = 2 * u8::from(second) + u8::from(reply);
                k.cpu = usize::from(input.cpus >> bit & 1);
                (second, reply, payload, tcp_flags, fill)
            }
            Op::TailEvery(e) => {
                cfg.tail_every = u32::from(e % 9);
                continue;
            }
            Op::Block { on, bits } => {
                cfg.flags = if on {
                    cfg.flags | config_flags::BLOCK
                } else {
                    cfg.flags & !config_flags::BLOCK
                };
                k.blocked = bits;
                continue;
            }
        };
        let x = usize::from(second);
        let len = usize::from(payload % 1400);
        let (src, sport, dst, dport) = if reply {
            (server, 80, client, ports[x])
        } else {
            (client, ports[x], server, 80)
        };
        let s = &mut seq[x][usize::from(reply)];
        let frame = build(
            (src, sport, dst, dport),
            udp[x],
            (*s, tcp_flags),
            vec![fill; len],
            input.encap,
        );
        *s = s.wrapping_add(len as u32);
        let p = parse(&frame[..]).expect("a built frame parses");
        let (key, dir) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        assert_eq!(key, keys[x]);
        let peek = || {
            let at = p.payload_off as usize;
            frame
                .get(at..at + 5)
                .map(|b| <[u8; 5]>::try_from(b).expect("5 bytes"))
        };
        let want = watched_packet(&cfg, &mut alone[x], dir, &p, peek);
        if let Some(c) = k.absorb(&cfg, &frame) {
            assert_eq!(want, Decision::Skip(c), "op {n}: absorbed");
        } else {
            // The full path, as the program's `flow_packet` runs it.
            let group = epoch_slot(flow_bucket(&key));
            let epochs = &mut k.epochs;
            let epoch = epochs[group];
            let slot = &mut k.slots[k.cpu][slot_index(&p)];
            let mut given = None;
            let got = around_decision(
                &cfg,
                Some(slot),
                (&p, &key),
                (&mut both[x], dir),
                epoch,
                |st| watched_packet(&cfg, st, dir, &p, peek),
                || {
                    epochs[group] += 1;
                    epochs[group]
                },
                |k, d, conn, counts| given = Some((*k, d, conn, counts)),
            );
            assert_eq!(got, want, "op {n}: decided");
            // What the slot gave back, to its flow's `FLOWS` entry if that is
            // still the connection (`give_back` in the program; applied
            // here after the call, as the flow may be this one).
            if let Some((old_key, old_dir, old_conn, counts)) = given
                && let Some(y) = keys.iter().position(|k| *k == old_key)
                && both[y].conn == old_conn
            {
                both[y].add_counts(old_dir, counts);
            }
        }
        // Each flow's state plus what the slots, on either CPU, hold of its
        // current connection.
        for y in 0..2 {
            let mut st = both[y];
            for h in k.slots.iter().flatten() {
                if h.proto != 0 && h.key == keys[y] && h.conn == st.conn {
                    st.add_counts(h.dir, (h.bytes, u64::from(h.pkts)));
                }
            }
            st.conn = alone[y].conn;
            assert_eq!(st, alone[y], "op {n}: flow {y}");
        }
    }
}

/// A frame of the flow `src:sport -> dst:dport`, its TCP sequence number
/// and flags (unused for UDP), with `payload`, carried as `encap % 5` says:
/// untagged, behind one tag, behind two, in PPPoE, in PPPoE behind a tag.
fn build(
    (src, sport, dst, dport): (&str, u16, &str, u16),
    udp: bool,
    (seq, tcp_flags): (u32, u8),
    payload: Vec<u8>,
    encap: u8,
) -> Vec<u8> {
    let b = if udp {
        FrameBuilder::udp(src, sport, dst, dport)
    } else {
        FrameBuilder::tcp(src, sport, dst, dport)
            .seq(seq)
            .flags(tcp_flags)
    };
    let b = b.payload(payload);
    // Untagged, one tag, two, PPPoE, PPPoE behind a tag.
    match encap % 5 {
        0 => b,
        1 => b.vlan(0x8100, 10),
        2 => b.vlan(0x88a8, 200).vlan(0x8100, 10),
        3 => b.pppoe(),
        _ => b.vlan(0x8100, 10).pppoe(),
    }
    .build()
}
