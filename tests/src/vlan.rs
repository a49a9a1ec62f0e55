//! An 802.1Q trunk for the lab without the kernel's VLAN driver (this kernel is
//! built without CONFIG_VLAN_8021Q, so `ip link … type vlan` fails): a tc
//! program on each end's egress tags every frame, one on each end's ingress
//! removes the tag again. With VLAN TX offload off on the sending veth, the tag
//! is written into the frame, so the gateway's XDP program sees tagged frames as
//! on a real trunk; the stack behind it sees them untagged.
//!
//! The programs are three instructions and a call each, loaded with bpf(2) and
//! attached as tcx links (kernel ≥ 6.6): no BPF toolchain needed to build the lab.

use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_FUNC_SKB_VLAN_PUSH: i32 = 18;
const BPF_FUNC_SKB_VLAN_POP: i32 = 19;
const ETH_P_8021Q: u16 = 0x8100;

/// One eBPF instruction: opcode, registers (dst low nibble, src high), offset, immediate.
fn insn(code: u8, dst: u8, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst & 0x0f;
    b[4..].copy_from_slice(&imm.to_le_bytes());
    b
}
const MOV64_IMM: u8 = 0xb7;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// `bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), vlan)` or `bpf_skb_vlan_pop(skb)`;
/// then `return TCX_PASS` (0). r1 holds the skb on entry.
fn program(push: Option<u16>) -> Vec<u8> {
    let mut p = Vec::new();
    match push {
        Some(vlan) => {
            p.extend(insn(MOV64_IMM, 2, i32::from(ETH_P_8021Q.to_be())));
            p.extend(insn(MOV64_IMM, 3, i32::from(vlan)));
            p.extend(insn(CALL, 0, BPF_FUNC_SKB_VLAN_PUSH));
        }
        None => p.extend(insn(CALL, 0, BPF_FUNC_SKB_VLAN_POP)),
    }
    p.extend(insn(MOV64_IMM, 0, 0));
    p.extend(insn(EXIT, 0, 0));
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    // SAFETY: bpf(2) with a zero-padded attribute block of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads a program of `prog_type` made of `insns` (its `name`, at most 15
/// bytes) and links it to `iface` as `attach_type` (run in the interface's
/// namespace). The link lives as long as the returned descriptor.
pub(crate) fn attach_program(
    iface: &str,
    prog_type: u32,
    insns: &[u8],
    attach_type: u32,
    name: &[u8],
) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    let n = name.len().min(15);
    attr[48..48 + n].copy_from_slice(&name[..n]);
    attr[68..72].copy_from_slice(&attach_type.to_ne_bytes()); // expected_attach_type
    let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        anyhow::anyhow!(
            "loading the lab's {} program: {e}: {}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&log[..end])
        )
    })?;
    let cname = std::ffi::CString::new(iface)?;
    // SAFETY: a NUL-terminated interface name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface}");
    }
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(&prog) as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut attr).with_context(|| {
        format!(
            "attaching the lab's {} program to {iface}",
            String::from_utf8_lossy(name)
        )
    })
}

fn attach(iface: &str, push: Option<u16>, attach_type: u32) -> anyhow::Result<OwnedFd> {
    attach_program(
        iface,
        BPF_PROG_TYPE_SCHED_CLS,
        &program(push),
        attach_type,
        b"lab_vlan",
    )
}

const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;

/// Attaches an XDP program that passes every frame to `iface` in `ns` (native
/// mode). A veth end with an XDP program runs NAPI and flushes what its peer
/// sends it with XDP_TX; without one, such frames wait in its ring. The link
/// lives as long as the returned descriptor.
pub fn xdp_pass(ns: &Netns, iface: &str) -> anyhow::Result<OwnedFd> {
    let name = iface.to_owned();
    ns.run(move || -> anyhow::Result<OwnedFd> {
        let mut insns = insn(MOV64_IMM, 0, XDP_PASS).to_vec();
        insns.extend(insn(EXIT, 0, 0));
        attach_program(&name, BPF_PROG_TYPE_XDP, &insns, BPF_XDP, b"lab_xdp_pass")
    })?
}

/// Makes `iface` in `ns` one end of a trunk carrying `vlan`: frames it sends are
/// tagged (in the frame: TX VLAN offload is turned off), frames it receives are
/// untagged. The links live as long as the returned descriptors.
pub fn trunk_end(ns: &Netns, iface: &str, vlan: u16) -> anyhow::Result<Vec<OwnedFd>> {
    run(ns.command("ethtool").args(["-K", iface, "txvlan", "off"]))
        .context("turning VLAN TX offload off (apt-get install ethtool)")?;
    let name = iface.to_owned();
    ns.run(move || -> anyhow::Result<Vec<OwnedFd>> {
        Ok(vec![
            attach(&name, Some(vlan), BPF_TCX_EGRESS)?,
            attach(&name, None, BPF_TCX_INGRESS)?,
        ])
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_what_the_doc_says() {
        let push = program(Some(100));
        assert_eq!(push.len(), 5 * 8);
        assert_eq!(
            &push[0..8],
            &[0xb7, 2, 0, 0, 0x81, 0, 0, 0],
            "r2 = htons(0x8100)"
        );
        assert_eq!(&push[8..16], &[0xb7, 3, 0, 0, 100, 0, 0, 0], "r3 = 100");
        assert_eq!(
            &push[16..24],
            &[0x85, 0, 0, 0, 18, 0, 0, 0],
            "call vlan_push"
        );
        assert_eq!(&program(None)[..8], &[0x85, 0, 0, 0, 19, 0, 0, 0]);
        assert_eq!(&push[32..], &[0x95, 0, 0, 0, 0, 0, 0, 0], "exit");
    }
}
