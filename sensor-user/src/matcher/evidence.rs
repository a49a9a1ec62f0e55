//! Evidence: findings shown without giving the secret away, and recognised again.
//!
//! - Evidence is redacted by default: the field name, the value's first and last
//!   two characters and its length. `fingerprint` shows no characters; `full`
//!   shows the value (explicit opt-in, warned about at start-up).
//! - Fingerprints are a keyed hash (HMAC-SHA256 with a per-installation key kept
//!   in a 0600 file), so the same secret is recognisable across flows and clients
//!   without ever being stored.
//! - Replays: the same token or password-hash fingerprint from a second client
//!   address within a window.

use std::{
    fmt::Write as _,
    fs,
    io::{self, Read as _, Write as _},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    str::FromStr,
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::rules::Kind;
use crate::shared::table::{Evictions, FlowTable};

/// How evidence is shown in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceMode {
    #[default]
    Redacted,
    Fingerprint,
    Full,
}

impl FromStr for EvidenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redacted" => Ok(Self::Redacted),
            "fingerprint" => Ok(Self::Fingerprint),
            "full" => Ok(Self::Full),
            _ => Err(format!(
                "{s:?}: evidence mode is redacted, fingerprint or full"
            )),
        }
    }
}

/// The evidence string of a value found in field `name`.
pub fn evidence(name: &str, value: &str, mode: EvidenceMode) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let shown = match mode {
        EvidenceMode::Full => value.to_owned(),
        // Short values would be mostly revealed by four characters.
        EvidenceMode::Redacted if n >= 8 => {
            let head: String = chars[..2].iter().collect();
            let tail: String = chars[n - 2..].iter().collect();
            format!("{head}…{tail} ({n} chars)")
        }
        EvidenceMode::Redacted | EvidenceMode::Fingerprint => format!("… ({n} chars)"),
    };
    if name.is_empty() {
        shown
    } else {
        format!("{name}={shown}")
    }
}

/// Keyed fingerprints of secrets.
pub struct Fingerprinter {
    key: [u8; 32],
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(..)")
    }
}

impl Fingerprinter {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The installation's key at `path`, created (random, mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        let mut key = [0u8; 32];
        match fs::File::open(path) {
            Ok(mut f) => {
                f.read_exact(&mut key).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{}: {e} (expected 32 bytes)", path.display()),
                    )
                })?;
                // Whatever made it readable to others, it is the key: tighten it.
                if f.metadata()?.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "{}: permissions were looser than 0600; fixed",
                        path.display()
                    );
                    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                f.write_all(&key)?;
                f.sync_all()?;
                log::info!("created fingerprint key {}", path.display());
            }
            Err(e) => return Err(e),
        }
        Ok(Self { key })
    }

    /// A key shared by a fleet (`fingerprint_key_file`): it must exist (a key
    /// made up here would not match the other gateways'), hold 32 bytes, and
    /// not be readable by others. It is not modified.
    pub fn load(path: &Path) -> io::Result<Self> {
        let mut f = fs::File::open(path)?;
        let meta = f.metadata()?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is readable by others (mode {:o}): make it 0600 or 0640",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ),
            ));
        }
        if meta.len() != 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {} bytes, a key is 32 (head -c 32 /dev/urandom)",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        let mut key = [0u8; 32];
        f.read_exact(&mut key)?;
        Ok(Self { key })
    }

    /// 32 hex characters identifying `value` of `kind` on this installation.
    /// A client's keyed hash: counts it (the app inventory) without keeping
    /// its address.
    pub fn client_id(&self, ip: IpAddr) -> u64 {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(b"client\0");
        match ip {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        let d = mac.finalize().into_bytes();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    pub fn fingerprint(&self, kind: Kind, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(kind.name().as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let mut hex = String::with_capacity(32);
        for b in &mac.finalize().into_bytes()[..16] {
            // Writing to a String does not fail.
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

/// A secret seen again from another client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub first_client: IpAddr,
    /// How long ago the first client sent it.
    pub since: Duration,
}

struct Seen {
    client: IpAddr,
    replayed_to: Vec<IpAddr>,
}

/// Fingerprints of replayable secrets and the client that sent each first.
/// Bounded in entries and expiring after `window`; an entry's stamp is when its
/// first client sent it (a replay does not renew it).
pub struct ReplayDetector {
    seen: FlowTable<String, Seen>,
    window: Duration,
}

impl ReplayDetector {
    pub fn new(window: Duration, cap: usize) -> Self {
        Self {
            seen: FlowTable::new("replay_fingerprints", cap),
            window,
        }
    }

    /// Draws the fingerprints from the shared memory budget.
    pub fn set_budget(&mut self, budget: std::sync::Arc<crate::shared::budget::Budget>) {
        self.seen.set_budget(budget);
    }

    /// Records `fingerprint` from `client`; a replay when another client sent it
    /// within the window (reported once per new client).
    pub fn observe(&mut self, fingerprint: &str, client: IpAddr, now: Instant) -> Option<Replay> {
        let key = fingerprint.to_owned();
        if let (Some(at), Some(s)) = (self.seen.last(&key), self.seen.get_mut(&key))
            && now.duration_since(at) <= self.window
        {
            if s.client == client || s.replayed_to.contains(&client) {
                return None;
            }
            if s.replayed_to.len() < 16 {
                s.replayed_to.push(client);
            }
            return Some(Replay {
                first_client: s.client,
                since: now.duration_since(at),
            });
        }
        // New, or its window passed: this client is now the first.
        self.sweep(now);
        self.seen.insert(
            key,
            Seen {
                client,
                replayed_to: Vec::new(),
            },
            now,
        );
        while self.seen.evict_over_budget().is_some() {}
        None
    }

    /// Forgets what is older than the window (from the oldest; stops at the
    /// first one still inside it).
    pub fn sweep(&mut self, now: Instant) {
        if let Some(cutoff) = now.checked_sub(self.window) {
            // `<= window` is still inside: expire strictly older stamps.
            while let Some(t) = self.seen.oldest_stamp()
                && t < cutoff
            {
                self.seen.expire(t);
            }
        }
    }

    /// Evictions of the fingerprint table (by name).
    pub fn evictions(&self) -> (&'static str, Evictions) {
        (self.seen.name(), self.seen.evictions())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_modes() {
        let v = "5f4dcc3b5aa765d61d8327deb882cf99";
        assert_eq!(
            evidence("password", v, EvidenceMode::Redacted),
            "password=5f…99 (32 chars)"
        );
        assert_eq!(
            evidence("password", v, EvidenceMode::Fingerprint),
            "password=… (32 chars)"
        );
        assert_eq!(
            evidence("password", v, EvidenceMode::Full),
            format!("password={v}")
        );
        assert_eq!(
            evidence("pass", "hunter2", EvidenceMode::Redacted),
            "pass=… (7 chars)"
        );
        assert_eq!(
            evidence("", "jane@example.com", EvidenceMode::Redacted),
            "ja…om (16 chars)"
        );
        assert!(!evidence("password", v, EvidenceMode::Redacted).contains("4dcc3b"));
        assert_eq!("full".parse::<EvidenceMode>(), Ok(EvidenceMode::Full));
        assert!("loud".parse::<EvidenceMode>().is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = std::env::temp_dir().join(format!("lw-fp-{}", std::process::id()));
        let path = dir.join("state/fingerprint.key");
        let _ = fs::remove_dir_all(&dir);
        let a = Fingerprinter::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = Fingerprinter::load_or_create(&path).unwrap();
        assert_eq!(
            a.fingerprint(Kind::AuthToken, "tok"),
            b.fingerprint(Kind::AuthToken, "tok")
        );
        assert_ne!(
            a.fingerprint(Kind::AuthToken, "tok"),
            a.fingerprint(Kind::Password, "tok")
        );
        assert_eq!(a.fingerprint(Kind::AuthToken, "tok").len(), 32);
        // Another installation's key gives other fingerprints.
        let other = Fingerprinter::from_key([7; 32]);
        assert_ne!(
            a.fingerprint(Kind::AuthToken, "tok"),
            other.fingerprint(Kind::AuthToken, "tok")
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Fingerprinter::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fleet_key_is_read_as_it_is_or_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("lw-fleet-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fleet.key");
        let e = Fingerprinter::load(&path).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "never created here");
        fs::write(&path, [9u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Fingerprinter::load(&path).err().unwrap().to_string();
        assert!(e.contains("readable by others") && e.contains("644"), "{e}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644,
            "not modified"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        // Two gateways with the same key agree.
        let a = Fingerprinter::load(&path).unwrap();
        let b = Fingerprinter::from_key([9; 32]);
        assert_eq!(
            a.fingerprint(Kind::AuthToken, "tok"),
            b.fingerprint(Kind::AuthToken, "tok")
        );
        fs::write(&path, [9u8; 31]).unwrap();
        let e = Fingerprinter::load(&path).err().unwrap().to_string();
        assert!(e.contains("31 bytes"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replays() {
        let t0 = Instant::now();
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.10".parse().unwrap(),
            "192.0.2.11".parse().unwrap(),
            "192.0.2.12".parse().unwrap(),
        );
        let mut r = ReplayDetector::new(Duration::from_mins(1), 100);
        assert_eq!(r.observe("fp", a, t0), None);
        assert_eq!(
            r.observe("fp", a, t0 + Duration::from_secs(1)),
            None,
            "same client again"
        );
        let rep = r.observe("fp", b, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(rep.first_client, a);
        assert_eq!(
            r.observe("fp", b, t0 + Duration::from_secs(3)),
            None,
            "once per client"
        );
        assert!(r.observe("fp", c, t0 + Duration::from_secs(3)).is_some());
        // After the window it is a fresh sighting.
        assert_eq!(r.observe("fp", b, t0 + Duration::from_mins(2)), None);
        let mut small = ReplayDetector::new(Duration::from_mins(1), 2);
        small.observe("1", a, t0);
        small.observe("2", a, t0);
        small.observe("3", a, t0);
        assert_eq!(small.len(), 2);
    }
}
