//! `cargo xtask lab up|down`: the demo's lab for manual exploration.
//!
//! `up` builds leakwatch, starts the lab (two clients, the gateway with the
//! sensor, the server with DNS, HTTP and HTTPS for the scenario hosts) and keeps
//! it in the foreground until Ctrl-C or `lab down`; it writes the namespace names
//! to /run/leakwatch-lab.env for scripts. `down` stops a running `up` and removes
//! whatever an aborted run left behind (lab namespaces whose creator is gone).

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use leakwatch_tests::{
    lab::{CLIENT_V4, CLIENT2_V4, SERVER_V4},
    scenarios,
};

use crate::demo::{catch_signals, start, stopping};

const STATE: &str = "/run/leakwatch-lab.env";

#[derive(clap::Subcommand)]
pub enum LabCmd {
    /// Start the lab and the sensor; stays in the foreground until Ctrl-C.
    Up {
        /// Root-namespace loopback port where the sensor's /metrics is reachable.
        #[arg(long, default_value_t = 9477)]
        metrics_port: u16,
    },
    /// Stop a running lab and remove what aborted runs left behind.
    Down,
    /// Play the scenario session and record what the gateway receives, as pcap.
    Record {
        /// Where to write the capture.
        out: std::path::PathBuf,
    },
}

pub fn run(cmd: &LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up { metrics_port } => up(*metrics_port),
        LabCmd::Down => down(),
        LabCmd::Record { out } => record(out),
    }
}

/// Plays `scenarios::session()` through the lab (no sensor) while recording
/// what the gateway's interfaces receive.
fn record(out: &Path) -> anyhow::Result<()> {
    use leakwatch_tests::{
        capture::Recorder,
        lab::{LAN_IF, LAN2_IF, Lab, WAN_IF},
        tls,
    };
    if !crate::shell::is_root() {
        anyhow::bail!("recording builds the lab: run it as root");
    }
    let lab = Lab::up()?;
    let _services = lab.serve_scenarios(300)?;
    let rec = Recorder::start(&lab.gateway, &[LAN_IF, LAN2_IF, WAN_IF])?;
    std::thread::sleep(Duration::from_millis(200));
    for st in scenarios::session() {
        let ns = if st.client == 1 {
            &lab.client
        } else {
            &lab.client2
        };
        if st.tls {
            tls::curl(ns, &st.scenario.curl_args("https"))?;
        } else {
            scenarios::send(ns, &st.scenario, st.v6)?;
        }
        println!(
            "  client{} {}{}: {}",
            st.client,
            if st.v6 { "IPv6 " } else { "" },
            if st.tls { "HTTPS" } else { "HTTP" },
            st.scenario.what
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let n = rec.finish(out)?;
    println!("==> {n} frames written to {}", out.display());
    Ok(())
}

fn up(metrics_port: u16) -> anyhow::Result<()> {
    catch_signals();
    let r = start(metrics_port, "monitor")?;
    let l = &r.lab;
    let names = [
        ("CLIENT", l.client.name()),
        ("CLIENT2", l.client2.name()),
        ("GATEWAY", l.gateway.name()),
        ("SERVER", l.server.name()),
    ];
    let mut env = format!("PID={}\n", std::process::id());
    for (k, v) in names {
        env.push_str(&format!("{k}={v}\n"));
    }
    env.push_str(&format!(
        "EVENTS={}\nMETRICS=http://127.0.0.1:{metrics_port}/metrics\n",
        r.events.display()
    ));
    std::fs::write(STATE, &env).with_context(|| format!("writing {STATE}"))?;
    let login = scenarios::qobuz_login();
    println!(
        "\n==> the lab is up (names also in {STATE}):\n\
         \n  client   {:<24} {CLIENT_V4} (lan0)\
         \n  client2  {:<24} {CLIENT2_V4} (lan1, VLAN 100)\
         \n  gateway  {:<24} leakwatch on lan0, lan1, wan0\
         \n  server   {:<24} {SERVER_V4}…: DNS, HTTP :80, HTTPS :443\
         \n\ntry:\
         \n  ip netns exec {} curl 'http://www.qobuz.com{}'\
         \n  ip netns exec {} curl -k 'https://www.qobuz.com{}'\
         \n  curl -s 127.0.0.1:{metrics_port}/metrics | grep findings\
         \n  tail -f {}\
         \n\nCtrl-C (or `cargo xtask lab down`) tears it down.",
        l.client.name(),
        l.client2.name(),
        l.gateway.name(),
        l.server.name(),
        l.client.name(),
        login.target,
        l.client2.name(),
        login.target,
        r.events.display(),
    );
    let mut r = r;
    while !stopping() {
        if !r.sensor.running() {
            println!("leakwatch exited");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("==> tearing the lab down");
    let _ = std::fs::remove_file(STATE);
    Ok(())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn down() -> anyhow::Result<()> {
    if let Ok(env) = std::fs::read_to_string(STATE)
        && let Some(pid) = env
            .lines()
            .find_map(|l| l.strip_prefix("PID="))
            .and_then(|p| p.parse::<u32>().ok())
        && alive(pid)
    {
        println!("==> stopping the running lab (pid {pid})");
        // SAFETY: kill(2) on a pid read from our own state file.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        for _ in 0..150 {
            if !alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_file(STATE);
    // Namespaces of runs that died without cleaning up: `lw<pid>x<n><role>`.
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    let mut removed = 0;
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("lw")
            .and_then(|r| r.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        removed += 1;
    }
    println!("==> lab down ({removed} leftover namespaces removed)");
    Ok(())
}
