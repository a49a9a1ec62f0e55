//! leakwatch's XDP program.
//!
//! Parses L2–L4 with the shared parser ([`sensor_common::parse`]), keeps only what
//! userspace needs, and hands it up through one ring buffer:
//!
//! ```text
//! frame ─ parse ─┬─ error ─────────────────────────────── counter, PASS
//!                ├─ DNS answer (from :53) ───────────────── ring: Dns
//!                ├─ WATCH_BITS hit ─ FLOWS, else WATCH_V4/V6 ─ policy ─ ring: Sample/Meta
//!                ├─ new TCP flow to a probe port ─ PROBE_PENDING ─ ring: Probe
//!                └─ else ─────────────────────────────────── counter, PASS
//! ```
//!
//! Every path ends in exactly one outcome counter. The verdict is always XDP_PASS:
//! a passive sensor never harms traffic; blocking will be decided in [`verdict`].
#![no_std]
#![no_main]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys live in per-CPU scratch memory; by value they would be copied onto the 512-byte stack"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya hands the program its context by value; small records are built by value on purpose"
)]
#![expect(
    clippy::single_match_else,
    reason = "the FLOWS lookup reads best as hit/miss arms"
)]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::generated::{bpf_ktime_get_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use sensor_common::{
    config::{CONFIG_VERSION, Config, config_flags},
    counters::{Counter, STATS_ENTRIES, stats_index},
    flow::{FAMILY_V4, FlowKey, FlowState},
    maps::{
        DEFAULT_FLOW_ENTRIES, DEFAULT_PROBE_ENTRIES, DEFAULT_RING_BYTES, DEFAULT_WATCH_ENTRIES,
        NO_SERVICE,
    },
    parse::{PacketBytes, Parsed, TCP_ACK, TCP_SYN, parse_into},
    policy::{
        Decision, PROBE_AWAITING, client_dir, is_dns_answer, probe_remaining, watched_packet,
    },
    record::{RECORD_VERSION, RecordHeader, RecordKind, SMALL_SNAPLEN, SNAPLEN, flags},
    watch::{BITMAP_WORDS, bit, bucket_v4, bucket_v6},
};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "WATCH_V4")]
static WATCH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

#[map(name = "WATCH_V6")]
static WATCH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

#[map(name = "WATCH_BITS_V4")]
static WATCH_BITS_V4: Array<u64> = Array::with_max_entries(BITMAP_WORDS, 0);

#[map(name = "WATCH_BITS_V6")]
static WATCH_BITS_V6: Array<u64> = Array::with_max_entries(BITMAP_WORDS, 0);

#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

#[map(name = "PROBE_PENDING")]
static PROBE_PENDING: LruHashMap<FlowKey, u64> =
    LruHashMap::with_max_entries(DEFAULT_PROBE_ENTRIES, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_ENTRIES as u32, 0);

/// Per-CPU working memory: the parsed headers and keys are bigger than the
/// 512-byte stack allows next to everything else.
#[repr(C, align(8))]
struct Scratch {
    parsed: Parsed,
    key: FlowKey,
    new_flow: FlowState,
}

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A ring record with room for `N` frame bytes, reserved in place in the ring
/// (one copy of the frame, straight from the packet).
#[repr(C)]
struct Rec<const N: usize> {
    hdr: RecordHeader,
    data: [u8; N],
}

#[xdp(frags)]
pub fn leakwatch(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let outcome = try_leakwatch(&ctx, ifindex);
    count(ifindex, outcome);
    verdict(outcome)
}

/// The one place a packet's fate is decided. Monitor mode: always XDP_PASS.
/// Blocking modes (drop the rest of a leaking flow, drop cleartext to watched
/// services) will consult `Config::mode` and a BLOCKED map here.
#[inline(always)]
fn verdict(_outcome: Counter) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(ifindex: u32, c: Counter) {
    // The index is < STATS_ENTRIES by construction (modulo), and the map lookup
    // returns None for anything else, so no out-of-bounds access is possible.
    if let Some(v) = STATS.get_ptr_mut(stats_index(ifindex, c)) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU (XDP runs with
        // preemption disabled).
        unsafe { *v += 1 };
    }
}

/// The frame as the shared parser sees it.
struct Frame<'a> {
    ctx: &'a XdpContext,
    /// Bytes in the linear part (`data_end - data`).
    linear: usize,
}

impl Frame<'_> {
    /// Whole frame length, XDP fragments included: a helper call, so only when a
    /// record needs it.
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: plain helper call on this program's context.
        unsafe { bpf_xdp_get_buff_len(self.ctx.ctx) as usize }
    }
}

impl PacketBytes for Frame<'_> {
    #[inline(always)]
    fn has_len(&self, len: usize) -> bool {
        // Most frames are linear: answer without the helper call when we can.
        len <= self.linear || len <= self.len()
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let start = self.ctx.data();
        let end = self.ctx.data_end();
        // The verifier needs this comparison between packet pointers right before the
        // access it proves safe; `off` is bounded by the parser (see parse.rs).
        if start + off + N > end {
            return None;
        }
        // SAFETY: [start + off, start + off + N) lies inside the linear packet data.
        Some(unsafe { *((start + off) as *const [u8; N]) })
    }

    #[inline(always)]
    fn peek<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        // bpf_xdp_load_bytes reads across XDP fragments and checks bounds itself.
        // SAFETY: buf is N writable bytes on the stack.
        let r = unsafe {
            bpf_xdp_load_bytes(
                self.ctx.ctx,
                off as u32,
                buf.as_mut_ptr().cast::<c_void>(),
                N as u32,
            )
        };
        if r == 0 { Some(buf) } else { None }
    }
}

#[inline(always)]
fn try_leakwatch(ctx: &XdpContext, ifindex: u32) -> Counter {
    let Some(cfg) = CONFIG.get(0) else {
        return Counter::Unconfigured;
    };
    if cfg.version != CONFIG_VERSION {
        return Counter::Unconfigured;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return Counter::Unconfigured;
    };
    // SAFETY: this CPU's scratch slot; XDP does not nest on a CPU, so nothing else
    // touches it until this invocation returns.
    let s = unsafe { &mut *s };
    let frame = Frame {
        ctx,
        linear: ctx.data_end() - ctx.data(),
    };
    if let Err(c) = parse_into(&frame, &mut s.parsed) {
        return c;
    }
    let out = Out {
        ctx,
        frame: &frame,
        ifindex,
    };
    let p = &s.parsed;

    if is_dns_answer(cfg, p, || frame.peek(p.payload_off as usize)) {
        let dir = s
            .key
            .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        let f = Fields {
            s,
            dir,
            kind: RecordKind::Dns,
            rflags: 0,
            service: NO_SERVICE,
            counts: (0, 0),
            ts: now(),
        };
        return out.emit(f, Counter::DnsAnswer);
    }
    // Two inlined bitmap reads keep unwatched traffic away from hash and trie lookups.
    if maybe_watched(p) {
        let dir = s
            .key
            .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        if let Some(c) = watched_flow(cfg, &out, s, dir) {
            return c;
        }
    }
    unwatched(cfg, &out, s)
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn bit_set(map: &Array<u64>, bucket: u32) -> bool {
    let (word, mask) = bit(bucket);
    // Array lookups are inlined by the verifier; word < BITMAP_WORDS by construction
    // and out-of-range indices return None anyway.
    map.get(word).is_some_and(|w| *w & mask != 0)
}

/// Whether source or destination may be watched (see sensor_common::watch).
#[inline(always)]
fn maybe_watched(p: &Parsed) -> bool {
    if p.family == FAMILY_V4 {
        bit_set(&WATCH_BITS_V4, bucket_v4(&p.dst)) || bit_set(&WATCH_BITS_V4, bucket_v4(&p.src))
    } else {
        bit_set(&WATCH_BITS_V6, bucket_v6(&p.dst)) || bit_set(&WATCH_BITS_V6, bucket_v6(&p.src))
    }
}

/// A packet whose address may be watched: a known flow, or a new one if the tries
/// confirm. `None` when neither endpoint is watched after all.
#[inline(always)]
fn watched_flow(cfg: &Config, out: &Out, s: &mut Scratch, dir: u8) -> Option<Counter> {
    let p = &s.parsed;
    let ts = now();
    // A known flow stays watched for its lifetime, even if its address expires.
    let st = match FLOWS.get_ptr_mut(&s.key) {
        Some(st) => st,
        None => {
            let src_svc = lookup_service(p, &p.src);
            let dst_svc = lookup_service(p, &p.dst);
            let ((Some(service), _) | (None, Some(service))) = (dst_svc, src_svc) else {
                return None;
            };
            let cdir = client_dir(p, dir, src_svc.is_some(), dst_svc.is_some());
            s.new_flow = FlowState::new(service, cdir, ts);
            // NOEXIST: if another CPU created the flow meanwhile, keep its entry.
            let _ = FLOWS.insert(&s.key, &s.new_flow, BPF_NOEXIST as u64);
            match FLOWS.get_ptr_mut(&s.key) {
                Some(st) => st,
                None => return Some(Counter::FlowInsertFailed),
            }
        }
    };
    // SAFETY: a live LRU entry; see FlowState for why plain stores are fine.
    let st = unsafe { &mut *st };
    let frame = out.frame;
    Some(
        match watched_packet(cfg, st, dir, p, ts, || frame.peek(p.payload_off as usize)) {
            Decision::Skip(c) => c,
            Decision::Record {
                kind,
                flags,
                counter,
            } => {
                let counts = if dir == 0 {
                    (st.bytes[0], st.pkts[0])
                } else {
                    (st.bytes[1], st.pkts[1])
                };
                let f = Fields {
                    s,
                    dir,
                    kind,
                    rflags: flags,
                    service: st.service,
                    counts,
                    ts,
                };
                out.emit(f, counter)
            }
        },
    )
}

/// Service id of the watched prefix containing `addr`, if any.
#[inline(always)]
fn lookup_service(p: &Parsed, addr: &[u8; 16]) -> Option<u32> {
    let svc = if p.family == FAMILY_V4 {
        WATCH_V4.get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        WATCH_V6.get(Key::new(128, *addr))
    };
    svc.copied()
}

/// Unwatched traffic: probe new TCP flows to probe ports so userspace can attribute
/// them by SNI/Host (clients using encrypted DNS), pass the rest.
#[inline(always)]
fn unwatched(cfg: &Config, out: &Out, s: &mut Scratch) -> Counter {
    let p = &s.parsed;
    if !p.is_tcp() || cfg.flags & config_flags::PROBE == 0 || !cfg.is_probe_port(p.dport) {
        return Counter::Unwatched;
    }
    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !syn && p.payload_len == 0 {
        return Counter::Unwatched;
    }
    let dir = s
        .key
        .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
    if syn {
        // A full LRU evicts the oldest pending SYN; nothing to count.
        let _ = PROBE_PENDING.insert(&s.key, &PROBE_AWAITING, 0);
        return Counter::ProbeSyn;
    }
    let Some(pending) = PROBE_PENDING.get_ptr_mut(&s.key) else {
        return Counter::Unwatched;
    };
    // SAFETY: a live LRU entry of this map.
    let was = unsafe { *pending };
    let frame = out.frame;
    let left = probe_remaining(was, p.payload_len, || frame.peek(p.payload_off as usize));
    if left == 0 {
        let _ = PROBE_PENDING.remove(&s.key);
    } else {
        // SAFETY: as above; a racing eviction only loses the continuation.
        unsafe { *pending = left };
    }
    let mut rflags = flags::FROM_CLIENT;
    if was == PROBE_AWAITING {
        rflags |= flags::FIRST_PAYLOAD;
    }
    let f = Fields {
        s,
        dir,
        kind: RecordKind::Probe,
        rflags,
        service: NO_SERVICE,
        counts: (0, 0),
        ts: now(),
    };
    out.emit(f, Counter::Probe)
}

/// What every record of this packet shares.
struct Out<'a> {
    ctx: &'a XdpContext,
    frame: &'a Frame<'a>,
    ifindex: u32,
}

impl Out<'_> {
    /// Sends a record: header only for `Meta`, else with the frame's first bytes in
    /// the smallest constant-size slot that holds them. Returns `counter`, or
    /// `RingFull` when the ring had no room.
    #[inline(always)]
    /// Sends a record: header only for `Meta`, else with the frame's first bytes in
    /// the smallest constant-size slot that holds them. Returns `counter`, or
    /// `RingFull` when the ring had no room.
    fn emit(&self, fields: Fields, counter: Counter) -> Counter {
        let len = self.frame.len();
        let sent = if fields.kind == RecordKind::Meta {
            self.emit_n::<0>(&fields, len)
        } else if len <= SMALL_SNAPLEN {
            self.emit_n::<SMALL_SNAPLEN>(&fields, len)
        } else {
            self.emit_n::<SNAPLEN>(&fields, len)
        };
        if sent { counter } else { Counter::RingFull }
    }

    #[inline(always)]
    fn emit_n<const N: usize>(&self, f: &Fields, len: usize) -> bool {
        let Some(mut entry) = EVENTS.reserve::<Rec<N>>(0) else {
            return false;
        };
        let rec = entry.as_mut_ptr();
        let p = &f.s.parsed;
        let mut rflags = f.rflags;
        if p.vlan {
            rflags |= flags::VLAN;
        }
        if p.first_fragment {
            rflags |= flags::IP_FRAGMENT;
        }
        let mut cap = 0usize;
        if N > 0 {
            let n = if len < N { len } else { N };
            // Clamp into [1, N] with a mask the verifier can follow (a plain
            // `n == 0` test gets rewritten by LLVM into a form it rejects).
            let want = (n.wrapping_sub(1) & (N - 1)) + 1;
            // bpf_xdp_load_bytes copies across XDP fragments.
            // SAFETY: the reserved record has N data bytes and want ≤ N.
            let r = unsafe {
                bpf_xdp_load_bytes(
                    self.ctx.ctx,
                    0,
                    (&raw mut (*rec).data).cast::<c_void>(),
                    want as u32,
                )
            };
            if r == 0 {
                cap = want;
            }
            if cap < len {
                rflags |= flags::TRUNCATED;
                count(self.ifindex, Counter::SnapTruncated);
            }
        }
        // SAFETY: rec points at the reserved, writable record; every header field
        // is written (the slot holds stale ring bytes), one by one so no header
        // temporary sits on the stack.
        unsafe {
            let h = &raw mut (*rec).hdr;
            (*h).version = RECORD_VERSION;
            (*h).kind = f.kind as u8;
            (*h).flags = rflags;
            (*h).ifindex = self.ifindex;
            (*h).ts_ns = f.ts;
            (*h).flow = f.s.key;
            (*h).service = f.service;
            (*h).direction = f.dir;
            (*h).tcp_flags = p.tcp_flags;
            (*h).l3_off = p.l3_off;
            (*h).l4_off = p.l4_off;
            (*h).payload_off = p.payload_off;
            (*h).tcp_seq = p.tcp_seq;
            (*h).tcp_ack = p.tcp_ack;
            (*h).pkt_len = len as u32;
            (*h).cap_len = cap as u32;
            (*h).payload_len = p.payload_len;
            (*h).dir_bytes = f.counts.0;
            (*h).dir_pkts = f.counts.1;
        }
        entry.submit(0);
        true
    }
}

/// The values of one record besides the frame and interface.
struct Fields<'a> {
    s: &'a Scratch,
    dir: u8,
    kind: RecordKind,
    rflags: u16,
    service: u32,
    counts: (u64, u64),
    ts: u64,
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
