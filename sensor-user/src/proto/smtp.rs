//! SMTP (RFC 5321, 4954): `AUTH PLAIN`, `AUTH LOGIN` (base64 over several
//! lines, or with an initial response) and `AUTH CRAM-MD5` (user and digest);
//! 235 accepts, 535 rejects; an accepted `STARTTLS` (220) ends cleartext.
//! `MAIL FROM`/`RCPT TO` addresses are `email`; in the message (`DATA`), a
//! display name in `From:` is a `person_name`, and the text goes to the
//! pattern rules as lines.

use super::{
    Credential, Dissector, Level, Out, Outcome, Protocol, Recognition, Registration,
    complete_lines,
    ftp::reply_code,
    lines,
    sasl::{Sasl, SaslRules},
};

pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Smtp,
    recognise,
    make: |_| Box::<Smtp>::default(),
};

const MAX_LINE: usize = 4096;
const RULES: SaslRules = SaslRules {
    username: "smtp_user",
    password: "smtp_pass",
    hash: "smtp_cram_md5",
};

fn starts_ci(b: &[u8], p: &[u8]) -> bool {
    b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p)
}

/// Recognised by `EHLO`/`HELO`, or a 220 banner that names SMTP.
fn recognise(client: &[u8], server: &[u8]) -> Recognition {
    if starts_ci(client, b"EHLO ") || starts_ci(client, b"HELO ") {
        return Recognition::Yes("EHLO");
    }
    if server.starts_with(b"220") {
        let first = server.split(|&b| b == b'\n').next().unwrap_or(server);
        if memchr::memmem::find(&first.to_ascii_uppercase(), b"SMTP").is_some() {
            return Recognition::Yes("SMTP banner");
        }
        return if client.is_empty() {
            Recognition::NeedMore
        } else {
            Recognition::No
        };
    }
    Recognition::No
}

/// Where the client is: commands, or a message (after `DATA`'s 354).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Commands,
    /// `DATA` sent, the server's answer due.
    DataAsked,
    Headers,
    Body,
}

#[derive(Debug, Default)]
pub struct Smtp {
    bufs: [Vec<u8>; 2],
    sasl: Option<Sasl>,
    pending: Vec<Credential>,
    starttls: bool,
    encrypted: bool,
    phase: Phase,
    text: lines::Lines,
}

/// The address in `MAIL FROM:<a@b>` / `RCPT TO: <a@b> SIZE=…`.
fn path_address(arg: &str) -> Option<&str> {
    let a = arg.split_once('<')?.1.split_once('>')?.0.trim();
    a.contains('@').then_some(a)
}

/// The display name of `From: "Jane Doe" <jane@example.com>` (or `Jane Doe <…>`).
fn display_name(value: &str) -> Option<&str> {
    let (name, _) = value.split_once('<')?;
    let name = name.trim().trim_matches('"').trim();
    (!name.is_empty() && !name.contains('@')).then_some(name)
}

impl Smtp {
    fn client_line(&mut self, dir: u8, line: &[u8], out: &mut Out<'_>) {
        if matches!(self.phase, Phase::Headers | Phase::Body) {
            if line == b"." {
                self.phase = Phase::Commands;
                return;
            }
            if line.is_empty() {
                self.phase = Phase::Body;
            } else if self.phase == Phase::Headers {
                let text = String::from_utf8_lossy(line);
                if let Some((name, value)) = text.split_once(':')
                    && name.trim().eq_ignore_ascii_case("from")
                    && let Some(n) = display_name(value)
                {
                    out.credentials.push(Credential::client(
                        dir,
                        "person_name",
                        "smtp_from_name",
                        Level::Medium,
                        "From",
                        n,
                    ));
                }
            }
            return;
        }
        if let Some(s) = self.sasl.take() {
            self.sasl = s.response(line, dir, &RULES, &mut self.pending);
            return;
        }
        let text = String::from_utf8_lossy(line);
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("AUTH ") {
            let mut words = text[5..].split_whitespace();
            let mech = words.next().and_then(|m| Sasl::start(m.as_bytes()));
            self.sasl = match (mech, words.next()) {
                (Some(s), Some(ir)) => s.response(ir.as_bytes(), dir, &RULES, &mut self.pending),
                (s, _) => s,
            };
        } else if upper.starts_with("MAIL FROM:") || upper.starts_with("RCPT TO:") {
            let (what, arg) = text.split_once(':').unwrap_or((&text, ""));
            if let Some(a) = path_address(arg) {
                out.credentials.push(Credential::client(
                    dir,
                    "email",
                    "smtp_envelope",
                    Level::Medium,
                    what.trim(),
                    a,
                ));
            }
        } else if upper.trim() == "DATA" {
            self.phase = Phase::DataAsked;
        } else if upper.trim() == "STARTTLS" {
            self.starttls = true;
        }
    }

    fn server_line(&mut self, line: &[u8], out: &mut Out<'_>) {
        let Some(code) = reply_code(line).filter(|_| line.get(3) != Some(&b'-')) else {
            return;
        };
        if self.starttls {
            self.starttls = false;
            self.encrypted = code == 220;
        }
        if self.phase == Phase::DataAsked {
            self.phase = if code == 354 {
                Phase::Headers
            } else {
                Phase::Commands
            };
        }
        // 334 continues an AUTH exchange; its final reply decides.
        if code == 334 {
            return;
        }
        if !self.pending.is_empty() {
            let outcome = match code {
                235 => Some(Outcome::Accepted),
                535 | 534 | 454 => Some(Outcome::Rejected),
                _ => None,
            };
            self.sasl = None;
            for c in &mut self.pending {
                c.outcome = outcome;
            }
            out.credentials.append(&mut self.pending);
        }
    }
}

impl Dissector for Smtp {
    fn protocol(&self) -> Protocol {
        Protocol::Smtp
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        if self.encrypted {
            return;
        }
        let in_message = |p| matches!(p, Phase::Headers | Phase::Body);
        let was_data = in_message(self.phase);
        for l in complete_lines(&mut self.bufs[usize::from(dir & 1)], data, MAX_LINE) {
            if client {
                self.client_line(dir, &l, out);
            } else {
                self.server_line(&l, out);
            }
        }
        // The message's text (and what the server says) for the pattern rules.
        if !client || was_data || in_message(self.phase) {
            self.text.feed_dir(dir, data, out.fields);
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
    fn auth_login_envelope_and_from_name() {
        let (d, fields, c) = run(&[
            (1, b"220-mx.example ESMTP Exim\r\n220 hello\r\n"),
            (0, b"EHLO GP\r\n"),
            (1, b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
            (0, b"AUTH LOGIN\r\n"),
            (1, b"334 VXNlcm5hbWU6\r\n"),
            (0, b"amFuZUBleGFtcGxlLmNvbQ==\r\n"),
            (1, b"334 UGFzc3dvcmQ6\r\n"),
            (0, b"czNjcmV0\r\n"),
            (1, b"235 Authentication succeeded\r\n"),
            (0, b"MAIL FROM: <jane@example.com>\r\n"),
            (1, b"250 OK\r\n"),
            (0, b"RCPT TO:<bob@example.org> NOTIFY=NEVER\r\n"),
            (1, b"250 OK\r\n"),
            (0, b"DATA\r\n"),
            (1, b"354 go\r\n"),
            (0, b"From: \"Jane Doe\" <jane@example.com>\r\nSubject: hi\r\n\r\nFrom: Not A Header <x@y.z>\r\n.\r\n"),
        ]);
        assert_eq!(d.protocol(), Some(Protocol::Smtp));
        assert_eq!(
            found(&c),
            [
                ("username", "jane@example.com", Some(Outcome::Accepted)),
                ("password", "s3cret", Some(Outcome::Accepted)),
                ("email", "jane@example.com", None),
                ("email", "bob@example.org", None),
                ("person_name", "Jane Doe", None),
            ]
        );
        assert!(
            fields
                .fields
                .iter()
                .any(|f| f.value.contains("Subject: hi"))
        );
    }

    #[test]
    fn cram_md5_rejected_and_starttls() {
        let (_, _, c) = run(&[
            (1, b"220 mx ESMTP\r\n"),
            (0, b"AUTH CRAM-MD5\r\n"),
            (
                1,
                b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n",
            ),
            (0, b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"),
            (1, b"535 no\r\n"),
        ]);
        assert_eq!(
            found(&c),
            [
                ("username", "tim", Some(Outcome::Rejected)),
                (
                    "password_hash",
                    "b913a602c7eda7a495b4e6e7334d3890",
                    Some(Outcome::Rejected)
                ),
            ]
        );
        let (d, _, c) = run(&[
            (1, b"220 mx ESMTP\r\n"),
            (0, b"STARTTLS\r\n"),
            (1, b"220 go\r\n"),
            (0, b"AUTH PLAIN AGEAYg==\r\n"),
        ]);
        assert!(d.encrypted() && c.is_empty());
        let (d, _, c) = run(&[
            (1, b"220 mx ESMTP\r\n"),
            (0, b"STARTTLS\r\n"),
            (1, b"454 TLS not available\r\n"),
            (0, b"AUTH PLAIN AGEAYg==\r\n"),
        ]);
        assert!(!d.encrypted());
        assert_eq!(c.len(), 2);
    }
}
