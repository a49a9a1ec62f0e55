//! JSON lines: one object per line, written whole and flushed, so `tail -f`,
//! log shippers and tests never see half a line.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
    /// The file behind `out`, to reopen after log rotation (None: not a file).
    path: Option<PathBuf>,
}

/// Opens `path` for appending: created 0600 (events hold evidence), its
/// directory created when missing.
fn append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out, path: None }
    }

    /// `-` for stdout, else a file opened for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self::new(Box::new(io::stdout())));
        }
        Ok(Self {
            out: Box::new(append(path)?),
            path: Some(path.to_owned()),
        })
    }

    /// Reopens the file (logrotate moved it away: SIGHUP). Keeps writing to the
    /// old one if the new one cannot be opened.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(p) = &self.path {
            self.out = Box::new(append(p)?);
        }
        Ok(())
    }

    /// One `write` per line, then flush.
    pub fn write<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let mut buf = serde_json::to_vec(value)?;
        buf.push(b'\n');
        self.out.write_all(&buf)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn files_are_private_and_their_directory_is_made() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("lw-jsonl-{}", std::process::id()));
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
