//! Where followed apps leak to (`follow_apps`): findings per third-party host
//! over the last 24 h, for the `leakwatch_third_party_findings` gauge. The
//! host becomes a label only when it is a plain DNS name among the 20 with
//! the most findings; the rest add up under `other`.

use crate::shared::table::{Evictions, FlowTable};

/// Hosts with their own label at most.
pub const TOP_HOSTS: usize = 20;
/// (service, host) pairs counted at most.
const CAP: usize = 4096;
/// A host with no finding for this long is forgotten.
const WINDOW_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Longest host name that may become a label.
const MAX_LABEL: usize = 64;

/// Findings per (service, host), stamped with the latest finding's time.
pub struct Destinations {
    hosts: FlowTable<(String, String), u64, u64>,
}

impl Default for Destinations {
    fn default() -> Self {
        Self {
            hosts: FlowTable::new("third_party_hosts", CAP),
        }
    }
}

/// `host` as a label: a lowercase DNS name of letters, digits, `-` and `.`,
/// with a letter in its last label (so never an address), at most 64
/// characters; else `None` (counted as `other`).
pub fn host_label(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= MAX_LABEL
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && h.split('.').all(|l| !l.is_empty())
        && h.rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_lowercase()));
    ok.then_some(h)
}

impl Destinations {
    /// One finding of `service`'s app sent to `host` at `ts_ns`.
    pub fn record(&mut self, service: &str, host: Option<&str>, ts_ns: u64) {
        let host = host.and_then(host_label).unwrap_or_else(|| "other".into());
        let key = (service.to_owned(), host);
        if let Some(n) = self.hosts.touch(&key, ts_ns) {
            *n += 1;
        } else {
            self.hosts.insert(key, 1, ts_ns);
        }
    }

    /// Forgets hosts without a finding in the 24 h before `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(WINDOW_NS);
        while self.hosts.expire(cutoff).is_some() {}
    }

    /// The gauge's series: the [`TOP_HOSTS`] pairs with the most findings (ties:
    /// by name), the rest summed per service under `other`.
    pub fn series(&self) -> Vec<([String; 2], u64)> {
        let mut all: Vec<(&(String, String), u64)> =
            self.hosts.iter().map(|(k, n)| (k, *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut out: Vec<([String; 2], u64)> = Vec::new();
        let mut named = 0;
        for ((service, host), n) in all {
            let label = if host != "other" && named < TOP_HOSTS {
                named += 1;
                host.clone()
            } else {
                "other".to_owned()
            };
            match out
                .iter_mut()
                .find(|(l, _)| l[0] == *service && l[1] == label)
            {
                Some((_, total)) => *total += n,
                None => out.push(([service.clone(), label], n)),
            }
        }
        out
    }

    pub fn evictions(&self) -> (&'static str, Evictions) {
        (self.hosts.name(), self.hosts.evictions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_labels() {
        assert_eq!(
            host_label("Stats.Example.COM."),
            Some("stats.example.com".into())
        );
        for bad in [
            "203.0.113.7",
            "2001:db8::1",
            "a b.example",
            "",
            "x..example",
            "é.example",
        ] {
            assert_eq!(host_label(bad), None, "{bad}");
        }
        assert_eq!(host_label(&format!("{}.example", "a".repeat(60))), None);
    }

    #[test]
    fn the_twenty_busiest_hosts_are_named_the_rest_are_other() {
        let mut d = Destinations::default();
        for i in 0..25u64 {
            for _ in 0..=i {
                d.record("qobuz", Some(&format!("h{i:02}.example")), 1);
            }
        }
        d.record("qobuz", Some("198.51.100.9"), 1);
        d.record("deezer", None, 1);
        let s = d.series();
        let named: Vec<_> = s.iter().filter(|(l, _)| l[1] != "other").collect();
        assert_eq!(named.len(), TOP_HOSTS);
        assert_eq!(named[0].0[1], "h24.example");
        assert_eq!(named[0].1, 25);
        assert!(!s.iter().any(|(l, _)| l[1] == "h04.example"));
        // h00..h04: 1+2+3+4+5 findings, plus the address.
        let other = |svc: &str| {
            s.iter()
                .find(|(l, _)| l[0] == svc && l[1] == "other")
                .map(|x| x.1)
        };
        assert_eq!(other("qobuz"), Some(16));
        assert_eq!(other("deezer"), Some(1));
        // A day without findings: forgotten.
        d.sweep(2 + WINDOW_NS);
        assert!(d.series().is_empty());
    }
}
