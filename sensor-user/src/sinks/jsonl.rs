//! JSON lines: one object per line, written whole and flushed, so `tail -f`,
//! log shippers and tests never see half a line.

use std::io::{self, Write};

use serde::Serialize;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
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
