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
