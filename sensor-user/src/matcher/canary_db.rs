//! The compiled canaries: every literal a registered value gives (see
//! `canaries` for the encodings), one Hyperscan block database of them that is
//! never cached on disk, and the checks that confirm a literal's match.

use std::{collections::HashMap, fmt, sync::Arc};

use base64::Engine as _;
use hyperscan::{Block, prelude::*};

use super::{
    canaries::{Canary, CanaryError, MIN_VALUE_CHARS},
    canary_forms::{derive, lenient, tolerant, unescape},
    rules::Kind,
};

/// Derived literals shorter than this are left out (a base64 fragment of a
/// few characters occurs everywhere); the raw value is always kept.
const MIN_LITERAL: usize = 8;

/// One literal a canary gives, and what finding its match is.
#[derive(Debug, Clone)]
struct Literal {
    canary: usize,
    kind: Kind,
    form: &'static str,
    check: Check,
    /// What the finding reports (and fingerprints): the value, or for a
    /// digest the digest in lower-case hex.
    meaning: String,
}

/// What confirms a literal's match on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing more (a digest, or edges that are not letters or digits).
    None,
    /// Where the literal's own edge is a letter or digit, the wire's must not
    /// continue it (`token1` is not `token12`).
    Bounded,
    /// A base64 fragment leaves out up to two bytes at each end of the value:
    /// the run around it is decoded and must hold the whole value.
    Base64,
}

/// A canary's match: which one and in which encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryMatch {
    pub label: Arc<str>,
    /// How the value travelled: `raw`, `url`, `base64`, `base64url`, `hex`,
    /// `md5-hex`, `sha1-base64`, …
    pub form: &'static str,
}

/// A canary literal found in one field of a batch.
#[derive(Debug, Clone)]
pub struct Found {
    pub field: usize,
    pub kind: Kind,
    pub value: String,
    pub at: CanaryMatch,
}

/// The compiled canaries.
pub struct Canaries {
    defs: Vec<Canary>,
    literals: Vec<Literal>,
    /// The literals' bytes, for the near-miss check and for tests.
    bytes: Vec<Vec<u8>>,
    db: BlockDatabase,
}

impl fmt::Debug for Canaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canaries")
            .field("canaries", &self.defs.len())
            .field("literals", &self.literals.len())
            .finish_non_exhaustive()
    }
}

/// Each literal as a pattern of its tolerant form, numbered from `first`.
/// Leftmost start: the edges are checked on the wire's bytes, whose length
/// differs from the literal's where escaped.
/// Hex (of the value or a digest) is matched in either case: one pattern.
fn numbered(
    bytes: &[Vec<u8>],
    literals: &[Literal],
    first: usize,
) -> Result<Vec<Pattern>, CanaryError> {
    bytes
        .iter()
        .zip(literals)
        .enumerate()
        .map(|(i, (b, l))| {
            let mut flags = CompileFlags::SOM_LEFTMOST;
            if l.form == "hex" || l.form.ends_with("-hex") {
                flags |= CompileFlags::CASELESS;
            }
            let b64 = l.form.ends_with("base64");
            let mut p = Pattern::with_flags(tolerant(b, b64), flags)
                .map_err(|e| CanaryError::Database(e.to_string()))?;
            p.id = Some(first + i);
            Ok(p)
        })
        .collect()
}

impl Canaries {
    /// Compiles `canaries` (none: `None`).
    pub fn compile(canaries: Vec<Canary>) -> Result<Option<Self>, CanaryError> {
        if canaries.is_empty() {
            return Ok(None);
        }
        let mut literals = Vec::new();
        let mut bytes: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, c) in canaries.iter().enumerate() {
            for (b, form, digest) in derive(&c.value) {
                if form != "raw" && b.len() < MIN_LITERAL {
                    continue;
                }
                if seen.contains_key(&b) {
                    // The same bytes by another road (a value with nothing
                    // to escape): one literal.
                    continue;
                }
                seen.insert(b.clone(), literals.len());
                let kind = if digest.is_some() && c.kind == Kind::Password {
                    Kind::PasswordHash
                } else {
                    c.kind
                };
                let edge = |x: Option<&u8>| x.is_some_and(u8::is_ascii_alphanumeric);
                let check = match form {
                    "base64" => Check::Base64,
                    _ if digest.is_some() => Check::None,
                    _ if edge(b.first()) || edge(b.last()) => Check::Bounded,
                    _ => Check::None,
                };
                literals.push(Literal {
                    canary: i,
                    kind,
                    form,
                    check,
                    meaning: digest.unwrap_or_else(|| c.value.clone()),
                });
                bytes.push(b);
            }
        }
        let patterns = numbered(&bytes, &literals, 0)?;
        let db = Patterns(patterns)
            .build::<Block>()
            .map_err(|e| CanaryError::Database(e.to_string()))?;
        Ok(Some(Self {
            defs: canaries,
            literals,
            bytes,
            db,
        }))
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Literals compiled (tests, `rules check`).
    pub fn literals(&self) -> usize {
        self.literals.len()
    }

    /// Grows `scratch` to serve this database too.
    pub fn fit_scratch(&self, scratch: &mut Scratch) -> Result<(), CanaryError> {
        self.db
            .realloc_scratch(scratch)
            .map(|_| ())
            .map_err(|e| CanaryError::Database(e.to_string()))
    }

    /// Whether literal `i`, found at `from..to` in `buf`, is the canary's
    /// value (see [`Check`]).
    fn confirmed(&self, i: usize, buf: &[u8], (from, to): (usize, usize)) -> bool {
        let l = &self.literals[i];
        match l.check {
            Check::None => true,
            Check::Bounded => {
                let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
                let lit = &self.bytes[i];
                let before = from.checked_sub(1).and_then(|j| buf.get(j));
                !(alnum(lit.first()) && alnum(before) || alnum(lit.last()) && alnum(buf.get(to)))
            }
            Check::Base64 => {
                let value = self.defs[l.canary].value.as_bytes();
                let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
                // The match leaves out at most two bytes of the value at each
                // end (four characters, twelve escaped) and up to three more
                // to a group boundary: a window of 24 bytes each side holds
                // them. Where the encoded data starts is not known: each run
                // is tried at each of the four character offsets.
                let window = buf
                    .get(from.saturating_sub(24)..to.saturating_add(24).min(buf.len()))
                    .unwrap_or_default();
                let norm = unescape(window);
                norm.split(|b| !is_b64(b)).any(|run| {
                    (0..4).any(|off| {
                        let run = run.get(off..).unwrap_or_default();
                        let rest = run.len() % 4;
                        let keep = run.len() - usize::from(rest == 1);
                        lenient()
                            .decode(&run[..keep])
                            .is_ok_and(|d| memchr::memmem::find(&d, value).is_some())
                    })
                })
            }
        }
    }

    /// The literals as patterns numbered from `first` (the prefilter's
    /// combined database puts them after the rules' triggers).
    pub fn patterns(&self, first: usize) -> Result<Vec<Pattern>, CanaryError> {
        numbered(&self.bytes, &self.literals, first)
    }

    /// The prefilter's share: for each literal its longest run of letters
    /// and digits (8 or more; hex in either case), as plain literals numbered
    /// from `first`, reported once. A literal plain runs cannot stand for
    /// (short runs between escapable bytes) comes whole. A match only says
    /// "look closer": [`Self::fires`] then decides.
    pub fn anchors(&self, first: usize) -> Result<Vec<Pattern>, CanaryError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, (b, l)) in self.bytes.iter().zip(&self.literals).enumerate() {
            let run = b
                .split(|c| !c.is_ascii_alphanumeric())
                .max_by_key(|r| r.len())
                .unwrap_or_default();
            let hex = l.form == "hex" || l.form.ends_with("-hex");
            let (expr, mut flags) = if run.len() >= MIN_LITERAL {
                let e = run.iter().fold(String::new(), |mut e, x| {
                    use std::fmt::Write as _;
                    let _ = write!(e, "\\x{x:02x}");
                    e
                });
                (e, CompileFlags::SINGLEMATCH)
            } else {
                (
                    tolerant(b, l.form.ends_with("base64")),
                    CompileFlags::SINGLEMATCH,
                )
            };
            if hex {
                flags |= CompileFlags::CASELESS;
            }
            if !seen.insert(expr.clone()) {
                continue;
            }
            let mut p = Pattern::with_flags(expr, flags)
                .map_err(|e| CanaryError::Database(e.to_string()))?;
            p.id = Some(first + i);
            out.push(p);
        }
        Ok(out)
    }

    /// Whether literal `i`'s match at `from..to` of `raw` is the canary.
    pub fn confirms(&self, i: usize, raw: &[u8], from: usize, to: usize) -> bool {
        i < self.literals.len() && self.confirmed(i, raw, (from, to))
    }

    /// Whether some canary literal occurs in `raw` (the trigger prefilter).
    /// A scan error says yes: the prefilter may only ever cost time.
    pub fn fires(&self, scratch: &Scratch, raw: &[u8]) -> bool {
        let mut fired = false;
        let r = self.db.scan(raw, scratch, |id, from, to, _| {
            if self.confirmed(id as usize, raw, (from as usize, to as usize)) {
                fired = true;
                Matching::Terminate
            } else {
                Matching::Continue
            }
        });
        fired || r.is_err()
    }

    /// Canary literals in a serialized field batch (`buf`, the fields' line
    /// ends `ends` relative to `base`): at most one per (canary, field).
    pub fn scan(
        &self,
        scratch: &Scratch,
        buf: &[u8],
        ends: &[u64],
        base: u64,
    ) -> Result<Vec<Found>, CanaryError> {
        let mut raw: Vec<(usize, usize, usize)> = Vec::new();
        self.db
            .scan(buf, scratch, |id, from, to, _| {
                raw.push((id as usize, from as usize, to as usize));
                Matching::Continue
            })
            .map_err(|e| CanaryError::Database(e.to_string()))?;
        let mut out: Vec<Found> = Vec::new();
        for (id, from, to) in raw {
            if !self.confirmed(id, buf, (from, to)) {
                continue;
            }
            let field = ends.partition_point(|&e| e < base + to as u64);
            if field >= ends.len() {
                continue;
            }
            let l = &self.literals[id];
            let c = &self.defs[l.canary];
            if out
                .iter()
                .any(|f| f.field == field && f.at.label == c.label && f.kind == l.kind)
            {
                continue;
            }
            out.push(Found {
                field,
                kind: l.kind,
                value: l.meaning.clone(),
                at: CanaryMatch {
                    label: Arc::clone(&c.label),
                    form: match l.form {
                        // What the tolerant value matched: as it is, or
                        // with escapes (which kind tells the encoder).
                        "raw" if buf.get(from..to) != Some(c.value.as_bytes()) => {
                            if buf.get(from..to).is_some_and(|m| m.contains(&b'%')) {
                                "url"
                            } else {
                                "escaped"
                            }
                        }
                        f if f.ends_with("base64")
                            && buf
                                .get(from..to)
                                .is_some_and(|m| m.contains(&b'-') || m.contains(&b'_')) =>
                        {
                            match f {
                                "base64" => "base64url",
                                "md5-base64" => "md5-base64url",
                                "sha1-base64" => "sha1-base64url",
                                _ => "sha256-base64url",
                            }
                        }
                        f => f,
                    },
                },
            });
        }
        Ok(out)
    }

    /// Whether a pattern rule's value `v` is this canary match again (the
    /// value itself, its digest, or a literal of it): one finding, not two.
    pub fn covers(&self, found: &Found, v: &str) -> bool {
        let Some(c) = self.defs.iter().find(|c| c.label == found.at.label) else {
            return false;
        };
        let v = v.trim();
        v.eq_ignore_ascii_case(&found.value)
            || v.contains(c.value.as_str())
            || c.value.contains(v) && v.chars().count() >= MIN_VALUE_CHARS
    }

    /// Every literal's bytes (the planted-secret tests look for each in
    /// every output).
    pub fn all_literals(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.iter().map(Vec::as_slice)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use md5::Digest as _;

    use super::*;
    use crate::matcher::canaries::Canary;

    fn compiled(cs: Vec<Canary>) -> (Canaries, Scratch) {
        let c = Canaries::compile(cs).unwrap().unwrap();
        let mut s = c.db.alloc_scratch().unwrap();
        c.fit_scratch(&mut s).unwrap();
        (c, s)
    }

    /// Every encoding the issue lists, made here independently of `derive`.
    pub(crate) fn encodings(value: &str) -> Vec<(&'static str, String)> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let v = value.as_bytes();
        let hexl = |b: &[u8]| {
            b.iter().fold(String::new(), |mut s, x| {
                use std::fmt::Write as _;
                let _ = write!(s, "{x:02x}");
                s
            })
        };
        let hexu = |b: &[u8]| hexl(b).to_uppercase();
        let pct = |upper: bool| {
            v.iter()
                .map(|&b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect::<String>()
        };
        let md5 = md5::Md5::digest(v);
        let sha1 = sha1::Sha1::digest(v);
        let sha256 = sha2::Sha256::digest(v);
        let mut out = vec![
            ("raw", value.to_owned()),
            ("url upper", pct(true)),
            ("url lower", pct(false)),
            ("hex lower", hexl(v)),
            ("hex upper", hexu(v)),
            ("md5 hex", hexl(&md5)),
            ("md5 HEX", hexu(&md5)),
            ("md5 base64", STANDARD.encode(md5)),
            ("sha1 hex", hexl(&sha1)),
            ("sha1 HEX", hexu(&sha1)),
            ("sha1 base64", STANDARD.encode(sha1)),
            ("sha256 hex", hexl(&sha256)),
            ("sha256 HEX", hexu(&sha256)),
            ("sha256 base64", STANDARD.encode(sha256)),
            ("sha256 base64url", URL_SAFE_NO_PAD.encode(sha256)),
        ];
        // Base64 of the value inside a longer run, at each alignment, padded
        // and not, in both alphabets.
        for (k, pre) in ["", "{", "{\""].iter().enumerate() {
            let doc = format!("{pre}{value}\"}}");
            out.push((
                ["base64 at 0", "base64 at 1", "base64 at 2"][k],
                STANDARD.encode(&doc),
            ));
            out.push((
                ["base64url at 0", "base64url at 1", "base64url at 2"][k],
                URL_SAFE.encode(&doc),
            ));
            out.push((
                ["b64 nopad at 0", "b64 nopad at 1", "b64 nopad at 2"][k],
                URL_SAFE_NO_PAD.encode(&doc),
            ));
        }
        out.push(("base64 alone", STANDARD.encode(v)));
        out
    }

    #[test]
    fn every_encoding_is_found_and_a_near_miss_is_not() {
        let value = "Tr0ub4dor&3x?";
        let (c, s) = compiled(vec![Canary::new("qobuz-test", Kind::Password, value)]);
        for (name, enc) in encodings(value) {
            let line = format!("\u{1e}q\u{1f}p={enc}\n");
            assert!(c.fires(&s, line.as_bytes()), "{name}: {enc}");
            let found = c
                .scan(&s, line.as_bytes(), &[line.len() as u64], 0)
                .unwrap();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            let digest = name.starts_with("md5") || name.starts_with("sha");
            assert_eq!(
                found[0].kind,
                if digest {
                    Kind::PasswordHash
                } else {
                    Kind::Password
                },
                "{name}"
            );
        }
        // One character off, in every encoding: not found.
        for (name, enc) in encodings("Tr0ub4dor&3y?") {
            let line = format!("p={enc}\n");
            assert!(
                c.scan(&s, line.as_bytes(), &[line.len() as u64], 0)
                    .unwrap()
                    .is_empty(),
                "{name}: {enc}"
            );
        }
        // A longer token that starts with the value is another token.
        let (t, s) = compiled(vec![Canary::new("tok", Kind::AuthToken, "A1b2C3d4E5")]);
        assert!(!t.fires(&s, b"t=A1b2C3d4E5F6"));
        assert!(t.fires(&s, b"t=A1b2C3d4E5&x=1"));
    }
}
