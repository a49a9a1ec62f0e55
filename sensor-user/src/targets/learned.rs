//! Addresses learned from DNS answers, SNI and Host headers: each expires after
//! its (clamped) TTL; the table is capped per family, and when full the entries
//! closest to expiry make room.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::shared::budget::Budget;

use sensor_common::block::watch_value;

/// Where an address was learned (the `source` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Dns,
    Sni,
    Host,
    Static,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Dns, Source::Sni, Source::Host, Source::Static];

    /// The source named `name` (see [`Source::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Sni => "sni",
            Self::Host => "host",
            Self::Static => "static",
        }
    }
}

/// `ipv4` / `ipv6` metric label.
pub fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// Names an entry remembers, so a reload (or a restart) can work its policy
/// bits out again under the blocking modes then in force; an entry learned
/// from more has its bits fail open.
pub const MAX_NAMES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    service: u32,
    /// Cleartext policy bits (`sensor_common::block::policy`): those every name
    /// the address was learned from, or seen for, carries.
    policy: u8,
    source: Source,
    expires: Instant,
    /// The names it was learned from (at most `MAX_NAMES`; empty when
    /// restored from a snapshot without names), and whether there were more.
    names: Vec<Box<str>>,
    more_names: bool,
}

impl Entry {
    fn value(&self) -> u32 {
        watch_value(self.service, self.policy)
    }

    fn add_name(&mut self, name: &str) {
        if self.names.iter().any(|n| **n == *name) {
            return;
        }
        if self.names.len() < MAX_NAMES {
            self.names.push(name.into());
        } else {
            self.more_names = true;
        }
    }
}

/// What the tries must do after a change to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Watch this address with this watch-map value (service id and policy
    /// bits: new, or changed).
    Watch(IpAddr, u32),
    /// Stop watching this address.
    Unwatch(IpAddr),
}

#[derive(Debug)]
pub struct Learned {
    entries: HashMap<IpAddr, Entry>,
    /// Per family (ipv4, ipv6): entries by expiry; its length is the family's count.
    by_expiry: [BTreeSet<(Instant, IpAddr)>; 2],
    cap: usize,
    evicted: [u64; 2],
    /// The shared memory budget, and entries evicted for it per family.
    budget: Option<Arc<Budget>>,
    evicted_budget: [u64; 2],
}

/// What one learned address holds: its map entry, its expiry index entry and
/// its names (counted as `MAX_NAMES` names of 64 bytes, whatever it holds:
/// few names are longer, most entries hold one).
const ENTRY_BYTES: u64 = (std::mem::size_of::<(IpAddr, Entry)>()
    + std::mem::size_of::<(Instant, IpAddr)>()
    + 48
    + MAX_NAMES * 64) as u64;

impl Learned {
    /// `cap`: most addresses per family.
    pub fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: [BTreeSet::new(), BTreeSet::new()],
            cap,
            evicted: [0; 2],
            budget: None,
            evicted_budget: [0; 2],
        }
    }

    /// Draws the entries from the shared memory budget (set before learning).
    pub fn set_budget(&mut self, budget: Arc<Budget>) {
        self.budget = Some(budget);
    }

    fn credit(&self) {
        if let Some(b) = &self.budget {
            b.credit(ENTRY_BYTES);
        }
    }

    fn fam(a: &IpAddr) -> usize {
        usize::from(a.is_ipv6())
    }

    /// Learns (or refreshes) `addr` for `service` until `now + ttl`, from
    /// `name` (none: restored from a snapshot without names) and its `policy`
    /// bits. A refresh never shortens an entry's life, and keeps only the
    /// policy bits both names carry; an entry no name taught yet takes the
    /// name's bits.
    pub fn learn(
        &mut self,
        addr: IpAddr,
        service: u32,
        (name, policy): (Option<&str>, u8),
        source: Source,
        ttl: Duration,
        now: Instant,
    ) -> Vec<Change> {
        let expires = now + ttl;
        let f = Self::fam(&addr);
        let mut changes = Vec::new();
        if let Some(e) = self.entries.get_mut(&addr) {
            let was = e.value();
            if expires > e.expires {
                self.by_expiry[f].remove(&(e.expires, addr));
                e.expires = expires;
                self.by_expiry[f].insert((expires, addr));
            }
            e.service = service;
            e.source = source;
            if let Some(name) = name {
                if e.names.is_empty() && !e.more_names {
                    e.policy = policy;
                } else {
                    e.policy &= policy;
                }
                e.add_name(name);
            } else {
                e.policy &= policy;
            }
            if e.value() != was {
                changes.push(Change::Watch(addr, e.value()));
            }
            return changes;
        }
        if self.by_expiry[f].len() >= self.cap {
            // Closest to expiry of the same family goes first.
            if let Some((_, v)) = self.by_expiry[f].pop_first() {
                self.entries.remove(&v);
                self.evicted[f] += 1;
                self.credit();
                changes.push(Change::Unwatch(v));
            }
        }
        let e = Entry {
            service,
            policy,
            source,
            expires,
            names: name.into_iter().map(Box::from).collect(),
            more_names: false,
        };
        changes.push(Change::Watch(addr, e.value()));
        self.entries.insert(addr, e);
        self.by_expiry[f].insert((expires, addr));
        if let Some(b) = self.budget.clone() {
            b.charge(ENTRY_BYTES);
            // The budget spent: this family gives back, closest to expiry
            // first (never the address just learned).
            while b.over() {
                let Some(&(t, v)) = self.by_expiry[f].iter().find(|(_, a)| *a != addr) else {
                    break;
                };
                self.by_expiry[f].remove(&(t, v));
                self.entries.remove(&v);
                self.evicted_budget[f] += 1;
                b.credit(ENTRY_BYTES);
                changes.push(Change::Unwatch(v));
            }
        }
        changes
    }

    /// `addr` was seen for a name carrying only `policy` bits (a CDN address
    /// shared with names without the policy): keep only those.
    pub fn restrict(&mut self, addr: &IpAddr, policy: u8) -> Option<Change> {
        let e = self.entries.get_mut(addr)?;
        let was = e.value();
        e.policy &= policy;
        (e.value() != was).then(|| Change::Watch(*addr, e.value()))
    }

    /// Sets every entry's policy bits to `bits(service, address, names)`
    /// (names `None`: it was learned from more than `MAX_NAMES`) and returns
    /// the entries that changed: how a reload's blocking modes reach the
    /// addresses learned before it.
    pub fn recompute(
        &mut self,
        mut bits: impl FnMut(u32, &IpAddr, Option<&[Box<str>]>) -> u8,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for (a, e) in &mut self.entries {
            let was = e.value();
            e.policy = bits(e.service, a, (!e.more_names).then_some(&e.names[..]));
            if e.value() != was {
                out.push(Change::Watch(*a, e.value()));
            }
        }
        out
    }

    /// Removes every entry expired at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        for index in &mut self.by_expiry {
            while let Some(&(t, a)) = index.first() {
                if t > now {
                    break;
                }
                index.pop_first();
                self.entries.remove(&a);
                if let Some(b) = &self.budget {
                    b.credit(ENTRY_BYTES);
                }
                out.push(Change::Unwatch(a));
            }
        }
        out
    }

    /// Addresses per (family, source).
    pub fn counts(&self) -> HashMap<(&'static str, Source), usize> {
        let mut m = HashMap::new();
        for (a, e) in &self.entries {
            *m.entry((family(a), e.source)).or_default() += 1;
        }
        m
    }

    /// Entries evicted to make room, per family (ipv4, ipv6).
    pub fn evicted(&self) -> [u64; 2] {
        self.evicted
    }

    /// Entries evicted for the memory budget, per family.
    pub fn evicted_budget(&self) -> [u64; 2] {
        self.evicted_budget
    }

    /// Evictions of the ipv4 and ipv6 tables (cap and budget).
    pub fn evictions(&self) -> [crate::shared::table::Evictions; 2] {
        [0, 1].map(|f| crate::shared::table::Evictions {
            cap: self.evicted[f],
            budget: self.evicted_budget[f],
            ..Default::default()
        })
    }

    pub fn service_of(&self, a: &IpAddr) -> Option<u32> {
        self.entries.get(a).map(|e| e.service)
    }

    /// Every entry: address, service id, source, when it expires, and the
    /// names it was learned from (`None`: more than it remembers).
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (IpAddr, u32, Source, Instant, Option<&[Box<str>]>)> + '_ {
        self.entries.iter().map(|(a, e)| {
            let names = (!e.more_names).then_some(&e.names[..]);
            (*a, e.service, e.source, e.expires, names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learn_refresh_and_expire() {
        let t0 = Instant::now();
        let mut l = Learned::new(10);
        let a = ip("198.51.100.2");
        assert_eq!(
            l.learn(a, 1, (None, 0), Source::Dns, Duration::from_mins(1), t0),
            [Change::Watch(a, 1)]
        );
        // Refresh with a shorter TTL keeps the longer life; same service: no change.
        assert_eq!(
            l.learn(a, 1, (None, 0), Source::Dns, Duration::from_secs(5), t0),
            []
        );
        assert_eq!(l.expire(t0 + Duration::from_secs(59)), []);
        assert_eq!(l.expire(t0 + Duration::from_mins(1)), [Change::Unwatch(a)]);
        assert_eq!(l.service_of(&a), None);
    }

    #[test]
    fn a_new_service_for_an_address_rewatches_it() {
        let t0 = Instant::now();
        let mut l = Learned::new(10);
        let a = ip("2001:db8::2");
        l.learn(a, 1, (None, 0), Source::Dns, Duration::from_mins(1), t0);
        assert_eq!(
            l.learn(a, 2, (None, 0), Source::Sni, Duration::from_mins(1), t0),
            [Change::Watch(a, 2)]
        );
        assert_eq!(l.counts().get(&("ipv6", Source::Sni)), Some(&1));
    }

    #[test]
    fn cap_evicts_closest_to_expiry_of_the_same_family() {
        let t0 = Instant::now();
        let mut l = Learned::new(2);
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        let v6 = ip("2001:db8::1");
        l.learn(a, 1, (None, 0), Source::Dns, Duration::from_secs(100), t0);
        l.learn(b, 1, (None, 0), Source::Dns, Duration::from_secs(10), t0);
        l.learn(v6, 1, (None, 0), Source::Dns, Duration::from_secs(1), t0);
        let ch = l.learn(c, 1, (None, 0), Source::Dns, Duration::from_secs(50), t0);
        assert_eq!(ch, [Change::Unwatch(b), Change::Watch(c, 1)]);
        assert_eq!(l.evicted(), [1, 0]);
        assert_eq!(l.service_of(&v6), Some(1), "the other family is untouched");
        assert_eq!(l.service_of(&a), Some(1));
    }

    #[test]
    fn a_shared_address_keeps_only_the_policy_every_name_carries() {
        let t0 = Instant::now();
        let mut l = Learned::new(10);
        let a = ip("198.51.100.7");
        let ttl = Duration::from_mins(1);
        let strict = watch_value(1, 1);
        let www = Some("www.qobuz.com");
        assert_eq!(
            l.learn(a, 1, (www, 1), Source::Dns, ttl, t0),
            [Change::Watch(a, strict)]
        );
        assert_eq!(l.learn(a, 1, (www, 1), Source::Dns, ttl, t0), []);
        // The same address answered for a name without the policy.
        assert_eq!(l.restrict(&a, 0), Some(Change::Watch(a, 1)));
        assert_eq!(l.learn(a, 1, (www, 1), Source::Dns, ttl, t0), []);
        assert_eq!(l.restrict(&ip("198.51.100.8"), 0), None);
    }

    /// An entry restored without names starts without policy bits (fail
    /// open): the first name that teaches it again gives it that name's bits.
    #[test]
    fn a_restored_entry_takes_the_bits_of_the_first_name_that_teaches_it() {
        let t0 = Instant::now();
        let mut l = Learned::new(10);
        let a = ip("198.51.100.7");
        let ttl = Duration::from_mins(1);
        assert_eq!(
            l.learn(a, 1, (None, 0), Source::Dns, ttl, t0),
            [Change::Watch(a, 1)]
        );
        assert_eq!(
            l.learn(a, 1, (Some("www.qobuz.com"), 1), Source::Dns, ttl, t0),
            [Change::Watch(a, watch_value(1, 1))]
        );
        // A second name without the policy: only what both carry.
        assert_eq!(
            l.learn(a, 1, (Some("api.qobuz.com"), 0), Source::Dns, ttl, t0),
            [Change::Watch(a, 1)]
        );
    }

    /// A reload works every entry's bits out again from its names; an entry
    /// learned from more names than it remembers is handed `None`.
    #[test]
    fn recompute_sets_each_entrys_bits_from_its_names() {
        let t0 = Instant::now();
        let mut l = Learned::new(10);
        let ttl = Duration::from_mins(1);
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        l.learn(a, 1, (Some("x.example"), 1), Source::Dns, ttl, t0);
        l.learn(b, 1, (Some("y.example"), 0), Source::Dns, ttl, t0);
        for i in 0..=MAX_NAMES {
            let name = format!("n{i}.example");
            l.learn(c, 1, (Some(&name), 1), Source::Dns, ttl, t0);
        }
        let bits = |_: u32, _: &IpAddr, names: Option<&[Box<str>]>| match names {
            Some(n) if n.iter().any(|n| &**n == "y.example") => 1,
            _ => 0,
        };
        let mut changes = l.recompute(bits);
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            changes,
            [
                Change::Watch(a, 1),
                Change::Watch(b, watch_value(1, 1)),
                Change::Watch(c, 1)
            ]
        );
        assert_eq!(l.recompute(bits), []);
    }

    /// Learned addresses draw from the memory budget: past it the family
    /// gives back its addresses closest to expiry, never the one just learned,
    /// and expiry credits what they held.
    #[test]
    fn learned_addresses_are_charged_to_the_budget() {
        let t0 = Instant::now();
        let budget = Arc::new(Budget::new(ENTRY_BYTES * 3));
        let mut l = Learned::new(100);
        l.set_budget(Arc::clone(&budget));
        for i in 0..5u8 {
            let a = IpAddr::from([198, 51, 100, 10 + i]);
            let ttl = Duration::from_secs(60 + u64::from(i));
            let changes = l.learn(a, 1, (None, 0), Source::Dns, ttl, t0);
            assert!(changes.contains(&Change::Watch(a, 1)), "{changes:?}");
            assert!(!budget.over());
        }
        assert_eq!(l.evicted_budget(), [2, 0]);
        assert_eq!(
            l.service_of(&ip("198.51.100.10")),
            None,
            "closest to expiry went"
        );
        assert_eq!(l.service_of(&ip("198.51.100.14")), Some(1));
        assert_eq!(budget.used(), ENTRY_BYTES * 3);
        l.expire(t0 + Duration::from_mins(2));
        assert_eq!(budget.used(), 0);
    }
}
