//! Merges the per-CPU rings' records into one stream in timestamp order.
//!
//! Each CPU's ring is in order by itself (a CPU runs one XDP program at a
//! time and stamps records with the monotonic clock), but a flow's two
//! directions, or a DNS answer and the flow it announces, can land on two
//! CPUs, and the pipeline needs them in the order they happened. So records
//! wait here until no ring can still hand up an earlier one. A ring that
//! handed up a record stamped `t` has nothing earlier left. The program
//! stamps a record after reserving its slot, so a ring read to its end with
//! no record still being written ([`Merge::caught_up`]) has nothing stamped
//! before the read began, less `MARGIN_NS` for a producer's store still on
//! its way to memory. A ring left behind a record being written waits for
//! it, at most `HOLD_NS` after its stamp. So a record waits about `MARGIN_NS`
//! plus one read of the rings, up to `HOLD_NS` while another CPU is in the
//! middle of a record, and not at all with one ring.
//!
//! What a block waits for when the other CPUs are quiet: the lab's idle
//! block-in-place p50 read 0.14–0.16 ms without a merge, 0.38–0.43 ms when
//! every quiet ring was held for 250 µs and 1.40–1.50 ms for 1 ms
//! (docs/performance.md). A CPU stalled longer than `HOLD_NS` between
//! reserve and commit (a VM's vCPU descheduled) makes its record come out
//! late, not lost.
//!
//! DNS answers are not stamped by the program (`record::UNSTAMPED`): the
//! reader stamps them with the read's time and pushes them with stamp 0, so
//! an answer comes out before anything held — possibly before a record made
//! a little earlier on another CPU, never after the flow it announces.

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

/// The most a record waits for a ring behind a record being written: far
/// above a record's reserve-to-commit time, a quarter of the 1 ms issue #17
/// allows.
pub const HOLD_NS: u64 = 250_000;

/// How long a producer's reserve may take to be seen by the reader after
/// its stamp was read: store buffers drain in well under a microsecond.
pub const MARGIN_NS: u64 = 20_000;

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

    /// `ring` was read to its end, nothing being written, after `now` was
    /// read: whatever it hands up next is stamped after `now - MARGIN_NS`.
    pub fn caught_up(&mut self, ring: usize, now: u64) {
        if let Some(l) = self.latest.get_mut(ring) {
            *l = (*l).max(now.saturating_sub(MARGIN_NS));
        }
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

    /// When to read the rings again for the earliest held record: once it
    /// is `MARGIN_NS` old, a read of rings that caught up releases it (a
    /// ring still behind a record being written releases it soon after, or
    /// the hold does).
    pub fn due_in(&self, now: u64) -> Option<Duration> {
        let top = self.held.peek()?.0.ts;
        Some(Duration::from_nanos(
            top.saturating_add(MARGIN_NS).saturating_sub(now),
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
    use sensor_common::record::UNSTAMPED;

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
    fn a_ring_behind_a_record_being_written_holds_records_for_at_most_the_hold() {
        let mut m = Merge::new(2);
        m.push(0, 100 * MS, "alone");
        // Ring 1 has handed up nothing and was not read to its end: it may
        // still hold something older.
        assert!(ready(&mut m, 100 * MS + 10).is_empty());
        assert_eq!(
            m.due_in(100 * MS + 10),
            Some(Duration::from_nanos(MARGIN_NS - 10))
        );
        assert!(ready(&mut m, 100 * MS + HOLD_NS - 1).is_empty());
        assert_eq!(ready(&mut m, 100 * MS + HOLD_NS), ["alone"]);
    }

    #[test]
    fn a_ring_read_to_its_end_releases_what_is_older_than_the_margin() {
        let mut m = Merge::new(2);
        m.push(0, 100 * MS, "request");
        m.push(0, 100 * MS + 50_000, "next");
        // Ring 1 read to its end, nothing being written, after the clock
        // read 100 ms + 60 µs: nothing it hands up later is older than
        // 100 ms + 40 µs.
        m.caught_up(1, 100 * MS + 60_000);
        assert_eq!(ready(&mut m, 100 * MS + 60_000), ["request"]);
        // The second is younger than that: the next read of the rings.
        m.caught_up(1, 100 * MS + 80_000);
        assert_eq!(ready(&mut m, 100 * MS + 80_000), ["next"]);
    }

    #[test]
    fn an_answer_stamped_by_the_reader_goes_before_what_is_held() {
        let mut m = Merge::new(2);
        // Held: ring 1 has not caught up.
        m.push(0, 200 * MS, "sample");
        m.push(1, UNSTAMPED, "dns");
        assert_eq!(ready(&mut m, 200 * MS), ["dns"]);
        m.caught_up(1, 201 * MS);
        assert_eq!(ready(&mut m, 201 * MS), ["sample"]);
        // After what already left, it still comes out at once.
        m.push(1, UNSTAMPED, "dns");
        assert_eq!(ready(&mut m, 201 * MS), ["dns"]);
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
