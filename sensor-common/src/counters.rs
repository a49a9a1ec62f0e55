//! Per-CPU counters of the XDP program, one slot per reason, per interface slot.
//!
//! *Outcomes* are exclusive: every packet ends in exactly one, so their sum is the
//! packet count. *Notes* count side events (a truncated capture) on top.

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $outcome:literal; )*) => {
        /// Index of a counter inside one interface's block of the `STATS` map.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// The `reason` label value.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// Whether this counter is an exclusive per-packet outcome.
            pub const fn is_outcome(self) -> bool {
                match self { $(Counter::$variant => $outcome,)* }
            }
        }
    };
}

counters! {
    /// No config of the right version in `CONFIG` yet: passed untouched.
    Unconfigured = "unconfigured", true;
    /// Frame shorter than an Ethernet header.
    ShortEthernet = "short_ethernet", true;
    /// More than two VLAN tags.
    VlanTooDeep = "vlan_too_deep", true;
    /// Neither IPv4 nor IPv6 (ARP, LLDP, …).
    NotIp = "not_ip", true;
    /// IPv4 header truncated or invalid (IHL < 5, total length too small).
    BadIpv4 = "bad_ipv4", true;
    /// IPv6 header or an extension header truncated.
    BadIpv6 = "bad_ipv6", true;
    /// Non-first IPv4 fragment: no L4 header to read.
    Ipv4Fragment = "ipv4_fragment", true;
    /// Non-first IPv6 fragment.
    Ipv6Fragment = "ipv6_fragment", true;
    /// More IPv6 extension headers than the parser follows.
    Ipv6ExtTooDeep = "ipv6_ext_too_deep", true;
    /// Not TCP or UDP (ICMP, ESP, …).
    NotTcpUdp = "not_tcp_udp", true;
    /// TCP/UDP header truncated or invalid (data offset < 5).
    BadL4 = "bad_l4", true;
    /// Parsed, neither watched nor DNS nor probed.
    Unwatched = "unwatched", true;
    /// DNS answer handed to userspace.
    DnsAnswer = "dns_answer", true;
    /// SYN to a probe port remembered for probing.
    ProbeSyn = "probe_syn", true;
    /// First client payload of a new flow to a probe port handed to userspace.
    Probe = "probe", true;
    /// Watched flow, no payload and no control flag worth reporting (pure ACK).
    WatchedNoPayload = "watched_no_payload", true;
    /// Watched flow payload within the head budget, handed to userspace.
    SampledHead = "sampled_head", true;
    /// Watched flow payload past the budget, picked by the 1-in-K rule.
    SampledTail = "sampled_tail", true;
    /// TLS flow after its hello: 1-in-K metadata record.
    TlsMeta = "tls_meta", true;
    /// SYN/FIN/RST of a watched flow without sampled payload: metadata record.
    Control = "control", true;
    /// Watched flow payload past the budget and not picked.
    OverBudget = "over_budget", true;
    /// The ring buffer was full: the record was lost.
    RingFull = "ring_full", true;
    /// The flow table refused a new entry.
    FlowInsertFailed = "flow_insert_failed", true;
    /// A bare SYN to a watched address: remembered, not tracked or recorded
    /// until the SYN-ACK or the flow's next packet (`sensor_common::admit`).
    SynDeferred = "syn_deferred", true;
    /// A new watched flow over its client address's budget of new flows per
    /// second: passed, not tracked or sampled.
    SourceBudget = "source_budget", true;
    /// A tunnel header (GRE, ERSPAN, VXLAN) truncated or with fields the
    /// parser does not follow (GRE version or routing).
    BadTunnel = "bad_tunnel", true;
    /// A tunnel inside a tunnel: only one level is looked through.
    TunnelTooDeep = "tunnel_too_deep", true;
    /// A tunnelled packet in the first fragment of its outer datagram, cut
    /// short: replay reassembles outer fragments, the kernel does not.
    TunnelFragment = "tunnel_fragment", true;
    /// A client packet of a blocked flow (or of a flow whose cleartext was
    /// refused), dropped.
    BlockedDrop = "blocked_drop", true;
    /// The client's first packet after its flow was blocked, answered with a TCP
    /// RST in its place (XDP_TX).
    BlockedRst = "blocked_rst", true;
    /// The first client payload of a new flow that is not TLS, to an address
    /// with the `block-cleartext` policy or from a quarantined client: sampled,
    /// then answered with a TCP RST in its place (dropped if no RST could be built).
    CleartextDrop = "cleartext_drop", true;
    /// Note: a record carries fewer frame bytes than the frame had (SNAPLEN).
    SnapTruncated = "snap_truncated", false;
    /// Note: an RST could not be built in a blocked packet's place (no ACK in
    /// the trigger, an encapsulation it cannot be written into, a helper
    /// failure): the packet was dropped instead.
    RstFailed = "rst_failed", false;
    /// Note: `dry-run` policy: the packet would have been dropped, and passed.
    WouldBlock = "would_block", false;
    /// Note: a cleartext refusal did not apply because the flow was first seen
    /// mid-stream (it raced its DNS answer or the policy): it passed.
    CleartextRace = "cleartext_race", false;
}

/// Number of counters per interface slot.
pub const NUM_COUNTERS: usize = Counter::ALL.len();

/// Interface slots in `STATS`: slot = ifindex % MAX_IFACE_SLOTS. Userspace labels a
/// slot shared by two attached interfaces with both names.
pub const MAX_IFACE_SLOTS: usize = 64;

/// Entries of the `STATS` per-CPU array.
pub const STATS_ENTRIES: usize = NUM_COUNTERS * MAX_IFACE_SLOTS;

/// Index of `counter` for interface `ifindex` in `STATS`.
#[inline(always)]
pub const fn stats_index(ifindex: u32, counter: Counter) -> u32 {
    (ifindex % MAX_IFACE_SLOTS as u32) * NUM_COUNTERS as u32 + counter as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for d in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), d.name());
            }
        }
        assert!((stats_index(u32::MAX, Counter::CleartextRace) as usize) < STATS_ENTRIES);
    }
}
