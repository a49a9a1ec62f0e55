//! Checks, before loading anything, that the process may load and attach XDP
//! programs, so the admin gets one clear sentence instead of an EPERM from deep
//! inside the loader.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Whether the capability set allows loading (CAP_BPF or CAP_SYS_ADMIN) and
/// attaching (CAP_NET_ADMIN) XDP programs.
pub fn caps_allow_xdp(caps: u64) -> bool {
    (has(caps, CAP_BPF) || has(caps, CAP_SYS_ADMIN)) && has(caps, CAP_NET_ADMIN)
}

/// Whether this process can load and attach XDP programs.
pub fn can_load_xdp() -> bool {
    effective_caps().is_some_and(caps_allow_xdp)
}

/// The capabilities `run` lacks, by name: CAP_BPF (loading), CAP_PERFMON (the
/// verifier allows the program's pointer arithmetic only with it; without it
/// the kernel answers with a verifier dump instead of naming it) and
/// CAP_NET_ADMIN (attaching). CAP_SYS_ADMIN stands for the first two.
pub fn missing_for_run(caps: u64) -> Vec<&'static str> {
    let admin = has(caps, CAP_SYS_ADMIN);
    let mut out = Vec::new();
    if !admin && !has(caps, CAP_BPF) {
        out.push("CAP_BPF");
    }
    if !admin && !has(caps, CAP_PERFMON) {
        out.push("CAP_PERFMON");
    }
    if !has(caps, CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// [`missing_for_run`] of this process (all of them if its status is unreadable).
pub fn missing() -> Vec<&'static str> {
    missing_for_run(effective_caps().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(caps_allow_xdp(1 << CAP_BPF | 1 << CAP_NET_ADMIN));
        assert!(caps_allow_xdp(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN));
        assert!(!caps_allow_xdp(1 << CAP_BPF));
        assert!(!caps_allow_xdp(1 << CAP_NET_ADMIN));
        assert!(!caps_allow_xdp(0));
        assert_eq!(
            missing_for_run(1 << CAP_BPF | 1 << CAP_NET_ADMIN),
            ["CAP_PERFMON"]
        );
        assert!(missing_for_run(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN).is_empty());
        assert_eq!(
            missing_for_run(0),
            ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
    }
}
