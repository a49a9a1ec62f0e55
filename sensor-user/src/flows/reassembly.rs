//! TCP reassembly for one direction of a flow: delivers the byte stream in order.
//!
//! - Sequence numbers map to 64-bit stream positions from the first segment seen
//!   (the SYN's ISN + 1, or the first data segment of a mid-stream flow), so
//!   wraparound is handled once, here.
//! - Retransmissions and overlaps: the first copy of a byte wins, whether it was
//!   already delivered or is still buffered out of order.
//! - Out-of-order segments wait in a buffer bounded in bytes; when it is full (or
//!   the caller gives up on the hole, e.g. at FIN or idle), the hole is reported as
//!   a gap and delivery resumes after it.

use std::collections::BTreeMap;

/// What the reassembler hands on, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// `n` bytes of the stream were never seen.
    Gap(u64),
}

/// Counters for one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub delivered: u64,
    /// Bytes received again (retransmissions, overlaps), dropped.
    pub duplicate: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Segments too far from the stream position to be this flow's (> 1 GiB).
    pub implausible: u64,
}

/// Farthest a segment may start from the next expected byte and still be taken.
const MAX_JUMP: i64 = 1 << 30;

#[derive(Debug)]
pub struct Reassembler {
    /// Sequence number and stream position of the next expected byte, once anchored.
    next: Option<(u32, u64)>,
    /// Out-of-order bytes by stream position; entries never overlap.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    max_pending: usize,
    pub stats: ReassemblyStats,
}

impl Reassembler {
    /// `max_pending`: most out-of-order bytes held while waiting for a hole.
    pub fn new(max_pending: usize) -> Self {
        Self {
            next: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
            stats: ReassemblyStats::default(),
        }
    }

    /// A SYN with initial sequence number `isn`: the stream starts at `isn + 1`.
    pub fn syn(&mut self, isn: u32) {
        if self.next.is_none() {
            self.next = Some((isn.wrapping_add(1), 0));
        }
    }

    /// Stream position of `seq`, relative to the next expected byte.
    fn position(&self, seq: u32) -> Option<u64> {
        let (nseq, npos) = self.next?;
        let delta = i64::from(seq.wrapping_sub(nseq) as i32);
        npos.checked_add_signed(delta)
    }

    /// Feeds one segment; calls `out` with everything now deliverable, in order.
    pub fn segment(&mut self, seq: u32, data: &[u8], out: &mut impl FnMut(Chunk<'_>)) {
        if data.is_empty() {
            return;
        }
        if self.next.is_none() {
            // Mid-stream: the stream starts here.
            self.next = Some((seq, 0));
        }
        let Some((nseq, npos)) = self.next else {
            return; // anchored just above
        };
        if i64::from(seq.wrapping_sub(nseq) as i32).abs() > MAX_JUMP {
            self.stats.implausible += 1;
            return;
        }
        let Some(pos) = self.position(seq) else {
            // Before the stream's start: all of it is old.
            self.stats.duplicate += data.len() as u64;
            return;
        };
        let end = pos + data.len() as u64;
        if end <= npos {
            self.stats.duplicate += data.len() as u64;
            return;
        }
        if pos <= npos {
            // Delivered bytes win: trim them off the front.
            let skip = (npos - pos) as usize;
            self.stats.duplicate += skip as u64;
            self.deliver(&data[skip..], out);
            self.drain(out);
            return;
        }
        self.buffer(pos, data);
        if self.pending_bytes > self.max_pending {
            self.skip_hole(out);
        }
    }

    /// Gives up on the current hole (FIN, idle, buffer full): reports it as a gap
    /// and delivers what follows it.
    pub fn skip_hole(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        let Some((&first, _)) = self.pending.first_key_value() else {
            return;
        };
        let Some((nseq, npos)) = self.next else {
            return;
        };
        let gap = first - npos;
        self.stats.gaps += 1;
        self.stats.gap_bytes += gap;
        out(Chunk::Gap(gap));
        self.next = Some((nseq.wrapping_add(gap as u32), first));
        self.drain(out);
    }

    /// The kernel sampled a segment far ahead (1-in-K after the head budget):
    /// everything before `seq` is a gap; delivery resumes at `seq`.
    pub fn jump(&mut self, seq: u32, out: &mut impl FnMut(Chunk<'_>)) {
        let Some(pos) = self.position(seq) else {
            self.next = Some((seq, 0));
            return;
        };
        // Buffered bytes before the jump point still count.
        while self
            .pending
            .first_key_value()
            .is_some_and(|(&p, _)| p < pos)
        {
            self.skip_hole(out);
        }
        let Some((_, npos)) = self.next else {
            return;
        };
        if pos > npos {
            self.stats.gaps += 1;
            self.stats.gap_bytes += pos - npos;
            out(Chunk::Gap(pos - npos));
            self.next = Some((seq, pos));
        }
    }

    fn deliver(&mut self, data: &[u8], out: &mut impl FnMut(Chunk<'_>)) {
        let Some((nseq, npos)) = self.next else {
            return;
        };
        self.next = Some((
            nseq.wrapping_add(data.len() as u32),
            npos + data.len() as u64,
        ));
        self.stats.delivered += data.len() as u64;
        out(Chunk::Data(data));
    }

    /// Delivers buffered bytes that became contiguous.
    fn drain(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let Some((_, npos)) = self.next else {
                return;
            };
            let pos = *entry.key();
            if pos > npos {
                break;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let end = pos + data.len() as u64;
            if end <= npos {
                self.stats.duplicate += data.len() as u64;
                continue;
            }
            let skip = (npos - pos) as usize;
            self.stats.duplicate += skip as u64;
            self.deliver(&data[skip..], out);
        }
    }

    /// Stores the parts of `data` (at `pos`) that no buffered segment covers yet:
    /// first copy wins among out-of-order segments too.
    fn buffer(&mut self, pos: u64, data: &[u8]) {
        let end = pos + data.len() as u64;
        // Buffered ranges that overlap [pos, end), in order.
        let mut covered: Vec<(u64, u64)> = Vec::new();
        if let Some((&p, d)) = self.pending.range(..pos).next_back()
            && p + d.len() as u64 > pos
        {
            covered.push((p, p + d.len() as u64));
        }
        covered.extend(
            self.pending
                .range(pos..end)
                .map(|(&p, d)| (p, p + d.len() as u64)),
        );
        let mut cursor = pos;
        let mut stored = 0;
        for (cs, ce) in covered.into_iter().chain(std::iter::once((end, end))) {
            if cs > cursor {
                let piece = &data[(cursor - pos) as usize..(cs.min(end) - pos) as usize];
                stored += piece.len();
                self.pending.insert(cursor, piece.to_vec());
            }
            cursor = cursor.max(ce);
            if cursor >= end {
                break;
            }
        }
        self.pending_bytes += stored;
        self.stats.duplicate += (data.len() - stored) as u64;
    }

    /// Out-of-order bytes held now.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds segments, returns the delivered stream with gaps as `#` × n.
    fn run(r: &mut Reassembler, segs: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, d) in segs {
            r.segment(*seq, d, &mut |c| match c {
                Chunk::Data(b) => out.extend_from_slice(b),
                Chunk::Gap(n) => out.extend(std::iter::repeat_n(b'#', n as usize)),
            });
        }
        out
    }

    #[test]
    fn in_order_and_out_of_order() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(99);
        assert_eq!(
            run(&mut r, &[(100, b"GET "), (104, b"/ HT"), (108, b"TP/1.1")]),
            b"GET / HTTP/1.1"
        );
        let mut r = Reassembler::new(1 << 20);
        r.syn(99);
        assert_eq!(
            run(&mut r, &[(108, b"TP/1.1"), (104, b"/ HT"), (100, b"GET ")]),
            b"GET / HTTP/1.1"
        );
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn retransmissions_and_overlaps_first_copy_wins() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(0);
        let got = run(
            &mut r,
            &[(1, b"abcd"), (1, b"abcd"), (3, b"XXef"), (2, b"YYYYYg")],
        );
        assert_eq!(got, b"abcdefg");
        assert_eq!(r.stats.duplicate, 4 + 2 + 5);
        // Out of order overlaps: the first buffered copy wins as well.
        let mut r = Reassembler::new(1 << 20);
        r.syn(0);
        let got = run(&mut r, &[(5, b"efgh"), (4, b"DXXXXi"), (1, b"abc")]);
        assert_eq!(got, b"abcDefghi");
        assert_eq!(r.stats.duplicate, 4, "the XXXX");
    }

    #[test]
    fn mid_stream_flows_anchor_on_their_first_segment() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(
            run(&mut r, &[(5000, b"HTTP/1.1 200 OK\r\n"), (5017, b"\r\n")]),
            b"HTTP/1.1 200 OK\r\n\r\n"
        );
        // Older bytes of a mid-stream flow are old news.
        assert_eq!(run(&mut r, &[(4990, b"0123456789")]), b"");
    }

    #[test]
    fn sequence_wraparound() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(u32::MAX - 2);
        let got = run(&mut r, &[(u32::MAX - 1, b"ab"), (0, b"cd"), (2, b"ef")]);
        assert_eq!(got, b"abcdef");
    }

    #[test]
    fn a_full_buffer_reports_the_hole_as_a_gap() {
        let mut r = Reassembler::new(8);
        r.syn(0);
        // Byte 1..5 never arrive; 10 bytes wait behind the hole: over the bound.
        let got = run(&mut r, &[(5, b"56789"), (10, b"ABCDE")]);
        assert_eq!(got, b"####56789ABCDE");
        assert_eq!((r.stats.gaps, r.stats.gap_bytes), (1, 4));
        // Delivery goes on after the gap; the late hole bytes are old now.
        assert_eq!(run(&mut r, &[(1, b"1234"), (15, b"F")]), b"F");
    }

    #[test]
    fn skip_hole_on_demand() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(0);
        assert_eq!(run(&mut r, &[(1, b"ab"), (10, b"xyz")]), b"ab");
        let mut out = Vec::new();
        r.skip_hole(&mut |c| out.push(format!("{c:?}")));
        assert_eq!(out, ["Gap(7)", "Data([120, 121, 122])"]);
    }

    #[test]
    fn a_secret_split_at_every_position_in_every_order_reassembles() {
        let msg = b"GET /login?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n";
        for cut in 1..msg.len() {
            for reverse in [false, true] {
                let (a, b) = msg.split_at(cut);
                let mut segs = vec![(1u32, a), (1 + cut as u32, b)];
                if reverse {
                    segs.reverse();
                }
                let mut r = Reassembler::new(1 << 20);
                r.syn(0);
                assert_eq!(run(&mut r, &segs), msg, "cut {cut} reversed {reverse}");
            }
        }
    }

    #[test]
    fn jump_ahead_to_a_tail_sample() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(0);
        let mut got = run(&mut r, &[(1, b"head")]);
        r.jump(101, &mut |c| {
            if let Chunk::Gap(n) = c {
                got.extend(std::iter::repeat_n(b'#', n as usize));
            }
        });
        got.extend(run(&mut r, &[(101, b"tail")]));
        assert_eq!(got.len(), 4 + 96 + 4);
        assert!(got.ends_with(b"tail"));
        assert_eq!(r.stats.gaps, 1);
    }

    #[test]
    fn implausible_jumps_are_ignored() {
        let mut r = Reassembler::new(1 << 20);
        r.syn(0);
        assert_eq!(
            run(&mut r, &[(1, b"a"), (0x8000_0000, b"zzz"), (2, b"b")]),
            b"ab"
        );
        assert_eq!(r.stats.implausible, 1);
    }
}
