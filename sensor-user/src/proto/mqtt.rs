//! MQTT 3.1, 3.1.1 and 5 (OASIS): the client's `CONNECT` packet, whose
//! username and password flags announce a username (UTF-8) and a password
//! (binary data). Lengths are read as the packet gives them; a CONNECT
//! without the flags reports nothing.

use super::{Credential, Dissector, Level, Out, Protocol, Recognition, Registration};

pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Mqtt,
    recognise,
    make: |_| Box::<Mqtt>::default(),
};

/// Largest CONNECT read.
const MAX_CONNECT: usize = 64 * 1024;

/// A variable byte integer (1–4 bytes); (value, bytes used).
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &x) in b.iter().take(4).enumerate() {
        v |= usize::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Recognised by a CONNECT packet: type 1, then the protocol name `MQTT` or `MQIsdp`.
fn recognise(client: &[u8], _server: &[u8]) -> Recognition {
    match client.first() {
        None => return Recognition::NeedMore,
        Some(0x10) => {}
        Some(_) => return Recognition::No,
    }
    let Some((_, n)) = varint(&client[1..]) else {
        return if client.len() < 5 {
            Recognition::NeedMore
        } else {
            Recognition::No
        };
    };
    let name = &client[1 + n..];
    if name.len() < 8 {
        return Recognition::NeedMore;
    }
    if name.starts_with(b"\x00\x04MQTT") || name.starts_with(b"\x00\x06MQIsdp") {
        Recognition::Yes("CONNECT packet")
    } else {
        Recognition::No
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// A two-byte length, then that many bytes.
    fn field(&mut self) -> Option<&'a [u8]> {
        let l = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([l[0], l[1]])))
    }
    /// MQTT 5 properties: a varint length, skipped.
    fn skip_properties(&mut self) -> Option<()> {
        let (len, n) = varint(self.b.get(self.at..)?)?;
        self.take(n)?;
        self.take(len).map(|_| ())
    }
}

/// Username and password of a CONNECT packet's payload (`body`: after the fixed header).
pub fn connect_credentials(body: &[u8]) -> Option<(Option<String>, Option<Vec<u8>>)> {
    let mut r = Reader { b: body, at: 0 };
    let name = r.field()?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return None;
    }
    let version = r.u8()?;
    let flags = r.u8()?;
    r.take(2)?; // keep alive
    if version >= 5 {
        r.skip_properties()?;
    }
    r.field()?; // client id
    if flags & 0x04 != 0 {
        if version >= 5 {
            r.skip_properties()?;
        }
        r.field()?; // will topic
        r.field()?; // will payload
    }
    let user = if flags & 0x80 != 0 {
        Some(String::from_utf8_lossy(r.field()?).into_owned())
    } else {
        None
    };
    let pass = if flags & 0x40 != 0 {
        Some(r.field()?.to_vec())
    } else {
        None
    };
    Some((user, pass))
}

#[derive(Debug, Default)]
pub struct Mqtt {
    buf: Vec<u8>,
    done: bool,
}

impl Mqtt {
    fn try_connect(&mut self, dir: u8, out: &mut Out<'_>) {
        let Some((len, n)) = self.buf.get(1..).and_then(varint) else {
            return;
        };
        let Some(body) = self.buf.get(1 + n..1 + n + len) else {
            if self.buf.len() > MAX_CONNECT {
                self.done = true;
            }
            return;
        };
        self.done = true;
        if self.buf.first() != Some(&0x10) {
            return;
        }
        let Some((user, pass)) = connect_credentials(body) else {
            return;
        };
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            out.credentials.push(Credential::client(
                dir,
                "username",
                "mqtt_user",
                Level::Medium,
                "CONNECT username",
                &u,
            ));
        }
        if let Some(p) = pass.filter(|p| !p.is_empty()) {
            // Binary-safe: shown as text where it is text.
            let v = String::from_utf8_lossy(&p);
            out.credentials.push(Credential::client(
                dir,
                "password",
                "mqtt_pass",
                Level::High,
                "CONNECT password",
                &v,
            ));
        }
    }
}

impl Dissector for Mqtt {
    fn protocol(&self) -> Protocol {
        Protocol::Mqtt
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        if !client || self.done {
            return;
        }
        self.buf.extend_from_slice(data);
        self.try_connect(dir, out);
        if self.done {
            self.buf = Vec::new();
        }
    }

    fn gap(&mut self, _dir: u8, client: bool, _out: &mut Out<'_>) {
        if client {
            self.done = true;
            self.buf = Vec::new();
        }
    }

    fn finish(&mut self, _dir: u8, _client: bool, _out: &mut Out<'_>) {}
}

#[cfg(test)]
mod tests {
    use crate::proto::{Protocol, tests::run};

    /// A CONNECT (`version` 4 or 5) with the given username and password.
    fn connect(version: u8, user: Option<&str>, pass: Option<&[u8]>) -> Vec<u8> {
        let mut v = vec![0, 4, b'M', b'Q', b'T', b'T', version];
        let flags =
            0x02 | if user.is_some() { 0x80 } else { 0 } | if pass.is_some() { 0x40 } else { 0 };
        v.extend_from_slice(&[flags, 0, 60]);
        if version >= 5 {
            v.push(0); // no properties
        }
        v.extend_from_slice(&[0, 3, b'c', b'i', b'd']);
        for f in [user.map(str::as_bytes), pass].into_iter().flatten() {
            v.extend_from_slice(&(f.len() as u16).to_be_bytes());
            v.extend_from_slice(f);
        }
        let mut p = vec![0x10, v.len() as u8];
        p.extend_from_slice(&v);
        p
    }

    #[test]
    fn connect_with_and_without_credentials() {
        for version in [4, 5] {
            let pkt = connect(version, Some("sensor"), Some(b"p\x00ss"));
            let (d, _, c) = run(&[(0, &pkt[..3]), (0, &pkt[3..])]);
            assert_eq!(d.protocol(), Some(Protocol::Mqtt));
            let v: Vec<_> = c.iter().map(|c| (c.kind, c.value.as_str())).collect();
            assert_eq!(v, [("username", "sensor"), ("password", "p\u{0}ss")]);
        }
        let pkt = connect(4, None, None);
        let (d, _, c) = run(&[(0, &pkt[..])]);
        assert_eq!(d.protocol(), Some(Protocol::Mqtt));
        assert!(c.is_empty());
        // Not MQTT: the same first byte, another name.
        let (d, _, _) = run(&[(0, b"\x10\x0c\x00\x04ABCD\x04\x02\x00\x3c\x00\x00")]);
        assert_eq!(d.protocol(), Some(Protocol::Other));
    }
}
