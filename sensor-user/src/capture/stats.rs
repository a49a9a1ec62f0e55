//! Reads the XDP program's per-CPU counters, summed over CPUs.

use aya::maps::{MapData, MapError, PerCpuArray};
use sensor_common::counters::{Counter, stats_index};

/// The `STATS` map.
pub struct Stats {
    map: PerCpuArray<MapData, u64>,
}

impl Stats {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    /// Sum over CPUs of `counter` for interface `ifindex`.
    pub fn get(&self, ifindex: u32, counter: Counter) -> Result<u64, MapError> {
        let values = self.map.get(&stats_index(ifindex, counter), 0)?;
        Ok(values.iter().sum())
    }

    /// Every counter of interface `ifindex`, in [`Counter::ALL`] order.
    pub fn snapshot(&self, ifindex: u32) -> Result<Vec<(Counter, u64)>, MapError> {
        Counter::ALL
            .iter()
            .map(|&c| Ok((c, self.get(ifindex, c)?)))
            .collect()
    }
}
