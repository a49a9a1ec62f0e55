//! Kernel timestamps (CLOCK_MONOTONIC ns) to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken once.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    realtime_minus_mono_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in the kernel's record timestamp scale.
pub fn mono_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

impl Clock {
    pub fn new() -> Self {
        Self {
            realtime_minus_mono_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// For timestamps that already are wall-clock ns (capture files).
    pub fn identity() -> Self {
        Self {
            realtime_minus_mono_ns: 0,
        }
    }

    /// The wall-clock time of a kernel timestamp.
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (i128::from(mono_ns) + self.realtime_minus_mono_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_now() {
        let c = Clock::new();
        let mono = now_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = c.wall(mono);
        let diff = SystemTime::now().duration_since(wall).unwrap_or_default();
        assert!(diff < Duration::from_secs(1), "{diff:?}");
        let s = c.rfc3339(mono);
        assert!(
            s.ends_with('Z') && s.len() == "2026-11-23T13:00:00.123456Z".len(),
            "{s}"
        );
    }
}
