//! Raw frames into the lab: crafted Ethernet/IP/TCP frames sent with an
//! AF_PACKET socket from one namespace's interface, for traffic no socket
//! API makes (floods from many addresses, tunnel feeds, mirror copies).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::Context as _;

use crate::netns::Netns;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// Raw frames out of one interface of a namespace.
pub struct Sender {
    fd: OwnedFd,
    ifindex: i32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    pub sent: u64,
}

/// The MAC address and ifindex of `iface` in `ns`.
pub fn mac(ns: &Netns, iface: &str) -> anyhow::Result<([u8; 6], i32)> {
    let out = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    let addr = v[0]["address"].as_str().context("no MAC address")?;
    let mut m = [0u8; 6];
    for (i, b) in addr.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(b, 16)?;
    }
    let ifindex = v[0]["ifindex"].as_i64().context("no ifindex")?;
    Ok((m, i32::try_from(ifindex)?))
}

impl Sender {
    /// Frames out of `iface` in `ns`, addressed to `dst_mac`.
    pub fn new(ns: &Netns, iface: &str, dst_mac: [u8; 6]) -> anyhow::Result<Self> {
        let (src_mac, ifindex) = mac(ns, iface)?;
        let fd = ns.run(|| {
            // SAFETY: plain socket call; the fd is owned right away.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh fd of our own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })??;
        Ok(Self {
            fd,
            ifindex,
            src_mac,
            dst_mac,
            sent: 0,
        })
    }

    /// One frame: Ethernet, then `l3` of `ethertype`.
    pub fn send(&mut self, l3: &[u8], ethertype: u16) -> anyhow::Result<()> {
        self.send_frame(&ethernet(self.dst_mac, self.src_mac, ethertype, l3))
    }

    /// One whole frame, as it is.
    pub fn send_frame(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&self.dst_mac);
        loop {
            // SAFETY: a valid buffer and address of the stated lengths.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r >= 0 {
                self.sent += 1;
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            // A full transmit queue: wait for it, as a flood source would.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e).context("sending a raw frame");
            }
            std::thread::yield_now();
        }
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add(sum: &mut u32, b: &[u8]) {
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        *sum += u32::from(w);
    }
}

/// A TCP header and payload, checksummed over `pseudo`.
fn tcp(pseudo: u32, ports: (u16, u16), seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&ports.0.to_be_bytes());
    t.extend_from_slice(&ports.1.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let mut sum = pseudo;
    add(&mut sum, &t);
    let c = fold(sum);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// The TCP pseudo-header's sum for a segment of `len` bytes.
fn pseudo(src: &[u8], dst: &[u8], len: u16) -> u32 {
    let mut sum = 0u32;
    add(&mut sum, src);
    add(&mut sum, dst);
    sum + 6 + u32::from(len)
}

/// An IPv4/TCP packet, checksums right (the receiving stack checks them).
pub fn tcp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    seq: u32,
    flags: u8,
    p: &[u8],
) -> Vec<u8> {
    let len = (20 + p.len()) as u16;
    let t = tcp(
        pseudo(&src.octets(), &dst.octets(), len),
        ports,
        seq,
        flags,
        p,
    );
    ipv4(src, dst, 6, &t)
}

/// An IPv6/TCP packet, checksum right.
pub fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ports: (u16, u16),
    seq: u32,
    flags: u8,
    p: &[u8],
) -> Vec<u8> {
    let len = (20 + p.len()) as u16;
    let t = tcp(
        pseudo(&src.octets(), &dst.octets(), len),
        ports,
        seq,
        flags,
        p,
    );
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
    ip[4..6].copy_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&t);
    ip
}

/// An IPv4 packet of protocol `proto` around `l4` (a tunnel's outer header).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum = 0;
    add(&mut sum, &ip);
    let c = fold(sum);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(l4);
    ip
}

/// An Ethernet frame around `l3`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}
