//! Crafted captures: TCP conversations written as pcap files (Ethernet, IPv4
//! or IPv6, correct sequence and acknowledgment numbers, a handshake first), for tests
//! that replay a protocol exchange no public capture holds. Addresses are the
//! documentation ranges.

use std::{net::IpAddr, path::Path};

/// One TCP connection, client → server and back, built message by message.
pub struct Conversation {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    seq: [u32; 2],
    frames: Vec<Vec<u8>>,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

fn addr(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("conversation address {s:?}: {e}"))
}

impl Conversation {
    /// A connection from `client:cport` to `server:sport` (both IPv4 or both
    /// IPv6), after its handshake.
    pub fn new(client: &str, cport: u16, server: &str, sport: u16) -> Self {
        let mut c = Self {
            client: (addr(client), cport),
            server: (addr(server), sport),
            seq: [1000, 5000],
            frames: Vec::new(),
        };
        c.frame(0, SYN, b"");
        c.seq[0] += 1;
        c.frame(1, SYN | ACK, b"");
        c.seq[1] += 1;
        c.frame(0, ACK, b"");
        c
    }

    fn frame(&mut self, from: usize, flags: u8, payload: &[u8]) {
        let (src, dst) = if from == 0 {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        match (src.0, dst.0) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = (20 + 20 + payload.len()) as u16;
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = (20 + payload.len()) as u16;
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.extend_from_slice(&[6, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!(
                "a conversation between {} and {}: mixed families",
                src.0, dst.0
            ),
        }
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&self.seq[from].to_be_bytes());
        let ack = if flags & SYN != 0 && flags & ACK == 0 {
            0
        } else {
            self.seq[1 - from]
        };
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        self.frames.push(f);
    }

    fn send(&mut self, from: usize, data: &[u8]) -> &mut Self {
        self.frame(from, ACK | PSH, data);
        self.seq[from] = self.seq[from].wrapping_add(data.len() as u32);
        self
    }

    /// The client sends `data` (one segment).
    pub fn client(&mut self, data: &[u8]) -> &mut Self {
        self.send(0, data)
    }

    /// The server sends `data` (one segment).
    pub fn server(&mut self, data: &[u8]) -> &mut Self {
        self.send(1, data)
    }

    /// Both sides close.
    pub fn close(&mut self) -> &mut Self {
        for from in [0, 1] {
            self.frame(from, FIN | ACK, b"");
            self.seq[from] = self.seq[from].wrapping_add(1);
        }
        self
    }

    /// Writes `convos` as one pcap at `path`, a millisecond between frames.
    pub fn write(path: &Path, convos: &[&Conversation]) -> std::io::Result<()> {
        Self::write_snapped(path, convos, 65_535)
    }

    /// As [`Self::write`], as `tcpdump -s SNAP` would: frames cut to `snap`
    /// bytes, their original lengths kept.
    pub fn write_snapped(path: &Path, convos: &[&Conversation], snap: u32) -> std::io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&snap.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        let mut us = 1_700_000_000_000_000u64;
        for c in convos {
            for f in &c.frames {
                us += 1000;
                out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
                out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
                let kept = &f[..f.len().min(snap as usize)];
                out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
                out.extend_from_slice(&(f.len() as u32).to_le_bytes());
                out.extend_from_slice(kept);
            }
        }
        std::fs::write(path, out)
    }
}
