//! Line-protocol peers for the lab (FTP, IMAP, …): a server that greets, then
//! answers each client line as a script says, and a client that sends lines
//! and waits for each answer. Enough to carry a login across the gateway.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;

use crate::netns::Netns;

/// What the server says to a client line.
pub type Script = fn(&str) -> String;

/// A line server in a namespace, until dropped.
pub struct LineServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn serve(s: TcpStream, greeting: &str, script: Script) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut w) = s.try_clone() else {
        return;
    };
    let _ = w.write_all(greeting.as_bytes());
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else {
            break;
        };
        if w.write_all(script(line.trim_end_matches('\r')).as_bytes())
            .is_err()
        {
            break;
        }
    }
    let _ = w.shutdown(Shutdown::Both);
}

impl LineServer {
    /// Listens on `addr` in `ns`; greets each client with `greeting`.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        greeting: &'static str,
        script: Script,
    ) -> anyhow::Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => serve(s, greeting, script),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From `ns`, connects to `addr`, reads the greeting line, then sends each
/// line and reads one reply line; returns the replies.
pub fn converse(
    ns: &Netns,
    addr: SocketAddr,
    lines: &'static [&'static str],
) -> anyhow::Result<Vec<String>> {
    ns.run(move || -> anyhow::Result<Vec<String>> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let mut greeting = String::new();
        r.read_line(&mut greeting)?;
        let mut replies = Vec::new();
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\r\n")?;
            let mut reply = String::new();
            r.read_line(&mut reply)?;
            replies.push(reply);
        }
        let _ = w.shutdown(Shutdown::Both);
        Ok(replies)
    })?
}
