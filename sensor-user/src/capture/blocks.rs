//! The blocking maps of the XDP program (`sensor_common::block`): blocked flows,
//! quarantined (client, service) pairs, interface roles and the allow-list.
//! Userspace owns every entry: it inserts, expires and removes them.

use std::net::IpAddr;

use aya::maps::{
    HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use sensor_common::{
    block::{BlockEntry, QuarantineKey, ROLE_LAN, flow_bucket},
    flow::{FAMILY_V4, FAMILY_V6, FlowKey},
};

use super::watch::Bitmap;

/// Where blocks go: the kernel maps live, nowhere in replay.
pub trait BlockSink {
    fn block(&mut self, key: &FlowKey, entry: &BlockEntry) -> Result<(), String>;
    fn unblock(&mut self, key: &FlowKey) -> Result<(), String>;
    fn quarantine(&mut self, key: &QuarantineKey, entry: &BlockEntry) -> Result<(), String>;
    fn release(&mut self, key: &QuarantineKey) -> Result<(), String>;
}

/// Replay and tests: decisions are reported, nothing is enforced.
#[derive(Debug, Default)]
pub struct NoBlocks;

impl BlockSink for NoBlocks {
    fn block(&mut self, _: &FlowKey, _: &BlockEntry) -> Result<(), String> {
        Ok(())
    }
    fn unblock(&mut self, _: &FlowKey) -> Result<(), String> {
        Ok(())
    }
    fn quarantine(&mut self, _: &QuarantineKey, _: &BlockEntry) -> Result<(), String> {
        Ok(())
    }
    fn release(&mut self, _: &QuarantineKey) -> Result<(), String> {
        Ok(())
    }
}

/// The program's blocking maps.
pub struct BlockMaps {
    pub(super) blocked: HashMap<MapData, FlowKey, BlockEntry>,
    /// The prefilter in front of `blocked`, kept in step: entry first on
    /// insert, bit first on remove... and the reverse: the bit is set before
    /// the entry exists, so the program never misses a blocked flow.
    pub(super) bits: Bitmap,
    pub(super) quarantine: HashMap<MapData, QuarantineKey, BlockEntry>,
    pub(super) roles: HashMap<MapData, u32, u32>,
    pub(super) allow_v4: LpmTrie<MapData, [u8; 4], u8>,
    pub(super) allow_v6: LpmTrie<MapData, [u8; 16], u8>,
}

impl BlockMaps {
    /// Marks `ifindex` as a LAN interface (its clients can be blocked) or not.
    pub fn set_role(&mut self, ifindex: u32, lan: bool) -> Result<(), MapError> {
        if lan {
            self.roles.insert(ifindex, ROLE_LAN, 0)
        } else {
            match self.roles.remove(&ifindex) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }

    /// The kernel's entry for a blocked flow (with the RSTs it sent).
    pub fn entry(&self, key: &FlowKey) -> Option<BlockEntry> {
        self.blocked.get(key, 0).ok()
    }

    /// Clients in `net` are never blocked.
    pub fn allow(&mut self, net: IpNet) -> Result<(), MapError> {
        let net = net.trunc();
        match net {
            IpNet::V4(n) => {
                self.allow_v4
                    .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
            }
            IpNet::V6(n) => {
                self.allow_v6
                    .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
            }
        }
    }
}

impl BlockSink for BlockMaps {
    fn block(&mut self, key: &FlowKey, entry: &BlockEntry) -> Result<(), String> {
        let bucket = std::iter::once(flow_bucket(key));
        let is_new = self.blocked.get(key, 0).is_err();
        if is_new {
            self.bits
                .adjust(bucket.clone(), 1)
                .map_err(|e| e.to_string())?;
        }
        self.blocked.insert(key, entry, 0).map_err(|e| {
            if is_new {
                let _ = self.bits.adjust(bucket, -1);
            }
            e.to_string()
        })
    }

    fn unblock(&mut self, key: &FlowKey) -> Result<(), String> {
        match self.blocked.remove(key) {
            Ok(()) => self
                .bits
                .adjust(std::iter::once(flow_bucket(key)), -1)
                .map_err(|e| e.to_string()),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn quarantine(&mut self, key: &QuarantineKey, entry: &BlockEntry) -> Result<(), String> {
        self.quarantine
            .insert(key, entry, 0)
            .map_err(|e| e.to_string())
    }

    fn release(&mut self, key: &QuarantineKey) -> Result<(), String> {
        match self.quarantine.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The `QUARANTINE` key of a client and a service.
pub fn quarantine_key(client: IpAddr, service: u32) -> QuarantineKey {
    let mut k = QuarantineKey::zeroed();
    match client {
        IpAddr::V4(a) => {
            k.client[..4].copy_from_slice(&a.octets());
            k.family = FAMILY_V4;
        }
        IpAddr::V6(a) => {
            k.client = a.octets();
            k.family = FAMILY_V6;
        }
    }
    k.service = service;
    k
}
