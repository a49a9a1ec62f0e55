//! Learned addresses across a restart: the snapshot the pipeline writes to
//! `learned.json` (`targets::store`) and its restore at the next start, with
//! the names each address was learned from.

use std::time::{Duration, Instant};

use super::{Targeting, WatchSink};
use crate::targets::store::Saved;

impl<W: WatchSink> Targeting<W> {
    /// The learned addresses, to keep across a restart.
    pub fn learned_snapshot(&self, now: Instant) -> Vec<Saved> {
        self.learned
            .entries()
            .filter_map(|(addr, id, source, expires, names)| {
                let left = expires.checked_duration_since(now)?.as_secs();
                Some(Saved {
                    addr,
                    service: self.ids.name(id)?.to_owned(),
                    source,
                    left,
                    names: names.map(|n| n.iter().map(ToString::to_string).collect()),
                    shared: self.shared.contains_key(&addr),
                })
            })
            .filter(|e| e.left > 0)
            .collect()
    }

    /// Learns the addresses of a snapshot again, each for the time it had
    /// left and from the names it was learned from, so they carry the
    /// cleartext policy bits those names have now; services the catalog no
    /// longer has, and addresses a static prefix covers, are skipped. Without
    /// its names (a file from before they were kept, or more than an entry
    /// remembers) an address starts without bits (fail open) until a fresh
    /// answer; a shared one stays without. Returns how many were restored.
    pub fn restore(&mut self, entries: &[Saved], now: Instant) -> usize {
        let mut n = 0;
        for e in entries {
            if !self.catalog.services().iter().any(|s| s.id == e.service)
                || self.statics.iter().any(|(net, _)| net.contains(&e.addr))
            {
                continue;
            }
            if e.shared {
                self.shared.insert(e.addr, (), now);
            }
            let id = self.ids.id(&e.service);
            let ttl = Duration::from_secs(e.left);
            let names = e.names.as_deref().unwrap_or_default();
            if names.is_empty() {
                let changes = self
                    .learned
                    .learn(e.addr, id, (None, 0), e.source, ttl, now);
                self.apply(changes);
            }
            for name in names {
                let bits = if e.shared {
                    0
                } else {
                    self.blocking.name_bits(&e.service, name)
                };
                let changes =
                    self.learned
                        .learn(e.addr, id, (Some(name), bits), e.source, ttl, now);
                self.apply(changes);
            }
            n += 1;
        }
        n
    }
}
