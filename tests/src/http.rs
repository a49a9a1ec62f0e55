//! Minimal HTTP/1.1 peers for the lab, run inside namespaces. Enough to carry
//! realistic requests across the gateway; not a general HTTP implementation.

use std::{
    io::{Read, Write},
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

/// An HTTP server answering `200 OK` to every request, until dropped.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Reads one request (headers and Content-Length body) from `s`.
fn read_request(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answers one request on `s`.
fn respond(s: &mut (impl Read + Write)) {
    if read_request(s).is_ok() {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
        );
    }
}

/// Serves one connection, in cleartext or (with a config) over TLS.
fn serve(s: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    match tls {
        None => {
            let mut s = s;
            respond(&mut s);
            let _ = s.shutdown(Shutdown::Both);
        }
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(config)) else {
                return;
            };
            let mut t = rustls::StreamOwned::new(conn, s);
            respond(&mut t);
            t.conn.send_close_notify();
            let _ = t.flush();
            let _ = t.sock.shutdown(Shutdown::Both);
        }
    }
}

impl HttpServer {
    /// Listens on every address in `ns`.
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        Self::start_with(ns, addrs, None)
    }

    /// As `start`, over TLS with `config`.
    pub fn start_tls(
        ns: &Netns,
        addrs: &[SocketAddr],
        config: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        Self::start_with(ns, addrs, Some(config))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "each server thread clones the config it is given"
    )]
    fn start_with(
        ns: &Netns,
        addrs: &[SocketAddr],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &addr in addrs {
            let listener = ns
                .run(move || TcpListener::bind(addr))?
                .with_context(|| format!("binding {addr}"))?;
            listener.set_nonblocking(true)?;
            let stop = Arc::clone(&stop);
            let tls = tls.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => serve(s, tls.as_ref()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `request` to `addr` from namespace `ns` and returns the response.
pub fn exchange(ns: &Netns, addr: SocketAddr, request: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    ns.run(move || -> anyhow::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&request)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    })?
}

/// Sends `requests` one after the other on one connection from `ns` to `addr`,
/// reading (the start of) each answer before the next, as a keep-alive
/// client does. An answer that does not come within 2 s is not waited for.
pub fn requests_on_one_connection(
    ns: &Netns,
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    requests_on_one_connection_then(ns, addr, requests, |_| ())
}

/// [`requests_on_one_connection`], calling `between(i)` after the answer to
/// request `i` and before the next one: a test waits there for the sensor
/// to act on what it saw, rather than racing the server's answer.
pub fn requests_on_one_connection_then(
    ns: &Netns,
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    mut between: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut s = ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let last = requests.len().saturating_sub(1);
    for (i, r) in requests.into_iter().enumerate() {
        s.write_all(&r)?;
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        if i < last {
            between(i);
        }
    }
    Ok(())
}

/// GET `path` from `addr` (called from a thread already in the right namespace).
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        head.lines().next().unwrap_or("")
    );
    // axum answers small bodies with Content-Length, larger ones chunked.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What connections brought to a [`RecordingServer`]: (its listening address,
/// the peer, the bytes).
pub type Received = Arc<std::sync::Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>>;

/// A keep-alive server that answers `200 OK` to each request of a connection
/// and records every byte each connection sent (by peer address), so a test
/// can tell what reached the server. Until dropped.
pub struct RecordingServer {
    pub received: Received,
    /// Stops the accept and connection threads when dropped.
    _server: HttpServer,
}

impl RecordingServer {
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received: Received = Arc::default();
        let mut threads = Vec::new();
        for &addr in addrs {
            let listener = ns
                .run(move || TcpListener::bind(addr))?
                .with_context(|| format!("binding {addr}"))?;
            listener.set_nonblocking(true)?;
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            threads.push(std::thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
                            conns.push(std::thread::spawn(move || {
                                keep_alive(s, (addr, peer), &stop, &received);
                            }));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => break,
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            }));
        }
        Ok(Self {
            received,
            _server: HttpServer { stop, threads },
        })
    }

    /// What connections from `peer` sent, joined.
    pub fn from(&self, peer: SocketAddr) -> Vec<u8> {
        self.received
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, p, _)| *p == peer)
                    .flat_map(|(_, _, b)| b.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (peer, bytes) of the connections to the listening address `to`.
    pub fn at(&self, to: SocketAddr) -> Vec<(SocketAddr, Vec<u8>)> {
        self.received
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(t, _, _)| *t == to)
                    .map(|(_, p, b)| (*p, b.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Serves one keep-alive connection: records what arrives, answers each
/// request (each `\r\n\r\n`-terminated head; bodies are not expected).
fn keep_alive(
    mut s: TcpStream,
    (to, peer): (SocketAddr, SocketAddr),
    stop: &AtomicBool,
    received: &Received,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                if let Ok(mut r) = received.lock() {
                    match r.iter_mut().find(|(t, p, _)| *t == to && *p == peer) {
                        Some((_, _, b)) => b.extend_from_slice(&chunk[..n]),
                        None => r.push((to, peer, chunk[..n].to_vec())),
                    }
                }
                pending.extend_from_slice(&chunk[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
