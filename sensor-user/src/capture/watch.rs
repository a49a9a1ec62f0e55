//! The watched-prefix tries (`WATCH_V4`, `WATCH_V6`): prefix → service id.

use aya::maps::{
    MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;

/// Both tries.
pub struct WatchMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
}

impl WatchMaps {
    pub fn new(v4: LpmTrie<MapData, [u8; 4], u32>, v6: LpmTrie<MapData, [u8; 16], u32>) -> Self {
        Self { v4, v6 }
    }

    /// Watches `net` as `service` (replacing an earlier entry for the same prefix).
    pub fn insert(&mut self, net: IpNet, service: u32) -> Result<(), MapError> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(
                &Key::new(n.prefix_len().into(), n.addr().octets()),
                service,
                0,
            ),
            IpNet::V6(n) => self.v6.insert(
                &Key::new(n.prefix_len().into(), n.addr().octets()),
                service,
                0,
            ),
        }
    }

    /// Stops watching exactly `net`.
    pub fn remove(&mut self, net: IpNet) -> Result<(), MapError> {
        match net.trunc() {
            IpNet::V4(n) => self
                .v4
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
            IpNet::V6(n) => self
                .v6
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
        }
    }
}
