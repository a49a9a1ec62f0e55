//! JSON lines: one object per line, written whole and flushed, so `tail -f`,
//! log shippers and tests never see half a line.
//!
//! Faults are survived: a write that fails (a full disk) is undone to the last
//! whole line, counted and logged once, and writing resumes with the next line
//! once it succeeds; a file deleted or rotated without SIGHUP is noticed
//! ([`JsonLines::follow_path`]) and reopened.

use std::{
    fs::File,
    io::{self, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

enum Out {
    File(File),
    Stream(Box<dyn Write + Send>),
}

pub struct JsonLines {
    out: Out,
    /// The file behind `out`, to reopen after log rotation (None: not a file).
    path: Option<PathBuf>,
    /// Writes that failed, in all.
    errors: u64,
    /// The last write failed (a failure is logged once, and the recovery).
    failing: bool,
    /// Files are made 0640 and given to this group (a log shipper's), else 0600.
    group: Option<libc::gid_t>,
}

/// (device, inode) of a file.
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Opens `path` for appending: created 0600 (events hold evidence) or, with a
/// `group`, 0640 and that group's; its directory created when missing.
fn append(path: &Path, group: Option<libc::gid_t>) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mode = if group.is_some() { 0o640 } else { 0o600 };
    let f = File::options()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&f, None, Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(f)
}

/// The id of group `name`.
pub fn group_id(name: &str) -> io::Result<libc::gid_t> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the group name"))?;
    // SAFETY: a NUL-terminated name; the returned entry is read at once, before
    // any other call could reuse its static storage.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group {name:?} (see /etc/group)"),
        ));
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*g).gr_gid })
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Out::Stream(out),
            path: None,
            errors: 0,
            failing: false,
            group: None,
        }
    }

    /// `-` for stdout, else a file opened for appending (0600).
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_for(path, None)
    }

    /// As [`JsonLines::open`]; with a `group`, the file is 0640 and that group's.
    pub fn open_for(path: &Path, group: Option<libc::gid_t>) -> io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self::new(Box::new(io::stdout())));
        }
        Ok(Self {
            out: Out::File(append(path, group)?),
            path: Some(path.to_owned()),
            errors: 0,
            failing: false,
            group,
        })
    }

    /// Reopens the file (logrotate moved it away: SIGHUP). Keeps writing to the
    /// old one if the new one cannot be opened.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(p) = &self.path {
            self.out = Out::File(append(p, self.group)?);
        }
        Ok(())
    }

    /// Reopens the file when its path no longer leads to it (deleted, or
    /// rotated without SIGHUP). Returns whether it did.
    pub fn follow_path(&mut self) -> io::Result<bool> {
        let (Some(p), Out::File(f)) = (&self.path, &self.out) else {
            return Ok(false);
        };
        let open = identity(&f.metadata()?);
        let current = std::fs::metadata(p).map(|m| identity(&m)).ok();
        if current == Some(open) {
            return Ok(false);
        }
        log::info!(
            "{}: the file was moved or deleted; reopening it",
            p.display()
        );
        self.reopen()?;
        Ok(true)
    }

    /// Writes that failed since the start.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// One `write` per line, then flush. A failed write leaves no part of its
    /// line behind, is counted, and is logged when writing starts failing.
    pub fn write<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let mut buf = serde_json::to_vec(value)?;
        buf.push(b'\n');
        let r = match &mut self.out {
            Out::File(f) => {
                let before = f.metadata()?.len();
                let r = f.write_all(&buf).and_then(|()| f.flush());
                if r.is_err() {
                    // Undo a partial line: readers only ever see whole ones.
                    let _ = f.set_len(before);
                }
                r
            }
            Out::Stream(w) => w.write_all(&buf).and_then(|()| w.flush()),
        };
        let name = self
            .path
            .as_deref()
            .map_or_else(|| "stdout".into(), |p| p.display().to_string());
        match &r {
            Err(e) => {
                self.errors += 1;
                if !self.failing {
                    log::error!(
                        "writing {name}: {e}; lines are dropped and counted until it works again"
                    );
                }
                self.failing = true;
            }
            Ok(()) if self.failing => {
                log::info!("writing {name} works again");
                self.failing = false;
            }
            Ok(()) => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn files_are_private_and_their_directory_is_made() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("lw-jsonl-private-{}", std::process::id()));
        let p = dir.join("sub/events.jsonl");
        let _ = super::JsonLines::open(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(mode, 0o600);
    }

    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    /// Every `write` call's bytes, in order.
    struct Shared(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("lw-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut j = JsonLines::open(&path).unwrap();
        j.write(&serde_json::json!({"n": 1})).unwrap();
        std::fs::rename(&path, dir.join("events.jsonl.1")).unwrap();
        j.write(&serde_json::json!({"n": 2})).unwrap(); // still the rotated file
        j.reopen().unwrap();
        j.write(&serde_json::json!({"n": 3})).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn with_a_group_files_are_0640_and_that_groups() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = std::env::temp_dir().join(format!("lw-jsonl-group-{}", std::process::id()));
        let p = dir.join("events.jsonl");
        // The process's own group: any user may give a file to it.
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let mut j = JsonLines::open_for(&p, Some(gid)).unwrap();
        j.write(&serde_json::json!({"n": 1})).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.gid()), (0o640, gid));
        std::fs::remove_file(&p).unwrap();
        j.reopen().unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640, "reopened alike");
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-lw").unwrap_err().to_string();
        assert!(e.contains("no-such-group-lw"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deleted_or_moved_file_is_noticed_and_reopened() {
        let dir = std::env::temp_dir().join(format!("lw-jsonl-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut j = JsonLines::open(&path).unwrap();
        j.write(&serde_json::json!({"n": 1})).unwrap();
        assert!(!j.follow_path().unwrap(), "still there");
        std::fs::remove_file(&path).unwrap();
        assert!(j.follow_path().unwrap());
        j.write(&serde_json::json!({"n": 2})).unwrap();
        std::fs::rename(&path, dir.join("events.jsonl.1")).unwrap();
        assert!(j.follow_path().unwrap());
        j.write(&serde_json::json!({"n": 3})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A full disk: /dev/full fails every write with ENOSPC.
    #[test]
    fn a_full_disk_is_counted_and_writing_goes_on() {
        let mut j = JsonLines::open(Path::new("/dev/full")).unwrap();
        for _ in 0..3 {
            let e = j.write(&serde_json::json!({"n": 1})).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        }
        assert_eq!(j.errors(), 3);
        // Space returns (here: the writer is pointed at a real file again).
        let dir = std::env::temp_dir().join(format!("lw-jsonl-full-{}", std::process::id()));
        let path = dir.join("events.jsonl");
        j.path = Some(path.clone());
        j.reopen().unwrap();
        j.write(&serde_json::json!({"n": 2})).unwrap();
        assert!(!j.failing);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_write_per_line() {
        let sink = Shared::default();
        let mut j = JsonLines::new(Box::new(sink.clone()));
        j.write(&serde_json::json!({"a": 1, "b": "x"})).unwrap();
        j.write(&serde_json::json!({"a": 2})).unwrap();
        let writes = sink.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0], b"{\"a\":1,\"b\":\"x\"}\n");
    }
}
