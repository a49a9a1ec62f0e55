//! HTTPS in the lab: a self-signed certificate for the scenario hosts (made by
//! Debian's `openssl`), the lab's HTTP server behind rustls, and `curl` as the
//! client.

use std::{net::SocketAddr, process::Stdio, sync::Arc};

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::{
    http::HttpServer,
    netns::{Netns, run, unique},
};

/// A server config with a fresh self-signed certificate naming `names`.
pub fn server_config(names: &[&str]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir)?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let made = run(std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={}", names.first().unwrap_or(&"lab"))])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null()))
    .context("making the lab certificate (apt-get install openssl)")
    .and_then(|_| {
        let certs = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?)
    });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Arc::new(made?))
}

/// HTTPS servers answering 200 on each of `addrs` in `ns`, certificate for `names`.
pub fn start(ns: &Netns, addrs: &[SocketAddr], names: &[&str]) -> anyhow::Result<HttpServer> {
    HttpServer::start_tls(ns, addrs, server_config(names)?)
}

/// Runs curl with `args` in `ns`; returns what it printed.
pub fn curl(ns: &Netns, args: &[String]) -> anyhow::Result<String> {
    let out = run(ns.command("curl").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TLS 1.2-framed ClientHello record naming `sni` (captures built by code).
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let n = u16::try_from(name.len()).unwrap_or(0);
    let mut ext = vec![0, 0]; // server_name
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]); // no session, one suite, null compression
    body.extend_from_slice(&u16::try_from(ext.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}
