//! DNS answers: the addresses a response resolves, with the chain of names
//! (question, CNAMEs) that led to each, so any name of the chain can attribute
//! the address to a service.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Why a DNS message was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("message truncated")]
    Truncated,
    #[error("not a response")]
    NotResponse,
    #[error("bad name: {0}")]
    BadName(&'static str),
}

impl DnsError {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotResponse => "not_response",
            Self::BadName(_) => "bad_name",
        }
    }
}

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// Compression pointers followed per name before calling it a loop.
const MAX_JUMPS: usize = 16;
/// CNAME hops followed per chain.
const MAX_CHAIN: usize = 16;

/// One resource record of the answer section we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Addr {
        name: String,
        ttl: u32,
        addr: IpAddr,
    },
    Cname {
        name: String,
        ttl: u32,
        target: String,
    },
}

/// The parts of a response that matter for address learning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub questions: Vec<String>,
    pub records: Vec<Record>,
}

/// A resolved address and every name on the chain that led to it, from the
/// address's owner back through CNAMEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addr: IpAddr,
    pub ttl: u32,
    pub names: Vec<String>,
}

fn u16_at(m: &[u8], at: usize) -> Result<u16, DnsError> {
    m.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Truncated)
}

/// Reads a (possibly compressed) name at `at`; returns it lowercased without the
/// trailing dot, and the offset after it in the original position.
fn read_name(m: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *m.get(at).ok_or(DnsError::Truncated)? as usize;
        match len & 0xc0 {
            0xc0 => {
                let ptr = (u16_at(m, at)? & 0x3fff) as usize;
                after.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_JUMPS || ptr >= m.len() {
                    return Err(DnsError::BadName(
                        "compression loop or pointer out of range",
                    ));
                }
                at = ptr;
            }
            0x00 if len == 0 => {
                return Ok((name, after.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = m.get(at + 1..at + 1 + len).ok_or(DnsError::Truncated)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    name.push(b.to_ascii_lowercase() as char);
                }
                if name.len() > 255 {
                    return Err(DnsError::BadName("longer than 255 bytes"));
                }
                at += 1 + len;
            }
            _ => return Err(DnsError::BadName("reserved label type")),
        }
    }
}

/// Parses a DNS response (UDP payload, or a TCP message without its length prefix).
pub fn parse(m: &[u8]) -> Result<Response, DnsError> {
    if m.len() < 12 {
        return Err(DnsError::Truncated);
    }
    if m[2] & 0x80 == 0 {
        return Err(DnsError::NotResponse);
    }
    let qd = u16_at(m, 4)?;
    let an = u16_at(m, 6)?;
    let mut at = 12;
    let mut out = Response::default();
    for _ in 0..qd {
        let (name, next) = read_name(m, at)?;
        out.questions.push(name);
        at = next + 4;
    }
    for _ in 0..an {
        let (name, next) = read_name(m, at)?;
        let ty = u16_at(m, next)?;
        let class = u16_at(m, next + 2)?;
        let ttl = m
            .get(next + 4..next + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(DnsError::Truncated)?;
        let rdlen = u16_at(m, next + 8)? as usize;
        let rd = next + 10;
        let data = m.get(rd..rd + rdlen).ok_or(DnsError::Truncated)?;
        at = rd + rdlen;
        if class != CLASS_IN {
            continue;
        }
        match (ty, rdlen) {
            (TYPE_A, 4) => {
                let addr = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
                out.records.push(Record::Addr { name, ttl, addr });
            }
            (TYPE_AAAA, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                out.records.push(Record::Addr {
                    name,
                    ttl,
                    addr: IpAddr::V6(Ipv6Addr::from(a)),
                });
            }
            (TYPE_CNAME, _) => {
                let (target, _) = read_name(m, rd)?;
                out.records.push(Record::Cname { name, ttl, target });
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Response {
    /// Every address with the names that lead to it: its owner, then each name
    /// whose CNAME points at the previous one (bounded, loop-safe).
    pub fn resolved(&self) -> Vec<Resolved> {
        let back: HashMap<&str, &str> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Cname { name, target, .. } => Some((target.as_str(), name.as_str())),
                Record::Addr { .. } => None,
            })
            .collect();
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Addr { name, ttl, addr } => {
                    let mut names = vec![name.clone()];
                    let mut cur = name.as_str();
                    for _ in 0..MAX_CHAIN {
                        match back.get(cur) {
                            Some(prev) if !names.iter().any(|n| n == prev) => {
                                names.push((*prev).to_owned());
                                cur = prev;
                            }
                            _ => break,
                        }
                    }
                    Some(Resolved {
                        addr: *addr,
                        ttl: *ttl,
                        names,
                    })
                }
                Record::Cname { .. } => None,
            })
            .collect()
    }
}

/// Builds a DNS response for tests and the lab: `qname` with a CNAME chain
/// (`cnames`, in order) ending in A/AAAA `addrs`. The first answer's owner is
/// compressed to the question; each later owner points at the previous target.
pub fn build_response(
    id: u16,
    qname: &str,
    cnames: &[&str],
    addrs: &[IpAddr],
    ttl: u32,
) -> Vec<u8> {
    let qtype = if addrs.first().is_some_and(IpAddr::is_ipv6) {
        TYPE_AAAA
    } else {
        TYPE_A
    };
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1]);
    m.extend_from_slice(&((cnames.len() + addrs.len()) as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    let encode = |m: &mut Vec<u8>, name: &str| {
        for l in name.trim_end_matches('.').split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
    };
    encode(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    let mut owner_ptr: u16 = 12;
    for target in cnames {
        m.extend_from_slice(&(0xc000 | owner_ptr).to_be_bytes());
        m.extend_from_slice(&TYPE_CNAME.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        let mut rd = Vec::new();
        encode(&mut rd, target);
        m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        owner_ptr = m.len() as u16;
        m.extend_from_slice(&rd);
    }
    for a in addrs {
        m.extend_from_slice(&(0xc000 | owner_ptr).to_be_bytes());
        let (ty, bytes) = match a {
            IpAddr::V4(v) => (TYPE_A, v.octets().to_vec()),
            IpAddr::V6(v) => (TYPE_AAAA, v.octets().to_vec()),
        };
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        m.extend_from_slice(&bytes);
    }
    m
}

/// A query for `name` (type A or AAAA), for the lab's clients.
pub fn build_query(id: u16, name: &str, ipv6: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&(if ipv6 { TYPE_AAAA } else { TYPE_A }).to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cname_chain_with_compression() {
        let m = build_response(
            7,
            "API.Qobuz.com.",
            &["api.qobuz.com.edgekey.net", "e1234.a.akamaiedge.net"],
            &[ip("198.51.100.2"), ip("198.51.100.3")],
            300,
        );
        let r = parse(&m).unwrap();
        assert_eq!(r.questions, ["api.qobuz.com"]);
        assert_eq!(r.records.len(), 4);
        let res = r.resolved();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].addr, ip("198.51.100.2"));
        assert_eq!(
            res[0].names,
            [
                "e1234.a.akamaiedge.net",
                "api.qobuz.com.edgekey.net",
                "api.qobuz.com"
            ]
        );
        assert_eq!(res[1].ttl, 300);
    }

    #[test]
    fn aaaa_answers() {
        let m = build_response(1, "www.deezer.com", &[], &[ip("2001:db8:5::2")], 60);
        let res = parse(&m).unwrap().resolved();
        assert_eq!(res[0].addr, ip("2001:db8:5::2"));
        assert_eq!(res[0].names, ["www.deezer.com"]);
    }

    #[test]
    fn truncated_and_malformed() {
        let m = build_response(
            1,
            "api.qobuz.com",
            &["cdn.example.net"],
            &[ip("198.51.100.2")],
            60,
        );
        for cut in [0, 5, 11, 20, m.len() - 1] {
            assert_eq!(parse(&m[..cut]), Err(DnsError::Truncated), "cut at {cut}");
        }
        let mut q = m.clone();
        q[2] = 0x01;
        assert_eq!(parse(&q), Err(DnsError::NotResponse));
        // A pointer to itself.
        let mut l = m.clone();
        l[12] = 0xc0;
        l[13] = 12;
        assert!(matches!(parse(&l), Err(DnsError::BadName(_))));
        let mut r = m;
        r[12] = 0x80; // reserved label type
        assert!(matches!(parse(&r), Err(DnsError::BadName(_))));
    }

    #[test]
    fn cname_loops_end() {
        let mut r = Response::default();
        r.records.push(Record::Cname {
            name: "a.example".into(),
            ttl: 1,
            target: "b.example".into(),
        });
        r.records.push(Record::Cname {
            name: "b.example".into(),
            ttl: 1,
            target: "a.example".into(),
        });
        r.records.push(Record::Addr {
            name: "a.example".into(),
            ttl: 1,
            addr: ip("192.0.2.1"),
        });
        assert_eq!(r.resolved()[0].names, ["a.example", "b.example"]);
    }

    #[test]
    fn queries_are_not_answers() {
        assert_eq!(
            parse(&build_query(1, "api.qobuz.com", false)),
            Err(DnsError::NotResponse)
        );
    }
}
