//! Reads the ring buffer on a thread of its own: the ring's fd becomes
//! readable when the kernel submitted a record that wakes the reader
//! (`sensor_common::record::wakes_reader`: first payloads, DNS, probes, a
//! filling ring), and a poll of `RING_POLL_MS` picks up the bulk records that
//! do not. Each record goes straight to the pipeline's queue (one thread hop
//! from the kernel to the pipeline: what a block waits for).

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::maps::{MapData, RingBuf};

use super::record::{Record, RecordError};

/// What the reader hands downstream.
pub type RecordResult = Result<Record, RecordError>;

/// How long one wait for records lasts: bulk records announce themselves
/// with no wake-up, so this bounds how long they wait.
const POLL_MS: i32 = sensor_common::record::RING_POLL_MS;

pub struct RingReader {
    ring: RingBuf<MapData>,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// The ring back (a benchmark reuses it).
    pub fn into_ring(self) -> RingBuf<MapData> {
        self.ring
    }

    /// Drains the ring into `deliver` until `stop` is set or `deliver` says
    /// the pipeline is gone (returns false). A full queue holds the reader back
    /// (`deliver` blocks); the kernel then counts `ring_full` instead of
    /// anything being lost silently.
    pub fn run(
        &mut self,
        stop: &Arc<AtomicBool>,
        mut deliver: impl FnMut(RecordResult) -> bool,
    ) -> std::io::Result<()> {
        super::sched::enter("ring");
        let fd = self.ring.as_raw_fd();
        while !stop.load(Ordering::Relaxed) {
            while let Some(item) = self.ring.next() {
                // Decode (copy) first: an item borrows the ring.
                let rec = Record::decode(&item);
                drop(item);
                if !deliver(rec) {
                    return Ok(());
                }
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the ring's open fd.
            let r = unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
