//! The watched-prefix tries (`WATCH_V4`, `WATCH_V6`: prefix → service id) and the
//! prefilter bitmaps in front of them (`WATCH_BITS_V4`, `WATCH_BITS_V6`), kept in
//! step: a bucket's bit is set while at least one watched prefix covers it.

use std::collections::HashMap;

use aya::maps::{
    Array, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use sensor_common::{
    flow::{FlowKey, FlowState},
    watch::{BUCKETS, bit, buckets_v4, buckets_v6},
};

/// A prefilter bitmap: per-bucket counts mirrored into a kernel bitmap (one
/// family's watched prefixes; the blocked flows).
pub(super) struct Bitmap {
    map: Array<MapData, u64>,
    counts: Vec<u32>,
}

impl Bitmap {
    pub(super) fn new(map: Array<MapData, u64>) -> Self {
        Self {
            map,
            counts: vec![0; BUCKETS as usize],
        }
    }

    /// Adds `delta` (±1) to each bucket and rewrites the words whose bits changed.
    pub(super) fn adjust(
        &mut self,
        buckets: impl Iterator<Item = u32>,
        delta: i32,
    ) -> Result<(), MapError> {
        let mut dirty = Vec::new();
        for b in buckets {
            let c = &mut self.counts[b as usize];
            let was = *c > 0;
            *c = c.saturating_add_signed(delta);
            if was != (*c > 0) {
                dirty.push(bit(b).0);
            }
        }
        dirty.dedup();
        for word in dirty {
            let base = word * 64;
            let value = (0..64)
                .filter(|i| self.counts[(base + i) as usize] > 0)
                .fold(0u64, |w, i| w | 1 << i);
            self.map.set(word, value, 0)?;
        }
        Ok(())
    }
}

/// `BPF_NOEXIST` (linux/bpf.h): create only, keep an existing entry.
const BPF_NOEXIST: u64 = 1;

/// Both tries and their prefilters.
pub struct WatchMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    bits_v4: Bitmap,
    bits_v6: Bitmap,
    /// What is watched now, to keep bucket counts exact on replace and remove.
    entries: HashMap<IpNet, u32>,
    /// The kernel's `FLOWS`, where followed flows go (`follow_apps`).
    flows: Option<aya::maps::HashMap<MapData, FlowKey, FlowState>>,
}

impl WatchMaps {
    pub fn new(
        v4: LpmTrie<MapData, [u8; 4], u32>,
        v6: LpmTrie<MapData, [u8; 16], u32>,
        bits_v4: Array<MapData, u64>,
        bits_v6: Array<MapData, u64>,
    ) -> Self {
        Self {
            v4,
            v6,
            bits_v4: Bitmap::new(bits_v4),
            bits_v6: Bitmap::new(bits_v6),
            entries: HashMap::new(),
            flows: None,
        }
    }

    /// With the kernel's `FLOWS` map, for [`WatchMaps::insert_flow`].
    pub fn with_flows(mut self, flows: aya::maps::HashMap<MapData, FlowKey, FlowState>) -> Self {
        self.flows = Some(flows);
        self
    }

    /// Inserts a followed flow into `FLOWS`, keeping an entry the kernel made
    /// meanwhile (`BPF_NOEXIST`).
    pub fn insert_flow(&mut self, key: &FlowKey, st: &FlowState) -> Result<(), MapError> {
        let Some(flows) = self.flows.as_mut() else {
            return Ok(());
        };
        match flows.insert(key, st, BPF_NOEXIST) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            r => r,
        }
    }

    /// Watches `net` as `service` (replacing the service of an existing entry).
    pub fn insert(&mut self, net: IpNet, service: u32) -> Result<(), MapError> {
        let net = net.trunc();
        // Trie first, then the bit: the kernel never sees a set bit's prefix missing
        // for longer than this call, and never a watched prefix behind a clear bit.
        match net {
            IpNet::V4(n) => self.v4.insert(
                &Key::new(n.prefix_len().into(), n.addr().octets()),
                service,
                0,
            )?,
            IpNet::V6(n) => self.v6.insert(
                &Key::new(n.prefix_len().into(), n.addr().octets()),
                service,
                0,
            )?,
        }
        if self.entries.insert(net, service).is_none() {
            self.adjust_bits(net, 1)?;
        }
        Ok(())
    }

    /// Stops watching exactly `net`. Not watched: nothing to do.
    pub fn remove(&mut self, net: IpNet) -> Result<(), MapError> {
        let net = net.trunc();
        if self.entries.remove(&net).is_none() {
            return Ok(());
        }
        self.adjust_bits(net, -1)?;
        match net {
            IpNet::V4(n) => self
                .v4
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
            IpNet::V6(n) => self
                .v6
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
        }
    }

    fn adjust_bits(&mut self, net: IpNet, delta: i32) -> Result<(), MapError> {
        match net {
            IpNet::V4(n) => self
                .bits_v4
                .adjust(buckets_v4(n.addr().octets(), n.prefix_len()), delta),
            IpNet::V6(n) => self
                .bits_v6
                .adjust(buckets_v6(n.addr().octets(), n.prefix_len()), delta),
        }
    }
}
