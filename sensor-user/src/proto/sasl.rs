//! SASL as the mail protocols carry it (RFC 4954, 3501, 5034): base64 lines
//! for PLAIN, LOGIN and CRAM-MD5, shared by the POP3, IMAP and SMTP dissectors.

use base64::Engine as _;

use super::{Credential, Level};

/// A base64 line (standard alphabet, padding optional) decoded, or `None`.
pub fn b64(line: &[u8]) -> Option<Vec<u8>> {
    let t = line.trim_ascii();
    let t = t
        .strip_suffix(b"==")
        .or_else(|| t.strip_suffix(b"="))
        .unwrap_or(t);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .ok()
}

/// Which mechanism a client started, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sasl {
    /// PLAIN: one response `authzid NUL authcid NUL password`.
    Plain,
    /// LOGIN: the user name, then the password, each its own response.
    LoginUser,
    LoginPassword {
        user: String,
    },
    /// CRAM-MD5: one response `user SP hex-digest`.
    CramMd5,
}

impl Sasl {
    /// The mechanism named by an AUTH/AUTHENTICATE argument, if it is one read here.
    pub fn start(mechanism: &[u8]) -> Option<Self> {
        let m = mechanism.to_ascii_uppercase();
        match m.as_slice() {
            b"PLAIN" => Some(Self::Plain),
            b"LOGIN" => Some(Self::LoginUser),
            b"CRAM-MD5" => Some(Self::CramMd5),
            _ => None,
        }
    }

    /// Reads one client response (a base64 line). Credentials go to `out`
    /// (named `what`, under rules `<proto>_…`); returns the state for the next
    /// response, `None` when the exchange is complete (or `*`, cancelled).
    pub fn response(
        self,
        line: &[u8],
        dir: u8,
        rules: &SaslRules,
        out: &mut Vec<Credential>,
    ) -> Option<Self> {
        if line.trim_ascii() == b"*" {
            return None;
        }
        let data = b64(line)?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Self::Plain => {
                let mut parts = data.split(|&b| b == 0);
                let (_authz, user, pass) = (parts.next(), parts.next()?, parts.next()?);
                out.push(user_cred(dir, rules, &text(user)));
                if !pass.is_empty() {
                    out.push(Credential::client(
                        dir,
                        "password",
                        rules.password,
                        Level::High,
                        "AUTH PLAIN",
                        &text(pass),
                    ));
                }
                None
            }
            Self::LoginUser => Some(Self::LoginPassword { user: text(&data) }),
            Self::LoginPassword { user } => {
                out.push(user_cred(dir, rules, &user));
                if !data.is_empty() {
                    out.push(Credential::client(
                        dir,
                        "password",
                        rules.password,
                        Level::High,
                        "AUTH LOGIN",
                        &text(&data),
                    ));
                }
                None
            }
            Self::CramMd5 => {
                let t = text(&data);
                let (user, digest) = t.rsplit_once(' ')?;
                out.push(user_cred(dir, rules, user));
                out.push(Credential::client(
                    dir,
                    "password_hash",
                    rules.hash,
                    Level::High,
                    "AUTH CRAM-MD5",
                    digest,
                ));
                None
            }
        }
    }
}

/// The rule ids a protocol reports SASL credentials under.
#[derive(Debug, Clone, Copy)]
pub struct SaslRules {
    pub username: &'static str,
    pub password: &'static str,
    pub hash: &'static str,
}

fn user_cred(dir: u8, rules: &SaslRules, user: &str) -> Credential {
    Credential::client(dir, "username", rules.username, Level::Medium, "AUTH", user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: SaslRules = SaslRules {
        username: "t_user",
        password: "t_pass",
        hash: "t_hash",
    };

    fn values(c: &[Credential]) -> Vec<(&str, &str)> {
        c.iter().map(|c| (c.kind, c.value.as_str())).collect()
    }

    #[test]
    fn plain_login_and_cram_md5() {
        let mut out = Vec::new();
        // "\0jane\0s3cret"
        assert_eq!(
            Sasl::Plain.response(b"AGphbmUAczNjcmV0", 0, &RULES, &mut out),
            None
        );
        assert_eq!(values(&out), [("username", "jane"), ("password", "s3cret")]);
        out.clear();
        let next = Sasl::LoginUser.response(b"amFuZQ==", 0, &RULES, &mut out);
        assert_eq!(
            next,
            Some(Sasl::LoginPassword {
                user: "jane".into()
            })
        );
        assert_eq!(
            next.unwrap().response(b"czNjcmV0", 0, &RULES, &mut out),
            None
        );
        assert_eq!(values(&out), [("username", "jane"), ("password", "s3cret")]);
        out.clear();
        // "tim b913a602c7eda7a495b4e6e7334d3890" (RFC 2195's example)
        Sasl::CramMd5.response(
            b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw",
            0,
            &RULES,
            &mut out,
        );
        assert_eq!(
            values(&out),
            [
                ("username", "tim"),
                ("password_hash", "b913a602c7eda7a495b4e6e7334d3890")
            ]
        );
        // Cancelled, or not base64: nothing.
        out.clear();
        assert_eq!(Sasl::Plain.response(b"*", 0, &RULES, &mut out), None);
        assert_eq!(
            Sasl::Plain.response(b"not base64!", 0, &RULES, &mut out),
            None
        );
        assert!(out.is_empty());
    }
}
