//! FTP control connections (RFC 959): `USER` and `PASS`, with the server's
//! verdict (230 accepted, 530 rejected). Anonymous logins (`anonymous`/`ftp`)
//! are reported at low severity, an e-mail given as their password as `email`.
//! An accepted `AUTH TLS`/`AUTH SSL` (234) ends cleartext.

use super::{
    Credential, Dissector, Level, Out, Outcome, Protocol, Recognition, Registration, complete_lines,
};

/// Recognised by the server's 220 banner naming FTP or followed by an FTP
/// command, or by `USER` answered with a reply code.
pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Ftp,
    recognise,
    make: |_| Box::<Ftp>::default(),
};

const MAX_LINE: usize = 4096;

fn starts_ci(b: &[u8], p: &[u8]) -> bool {
    b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p)
}

/// A reply line's code, when it starts with three digits.
pub fn reply_code(line: &[u8]) -> Option<u16> {
    let d = line.get(..3)?;
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0')))
}

const COMMANDS: [&[u8]; 6] = [b"USER ", b"AUTH ", b"FEAT", b"SYST", b"OPTS ", b"PASS "];

fn recognise(client: &[u8], server: &[u8]) -> Recognition {
    let command = COMMANDS.iter().any(|c| starts_ci(client, c));
    let banner = server.starts_with(b"220");
    if banner {
        let first = server.split(|&b| b == b'\n').next().unwrap_or(server);
        if memchr::memmem::find(&first.to_ascii_uppercase(), b"FTP").is_some() || command {
            return Recognition::Yes(if command {
                "220 banner and FTP command"
            } else {
                "FTP banner"
            });
        }
        return if client.is_empty() {
            Recognition::NeedMore
        } else {
            Recognition::No
        };
    }
    if starts_ci(client, b"USER ") {
        // Mid-stream, or no banner seen: an FTP reply code says FTP (POP3 says +OK).
        return match reply_code(server) {
            Some(_) => Recognition::Yes("USER answered with a reply code"),
            None if server.is_empty() => Recognition::NeedMore,
            None => Recognition::No,
        };
    }
    Recognition::No
}

#[derive(Debug, Default)]
pub struct Ftp {
    bufs: [Vec<u8>; 2],
    user: Option<String>,
    /// Credentials of the latest `PASS`, waiting for the server's verdict.
    pending: Vec<Credential>,
    auth_tls: bool,
    encrypted: bool,
}

fn anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

impl Ftp {
    fn client_line(&mut self, dir: u8, line: &[u8], out: &mut Out<'_>) {
        let text = String::from_utf8_lossy(line);
        let (cmd, arg) = text.split_once(' ').unwrap_or((&text, ""));
        let arg = arg.trim();
        if cmd.eq_ignore_ascii_case("USER") {
            self.flush(out);
            self.user = Some(arg.to_owned());
        } else if cmd.eq_ignore_ascii_case("PASS") {
            self.flush(out);
            let user = self.user.clone().unwrap_or_default();
            let anon = anonymous(&user);
            let level = if anon { Level::Low } else { Level::High };
            if !user.is_empty() {
                let l = if anon { Level::Low } else { Level::Medium };
                self.pending.push(Credential::client(
                    dir, "username", "ftp_user", l, "USER", &user,
                ));
            }
            if !arg.is_empty() {
                self.pending.push(Credential::client(
                    dir, "password", "ftp_pass", level, "PASS", arg,
                ));
                if anon && arg.contains('@') {
                    self.pending.push(Credential::client(
                        dir,
                        "email",
                        "ftp_pass",
                        Level::Low,
                        "PASS",
                        arg,
                    ));
                }
            }
        } else if cmd.eq_ignore_ascii_case("AUTH") {
            self.auth_tls = true;
        }
    }

    fn server_line(&mut self, line: &[u8], out: &mut Out<'_>) {
        // Multi-line replies end with "code SP"; only the final line decides.
        let Some(code) = reply_code(line).filter(|_| line.get(3) != Some(&b'-')) else {
            return;
        };
        if self.auth_tls {
            self.auth_tls = false;
            self.encrypted |= code == 234;
        }
        if !self.pending.is_empty() {
            let outcome = match code {
                230 | 202 => Some(Outcome::Accepted),
                530 => Some(Outcome::Rejected),
                // 331/332: more is asked (an account); keep waiting.
                331 | 332 => return,
                _ => None,
            };
            for c in &mut self.pending {
                c.outcome = outcome;
            }
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Out<'_>) {
        out.credentials.append(&mut self.pending);
    }
}

impl Dissector for Ftp {
    fn protocol(&self) -> Protocol {
        Protocol::Ftp
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        if self.encrypted {
            return;
        }
        let lines = complete_lines(&mut self.bufs[usize::from(dir & 1)], data, MAX_LINE);
        for l in lines {
            if client {
                self.client_line(dir, &l, out);
            } else {
                self.server_line(&l, out);
            }
        }
    }

    fn gap(&mut self, dir: u8, _client: bool, _out: &mut Out<'_>) {
        self.bufs[usize::from(dir & 1)].clear();
    }

    fn finish(&mut self, _dir: u8, _client: bool, out: &mut Out<'_>) {
        self.flush(out);
    }

    fn encrypted(&self) -> bool {
        self.encrypted
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{Outcome, Protocol, tests::run};

    #[test]
    fn anonymous_login_accepted() {
        let (d, _, creds) = run(&[
            (1, b"220 Welcome to mirrors.example.\r\n"),
            (0, b"USER anonymous\r\n"),
            (1, b"331 Please specify the password.\r\n"),
            (0, b"PASS ftp@example.com\r\n"),
            (1, b"230 Login successful.\r\n"),
        ]);
        assert_eq!(d.protocol(), Some(Protocol::Ftp));
        let kinds: Vec<_> = creds.iter().map(|c| (c.kind, c.outcome)).collect();
        assert_eq!(
            kinds,
            [
                ("username", Some(Outcome::Accepted)),
                ("password", Some(Outcome::Accepted)),
                ("email", Some(Outcome::Accepted))
            ]
        );
        assert!(creds.iter().all(|c| c.level == crate::proto::Level::Low));
    }

    #[test]
    fn rejected_then_none_on_an_odd_port_without_banner_name() {
        let (_, _, creds) = run(&[
            (1, b"220 ready\r\n"),
            (0, b"USER jane\r\n"),
            (1, b"331 pw\r\n"),
            (0, b"PASS hunter2\r\n"),
            (1, b"530 Login incorrect.\r\n"),
        ]);
        assert_eq!(creds.len(), 2);
        assert!(creds.iter().all(|c| c.outcome == Some(Outcome::Rejected)));
        assert_eq!(creds[1].level, crate::proto::Level::High);
        // The reply never came: reported at the end, without an outcome.
        let (_, _, creds) = run(&[(1, b"220 ftpd\r\n"), (0, b"USER jane\r\nPASS x\r\n")]);
        assert_eq!(creds.len(), 2);
        assert!(creds.iter().all(|c| c.outcome.is_none()));
    }

    #[test]
    fn auth_tls_ends_cleartext_and_lookalikes_stay_silent() {
        let (d, _, creds) = run(&[
            (1, b"220 FTP server\r\n"),
            (0, b"AUTH TLS\r\n"),
            (1, b"234 Proceed\r\n"),
            (0, b"\x16\x03\x01\x00\x05hello"),
        ]);
        assert!(d.encrypted() && creds.is_empty());
        // `USER` inside an HTTP body is HTTP.
        let (d, _, creds) = run(&[(
            0,
            b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\nUSER a\r\nPASS b\r\n",
        )]);
        assert_eq!(d.protocol(), Some(Protocol::Http));
        assert!(creds.is_empty());
    }
}
