//! Recording the lab's traffic into a pcap (`cargo xtask lab record`): an
//! AF_PACKET socket per gateway interface, keeping what each interface
//! *receives* — exactly what the XDP program sees, each packet once — with
//! 802.1Q tags put back into the frames (the kernel hands them beside the
//! frame, in the packet's auxiliary data).

use std::{
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

const TP_STATUS_VLAN_VALID: u32 = 0x10;
const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;
const PACKET_OUTGOING: u8 = 4;
const SNAPLEN: usize = 65_535;

/// `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

type Frames = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A running recording; `finish` writes it.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    frames: Frames,
}

fn open(iface: &str) -> anyhow::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface}");
    }
    // SAFETY: a zeroed sockaddr_ll with family, protocol and interface set.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let one: libc::c_int = 1;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid option values of the sizes passed, on our socket.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            bail!("binding to {iface}: {}", std::io::Error::last_os_error());
        }
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as u32,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

/// One received frame with its tag restored; None for what the interface sent.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> Option<Vec<u8>> {
    // SAFETY: zeroed plain-data structs.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: every pointer in msg refers to live buffers of the given sizes.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    if n <= 0 || from.sll_pkttype == PACKET_OUTGOING {
        return None;
    }
    let mut frame = buf[..n as usize].to_vec();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<AuxData>());
                if aux.status & TP_STATUS_VLAN_VALID != 0 && frame.len() >= 12 {
                    let tpid = if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.vlan_tpid
                    } else {
                        0x8100
                    };
                    let mut tag = tpid.to_be_bytes().to_vec();
                    tag.extend_from_slice(&aux.vlan_tci.to_be_bytes());
                    frame.splice(12..12, tag);
                }
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Some(frame)
}

impl Recorder {
    /// Starts recording what `ifaces` in `ns` receive.
    pub fn start(ns: &Netns, ifaces: &[&str]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let frames: Frames = Arc::default();
        let mut threads = Vec::new();
        for iface in ifaces {
            let name = (*iface).to_owned();
            let fd = ns
                .run(move || open(&name))?
                .with_context(|| format!("recording {iface}"))?;
            let (stop, frames) = (Arc::clone(&stop), Arc::clone(&frames));
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; SNAPLEN];
                while !stop.load(Ordering::Relaxed) {
                    if let Some(f) = receive(&fd, &mut buf) {
                        let ts = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or(Duration::ZERO)
                            .as_micros() as u64;
                        frames
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((ts, f));
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            threads,
            frames,
        })
    }

    /// Stops and writes a pcap (Ethernet, microseconds), in time order; returns
    /// the number of frames.
    pub fn finish(self, path: &Path) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut frames = std::mem::take(
            &mut *self
                .frames
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        frames.sort_by_key(|(ts, _)| *ts);
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(SNAPLEN as u32).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (ts, f) in &frames {
            out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        Ok(frames.len())
    }
}
