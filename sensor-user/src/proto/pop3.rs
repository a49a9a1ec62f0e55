//! POP3 (RFC 1939, 2449, 5034): `USER`/`PASS`, `APOP name digest`, and
//! `AUTH PLAIN`/`LOGIN`/`CRAM-MD5` over several lines; `+OK`/`-ERR` give the
//! verdict, an accepted `STLS` ends cleartext. Retrieved mail is offered to the
//! pattern rules as text lines.

use super::{
    Credential, Dissector, Level, Out, Outcome, Protocol, Recognition, Registration,
    complete_lines, lines,
    sasl::{Sasl, SaslRules},
};

pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Pop3,
    recognise,
    make: |_| Box::<Pop3>::default(),
};

const MAX_LINE: usize = 4096;
const RULES: SaslRules = SaslRules {
    username: "pop3_user",
    password: "pop3_pass",
    hash: "pop3_apop",
};

/// Recognised by the `+OK` greeting.
fn recognise(_client: &[u8], server: &[u8]) -> Recognition {
    if server.starts_with(b"+OK") {
        Recognition::Yes("+OK greeting")
    } else if server.is_empty() || b"+OK".starts_with(server) {
        Recognition::NeedMore
    } else {
        Recognition::No
    }
}

#[derive(Debug, Default)]
pub struct Pop3 {
    bufs: [Vec<u8>; 2],
    user: Option<String>,
    sasl: Option<Sasl>,
    pending: Vec<Credential>,
    stls: bool,
    encrypted: bool,
    /// Server text lines (mail) for the pattern rules.
    text: lines::Lines,
}

impl Pop3 {
    fn client_line(&mut self, dir: u8, line: &[u8], out: &mut Out<'_>) {
        if let Some(s) = self.sasl.take() {
            self.sasl = s.response(line, dir, &RULES, &mut self.pending);
            return;
        }
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        match cmd.as_str() {
            "USER" => {
                out.credentials.append(&mut self.pending);
                self.user = words.next().map(str::to_owned);
            }
            "PASS" => {
                let pass = text.split_once(' ').map_or("", |(_, p)| p.trim());
                if let Some(u) = self.user.take() {
                    self.pending.push(Credential::client(
                        dir,
                        "username",
                        "pop3_user",
                        Level::Medium,
                        "USER",
                        &u,
                    ));
                }
                if !pass.is_empty() {
                    self.pending.push(Credential::client(
                        dir,
                        "password",
                        "pop3_pass",
                        Level::High,
                        "PASS",
                        pass,
                    ));
                }
            }
            "APOP" => {
                if let (Some(u), Some(d)) = (words.next(), words.next()) {
                    self.pending.push(Credential::client(
                        dir,
                        "username",
                        "pop3_user",
                        Level::Medium,
                        "APOP",
                        u,
                    ));
                    self.pending.push(Credential::client(
                        dir,
                        "password_hash",
                        "pop3_apop",
                        Level::High,
                        "APOP",
                        d,
                    ));
                }
            }
            "AUTH" => {
                let mech = words.next().and_then(|m| Sasl::start(m.as_bytes()));
                // An initial response on the same line (RFC 2449's SASL-IR).
                self.sasl = match (mech, words.next()) {
                    (Some(s), Some(ir)) => {
                        s.response(ir.as_bytes(), dir, &RULES, &mut self.pending)
                    }
                    (s, _) => s,
                };
            }
            "STLS" => self.stls = true,
            _ => {}
        }
    }

    fn server_line(&mut self, line: &[u8], out: &mut Out<'_>) {
        let verdict = if line.starts_with(b"+OK") {
            Some(Outcome::Accepted)
        } else if line.starts_with(b"-ERR") {
            Some(Outcome::Rejected)
        } else {
            None
        };
        if self.stls && verdict.is_some() {
            self.stls = false;
            self.encrypted = verdict == Some(Outcome::Accepted);
        }
        // `+ challenge` continues a SASL exchange; a verdict ends the login.
        if verdict.is_some() && self.sasl.is_none() && !self.pending.is_empty() {
            for c in &mut self.pending {
                c.outcome = verdict;
            }
            out.credentials.append(&mut self.pending);
        }
    }
}

impl Dissector for Pop3 {
    fn protocol(&self) -> Protocol {
        Protocol::Pop3
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        if self.encrypted {
            return;
        }
        if !client {
            self.text.feed_dir(dir, data, out.fields);
        }
        for l in complete_lines(&mut self.bufs[usize::from(dir & 1)], data, MAX_LINE) {
            if client {
                self.client_line(dir, &l, out);
            } else {
                self.server_line(&l, out);
            }
        }
    }

    fn gap(&mut self, dir: u8, _client: bool, out: &mut Out<'_>) {
        self.bufs[usize::from(dir & 1)].clear();
        self.text.flush_dir(dir, out.fields);
    }

    fn finish(&mut self, dir: u8, _client: bool, out: &mut Out<'_>) {
        self.text.flush_dir(dir, out.fields);
        out.credentials.append(&mut self.pending);
    }

    fn encrypted(&self) -> bool {
        self.encrypted
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{
        Outcome, Protocol,
        tests::{found, run},
    };

    #[test]
    fn user_pass_apop_and_auth_over_lines() {
        let (d, _, c) = run(&[
            (1, b"+OK POP3 ready\r\n"),
            (0, b"USER jane\r\n"),
            (1, b"+OK\r\n"),
            (0, b"PASS s3cret\r\n"),
            (1, b"-ERR no\r\n"),
            (0, b"APOP tim b913a602c7eda7a495b4e6e7334d3890\r\n"),
            (1, b"+OK maildrop\r\n"),
        ]);
        assert_eq!(d.protocol(), Some(Protocol::Pop3));
        assert_eq!(
            found(&c),
            [
                ("username", "jane", Some(Outcome::Rejected)),
                ("password", "s3cret", Some(Outcome::Rejected)),
                ("username", "tim", Some(Outcome::Accepted)),
                (
                    "password_hash",
                    "b913a602c7eda7a495b4e6e7334d3890",
                    Some(Outcome::Accepted)
                ),
            ]
        );
        let (_, _, c) = run(&[
            (1, b"+OK\r\n"),
            (0, b"AUTH LOGIN\r\n"),
            (1, b"+ VXNlcm5hbWU6\r\n"),
            (0, b"amFuZQ==\r\n"),
            (1, b"+ UGFzc3dvcmQ6\r\n"),
            (0, b"czNjcmV0\r\n"),
            (1, b"+OK\r\n"),
            (0, b"AUTH PLAIN AGJvYgBwdw==\r\n"),
        ]);
        assert_eq!(
            found(&c),
            [
                ("username", "jane", Some(Outcome::Accepted)),
                ("password", "s3cret", Some(Outcome::Accepted)),
                ("username", "bob", None),
                ("password", "pw", None),
            ]
        );
    }

    #[test]
    fn stls_ends_cleartext_unless_refused() {
        let (d, _, c) = run(&[
            (1, b"+OK\r\n"),
            (0, b"STLS\r\n"),
            (1, b"+OK begin\r\n"),
            (0, b"USER x\r\nPASS y\r\n"),
        ]);
        assert!(d.encrypted() && c.is_empty());
        let (d, _, c) = run(&[
            (1, b"+OK\r\n"),
            (0, b"STLS\r\n"),
            (1, b"-ERR no\r\n"),
            (0, b"USER x\r\nPASS y\r\n"),
        ]);
        assert!(!d.encrypted());
        assert_eq!(c.len(), 2);
    }
}
