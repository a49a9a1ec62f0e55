//! Following apps (`follow_apps`): which cleartext requests are a catalog
//! app's, whatever host they go to.
//!
//! Only what a request says counts:
//! - an app-naming User-Agent (`Qobuz/6.1.2 (iPhone; iOS 17.4)`);
//! - an app-identifying header (`X-App-Id`, `X-Application-Id`,
//!   `X-Requested-With`; see `RequestHead::app_id`);
//! - for a client that sent such a header, its later requests with the very
//!   same User-Agent: "the client's flows that carry the same User-Agent".
//!   HTTP stacks' User-Agents (`Dalvik/…`, `okhttp/…`, `CFNetwork/…`) are
//!   never learned, as they name no app and many apps share them.
//!
//! Nothing is inferred from timing (no "the request after the app's").

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use super::catalog::Catalog;
use crate::{
    proto::{http::RequestHead, user_agent},
    shared::table::{Evictions, FlowTable},
};

/// How long a client's app User-Agent stays learned after its last use.
const LEARNED_TTL_NS: u64 = 30 * 60 * 1_000_000_000;
/// Client × User-Agent pairs remembered at most.
const LEARNED_CAP: usize = 65_536;

/// The app a request is from: the service's id and the catalog's app name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOf {
    pub service: String,
    pub app: String,
}

/// The User-Agents that app headers taught, per client.
pub struct Follower {
    /// (client id, User-Agent hash) → service id; stamped with record time.
    learned: FlowTable<(u64, u64), String, u64>,
}

impl Default for Follower {
    fn default() -> Self {
        Self {
            learned: FlowTable::new("followed_user_agents", LEARNED_CAP),
        }
    }
}

fn ua_hash(ua: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ua.hash(&mut h);
    h.finish()
}

impl Follower {
    /// The app `head` belongs to, for the client counted as `client` (a keyed
    /// hash of its address) at `ts_ns`.
    pub fn app_of(
        &mut self,
        catalog: &Catalog,
        client: u64,
        head: &RequestHead,
        ts_ns: u64,
    ) -> Option<AppOf> {
        let own = |c: &Catalog, id: &str| {
            c.app_named(id).map(|(service, app)| AppOf {
                service: service.to_owned(),
                app: app.to_owned(),
            })
        };
        // `user_agent::parse` names no app for an HTTP stack alone.
        let ua = head.user_agent.as_deref();
        let ua_app = ua.and_then(user_agent::parse);
        if let Some(a) = ua_app.as_ref().and_then(|a| own(catalog, &a.name)) {
            return Some(a);
        }
        if let Some(a) = head.app_id.as_deref().and_then(|id| own(catalog, id)) {
            // The User-Agent this app sent it with is the app's for this client.
            if ua_app.is_some()
                && let Some(ua) = ua
            {
                self.learned
                    .insert((client, ua_hash(ua)), a.service.clone(), ts_ns);
            }
            return Some(a);
        }
        ua_app.as_ref()?;
        let key = (client, ua_hash(ua?));
        let service = self.learned.touch(&key, ts_ns)?.clone();
        let app = catalog
            .services()
            .iter()
            .find(|s| s.id == service)
            .map(|s| s.apps.first().map_or(s.id.clone(), String::clone))?;
        Some(AppOf { service, app })
    }

    /// Forgets User-Agents unused for 30 minutes.
    pub fn sweep(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(LEARNED_TTL_NS);
        while self.learned.expire(cutoff).is_some() {}
    }

    pub fn evictions(&self) -> (&'static str, Evictions) {
        (self.learned.name(), self.learned.evictions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request_head;

    fn head(headers: &str) -> RequestHead {
        let req = format!("GET /collect HTTP/1.1\r\nHost: stats.example\r\n{headers}\r\n");
        parse_request_head(req.as_bytes()).unwrap()
    }

    fn qobuz() -> AppOf {
        AppOf {
            service: "qobuz".into(),
            app: "Qobuz".into(),
        }
    }

    #[test]
    fn an_app_naming_user_agent_or_header_identifies() {
        let c = Catalog::builtin();
        let mut f = Follower::default();
        let ua = "User-Agent: Qobuz/6.1.2 (iPhone; iOS 17.4; Scale/3.00)\r\n";
        assert_eq!(f.app_of(&c, 1, &head(ua), 0), Some(qobuz()));
        for id in ["X-App-Id: qobuz", "X-Requested-With: com.qobuz.music"] {
            let h = head(&format!("User-Agent: okhttp/4.9.0\r\n{id}\r\n"));
            assert_eq!(f.app_of(&c, 1, &h, 0), Some(qobuz()), "{id}");
        }
        let tidal = f.app_of(&c, 1, &head("X-App-Id: com.aspiro.tidal\r\n"), 0);
        assert_eq!(tidal.map(|a| a.service), Some("tidal".into()));
    }

    #[test]
    fn http_stacks_and_browsers_identify_nothing() {
        let c = Catalog::builtin();
        let mut f = Follower::default();
        for ua in [
            "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A)",
            "okhttp/4.12.0",
            "CFNetwork/1494.0.7 Darwin/23.4.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
            "SomeOtherApp/2.0 (iPhone; iOS 17.4)",
        ] {
            let h = head(&format!(
                "User-Agent: {ua}\r\nX-Requested-With: XMLHttpRequest\r\n"
            ));
            assert_eq!(f.app_of(&c, 1, &h, 0), None, "{ua}");
        }
    }

    #[test]
    fn a_header_teaches_its_clients_user_agent_not_a_generic_one() {
        let c = Catalog::builtin();
        let mut f = Follower::default();
        let sdk = "User-Agent: StatsKit/3.2 (iPhone; iOS 17.4)\r\n";
        assert_eq!(f.app_of(&c, 1, &head(sdk), 0), None, "not yet");
        let taught = head(&format!("{sdk}X-App-Id: Qobuz\r\n"));
        assert_eq!(f.app_of(&c, 1, &taught, 10), Some(qobuz()));
        assert_eq!(
            f.app_of(&c, 1, &head(sdk), 20),
            Some(qobuz()),
            "same client"
        );
        assert_eq!(f.app_of(&c, 2, &head(sdk), 20), None, "another client");
        // A stack's User-Agent is never learned.
        let ok = "User-Agent: okhttp/4.12.0\r\n";
        assert_eq!(
            f.app_of(&c, 1, &head(&format!("{ok}X-App-Id: Qobuz\r\n")), 30),
            Some(qobuz())
        );
        assert_eq!(f.app_of(&c, 1, &head(ok), 40), None);
        // Unused for 30 minutes: forgotten.
        f.sweep(20 + LEARNED_TTL_NS + 1);
        assert_eq!(f.app_of(&c, 1, &head(sdk), LEARNED_TTL_NS + 30), None);
    }
}
