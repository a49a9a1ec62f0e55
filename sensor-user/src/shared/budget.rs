//! One memory budget (`memory_limit`) that the bounded tables draw from: each
//! entry is charged what it holds (its slot, and for a matcher flow its
//! buffers and Hyperscan stream state), and credited when it leaves. When the
//! budget is spent, the table that is growing evicts its own least recent
//! entries (`reason="budget"`): the table that grew last gives memory back
//! first. Shared by the matcher threads, hence atomic.

use std::sync::atomic::{AtomicU64, Ordering};

/// The default `memory_limit`.
pub const DEFAULT_MEMORY_LIMIT: u64 = 512 << 20;
/// The smallest limit accepted: below it the sensor could not hold a working set.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn charge(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub fn credit(&self, n: u64) {
        // Never below zero, whatever the order of a charge and its credit.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Whether more is charged than the limit allows.
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}

/// A size with an optional unit: `536870912`, `512MiB`, `512M`, `2GiB`, `64k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("{s:?}: unit {u:?} is not one of KiB, MiB, GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("536870912"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn charges_and_credits() {
        let b = Budget::new(100);
        b.charge(80);
        assert!(!b.over());
        b.charge(30);
        assert!(b.over());
        b.credit(50);
        assert_eq!(b.used(), 60);
        b.credit(500);
        assert_eq!(b.used(), 0);
    }
}
