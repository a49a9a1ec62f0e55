//! NTLMSSP messages (MS-NLMP), raw or inside a SPNEGO token: the server's
//! CHALLENGE (its 8-byte challenge) and the client's AUTHENTICATE (user,
//! domain, workstation and the challenge responses, which are crackable
//! password hashes given the challenge).

const SIGNATURE: &[u8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;

/// A parsed NTLMSSP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Negotiate,
    /// The server's challenge.
    Challenge([u8; 8]),
    Authenticate(Authenticate),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub user: String,
    pub domain: String,
    pub workstation: String,
    pub lm: Vec<u8>,
    pub nt: Vec<u8>,
    pub flags: u32,
}

/// The NTLMSSP message in `token`: at its start (raw NTLM), or wrapped in a
/// SPNEGO token (Negotiate), where it sits whole inside the DER.
pub fn find(token: &[u8]) -> Option<&[u8]> {
    memchr::memmem::find(token, SIGNATURE).map(|i| &token[i..])
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The bytes a security buffer (length, max length, offset) at `at` points to.
fn field(b: &[u8], at: usize) -> Option<&[u8]> {
    let len = u16_at(b, at)?;
    let off = u32_at(b, at + 4)? as usize;
    b.get(off..off.checked_add(len)?)
}

fn string(b: &[u8], unicode: bool) -> String {
    if unicode {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// Parses the NTLMSSP message at the start of `msg`; `None` if it is not one
/// or its fields point outside it.
pub fn parse(msg: &[u8]) -> Option<Message> {
    if !msg.starts_with(SIGNATURE) {
        return None;
    }
    match u32_at(msg, 8)? {
        1 => Some(Message::Negotiate),
        2 => Some(Message::Challenge(msg.get(24..32)?.try_into().ok()?)),
        3 => {
            let flags = u32_at(msg, 60).unwrap_or(0);
            let unicode = flags & NEGOTIATE_UNICODE != 0;
            Some(Message::Authenticate(Authenticate {
                lm: field(msg, 12)?.to_vec(),
                nt: field(msg, 20)?.to_vec(),
                domain: string(field(msg, 28)?, unicode),
                user: string(field(msg, 36)?, unicode),
                workstation: string(field(msg, 44)?, unicode),
                flags,
            }))
        }
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

impl Authenticate {
    /// An anonymous login: no user and no responses (nothing to crack).
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty() && self.nt.is_empty() && self.lm.iter().all(|&b| b == 0)
    }

    /// Which response this is: NetNTLMv1, v1 with extended session security, or v2.
    pub fn version(&self) -> &'static str {
        if self.nt.len() > 24 {
            "NetNTLMv2"
        } else if self.flags & NEGOTIATE_EXTENDED_SESSIONSECURITY != 0 {
            "NetNTLMv1-ESS"
        } else {
            "NetNTLMv1"
        }
    }

    /// The response in the form crackers take (hashcat 5500 / 5600), with the
    /// server's challenge when it was seen (empty otherwise).
    pub fn hash_line(&self, challenge: Option<[u8; 8]>) -> String {
        let ch = challenge.map(|c| hex(&c)).unwrap_or_default();
        let (user, domain) = (&self.user, &self.domain);
        if self.nt.len() > 24 {
            let (proof, blob) = self.nt.split_at(16);
            format!("{user}::{domain}:{ch}:{}:{}", hex(proof), hex(blob))
        } else {
            format!("{user}::{domain}:{}:{}:{ch}", hex(&self.lm), hex(&self.nt))
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An AUTHENTICATE message (UTF-16 names when `unicode`).
    pub fn authenticate(user: &str, domain: &str, ws: &str, nt: &[u8], unicode: bool) -> Vec<u8> {
        let enc = |s: &str| -> Vec<u8> {
            if unicode {
                s.encode_utf16().flat_map(u16::to_le_bytes).collect()
            } else {
                s.as_bytes().to_vec()
            }
        };
        let lm = vec![0u8; 24];
        let parts = [lm, nt.to_vec(), enc(domain), enc(user), enc(ws), Vec::new()];
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        let mut payload = Vec::new();
        let base = 72u32;
        for p in &parts {
            let off = base + payload.len() as u32;
            m.extend_from_slice(&(p.len() as u16).to_le_bytes());
            m.extend_from_slice(&(p.len() as u16).to_le_bytes());
            m.extend_from_slice(&off.to_le_bytes());
            payload.extend_from_slice(p);
        }
        let flags =
            if unicode { NEGOTIATE_UNICODE } else { 0 } | NEGOTIATE_EXTENDED_SESSIONSECURITY;
        m.extend_from_slice(&flags.to_le_bytes());
        m.resize(72, 0);
        m.extend_from_slice(&payload);
        m
    }

    pub fn challenge(c: [u8; 8]) -> Vec<u8> {
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&2u32.to_le_bytes());
        m.resize(24, 0);
        m.extend_from_slice(&c);
        m.resize(48, 0);
        m
    }

    #[test]
    fn messages_of_each_type_and_width() {
        let a = authenticate("Administrator", "EXAMPLE", "WS1", &[7; 24], true);
        let Some(Message::Authenticate(m)) = parse(&a) else {
            panic!("authenticate")
        };
        assert_eq!(
            (m.user.as_str(), m.domain.as_str(), m.workstation.as_str()),
            ("Administrator", "EXAMPLE", "WS1")
        );
        assert_eq!(m.version(), "NetNTLMv1-ESS");
        assert!(!m.is_anonymous());
        assert!(m.hash_line(Some([1; 8])).ends_with(":0101010101010101"));
        let v2 = authenticate("bob", "SP", "PC", &[9; 60], false);
        let Some(Message::Authenticate(m)) = parse(&v2) else {
            panic!("v2")
        };
        assert_eq!(m.user, "bob");
        assert_eq!(m.version(), "NetNTLMv2");
        assert!(m.hash_line(None).starts_with("bob::SP::0909"));
        assert_eq!(parse(&challenge([5; 8])), Some(Message::Challenge([5; 8])));
        // Anonymous; truncated; inside a SPNEGO wrapper.
        let anon = authenticate("", "", "", &[], true);
        let Some(Message::Authenticate(m)) = parse(&anon) else {
            panic!("anon")
        };
        assert!(m.is_anonymous());
        assert_eq!(parse(&a[..40]), None);
        let mut spnego = vec![0xa1, 0x81, 0x90, 0x30, 0x81];
        spnego.extend_from_slice(&a);
        assert!(matches!(
            find(&spnego).and_then(parse),
            Some(Message::Authenticate(_))
        ));
    }
}
