//! The watched flows a CPU is busy with: a per-CPU cache (`HOT`, four slots)
//! that lets the fast path count a packet of a flow already past its head
//! without the full parse, the 40-byte key or the `FLOWS` lookup
//! (docs/performance.md, docs/ARCHITECTURE.md).
//!
//! A slot holds one direction of one plain IPv4 or IPv6 flow (untagged, with
//! one or two VLAN tags, or in PPPoE behind at most one). The full path
//! hands it over after a packet it only counted (`over_budget`, `watched_no_payload`)
//! or sampled as a tail; from then on the fast path *absorbs* that
//! direction's packets — counted under the same outcome, their packets and
//! bytes kept in the slot — until one needs a decision: a SYN, FIN or RST,
//! payload in a direction still in its head, the next tail sample, a set
//! block bit, a changed `tail_every`, a bare SYN of a flow in the slot's
//! epoch bucket seen since the slot was filled, on any CPU (the
//! `HOT_EPOCHS` global, [`epoch_slot`]: a new connection on a reused tuple
//! must not be counted as its old one, past its head, by another CPU's
//! slot). That packet takes the full path, which
//! first adds the slot's counts to the flow's `FlowState` and empties the
//! slot, so every record carries the counts it always did and the tail falls
//! on the same packet. Counts a slot absorbed for an older connection on the
//! tuple (`FlowState::conn` changed since it was filled) are dropped
//! instead. Between two full-path packets the flow's counts in `FLOWS` lag
//! by what the slot holds (at most [`HOT_REFRESH`] packets); nothing reads
//! them there but the records.

use crate::{
    admit::is_bare_syn,
    block::flow_bucket,
    config::{Config, config_flags},
    counters::Counter,
    flow::{FAMILY_V4, FlowKey, FlowState, IPPROTO_TCP, UNNUMBERED, flow_flags},
    parse::{ETH_HLEN, PPPOE_HLEN, Parsed, TCP_FIN, TCP_RST, TCP_SYN, VLAN_HLEN},
    policy::{DNS_PORT, Decision},
    quick::Plain,
    record::flags,
};

/// Slots per CPU: two for IPv4 flows, two for IPv6 ones; a flow's two
/// directions take different ones.
pub const HOT_SLOTS: u32 = 4;

/// Packets a slot absorbs at most before one takes the full path again, which
/// also looks the flow up in `FLOWS` and so keeps it recent in its LRU.
pub const HOT_REFRESH: u32 = 256;

/// Packets of other flows a slot sees since its own last one before the full
/// path may give it to another flow: two flows taking turns on a CPU then
/// leave the first in place instead of each evicting the other (each
/// eviction costs a `FLOWS` lookup to write the old counts back).
pub const HOT_MISSES: u8 = 8;

/// Restart epochs (`HOT_EPOCHS`): one counter of bare SYNs per group of
/// flow buckets, so a SYN flood retires only the slots whose flows share a
/// group with its tuples (about one in this many per SYN), not every slot
/// on every CPU.
pub const EPOCH_SLOTS: usize = 1024;

/// The `HOT_EPOCHS` counter of a flow's `BLOCK_BITS` bucket
/// (`block::flow_bucket`).
#[inline(always)]
pub fn epoch_slot(bucket: u32) -> usize {
    bucket as usize & (EPOCH_SLOTS - 1)
}

/// One slot of `HOT`. 112 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotFlow {
    /// 0: the flow's key, where the counts go.
    pub key: FlowKey,
    /// 40: the packets' source and destination address (IPv4; an IPv6
    /// address's first four bytes), as stored in memory: native-endian words
    /// of network-order bytes.
    pub src: u32,
    pub dst: u32,
    /// 48: their source and destination port.
    pub sport: u16,
    pub dport: u16,
    /// 52: packets it may still absorb (0: the next takes the full path).
    pub left: u32,
    /// 56: L3 bytes of the packets absorbed since the flow's last full-path packet.
    pub bytes: u64,
    /// 64: how many.
    pub pkts: u32,
    /// 68: the `tail_every` `left` was worked out for.
    pub every: u32,
    /// 72: the flow's `BLOCK_BITS` bucket (`block::flow_bucket`).
    pub block_bucket: u32,
    /// 76: IP protocol; 0: the slot is empty.
    pub proto: u8,
    /// 77: the packets' direction in `key`.
    pub dir: u8,
    /// 78: 1 if packets with payload are absorbed (the direction is past its
    /// head); 0: only packets without.
    pub payload: u8,
    /// 79: packets of other flows seen in this slot since its own last one.
    pub misses: u8,
    /// 80: an IPv6 source and destination address's last twelve bytes, as
    /// `src` (zero in an IPv4 slot).
    pub rest: Rest,
    /// 104: its bucket's restart epoch when the slot was filled (see
    /// [`absorb`](Self::absorb)).
    pub epoch: u32,
    /// 108: the flow's connection when the slot was filled
    /// ([`FlowState::conn`]): what it absorbed goes to that connection only.
    pub conn: u32,
}

/// The last twelve bytes of an IPv6 packet's source and destination
/// address, as words: what a slot compares besides `src` and `dst`.
pub type Rest = [u32; 6];

/// [`Rest`] of two IPv6 addresses.
#[inline(always)]
pub fn rest(src: &[u8; 16], dst: &[u8; 16]) -> Rest {
    let w = |a: &[u8; 16], i: usize| word(&[a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [
        w(src, 4),
        w(src, 8),
        w(src, 12),
        w(dst, 4),
        w(dst, 8),
        w(dst, 12),
    ]
}

/// A native-endian word of four network-order bytes.
#[inline(always)]
fn word(a: &[u8; 4]) -> u32 {
    u32::from_ne_bytes(*a)
}

/// The IPv4 slot (0 or 1) a packet from `src` to `dst` uses: the other
/// direction of its flow uses the other one (same address: the same one).
#[inline(always)]
pub fn slot_of(src: &[u8; 4], dst: &[u8; 4]) -> u32 {
    u32::from(word(src) > word(dst))
}

/// The IPv6 slot (2 or 3) a packet from `src` to `dst` uses, told apart by
/// the addresses' last four bytes (their first are often one prefix).
#[inline(always)]
pub fn slot_of6(src: &[u8; 16], dst: &[u8; 16]) -> u32 {
    2 + slot_of(
        &[src[12], src[13], src[14], src[15]],
        &[dst[12], dst[13], dst[14], dst[15]],
    )
}

impl HotFlow {
    pub const fn empty() -> Self {
        Self {
            key: FlowKey::zeroed(),
            src: 0,
            dst: 0,
            sport: 0,
            dport: 0,
            left: 0,
            bytes: 0,
            pkts: 0,
            every: 0,
            block_bucket: 0,
            proto: 0,
            dir: 0,
            payload: 0,
            misses: 0,
            rest: [0; 6],
            epoch: 0,
            conn: 0,
        }
    }

    /// Whether the slot holds packets `src:sport -> dst:dport` of `proto`.
    #[inline(always)]
    pub fn holds(&self, proto: u8, src: &[u8; 4], dst: &[u8; 4], sport: u16, dport: u16) -> bool {
        self.proto == proto
            && self.src == word(src)
            && self.dst == word(dst)
            && self.sport == sport
            && self.dport == dport
    }

    /// Whether the slot holds the packet the full path parsed into `p`.
    #[inline(always)]
    pub fn holds_parsed(&self, p: &Parsed) -> bool {
        let (s, d) = (&p.src, &p.dst);
        self.holds(
            p.proto,
            &[s[0], s[1], s[2], s[3]],
            &[d[0], d[1], d[2], d[3]],
            p.sport,
            p.dport,
        ) && (p.family == FAMILY_V4 || self.rest == rest(s, d))
    }

    /// The fast path: the outcome of a plain packet this slot absorbs
    /// (counted here), or `None` for one the full path must see. `rest`:
    /// an IPv6 packet's [`Rest`] (`None` for IPv4: an IPv4 slot's is zero).
    /// `blocked` tells whether a `BLOCK_BITS` bucket's bit is set; it is
    /// asked only with blocking on, for TCP (the full path's own test).
    ///
    /// `epoch` reads the restart epoch of a `BLOCK_BITS` bucket: the bare
    /// SYNs the full path has seen, on every CPU, for flows whose bucket
    /// shares its [`epoch_slot`]. A slot filled before the latest may hold
    /// the old connection of a reused tuple (its direction past its head)
    /// and would count the new connection's login unsampled, so it absorbs
    /// nothing until the full path fills it again.
    #[inline(always)]
    pub fn absorb(
        &mut self,
        cfg: &Config,
        q: &Plain,
        rest: Option<&Rest>,
        epoch: impl FnOnce(u32) -> u32,
        blocked: impl FnOnce(u32) -> bool,
    ) -> Option<Counter> {
        if !self.holds(q.proto, &q.src, &q.dst, q.sport, q.dport)
            || rest.is_some_and(|r| *r != self.rest)
        {
            if self.proto != 0 {
                self.misses = self.misses.saturating_add(1);
            }
            return None;
        }
        // A plain packet: a 20- or 40-byte IP header, the transport's within
        // the datagram.
        let ip_hlen = if q.family == FAMILY_V4 { 20 } else { 40 };
        let payload_len = q.l3_len - ip_hlen - u32::from(q.l4_len);
        if self.left == 0
            || self.every != cfg.tail_every
            || q.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0
            || (payload_len != 0 && self.payload == 0)
            || self.epoch != epoch(self.block_bucket)
        {
            return None;
        }
        if cfg.flags & config_flags::BLOCK != 0
            && self.proto == IPPROTO_TCP
            && blocked(self.block_bucket)
        {
            return None;
        }
        self.left -= 1;
        self.pkts += 1;
        self.bytes += u64::from(q.l3_len);
        self.misses = 0;
        Some(if payload_len == 0 {
            Counter::WatchedNoPayload
        } else {
            Counter::OverBudget
        })
    }

    /// The counts absorbed (bytes, packets), leaving the slot empty.
    #[inline(always)]
    pub fn take(&mut self) -> (u64, u64) {
        let counts = (self.bytes, u64::from(self.pkts));
        self.bytes = 0;
        self.pkts = 0;
        self.proto = 0;
        counts
    }

    /// As [`take`](Self::take), for the flow's connection `conn`
    /// ([`FlowState::conn`]): nothing if the slot was filled for an older
    /// connection on the tuple (a bare SYN started the flow over since, on
    /// any CPU, or the flow left `FLOWS` and a new one took its key).
    #[inline(always)]
    pub fn take_for(&mut self, conn: u32) -> (u64, u64) {
        let counts = self.take();
        if self.conn == conn { counts } else { (0, 0) }
    }

    /// Hands this slot the direction `dir` of the flow `key`, whose packet
    /// `p` the full path just decided (`st` updated with it): absorbing
    /// packets with payload if `payload`. `left` runs out on the packet before
    /// the direction's next tail sample. `epoch`: as read before `st` was
    /// (see [`absorb`](Self::absorb)).
    #[inline(always)]
    #[expect(
        clippy::too_many_arguments,
        reason = "the slot's every input, each a plain value"
    )]
    pub fn fill(
        &mut self,
        cfg: &Config,
        p: &Parsed,
        key: &FlowKey,
        dir: u8,
        st: &FlowState,
        payload: bool,
        epoch: u32,
    ) {
        let pkts = if dir == 0 { st.pkts[0] } else { st.pkts[1] };
        let every = cfg.tail_every;
        let left = if every == 0 {
            HOT_REFRESH
        } else {
            let to_tail = u64::from(every) - 1 - pkts % u64::from(every);
            if to_tail < u64::from(HOT_REFRESH) {
                to_tail as u32
            } else {
                HOT_REFRESH
            }
        };
        self.key = *key;
        self.src = word(&[p.src[0], p.src[1], p.src[2], p.src[3]]);
        self.dst = word(&[p.dst[0], p.dst[1], p.dst[2], p.dst[3]]);
        self.sport = p.sport;
        self.dport = p.dport;
        self.left = left;
        self.bytes = 0;
        self.pkts = 0;
        self.every = every;
        self.block_bucket = flow_bucket(key);
        self.proto = p.proto;
        self.dir = dir;
        self.payload = u8::from(payload);
        self.misses = 0;
        self.rest = rest(&p.src, &p.dst);
        self.epoch = epoch;
        self.conn = st.conn;
    }

    /// Whether the full path may give this slot to another flow: it is
    /// empty, or its flow has not been seen for [`HOT_MISSES`] packets.
    #[inline(always)]
    pub fn may_take_over(&self) -> bool {
        self.proto == 0 || self.misses >= HOT_MISSES
    }
}

/// Whether the full path may hand the direction of `p`'s flow to a slot after
/// deciding `p` as `d`, and if so whether packets with payload may be
/// absorbed too (the direction is past its head). Only a plain packet (at
/// most two VLAN tags, or PPPoE behind at most one; no tunnel or fragment:
/// the fast path sees no other) of
/// a watched flow, neither followed nor refused, not from the DNS port
/// (answers go up whatever their flow).
#[inline(always)]
pub fn cacheable(p: &Parsed, st: &FlowState, d: &Decision) -> Option<bool> {
    // The most the fast path reads past: a tag and PPPoE, or two tags
    // (MPLS frames within it get a slot nothing reads, and lose it).
    if usize::from(p.l3_off) > ETH_HLEN + VLAN_HLEN + PPPOE_HLEN
        || p.tunnel != 0
        || p.first_fragment
        || p.sport == DNS_PORT
        || st.flags & (flow_flags::FOLLOWED | flow_flags::REFUSED) != 0
    {
        return None;
    }
    match *d {
        Decision::Skip(Counter::OverBudget) => Some(true),
        Decision::Skip(Counter::WatchedNoPayload) => Some(false),
        // A tail sample: the direction is past its head.
        Decision::Record { flags: f, .. } if f & flags::TAIL != 0 => Some(true),
        _ => None,
    }
}

/// What the full path does with this CPU's slot for a watched packet's
/// direction (`slot`) around deciding the packet (`decide`), shared by the
/// program's `flow_packet` and the `hot` fuzz target:
/// - a flow the kernel created [`UNNUMBERED`] takes `epoch` as its
///   connection number;
/// - what the slot absorbed of this direction for this connection is folded
///   into `st` first ([`HotFlow::take_for`]);
/// - after a bare SYN (which `decide` started the flow over for), `bump`
///   bumps the epoch group's counter and returns it: the new connection's
///   number;
/// - the direction goes to the slot if [`cacheable`] and the slot may be
///   taken over; what it held of another flow goes to `give_back(key, dir,
///   conn, counts)` first.
///
/// `epoch`: the group's counter as read before `st` was.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the packet, its flow, the slot and the program's own steps"
)]
pub fn around_decision(
    cfg: &Config,
    mut slot: Option<&mut HotFlow>,
    (p, key): (&Parsed, &FlowKey),
    (st, dir): (&mut FlowState, u8),
    epoch: u32,
    decide: impl FnOnce(&mut FlowState) -> Decision,
    bump: impl FnOnce() -> u32,
    give_back: impl FnOnce(&FlowKey, u8, u32, (u64, u64)),
) -> Decision {
    if st.conn == UNNUMBERED {
        // Created by this packet: the bare SYN that opened it, if one was
        // seen, has bumped the group, above its tuple's older connections.
        st.conn = epoch;
    }
    if let Some(h) = slot.as_deref_mut()
        && h.holds_parsed(p)
    {
        st.add_counts(dir, h.take_for(st.conn));
    }
    let decision = decide(st);
    if is_bare_syn(p) {
        // Started over: slots on any CPU, this one's other direction
        // included, may still hold the old connection.
        st.conn = bump();
    }
    if let (Some(h), Some(payload)) = (slot, cacheable(p, st, &decision))
        && h.may_take_over()
    {
        if h.proto != 0 {
            let counts = h.take();
            if counts.1 != 0 {
                give_back(&h.key, h.dir, h.conn, counts);
            }
        }
        h.fill(cfg, p, key, dir, st, payload, epoch);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow::IPPROTO_UDP, parse::TCP_ACK, policy::watched_packet, record::RecordKind};
    use core::mem::{offset_of, size_of};

    const SRC: [u8; 4] = [192, 0, 2, 10];
    const DST: [u8; 4] = [198, 51, 100, 2];

    fn plain(payload: u32, tcp_flags: u8) -> Plain {
        Plain {
            family: FAMILY_V4,
            proto: IPPROTO_TCP,
            src: SRC,
            dst: DST,
            sport: 40000,
            dport: 80,
            l3_len: 40 + payload,
            l4_len: 20,
            tcp_flags,
            tcp_seq: 0,
            tcp_ack: 0,
        }
    }

    fn parsed(q: &Plain) -> Parsed {
        let mut p = Parsed::zeroed();
        p.family = q.family;
        p.proto = q.proto;
        p.src[..4].copy_from_slice(&q.src);
        p.dst[..4].copy_from_slice(&q.dst);
        p.sport = q.sport;
        p.dport = q.dport;
        p.l3_off = ETH_HLEN as u16;
        p.l3_len = q.l3_len;
        p.payload_len = q.l3_len - 20 - u32::from(q.l4_len);
        p.tcp_flags = q.tcp_flags;
        p
    }

    fn cfg(every: u32) -> Config {
        Config {
            head_bytes: 3000,
            tail_every: every,
            ..Config::default()
        }
    }

    #[test]
    fn layout() {
        assert_eq!(size_of::<HotFlow>(), 112);
        assert_eq!(offset_of!(HotFlow, epoch), 104);
        assert_eq!(offset_of!(HotFlow, conn), 108);
        assert_eq!(offset_of!(HotFlow, rest), 80);
        assert_eq!(offset_of!(HotFlow, src), 40);
        assert_eq!(offset_of!(HotFlow, left), 52);
        assert_eq!(offset_of!(HotFlow, bytes), 56);
        assert_eq!(offset_of!(HotFlow, proto), 76);
        assert_eq!(offset_of!(HotFlow, misses), 79);
    }

    #[test]
    fn a_flows_two_directions_take_different_slots() {
        assert_ne!(slot_of(&SRC, &DST), slot_of(&DST, &SRC));
        assert!(slot_of(&SRC, &DST) < HOT_SLOTS && slot_of(&DST, &SRC) < HOT_SLOTS);
        assert_eq!(slot_of(&SRC, &SRC), 0);
    }

    const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    const DST6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// A packet as the fast path reads it (its `Plain` and, for IPv6, its
    /// `Rest`) and as the full path parses it.
    fn packet(v6: bool, payload: u32, tcp_flags: u8) -> (Plain, Option<Rest>, Parsed) {
        let mut q = plain(payload, tcp_flags);
        if !v6 {
            return (q, None, parsed(&q));
        }
        q.family = crate::flow::FAMILY_V6;
        q.src = [SRC6[0], SRC6[1], SRC6[2], SRC6[3]];
        q.dst = [DST6[0], DST6[1], DST6[2], DST6[3]];
        q.l3_len += 20;
        let mut p = parsed(&q);
        p.src = SRC6;
        p.dst = DST6;
        p.payload_len = payload;
        (q, Some(rest(&SRC6, &DST6)), p)
    }

    /// A flow run packet by packet through the full path alone, and through
    /// the full path with a slot in front of it (taking over where it may,
    /// as the kernel does): the same outcomes for every packet, and the same
    /// counts whenever the full path decides one. IPv4 and IPv6.
    #[test]
    fn the_slot_is_invisible_in_outcomes_and_counts() {
        for (v6, every) in [false, true]
            .into_iter()
            .flat_map(|v6| [0, 1, 4, 64].map(|e| (v6, e)))
        {
            let c = cfg(every);
            let key = FlowKey::zeroed();
            let mut alone = FlowState::new(1, 0, 0);
            let mut both = FlowState::new(1, 0, 0);
            let mut slot = HotFlow::empty();
            let (mut absorbed, mut full) = (0, 0);
            // A head of 3 × 1000 bytes, pure ACKs between, a FIN at the end.
            let shape = |i| match i {
                599 => packet(v6, 0, TCP_FIN | TCP_ACK),
                i if i % 5 == 4 => packet(v6, 0, TCP_ACK),
                _ => packet(v6, 1000, TCP_ACK),
            };
            for i in 0..600 {
                let (q, r, p) = shape(i);
                let peek = || Some(*b"GET /");
                let want = watched_packet(&c, &mut alone, 0, &p, peek);
                if let Some(counter) = slot.absorb(&c, &q, r.as_ref(), |_| 0, |_| false) {
                    absorbed += 1;
                    assert_eq!(
                        want,
                        Decision::Skip(counter),
                        "packet {i}, every {every}, v6 {v6}"
                    );
                    continue;
                }
                full += 1;
                let got = around_decision(
                    &c,
                    Some(&mut slot),
                    (&p, &key),
                    (&mut both, 0),
                    0,
                    |st| watched_packet(&c, st, 0, &p, peek),
                    || 0,
                    |_, _, _, _| panic!("the slot holds no other flow"),
                );
                assert_eq!(got, want, "packet {i}, every {every}, v6 {v6}");
                assert_eq!(both, alone, "packet {i}, every {every}, v6 {v6}");
            }
            assert_eq!(both, alone);
            assert_eq!(slot.proto, 0, "the FIN emptied the slot");
            // Most of the flow never needed the full path: all but the head,
            // the tails and the FIN (with every packet a tail, all of it did).
            let (lo, hi) = match every {
                0 => (590, 600),
                1 => (0, 0),
                4 => (400, 450),
                _ => (575, 590),
            };
            assert!(
                (lo..=hi).contains(&absorbed),
                "every {every}, v6 {v6}: {absorbed} absorbed, {full} not"
            );
        }
    }

    /// Counts absorbed for one connection on a tuple go to that connection
    /// only: a flow started over since the slot was filled gets none.
    #[test]
    fn a_slot_gives_its_counts_to_the_connection_it_was_filled_for() {
        let c = cfg(64);
        let q = plain(1000, TCP_ACK);
        let mut st = FlowState::new(1, 0, 0);
        st.conn = 7;
        let mut slot = HotFlow::empty();
        let fill = |slot: &mut HotFlow, st: &FlowState| {
            slot.fill(&c, &parsed(&q), &FlowKey::zeroed(), 0, st, true, 0);
            for _ in 0..3 {
                assert!(slot.absorb(&c, &q, None, |_| 0, |_| false).is_some());
            }
        };
        fill(&mut slot, &st);
        assert_eq!(slot.take_for(7), (3 * 1040, 3));
        assert_eq!(slot.proto, 0);
        fill(&mut slot, &st);
        assert_eq!(slot.take_for(8), (0, 0), "a newer connection");
        assert_eq!(slot.proto, 0, "emptied all the same");
    }

    #[test]
    fn an_ipv6_slot_compares_whole_addresses() {
        let c = cfg(64);
        let (q, r, p) = packet(true, 1000, TCP_ACK);
        let mut slot = HotFlow::empty();
        slot.fill(
            &c,
            &p,
            &FlowKey::zeroed(),
            0,
            &FlowState::new(1, 0, 0),
            true,
            0,
        );
        assert!(slot.holds_parsed(&p));
        assert_eq!(
            slot.absorb(&c, &q, r.as_ref(), |_| 0, |_| false),
            Some(Counter::OverBudget)
        );
        // Same first four bytes and ports, another host in the prefix.
        let mut other = SRC6;
        other[15] = 0x11;
        let mut p2 = p;
        p2.src = other;
        assert!(!slot.holds_parsed(&p2));
        assert_eq!(
            slot.absorb(&c, &q, Some(&rest(&other, &DST6)), |_| 0, |_| false),
            None
        );
        assert_eq!(slot.misses, 1);
        assert_ne!(slot_of6(&SRC6, &DST6), slot_of6(&DST6, &SRC6));
        assert!((2..HOT_SLOTS).contains(&slot_of6(&SRC6, &DST6)));
    }

    #[test]
    fn the_tail_packet_takes_the_full_path() {
        let c = cfg(4);
        let q = plain(1000, TCP_ACK);
        let mut st = FlowState::new(1, 0, 0);
        st.pkts[0] = 8; // a tail sample (8 % 4 == 0) was just taken
        let mut slot = HotFlow::empty();
        slot.fill(&c, &parsed(&q), &FlowKey::zeroed(), 0, &st, true, 0);
        // 9, 10, 11 absorbed; 12 is the next tail.
        let got: [_; 4] = core::array::from_fn(|_| slot.absorb(&c, &q, None, |_| 0, |_| false));
        let skip = Some(Counter::OverBudget);
        assert_eq!(got, [skip, skip, skip, None]);
        assert_eq!(slot.take(), (3 * 1040, 3));
    }

    #[test]
    fn what_the_slot_leaves_to_the_full_path() {
        let c = cfg(64);
        let q = plain(1000, TCP_ACK);
        let st = FlowState::new(1, 0, 0);
        let p = parsed(&q);
        let (key, _) = FlowKey::from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        assert_ne!(flow_bucket(&key), 0, "a bucket the test can tell apart");
        let fresh = |payload| {
            let mut s = HotFlow::empty();
            s.fill(&c, &parsed(&q), &key, 0, &st, payload, 0);
            s
        };
        // Control packets, payload in a direction still in its head.
        for (q, payload) in [
            (plain(0, TCP_SYN), true),
            (plain(0, TCP_FIN | TCP_ACK), true),
            (plain(0, TCP_RST), true),
            (plain(10, TCP_ACK), false),
        ] {
            assert_eq!(
                fresh(payload).absorb(&c, &q, None, |_| 0, |_| false),
                None,
                "{q:?}"
            );
        }
        // Another flow: counted as a miss.
        let mut s = fresh(true);
        let mut other = q;
        other.sport = 40001;
        assert_eq!(s.absorb(&c, &other, None, |_| 0, |_| false), None);
        assert_eq!(s.misses, 1);
        assert!(!s.may_take_over());
        s.misses = HOT_MISSES;
        assert!(s.may_take_over());
        // A changed tail_every.
        assert_eq!(
            fresh(true).absorb(&cfg(32), &q, None, |_| 0, |_| false),
            None
        );
        // A bare SYN in the slot's epoch bucket since it was filled, on any
        // CPU; the bucket asked is the flow's.
        let mut asked = None;
        let r = fresh(true).absorb(
            &c,
            &q,
            None,
            |b| {
                asked = Some(b);
                1
            },
            |_| false,
        );
        assert_eq!((r, asked), (None, Some(flow_bucket(&key))));
        // Blocking on: the flow's bucket is asked, and a set bit wins.
        let mut blocking = c;
        blocking.flags |= config_flags::BLOCK;
        let mut asked = None;
        let r = fresh(true).absorb(
            &blocking,
            &q,
            None,
            |_| 0,
            |b| {
                asked = Some(b);
                true
            },
        );
        assert_eq!((r, asked), (None, Some(flow_bucket(&key))));
        assert_eq!(
            fresh(true).absorb(&blocking, &q, None, |_| 0, |_| false),
            Some(Counter::OverBudget)
        );
        // Blocking off: the bucket is not asked.
        assert_eq!(
            fresh(true).absorb(&c, &q, None, |_| 0, |_| panic!("asked")),
            Some(Counter::OverBudget)
        );
    }

    #[test]
    fn only_plain_watched_flows_are_handed_over() {
        let q = plain(1000, TCP_ACK);
        let p = parsed(&q);
        let st = FlowState::new(1, 0, 0);
        let over = Decision::Skip(Counter::OverBudget);
        assert_eq!(cacheable(&p, &st, &over), Some(true));
        assert_eq!(
            cacheable(&p, &st, &Decision::Skip(Counter::WatchedNoPayload)),
            Some(false)
        );
        let tail = Decision::Record {
            kind: RecordKind::Sample,
            flags: flags::TAIL,
            counter: Counter::SampledTail,
        };
        assert_eq!(cacheable(&p, &st, &tail), Some(true));
        let head = Decision::Record {
            kind: RecordKind::Sample,
            flags: 0,
            counter: Counter::SampledHead,
        };
        assert_eq!(cacheable(&p, &st, &head), None);
        let mut v6 = p;
        v6.family = crate::flow::FAMILY_V6;
        assert_eq!(cacheable(&v6, &st, &over), Some(true));
        // One VLAN tag: the fast path reads past it (`quick::plain_tagged`).
        let mut vlan = p;
        vlan.vlan = true;
        vlan.l3_off += VLAN_HLEN as u16;
        assert_eq!(cacheable(&vlan, &st, &over), Some(true));
        // Two (`quick::plain_two_tags`); PPPoE behind one
        // (`quick::plain_pppoe`), not behind two.
        let mut two_tags = vlan;
        two_tags.l3_off += VLAN_HLEN as u16;
        assert_eq!(cacheable(&two_tags, &st, &over), Some(true));
        let mut pppoe = vlan;
        pppoe.l3_off += PPPOE_HLEN as u16;
        assert_eq!(cacheable(&pppoe, &st, &over), Some(true));
        let mut pppoe_two_tags = two_tags;
        pppoe_two_tags.l3_off += PPPOE_HLEN as u16;
        let mut tunnelled = p;
        tunnelled.tunnel = 1;
        let mut dns = p;
        dns.proto = IPPROTO_UDP;
        dns.sport = DNS_PORT;
        for p in [pppoe_two_tags, tunnelled, dns] {
            assert_eq!(cacheable(&p, &st, &over), None, "{p:?}");
        }
        for f in [flow_flags::FOLLOWED, flow_flags::REFUSED] {
            let mut st = st;
            st.flags |= f;
            assert_eq!(cacheable(&p, &st, &over), None);
        }
    }
}
