//! Reads the ring buffer on tokio without busy polling: the ring's fd becomes
//! readable when the kernel submitted records.

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

use super::record::{Record, RecordError};

/// What the reader hands downstream.
pub type RecordResult = Result<Record, RecordError>;

pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    /// Registers the ring with tokio's reactor; call inside a runtime.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as
        // long as it lives, and the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Drains the ring into `tx` until `shutdown` turns true or `tx` closes.
    /// A full channel holds the reader back; the kernel then counts `ring_full`
    /// instead of anything being lost silently.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<RecordResult>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
                guard = self.fd.readable_mut() => {
                    let mut guard = guard?;
                    loop {
                        // Decode (copy) before awaiting: an item borrows the ring.
                        let rec = match guard.get_inner_mut().next() {
                            Some(item) => Record::decode(&item),
                            None => break,
                        };
                        if tx.send(rec).await.is_err() {
                            return Ok(());
                        }
                    }
                    guard.clear_ready();
                }
            }
        }
    }
}
