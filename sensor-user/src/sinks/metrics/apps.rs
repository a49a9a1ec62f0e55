//! App inventory metrics: clients per app version, and clients running a
//! version an advisory names. Labels never carry an address or a string a
//! client chose freely (see `sinks::inventory::Inventory::client_series`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub service: String,
    /// A catalog app, `unattributed` (TLS flows no cleartext flow named) or `other`.
    pub app: String,
    pub platform: String,
    /// Named by an advisory or among its app's 5 most seen; else `other`.
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VulnerableLabels {
    pub service: String,
    pub app: String,
    pub platform: String,
    pub version: String,
    pub advisory: String,
}

pub struct AppMetrics {
    pub clients: Family<AppLabels, Gauge>,
    pub vulnerable: Family<VulnerableLabels, Gauge>,
}

impl AppMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let clients = Family::<AppLabels, Gauge>::default();
        registry.register(
            "leakwatch_app_clients",
            "Clients seen in the last 24 h per service, app, platform and app version",
            clients.clone(),
        );
        let vulnerable = Family::<VulnerableLabels, Gauge>::default();
        registry.register(
            "leakwatch_vulnerable_app_clients",
            "Clients seen in the last 24 h running an app version an advisory names",
            vulnerable.clone(),
        );
        Self {
            clients,
            vulnerable,
        }
    }

    /// Replaces every series with `clients` and `vulnerable`.
    pub fn set(&self, clients: Vec<([String; 4], u64)>, vulnerable: Vec<([String; 5], u64)>) {
        self.clients.clear();
        for ([service, app, platform, version], n) in clients {
            self.clients
                .get_or_create(&AppLabels {
                    service,
                    app,
                    platform,
                    version,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.vulnerable.clear();
        for ([service, app, platform, version, advisory], n) in vulnerable {
            self.vulnerable
                .get_or_create(&VulnerableLabels {
                    service,
                    app,
                    platform,
                    version,
                    advisory,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
