//! TLS ClientHello / ServerHello: SNI and protocol version.

/// Why a hello could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("hello incomplete: {have} of {need} bytes")]
    Incomplete { have: usize, need: usize },
    #[error("malformed hello: {0}")]
    Malformed(&'static str),
}

/// What a ClientHello tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// server_name (host_name), lowercased.
    pub sni: Option<String>,
    /// Highest version offered (supported_versions, else legacy_version).
    pub version: u16,
}

/// "1.0" … "1.3", or "ssl3"/"unknown".
pub fn version_name(v: u16) -> &'static str {
    match v {
        0x0300 => "ssl3",
        0x0301 => "1.0",
        0x0302 => "1.1",
        0x0303 => "1.2",
        0x0304 => "1.3",
        _ => "unknown",
    }
}

/// GREASE values (RFC 8701) are 0x?A?A with equal bytes.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TlsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(TlsError::Malformed("field past its end"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TlsError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TlsError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], TlsError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], TlsError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// The handshake message of type `want` inside the first record of `buf`.
fn handshake(buf: &[u8], want: u8) -> Result<&[u8], TlsError> {
    if buf.len() < 5 || buf[0] != 0x16 || buf[1] != 0x03 {
        return Err(TlsError::NotHandshake);
    }
    let need = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < need {
        return Err(TlsError::Incomplete {
            have: buf.len(),
            need,
        });
    }
    let rec = &buf[5..need];
    if rec.len() < 4 || rec[0] != want {
        return Err(TlsError::Malformed("unexpected handshake type"));
    }
    let len = u32::from_be_bytes([0, rec[1], rec[2], rec[3]]) as usize;
    rec.get(4..4 + len)
        .ok_or(TlsError::Malformed("handshake longer than its record"))
}

/// Parses the ClientHello at the start of `buf` (a TLS record). A hello split over
/// segments is parsed once the caller has joined them; until then `Incomplete`
/// says how many bytes the record needs.
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader {
        b: handshake(buf, 1)?,
        at: 0,
    };
    let legacy = r.u16()?;
    r.take(32)?;
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut out = ClientHello {
        sni: None,
        version: legacy,
    };
    extensions(&mut r, |ty, mut e| {
        match ty {
            0 => {
                let mut list = Reader {
                    b: e.vec16()?,
                    at: 0,
                };
                while list.at < list.b.len() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        let s = std::str::from_utf8(name)
                            .map_err(|_| TlsError::Malformed("SNI is not UTF-8"))?;
                        out.sni = Some(s.trim_end_matches('.').to_ascii_lowercase());
                    }
                }
            }
            43 => {
                let mut list = Reader {
                    b: e.vec8()?,
                    at: 0,
                };
                while list.at < list.b.len() {
                    let v = list.u16()?;
                    if !grease(v) && v > out.version {
                        out.version = v;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Walks a hello's extensions block (if any) at the reader's position, calling
/// `each` with every extension's type and body.
fn extensions<'a>(
    r: &mut Reader<'a>,
    mut each: impl FnMut(u16, Reader<'a>) -> Result<(), TlsError>,
) -> Result<(), TlsError> {
    if r.at == r.b.len() {
        return Ok(());
    }
    let mut exts = Reader {
        b: r.vec16()?,
        at: 0,
    };
    while exts.at < exts.b.len() {
        let ty = exts.u16()?;
        let body = Reader {
            b: exts.vec16()?,
            at: 0,
        };
        each(ty, body)?;
    }
    Ok(())
}

/// The version a ServerHello selected (supported_versions, else legacy_version).
pub fn parse_server_hello(buf: &[u8]) -> Result<u16, TlsError> {
    let mut r = Reader {
        b: handshake(buf, 2)?,
        at: 0,
    };
    let legacy = r.u16()?;
    r.take(32)?;
    r.vec8()?;
    r.u16()?; // cipher suite
    r.u8()?; // compression
    let mut version = legacy;
    extensions(&mut r, |ty, mut e| {
        if ty == 43 {
            version = e.u16()?;
        }
        Ok(())
    })?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::tls_client_hello;

    #[test]
    fn reads_sni_and_version() {
        let h = tls_client_hello("API.Qobuz.com", 0);
        let ch = parse_client_hello(&h).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("api.qobuz.com"));
        assert_eq!(version_name(ch.version), "1.2");
    }

    #[test]
    fn split_hello_is_incomplete_until_joined() {
        let h = tls_client_hello("www.deezer.com", 1200);
        let (a, _) = h.split_at(700);
        assert_eq!(
            parse_client_hello(a),
            Err(TlsError::Incomplete {
                have: 700,
                need: h.len()
            })
        );
        assert_eq!(
            parse_client_hello(&h).unwrap().sni.as_deref(),
            Some("www.deezer.com")
        );
    }

    #[test]
    fn supported_versions_and_grease() {
        // A ClientHello offering GREASE, TLS 1.3 and 1.2 in supported_versions.
        let mut body = vec![0x03, 0x03];
        body.extend([0u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        let ext = [
            0x00, 0x2b, 0x00, 0x07, 0x06, 0x7a, 0x7a, 0x03, 0x04, 0x03, 0x03,
        ];
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1, 0, hs.len() as u8];
        rec.extend(hs);
        let ch = parse_client_hello(&rec).unwrap();
        assert_eq!((ch.version, ch.sni), (0x0304, None));
        assert!(grease(0x7a7a) && !grease(0x0304));
    }

    #[test]
    fn server_hello_version() {
        let mut body = vec![0x03, 0x03];
        body.extend([0u8; 32]);
        body.extend([0, 0x13, 0x01, 0]);
        body.extend([0, 6, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
        let mut hs = vec![2, 0, 0, body.len() as u8];
        hs.extend(body);
        let mut rec = vec![0x16, 3, 3, 0, hs.len() as u8];
        rec.extend(hs);
        assert_eq!(parse_server_hello(&rec), Ok(0x0304));
    }

    #[test]
    fn garbage() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1"),
            Err(TlsError::NotHandshake)
        );
        let mut h = tls_client_hello("x.example", 0);
        h[6] = 0xff; // handshake length larger than the record
        assert!(matches!(
            parse_client_hello(&h),
            Err(TlsError::Malformed(_))
        ));
    }
}
