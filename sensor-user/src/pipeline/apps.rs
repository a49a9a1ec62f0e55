//! The app inventory's inputs and outputs: cleartext flows with their
//! User-Agent, TLS flows, findings; `vulnerable_app` events; the
//! `leakwatch_app_clients` and `leakwatch_vulnerable_app_clients` gauges; the
//! report card for `leakwatch apps` and `replay --apps`.

use std::net::IpAddr;

use super::Pipeline;
use crate::{
    capture::record::Record,
    proto::{http::RequestHead, user_agent},
    sinks::{
        advisories::Advisories,
        events::{AdvisoryInfo, Event},
        inventory::AppRow,
    },
    targets::learning::WatchSink,
};

impl<W: WatchSink> Pipeline<W> {
    /// Advisories to match app versions against (replaces the old ones).
    pub fn with_advisories(mut self, a: Advisories) -> Self {
        self.advisories = a;
        self
    }

    pub fn set_advisories(&mut self, a: Advisories) {
        self.advisories = a;
    }

    /// The keyed hash that counts a client (never its address).
    pub(super) fn client_id(&self, ip: IpAddr) -> Option<u64> {
        self.matching.as_ref().map(|m| m.fingerprints.client_id(ip))
    }

    /// A watched cleartext flow: its app counts; an affected version raises
    /// `vulnerable_app` (once per client, version and advisory).
    pub(super) fn app_cleartext(&mut self, rec: &Record, http: Option<&RequestHead>, iface: &str) {
        let Some(client) = self.client_id(rec.src().0) else {
            return;
        };
        let service = self.service(rec.hdr.service);
        let app = http
            .and_then(|h| h.user_agent.as_deref())
            .and_then(user_agent::parse);
        let raised = self.inventory.cleartext(
            &service,
            client,
            app.as_ref(),
            rec.hdr.ts_ns,
            &self.advisories,
        );
        for v in raised {
            let Some(a) = self.advisories.0.get(v.advisory) else {
                continue;
            };
            let mut ev = Event::cleartext_flow(
                rec,
                self.clock.rfc3339(rec.hdr.ts_ns),
                iface,
                &service,
                http,
            );
            ev.event_type = "vulnerable_app";
            ev.flow = None;
            ev.host = Some(self.host.clone());
            ev.flow_id = Some(crate::sinks::events::flow_id(&rec.hdr.flow));
            ev.app.clone_from(&app);
            ev.advisory = Some(AdvisoryInfo {
                id: a.id.clone(),
                reference: a.reference.clone(),
                advice: a.advice.clone(),
            });
            log::info!(
                "vulnerable app: {} {} on {} ({}) to {service}",
                v.key.name,
                v.key.version.as_deref().unwrap_or("?"),
                v.key.platform.unwrap_or("unknown platform"),
                a.id
            );
            self.write_event(&ev);
        }
    }

    /// A TLS flow: counted for the app its client last used in cleartext.
    pub(super) fn app_tls(&mut self, service: u32, client: Option<IpAddr>, ts_ns: u64) {
        let Some(client) = client.and_then(|ip| self.client_id(ip)) else {
            return;
        };
        let service = self.service(service);
        self.inventory.tls(&service, client, ts_ns);
    }

    /// A finding: its kind joins its app version's.
    pub(super) fn app_finding(
        &mut self,
        head: Option<&RequestHead>,
        kind: &'static str,
        ts_ns: u64,
        service: &str,
        client: IpAddr,
    ) {
        let Some(id) = self.client_id(client) else {
            return;
        };
        let app = head
            .and_then(|h| h.user_agent.as_deref())
            .and_then(user_agent::parse);
        self.inventory
            .finding(service, id, app.as_ref(), kind, ts_ns);
    }

    /// The report card.
    pub fn app_rows(&self) -> Vec<AppRow> {
        self.inventory.rows(|ns| self.clock.rfc3339(ns))
    }

    /// Brings the inventory's gauges up to date.
    pub fn export_apps(&self) {
        let now = self.inventory.latest_ns();
        let catalog = self.targeting.catalog();
        let clients = self.inventory.client_series(
            now,
            |service, name| catalog.app_of(service, name).map(str::to_owned),
            &self.advisories,
        );
        let vulnerable = self.inventory.vulnerable_series(now, &self.advisories);
        self.metrics.apps.set(clients, vulnerable);
        for (name, e) in self.inventory.evictions() {
            self.metrics.set_evictions(name, e);
        }
    }
}

/// `leakwatch apps` and `replay --apps`: the report card as a table, or
/// JSON lines.
pub fn print_rows(
    rows: &[AppRow],
    json: bool,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    if json {
        for r in rows {
            writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<14} {:<16} {:<12} {:<9} {:>8} {:>10} {:>6} {:>10}  {:<30} ADVISORIES",
        "SERVICE",
        "APP",
        "VERSION",
        "PLATFORM",
        "CLIENTS",
        "CLEARTEXT",
        "TLS",
        "CLEAR %",
        "LEAK KINDS"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<14} {:<16} {:<12} {:<9} {:>8} {:>10} {:>6} {:>9.0}%  {:<30} {}",
            r.service,
            r.app,
            r.version.as_deref().unwrap_or("-"),
            r.platform.as_deref().unwrap_or("-"),
            format!("{}{}", r.clients, if r.clients_capped { "+" } else { "" }),
            r.cleartext_flows,
            r.tls_flows,
            r.cleartext_share * 100.0,
            if r.leak_kinds.is_empty() {
                "-".to_owned()
            } else {
                r.leak_kinds.join(",")
            },
            if r.advisories.is_empty() {
                "-".to_owned()
            } else {
                r.advisories.join(",")
            }
        )?;
    }
    Ok(())
}
