//! Reading captures (pcap and pcapng) for `leakwatch replay`: every frame is
//! turned into Ethernet framing, so the one shared parser serves live and
//! offline traffic alike.
//!
//! Link types: Ethernet, raw IP (101, 228, 229), Linux cooked (SLL, SLL2) and
//! BSD loopback (NULL, LOOP). Others are counted and skipped.

use std::{fs::File, io::Read as _, path::Path};

use pcap_file::{
    DataLink,
    pcap::PcapParser,
    pcapng::{Block, PcapNgParser},
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
    #[error("{path}: damaged at byte {offset} (after packet {packet}): {message}")]
    Damaged {
        path: String,
        offset: u64,
        packet: u64,
        message: String,
    },
}

/// One frame as read from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Ethernet-framed bytes: borrowed from the file's buffer for Ethernet
    /// captures (no copy per packet), built for other link types.
    pub data: std::borrow::Cow<'a, [u8]>,
    /// Bytes the capture's snap length cut off the end (original length less
    /// captured length; 0 for a whole frame).
    pub cut: usize,
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
pub fn to_ethernet(link: DataLink, data: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if link == DataLink::ETHERNET {
        return Some(data.into());
    }
    other_to_ethernet(link, data).map(Into::into)
}

fn other_to_ethernet(link: DataLink, data: &[u8]) -> Option<Vec<u8>> {
    match link {
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

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// The file, read in chunks, with the file offset of the first unparsed byte.
struct Input {
    file: File,
    buf: Vec<u8>,
    start: usize,
    offset: u64,
}

impl Input {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Bytes read from the file so far.
    fn read(&self) -> u64 {
        self.offset + self.data().len() as u64
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    /// Reads the next chunk (into spare capacity: zeroing a megabyte per read
    /// cost as much as parsing it); false at the end of the file.
    fn fill(&mut self) -> std::io::Result<bool> {
        self.buf.drain(..self.start);
        self.start = 0;
        let n = (&mut self.file)
            .take(CHUNK as u64)
            .read_to_end(&mut self.buf)?;
        Ok(n > 0)
    }
}

/// What reading a capture counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadCounts {
    /// Frames handed on.
    pub delivered: u64,
    /// Frames of link types we do not read.
    pub skipped: u64,
    /// Records the snap length cut (included length below the original).
    pub truncated: u64,
    /// Records whose included length exceeds their original length (taken
    /// as captured, as Wireshark does).
    pub oversized: u64,
    /// Records whose timestamp fraction is out of range (clamped).
    pub bad_timestamps: u64,
}

impl std::ops::AddAssign for ReadCounts {
    fn add_assign(&mut self, o: Self) {
        self.delivered += o.delivered;
        self.skipped += o.skipped;
        self.truncated += o.truncated;
        self.oversized += o.oversized;
        self.bad_timestamps += o.bad_timestamps;
    }
}

/// Reads every frame of `path`, calling `each` in capture order, and `progress`
/// with the bytes read from the file so far after each chunk. Frames read before a damaged
/// part are delivered; the error then says at which byte, after which packet.
pub fn read(
    path: &Path,
    mut each: impl FnMut(Frame<'_>),
    mut progress: impl FnMut(u64),
) -> Result<ReadCounts, CaptureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: name.clone(),
        source,
    })?;
    let mut input = Input {
        file,
        buf: Vec::with_capacity(CHUNK),
        start: 0,
        offset: 0,
    };
    let damaged = |input: &Input, n: u64, message: String| CaptureError::Damaged {
        path: name.clone(),
        offset: input.offset,
        packet: n,
        message,
    };
    let io = |e: std::io::Error| CaptureError::Open {
        path: name.clone(),
        source: e,
    };
    // Enough bytes for either file header.
    while input.data().len() < 64 && input.fill().map_err(io)? {}
    progress(input.read());
    let format = |e: pcap_file::PcapError| CaptureError::Format {
        path: name.clone(),
        message: e.to_string(),
    };
    // Counts as it hands a frame on. What the snap length cut is measured on
    // the record as stored, before any link header is swapped for Ethernet's.
    let mut deliver = |link: DataLink, ts_ns: u64, raw: &[u8], orig: u32, c: &mut ReadCounts| {
        let cut = (orig as usize).saturating_sub(raw.len()).min(MAX_CUT);
        c.truncated += u64::from(cut > 0);
        c.oversized += u64::from(raw.len() > orig as usize);
        match to_ethernet(link, raw) {
            Some(data) => {
                c.delivered += 1;
                each(Frame { ts_ns, data, cut });
            }
            None => c.skipped += 1,
        }
    };
    let mut c = ReadCounts::default();
    let (stop, unit) = if input.data().starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let (rest, mut parser) = PcapNgParser::new(input.data()).map_err(format)?;
        let used = input.data().len() - rest.len();
        input.consume(used);
        let mut links: Vec<DataLink> = Vec::new();
        let stop = units(&mut input, &mut progress, |data| {
            let (rest, block) = parser.next_block(data)?;
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links
                        .get(epb.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    deliver(
                        link,
                        epb.timestamp.as_nanos() as u64,
                        &epb.data,
                        epb.original_len,
                        &mut c,
                    );
                }
                Block::SimplePacket(spb) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    deliver(link, 0, &spb.data, spb.original_len, &mut c);
                }
                _ => {}
            }
            Ok(data.len() - rest.len())
        });
        (stop, "block")
    } else {
        let (rest, parser) = PcapParser::new(input.data()).map_err(format)?;
        let used = input.data().len() - rest.len();
        input.consume(used);
        let link = parser.header().datalink;
        let nanos = parser.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
        // Raw records, validated here: a capture taken with a snap length
        // (`tcpdump -s 128`) has original lengths above it, which is what such
        // captures are; a packet cut short is analysed as far as it goes.
        let stop = units(&mut input, &mut progress, |data| {
            let (rest, pkt) = parser.next_raw_packet(data)?;
            let frac = if nanos {
                u64::from(pkt.ts_frac)
            } else {
                u64::from(pkt.ts_frac) * 1000
            };
            // A fraction out of range is taken as its whole second's worth.
            c.bad_timestamps += u64::from(frac > 999_999_999);
            let ts_ns = u64::from(pkt.ts_sec) * 1_000_000_000 + frac.min(999_999_999);
            deliver(link, ts_ns, &pkt.data, pkt.orig_len, &mut c);
            Ok(data.len() - rest.len())
        });
        (stop, "packet")
    };
    match stop {
        Stop::End => Ok(c),
        Stop::Truncated => Err(damaged(
            &input,
            c.delivered,
            format!("the file ends inside a {unit}"),
        )),
        Stop::Bad(m) => Err(damaged(&input, c.delivered, m)),
        Stop::Io(e) => Err(io(e)),
    }
}

/// Most bytes a snap length is taken to have cut (an IP packet's largest).
const MAX_CUT: usize = 65_535;

/// Why reading stopped.
enum Stop {
    End,
    /// The file ended inside a packet or block.
    Truncated,
    Bad(String),
    Io(std::io::Error),
}

/// Runs `step` over the file's bytes until the end: each call parses one
/// packet or block from the bytes it is given and says how many it used; more
/// are read when it needs them.
fn units(
    input: &mut Input,
    progress: &mut impl FnMut(u64),
    mut step: impl FnMut(&[u8]) -> Result<usize, pcap_file::PcapError>,
) -> Stop {
    loop {
        match step(input.data()) {
            Ok(used) => input.consume(used),
            Err(pcap_file::PcapError::IncompleteBuffer) => match input.fill() {
                Ok(true) => progress(input.read()),
                Ok(false) if input.data().is_empty() => return Stop::End,
                Ok(false) => return Stop::Truncated,
                Err(e) => return Stop::Io(e),
            },
            Err(e) => return Stop::Bad(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap in memory: `magic` picks the timestamp unit.
    fn one_packet_pcap(magic: u32, sec: u32, frac: u32) -> Vec<u8> {
        let frame = [0u8; 60];
        let mut f = Vec::new();
        f.extend_from_slice(&magic.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        for v in [sec, frac, 60, 60] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&frame);
        f
    }

    #[test]
    fn micro_and_nanosecond_timestamps() {
        let dir = std::env::temp_dir();
        for (magic, frac, want) in [
            (0xa1b2_c3d4u32, 250_000u32, 1_700_000_000_250_000_000u64),
            (0xa1b2_3c4d, 250_000_123, 1_700_000_000_250_000_123),
        ] {
            let p = dir.join(format!("lw-ts-{}-{magic:x}.pcap", std::process::id()));
            std::fs::write(&p, one_packet_pcap(magic, 1_700_000_000, frac)).unwrap();
            let mut ts = Vec::new();
            let c = read(&p, |f| ts.push(f.ts_ns), |_| {}).unwrap();
            let _ = std::fs::remove_file(&p);
            assert_eq!((c.delivered, c.bad_timestamps, ts), (1, 0, vec![want]));
        }
    }

    /// What `tcpdump -s 128` writes: a snap length of 128 in the header, long
    /// packets cut to it with their original length kept. Read as far as each
    /// goes; a record with an odd length or timestamp fraction is still taken,
    /// and each is counted.
    #[test]
    fn snap_length_captures_are_read() {
        let f = pcap_of(1, &[(10, 128, 1514), (2_000_000, 128, 60), (30, 60, 60)]);
        let p = std::env::temp_dir().join(format!("lw-snap-{}.pcap", std::process::id()));
        std::fs::write(&p, f).unwrap();
        let mut got = Vec::new();
        let c = read(&p, |fr| got.push((fr.data.len(), fr.cut)), |_| {}).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(got, vec![(128, 1386), (128, 0), (60, 0)]);
        let want = ReadCounts {
            delivered: 3,
            skipped: 0,
            truncated: 1,
            oversized: 1,
            bad_timestamps: 1,
        };
        assert_eq!(c, want);
    }

    /// The same in pcapng (what `tcpdump -s 128 -w x.pcapng` and `editcap -s`
    /// on a pcapng write): an Enhanced Packet Block whose captured length is
    /// below its original length.
    #[test]
    fn snap_length_pcapng_is_read() {
        let le = |f: &mut Vec<u8>, v: u32| f.extend_from_slice(&v.to_le_bytes());
        let mut f = Vec::new();
        // Section header: type, length, byte-order magic, version 1.0, unknown section length.
        for v in [0x0a0d_0d0a, 28, 0x1a2b_3c4d, 1, u32::MAX, u32::MAX, 28] {
            le(&mut f, v);
        }
        // Interface: Ethernet, snap length 128.
        for v in [1, 20, 1, 128, 20] {
            le(&mut f, v);
        }
        for (captured, original) in [(128u32, 1514u32), (60, 60)] {
            let total = 32 + captured;
            for v in [6, total, 0, 0, 1, captured, original] {
                le(&mut f, v);
            }
            f.extend_from_slice(&vec![0x42; captured as usize]);
            le(&mut f, total);
        }
        let p = std::env::temp_dir().join(format!("lw-snap-{}.pcapng", std::process::id()));
        std::fs::write(&p, f).unwrap();
        let mut got = Vec::new();
        let c = read(&p, |fr| got.push((fr.data.len(), fr.cut)), |_| {}).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(got, vec![(128, 1386), (60, 0)]);
        assert_eq!((c.delivered, c.truncated, c.oversized), (2, 1, 0));
    }

    /// A whole frame of a link type whose header is longer than Ethernet's
    /// is not taken as cut: the cut is measured on the record as stored.
    #[test]
    fn whole_cooked_frames_are_not_cut() {
        let f = pcap_of(113, &[(0, 76, 76)]);
        let p = std::env::temp_dir().join(format!("lw-sll-{}.pcap", std::process::id()));
        std::fs::write(&p, f).unwrap();
        let mut got = Vec::new();
        let c = read(&p, |fr| got.push((fr.data.len(), fr.cut)), |_| {}).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!((got, c.truncated), (vec![(74, 0)], 0));
    }

    /// A microsecond pcap of `link` with a snap length of 128 and records of
    /// (timestamp fraction, included length, original length); the frames
    /// are SLL-shaped IPv4 bytes, which Ethernet captures do not look at here.
    fn pcap_of(link: u32, records: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&128u32.to_le_bytes());
        f.extend_from_slice(&link.to_le_bytes());
        let mut frame = [0x42u8; 128];
        frame[14..16].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        for &(frac, incl, orig) in records {
            f.extend_from_slice(&1_700_000_000u32.to_le_bytes());
            f.extend_from_slice(&frac.to_le_bytes());
            f.extend_from_slice(&incl.to_le_bytes());
            f.extend_from_slice(&orig.to_le_bytes());
            f.extend_from_slice(&frame[..incl as usize]);
        }
        f
    }

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
