//! The compiled-database cache file: `LWHS1`, then the streaming rule database
//! and the trigger block database (empty when there is none), each
//! length-prefixed (u64 LE), as Hyperscan serialized them. Canaries are
//! never in it (`canary_db`).

use std::path::Path;

use hyperscan::{BlockDatabase, Serialized as _, StreamingDatabase};

const MAGIC: &[u8] = b"LWHS1";

fn mode_is(bytes: &[u8], mode: &str) -> bool {
    bytes.info().is_ok_and(|i| i.contains(mode))
}

pub fn load(path: &Path) -> Option<(StreamingDatabase, Option<BlockDatabase>)> {
    let data = std::fs::read(path).ok()?;
    let rest = data.strip_prefix(MAGIC)?;
    let part = |b: &[u8]| -> Option<(Vec<u8>, usize)> {
        let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
        Some((b.get(8..8 + n)?.to_vec(), 8 + n))
    };
    let (s, used) = part(rest)?;
    let (b, _) = part(&rest[used..])?;
    // Deserializing checks Hyperscan's version and the CPU's features; the
    // mode is checked here (a mismatch would be undefined behaviour).
    if !mode_is(&s, "STREAM") || !(b.is_empty() || mode_is(&b, "BLOCK")) {
        return None;
    }
    let sdb: StreamingDatabase = s.deserialize().ok()?;
    let bdb: Option<BlockDatabase> = if b.is_empty() {
        None
    } else {
        Some(b.deserialize().ok()?)
    };
    Some((sdb, bdb))
}

pub fn save(
    path: &Path,
    db: &StreamingDatabase,
    triggers: Option<&BlockDatabase>,
) -> std::io::Result<()> {
    let err = |e: hyperscan::Error| std::io::Error::other(e.to_string());
    let s = db.serialize().map_err(err)?;
    let b = match triggers {
        Some(t) => t.serialize().map_err(err)?.to_vec(),
        None => Vec::new(),
    };
    let mut out = MAGIC.to_vec();
    for part in [&s[..], &b[..]] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole, then renamed: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}
