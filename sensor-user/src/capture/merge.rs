//! Merges the per-CPU rings' records into one stream in timestamp order.
//!
//! Each CPU's ring is in order by itself (a CPU runs one XDP program at a
//! time and stamps records with the monotonic clock), but a flow's two
//! directions, or a DNS answer and the flow it announces, can land on two
//! CPUs, and the pipeline needs them in the order they happened. So records
//! wait here until no ring can still hand up an earlier one: a ring that
//! handed up a record stamped `t` has nothing earlier left, and a ring that
//! is quiet has nothing earlier than `now - HOLD_NS` (a record is committed
//! within microseconds of its stamp: the program runs to its end once
//! stamped). A record therefore waits at most `HOLD_NS`, and not at all
//! while every ring is busy or there is one ring.
//!
//! The hold is what a block waits for when the other CPUs are quiet: the
//! lab's idle block-in-place p50 read 0.14–0.16 ms without a merge, 0.38–0.43
//! ms with this hold and 1.40–1.50 ms with 1 ms (docs/performance.md). Two
//! records a network round trip apart (a DNS answer and its flow, a request
//! and its reply) are ordered by any hold longer than a record's commit; a
//! CPU stalled longer than the hold between stamp and commit (a VM's vCPU
//! descheduled) makes its record come out late, not lost.
//!
//! DNS answers carry the coarse clock (up to a tick early): one may come
//! out after a later record; it never comes out after the flow it
//! announces, which starts at least a round trip after it.

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

/// The most a record waits for the other rings: far above a record's
/// stamp-to-commit time, a quarter of the 1 ms issue #17 allows.
pub const HOLD_NS: u64 = 250_000;

/// Records held for ordering, `T` each with its ring and stamp.
pub struct Merge<T> {
    held: BinaryHeap<Reverse<Held<T>>>,
    /// Per ring, the latest stamp it handed up.
    latest: Vec<u64>,
    /// Arrival order: breaks ties between equal stamps.
    seq: u64,
}

struct Held<T> {
    ts: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}

impl<T> Eq for Held<T> {}

impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

impl<T> Merge<T> {
    pub fn new(rings: usize) -> Self {
        Self {
            held: BinaryHeap::new(),
            latest: vec![0; rings.max(1)],
            seq: 0,
        }
    }

    /// Takes a record `ring` handed up, stamped `ts`.
    pub fn push(&mut self, ring: usize, ts: u64, item: T) {
        if let Some(l) = self.latest.get_mut(ring) {
            *l = (*l).max(ts);
        }
        self.seq += 1;
        self.held.push(Reverse(Held {
            ts,
            seq: self.seq,
            item,
        }));
    }

    /// The earliest held record, if no ring can still hand up an earlier one
    /// at `now` (the monotonic clock, read before the rings were drained).
    pub fn pop_ready(&mut self, now: u64) -> Option<T> {
        let quiet = now.saturating_sub(HOLD_NS);
        let safe = self.latest.iter().map(|&l| l.max(quiet)).min()?;
        if self.held.peek()?.0.ts <= safe {
            self.held.pop().map(|Reverse(h)| h.item)
        } else {
            None
        }
    }

    /// How long until the earliest held record is out of its hold at the
    /// latest (it may be ready sooner, when the other rings move on).
    pub fn due_in(&self, now: u64) -> Option<Duration> {
        let top = self.held.peek()?.0.ts;
        Some(Duration::from_nanos(
            top.saturating_add(HOLD_NS).saturating_sub(now),
        ))
    }

    /// Every held record, in order, whatever the rings may still hold: at
    /// the end, or when the caller knows no producer is running.
    pub fn pop_any(&mut self) -> Option<T> {
        self.held.pop().map(|Reverse(h)| h.item)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ready(m: &mut Merge<&'static str>, now: u64) -> Vec<&'static str> {
        std::iter::from_fn(|| m.pop_ready(now)).collect()
    }

    #[test]
    fn one_ring_waits_for_nothing() {
        let mut m = Merge::new(1);
        m.push(0, 100 * MS, "a");
        m.push(0, 100 * MS + 5, "b");
        assert_eq!(ready(&mut m, 100 * MS + 10), ["a", "b"]);
        assert!(m.is_empty() && m.due_in(0).is_none());
    }

    #[test]
    fn two_rings_come_out_in_stamp_order() {
        let mut m = Merge::new(2);
        // CPU 1 saw the reply before CPU 0's request was read.
        m.push(1, 100 * MS + 20, "reply");
        m.push(0, 100 * MS + 10, "request");
        m.push(0, 100 * MS + 30, "ack");
        // Ring 1 is at +20, ring 0 at +30: the first two are safe, the ack
        // waits (ring 1 may still hand up something stamped before it).
        assert_eq!(ready(&mut m, 100 * MS + 40), ["request", "reply"]);
        assert_eq!(m.len(), 1);
        m.push(1, 100 * MS + 35, "data");
        assert_eq!(ready(&mut m, 100 * MS + 40), ["ack"]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_quiet_ring_holds_records_for_at_most_the_hold() {
        let mut m = Merge::new(2);
        m.push(0, 100 * MS, "alone");
        // Ring 1 has handed up nothing: it may still hold something older.
        assert!(ready(&mut m, 100 * MS + 10).is_empty());
        assert_eq!(
            m.due_in(100 * MS + 10),
            Some(Duration::from_nanos(HOLD_NS - 10))
        );
        assert!(ready(&mut m, 100 * MS + HOLD_NS - 1).is_empty());
        assert_eq!(ready(&mut m, 100 * MS + HOLD_NS), ["alone"]);
    }

    #[test]
    fn a_late_coarse_stamp_still_comes_out() {
        let mut m = Merge::new(2);
        m.push(0, 200 * MS, "sample");
        m.push(1, 201 * MS, "sample");
        assert_eq!(ready(&mut m, 202 * MS).len(), 2);
        // A DNS answer stamped by the coarse clock, before what already left.
        m.push(1, 199 * MS, "dns");
        assert_eq!(ready(&mut m, 202 * MS), ["dns"]);
    }

    #[test]
    fn equal_stamps_keep_their_arrival_order() {
        let mut m = Merge::new(2);
        for (ring, name) in [(0, "a"), (1, "b"), (0, "c"), (1, "d")] {
            m.push(ring, 7 * MS, name);
        }
        assert_eq!(ready(&mut m, 7 * MS), ["a", "b", "c", "d"]);
    }

    #[test]
    fn pop_any_empties_in_order_regardless_of_the_hold() {
        let mut m = Merge::new(3);
        m.push(2, 30, "c");
        m.push(0, 10, "a");
        m.push(1, 20, "b");
        let all: Vec<_> = std::iter::from_fn(|| m.pop_any()).collect();
        assert_eq!(all, ["a", "b", "c"]);
    }
}
