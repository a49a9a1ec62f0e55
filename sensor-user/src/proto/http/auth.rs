//! HTTP authentication read by its semantics rather than by pattern:
//! - NTLM, raw (`NTLM TlRMTVNTUA…`) or SPNEGO-wrapped (`Negotiate …`), in
//!   `Authorization` and `Proxy-Authorization`: an AUTHENTICATE message gives
//!   the user (with domain and workstation) and the NetNTLM response, which is
//!   crackable when the server's CHALLENGE (in the 401's `WWW-Authenticate`
//!   or `Proxy-Authenticate`, same connection) was seen;
//! - Digest: the user name and the response, a hash of the password with the
//!   realm and nonce.

use base64::Engine as _;

use crate::proto::{
    Credential, Level,
    fields::Ctx,
    ntlm::{self, Message},
};

/// A credential the client sent in a header.
fn header_cred(
    dir: u8,
    kind: &'static str,
    rule: &'static str,
    level: Level,
    name: &str,
    value: &str,
) -> Credential {
    let mut c = Credential::client(dir, kind, rule, level, name, value);
    c.ctx = Ctx::Header;
    c
}

/// Whether a header is one read here: a request's credentials or a
/// response's NTLM challenge (checked as the head is framed, so cheap).
pub fn wanted(name: &[u8], value: &[u8], requests: bool) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let scheme = |s: &[u8]| {
        value.len() > s.len() && value[..s.len()].eq_ignore_ascii_case(s) && value[s.len()] == b' '
    };
    if requests {
        (is(b"authorization") || is(b"proxy-authorization"))
            && (scheme(b"NTLM") || scheme(b"Negotiate") || scheme(b"Digest"))
    } else {
        (is(b"www-authenticate") || is(b"proxy-authenticate"))
            && (scheme(b"NTLM") || scheme(b"Negotiate"))
    }
}

/// A connection's authentication state.
#[derive(Debug, Default)]
pub struct Auth {
    /// The latest NTLM challenge the server sent.
    challenge: Option<[u8; 8]>,
}

impl Auth {
    /// Reads one header `name: value` the client (`client`) or server sent in
    /// key direction `dir`.
    pub fn header(
        &mut self,
        dir: u8,
        client: bool,
        name: &str,
        value: &str,
        out: &mut Vec<Credential>,
    ) {
        let Some((scheme, token)) = value.split_once(' ') else {
            return;
        };
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("Digest") {
            if client {
                digest(dir, name, token, out);
            }
            return;
        }
        let t = token.trim_end_matches('=');
        let Ok(raw) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(t) else {
            return;
        };
        match ntlm::find(&raw).and_then(ntlm::parse) {
            Some(Message::Challenge(c)) if !client => self.challenge = Some(c),
            Some(Message::Authenticate(a)) if client && !a.is_anonymous() => {
                let at = format!("{name}: {scheme}");
                let who = if a.domain.is_empty() {
                    a.user.clone()
                } else {
                    format!("{}\\{}", a.domain, a.user)
                };
                let who = if a.workstation.is_empty() {
                    who
                } else {
                    format!("{who}@{}", a.workstation)
                };
                out.push(header_cred(
                    dir,
                    "username",
                    "ntlm_user",
                    Level::Medium,
                    &at,
                    &who,
                ));
                let crackable = self.challenge.is_some();
                let mut c = header_cred(
                    dir,
                    "password_hash",
                    "ntlm_response",
                    if crackable {
                        Level::Critical
                    } else {
                        Level::High
                    },
                    &format!("{at} {}", a.version()),
                    &a.hash_line(self.challenge),
                );
                c.crackable = Some(crackable);
                out.push(c);
            }
            _ => {}
        }
    }
}

/// `username="…", realm="…", nonce="…", response="…"` → user and response.
fn digest(dir: u8, name: &str, params: &str, out: &mut Vec<Credential>) {
    let get = |key: &str| -> Option<String> {
        let mut rest = params;
        while let Some((k, v)) = rest.split_once('=') {
            let k = k.trim().trim_start_matches(',').trim();
            let v = v.trim_start();
            let (val, after) = if let Some(q) = v.strip_prefix('"') {
                let end = q.find('"').unwrap_or(q.len());
                (&q[..end], q.get(end + 1..).unwrap_or(""))
            } else {
                let end = v.find(',').unwrap_or(v.len());
                (v[..end].trim(), &v[end..])
            };
            if k.eq_ignore_ascii_case(key) {
                return Some(val.to_owned());
            }
            rest = after;
        }
        None
    };
    let (Some(user), Some(response)) = (get("username"), get("response")) else {
        return;
    };
    let realm = get("realm").unwrap_or_default();
    let nonce = get("nonce").unwrap_or_default();
    let at = format!("{name}: Digest");
    out.push(header_cred(
        dir,
        "username",
        "digest_user",
        Level::Medium,
        &at,
        &user,
    ));
    let mut c = header_cred(
        dir,
        "password_hash",
        "digest_response",
        Level::High,
        &at,
        &format!("{user}:{realm}:{nonce}:{response}"),
    );
    c.crackable = Some(true);
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ntlm::tests::{authenticate, challenge};

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn ntlm_with_and_without_the_challenge() {
        let mut auth = Auth::default();
        let mut out = Vec::new();
        let type3 = b64(&authenticate(
            "administrator",
            "example",
            "WANG",
            &[3; 24],
            true,
        ));
        auth.header(0, true, "Authorization", &format!("NTLM {type3}"), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, "example\\administrator@WANG");
        assert_eq!(out[1].crackable, Some(false));
        assert_eq!(out[1].level, Level::High);
        out.clear();
        auth.header(
            1,
            false,
            "WWW-Authenticate",
            &format!("NTLM {}", b64(&challenge([8; 8]))),
            &mut out,
        );
        assert!(out.is_empty());
        auth.header(
            0,
            true,
            "Proxy-Authorization",
            &format!("Negotiate {type3}"),
            &mut out,
        );
        assert_eq!(out[1].crackable, Some(true));
        assert_eq!(out[1].level, Level::Critical);
        assert!(out[1].value.ends_with(":0808080808080808"));
        // A type 1, an anonymous type 3, a challenge sent by the client: nothing.
        out.clear();
        auth.header(
            0,
            true,
            "Authorization",
            "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAFASgKAAAADw==",
            &mut out,
        );
        let anon = b64(&authenticate("", "", "", &[], true));
        auth.header(0, true, "Authorization", &format!("NTLM {anon}"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn digest_user_and_response() {
        let mut out = Vec::new();
        let mut auth = Auth::default();
        auth.header(
            0,
            true,
            "Authorization",
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
            &mut out,
        );
        assert_eq!(out[0].value, "Mufasa");
        assert!(out[1].value.ends_with(":6629fae49393a05397450978507c4ef1"));
        assert!(wanted(b"authorization", b"Digest username=x", true));
        assert!(!wanted(b"authorization", b"Basic eA==", true));
        assert!(wanted(b"www-authenticate", b"NTLM TlRM", false));
    }
}
