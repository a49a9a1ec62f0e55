//! The sampling policy userspace writes into the `CONFIG` array map (index 0).

/// Layout version of [`Config`]; the XDP program passes everything untouched
/// (counted as `unconfigured`) until userspace wrote a config of this version.
pub const CONFIG_VERSION: u32 = 2;

/// How many probe ports [`Config::probe_ports`] holds.
pub const MAX_PROBE_PORTS: usize = 8;

/// Defaults an admin gets without configuration.
pub const DEFAULT_HEAD_BYTES: u32 = 16 * 1024;
pub const DEFAULT_TAIL_EVERY: u32 = 64;
pub const DEFAULT_PROBE_PORTS: [u16; 3] = [80, 443, 8080];

/// Bits of [`Config::flags`].
pub mod config_flags {
    /// Hand DNS answers (from port 53) to userspace.
    pub const DNS: u32 = 1 << 0;
    /// Hand the first payload of new TCP flows to probe ports to userspace.
    pub const PROBE: u32 = 1 << 1;
    /// Blocking is on: consult the block maps (`sensor_common::block`). Off, the
    /// program never drops and never looks them up.
    pub const BLOCK: u32 = 1 << 2;
    /// Follow apps (`follow_apps`): packets of unwatched TCP flows on a probe
    /// port (either end) are looked up in `FLOWS`, where userspace inserts
    /// the flows it follows (`policy::followed_flow`). Off, unwatched traffic
    /// never reaches that lookup.
    pub const FOLLOW: u32 = 1 << 3;
}

/// What the XDP program does with what it sees. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 0: [`CONFIG_VERSION`].
    pub version: u32,
    /// 4: payload bytes sampled at the start of each direction of a watched flow
    /// (TCP and UDP alike).
    pub head_bytes: u32,
    /// 8: after the head budget, 1 in `tail_every` packets per direction is sampled
    /// (0: none).
    pub tail_every: u32,
    /// 12: [`config_flags`] bits.
    pub flags: u32,
    /// 16: TCP destination ports whose new flows are probed (0: unused slot).
    pub probe_ports: [u16; MAX_PROBE_PORTS],
    /// 32: new watched flows a client address may start per second (0: no
    /// limit; see [`crate::admit`]).
    pub new_flows_per_source: u32,
    /// 36: UDP port whose VXLAN packets are looked into (0: none).
    pub vxlan_port: u16,
    /// 38: zero.
    pub _pad: u16,
}

impl Default for Config {
    fn default() -> Self {
        let mut probe_ports = [0; MAX_PROBE_PORTS];
        let mut i = 0;
        while i < DEFAULT_PROBE_PORTS.len() {
            probe_ports[i] = DEFAULT_PROBE_PORTS[i];
            i += 1;
        }
        Self {
            version: CONFIG_VERSION,
            head_bytes: DEFAULT_HEAD_BYTES,
            tail_every: DEFAULT_TAIL_EVERY,
            flags: config_flags::DNS | config_flags::PROBE,
            probe_ports,
            new_flows_per_source: crate::admit::DEFAULT_NEW_FLOWS_PER_SOURCE,
            vxlan_port: crate::tunnel::VXLAN_PORT,
            _pad: 0,
        }
    }
}

impl Config {
    /// Whether `port` is one of the probe ports. Bounded loop over a fixed array.
    #[inline(always)]
    pub fn is_probe_port(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_PROBE_PORTS {
            if port != 0 && self.probe_ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_defaults() {
        assert_eq!(core::mem::size_of::<Config>(), 40);
        assert_eq!(core::mem::offset_of!(Config, probe_ports), 16);
        let c = Config::default();
        assert!(c.is_probe_port(443) && c.is_probe_port(8080));
        assert!(!c.is_probe_port(0) && !c.is_probe_port(22));
        assert_eq!(c.head_bytes, 16384);
    }
}
