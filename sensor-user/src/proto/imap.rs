//! IMAP (RFC 3501, 7888, 4959): `LOGIN` with atoms, quoted strings and
//! literals (`{n}` after a continuation, or `{n+}`), `AUTHENTICATE PLAIN` /
//! `LOGIN` / `CRAM-MD5` inline or after `+`; the tagged reply gives the
//! verdict, an accepted `STARTTLS` ends cleartext. What the server sends
//! (fetched headers and mail) is offered to the pattern rules as text lines,
//! so its e-mail addresses are found once per flow and address.

use super::{
    Credential, Dissector, Level, Out, Outcome, Protocol, Recognition, Registration,
    complete_lines, lines,
    sasl::{Sasl, SaslRules},
};

pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Imap,
    recognise,
    make: |_| Box::<Imap>::default(),
};

const MAX_LINE: usize = 8192;
/// Largest literal read as a command argument.
const MAX_LITERAL: usize = 8192;
const RULES: SaslRules = SaslRules {
    username: "imap_user",
    password: "imap_pass",
    hash: "imap_cram_md5",
};
const COMMANDS: [&str; 9] = [
    "LOGIN",
    "AUTHENTICATE",
    "CAPABILITY",
    "STARTTLS",
    "SELECT",
    "NOOP",
    "ID",
    "LIST",
    "EXAMINE",
];

/// Recognised by the `* OK`/`* PREAUTH` greeting or a tagged command.
fn recognise(client: &[u8], server: &[u8]) -> Recognition {
    if server.starts_with(b"* OK") || server.starts_with(b"* PREAUTH") {
        return Recognition::Yes("greeting");
    }
    let line = client.split(|&b| b == b'\n').next().unwrap_or(b"");
    let mut words = line.split(|&b| b == b' ');
    let tag = words.next().unwrap_or(b"");
    let cmd = words.next().unwrap_or(b"");
    let cmd = String::from_utf8_lossy(cmd).trim().to_ascii_uppercase();
    if !tag.is_empty()
        && tag.iter().all(u8::is_ascii_alphanumeric)
        && COMMANDS.contains(&cmd.as_str())
    {
        return Recognition::Yes("tagged command");
    }
    if server.is_empty() || b"* PREAUTH".starts_with(server) || b"* OK".starts_with(server) {
        Recognition::NeedMore
    } else {
        Recognition::No
    }
}

/// Splits an IMAP command line into its arguments: atoms and quoted strings
/// (with `\"` and `\\`), and a trailing literal marker `{n}`/`{n+}` returned
/// apart.
fn tokens(line: &[u8]) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => i += 1,
            b'"' => {
                let mut t = Vec::new();
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    if line[i] == b'\\' && i + 1 < line.len() {
                        i += 1;
                    }
                    t.push(line[i]);
                    i += 1;
                }
                i += 1;
                out.push(t);
            }
            _ => {
                let end = line[i..]
                    .iter()
                    .position(|&b| b == b' ')
                    .map_or(line.len(), |p| i + p);
                out.push(line[i..end].to_vec());
                i = end;
            }
        }
    }
    let literal = out.last().and_then(|t| {
        let n = t.strip_prefix(b"{")?.strip_suffix(b"}")?;
        let n = n.strip_suffix(b"+").unwrap_or(n);
        std::str::from_utf8(n).ok()?.parse::<usize>().ok()
    });
    if literal.is_some() {
        out.pop();
    }
    (out, literal)
}

#[derive(Debug, Default)]
pub struct Imap {
    /// Client bytes not yet read.
    client: Vec<u8>,
    /// Arguments of the command being read (it may span literals).
    cmd: Vec<Vec<u8>>,
    literal: Option<usize>,
    server: Vec<u8>,
    sasl: Option<(Vec<u8>, Sasl)>,
    /// Credentials by tag, waiting for the tagged reply.
    pending: Vec<(Vec<u8>, Vec<Credential>)>,
    starttls: Option<Vec<u8>>,
    encrypted: bool,
    text: lines::Lines,
}

impl Imap {
    fn client_bytes(&mut self, dir: u8, data: &[u8]) {
        self.client.extend_from_slice(data);
        loop {
            if let Some(n) = self.literal {
                if self.client.len() < n {
                    break;
                }
                let lit: Vec<u8> = self.client.drain(..n).collect();
                self.cmd.push(lit);
                self.literal = None;
                continue;
            }
            let Some(i) = memchr::memchr(b'\n', &self.client) else {
                if self.client.len() > MAX_LINE {
                    self.client.clear();
                    self.cmd.clear();
                }
                break;
            };
            let raw: Vec<u8> = self.client.drain(..=i).collect();
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some((tag, s)) = self.sasl.take() {
                let mut got = Vec::new();
                self.sasl = s
                    .response(line, dir, &RULES, &mut got)
                    .map(|s| (tag.clone(), s));
                self.hold(&tag, got);
                continue;
            }
            let (mut toks, literal) = tokens(line);
            self.cmd.append(&mut toks);
            match literal {
                Some(n) if n <= MAX_LITERAL => self.literal = Some(n),
                Some(_) => self.cmd.clear(),
                None => {
                    let cmd = std::mem::take(&mut self.cmd);
                    self.command(dir, &cmd);
                }
            }
        }
    }

    fn hold(&mut self, tag: &[u8], creds: Vec<Credential>) {
        if creds.is_empty() {
            return;
        }
        match self.pending.iter_mut().find(|(t, _)| t == tag) {
            Some((_, c)) => c.extend(creds),
            None => self.pending.push((tag.to_vec(), creds)),
        }
    }

    fn command(&mut self, dir: u8, cmd: &[Vec<u8>]) {
        let [tag, name, args @ ..] = cmd else {
            return;
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match name.to_ascii_uppercase().as_slice() {
            b"LOGIN" => {
                let [user, pass, ..] = args else {
                    return;
                };
                let mut c = vec![Credential::client(
                    dir,
                    "username",
                    "imap_user",
                    Level::Medium,
                    "LOGIN",
                    &text(user),
                )];
                if !pass.is_empty() {
                    c.push(Credential::client(
                        dir,
                        "password",
                        "imap_pass",
                        Level::High,
                        "LOGIN",
                        &text(pass),
                    ));
                }
                self.hold(tag, c);
            }
            b"AUTHENTICATE" => {
                let Some(s) = args.first().and_then(|m| Sasl::start(m)) else {
                    return;
                };
                match args.get(1) {
                    // SASL-IR (RFC 4959): the first response on the command line.
                    Some(ir) => {
                        let mut got = Vec::new();
                        self.sasl = s
                            .response(ir, dir, &RULES, &mut got)
                            .map(|s| (tag.clone(), s));
                        self.hold(tag, got);
                    }
                    None => self.sasl = Some((tag.clone(), s)),
                }
            }
            b"STARTTLS" => self.starttls = Some(tag.clone()),
            _ => {}
        }
    }

    fn server_line(&mut self, line: &[u8], out: &mut Out<'_>) {
        let mut words = line.splitn(3, |&b| b == b' ');
        let (tag, status) = (words.next().unwrap_or(b""), words.next().unwrap_or(b""));
        let outcome = match status.to_ascii_uppercase().as_slice() {
            b"OK" => Outcome::Accepted,
            b"NO" | b"BAD" => Outcome::Rejected,
            _ => return,
        };
        if self.starttls.as_deref() == Some(tag) {
            self.starttls = None;
            self.encrypted = outcome == Outcome::Accepted;
        }
        if self.sasl.as_ref().is_some_and(|(t, _)| t == tag) {
            self.sasl = None;
        }
        if let Some(i) = self.pending.iter().position(|(t, _)| t == tag) {
            let (_, mut creds) = self.pending.remove(i);
            for c in &mut creds {
                c.outcome = Some(outcome);
            }
            out.credentials.append(&mut creds);
        }
    }
}

impl Dissector for Imap {
    fn protocol(&self) -> Protocol {
        Protocol::Imap
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        if self.encrypted {
            return;
        }
        if client {
            self.client_bytes(dir, data);
            return;
        }
        self.text.feed_dir(dir, data, out.fields);
        for l in complete_lines(&mut self.server, data, MAX_LINE) {
            self.server_line(&l, out);
        }
    }

    fn gap(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        if client {
            self.client.clear();
            self.cmd.clear();
            self.literal = None;
        } else {
            self.server.clear();
            self.text.flush_dir(dir, out.fields);
        }
    }

    fn finish(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        if !client {
            self.text.flush_dir(dir, out.fields);
        }
        for (_, mut c) in self.pending.drain(..) {
            out.credentials.append(&mut c);
        }
    }

    fn encrypted(&self) -> bool {
        self.encrypted
    }
}

#[cfg(test)]
mod tests {
    use super::tokens;
    use crate::proto::{
        Outcome, Protocol,
        tests::{found, run},
    };

    #[test]
    fn login_quoted_atoms_and_literals() {
        let (d, _, c) = run(&[
            (1, b"* OK IMAP4rev1 ready\r\n"),
            (0, b"a0001 LOGIN \"neulingern\" \"XXXXXX\"\r\n"),
            (1, b"a0001 OK LOGIN completed.\r\n"),
        ]);
        assert_eq!(d.protocol(), Some(Protocol::Imap));
        assert_eq!(
            found(&c),
            [
                ("username", "neulingern", Some(Outcome::Accepted)),
                ("password", "XXXXXX", Some(Outcome::Accepted))
            ]
        );
        let (_, _, c) = run(&[
            (1, b"* OK\r\n"),
            (0, b"a1 LOGIN {4}\r\n"),
            (1, b"+ go\r\n"),
            (0, b"jane {9+}\r\nse\"cr et!\r\n"),
            (1, b"a1 NO bad\r\n"),
            (0, b"a2 login bob \"p\\\"w\"\r\n"),
        ]);
        assert_eq!(
            found(&c),
            [
                ("username", "jane", Some(Outcome::Rejected)),
                ("password", "se\"cr et!", Some(Outcome::Rejected)),
                ("username", "bob", None),
                ("password", "p\"w", None),
            ]
        );
        assert_eq!(tokens(b"a LOGIN x {3}").1, Some(3));
    }

    #[test]
    fn authenticate_plain_inline_and_after_continuation_and_starttls() {
        let (_, _, c) = run(&[
            (1, b"* OK\r\n"),
            (0, b"t1 AUTHENTICATE PLAIN\r\n"),
            (1, b"+ \r\n"),
            (0, b"AGphbmUAczNjcmV0\r\n"),
            (1, b"t1 OK\r\n"),
            (0, b"t2 AUTHENTICATE PLAIN AGJvYgBwdw==\r\n"),
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
        let (d, _, c) = run(&[
            (1, b"* OK\r\n"),
            (0, b"s STARTTLS\r\n"),
            (1, b"s OK go\r\n"),
            (0, b"a LOGIN x y\r\n"),
        ]);
        assert!(d.encrypted() && c.is_empty());
        let (d, _, c) = run(&[
            (1, b"* OK\r\n"),
            (0, b"s STARTTLS\r\n"),
            (1, b"s BAD no\r\n"),
            (0, b"a LOGIN x y\r\n"),
        ]);
        assert!(!d.encrypted());
        assert_eq!(c.len(), 2);
    }
}
