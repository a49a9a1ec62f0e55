//! The app inventory: per service, the app versions its watched flows came
//! from (User-Agent), with their clients (by a keyed hash of the address,
//! never the address), first and last seen, leak kinds, and how many of
//! their flows were cleartext. The report card of `leakwatch apps`.
//!
//! A TLS flow shows no User-Agent: it counts for the app version its client
//! last used in cleartext to the same service within 30 minutes, otherwise
//! as `unattributed` — so an app version that moved to TLS shows as fixed
//! instead of vanishing. Every table is bounded; at a cap the least recently
//! seen entry goes.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::advisories::Advisories;
use crate::{proto::user_agent::App, shared::table::FlowTable};

/// A TLS flow or finding without User-Agent takes the app its client used
/// in cleartext to the same service this recently.
pub const ATTRIBUTION_NS: u64 = 30 * 60 * 1_000_000_000;
/// Apps of TLS flows nothing could attribute.
pub const UNATTRIBUTED: &str = "unattributed";
const DAY_NS: u64 = 24 * 3600 * 1_000_000_000;
const MAX_APPS: usize = 1024;
const MAX_CLIENTS_PER_APP: usize = 4096;
const MAX_CLIENTS: usize = 65_536;
const MAX_ALERTED: usize = 65_536;

/// A version fit for a label: short, letters, digits, `.`, `-`, `_`.
fn plain(v: &str) -> bool {
    v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// (version, platform, clients seen in the window) of one app version.
type Seen<'a> = (Option<&'a str>, Option<&'static str>, u64);

/// One app version of one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub service: String,
    pub name: String,
    pub version: Option<String>,
    pub platform: Option<&'static str>,
}

impl AppKey {
    pub fn new(service: &str, app: &App) -> Self {
        Self {
            service: service.to_owned(),
            name: app.name.clone(),
            version: app.version.clone(),
            platform: app.platform,
        }
    }

    fn unattributed(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            name: UNATTRIBUTED.into(),
            version: None,
            platform: None,
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// Client (keyed hash) → last seen (ns).
    clients: HashMap<u64, u64>,
    /// More clients than the entry keeps were seen.
    capped: bool,
    first_ns: u64,
    last_ns: u64,
    cleartext_flows: u64,
    tls_flows: u64,
    kinds: BTreeSet<&'static str>,
    advisories: BTreeSet<String>,
}

/// One row of the report card.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AppRow {
    pub service: String,
    pub app: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub clients: u64,
    /// More clients than counted (the entry's bound was reached).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clients_capped: bool,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    pub cleartext_flows: u64,
    pub tls_flows: u64,
    /// Share of its flows in cleartext (0 to 1).
    pub cleartext_share: f64,
    pub leak_kinds: Vec<String>,
    pub advisories: Vec<String>,
}

/// A client newly seen running an affected version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vulnerable {
    pub key: AppKey,
    /// Index into the advisories.
    pub advisory: usize,
}

pub struct Inventory {
    /// The latest time seen (the 24 h windows end here: capture time in
    /// replay, the sensor's clock live).
    latest_ns: u64,
    entries: FlowTable<AppKey, Entry, u64>,
    /// (client, service) → the app it last used in cleartext.
    last_app: FlowTable<(u64, String), AppKey, u64>,
    /// (client, app, advisory) already reported.
    alerted: FlowTable<(u64, AppKey, usize), (), u64>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self {
            latest_ns: 0,
            entries: FlowTable::new("app_inventory", MAX_APPS),
            last_app: FlowTable::new("app_attribution", MAX_CLIENTS),
            alerted: FlowTable::new("app_advisory_alerts", MAX_ALERTED),
        }
    }
}

impl Inventory {
    /// Draws the tables from the memory budget: each app version is charged
    /// its slot and its clients; past the budget the least recently seen go.
    pub fn set_budget(&mut self, budget: &std::sync::Arc<crate::shared::budget::Budget>) {
        self.entries.set_budget(std::sync::Arc::clone(budget));
        self.last_app.set_budget(std::sync::Arc::clone(budget));
        self.alerted.set_budget(std::sync::Arc::clone(budget));
    }

    /// Charges `key`'s entry what it holds now, and gives memory back while
    /// the budget is spent.
    fn charge(&mut self, key: &AppKey) {
        if let Some(e) = self.entries.get(key) {
            // A map slot (key, value, control byte) per client; the strings.
            let held = e.clients.capacity() * 17
                + e.kinds.len() * 16
                + e.advisories.iter().map(|a| a.len() + 24).sum::<usize>()
                + key.name.len()
                + key.version.as_ref().map_or(0, String::len);
            self.entries.recharge(key, held as u64);
        }
        while self.entries.evict_over_budget().is_some() {}
        while self.last_app.evict_over_budget().is_some() {}
        while self.alerted.evict_over_budget().is_some() {}
    }

    /// The tables' evictions, for `leakwatch_evictions_total`.
    pub fn evictions(&self) -> [(&'static str, crate::shared::table::Evictions); 3] {
        [
            (self.entries.name(), self.entries.evictions()),
            (self.last_app.name(), self.last_app.evictions()),
            (self.alerted.name(), self.alerted.evictions()),
        ]
    }

    pub fn latest_ns(&self) -> u64 {
        self.latest_ns
    }

    fn entry(&mut self, key: &AppKey, ts_ns: u64) -> &mut Entry {
        self.latest_ns = self.latest_ns.max(ts_ns);
        if !self.entries.contains_key(key) {
            let e = Entry {
                first_ns: ts_ns,
                ..Entry::default()
            };
            self.entries.insert(key.clone(), e, ts_ns);
        }
        let Some(e) = self.entries.touch(key, ts_ns) else {
            unreachable!("inserted above")
        };
        e.last_ns = e.last_ns.max(ts_ns);
        e
    }

    fn seen(e: &mut Entry, client: u64, ts_ns: u64) {
        if e.clients.len() < MAX_CLIENTS_PER_APP || e.clients.contains_key(&client) {
            e.clients.insert(client, ts_ns);
        } else {
            e.capped = true;
        }
    }

    /// A cleartext flow from `client` to `service` with this app (none: the
    /// request named no app). Returns the advisories newly raised for it.
    pub fn cleartext(
        &mut self,
        service: &str,
        client: u64,
        app: Option<&App>,
        ts_ns: u64,
        advisories: &Advisories,
    ) -> Vec<Vulnerable> {
        let Some(app) = app else {
            return Vec::new();
        };
        let key = AppKey::new(service, app);
        self.last_app
            .insert((client, service.to_owned()), key.clone(), ts_ns);
        let e = self.entry(&key, ts_ns);
        e.cleartext_flows += 1;
        Self::seen(e, client, ts_ns);
        self.charge(&key);
        let Some(version) = app.version.as_deref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, a) in advisories.0.iter().enumerate() {
            if !a.affects(service, &app.name, app.platform, version) {
                continue;
            }
            if let Some(e) = self.entries.get_mut(&key) {
                e.advisories.insert(a.id.clone());
            }
            let k = (client, key.clone(), i);
            if !self.alerted.contains_key(&k) {
                self.alerted.insert(k, (), ts_ns);
                out.push(Vulnerable {
                    key: key.clone(),
                    advisory: i,
                });
            }
        }
        out
    }

    /// The app `client` last used in cleartext to `service`, if recent.
    fn attributed(&self, client: u64, service: &str, ts_ns: u64) -> AppKey {
        let k = (client, service.to_owned());
        match (self.last_app.get(&k), self.last_app.last(&k)) {
            (Some(app), Some(at)) if ts_ns.saturating_sub(at) <= ATTRIBUTION_NS => app.clone(),
            _ => AppKey::unattributed(service),
        }
    }

    /// A TLS flow from `client` to `service`.
    pub fn tls(&mut self, service: &str, client: u64, ts_ns: u64) {
        let key = self.attributed(client, service, ts_ns);
        let e = self.entry(&key, ts_ns);
        e.tls_flows += 1;
        Self::seen(e, client, ts_ns);
        self.charge(&key);
    }

    /// A finding of `kind` from `client`'s flow with `app` (none: the app its
    /// client used last).
    pub fn finding(
        &mut self,
        service: &str,
        client: u64,
        app: Option<&App>,
        kind: &'static str,
        ts_ns: u64,
    ) {
        let key = app.map_or_else(
            || self.attributed(client, service, ts_ns),
            |a| AppKey::new(service, a),
        );
        self.entry(&key, ts_ns).kinds.insert(kind);
        self.charge(&key);
    }

    /// The report card, by service, app and version; times by `rfc3339`.
    pub fn rows(&self, rfc3339: impl Fn(u64) -> String) -> Vec<AppRow> {
        let mut rows: Vec<(&AppKey, AppRow)> = self
            .entries
            .iter()
            .map(|(k, e)| {
                let flows = e.cleartext_flows + e.tls_flows;
                (
                    k,
                    AppRow {
                        service: k.service.clone(),
                        app: k.name.clone(),
                        version: k.version.clone(),
                        platform: k.platform.map(str::to_owned),
                        clients: e.clients.len() as u64,
                        clients_capped: e.capped,
                        first_seen: rfc3339(e.first_ns),
                        last_seen: rfc3339(e.last_ns),
                        cleartext_flows: e.cleartext_flows,
                        tls_flows: e.tls_flows,
                        cleartext_share: if flows == 0 {
                            0.0
                        } else {
                            e.cleartext_flows as f64 / flows as f64
                        },
                        leak_kinds: e.kinds.iter().map(|k| (*k).to_owned()).collect(),
                        advisories: e.advisories.iter().cloned().collect(),
                    },
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// `leakwatch_app_clients` series: clients seen in the last 24 h per
    /// (service, app, platform, version). No attacker-chosen string becomes
    /// a label: `app` only when `known_app(service, name)` (the catalog's),
    /// `version` only when an advisory names it or it is among the 5 most
    /// seen of its app in the last 24 h; the rest are summed under `other`.
    pub fn client_series(
        &self,
        now_ns: u64,
        known_app: impl Fn(&str, &str) -> Option<String>,
        advisories: &Advisories,
    ) -> Vec<([String; 4], u64)> {
        let since = now_ns.saturating_sub(DAY_NS);
        // (service, app label) → [(version, platform, recent clients)]
        let mut by_app: HashMap<(String, String), Vec<Seen<'_>>> = HashMap::new();
        for (k, e) in self.entries.iter() {
            let recent = e.clients.values().filter(|&&t| t >= since).count() as u64;
            if recent == 0 {
                continue;
            }
            let app = known_app(&k.service, &k.name).unwrap_or_else(|| {
                if k.name == UNATTRIBUTED {
                    UNATTRIBUTED.into()
                } else {
                    "other".into()
                }
            });
            by_app.entry((k.service.clone(), app)).or_default().push((
                k.version.as_deref(),
                k.platform,
                recent,
            ));
        }
        let mut out: HashMap<[String; 4], u64> = HashMap::new();
        for ((service, app), mut versions) in by_app {
            versions.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            for (rank, (version, platform, n)) in versions.into_iter().enumerate() {
                let named = app != "other"
                    && app != UNATTRIBUTED
                    && version
                        .is_some_and(|v| rank < 5 || advisories.names(&service, &app, platform, v));
                let label = [
                    service.clone(),
                    app.clone(),
                    platform.unwrap_or("unknown").to_owned(),
                    version
                        .filter(|v| named && plain(v))
                        .unwrap_or("other")
                        .to_owned(),
                ];
                *out.entry(label).or_default() += n;
            }
        }
        out.into_iter().collect()
    }

    /// `leakwatch_vulnerable_app_clients` series: clients seen in the last
    /// 24 h running a version an advisory names, by (service, app, platform,
    /// version, advisory). Every label comes from the advisories file.
    pub fn vulnerable_series(
        &self,
        now_ns: u64,
        advisories: &Advisories,
    ) -> Vec<([String; 5], u64)> {
        let since = now_ns.saturating_sub(DAY_NS);
        let mut out: HashMap<[String; 5], u64> = HashMap::new();
        for (k, e) in self.entries.iter() {
            let Some(v) = k.version.as_deref() else {
                continue;
            };
            let recent = e.clients.values().filter(|&&t| t >= since).count() as u64;
            for a in advisories.affecting(&k.service, &k.name, k.platform, v) {
                let label = [
                    a.service.clone(),
                    a.app.clone(),
                    k.platform.unwrap_or("unknown").to_owned(),
                    if plain(v) { v } else { "other" }.to_owned(),
                    a.id.clone(),
                ];
                *out.entry(label).or_default() += recent;
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::advisories::Advisories;

    fn app(name: &str, version: &str, platform: &'static str) -> App {
        App {
            name: name.into(),
            version: Some(version.into()),
            platform: Some(platform),
        }
    }

    const MIN: u64 = 60 * 1_000_000_000;

    /// Clients, flows, kinds; TLS flows attributed within 30 minutes, else
    /// `unattributed`; an advisory raised once per client and version.
    #[test]
    fn the_report_card_counts_clients_flows_kinds_and_moves_to_tls() {
        let adv = Advisories::parse(
            "a.toml",
            "[[advisories]]\nid = \"q-1\"\nservice = \"qobuz\"\napp = \"Qobuz\"\nplatform = \"iOS\"\nversions = \"<6.2\"\n",
            |s| s == "qobuz",
        )
        .unwrap();
        let mut inv = Inventory::default();
        let old = app("Qobuz", "6.1.2", "iOS");
        let new = app("Qobuz", "6.2.0", "iOS");
        // Client 1 on the old version: cleartext, a leak, then TLS within 30 min.
        let raised = inv.cleartext("qobuz", 1, Some(&old), MIN, &adv);
        assert_eq!(raised.len(), 1);
        assert!(
            inv.cleartext("qobuz", 1, Some(&old), 2 * MIN, &adv)
                .is_empty(),
            "once per client"
        );
        inv.finding("qobuz", 1, Some(&old), "password_hash", 2 * MIN);
        inv.tls("qobuz", 1, 20 * MIN);
        // Client 2 on the fixed version: no advisory.
        assert!(
            inv.cleartext("qobuz", 2, Some(&new), 3 * MIN, &adv)
                .is_empty()
        );
        assert_eq!(
            inv.cleartext("qobuz", 3, Some(&old), 3 * MIN, &adv).len(),
            1,
            "another client"
        );
        // TLS long after the last cleartext flow, and from a client never seen.
        inv.tls("qobuz", 2, 100 * MIN);
        inv.tls("qobuz", 9, 5 * MIN);
        let rows = inv.rows(|ns| format!("t{}", ns / MIN));
        let row = |a: &str, v: Option<&str>| {
            rows.iter()
                .find(|r| r.app == a && r.version.as_deref() == v)
                .unwrap_or_else(|| panic!("{a} {v:?}: {rows:?}"))
        };
        let o = row("Qobuz", Some("6.1.2"));
        assert_eq!((o.clients, o.cleartext_flows, o.tls_flows), (2, 3, 1));
        assert!((o.cleartext_share - 0.75).abs() < 1e-9);
        assert_eq!(o.leak_kinds, ["password_hash"]);
        assert_eq!(o.advisories, ["q-1"]);
        assert_eq!((o.first_seen.as_str(), o.last_seen.as_str()), ("t1", "t20"));
        let n = row("Qobuz", Some("6.2.0"));
        assert_eq!((n.clients, n.cleartext_flows, n.tls_flows), (1, 1, 0));
        let u = row(UNATTRIBUTED, None);
        assert_eq!((u.clients, u.tls_flows), (2, 2));
        // Metrics: catalog apps by name, versions named (top 5 or advisory).
        let known =
            |_: &str, n: &str| (n.eq_ignore_ascii_case("qobuz")).then(|| "Qobuz".to_owned());
        let series = inv.client_series(100 * MIN, known, &adv);
        assert!(
            series.contains(&(
                ["qobuz".into(), "Qobuz".into(), "iOS".into(), "6.1.2".into()],
                2
            )),
            "{series:?}"
        );
        let vuln = inv.vulnerable_series(100 * MIN, &adv);
        assert_eq!(
            vuln,
            [(
                [
                    "qobuz".into(),
                    "Qobuz".into(),
                    "iOS".into(),
                    "6.1.2".into(),
                    "q-1".into()
                ],
                2
            )]
        );
    }

    /// The inventory draws from the memory budget and gives memory back.
    #[test]
    fn the_inventory_is_charged_to_the_memory_budget() {
        let budget = std::sync::Arc::new(crate::shared::budget::Budget::new(256 * 1024));
        let mut inv = Inventory::default();
        inv.set_budget(&budget);
        let adv = Advisories::default();
        for i in 0..20_000u64 {
            let a = app("Qobuz", &format!("6.{}", i % 300), "iOS");
            inv.cleartext("qobuz", i, Some(&a), MIN + i, &adv);
            assert!(budget.used() <= 256 * 1024 + 64 * 1024, "{}", budget.used());
        }
        assert!(budget.used() > 0);
        assert!(inv.entries.evictions().budget + inv.last_app.evictions().budget > 0);
    }

    /// No attacker-chosen string becomes a label: unknown apps are `other`,
    /// versions past the 5 most seen are `other`, and the tables stay bounded.
    #[test]
    fn labels_are_bounded_and_so_are_the_tables() {
        let adv = Advisories::default();
        let mut inv = Inventory::default();
        for i in 0..3000u64 {
            let a = app(&format!("Evil{i}<script>"), &format!("1.{i}"), "Android");
            inv.cleartext("qobuz", i, Some(&a), MIN + i, &adv);
            let q = app("Qobuz", &format!("7.{}", i % 9), "Android");
            for c in 0..=(i % 9) {
                inv.cleartext("qobuz", 10_000 + c, Some(&q), MIN + i, &adv);
            }
        }
        assert!(inv.entries.len() <= MAX_APPS);
        let known = |_: &str, n: &str| (n == "Qobuz").then(|| "Qobuz".to_owned());
        let series = inv.client_series(MIN + 3000, known, &adv);
        let apps: BTreeSet<&str> = series.iter().map(|(l, _)| l[1].as_str()).collect();
        assert_eq!(apps, BTreeSet::from(["Qobuz", "other"]));
        let versions: BTreeSet<&str> = series
            .iter()
            .filter(|(l, _)| l[1] == "Qobuz")
            .map(|(l, _)| l[3].as_str())
            .collect();
        assert_eq!(versions.len(), 6, "5 named and other: {versions:?}");
        assert!(versions.contains("7.8") && versions.contains("other"));
        assert!(
            series
                .iter()
                .all(|(l, _)| l[1] != "other" || l[3] == "other")
        );
    }
}
