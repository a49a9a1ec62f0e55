//! Canary credentials: values an admin or app auditor registers (a test
//! account's password, token, e-mail, device id), recognised wherever they
//! appear in a watched flow, whatever the field name, in every encoding apps
//! use. A canary hit is certain: its finding says `confidence: confirmed`.
//!
//! - Each value gives literals: raw; URL-encoded (every reserved byte, upper-
//!   and lower-case escapes, and the `encodeURIComponent` set); base64 and
//!   base64url at each of the three alignments a value can have inside a
//!   longer encoded run (the characters its whole 3-byte groups make: found
//!   padded or not); hex in both cases; its MD5, SHA-1 and SHA-256 digests as
//!   hex (both cases), base64 and base64url.
//! - The literals are compiled into a Hyperscan block database of their own
//!   (`canary_db`), never written to disk (the rules' cache holds only rules).
//!   It is scanned as a trigger, so the sections that hold a literal are
//!   decoded, and over the decoded field stream, to name the field.
//! - This module holds the file: who may own it, its format, its checks. The
//!   values never leave these two modules' care: no `Debug`, error or log
//!   line shows one; findings carry them only for the keyed fingerprint.

use std::{
    fmt,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
    sync::Arc,
};

use serde::Deserialize;

use super::rules::Kind;

/// Shorter values would match by chance.
pub const MIN_VALUE_CHARS: usize = 6;
/// A canaries file is a few kilobytes; this bounds reading a wrong path.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
const MAX_LABEL: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("canaries file {path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// Wrong owner, mode or file type: refused before it is read.
    #[error("canaries file {path}: refused: {why}")]
    Refused { path: String, why: String },
    #[error("canaries file {path}:{line}:{column}: {what}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("canaries file {path}: canary {which}: {what}")]
    Invalid {
        path: String,
        which: String,
        what: String,
    },
    #[error("canaries: {0}")]
    Database(String),
}

/// One registered value.
#[derive(Clone, PartialEq, Eq)]
pub struct Canary {
    /// Shown in findings instead of the value.
    pub label: Arc<str>,
    pub kind: Kind,
    /// Read only by `canary_db`, which derives the literals.
    pub(super) value: String,
}

impl fmt::Debug for Canary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canary")
            .field("label", &self.label)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Canary {
    /// A canary (tests and callers that checked the value themselves).
    pub fn new(label: &str, kind: Kind, value: &str) -> Self {
        Self {
            label: label.into(),
            kind,
            value: value.to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    canaries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    label: String,
    kind: Kind,
    value: String,
}

/// Reads the canaries file at `path`: a regular file (not a symlink), owned
/// by the daemon's effective user or root, mode 0600 or 0400.
pub fn load(path: &Path) -> Result<Vec<Canary>, CanaryError> {
    let p = path.display().to_string();
    let io = |err| CanaryError::Io {
        path: p.clone(),
        err,
    };
    let refused = |why: String| CanaryError::Refused {
        path: p.clone(),
        why,
    };
    // O_NOFOLLOW: a symlink is refused, not followed (and the checks below
    // are of the file opened, not of a name that could change meanwhile).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused("it is a symlink; give the file itself".into())
            } else {
                io(e)
            }
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(refused("not a regular file".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(refused(format!(
            "owned by uid {}, not by the daemon's user (uid {euid}) or root",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 && mode != 0o400 {
        return Err(refused(format!("mode {mode:04o}: make it 0600 or 0400")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(refused(format!(
            "{} bytes: more than {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    parse(&p, &text)
}

/// Parses a canaries document; errors name the place, never a value.
pub fn parse(path: &str, text: &str) -> Result<Vec<Canary>, CanaryError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let line = text[..at.min(text.len())].matches('\n').count() + 1;
        let column = at - text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1) + 1;
        // serde's messages quote the value they choke on: kept only when
        // they name a key, not a value.
        let m = e.message();
        let what = if m.starts_with("unknown field") || m.starts_with("missing field") {
            m.lines().next().unwrap_or(m).to_owned()
        } else if m.starts_with("unknown variant") {
            format!(
                "kind is not a leak kind (one of {})",
                Kind::ALL.map(Kind::name).join(", ")
            )
        } else {
            "not valid here (the text is not shown: it may hold a value)".to_owned()
        };
        CanaryError::Parse {
            path: path.to_owned(),
            line,
            column,
            what,
        }
    })?;
    let mut out: Vec<Canary> = Vec::with_capacity(doc.canaries.len());
    for (i, e) in doc.canaries.into_iter().enumerate() {
        let invalid = |what: String| CanaryError::Invalid {
            path: path.to_owned(),
            which: if e.label.is_empty() {
                format!("#{}", i + 1)
            } else {
                format!("{:?}", e.label)
            },
            what,
        };
        let label_ok = !e.label.is_empty()
            && e.label.len() <= MAX_LABEL
            && e.label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !label_ok {
            return Err(invalid(format!(
                "label must be 1 to {MAX_LABEL} letters, digits, '-', '_', '.' or ':'"
            )));
        }
        if e.value.chars().count() < MIN_VALUE_CHARS {
            return Err(invalid(format!(
                "value is shorter than {MIN_VALUE_CHARS} characters: it would match by chance"
            )));
        }
        if e.value.trim() != e.value || e.value.contains(['\n', '\r', '\0']) {
            return Err(invalid(
                "value starts or ends with spaces, or holds a line break or NUL".into(),
            ));
        }
        if let Some(other) = out.iter().find(|c| c.label.as_ref() == e.label) {
            return Err(invalid(format!(
                "label used twice (also {:?})",
                other.label
            )));
        }
        if let Some(other) = out.iter().find(|c| c.value == e.value) {
            return Err(invalid(format!(
                "same value as canary {:?}: one label per value",
                other.label
            )));
        }
        out.push(Canary::new(&e.label, e.kind, &e.value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_parses_and_errors_name_the_place_not_the_value() {
        let ok = "[[canaries]]\nlabel = \"qobuz-test\"\nkind = \"password\"\nvalue = \"s3cret-pw\"\n\n[[canaries]]\nlabel = \"qobuz-mail\"\nkind = \"email\"\nvalue = \"audit@example.com\"\n";
        let cs = parse("c.toml", ok).unwrap();
        assert_eq!(cs.len(), 2);
        assert!(!format!("{cs:?}").contains("s3cret"), "Debug hides values");
        let bad = |doc: &str| parse("c.toml", doc).unwrap_err().to_string();
        let e = bad("[[canaries]]\nlabel = \"a\"\nkind = \"pasword\"\nvalue = \"s3cret-pw\"\n");
        assert!(
            e.starts_with("canaries file c.toml:3:") && e.contains("leak kind"),
            "{e}"
        );
        let e = bad("[[canaries]]\nlabel = \"a\"\nkind = \"password\"\nvalue = 123456789\n");
        assert!(
            e.starts_with("canaries file c.toml:4:") && !e.contains("123456789"),
            "{e}"
        );
        let e = bad("[[canaries]]\nlabel = \"a\"\nkind = \"password\"\nvalu = \"s3cret-pw\"\n");
        assert!(e.contains("unknown field `valu`"), "{e}");
        let e = bad("[[canaries]]\nlabel = \"a\"\nkind = \"password\"\nvalue = \"short\"\n");
        assert!(
            e.contains("canary \"a\"") && e.contains("shorter than 6") && !e.contains("short\""),
            "{e}"
        );
        let e = bad("[[canaries]]\nlabel = \"a b\"\nkind = \"password\"\nvalue = \"s3cret-pw\"\n");
        assert!(e.contains("label must be"), "{e}");
        let twice = format!(
            "{ok}[[canaries]]\nlabel = \"again\"\nkind = \"password\"\nvalue = \"s3cret-pw\"\n"
        );
        let e = bad(&twice);
        assert!(
            e.contains("same value as canary \"qobuz-test\"") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn the_file_is_refused_unless_private_and_the_daemons() {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        let dir = std::env::temp_dir().join(format!("lw-canaries-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("canaries.toml");
        std::fs::write(
            &path,
            "[[canaries]]\nlabel = \"t\"\nkind = \"auth_token\"\nvalue = \"tok-123456\"\n",
        )
        .unwrap();
        let mode =
            |m: u32| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        for m in [0o644, 0o640, 0o604, 0o700, 0o660] {
            mode(m);
            let e = load(&path).unwrap_err().to_string();
            assert!(
                e.contains("refused")
                    && e.contains(&format!("mode {m:04o}"))
                    && e.contains("0600 or 0400"),
                "{e}"
            );
        }
        for m in [0o600, 0o400] {
            mode(m);
            assert_eq!(load(&path).unwrap().len(), 1, "mode {m:o}");
        }
        let link = dir.join("link.toml");
        symlink(&path, &link).unwrap();
        let e = load(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Owned by another user (root may chown; elsewhere this part is moot).
        // SAFETY: plain libc calls on a path we own.
        if unsafe { libc::geteuid() } == 0 {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::chown(c.as_ptr(), 4242, 4242) }, 0);
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains("owned by uid 4242"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
