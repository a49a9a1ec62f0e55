//! Which side of a flow is the client (the app): the one place it is decided.
//!
//! The kernel marks a record FROM_CLIENT from the SYN it saw, or, for a flow
//! picked up mid-stream, from a guess (which endpoint is watched, then the
//! ports). An HTTP start line in a first payload settles it for good: a request
//! comes from the client, a status line from the server.

use sensor_common::record::{RecordHeader, flags};

use crate::proto::http;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Key direction (0 or 1) the client sends in, once known or guessed.
    client_dir: Option<u8>,
    /// `client_dir` comes from a start line, not the kernel's guess.
    settled: bool,
}

impl Role {
    /// Learns from one record of the flow; whether the record travels from the client.
    pub fn observe(&mut self, h: &RecordHeader, payload: &[u8]) -> bool {
        let d = h.direction & 1;
        if h.flags & flags::FIRST_PAYLOAD != 0
            && let Some(c) = http::sender_is_client(payload)
        {
            self.client_dir = Some(if c { d } else { d ^ 1 });
            self.settled = true;
        } else if !self.settled {
            if h.flags & flags::FROM_CLIENT != 0 {
                self.client_dir = Some(d);
            } else if self.client_dir.is_none() {
                self.client_dir = Some(d ^ 1);
            }
        }
        self.client_dir == Some(d)
    }

    /// The key direction the client sends in, if any record said.
    pub fn client_dir(self) -> Option<u8> {
        self.client_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(direction: u8, f: u16) -> RecordHeader {
        let frame =
            crate::fixtures::FrameBuilder::tcp("192.0.2.1", 80, "198.51.100.2", 40000).build();
        let mut h =
            crate::fixtures::record(sensor_common::record::RecordKind::Sample, f, &frame).hdr;
        h.direction = direction;
        h
    }

    #[test]
    fn the_kernel_guess_until_a_start_line_settles_it() {
        let mut r = Role::default();
        // The kernel guessed direction 1 is the client…
        assert!(r.observe(&hdr(1, flags::FROM_CLIENT), b""));
        assert!(!r.observe(&hdr(0, 0), b""));
        // …but direction 1's first payload is a response: the server.
        assert!(!r.observe(&hdr(1, flags::FIRST_PAYLOAD), b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(r.client_dir(), Some(0));
        // Settled: later guesses do not move it.
        assert!(!r.observe(&hdr(1, flags::FROM_CLIENT), b""));
        assert!(r.observe(&hdr(0, 0), b""));
    }
}
