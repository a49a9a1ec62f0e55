//! leakwatch's XDP program.
//!
//! Parses L2–L4 with the shared parser ([`sensor_common::parse`]), keeps only what
//! userspace needs, and hands it up through one ring buffer:
//!
//! ```text
//! frame ─ parse ─┬─ error ─────────────────────────────── counter, PASS
//!                ├─ DNS answer (from :53) ───────────────── ring: Dns
//!                ├─ src or dst in WATCH_V4/WATCH_V6 ─ FLOWS ─ policy ─ ring: Sample/Meta
//!                ├─ new TCP flow to a probe port ─ PROBE_PENDING ─ ring: Probe
//!                └─ else ─────────────────────────────────── counter, PASS
//! ```
//!
//! Every path ends in exactly one outcome counter. The verdict is always XDP_PASS:
//! a passive sensor never harms traffic; blocking will be decided in [`verdict`].
#![no_std]
#![no_main]

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
    policy::{Decision, client_dir, is_dns_answer, watched_packet},
    record::{HEADER_LEN, RECORD_VERSION, RecordHeader, RecordKind, SNAPLEN, flags},
};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "WATCH_V4")]
static WATCH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

#[map(name = "WATCH_V6")]
static WATCH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_WATCH_ENTRIES, 0);

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

/// Per-CPU working memory: the parsed headers, the flow key and the record under
/// construction together are far bigger than the 512-byte stack.
#[repr(C, align(8))]
struct Scratch {
    parsed: Parsed,
    key: FlowKey,
    new_flow: FlowState,
    /// `hdr` and `data` are contiguous (HEADER_LEN is a multiple of 8): one record.
    hdr: RecordHeader,
    data: [u8; SNAPLEN],
}

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

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
    len: usize,
}

impl PacketBytes for Frame<'_> {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len
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
                buf.as_mut_ptr() as *mut c_void,
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
    // SAFETY: plain helper call on this program's context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let frame = Frame { ctx, len };
    if let Err(c) = parse_into(&frame, &mut s.parsed) {
        return c;
    }
    let p = &s.parsed;
    let dir = s
        .key
        .set_from_packet(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
    let out = Out {
        ctx,
        frame: &frame,
        ifindex,
        dir,
    };

    if is_dns_answer(cfg, p, || frame.peek(p.payload_off as usize)) {
        return out.emit(
            s,
            RecordKind::Dns,
            0,
            NO_SERVICE,
            (0, 0),
            Counter::DnsAnswer,
        );
    }

    let src_svc = watched(p, &p.src);
    let dst_svc = watched(p, &p.dst);
    let service = match (dst_svc, src_svc) {
        (Some(svc), _) | (None, Some(svc)) => svc,
        (None, None) => return unwatched(cfg, &out, s),
    };

    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let st = match FLOWS.get_ptr_mut(&s.key) {
        Some(st) => st,
        None => {
            let cdir = client_dir(p, dir, src_svc.is_some(), dst_svc.is_some());
            s.new_flow = FlowState::new(service, cdir, now);
            // NOEXIST: if another CPU created the flow meanwhile, keep its entry.
            let _ = FLOWS.insert(&s.key, &s.new_flow, BPF_NOEXIST as u64);
            match FLOWS.get_ptr_mut(&s.key) {
                Some(st) => st,
                None => return Counter::FlowInsertFailed,
            }
        }
    };
    // SAFETY: a live LRU entry; see FlowState for why plain stores are fine.
    let st = unsafe { &mut *st };
    match watched_packet(cfg, st, dir, p, now, || frame.peek(p.payload_off as usize)) {
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
            out.emit(s, kind, flags, st.service, counts, counter)
        }
    }
}

/// Service id of the watched prefix containing `addr`, if any.
#[inline(always)]
fn watched(p: &Parsed, addr: &[u8; 16]) -> Option<u32> {
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
    if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        // A full LRU evicts the oldest pending SYN; nothing to count.
        let _ = PROBE_PENDING.insert(&s.key, &now, 0);
        return Counter::ProbeSyn;
    }
    if p.payload_len == 0 || PROBE_PENDING.get_ptr(&s.key).is_none() {
        return Counter::Unwatched;
    }
    // Only the first payload: later segments find no pending entry.
    let _ = PROBE_PENDING.remove(&s.key);
    out.emit(
        s,
        RecordKind::Probe,
        flags::FROM_CLIENT | flags::FIRST_PAYLOAD,
        NO_SERVICE,
        (0, 0),
        Counter::Probe,
    )
}

/// What every record of this packet shares.
struct Out<'a> {
    ctx: &'a XdpContext,
    frame: &'a Frame<'a>,
    ifindex: u32,
    dir: u8,
}

impl Out<'_> {
    /// Builds the record in the scratch slot and copies it to the ring. Returns
    /// `counter` on success, `RingFull` when the ring had no room.
    #[inline(always)]
    fn emit(
        &self,
        s: &mut Scratch,
        kind: RecordKind,
        mut rflags: u16,
        service: u32,
        dir_counts: (u64, u64),
        counter: Counter,
    ) -> Counter {
        let p = &s.parsed;
        if p.vlan {
            rflags |= flags::VLAN;
        }
        if p.first_fragment {
            rflags |= flags::IP_FRAGMENT;
        }
        let mut cap = 0usize;
        if kind != RecordKind::Meta {
            let n = if self.frame.len < SNAPLEN {
                self.frame.len
            } else {
                SNAPLEN
            };
            // Clamp into [1, SNAPLEN] with a mask the verifier can follow (a plain
            // `n == 0` test gets rewritten by LLVM into a form it rejects).
            let want = (n.wrapping_sub(1) & (SNAPLEN - 1)) + 1;
            // bpf_xdp_load_bytes copies across XDP fragments.
            // SAFETY: data has SNAPLEN bytes and want ≤ SNAPLEN.
            let r = unsafe {
                bpf_xdp_load_bytes(
                    self.ctx.ctx,
                    0,
                    s.data.as_mut_ptr() as *mut c_void,
                    want as u32,
                )
            };
            if r == 0 {
                cap = want;
            }
            if cap < self.frame.len {
                rflags |= flags::TRUNCATED;
                count(self.ifindex, Counter::SnapTruncated);
            }
        }
        // Every field is written, one by one (a RecordHeader temporary would live on
        // the stack): the slot still holds the previous record.
        let h = &mut s.hdr;
        h.version = RECORD_VERSION;
        h.kind = kind as u8;
        h.flags = rflags;
        h.ifindex = self.ifindex;
        // SAFETY: plain helper call.
        h.ts_ns = unsafe { bpf_ktime_get_ns() };
        h.flow = s.key;
        h.service = service;
        h.direction = self.dir;
        h.tcp_flags = p.tcp_flags;
        h.l3_off = p.l3_off;
        h.l4_off = p.l4_off;
        h.payload_off = p.payload_off;
        h.tcp_seq = p.tcp_seq;
        h.tcp_ack = p.tcp_ack;
        h.pkt_len = self.frame.len as u32;
        h.cap_len = cap as u32;
        h.payload_len = p.payload_len;
        h.dir_bytes = dir_counts.0;
        h.dir_pkts = dir_counts.1;
        // SAFETY: hdr is followed by data in this repr(C) struct without padding, and
        // HEADER_LEN + cap ≤ HEADER_LEN + SNAPLEN.
        let bytes = unsafe {
            core::slice::from_raw_parts((&raw const s.hdr).cast::<u8>(), HEADER_LEN + cap)
        };
        match EVENTS.output::<[u8]>(bytes, 0) {
            Ok(()) => counter,
            Err(_) => Counter::RingFull,
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
