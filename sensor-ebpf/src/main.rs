//! leakwatch's XDP program.
//!
//! Parses L2–L4 with the shared parser ([`sensor_common::parse`], through one
//! level of GRE, ERSPAN or VXLAN), keeps only what
//! userspace needs, and hands it up through its CPU's ring buffer:
//!
//! ```text
//! frame ─ plain IPv4/IPv6 TCP/UDP (or 1–2 VLAN tags, PPPoE behind ≤ 1), watch bits clear, no DNS/probe/follow/VXLAN port ── counter, PASS
//!    ├ plain, watch bit set, this CPU's HOT slot holds its flow past its head ── counter, PASS
//!    └ parse ─┬─ error ─────────────────────────────── counter, PASS
//!             ├─ DNS answer (from :53) ───────────────── ring: Dns
//!             ├─ WATCH_BITS hit ─ [BLOCKED] ─ FLOWS, else WATCH_V4/V6 ─ policy ─ ring: Sample/Meta
//!             │                                                    └─ [refuse cleartext]
//!             ├─ [FOLLOW] probe port ─ FLOWS (followed) ─ policy ─ ring: Sample/Meta
//!             ├─ new TCP flow to a probe port ─ PROBE_PENDING ─ ring: Probe
//!             └─ else ─────────────────────────────────── counter, PASS
//! ```
//!
//! Every path ends in exactly one outcome counter. Without `config_flags::BLOCK`
//! every packet passes and the block maps are never read. With it, [`verdict`]
//! drops the client packets of blocked flows, or sends a TCP RST in their place
//! (see `sensor_common::block`); nothing else is ever dropped.
#![no_std]
#![no_main]
// The atomic add without fetch (`bump_hot_epoch`): the BPF target's `Atomic*`
// types offer loads and stores only.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics, for atomic_xadd")]
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
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::sync::atomic::Ordering;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_NO_WAKEUP, xdp_action},
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_ringbuf_query,
        bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{btf_map, map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use sensor_common::{
    admit::{
        DEFAULT_SOURCE_ENTRIES, DEFAULT_SYN_ENTRIES, SourceBudget, SourceKey, is_bare_syn, opened,
    },
    block::{
        self, BlockEntry, QuarantineKey, ROLE_LAN, RST_INTERVAL_NS, RST_MAX, flow_bucket,
        rst_headers, split_watch_value,
    },
    config::{CONFIG_VERSION, Config, config_flags},
    counters::{Counter, STATS_ENTRIES, stats_index},
    flow::{FAMILY_V4, FlowKey, FlowState, UNNUMBERED, flow_flags},
    hot::{EPOCH_SLOTS, HOT_SLOTS, HotFlow, around_decision, epoch_slot, rest, slot_of, slot_of6},
    maps::{
        DEFAULT_FLOW_ENTRIES, DEFAULT_PROBE_ENTRIES, DEFAULT_WATCH_ENTRIES, MAX_RING_CPUS,
        NO_SERVICE, RING_TEMPLATE_BYTES,
    },
    parse::{ETH_P_IPV4, ETH_P_IPV6, PacketBytes, Parsed, TCP_ACK, TCP_SYN, VLAN_HLEN, parse_into},
    policy::{
        Decision, PROBE_AWAITING, client_dir, is_dns_answer, may_be_followed, probe_remaining,
        watched_packet,
    },
    quick::{
        parse_plain_into, plain, plain_tagged, plain_two_tags_or_pppoe, plainly_unwatched,
        reread_ipv4, reread_ipv6,
    },
    record::{
        RECORD_VERSION, RecordHeader, RecordKind, SMALL_SNAPLEN, SNAPLEN, UNSTAMPED, flags,
        wakes_reader,
    },
    watch::{BITMAP_WORDS, bit, bucket_ipv4, bucket_ipv6},
};

/// One ring per CPU (`sensor_common::maps::RINGS`): a CPU's records never wait
/// on another CPU's reserve. A BTF map: map-of-maps needs the inner map's
/// definition, which only BTF carries.
#[btf_map(name = "RINGS")]
static RINGS: ArrayOfMaps<
    RingBuf<u8, { RING_TEMPLATE_BYTES as usize }>,
    { MAX_RING_CPUS as usize },
> = ArrayOfMaps::new();

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

/// The flows this CPU is busy with, past their head (`sensor_common::hot`).
#[map(name = "HOT")]
static HOT: PerCpuArray<HotFlow> = PerCpuArray::with_max_entries(HOT_SLOTS, 0);

#[map(name = "PROBE_PENDING")]
static PROBE_PENDING: LruHashMap<FlowKey, u64> =
    LruHashMap::with_max_entries(DEFAULT_PROBE_ENTRIES, 0);

#[map(name = "SYN_PENDING")]
static SYN_PENDING: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(DEFAULT_SYN_ENTRIES, 0);

#[map(name = "SOURCES")]
static SOURCES: LruHashMap<SourceKey, SourceBudget> =
    LruHashMap::with_max_entries(DEFAULT_SOURCE_ENTRIES, 0);

#[map(name = "BLOCKED")]
static BLOCKED: HashMap<FlowKey, BlockEntry> =
    HashMap::with_max_entries(block::DEFAULT_BLOCKED_ENTRIES, 0);

#[map(name = "BLOCK_BITS")]
static BLOCK_BITS: Array<u64> = Array::with_max_entries(BITMAP_WORDS, 0);

#[map(name = "QUARANTINE")]
static QUARANTINE: HashMap<QuarantineKey, BlockEntry> =
    HashMap::with_max_entries(block::DEFAULT_QUARANTINE_ENTRIES, 0);

#[map(name = "IFACE_ROLES")]
static IFACE_ROLES: HashMap<u32, u32> = HashMap::with_max_entries(block::MAX_IFACES, 0);

#[map(name = "ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(block::DEFAULT_ALLOW_ENTRIES, 0);

#[map(name = "ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(block::DEFAULT_ALLOW_ENTRIES, 0);

/// Bare SYNs the full path has seen on watched addresses, on every CPU, per
/// group of flow buckets (`hot::epoch_slot`): a `HOT` slot filled before
/// the latest of its group absorbs nothing (`HotFlow::absorb`). A global,
/// so the fast path reads it without a map lookup; bumped atomically, so the
/// connection numbers it hands out only grow. 64-bit: the `generic` BPF CPU
/// has no 32-bit atomics; epochs and numbers are its low 32 bits.
#[unsafe(no_mangle)]
static mut HOT_EPOCHS: [u64; EPOCH_SLOTS] = [0; EPOCH_SLOTS];

/// The restart epoch of a flow's `BLOCK_BITS` bucket.
#[inline(always)]
fn hot_epoch(bucket: u32) -> u32 {
    // SAFETY: epoch_slot masks the index below EPOCH_SLOTS, so the read stays
    // inside the global (the verifier checks the same bound). The counter's
    // low half, at its address on a little-endian target: one 32-bit load.
    unsafe {
        core::ptr::read_volatile(
            (&raw const HOT_EPOCHS)
                .cast::<u64>()
                .add(epoch_slot(bucket))
                .cast::<u32>(),
        )
    }
}

/// A new connection on a tuple another CPU's slot may hold: the slots of
/// its bucket's group filled before this go back to the full path. After
/// the flow's state was started over, so a slot filled with this epoch read
/// a fresh state. Returns the epoch after the bump: the new connection's
/// number (`FlowState::conn`), above any its tuple's older connections had.
#[inline(always)]
fn bump_hot_epoch(bucket: u32) -> u32 {
    // The flow's new state is written before the bump: a compiler barrier,
    // no instruction. x86 keeps stores (and loads) in order; on a weakly
    // ordered CPU a slot may, rarely, still be filled from the old state.
    core::sync::atomic::compiler_fence(Ordering::Release);
    // SAFETY: epoch_slot masks the index below EPOCH_SLOTS, so the pointer
    // stays inside the global, whose elements are u64-aligned.
    let at = unsafe { (&raw mut HOT_EPOCHS).cast::<u64>().add(epoch_slot(bucket)) };
    // Atomic, so two CPUs bumping one group at once both count (a read and
    // a store could lose one, or even step the counter back). Its result
    // unused: the add without fetch (BPF_XADD) is the only atomic the
    // `generic` CPU rustc asks bpf-linker for has, so the new value is read
    // after it: at least this bump's, above every number handed out before.
    // SAFETY: as above; every access to the global is volatile or atomic.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(at, 1) };
    hot_epoch(bucket)
}

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
    qkey: QuarantineKey,
    source: SourceKey,
    budget: SourceBudget,
    /// The RST's IP and TCP headers, built here before they are written.
    rst: [u8; RST_MAX],
    /// The frame was rewritten into an RST: send it back (XDP_TX).
    tx: bool,
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

// Inlined into the entry the macro wraps it in: as a BPF-to-BPF call it cost
// every packet a call and a return through the JIT's return thunk, about a
// sixth of the unwatched path (docs/performance.md).
#[xdp(frags)]
#[inline(always)]
pub fn leakwatch(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let (outcome, tx) = try_leakwatch(&ctx, ifindex);
    count(ifindex, outcome);
    verdict(outcome, tx)
}

/// The one place a packet's fate is decided: only the blocking outcomes leave
/// the packet's path, as the RST written in its place (`tx`) or dropped.
#[inline(always)]
fn verdict(outcome: Counter, tx: bool) -> u32 {
    match outcome {
        Counter::BlockedDrop | Counter::BlockedRst | Counter::CleartextDrop => {
            if tx {
                xdp_action::XDP_TX
            } else {
                xdp_action::XDP_DROP
            }
        }
        _ => xdp_action::XDP_PASS,
    }
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

/// Offsets below which [`Frame::peek`] tries the linear part first.
const PEEK_DIRECT_MAX: usize = 1 << 14;

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
        Some(unsafe { load(start + off) })
    }

    #[inline(always)]
    fn peek<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // Nearly always inside the linear part: read it there, without a
        // helper call (whose return alone cost the DNS path about as much
        // as its whole frame copy's, docs/performance.md). The verifier
        // marks a packet range only for offsets it knows stay far below
        // 64 KiB, hence the bound.
        if off < PEEK_DIRECT_MAX {
            let end = self.ctx.data_end();
            // One register for the comparison and the read: LLVM otherwise
            // re-derives the read's address from `off`, which the verifier
            // cannot tie to the comparison.
            let at = core::hint::black_box(self.ctx.data() + off);
            if at + N <= end {
                // SAFETY: [at, at + N) lies inside the linear packet data.
                return Some(unsafe { load(at) });
            }
        }
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

/// The outcome of a plain IPv4 or IPv6 TCP or UDP packet decided before the
/// scratch slot, the full parse or a key: between unwatched addresses with
/// nothing else wanting it (`sensor_common::quick`), or counted for a watched
/// flow this CPU holds past its head (`sensor_common::hot`). `None`: the full
/// path decides.
#[inline(always)]
fn fast_path(ctx: &XdpContext, cfg: &Config) -> Option<Counter> {
    let frame = PlainFrame::of(ctx);
    let Some(q) = plain(&frame, cfg.vxlan_port) else {
        // One VLAN tag (a trunk, a mirror port's feed), tried after the
        // untagged frames' tests fail: they pay nothing for it. A call site
        // of its own, so the untagged one reads at constant offsets.
        let Some(q) = plain_tagged(&frame, cfg.vxlan_port) else {
            // Two tags (QinQ), or PPPoE (an access link) untagged or
            // behind one, after that: one call site, whose header lies 8
            // or 12 bytes on.
            let (q, shift) = plain_two_tags_or_pppoe(&frame, cfg.vxlan_port)?;
            if !watch_bits(q.family, &q.src, &q.dst) {
                return plainly_unwatched(cfg, &q).then_some(Counter::Unwatched);
            }
            return hot_packet(ctx, cfg, q.family, shift);
        };
        if !watch_bits(q.family, &q.src, &q.dst) {
            return plainly_unwatched(cfg, &q).then_some(Counter::Unwatched);
        }
        return hot_packet(ctx, cfg, q.family, VLAN_HLEN);
    };
    if !watch_bits(q.family, &q.src, &q.dst) {
        return if plainly_unwatched(cfg, &q) {
            Some(Counter::Unwatched)
        } else {
            None
        };
    }
    hot_packet(ctx, cfg, q.family, 0)
}

/// A watched plain packet absorbed by this CPU's slot for its direction
/// (`tag`: the bytes of VLAN tags and PPPoE before its header: 0 to 12).
/// Its header is read again: kept from the bitmap test, the fields it needs
/// stay live across the bitmap lookups and LLVM spills them on every path.
#[inline(always)]
fn hot_packet(ctx: &XdpContext, cfg: &Config, family: u8, tag: usize) -> Option<Counter> {
    let frame = PlainFrame::of(ctx);
    // Past the VLAN tag, if any: the header where an untagged frame's is.
    let frame = PlainFrame {
        data: frame.data + tag,
        end: frame.end,
    };
    let blocked = |bucket| bit_set(&BLOCK_BITS, bucket);
    if family == FAMILY_V4 {
        let q = reread_ipv4(&frame)?;
        let h = HOT.get_ptr_mut(slot_of(&q.src, &q.dst))?;
        // SAFETY: this CPU's slot; XDP does not nest on a CPU.
        unsafe { &mut *h }.absorb(cfg, &q, None, hot_epoch, blocked)
    } else {
        let (q, src, dst) = reread_ipv6(&frame)?;
        let h = HOT.get_ptr_mut(slot_of6(&src, &dst))?;
        // SAFETY: as above.
        unsafe { &mut *h }.absorb(cfg, &q, Some(&rest(&src, &dst)), hot_epoch, blocked)
    }
}

/// The frame's linear part as the fast path reads it: its own packet
/// pointers, read volatile so LLVM does not share them with the full parser.
/// Shared, the bounds this path proved would differ between the ways it falls
/// through, and the verifier would walk the whole program once for each
/// (588,000 instructions verified became 890,000 of its 1,000,000).
struct PlainFrame {
    data: usize,
    end: usize,
}

impl PlainFrame {
    #[inline(always)]
    fn of(ctx: &XdpContext) -> Self {
        // SAFETY: reads of the kernel's xdp_md for this invocation.
        unsafe {
            Self {
                data: core::ptr::read_volatile(&raw const (*ctx.ctx).data) as usize,
                end: core::ptr::read_volatile(&raw const (*ctx.ctx).data_end) as usize,
            }
        }
    }
}

impl PacketBytes for PlainFrame {
    #[inline(always)]
    fn has_len(&self, len: usize) -> bool {
        self.has_linear(len)
    }

    #[inline(always)]
    fn has_linear(&self, len: usize) -> bool {
        len <= self.end - self.data
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // As Frame::header: the comparison right before the access.
        if self.data + off + N > self.end {
            return None;
        }
        // SAFETY: [data + off, data + off + N) lies inside the linear packet data.
        Some(unsafe { load(self.data + off) })
    }
}

/// The `N` bytes at `at`, two per load: LLVM reads a `[u8; N]` a byte at a
/// time at the BPF target's CPU, and the readers rebuild most fields from
/// byte pairs (docs/performance.md).
///
/// # Safety
/// `[at, at + N)` must be readable packet data the verifier knows is in
/// bounds. The loads are `u16`: `at` is 2-byte aligned whenever the header's
/// offset is even, which every header the readers ask for is, and every
/// payload [`Frame::peek`] reads (IP and TCP headers come in 4-byte words;
/// the kernel aligns a frame's start), and on this target a misaligned one
/// would still be a plain load (x86's JIT; the verifier accepts it).
#[inline(always)]
unsafe fn load<const N: usize>(at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let words = at as *const u16;
    let mut i = 0;
    while i + 1 < N {
        // SAFETY: inside [at, at + N), per the caller.
        let [a, b] = unsafe { *words.add(i / 2) }.to_ne_bytes();
        out[i] = a;
        out[i + 1] = b;
        i += 2;
    }
    if N % 2 == 1 {
        // SAFETY: as above, the last byte.
        out[N - 1] = unsafe { *((at + N - 1) as *const u8) };
    }
    out
}

/// The packet's outcome, and whether its frame became an RST to send back.
#[inline(always)]
fn try_leakwatch(ctx: &XdpContext, ifindex: u32) -> (Counter, bool) {
    let Some(cfg) = CONFIG.get(0) else {
        return (Counter::Unconfigured, false);
    };
    if cfg.version != CONFIG_VERSION {
        return (Counter::Unconfigured, false);
    }
    // Read before the fast path, not after: LLVM then lays the program out
    // so the verifier walks 577,000 instructions instead of 738,000.
    let frame = Frame {
        ctx,
        linear: ctx.data_end() - ctx.data(),
    };
    // The common case first (docs/performance.md).
    if let Some(c) = fast_path(ctx, cfg) {
        return (c, false);
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return (Counter::Unconfigured, false);
    };
    // SAFETY: this CPU's scratch slot; XDP does not nest on a CPU, so nothing else
    // touches it until this invocation returns.
    let s = unsafe { &mut *s };
    s.tx = false;
    let c = classify(cfg, &frame, ifindex, s);
    (c, s.tx)
}

#[inline(always)]
fn classify(cfg: &Config, frame: &Frame, ifindex: u32, s: &mut Scratch) -> Counter {
    let ctx = frame.ctx;
    // A plain frame (watched, or wanted for DNS, a probe or a followed app)
    // is filled from the bytes the fast path reads; the rest are parsed. Read
    // again, not handed over: carrying the fast path's result this far made
    // the unwatched path 34 → 42 ns (docs/performance.md).
    if !parse_plain_into(&PlainFrame::of(ctx), cfg.vxlan_port, &mut s.parsed)
        && let Err(c) = parse_into(frame, &mut s.parsed, cfg.vxlan_port)
    {
        return c;
    }
    let out = Out {
        ctx,
        frame,
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
            // Stamped by the reader (record::UNSTAMPED): no clock read here.
            stamp: false,
            last: core::ptr::null_mut(),
        };
        return out.emit(f, Counter::DnsAnswer);
    }
    // Two inlined bitmap reads keep unwatched traffic away from hash and trie lookups.
    let mut found = Lookup::Unwatched;
    if maybe_watched(p) {
        let dir = s
            .key
            .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        found = watched_flow(cfg, &out, s, dir);
    }
    if let Lookup::Unwatched = found {
        found = unwatched(cfg, &out, s);
    }
    // One call site: the flow path is inlined once, whichever way it was found.
    match found {
        Lookup::Flow { st, dir } => flow_packet(cfg, &out, s, (st, dir)),
        Lookup::Done(c) => c,
        Lookup::Unwatched => Counter::Unwatched,
    }
}

/// Where a packet's flow lookup ended.
enum Lookup {
    /// A flow in `FLOWS` (watched, or followed for an app); `dir`: the packet's.
    Flow { st: *mut FlowState, dir: u8 },
    /// Decided without a flow.
    Done(Counter),
    /// Neither endpoint is watched after all.
    Unwatched,
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC_COARSE: a read of the last tick's time, far cheaper than
/// [`now`]. Enough for flow bookkeeping and deadlines (a tick is at most a few
/// ms); records carry [`now`].
#[inline(always)]
fn coarse_now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
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
    watch_bits(p.family, &v4(&p.src), &v4(&p.dst))
}

/// Whether either address's bucket bit is set, from the addresses' first four
/// bytes: all the buckets of either family read.
#[inline(always)]
fn watch_bits(family: u8, src: &[u8; 4], dst: &[u8; 4]) -> bool {
    if family == FAMILY_V4 {
        bit_set(&WATCH_BITS_V4, bucket_ipv4(dst)) || bit_set(&WATCH_BITS_V4, bucket_ipv4(src))
    } else {
        bit_set(&WATCH_BITS_V6, bucket_ipv6(dst)) || bit_set(&WATCH_BITS_V6, bucket_ipv6(src))
    }
}

/// A packet whose address may be watched: a known flow, or a new one if the tries
/// confirm.
#[inline(always)]
fn watched_flow(cfg: &Config, out: &Out, s: &mut Scratch, dir: u8) -> Lookup {
    // One inlined bitmap word keeps packets of unblocked flows off the hash lookup.
    if blocking(cfg, &s.parsed)
        && bit_set(&BLOCK_BITS, flow_bucket(&s.key))
        && let Some(c) = blocked_flow(out, s, dir, coarse_now())
    {
        return Lookup::Done(c);
    }
    // A known flow stays watched for its lifetime, even if its address expires.
    // Its packets read no clock unless they hand a record up (the helper's
    // call and return: past budget 104 → 91 ns, docs/performance.md).
    let st = match FLOWS.get_ptr_mut(&s.key) {
        Some(st) => st,
        None => {
            let ts = coarse_now();
            let p = &s.parsed;
            let src_svc = lookup_service(p, &p.src);
            let dst_svc = lookup_service(p, &p.dst);
            let ((Some(value), _) | (None, Some(value))) = (dst_svc, src_svc) else {
                return Lookup::Unwatched;
            };
            // A bare SYN starts nothing yet: a SYN flood churns SYN_PENDING,
            // not FLOWS or the ring. Its tuple's old flow may have left
            // FLOWS but not a slot, on any CPU: the new flow's `conn` (the
            // epoch after this bump) tells the old counts apart.
            if is_bare_syn(p) {
                let _ = SYN_PENDING.insert(&s.key, &ts, 0);
                bump_hot_epoch(flow_bucket(&s.key));
                return Lookup::Done(Counter::SynDeferred);
            }
            let (service, policy) = split_watch_value(value);
            let cdir = client_dir(p, dir, src_svc.is_some(), dst_svc.is_some());
            if !source_admits(cfg, s, cdir, ts) {
                return Lookup::Done(Counter::SourceBudget);
            }
            let p = &s.parsed;
            // SAFETY: a plain map read.
            let syn_seen = p.is_tcp() && unsafe { SYN_PENDING.get(&s.key) }.is_some();
            if syn_seen {
                let _ = SYN_PENDING.remove(&s.key);
            }
            s.new_flow = FlowState::new(service, cdir, ts);
            s.new_flow.policy = policy;
            // Numbered by its first packet's full path (`around_decision`):
            // the epoch read here, LLVM left a helper's argument register
            // unset on the way to the service lookups (`R1 !read_ok`).
            s.new_flow.conn = UNNUMBERED;
            if opened(p, syn_seen) {
                s.new_flow.flags = flow_flags::OPENED;
            }
            // NOEXIST: if another CPU created the flow meanwhile, keep its entry.
            let _ = FLOWS.insert(&s.key, &s.new_flow, BPF_NOEXIST as u64);
            match FLOWS.get_ptr_mut(&s.key) {
                Some(st) => st,
                None => return Lookup::Done(Counter::FlowInsertFailed),
            }
        }
    };
    Lookup::Flow { st, dir }
}

/// Whether blocking may act on this packet at all. A tunnelled packet is a
/// copy (a mirror feed): nothing to drop or answer.
#[inline(always)]
fn blocking(cfg: &Config, p: &Parsed) -> bool {
    cfg.flags & config_flags::BLOCK != 0 && p.is_tcp() && p.tunnel == 0
}

/// A packet of a flow in `FLOWS`: its state updated, sampled by the policy,
/// refused if blocking says so. A followed flow (an app's, to an address
/// nobody watches) is never refused.
#[inline(always)]
fn flow_packet(
    cfg: &Config,
    out: &Out,
    s: &mut Scratch,
    (st, dir): (*mut FlowState, u8),
) -> Counter {
    // SAFETY: a live LRU entry; see FlowState for why plain stores are fine.
    let st = unsafe { &mut *st };
    let p = &s.parsed;
    let blocking = blocking(cfg, p) && st.flags & flow_flags::FOLLOWED == 0;
    // A bare SYN opens a new connection on these ports: it starts the flow
    // over (policy::restart), refusal included.
    if blocking && st.flags & flow_flags::REFUSED != 0 && dir == st.client_dir && !is_bare_syn(p) {
        return Counter::BlockedDrop;
    }
    let frame = out.frame;
    // Read before the state is (hot::HotFlow::fill): the fence keeps LLVM
    // from reading the state first (a compiler barrier; no instruction).
    let bucket = flow_bucket(&s.key);
    let epoch = hot_epoch(bucket);
    core::sync::atomic::compiler_fence(Ordering::Acquire);
    let decision = around_decision(
        cfg,
        // SAFETY: this CPU's slot; XDP does not nest on a CPU.
        hot_slot(p).map(|h| unsafe { &mut *h }),
        (p, &s.key),
        (st, dir),
        epoch,
        |st| watched_packet(cfg, st, dir, p, || frame.peek(p.payload_off as usize)),
        || bump_hot_epoch(bucket),
        give_back,
    );
    match decision {
        Decision::Skip(c) => c,
        Decision::Record {
            kind,
            mut flags,
            mut counter,
        } => {
            // The flow's first client payload decides a cleartext refusal.
            let first = flags::FROM_CLIENT | flags::FIRST_PAYLOAD;
            if blocking && flags & (first | flags::TLS) == first {
                match refuse_cleartext(out, s, st) {
                    Refusal::No => {}
                    Refusal::Would => flags |= flags::WOULD_BLOCK,
                    Refusal::Yes => {
                        st.flags |= flow_flags::REFUSED;
                        flags |= flags::BLOCKED;
                        counter = Counter::CleartextDrop;
                    }
                }
            }
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
                stamp: true,
                last: &raw mut st.last_ns,
            };
            let c = out.emit(f, counter);
            if counter == Counter::CleartextDrop {
                // Sampled first (its findings carry "blocked"), then refused,
                // whether or not the ring had room.
                s.tx = send_rst(out, s);
                Counter::CleartextDrop
            } else {
                c
            }
        }
    }
}

/// This CPU's `HOT` slot for a packet's direction.
#[inline(always)]
fn hot_slot(p: &Parsed) -> Option<*mut HotFlow> {
    let slot = if p.family == FAMILY_V4 {
        slot_of(&v4(&p.src), &v4(&p.dst))
    } else {
        slot_of6(&p.src, &p.dst)
    };
    HOT.get_ptr_mut(slot)
}

/// An address's first four bytes: all of an IPv4 one.
#[inline(always)]
fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Counts a slot absorbed for another flow's direction `dir`, given back
/// when the slot is taken over: to its `FLOWS` entry, if that is still the
/// connection `conn` they were absorbed for (dropped if the flow was
/// evicted or started over since).
#[inline(always)]
fn give_back(key: &FlowKey, dir: u8, conn: u32, counts: (u64, u64)) {
    if let Some(old) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a live LRU entry; see FlowState for why plain stores are fine.
        let old = unsafe { &mut *old };
        if old.conn == conn {
            old.add_counts(dir, counts);
        }
    }
}

/// Whether the new flow's client address (the endpoint `cdir` sends from) may
/// start one more watched flow this second; counts it if so.
#[inline(always)]
fn source_admits(cfg: &Config, s: &mut Scratch, cdir: u8, ts: u64) -> bool {
    let per_second = cfg.new_flows_per_source;
    if per_second == 0 {
        return true;
    }
    let addr = if cdir == 0 {
        s.key.addr_a
    } else {
        s.key.addr_b
    };
    s.source.set(&addr, s.key.family);
    if let Some(b) = SOURCES.get_ptr_mut(&s.source) {
        // SAFETY: a live LRU entry; racing CPUs may each count one flow less,
        // which only loosens the budget slightly.
        return unsafe { &mut *b }.admit(ts, per_second);
    }
    s.budget = SourceBudget::default();
    let admitted = s.budget.admit(ts, per_second);
    let _ = SOURCES.insert(&s.source, &s.budget, 0);
    admitted
}

/// A client packet of a flow userspace blocked: answered with an RST in its
/// place at most every `RST_INTERVAL_NS` (the first at once; a retransmission
/// after a lost RST gets another), otherwise dropped. `None`: not blocked (or not the client).
#[inline(always)]
fn blocked_flow(out: &Out, s: &mut Scratch, dir: u8, ts: u64) -> Option<Counter> {
    let e = BLOCKED.get_ptr_mut(&s.key)?;
    // SAFETY: a live entry of this map; a racing update only loses a flag.
    let e = unsafe { &mut *e };
    // Expired entries are ignored before userspace removes them.
    if e.deadline_ns <= ts || dir != e.client_dir || !is_lan(out.ifindex) {
        return None;
    }
    // A bare SYN: the blocked connection is over and the client opens a new
    // one on the same ports (an ephemeral port come round again). Dropped, it
    // would time out for as long as the block lasts, as no RST answers a SYN
    // without an ACK to take its sequence number from. It passes and the
    // block ends here; userspace lifts it on the SYN's record.
    if is_bare_syn(&s.parsed) {
        e.deadline_ns = 0;
        return None;
    }
    if ts.wrapping_sub(e.last_rst_ns) < RST_INTERVAL_NS {
        return Some(Counter::BlockedDrop);
    }
    e.last_rst_ns = ts;
    if send_rst(out, s) {
        s.tx = true;
        Some(Counter::BlockedRst)
    } else {
        Some(Counter::BlockedDrop)
    }
}

#[inline(always)]
fn is_lan(ifindex: u32) -> bool {
    // SAFETY: a plain map read of a u32.
    unsafe { IFACE_ROLES.get(&ifindex) }.is_some_and(|r| *r == ROLE_LAN)
}

enum Refusal {
    No,
    /// A dry-run policy would refuse it.
    Would,
    Yes,
}

/// Whether the first client payload of `st`'s flow, not TLS, is refused: the
/// address has the `block-cleartext` policy or the client is quarantined for
/// the service; only clients on a LAN interface and not allow-listed; only
/// flows seen from their SYN (one that raced its DNS answer passes, counted).
#[inline(always)]
fn refuse_cleartext(out: &Out, s: &mut Scratch, st: &FlowState) -> Refusal {
    let p = &s.parsed;
    let policy = st.policy;
    let mut quarantined = false;
    if policy & block::policy::BLOCK_CLEARTEXT == 0 {
        s.qkey.client = p.src;
        s.qkey.service = st.service;
        s.qkey.family = p.family;
        s.qkey._pad = [0; 3];
        // SAFETY: a plain map read.
        quarantined = unsafe { QUARANTINE.get(&s.qkey) }.is_some_and(|e| e.deadline_ns > now());
        if !quarantined {
            return Refusal::No;
        }
    }
    if !is_lan(out.ifindex) || allowed(p) {
        return Refusal::No;
    }
    if st.flags & flow_flags::OPENED == 0 {
        count(out.ifindex, Counter::CleartextRace);
        return Refusal::No;
    }
    if !quarantined && policy & block::policy::DRY_RUN != 0 {
        count(out.ifindex, Counter::WouldBlock);
        return Refusal::Would;
    }
    Refusal::Yes
}

/// Whether the packet's source is an allow-listed client.
#[inline(always)]
fn allowed(p: &Parsed) -> bool {
    if p.family == FAMILY_V4 {
        let a = &p.src;
        ALLOW_V4
            .get(Key::new(32, [a[0], a[1], a[2], a[3]]))
            .is_some()
    } else {
        ALLOW_V6.get(Key::new(128, p.src)).is_some()
    }
}

/// Rewrites the frame into the RST answering it (`sensor_common::block::rst_headers`):
/// MACs swapped, any 802.1Q tags kept, new IP and TCP headers, trimmed. False
/// (counted `rst_failed`) when that cannot be done; the caller then drops.
#[inline(always)]
fn send_rst(out: &Out, s: &mut Scratch) -> bool {
    let ok = write_rst(out, s);
    if !ok {
        count(out.ifindex, Counter::RstFailed);
    }
    ok
}

#[inline(always)]
fn write_rst(out: &Out, s: &mut Scratch) -> bool {
    let p = &s.parsed;
    let l3 = p.l3_off as usize;
    // Only Ethernet and VLAN tags may precede IP: a PPPoE length or an MPLS label
    // stack would need rewriting too. The two bytes before IP are then its ethertype.
    let want = if p.family == FAMILY_V4 {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    match out.frame.peek::<2>(l3.wrapping_sub(2)) {
        Some(t) if u16::from_be_bytes(t) == want => {}
        _ => return false,
    }
    let Some(n) = rst_headers(p, &mut s.rst) else {
        return false;
    };
    let Some(m) = out.frame.peek::<12>(0) else {
        return false;
    };
    let swapped = [
        m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5],
    ];
    let len = out.frame.len();
    let end = l3 + n;
    if end > len {
        return false;
    }
    let ctx = out.ctx.ctx;
    // Constant lengths for the helper; it checks the offsets against the frame.
    // SAFETY: helper calls on this program's context with buffers of the given sizes.
    unsafe {
        if bpf_xdp_store_bytes(ctx, 0, swapped.as_ptr() as *mut c_void, 12) != 0 {
            return false;
        }
        let hdrs = s.rst.as_mut_ptr().cast::<c_void>();
        let r = if n == RST_MAX {
            bpf_xdp_store_bytes(ctx, l3 as u32, hdrs, RST_MAX as u32)
        } else {
            bpf_xdp_store_bytes(ctx, l3 as u32, hdrs, 40)
        };
        if r != 0 {
            return false;
        }
        if end < len && bpf_xdp_adjust_tail(ctx, end as i32 - len as i32) != 0 {
            return false;
        }
    }
    true
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

/// Unwatched traffic: a flow userspace follows (`follow_apps`, probe ports
/// only, one flag test when off); else probe new TCP flows to probe ports so
/// userspace can attribute them by SNI/Host (clients using encrypted DNS) or
/// follow them; pass the rest.
#[inline(always)]
fn unwatched(cfg: &Config, out: &Out, s: &mut Scratch) -> Lookup {
    let p = &s.parsed;
    if may_be_followed(cfg, p) {
        let dir = s
            .key
            .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        if let Some(st) = FLOWS.get_ptr_mut(&s.key) {
            return Lookup::Flow { st, dir };
        }
    }
    Lookup::Done(probe(cfg, out, s))
}

#[inline(always)]
fn probe(cfg: &Config, out: &Out, s: &mut Scratch) -> Counter {
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
        stamp: true,
        last: core::ptr::null_mut(),
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
        // SAFETY: plain helper call; it cannot fail.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let Some(ring) = RINGS.get(cpu) else {
            return false;
        };
        let Some(mut entry) = ring.reserve_untyped::<Rec<N>>(0) else {
            return false;
        };
        // Stamped once its slot is reserved, so a record whose stamp was read
        // is already in the ring (busy or committed): a reader that finds a
        // ring drained and nothing busy knows nothing older can still come
        // (`capture::merge`).
        let ts = if f.stamp { now() } else { UNSTAMPED };
        if !f.last.is_null() {
            // SAFETY: the flow's live FlowState field (flow_packet).
            unsafe { *f.last = ts };
        }
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
            (*h).ts_ns = ts;
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
        // Bulk records wait for the reader's poll; the query only runs for them.
        let wake = wakes_reader(f.kind, rflags, || {
            // SAFETY: `ring` is the inner map the verifier saw looked up above
            // (aya's BTF ring has no query method).
            unsafe {
                bpf_ringbuf_query(
                    core::ptr::from_ref(ring).cast_mut().cast(),
                    BPF_RB_AVAIL_DATA as u64,
                )
            }
        });
        entry.submit(if wake { 0 } else { BPF_RB_NO_WAKEUP as u64 });
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
    /// Whether the record carries the precise clock, read once its slot is
    /// reserved; else [`UNSTAMPED`].
    stamp: bool,
    /// Where the stamp also goes (a flow's `last_ns`), or null.
    last: *mut u64,
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
