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
