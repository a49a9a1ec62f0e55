//! Names, sizes and key types of the XDP program's maps. Userspace finds maps by
//! these names and may resize the ones marked resizable before loading.

/// Ring buffer of records to userspace (byte size, power of two; resizable).
pub const EVENTS: &str = "EVENTS";
pub const DEFAULT_RING_BYTES: u32 = 8 * 1024 * 1024;

/// `LpmTrie<[u8; 4], u32>`: IPv4 prefix → service id (resizable).
pub const WATCH_V4: &str = "WATCH_V4";
/// `LpmTrie<[u8; 16], u32>`: IPv6 prefix → service id (resizable).
pub const WATCH_V6: &str = "WATCH_V6";
pub const DEFAULT_WATCH_ENTRIES: u32 = 131_072;
/// `Array<u64>` of `watch::BITMAP_WORDS`: IPv4 prefilter bitmap.
pub const WATCH_BITS_V4: &str = "WATCH_BITS_V4";
/// `Array<u64>` of `watch::BITMAP_WORDS`: IPv6 prefilter bitmap.
pub const WATCH_BITS_V6: &str = "WATCH_BITS_V6";

/// `LruHashMap<FlowKey, FlowState>` of watched flows (resizable).
pub const FLOWS: &str = "FLOWS";
pub const DEFAULT_FLOW_ENTRIES: u32 = 65_536;

/// `LruHashMap<FlowKey, u64>`: flows to probe ports whose SYN was seen:
/// `policy::PROBE_AWAITING` until the first payload, then the bytes of a split
/// TLS ClientHello still due.
pub const PROBE_PENDING: &str = "PROBE_PENDING";
pub const DEFAULT_PROBE_ENTRIES: u32 = 65_536;

/// `Array<Config>` with one entry.
pub const CONFIG: &str = "CONFIG";

/// `PerCpuArray<u64>` of `counters::STATS_ENTRIES` counters.
pub const STATS: &str = "STATS";

/// `PerCpuArray<Scratch>` with one entry: parsed headers and keys (the stack is small).
pub const SCRATCH: &str = "SCRATCH";

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "leakwatch";

/// Service id meaning "no service".
pub const NO_SERVICE: u32 = 0;
