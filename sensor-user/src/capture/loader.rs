//! Loads the XDP program, sizes and fills its maps, and attaches it to interfaces
//! through bpf_link, so the kernel detaches it when this process dies.

use std::{ffi::CString, fmt, io};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, ArrayOfMaps, MapData, MapError, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use sensor_common::{config::Config, maps};

use super::{
    blocks::BlockMaps,
    ring::{Ring, Rings},
    stats::Stats,
    watch::WatchMaps,
};

/// The XDP program object, built by build.rs.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leakwatch-xdp"));

/// An XDP program that only passes packets: the benchmarks' floor.
pub static NULL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-null"));

/// An XDP program that only copies the frame into a ring record and submits
/// it: the benchmarks' reference for the sampled paths.
pub static REF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-ref"));

/// How to attach: `auto` tries the driver (native) first, then generic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "leakwatch needs {0} to load and attach XDP programs (CAP_BPF, CAP_PERFMON and \
         CAP_NET_ADMIN; CAP_SYS_ADMIN stands for the first two): run it as root, or grant \
         them (the systemd unit does)"
    )]
    NotPrivileged(String),
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "interface {iface}: another XDP program is already attached; detach it \
         (`ip link set dev {iface} xdp off`) or choose another interface"
    )]
    AlreadyAttached { iface: String },
    #[error("interface {iface}: attaching XDP in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("loading the XDP object: {0}")]
    Object(#[from] EbpfError),
    #[error("the kernel rejected the XDP program: {0}")]
    Program(#[source] ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the XDP object has no {0} (built from another sensor-ebpf?)")]
    Missing(&'static str),
    #[error("reading {0}: {1}")]
    Cpus(&'static str, #[source] io::Error),
}

/// Map sizes chosen at load time.
#[derive(Clone, Debug)]
pub struct MapSizes {
    /// All ring buffers together (power of two, multiple of the page size),
    /// split over the CPUs by [`ring_share`].
    pub ring_bytes: u32,
    pub flow_entries: u32,
    pub watch_entries: u32,
    pub probe_entries: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            ring_bytes: maps::DEFAULT_RING_BYTES,
            flow_entries: maps::DEFAULT_FLOW_ENTRIES,
            watch_entries: maps::DEFAULT_WATCH_ENTRIES,
            probe_entries: maps::DEFAULT_PROBE_ENTRIES,
        }
    }
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// The mode the kernel accepted.
    pub mode: AttachMode,
    link: XdpLinkId,
}

/// The loaded program and its maps. Dropping it detaches every link.
pub struct Sensor {
    ebpf: Ebpf,
    rings: Option<Rings>,
    config: Option<KernelConfig>,
    attached: Vec<Attachment>,
}

/// The program's `CONFIG` map: the sampling policy and switches, replaced as
/// a whole (the program reads it per packet).
pub struct KernelConfig(Array<MapData, Config>);

impl KernelConfig {
    pub fn set(&mut self, config: &Config) -> Result<(), LoadError> {
        self.0.set(0, config, 0).map_err(|source| LoadError::Map {
            name: maps::CONFIG,
            source,
        })
    }
}

/// Interface index of `iface`, or a clear error.
pub fn ifindex(iface: &str) -> Result<u32, LoadError> {
    let name = CString::new(iface).map_err(|_| LoadError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: name is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(LoadError::NoSuchInterface(iface.to_owned())),
        i => Ok(i),
    }
}

impl Sensor {
    /// Loads `object` (normally [`XDP_OBJECT`]) into the kernel, where the verifier
    /// checks it, and writes `config`. Nothing is attached yet.
    pub fn load(object: &[u8], sizes: &MapSizes, config: &Config) -> Result<Self, LoadError> {
        let missing = super::privilege::missing();
        if !missing.is_empty() {
            return Err(LoadError::NotPrivileged(missing.join(", ")));
        }
        let possible = aya::util::nr_cpus().map_err(|(path, e)| LoadError::Cpus(path, e))?;
        let online = aya::util::online_cpus().map_err(|(path, e)| LoadError::Cpus(path, e))?;
        let slots = u32::try_from(possible).unwrap_or(maps::MAX_RING_CPUS);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::RINGS, slots.min(maps::MAX_RING_CPUS))
            .map_max_entries(maps::FLOWS, sizes.flow_entries)
            .map_max_entries(maps::WATCH_V4, sizes.watch_entries)
            .map_max_entries(maps::WATCH_V6, sizes.watch_entries)
            .map_max_entries(maps::PROBE_PENDING, sizes.probe_entries)
            .load(object)?;
        let prog: &mut Xdp = ebpf
            .program_mut(maps::PROGRAM)
            .ok_or(LoadError::Missing(maps::PROGRAM))?
            .try_into()
            .map_err(LoadError::Program)?;
        prog.load().map_err(LoadError::Program)?;
        let rings = fill_rings(&mut ebpf, &online, sizes.ring_bytes)?;
        let config_map = take(&mut ebpf, maps::CONFIG)?;
        let mut sensor = Self {
            ebpf,
            rings: Some(rings),
            config: Some(KernelConfig(config_map)),
            attached: Vec::new(),
        };
        sensor.set_config(config)?;
        Ok(sensor)
    }

    /// Replaces the sampling policy; the program uses it from its next packet on.
    pub fn set_config(&mut self, config: &Config) -> Result<(), LoadError> {
        self.config
            .as_mut()
            .ok_or(LoadError::Missing(maps::CONFIG))?
            .set(config)
    }

    /// The `CONFIG` map, for the pipeline's reloads. Once; `set_config` then
    /// fails.
    pub fn take_config(&mut self) -> Result<KernelConfig, LoadError> {
        self.config.take().ok_or(LoadError::Missing(maps::CONFIG))
    }

    /// Attaches to `iface`. With [`AttachMode::Auto`], native first, then generic.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment, LoadError> {
        let ifindex = ifindex(iface)?;
        let tries: &[AttachMode] = match mode {
            AttachMode::Auto => &[AttachMode::Native, AttachMode::Generic],
            AttachMode::Native => &[AttachMode::Native],
            AttachMode::Generic => &[AttachMode::Generic],
        };
        let prog = self.program_mut()?;
        for (i, &m) in tries.iter().enumerate() {
            let xdp_mode = if m == AttachMode::Native {
                XdpMode::Driver
            } else {
                XdpMode::Skb
            };
            match prog.attach_to_if_index(ifindex, xdp_mode) {
                Ok(link) => {
                    self.attached.push(Attachment {
                        iface: iface.to_owned(),
                        ifindex,
                        mode: m,
                        link,
                    });
                    let n = self.attached.len();
                    return Ok(&self.attached[n - 1]);
                }
                Err(e) if is_busy(&e) => {
                    return Err(LoadError::AlreadyAttached {
                        iface: iface.to_owned(),
                    });
                }
                Err(e) if i + 1 < tries.len() => {
                    log::debug!("interface {iface}: {m} XDP attach failed: {e}");
                }
                // The last mode's error is the one to report.
                Err(source) => {
                    return Err(LoadError::Attach {
                        iface: iface.to_owned(),
                        mode: m,
                        source,
                    });
                }
            }
        }
        unreachable!("every attach mode tries at least one XDP mode")
    }

    /// Detaches from every interface (also done on drop, and by the kernel when the
    /// process dies).
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.attached.drain(..).collect();
        if let Ok(prog) = self.program_mut() {
            for a in links {
                if let Err(e) = prog.detach(a.link) {
                    log::warn!("interface {}: detaching XDP: {e}", a.iface);
                }
            }
        }
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attached
    }

    /// The program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp, LoadError> {
        self.ebpf
            .program(maps::PROGRAM)
            .ok_or(LoadError::Missing(maps::PROGRAM))?
            .try_into()
            .map_err(LoadError::Program)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, LoadError> {
        self.ebpf
            .program_mut(maps::PROGRAM)
            .ok_or(LoadError::Missing(maps::PROGRAM))?
            .try_into()
            .map_err(LoadError::Program)
    }

    /// The per-CPU ring buffers, for [`super::ring::RingReader`]. Once.
    pub fn take_rings(&mut self) -> Result<Rings, LoadError> {
        self.rings.take().ok_or(LoadError::Missing(maps::RINGS))
    }

    /// The per-CPU counters. Once.
    pub fn take_stats(&mut self) -> Result<Stats, LoadError> {
        let map: PerCpuArray<MapData, u64> = take(&mut self.ebpf, maps::STATS)?;
        Ok(Stats::new(map))
    }

    /// The blocking maps. Once.
    pub fn take_blocks(&mut self) -> Result<BlockMaps, LoadError> {
        use sensor_common::block;
        Ok(BlockMaps {
            blocked: take(&mut self.ebpf, block::BLOCKED)?,
            bits: super::watch::Bitmap::new(take(&mut self.ebpf, block::BLOCK_BITS)?),
            quarantine: take(&mut self.ebpf, block::QUARANTINE)?,
            roles: take(&mut self.ebpf, block::IFACE_ROLES)?,
            allow_v4: take(&mut self.ebpf, block::ALLOW_V4)?,
            allow_v6: take(&mut self.ebpf, block::ALLOW_V6)?,
        })
    }

    /// The watched-prefix tries and their prefilter bitmaps. Once.
    pub fn take_watch(&mut self) -> Result<WatchMaps, LoadError> {
        Ok(WatchMaps::new(
            take(&mut self.ebpf, maps::WATCH_V4)?,
            take(&mut self.ebpf, maps::WATCH_V6)?,
            take(&mut self.ebpf, maps::WATCH_BITS_V4)?,
            take(&mut self.ebpf, maps::WATCH_BITS_V6)?,
        ))
    }

    /// The flow table (`FLOWS`), where followed flows are inserted. Once.
    pub fn take_flows(
        &mut self,
    ) -> Result<
        aya::maps::HashMap<MapData, sensor_common::flow::FlowKey, sensor_common::flow::FlowState>,
        LoadError,
    > {
        take(&mut self.ebpf, maps::FLOWS)
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Each ring's share of `total` bytes over `cpus` rings: a power of two (the
/// kernel's rule), rounded down, and at least one `page`.
pub fn ring_share(total: u32, cpus: usize, page: u32) -> u32 {
    let each = total / u32::try_from(cpus.max(1)).unwrap_or(u32::MAX);
    match each.checked_ilog2() {
        Some(bits) => (1u32 << bits).max(page),
        None => page,
    }
}

/// The `ring_bytes` that gives every online CPU's ring `each` bytes (tests
/// and benchmarks size the ring of the CPU they run on).
pub fn ring_bytes_for_each(each: u32) -> u32 {
    let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
    each.saturating_mul(u32::try_from(cpus.next_power_of_two()).unwrap_or(u32::MAX))
}

/// Which of the rings (one per `online` CPU, in that order) CPU `slot`
/// writes into: its own, or for a CPU that is offline now, one picked by
/// its id, so a few that come online later spread over the rings.
fn ring_of(slot: u32, online: &[u32]) -> Option<usize> {
    let n = u32::try_from(online.len()).ok().filter(|n| *n > 0)?;
    online
        .iter()
        .position(|cpu| *cpu == slot)
        .or(Some((slot % n) as usize))
}

/// Creates a ring per online CPU and points every slot of `RINGS` at one: its
/// CPU's, or for a CPU that is possible but offline (it may come online
/// later), an online CPU's ring, shared (a ring takes any number of producers).
fn fill_rings(ebpf: &mut Ebpf, online: &[u32], total: u32) -> Result<Rings, LoadError> {
    use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF;
    let page = u32::try_from(super::ring::page_size()).unwrap_or(u32::MAX);
    let each = ring_share(total, online.len(), page);
    let err = |source| LoadError::Map {
        name: maps::RINGS,
        source,
    };
    let mut created = Vec::with_capacity(online.len());
    for cpu in online {
        let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF as u32, 0, 0, each, 0);
        created.push(MapData::create(def, &format!("lw_ring{cpu}"), None).map_err(err)?);
    }
    let mut outer: ArrayOfMaps<&mut MapData, MapData> = ebpf
        .map_mut(maps::RINGS)
        .ok_or(LoadError::Missing(maps::RINGS))?
        .try_into()
        .map_err(err)?;
    for slot in 0..outer.len() {
        if let Some(map) = ring_of(slot, online).and_then(|i| created.get(i)) {
            outer.set(slot, map, 0).map_err(err)?;
        }
    }
    let rings = created
        .into_iter()
        .map(Ring::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok(Rings::new(rings))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// The kernel answers EBUSY (link over an attached program) or EEXIST (native and
/// generic at once) when another XDP program holds the interface.
fn is_busy(e: &ProgramError) -> bool {
    let io = match e {
        ProgramError::SyscallError(s) => Some(&s.io_error),
        _ => None,
    };
    io.and_then(io::Error::raw_os_error)
        .is_some_and(|c| c == libc::EBUSY || c == libc::EEXIST)
}

#[cfg(test)]
mod tests {
    use super::{ring_of, ring_share};

    #[test]
    fn every_cpu_writes_into_its_own_ring_or_an_online_ones() {
        // CPUs 0, 1 and 3 online, 2 and 4–7 possible but offline.
        let online = [0, 1, 3];
        let rings: Vec<_> = (0..8).map(|slot| ring_of(slot, &online)).collect();
        assert_eq!(rings[0], Some(0));
        assert_eq!(rings[1], Some(1));
        assert_eq!(rings[3], Some(2));
        // Offline ones share, spread by id.
        assert_eq!(rings[2], Some(2));
        assert_eq!(rings[4], Some(1));
        assert_eq!(rings[5], Some(2));
        assert_eq!(rings[6], Some(0));
        assert_eq!(ring_of(0, &[]), None);
    }

    #[test]
    fn rings_share_the_total_in_powers_of_two_of_at_least_a_page() {
        const MIB: u32 = 1 << 20;
        assert_eq!(ring_share(8 * MIB, 1, 4096), 8 * MIB);
        assert_eq!(ring_share(8 * MIB, 2, 4096), 4 * MIB);
        // Rounded down: three CPUs get 2 MiB each, within the total.
        assert_eq!(ring_share(8 * MIB, 3, 4096), 2 * MIB);
        assert_eq!(ring_share(8 * MIB, 64, 65536), 128 * 1024);
        // Never under a page, even when the total is.
        assert_eq!(ring_share(4096, 2, 4096), 4096);
        assert_eq!(ring_share(8 * MIB, 4096, 65536), 65536);
        assert_eq!(ring_share(8 * MIB, 0, 4096), 8 * MIB);
    }
}
