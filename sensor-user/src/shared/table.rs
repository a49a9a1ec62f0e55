//! One bounded table for every per-flow (or per-key) state userspace keeps:
//! a hash index into a slab of entries threaded on a doubly linked recency list.
//!
//! - Capacity is fixed; inserting into a full table evicts the least recent
//!   entry in O(1) (no scan), and hands it back so its owner can finish it.
//! - Idle expiry walks from the least recent end and stops at the first entry
//!   still live, so a sweep costs what it expires, not what the table holds.
//! - Every eviction is counted under the table's name and its reason.
//! - A table may draw from the shared memory budget (`with_budget`): each entry
//!   is charged its slot (and what its owner says it holds, `recharge`), and
//!   when the budget is spent the growing table evicts its least recent
//!   entries (`evict_over_budget`, counted as `budget`).
//!
//! The stamp type `T` is whatever the owner's clock is (`Instant`, capture
//! nanoseconds); entries are ordered by when they were last *touched*, which is
//! the order of their stamps as long as the owner's clock does not go back.

use std::{collections::HashMap, hash::Hash, sync::Arc, time::Instant};

use super::budget::Budget;

/// Why an entry left a table (`reason` label of `leakwatch_evictions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evicted {
    /// The table was full and a new key came.
    Cap,
    /// Not touched for the idle timeout.
    Idle,
    /// The memory budget was spent while this table grew.
    Budget,
}

impl Evicted {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cap => "cap",
            Self::Idle => "idle",
            Self::Budget => "budget",
        }
    }
}

/// Evictions of one table, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evictions {
    pub cap: u64,
    pub idle: u64,
    pub budget: u64,
}

impl Evictions {
    pub fn add(&mut self, o: Self) {
        self.cap += o.cap;
        self.idle += o.idle;
        self.budget += o.budget;
    }

    /// (reason, count) pairs, for export.
    pub fn by_reason(self) -> [(Evicted, u64); 3] {
        [
            (Evicted::Cap, self.cap),
            (Evicted::Idle, self.idle),
            (Evicted::Budget, self.budget),
        ]
    }
}

const NIL: u32 = u32::MAX;

struct Node<K, V, T> {
    key: K,
    value: V,
    last: T,
    /// Bytes charged to the budget for this entry.
    charged: u64,
    /// Towards the most recent end.
    newer: u32,
    /// Towards the least recent end.
    older: u32,
}

/// A bounded map with O(1) least-recently-touched eviction.
pub struct FlowTable<K, V, T = Instant> {
    name: &'static str,
    index: HashMap<K, u32, foldhash::fast::RandomState>,
    nodes: Vec<Option<Node<K, V, T>>>,
    free: Vec<u32>,
    /// Most and least recently touched.
    newest: u32,
    oldest: u32,
    cap: usize,
    evictions: Evictions,
    budget: Option<Arc<Budget>>,
    /// What one entry's slot costs: node, index entry, hash overhead.
    entry_bytes: u64,
}

impl<K: Hash + Eq + Clone, V, T: Copy + Ord> FlowTable<K, V, T> {
    /// A table named `name` (its metric label) of at most `cap` entries (at least 1).
    pub fn new(name: &'static str, cap: usize) -> Self {
        Self {
            name,
            // Keys come from the network: foldhash, randomly seeded per table,
            // several times cheaper than SipHash on small keys.
            index: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            cap: cap.max(1),
            evictions: Evictions::default(),
            budget: None,
            entry_bytes: (std::mem::size_of::<Option<Node<K, V, T>>>()
                + std::mem::size_of::<(K, u32)>()
                + 16) as u64,
        }
    }

    /// Draws this table's entries from `budget` (set before the first insert).
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.set_budget(budget);
        self
    }

    /// As [`FlowTable::with_budget`], in place.
    pub fn set_budget(&mut self, budget: Arc<Budget>) {
        self.budget = Some(budget);
    }

    /// Sets what `k` holds besides its slot (buffers, stream state): the budget
    /// is charged the difference.
    pub fn recharge(&mut self, k: &K, extra: u64) {
        let Some(&i) = self.index.get(k) else {
            return;
        };
        let entry = self.entry_bytes;
        let n = self.node_mut(i);
        let (old, new) = (n.charged, entry + extra);
        n.charged = new;
        if let Some(b) = &self.budget {
            if new > old {
                b.charge(new - old);
            } else {
                b.credit(old - new);
            }
        }
    }

    /// While the budget is spent, the least recent entry (counted as
    /// `budget`), for its owner to finish; the most recent entry stays (it
    /// is what the table grew by). Call in a loop after growing.
    pub fn evict_over_budget(&mut self) -> Option<(K, V)> {
        let over = self.budget.as_ref().is_some_and(|b| b.over());
        if !over || self.index.len() < 2 || self.oldest == NIL {
            return None;
        }
        let i = self.oldest;
        self.evictions.budget += 1;
        Some(self.take(i))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }

    fn node(&self, i: u32) -> &Node<K, V, T> {
        match self.nodes.get(i as usize) {
            Some(Some(n)) => n,
            // The index and the list only ever name occupied slots.
            _ => unreachable!("flow table {}: dangling slot {i}", self.name),
        }
    }

    fn node_mut(&mut self, i: u32) -> &mut Node<K, V, T> {
        match self.nodes.get_mut(i as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("flow table {}: dangling slot {i}", self.name),
        }
    }

    /// The value, without changing its recency.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.index.get(k).map(|&i| &self.node(i).value)
    }

    /// The value, without changing its recency.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = *self.index.get(k)?;
        Some(&mut self.node_mut(i).value)
    }

    /// The value, made the most recent with stamp `now`.
    pub fn touch(&mut self, k: &K, now: T) -> Option<&mut V> {
        let i = *self.index.get(k)?;
        self.unlink(i);
        self.push_newest(i);
        let n = self.node_mut(i);
        n.last = now;
        Some(&mut n.value)
    }

    /// When the least recent entry was last touched.
    pub fn oldest_stamp(&self) -> Option<T> {
        (self.oldest != NIL).then(|| self.node(self.oldest).last)
    }

    /// When `k` was last touched.
    pub fn last(&self, k: &K) -> Option<T> {
        self.index.get(k).map(|&i| self.node(i).last)
    }

    /// Inserts (or replaces) `k` as the most recent entry. When the table is full
    /// and `k` is new, the least recent entry is evicted (counted as `cap`) and
    /// returned so its owner can finish it.
    pub fn insert(&mut self, k: K, v: V, now: T) -> Option<(K, V)> {
        if let Some(slot) = self.touch(&k, now) {
            *slot = v;
            return None;
        }
        let evicted = if self.index.len() >= self.cap {
            self.evict_oldest()
        } else {
            None
        };
        let node = Node {
            key: k.clone(),
            value: v,
            last: now,
            charged: self.entry_bytes,
            newer: NIL,
            older: NIL,
        };
        if let Some(b) = &self.budget {
            b.charge(self.entry_bytes);
        }
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = Some(node);
            i
        } else {
            // Capacity bounds the slab; u32 slots cover any table we size.
            let i = u32::try_from(self.nodes.len()).unwrap_or(NIL - 1);
            self.nodes.push(Some(node));
            i
        };
        self.push_newest(i);
        self.index.insert(k, i);
        evicted
    }

    /// Removes `k` (the owner's own reason: FIN, RST, …; not counted here).
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = *self.index.get(k)?;
        Some(self.take(i).1)
    }

    /// Evicts the least recent entry to make room (counted as `cap`).
    pub fn evict_oldest(&mut self) -> Option<(K, V)> {
        if self.oldest == NIL {
            return None;
        }
        let i = self.oldest;
        self.evictions.cap += 1;
        Some(self.take(i))
    }

    /// The least recent entry if it was last touched at or before `cutoff`
    /// (counted as `idle`); `None` once the least recent entry is live. Call in a
    /// loop: `while let Some((k, v)) = t.expire(cutoff) { … }`.
    pub fn expire(&mut self, cutoff: T) -> Option<(K, V)> {
        if self.oldest == NIL || self.node(self.oldest).last > cutoff {
            return None;
        }
        let i = self.oldest;
        self.evictions.idle += 1;
        Some(self.take(i))
    }

    /// As [`FlowTable::expire`], for tables stamped with deadlines: the least
    /// recent entry if its stamp is at or before `now`, not counted (it ended,
    /// it was not evicted).
    pub fn take_due(&mut self, now: T) -> Option<(K, V)> {
        if self.oldest == NIL || self.node(self.oldest).last > now {
            return None;
        }
        Some(self.take(self.oldest))
    }

    /// The key of the most recent entry matching `pred` (a linear scan).
    pub fn find(&self, pred: impl Fn(&K, &V) -> bool) -> Option<K> {
        self.iter()
            .find(|(k, v)| pred(k, v))
            .map(|(k, _)| k.clone())
    }

    /// Keys and values from the most to the least recent.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let mut i = self.newest;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let n = self.node(i);
            i = n.older;
            Some((&n.key, &n.value))
        })
    }

    /// Unlinks slot `i`, frees it and drops its key from the index.
    fn take(&mut self, i: u32) -> (K, V) {
        self.unlink(i);
        self.free.push(i);
        match self.nodes.get_mut(i as usize).and_then(Option::take) {
            Some(n) => {
                self.index.remove(&n.key);
                if let Some(b) = &self.budget {
                    b.credit(n.charged);
                }
                (n.key, n.value)
            }
            None => unreachable!("flow table {}: dangling slot {i}", self.name),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let n = self.node(i);
            (n.newer, n.older)
        };
        if newer == NIL {
            self.newest = older;
        } else {
            self.node_mut(newer).older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.node_mut(older).newer = newer;
        }
        let n = self.node_mut(i);
        n.newer = NIL;
        n.older = NIL;
    }

    fn push_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let n = self.node_mut(i);
            n.older = old_newest;
            n.newer = NIL;
        }
        if old_newest == NIL {
            self.oldest = i;
        } else {
            self.node_mut(old_newest).newer = i;
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(t: &FlowTable<u32, &str, u64>) -> Vec<u32> {
        t.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn full_table_evicts_the_least_recently_touched() {
        let mut t = FlowTable::new("t", 3);
        assert!(t.insert(1, "a", 10).is_none());
        assert!(t.insert(2, "b", 11).is_none());
        assert!(t.insert(3, "c", 12).is_none());
        assert_eq!(keys(&t), [3, 2, 1]);
        // Touching 1 makes 2 the least recent.
        assert_eq!(t.touch(&1, 13).copied(), Some("a"));
        assert_eq!(t.insert(4, "d", 14), Some((2, "b")));
        assert_eq!(keys(&t), [4, 1, 3]);
        assert_eq!(
            t.evictions(),
            Evictions {
                cap: 1,
                idle: 0,
                budget: 0
            }
        );
        // Replacing a present key evicts nothing.
        assert!(t.insert(3, "C", 15).is_none());
        assert_eq!(t.get(&3), Some(&"C"));
        assert_eq!(keys(&t), [3, 4, 1]);
        assert_eq!(t.len(), 3);
        // get/get_mut leave recency alone.
        *t.get_mut(&1).unwrap() = "A";
        assert_eq!(keys(&t), [3, 4, 1]);
        assert_eq!(t.remove(&4), Some("d"));
        assert_eq!(keys(&t), [3, 1]);
        assert_eq!(t.evictions().cap, 1, "remove is the owner's, not counted");
        // The freed slot is reused.
        t.insert(5, "e", 16);
        assert_eq!(keys(&t), [5, 3, 1]);
    }

    #[test]
    fn expiry_stops_at_the_first_live_entry() {
        let mut t = FlowTable::new("t", 10);
        for k in 0..5u32 {
            t.insert(k, "x", u64::from(k) * 10);
        }
        t.touch(&0, 100);
        let mut gone = Vec::new();
        while let Some((k, _)) = t.expire(25) {
            gone.push(k);
        }
        assert_eq!(gone, [1, 2]);
        assert_eq!(keys(&t), [0, 4, 3]);
        assert_eq!(
            t.evictions(),
            Evictions {
                cap: 0,
                idle: 2,
                budget: 0
            }
        );
        while t.expire(1_000).is_some() {}
        assert!(t.is_empty());
        assert!(t.expire(1_000).is_none());
        assert!(t.evict_oldest().is_none());
    }

    /// Against a model (a Vec in recency order) over a pseudo-random sequence.
    #[test]
    fn agrees_with_a_model() {
        let mut t: FlowTable<u16, u32, u64> = FlowTable::new("t", 16);
        let mut model: Vec<(u16, u32)> = Vec::new();
        let mut x = 0x2545_f491_u32;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let k = (x % 40) as u16;
            match x % 4 {
                0 => {
                    let got = t.remove(&k);
                    let pos = model.iter().position(|e| e.0 == k);
                    assert_eq!(got, pos.map(|p| model.remove(p).1));
                }
                1 => {
                    let got = t.touch(&k, step).copied();
                    let pos = model.iter().position(|e| e.0 == k);
                    assert_eq!(got, pos.map(|p| model[p].1));
                    if let Some(p) = pos {
                        let e = model.remove(p);
                        model.insert(0, e);
                    }
                }
                _ => {
                    let got = t.insert(k, x, step);
                    if let Some(p) = model.iter().position(|e| e.0 == k) {
                        model.remove(p);
                        assert_eq!(got, None);
                    } else if model.len() == 16 {
                        assert_eq!(got, model.pop());
                    } else {
                        assert_eq!(got, None);
                    }
                    model.insert(0, (k, x));
                }
            }
            let ours: Vec<(u16, u32)> = t.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(ours, model, "step {step}");
        }
    }

    /// Tables sharing a budget: the one that grows evicts its own least
    /// recent entries once the budget is spent; what leaves is credited.
    #[test]
    fn the_growing_table_gives_memory_back() {
        let probe: FlowTable<u32, u64, u32> = FlowTable::new("probe", 10);
        let per = probe.entry_bytes;
        let budget = Arc::new(Budget::new(per * 10));
        let mut a: FlowTable<u32, u64, u32> =
            FlowTable::new("a", 1000).with_budget(Arc::clone(&budget));
        let mut b: FlowTable<u32, u64, u32> =
            FlowTable::new("b", 1000).with_budget(Arc::clone(&budget));
        for k in 0..6 {
            a.insert(k, 0, k);
        }
        for k in 0..6 {
            b.insert(k, 0, k);
            while b.evict_over_budget().is_some() {}
        }
        // b grew past the budget: b gave back, a kept all it had.
        assert_eq!(a.len(), 6);
        assert_eq!(b.len(), 4);
        assert_eq!(b.evictions().budget, 2);
        assert!(!budget.over());
        // Buffers an entry holds count too, and are credited when it goes.
        a.recharge(&5, per * 3);
        assert!(budget.over());
        while let Some((k, _)) = a.evict_over_budget() {
            assert!(k < 5, "the least recent go first");
        }
        assert!(a.contains_key(&5));
        assert!(!budget.over());
        let used = budget.used();
        a.remove(&5);
        assert_eq!(budget.used(), used - 4 * per);
    }
}
