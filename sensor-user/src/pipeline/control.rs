//! The control socket (`control_socket`, default /run/leakwatch/control.sock,
//! mode 0600): `leakwatch blocks list` and `leakwatch blocks lift ID` talk to the
//! running daemon here, one JSON request line and one JSON reply line per
//! connection. Blocks are never served on the (unauthenticated) metrics port.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::{capture::clock::Clock, sinks::block::Active};

/// Longest request line read.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    List,
    Lift {
        id: u64,
    },
    /// The app inventory's report card (`leakwatch apps`).
    Apps,
}

/// One block as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub id: u64,
    pub scope: String,
    pub client: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub service: String,
    pub reason: String,
    pub mode: String,
    /// RFC 3339.
    pub since: String,
    pub expires: String,
    /// false: decided by a dry-run policy, not in force.
    pub enforced: bool,
}

impl Listed {
    pub fn new(a: &Active, clock: &Clock) -> Self {
        Self {
            id: a.id,
            scope: a.scope.into(),
            client: a.client,
            server: a
                .server
                .map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string()),
            service: a.service.clone(),
            reason: a.reason.into(),
            mode: a.mode.into(),
            since: clock.rfc3339(a.since_ns),
            expires: clock.rfc3339(a.expires_ns),
            enforced: a.is_enforced(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "snake_case")]
pub enum Reply {
    Blocks(Vec<Listed>),
    Lifted(Listed),
    Apps(Vec<crate::sinks::inventory::AppRow>),
    Error(String),
}

/// Removes the socket file when dropped (the daemon ends, or fails to start).
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the socket (0600; a stale socket file is replaced, its directory made).
pub fn bind(path: &Path) -> anyhow::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("control_socket: creating {}", dir.display()))?;
    }
    if path.exists() {
        // A socket left by a sensor that died; a live one would still answer.
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control_socket {}: another leakwatch is listening there",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("control_socket: removing the stale {}", path.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("control_socket {}: cannot listen", path.display()))?;
    let file = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("control_socket {}: setting mode 0600", path.display()))?;
    l.set_nonblocking(true)
        .context("control socket: non-blocking mode")?;
    Ok((l, file))
}

/// Serves the socket: each request is handed to `handle` (the pipeline thread,
/// through its queue) and its reply written back.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    handle: impl Fn(Request) -> Option<tokio::sync::oneshot::Receiver<Reply>> + Send + Sync + 'static,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("control socket {}: {e}", path.display());
            return;
        }
    };
    let handle = std::sync::Arc::new(handle);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = std::sync::Arc::clone(&handle);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
            let reply = match r.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
                    Ok(req) => match handle(req) {
                        Some(rx) => rx
                            .await
                            .unwrap_or_else(|_| Reply::Error("the sensor is stopping".into())),
                        None => Reply::Error("the sensor is stopping".into()),
                    },
                    Err(e) => Reply::Error(format!("bad request: {e}")),
                },
                Err(e) => Reply::Error(format!("reading the request: {e}")),
            };
            if let Ok(mut text) = serde_json::to_string(&reply) {
                text.push('\n');
                let _ = w.write_all(text.as_bytes()).await;
            }
        });
    }
}

/// Sends `req` to the daemon at `path`; its reply.
pub fn request(path: &Path, req: &Request) -> anyhow::Result<Reply> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!(
            "control socket {}: is `leakwatch run` running (and are you root)?",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(req)?;
    text.push('\n');
    s.write_all(text.as_bytes())
        .with_context(|| format!("control socket {}: sending", path.display()))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .with_context(|| format!("control socket {}: reading the reply", path.display()))?;
    serde_json::from_str(line.trim()).with_context(|| {
        format!(
            "control socket {}: unreadable reply {line:?}",
            path.display()
        )
    })
}

/// `leakwatch blocks list`: a table, or JSON lines with `json`.
pub fn list(path: &Path, json: bool, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let blocks = match request(path, &Request::List)? {
        Reply::Blocks(b) => b,
        Reply::Error(e) => anyhow::bail!("{e}"),
        Reply::Lifted(_) | Reply::Apps(_) => anyhow::bail!("unexpected reply to list"),
    };
    if json {
        for b in &blocks {
            writeln!(out, "{}", serde_json::to_string(b)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>5}  {:<10}  {:<39}  {:<45}  {:<10}  {:<10}  {:<15}  {:<27}  EXPIRES",
        "ID", "SCOPE", "CLIENT", "SERVER", "SERVICE", "REASON", "MODE", "SINCE"
    )?;
    for b in &blocks {
        let mode = if b.enforced {
            b.mode.clone()
        } else {
            format!("{} (not enforced)", b.mode)
        };
        writeln!(
            out,
            "{:>5}  {:<10}  {:<39}  {:<45}  {:<10}  {:<10}  {:<15}  {:<27}  {}",
            b.id,
            b.scope,
            b.client.to_string(),
            b.server.as_deref().unwrap_or("-"),
            b.service,
            b.reason,
            mode,
            b.since,
            b.expires
        )?;
    }
    Ok(())
}

/// `leakwatch blocks lift ID`.
pub fn lift(path: &Path, id: u64) -> anyhow::Result<()> {
    match request(path, &Request::Lift { id })? {
        Reply::Lifted(b) => {
            println!(
                "lifted block {} ({} {} of {} to {})",
                b.id, b.scope, b.reason, b.client, b.service
            );
            Ok(())
        }
        Reply::Error(e) => anyhow::bail!("{e}"),
        Reply::Blocks(_) | Reply::Apps(_) => anyhow::bail!("unexpected reply to lift"),
    }
}

/// `leakwatch apps`: the running sensor's app report card.
pub fn apps(path: &Path, json: bool) -> anyhow::Result<()> {
    match request(path, &Request::Apps)? {
        Reply::Apps(rows) => {
            super::apps::print_rows(&rows, json, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Reply::Error(e) => anyhow::bail!("{e}"),
        Reply::Blocks(_) | Reply::Lifted(_) => anyhow::bail!("unexpected reply to apps"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let r: Request = serde_json::from_str(r#"{"cmd":"lift","id":7}"#).unwrap();
        assert_eq!(r, Request::Lift { id: 7 });
        assert_eq!(
            serde_json::to_string(&Request::List).unwrap(),
            r#"{"cmd":"list"}"#
        );
        let e = Reply::Error("x".into());
        let back: Reply = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
