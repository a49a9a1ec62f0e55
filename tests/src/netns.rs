//! Network namespaces as RAII guards.

use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context as _, bail};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique name for this process and call: `lw<pid>x<n><role>`, so parallel and
/// aborted runs never collide.
pub fn unique(role: &str) -> String {
    format!(
        "lw{}x{}{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        role
    )
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip ARGS…`
pub fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with loopback up and its own resolv.conf pointing at
    /// `nameserver` (so nothing in it queries the machine's resolver).
    pub fn new(role: &str, nameserver: &str) -> anyhow::Result<Self> {
        let name = unique(role);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        let dir = ns.etc_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, kv: &str) -> anyhow::Result<()> {
        run(self.command("sysctl").args(["-q", "-w", kv]))?;
        Ok(())
    }

    /// Runs `f` on a new thread that lives in this namespace (sockets it opens
    /// belong here).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<thread::JoinHandle<T>> {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || {
            // SAFETY: a valid namespace fd; setns affects only this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let ok = r == 0;
            let _ = tx.send(if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            });
            if !ok {
                // Never run `f` in the wrong namespace.
                std::process::abort();
            }
            f()
        });
        rx.recv()
            .context("namespace thread died")?
            .with_context(|| format!("entering namespace {}", self.name))?;
        Ok(handle)
    }

    /// Runs `f` in this namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))
    }

    /// Whether an XDP program is attached to `iface` in this namespace.
    pub fn xdp_attached(&self, iface: &str) -> anyhow::Result<bool> {
        let out = self.ip(&["-j", "-d", "link", "show", "dev", iface])?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing `ip -j link`")?;
        Ok(v.get(0).and_then(|l| l.get("xdp")).is_some())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}
