//! Reads the per-CPU ring buffers on a thread of its own: a ring's fd becomes
//! readable when the kernel submitted a record that wakes the reader
//! (`sensor_common::record::wakes_reader`: first payloads, DNS, probes, a
//! filling ring), and a poll of `RING_POLL_MS` picks up the bulk records that
//! do not. Records of several rings are merged in timestamp order
//! (`super::merge`: about 20 µs, up to 250 µs); each then goes straight to the
//! pipeline's queue (one thread hop from the kernel to the pipeline: what a
//! block waits for).
//!
//! [`Ring`] is the consumer side of the kernel's BPF ring buffer, mapped here
//! rather than through aya's `RingBuf`, which publishes its read position
//! after every record. The kernel reads that position on every reserve (and
//! for every wake-up decision and `BPF_RB_AVAIL_DATA` query), so a store per
//! record moves its cache line between the reader's CPU and the producer's
//! once per record. [`Ring`] publishes once per batch instead (every
//! `PUBLISH_BYTES`, or a quarter of a smaller ring) and at the end of each
//! drain.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{self, AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use aya::{
    maps::{Map, MapData, MapError},
    sys::SyscallError,
};
use sensor_common::record::UNSTAMPED;

use super::{
    clock::mono_now_ns,
    merge::Merge,
    record::{Record, RecordError},
};

/// Stamps a record the program left unstamped (a DNS answer) with `now`, the
/// read's time, and returns the stamp the merge orders it by: its own, or
/// [`UNSTAMPED`] (before anything held) for one stamped here, as an answer
/// precedes the flows it announces. A record that does not decode has no
/// stamp either: it goes at once (it is counted and skipped downstream).
fn stamp(rec: &mut RecordResult, now: u64) -> u64 {
    match rec {
        Ok(r) if r.hdr.ts_ns == UNSTAMPED => {
            r.hdr.ts_ns = now;
            UNSTAMPED
        }
        Ok(r) => r.hdr.ts_ns,
        Err(_) => UNSTAMPED,
    }
}

/// Records [`RingReader::run`] hands over at once at most.
pub const BATCH: usize = 64;

/// What the reader hands downstream.
pub type RecordResult = Result<Record, RecordError>;

/// How long one wait for records lasts: bulk records announce themselves
/// with no wake-up, so this bounds how long they wait.
const POLL: Duration = Duration::from_millis(sensor_common::record::RING_POLL_MS as u64);

/// The shortest wait between two reads of the rings while records are held.
const MIN_WAIT: Duration = Duration::from_nanos(super::merge::MARGIN_NS);

/// The record header's flags and size (uapi `linux/bpf.h`): a record still
/// being written, a record its producer discarded, and the 8-byte header
/// (length word, page offset) before every record.
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

/// The most the read position runs ahead of the published one. Space read
/// but not yet published is not free for the producer yet, so the bound is
/// also at most a quarter of the ring.
const PUBLISH_BYTES: usize = 64 * 1024;

/// One shared mapping of the ring map's fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; the kernel
// writes it concurrently, which every read here accounts for (atomics for the
// positions and headers, records read only once committed).
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> Result<Self, MapError> {
        // SAFETY: a fresh shared mapping of an open fd; the kernel checks
        // that the range and protection are allowed for a ring buffer map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MapError::SyscallError(SyscallError {
                call: "mmap",
                io_error: std::io::Error::last_os_error(),
            }));
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Self { ptr, len })
            .ok_or(MapError::SyscallError(SyscallError {
                call: "mmap",
                io_error: std::io::Error::other("mapped at address 0"),
            }))
    }

    /// The word at `offset` (8-aligned, inside the mapping).
    fn word<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + size_of::<T>() <= self.len && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (the callers' offsets are page starts
        // and 8-aligned record starts); atomics only, so shared access is sound.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<T>() }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the whole mapping, valid for `len` bytes while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing borrows it now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The ring buffer's consumer: drains committed records in order.
pub struct Ring {
    /// Holds the fd the mappings belong to open.
    map: MapData,
    /// The consumer page (read-write): the published read position.
    consumer: Mapping,
    /// The producer page (read-only: producer position) followed by the data
    /// pages, mapped twice in a row so a record that wraps reads as one slice.
    producer: Mapping,
    page: usize,
    mask: usize,
    /// How far this consumer has read, published or not.
    pos: usize,
    /// What the kernel was last told.
    published: usize,
    publish_every: usize,
    /// The last read stopped short of the producer position it read (a
    /// record still being written, or `take` said stop).
    behind: bool,
}

impl TryFrom<Map> for Ring {
    type Error = MapError;

    fn try_from(map: Map) -> Result<Self, MapError> {
        match map {
            Map::RingBuf(data) => Self::new(data),
            // Another type: aya's own conversion refuses it, naming the type.
            other => Err(aya::maps::RingBuf::try_from(other)
                .err()
                .unwrap_or(MapError::InvalidMapType { map_type: u32::MAX })),
        }
    }
}

impl Ring {
    pub fn new(map: MapData) -> Result<Self, MapError> {
        let size = map.info()?.max_entries() as usize;
        let page = page_size();
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let pos = consumer.word::<AtomicUsize>(0).load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            pos,
            published: pos,
            publish_every: PUBLISH_BYTES.min(size / 4),
            behind: false,
        })
    }

    /// Hands every committed record to `take`, in order, and returns how
    /// many it saw; stops early when `take` returns false (that record
    /// counts as read). Discarded records are skipped. Before returning, the
    /// read position is published and the ring checked once more after a
    /// full fence: either this sees a record committed meanwhile, or its
    /// producer saw the published position and woke the reader.
    pub fn drain(&mut self, mut take: impl FnMut(&[u8]) -> bool) -> usize {
        let mut seen = 0;
        loop {
            let before = self.pos;
            let stopped = self.read_committed(&mut take, &mut seen);
            self.publish();
            if stopped || self.pos == before {
                return seen;
            }
            atomic::fence(Ordering::SeqCst);
        }
    }

    /// Reads up to the producer position or the first record still being
    /// written. True if `take` asked to stop.
    fn read_committed(&mut self, take: &mut impl FnMut(&[u8]) -> bool, seen: &mut usize) -> bool {
        // Release-stored by the kernel after the record's header.
        let end = self.producer.word::<AtomicUsize>(0).load(Ordering::Acquire);
        // Positions only grow; equality, not order, is wrap-safe.
        while self.pos != end {
            let at = self.page + (self.pos & self.mask);
            // The kernel clears BUSY with a full barrier once the record is
            // written: acquire pairs with it.
            let header = self.producer.word::<AtomicU32>(at).load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                self.behind = true;
                return false;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            self.pos = self
                .pos
                .wrapping_add((HEADER_BYTES + len).next_multiple_of(8));
            if header & DISCARD_BIT == 0 {
                *seen += 1;
                // The data pages are mapped twice, so a record never runs
                // past the mapping; an empty slice would be a kernel bug,
                // and is then counted downstream as a short record.
                let start = at + HEADER_BYTES;
                let record = self.producer.bytes().get(start..start + len).unwrap_or(&[]);
                if !take(record) {
                    self.behind = self.pos != end;
                    return true;
                }
            }
            if self.pos.wrapping_sub(self.published) >= self.publish_every {
                self.publish();
            }
        }
        self.behind = false;
        false
    }

    /// Tells the kernel the space up to the read position is free.
    fn publish(&mut self) {
        if self.published != self.pos {
            // Release: the records' reads happen before the kernel reuses their space.
            self.consumer
                .word::<AtomicUsize>(0)
                .store(self.pos, Ordering::Release);
            self.published = self.pos;
        }
    }

    /// Whether the last [`Ring::drain`] read up to the producer position
    /// it last read, nothing still being written: every record reserved
    /// before that read was handed over.
    pub fn caught_up(&self) -> bool {
        !self.behind
    }

    fn raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// The kernel's page size: a ring's unit.
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The per-CPU rings (`sensor_common::maps::RINGS`), one per online CPU.
pub struct Rings {
    rings: Vec<Ring>,
}

impl Rings {
    pub fn new(rings: Vec<Ring>) -> Self {
        Self { rings }
    }

    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Each ring's size in bytes.
    pub fn bytes_each(&self) -> usize {
        self.rings.first().map_or(0, |r| r.mask + 1)
    }

    /// [`Ring::drain`] on every ring in turn, stopping at the first record
    /// `take` refuses: in CPU order, not merged. For callers that know
    /// which CPU produced what (tests and benchmarks pin their threads).
    pub fn drain(&mut self, mut take: impl FnMut(&[u8]) -> bool) -> usize {
        let mut seen = 0;
        let mut stopped = false;
        for ring in &mut self.rings {
            seen += ring.drain(|b| {
                stopped = !take(b);
                !stopped
            });
            if stopped {
                break;
            }
        }
        seen
    }
}

pub struct RingReader {
    rings: Rings,
}

impl RingReader {
    pub fn new(rings: Rings) -> Self {
        Self { rings }
    }

    /// The rings back (a benchmark reuses them).
    pub fn into_rings(self) -> Rings {
        self.rings
    }

    /// Drains the rings into `deliver`, merged in timestamp order
    /// ([`super::merge`]), until `stop` is set or `deliver` says the
    /// pipeline is gone (returns false). `deliver` takes a batch (it may
    /// leave the vector empty or not: it is cleared after): what one read of
    /// the rings released, up to [`BATCH`] records — one hand-over, one
    /// wake-up of the pipeline, where a record each cost a futex wake and two
    /// context switches. A batch ends early at a record a decision waits for
    /// ([`Record::urgent`]): it waits for no other record's decoding. A full
    /// queue holds the reader back (`deliver` blocks); the kernel then counts
    /// `ring_full` instead of anything being lost silently. Records still
    /// held when `stop` is set are delivered.
    pub fn run(
        &mut self,
        stop: &Arc<AtomicBool>,
        mut deliver: impl FnMut(&mut Vec<RecordResult>) -> bool,
    ) -> std::io::Result<()> {
        super::sched::enter("ring");
        let mut fds: Vec<libc::pollfd> = (self.rings.rings)
            .iter()
            .map(|r| libc::pollfd {
                fd: r.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut merge = Merge::new(self.rings.len());
        let single = self.rings.len() == 1;
        let mut batch = Vec::with_capacity(BATCH);
        // Hands the batch over once it is full or ends in an urgent record,
        // or with `any` once it holds anything; false once the pipeline is
        // gone.
        let mut hand = |batch: &mut Vec<RecordResult>, any: bool| {
            let urgent = batch
                .last()
                .is_some_and(|r| r.as_ref().is_ok_and(Record::urgent));
            if batch.is_empty() || !(any || urgent || batch.len() >= BATCH) {
                return true;
            }
            let ok = deliver(batch);
            batch.clear();
            ok
        };
        while !stop.load(Ordering::Relaxed) {
            let now = mono_now_ns();
            let mut gone = false;
            for (i, ring) in self.rings.rings.iter_mut().enumerate() {
                // Decode (copy) each record: its bytes are the kernel's again
                // once the read position is published.
                ring.drain(|bytes| {
                    let mut rec = Record::decode(bytes);
                    let key = stamp(&mut rec, now);
                    if single {
                        batch.push(rec);
                        gone = !hand(&mut batch, false);
                    } else {
                        merge.push(i, key, rec);
                    }
                    !gone
                });
                // Records are stamped after their slot is reserved: a ring
                // read to its end, nothing busy, has nothing stamped before
                // `now` left to hand up.
                if ring.caught_up() {
                    merge.caught_up(i, now);
                }
                if gone {
                    return Ok(());
                }
            }
            while !gone && let Some(rec) = merge.pop_ready(now) {
                batch.push(rec);
                gone = !hand(&mut batch, false);
            }
            if gone || !hand(&mut batch, true) {
                return Ok(());
            }
            // At least the margin: a ring behind a record being written
            // would otherwise make this a busy loop until it is committed.
            let wait = merge
                .due_in(mono_now_ns())
                .map_or(POLL, |d| d.clamp(MIN_WAIT, POLL));
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::c_long::try_from(wait.as_nanos()).unwrap_or(0),
            };
            // SAFETY: `fds` holds one valid pollfd per ring's open fd; no
            // signal mask is changed (null).
            let r = unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    &raw const ts,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        while let Some(rec) = merge.pop_any() {
            batch.push(rec);
            if !hand(&mut batch, false) {
                return Ok(());
            }
        }
        hand(&mut batch, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::record::{RecordHeader, RecordKind};

    use super::*;

    fn rec(kind: RecordKind, ts_ns: u64) -> Record {
        Record {
            hdr: RecordHeader {
                ts_ns,
                ..RecordHeader::zeroed()
            },
            kind,
            frame: Vec::new(),
        }
    }

    #[test]
    fn an_unstamped_record_takes_the_reads_time_and_goes_first() {
        let mut dns = Ok(rec(RecordKind::Dns, UNSTAMPED));
        assert_eq!(stamp(&mut dns, 5_000), UNSTAMPED);
        assert_eq!(dns.unwrap().hdr.ts_ns, 5_000);

        let mut sample = Ok(rec(RecordKind::Sample, 4_000));
        assert_eq!(stamp(&mut sample, 5_000), 4_000);
        assert_eq!(sample.unwrap().hdr.ts_ns, 4_000);

        let mut bad: RecordResult = Err(RecordError::TooShort(3));
        assert_eq!(stamp(&mut bad, 5_000), UNSTAMPED);
    }
}
