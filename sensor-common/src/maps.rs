//! Names, sizes and key types of the XDP program's maps. Userspace finds maps by
//! these names and may resize the ones marked resizable before loading.

/// `ArrayOfMaps` of ring buffers, indexed by CPU id: records to userspace, one
/// ring per CPU so producers never share a ring's lock. The loader creates the
/// rings and fills every slot before the program can run; a slot it left empty
/// counts `ring_full` (no room, as a full ring).
pub const RINGS: &str = "RINGS";
/// The size of `RINGS` in the object; the loader sets it to the possible CPUs.
pub const MAX_RING_CPUS: u32 = 4096;
/// The inner-map template's byte size (the kernel checks every ring against the
/// template's type and flags, not its size): a power of two that is a whole
/// number of pages for 4, 16 and 64 KiB pages.
pub const RING_TEMPLATE_BYTES: u32 = 64 * 1024;
/// All rings together (`--ring-bytes`), split evenly over the CPUs.
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
