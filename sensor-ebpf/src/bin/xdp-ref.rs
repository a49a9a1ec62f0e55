//! The benchmarks' reference for sampling: an XDP program that only reserves a
//! ring record of leakwatch's size, copies the same frame bytes into it the
//! same way and submits it. `cargo xtask bench` reports leakwatch's sampled
//! and DNS paths as a ratio to it: what leakwatch adds to handing a packet up.
#![no_std]
#![no_main]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya hands the program its context by value"
)]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_load_bytes,
    macros::{map, xdp},
    maps::RingBuf,
    programs::XdpContext,
};
use sensor_common::{
    maps::DEFAULT_RING_BYTES,
    record::{RecordHeader, SMALL_SNAPLEN, SNAPLEN},
};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[repr(C)]
struct Rec<const N: usize> {
    hdr: RecordHeader,
    data: [u8; N],
}

#[inline(always)]
fn copy<const N: usize>(ctx: &XdpContext, len: usize) {
    let Some(mut entry) = EVENTS.reserve::<Rec<N>>(0) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    let n = if len < N { len } else { N };
    // The same clamp as leakwatch's (see its emit_n).
    let want = (n.wrapping_sub(1) & (N - 1)) + 1;
    // SAFETY: the reserved record has N data bytes and want ≤ N.
    unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            (&raw mut (*rec).data).cast::<c_void>(),
            want as u32,
        );
    }
    entry.submit(0);
}

#[xdp(frags)]
pub fn xdp_ref(ctx: XdpContext) -> u32 {
    let len = ctx.data_end() - ctx.data();
    if len <= SMALL_SNAPLEN {
        copy::<SMALL_SNAPLEN>(&ctx, len);
    } else {
        copy::<SNAPLEN>(&ctx, len);
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
