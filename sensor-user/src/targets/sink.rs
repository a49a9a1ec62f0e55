//! Where the watched set and followed flows go: the kernel's maps (`run`),
//! or memory (`replay`, tests).

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use sensor_common::flow::{FlowKey, FlowState};

use crate::capture::watch::WatchMaps;

/// Where watched prefixes go: the kernel's tries, or a list in tests.
pub trait WatchSink {
    fn watch(&mut self, net: IpNet, service: u32) -> Result<(), String>;
    fn unwatch(&mut self, net: IpNet) -> Result<(), String>;
    /// Samples flow `key` from now on with state `st` (`follow_apps`; an
    /// existing entry is kept): live, the kernel's `FLOWS`; in replay, the
    /// sampler's table.
    fn follow(&mut self, key: &FlowKey, st: &FlowState) -> Result<(), String>;
    /// Whether `follow` reaches a running kernel, on the records' clock (so
    /// the time a follow took is worth measuring).
    fn live(&self) -> bool {
        false
    }
}

impl WatchSink for WatchMaps {
    fn watch(&mut self, net: IpNet, service: u32) -> Result<(), String> {
        self.insert(net, service).map_err(|e| e.to_string())
    }

    fn unwatch(&mut self, net: IpNet) -> Result<(), String> {
        self.remove(net).map_err(|e| e.to_string())
    }

    fn follow(&mut self, key: &FlowKey, st: &FlowState) -> Result<(), String> {
        self.insert_flow(key, st).map_err(|e| e.to_string())
    }

    fn live(&self) -> bool {
        true
    }
}

/// Watched prefixes kept in memory: for the offline replay (no kernel) and
/// tests; with the flows to follow, for the replay to hand its sampler.
#[derive(Debug, Default)]
pub struct MemoryWatch(pub HashMap<IpNet, u32>, pub Vec<(FlowKey, FlowState)>);

impl WatchSink for MemoryWatch {
    fn watch(&mut self, net: IpNet, service: u32) -> Result<(), String> {
        self.0.insert(net, service);
        Ok(())
    }

    fn unwatch(&mut self, net: IpNet) -> Result<(), String> {
        self.0.remove(&net);
        Ok(())
    }

    fn follow(&mut self, key: &FlowKey, st: &FlowState) -> Result<(), String> {
        self.1.push((*key, *st));
        Ok(())
    }
}

impl crate::capture::sampler::Watched for MemoryWatch {
    /// Longest matching prefix, as the kernel's LPM tries answer.
    fn service_of(&self, addr: IpAddr) -> Option<u32> {
        if let Some(s) = self.0.get(&IpNet::from(addr)) {
            return Some(*s);
        }
        self.0
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, s)| *s)
    }
}
