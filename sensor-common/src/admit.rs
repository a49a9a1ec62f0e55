//! Which packets of a flow not yet tracked may start tracking it: the defence
//! against floods, shared by the XDP program and replay's sampler.
//!
//! - A bare SYN (SYN without ACK) creates no `FLOWS` entry and no record: it is
//!   remembered in `SYN_PENDING` (a small LRU of its own, which a SYN flood may
//!   churn without touching `FLOWS` or the ring) and counted `syn_deferred`. The
//!   SYN-ACK or the first other packet starts the flow; a remembered SYN makes
//!   it "seen from its handshake" (`flow_flags::OPENED`).
//! - Each client address (IPv6: each /64, which one host can fill with
//!   addresses) may start at most `Config::new_flows_per_source` watched
//!   flows per second (0: no limit); beyond it new flows are counted
//!   `source_budget` and not tracked, so one flooding host cannot push the
//!   others' flows out of `FLOWS` or their records out of the ring.

use crate::parse::{Parsed, TCP_ACK, TCP_SYN};

/// `LruHashMap<SourceKey, SourceBudget>`: new watched flows per client address
/// in the current one-second window.
pub const SOURCES: &str = "SOURCES";
pub const DEFAULT_SOURCE_ENTRIES: u32 = 65_536;
/// `LruHashMap<FlowKey, u64>`: bare SYNs to watched addresses (their time),
/// until the flow's next packet.
pub const SYN_PENDING: &str = "SYN_PENDING";
pub const DEFAULT_SYN_ENTRIES: u32 = 65_536;

/// The budget's window.
pub const WINDOW_NS: u64 = 1_000_000_000;
/// New watched flows per client address per second an admin gets by default.
pub const DEFAULT_NEW_FLOWS_PER_SOURCE: u32 = 1000;

/// A client address. 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// 0: address, network order; IPv4 in the first 4 bytes, rest 0.
    pub addr: [u8; 16],
    /// 16: `flow::FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// 17: zero; keeps hash keys fully initialised.
    pub _pad: [u8; 3],
}

impl SourceKey {
    /// The budget's key for a client address: IPv4 as is, IPv6 its /64.
    #[inline(always)]
    pub fn set(&mut self, addr: &[u8; 16], family: u8) {
        self.addr = *addr;
        if family != crate::flow::FAMILY_V4 {
            // Constant indices: nothing for the verifier to check.
            self.addr[8] = 0;
            self.addr[9] = 0;
            self.addr[10] = 0;
            self.addr[11] = 0;
            self.addr[12] = 0;
            self.addr[13] = 0;
            self.addr[14] = 0;
            self.addr[15] = 0;
        }
        self.family = family;
        self._pad = [0; 3];
    }
}

/// One address's new flows in its current window. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceBudget {
    /// 0: start of the window (monotonic ns).
    pub window_ns: u64,
    /// 8: flows started in it.
    pub count: u32,
    /// 12: zero.
    pub _pad: u32,
}

impl SourceBudget {
    /// Whether one more new flow fits `per_second` (0: always), counting it if so.
    #[inline(always)]
    pub fn admit(&mut self, now_ns: u64, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        if now_ns.wrapping_sub(self.window_ns) >= WINDOW_NS {
            self.window_ns = now_ns;
            self.count = 0;
        }
        if self.count >= per_second {
            return false;
        }
        self.count += 1;
        true
    }
}

/// A SYN without ACK: the client's first packet, which starts nothing yet.
#[inline(always)]
pub fn is_bare_syn(p: &Parsed) -> bool {
    // Spelled out rather than through `bare_syn`: the program's code from
    // that form had the verifier refuse it (`R1 !read_ok`, an undefined
    // register LLVM spilled on another path).
    p.is_tcp() && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// [`is_bare_syn`] from a record's protocol and TCP flags
/// (`RecordHeader::is_bare_syn`).
#[inline(always)]
pub fn bare_syn(proto: u8, tcp_flags: u8) -> bool {
    proto == crate::flow::IPPROTO_TCP && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Whether a new flow starting with this packet was seen from its handshake:
/// a SYN-ACK, or any packet after a remembered SYN.
#[inline(always)]
pub fn opened(p: &Parsed, syn_seen: bool) -> bool {
    p.is_tcp() && (p.tcp_flags & TCP_SYN != 0 || syn_seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(core::mem::size_of::<SourceKey>(), 20);
        assert_eq!(core::mem::size_of::<SourceBudget>(), 16);
    }

    #[test]
    fn a_source_gets_its_budget_per_window() {
        let mut b = SourceBudget::default();
        let t0 = 5 * WINDOW_NS;
        for _ in 0..3 {
            assert!(b.admit(t0, 3));
        }
        assert!(!b.admit(t0 + 1, 3), "the fourth in the window");
        assert!(!b.admit(t0 + WINDOW_NS - 1, 3));
        assert!(b.admit(t0 + WINDOW_NS, 3), "a new window");
        assert_eq!(b.count, 1);
        let mut unlimited = SourceBudget::default();
        for _ in 0..10_000 {
            assert!(unlimited.admit(t0, 0));
        }
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let mut a = SourceKey::default();
        let mut b = SourceKey::default();
        let mut x = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
        ];
        a.set(&x, crate::flow::FAMILY_V6);
        x[15] = 0x99;
        x[9] = 0x77;
        b.set(&x, crate::flow::FAMILY_V6);
        assert_eq!(a, b);
        x[7] = 1;
        b.set(&x, crate::flow::FAMILY_V6);
        assert_ne!(a, b, "another /64");
        let v4 = [192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a.set(&v4, crate::flow::FAMILY_V4);
        assert_eq!(a.addr, v4);
    }

    #[test]
    fn only_a_bare_syn_waits() {
        let mut p = Parsed {
            proto: crate::flow::IPPROTO_TCP,
            tcp_flags: TCP_SYN,
            ..Parsed::zeroed()
        };
        assert!(is_bare_syn(&p) && opened(&p, false));
        p.tcp_flags = TCP_SYN | TCP_ACK;
        assert!(!is_bare_syn(&p) && opened(&p, false));
        p.tcp_flags = TCP_ACK;
        assert!(!is_bare_syn(&p) && !opened(&p, false) && opened(&p, true));
        p.proto = crate::flow::IPPROTO_UDP;
        assert!(!is_bare_syn(&p) && !opened(&p, true));
        // The record form says the same for every protocol and flag byte.
        for proto in [crate::flow::IPPROTO_TCP, crate::flow::IPPROTO_UDP] {
            for tcp_flags in 0..=u8::MAX {
                p.proto = proto;
                p.tcp_flags = tcp_flags;
                assert_eq!(bare_syn(proto, tcp_flags), is_bare_syn(&p));
            }
        }
    }
}
