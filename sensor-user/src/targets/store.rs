//! Learned addresses across a restart: written to the state directory (every
//! minute and at exit, write-then-rename, 0600) and read back at start, each
//! entry with the wall-clock time it expires, re-checked when loaded, and the
//! names it was learned from, so its cleartext policy bits come back with it.

use std::{
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::learned::Source;

/// The file in the state directory.
pub const FILE: &str = "learned.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    addresses: Vec<StoredAddr>,
}

#[derive(Serialize, Deserialize)]
struct StoredAddr {
    addr: IpAddr,
    service: String,
    source: String,
    /// UNIX seconds.
    expires: u64,
    /// Absent in files written before names were kept, and for an address
    /// learned from more names than an entry remembers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
}

/// One learned address as kept across a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub addr: IpAddr,
    pub service: String,
    pub source: Source,
    /// Seconds left.
    pub left: u64,
    /// The names it was learned from; `None`: not known (more than an entry
    /// remembers, or a file from before names were kept).
    pub names: Option<Vec<String>>,
    /// Also answered for names outside the catalog (a CDN's): no policy bits.
    pub shared: bool,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `entries` (their seconds left counted from `now`).
pub fn save(path: &Path, entries: &[Saved], now: SystemTime) -> io::Result<()> {
    let stored = Stored {
        version: VERSION,
        addresses: entries
            .iter()
            .map(|e| StoredAddr {
                addr: e.addr,
                service: e.service.clone(),
                source: e.source.name().to_owned(),
                expires: unix(now) + e.left,
                names: e.names.clone(),
                shared: e.shared,
            })
            .collect(),
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(&stored)?)?;
    f.sync_all()?;
    // A reader (the next start) sees the old file or the new one, whole.
    std::fs::rename(&tmp, path)
}

/// The entries still live at `now`, each with its seconds left.
pub fn load(path: &Path, now: SystemTime) -> io::Result<Vec<Saved>> {
    let stored: Stored = serde_json::from_slice(&std::fs::read(path)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    if stored.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: version {} (this build reads {VERSION})",
                path.display(),
                stored.version
            ),
        ));
    }
    let now = unix(now);
    Ok(stored
        .addresses
        .into_iter()
        .filter_map(|a| {
            let left = a.expires.checked_sub(now).filter(|l| *l > 0)?;
            Some(Saved {
                addr: a.addr,
                service: a.service,
                source: Source::from_name(&a.source)?,
                left,
                names: a.names,
                shared: a.shared,
            })
        })
        .collect())
}

/// How often the pipeline writes the file.
pub const EVERY: Duration = Duration::from_mins(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_then_loaded_with_the_time_left_and_the_expired_left_out() {
        let dir = std::env::temp_dir().join(format!("lw-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE);
        let t0 = UNIX_EPOCH + Duration::from_hours(500_000);
        let a: IpAddr = "198.51.100.2".parse().unwrap();
        let b: IpAddr = "2001:db8:5::2".parse().unwrap();
        let c: IpAddr = "198.51.100.3".parse().unwrap();
        let d: IpAddr = "198.51.100.4".parse().unwrap();
        let saved = |addr, service: &str, source, left, names: Option<&[&str]>, shared| Saved {
            addr,
            service: service.into(),
            source,
            left,
            names: names.map(|n| n.iter().map(|&n| n.to_owned()).collect()),
            shared,
        };
        let qobuz = saved(
            a,
            "qobuz",
            Source::Dns,
            300,
            Some(&["www.qobuz.com"]),
            false,
        );
        let cdn = saved(
            c,
            "qobuz",
            Source::Dns,
            300,
            Some(&["streaming.qobuz.com"]),
            true,
        );
        let many = saved(d, "qobuz", Source::Dns, 300, None, false);
        save(
            &path,
            &[
                qobuz.clone(),
                saved(
                    b,
                    "deezer",
                    Source::Sni,
                    30,
                    Some(&["www.deezer.com"]),
                    false,
                ),
                cdn.clone(),
                many.clone(),
            ],
            t0,
        )
        .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // 60 s later (a restart): b has expired, a has 240 s left.
        let back = load(&path, t0 + Duration::from_mins(1)).unwrap();
        let later = |s: &Saved| Saved {
            left: 240,
            ..s.clone()
        };
        assert_eq!(back, [later(&qobuz), later(&cdn), later(&many)]);
        // A file from before names were kept: no names, not shared.
        let old = format!(
            r#"{{"version":1,"addresses":[{{"addr":"{a}","service":"qobuz","source":"dns","expires":{}}}]}}"#,
            unix(t0) + 300
        );
        std::fs::write(&path, old).unwrap();
        let back = load(&path, t0).unwrap();
        assert_eq!(back, [saved(a, "qobuz", Source::Dns, 300, None, false)]);
        std::fs::write(&path, b"{not json").unwrap();
        let e = load(&path, t0).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
