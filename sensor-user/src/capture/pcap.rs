//! Reading captures (pcap and pcapng) for `leakwatch replay`: every frame is
//! turned into Ethernet framing, so the one shared parser serves live and
//! offline traffic alike.
//!
//! Link types: Ethernet, raw IP (101, 228, 229), Linux cooked (SLL, SLL2) and
//! BSD loopback (NULL, LOOP). Others are counted and skipped.

use std::{fs::File, io::BufReader, path::Path};

use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use sensor_common::parse::{ETH_P_IPV4, ETH_P_IPV6};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file ({message})")]
    Format { path: String, message: String },
    #[error("{path}: damaged after packet {packet}: {message}")]
    Damaged {
        path: String,
        packet: u64,
        message: String,
    },
}

/// One frame as read from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Ethernet-framed bytes.
    pub data: Vec<u8>,
}

/// Ethertype for an IP version nibble.
fn ip_ethertype(b: &[u8]) -> Option<u16> {
    match b.first()? >> 4 {
        4 => Some(ETH_P_IPV4),
        6 => Some(ETH_P_IPV6),
        _ => None,
    }
}

fn with_ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The frame in Ethernet framing, or None for link types (or frames) we skip.
pub fn to_ethernet(link: DataLink, data: &[u8]) -> Option<Vec<u8>> {
    match link {
        DataLink::ETHERNET => Some(data.to_vec()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            Some(with_ethernet(ip_ethertype(data)?, data))
        }
        DataLink::LINUX_SLL => {
            let proto = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
            Some(with_ethernet(proto, data.get(16..)?))
        }
        DataLink::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            Some(with_ethernet(proto, data.get(20..)?))
        }
        // BSD loopback: a 4-byte address family (host order for NULL, network for LOOP).
        DataLink::NULL | DataLink::LOOP => {
            let rest = data.get(4..)?;
            Some(with_ethernet(ip_ethertype(rest)?, rest))
        }
        _ => None,
    }
}

/// Reads every frame of `path`, calling `each` in capture order. Frames read
/// before a damaged part are delivered; the error then says where it broke.
/// Returns (frames delivered, frames skipped for their link type).
pub fn read(path: &Path, mut each: impl FnMut(Frame)) -> Result<(u64, u64), CaptureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: name.clone(),
        source,
    })?;
    let mut magic = [0u8; 4];
    {
        use std::io::Read as _;
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| CaptureError::Format {
                path: name.clone(),
                message: e.to_string(),
            })?;
    }
    let reader = BufReader::new(file);
    let (mut n, mut skipped) = (0u64, 0u64);
    let damaged = |n: u64, e: pcap_file::PcapError| CaptureError::Damaged {
        path: name.clone(),
        packet: n,
        message: e.to_string(),
    };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(reader).map_err(|e| CaptureError::Format {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = r.next_block() {
            let block = block.map_err(|e| damaged(n, e))?;
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links
                        .get(epb.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    match to_ethernet(link, &epb.data) {
                        Some(data) => {
                            n += 1;
                            each(Frame {
                                ts_ns: epb.timestamp.as_nanos() as u64,
                                data,
                            });
                        }
                        None => skipped += 1,
                    }
                }
                Block::SimplePacket(spb) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    match to_ethernet(link, &spb.data) {
                        Some(data) => {
                            n += 1;
                            each(Frame { ts_ns: 0, data });
                        }
                        None => skipped += 1,
                    }
                }
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(reader).map_err(|e| CaptureError::Format {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let link = r.header().datalink;
        while let Some(pkt) = r.next_packet() {
            let pkt = pkt.map_err(|e| damaged(n, e))?;
            match to_ethernet(link, &pkt.data) {
                Some(data) => {
                    n += 1;
                    each(Frame {
                        ts_ns: pkt.timestamp.as_nanos() as u64,
                        data,
                    });
                }
                None => skipped += 1,
            }
        }
    }
    Ok((n, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_become_ethernet() {
        let ip = [0x45u8, 0, 0, 20];
        assert_eq!(
            to_ethernet(DataLink::IPV4, &ip).unwrap()[12..16],
            [0x08, 0x00, 0x45, 0]
        );
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        sll.push(0x60);
        assert_eq!(
            to_ethernet(DataLink::LINUX_SLL, &sll).unwrap()[12..15],
            [0x86, 0xdd, 0x60]
        );
        let null = [30u8, 0, 0, 0, 0x60, 0];
        assert_eq!(
            to_ethernet(DataLink::NULL, &null).unwrap()[12..14],
            [0x86, 0xdd]
        );
        assert_eq!(to_ethernet(DataLink::IEEE802_11, &ip), None);
        assert_eq!(to_ethernet(DataLink::RAW, &[0x10]), None);
    }
}
