//! The findings stage: which confirmed hits become findings, decided in one
//! place ([`FlowFindings::admit`]). Everything detection adds about what is and
//! is not a leak goes here; `flows/` only delivers hits with their flow, and the
//! pipeline only routes findings to the sinks.
//!
//! Applied in order:
//! 1. a rule restricted to services fires only on their flows;
//! 2. values of fields a service publishes (its app id) are not secrets;
//! 3. personal data in a response's free text (HTML, plain text) is not a leak —
//!    pages publish contact addresses — only in its fields; mail identifiers
//!    (`Message-ID`, `References`, …) look like addresses and are not; digit
//!    runs in fields named like ids (`order_id`, `ean`, `isrc`) are not cards;
//! 4. a value is reported once per flow, however many rules or places find it
//!    (a JWT bearer is both `bearer_token` and `jwt_value`);
//! 5. gender is too common alone: held until other personal data of the same
//!    message is found, dropped if none is;
//! 6. what an HTTP server sends is a leak in an authentication or account exchange
//!    (the request's path names one, or the request carried a credential), or
//!    when it is a record of people (a name beside a user name, e-mail or
//!    password hash in one message); public catalog data and settings are not.
//!
//! Severity is the rule's, but a password of a few characters is not critical.

use std::{
    collections::HashSet,
    hash::{Hash as _, Hasher as _},
};

use sensor_common::flow::FlowKey;

use super::{
    engine::{Hit, RuleSet},
    rules::{Kind, Severity},
};
use crate::{
    proto::{Credential, Level, Outcome, Protocol, http::RequestHead},
    shared::ids::ServiceIds,
};

/// `Hit::rule` of a finding that protocol semantics named, not a pattern rule.
pub const SEMANTIC: usize = usize::MAX;

/// Gender findings held per flow while waiting for other PII in their message.
const MAX_HELD: usize = 16;
/// Response findings held per flow while waiting to be a record of people.
const MAX_RECORD_HELD: usize = 64;
/// Passwords shorter than this are not critical.
const MIN_CRITICAL_PASSWORD: usize = 6;

/// Kinds that make a request an authentication exchange.
fn is_credential(k: Kind) -> bool {
    matches!(
        k,
        Kind::Password | Kind::PasswordHash | Kind::AuthToken | Kind::Username
    )
}

/// Paths of authentication and account exchanges, whose responses issue
/// tokens and carry the user's own profile.
fn is_account_path(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [
        "login", "signin", "auth", "token", "account", "register", "profile", "session",
    ]
    .iter()
    .any(|w| p.contains(w))
}

/// A finding: a hit the policy let through, where it was found, and how bad.
#[derive(Debug, Clone)]
pub struct Finding {
    pub hit: Hit,
    /// The rule's id and severity.
    pub rule: String,
    pub severity: Severity,
    /// The record whose data completed the match (time, interface, addresses).
    pub ts_ns: u64,
    pub ifindex: u32,
    pub key: FlowKey,
    /// Key direction the data travelled in.
    pub direction: u8,
    pub from_client: bool,
    pub service: u32,
    /// The request this belongs to (for responses: the latest request).
    pub head: Option<RequestHead>,
    /// What the server said of the login (protocol credentials).
    pub outcome: Option<Outcome>,
    /// Whether a challenge–response hash can be cracked (its challenge was seen).
    pub crackable: Option<bool>,
    /// The flow's application protocol, once recognised.
    pub protocol: Option<Protocol>,
    /// A followed flow (`follow_apps`): the app's, to a host that is not its
    /// service's.
    pub third_party: bool,
}

/// Where a batch of hits was found.
#[derive(Debug, Clone)]
pub struct Place {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub key: FlowKey,
    pub direction: u8,
    pub from_client: bool,
    pub service: u32,
    pub head: Option<RequestHead>,
    pub protocol: Option<Protocol>,
    pub third_party: bool,
}

impl Place {
    /// A pattern or canary finding of `hit` here.
    fn finding(&self, rule: String, severity: Severity, hit: Hit) -> Finding {
        Finding {
            rule,
            severity,
            ts_ns: self.ts_ns,
            ifindex: self.ifindex,
            key: self.key,
            direction: self.direction,
            from_client: self.from_client,
            service: self.service,
            head: self.head.clone(),
            outcome: None,
            crackable: None,
            protocol: self.protocol,
            third_party: self.third_party,
            hit,
        }
    }
}

/// What the policy knows of services: names by id, and the field names whose
/// values each publishes (not secrets). Plain data, shared by matcher threads.
#[derive(Debug, Default, Clone)]
pub struct Services {
    ids: ServiceIds,
    /// Public field names, by service id − 1.
    public: Vec<Vec<String>>,
}

impl Services {
    /// `public(name)`: the field names service `name` publishes.
    pub fn new(ids: ServiceIds, public: impl Fn(&str) -> Vec<String>) -> Self {
        let public = ids.names().map(public).collect();
        Self { ids, public }
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.ids.name(id)
    }

    fn is_public(&self, id: u32, field: &str) -> bool {
        let Some(i) = usize::try_from(id).ok().and_then(|i| i.checked_sub(1)) else {
            return false;
        };
        self.public
            .get(i)
            .is_some_and(|p| p.iter().any(|n| n.eq_ignore_ascii_case(field)))
    }
}

/// Fields named like identifiers (`track_id`, `orderId`, `ean`, `isrc`):
/// their long digit runs are ids and codes, not card numbers.
fn is_id_field(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    f.ends_with("id")
        || f.ends_with("_ids")
        || f.starts_with("order")
        || [
            "ean", "upc", "isrc", "gtin", "sku", "isbn", "barcode", "msisdn", "phone",
        ]
        .iter()
        .any(|n| f == *n || f.ends_with(&format!("_{n}")))
}

/// Mail headers whose values are `<id@host>` identifiers, not addresses.
fn is_mail_identifier(field: &str) -> bool {
    [
        "message-id",
        "references",
        "in-reply-to",
        "content-id",
        "resent-message-id",
    ]
    .iter()
    .any(|n| field.eq_ignore_ascii_case(n))
}

fn value_hash(v: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// One flow's findings state: what it reported, which messages carried
/// personal data, and the gender values waiting for company.
#[derive(Debug, Default)]
pub struct FlowFindings {
    /// (kind, value hash) reported so far.
    reported: HashSet<(Kind, u64)>,
    /// (direction, message) pairs that carried PII.
    pii: HashSet<(u8, u64)>,
    held: Vec<Finding>,
    /// Client messages (requests) that carried a credential.
    credential_requests: HashSet<u64>,
    /// Response findings outside an account exchange, waiting to show they
    /// are a record of people.
    records: Vec<Finding>,
}

impl FlowFindings {
    /// Every rule about which `hits` become findings (module docs); findings go to `out`.
    pub fn admit(
        &mut self,
        rules: &RuleSet,
        services: &Services,
        hits: Vec<Hit>,
        at: &Place,
        out: &mut Vec<Finding>,
    ) {
        for hit in hits {
            // A canary is the admin's own test value: certain wherever it
            // appears, so none of the policy's guesses apply.
            if hit.canary.is_some() {
                let severity = rules.severity_of(hit.kind);
                let f = at.finding("canary".into(), severity, hit);
                if at.from_client && is_credential(f.hit.kind) {
                    self.credential_requests.insert(f.hit.message);
                }
                self.accept_confirmed(f, out);
                continue;
            }
            let rule = rules.rule(hit.rule);
            if !rule.services.is_empty()
                && !services
                    .name(at.service)
                    .is_some_and(|n| rule.services.iter().any(|s| s == n))
            {
                continue;
            }
            if services.is_public(at.service, &hit.name) {
                continue;
            }
            if !at.from_client && hit.name.is_empty() && hit.kind.is_pii() {
                continue;
            }
            if hit.kind == Kind::Email && is_mail_identifier(&hit.name) {
                continue;
            }
            if hit.kind == Kind::PaymentCard && is_id_field(&hit.name) {
                continue;
            }
            let mut severity = rule.severity;
            // A password of a few characters is a setting or a placeholder
            // more often than a secret, and tells an attacker little.
            if hit.kind == Kind::Password && hit.value.chars().count() < MIN_CRITICAL_PASSWORD {
                severity = severity.min(Severity::Medium);
            }
            let f = at.finding(rule.id.clone(), severity, hit);
            // Rule 6 reads HTTP's request/response semantics; a mail server's
            // data (fetched messages) is the user's own, and stays a leak.
            if at.from_client || at.protocol != Some(Protocol::Http) {
                if at.from_client && is_credential(f.hit.kind) {
                    self.credential_requests.insert(f.hit.message);
                }
                self.accept(f, out);
            } else {
                self.response(f, out);
            }
        }
    }

    /// Rule 6, what a server sends: everything in an authentication or
    /// account exchange (the request's path says so, or the request carried a
    /// credential); otherwise only records of people (a name beside a user
    /// name, e-mail or password hash in the same message), held until the
    /// message shows one.
    fn response(&mut self, f: Finding, out: &mut Vec<Finding>) {
        let auth = self.credential_requests.contains(&f.hit.message)
            || f.head.as_ref().is_some_and(|h| is_account_path(&h.path));
        if auth {
            self.accept(f, out);
            return;
        }
        let msg = (f.direction, f.hit.message);
        let same = |g: &Finding| (g.direction, g.hit.message) == msg;
        let kinds = || self.records.iter().filter(|g| same(g)).map(|g| g.hit.kind);
        let name = f.hit.kind == Kind::PersonName || kinds().any(|k| k == Kind::PersonName);
        let identity = |k: Kind| matches!(k, Kind::Username | Kind::Email | Kind::PasswordHash);
        let id = identity(f.hit.kind) || kinds().any(identity);
        if name && id {
            let (record, keep): (Vec<_>, Vec<_>) = self.records.drain(..).partition(same);
            self.records = keep;
            for g in record {
                self.accept(g, out);
            }
            self.accept(f, out);
        } else if self.records.len() < MAX_RECORD_HELD {
            self.records.push(f);
        }
    }

    /// Rules 4 and 5: once per flow and value; gender only with company.
    fn accept(&mut self, f: Finding, out: &mut Vec<Finding>) {
        if !self.reported.insert((f.hit.kind, value_hash(&f.hit.value))) {
            return;
        }
        let msg = (f.direction, f.hit.message);
        if f.hit.kind == Kind::Gender && !self.pii.contains(&msg) {
            if self.held.len() < MAX_HELD {
                self.held.push(f);
            }
            return;
        }
        self.release(&f, out);
        out.push(f);
    }

    /// A canary's finding: once per flow and value, and certain, so never
    /// held (a canary of kind `gender` is the test account's, not a guess).
    fn accept_confirmed(&mut self, f: Finding, out: &mut Vec<Finding>) {
        if !self.reported.insert((f.hit.kind, value_hash(&f.hit.value))) {
            return;
        }
        self.release(&f, out);
        out.push(f);
    }

    /// Personal data in a message releases the gender findings it held.
    fn release(&mut self, f: &Finding, out: &mut Vec<Finding>) {
        let msg = (f.direction, f.hit.message);
        if f.hit.kind.is_pii() && self.pii.insert(msg) {
            let (company, keep): (Vec<_>, Vec<_>) = self
                .held
                .drain(..)
                .partition(|g| (g.direction, g.hit.message) == msg);
            self.held = keep;
            out.extend(company);
        }
    }

    /// Credentials a protocol's semantics named: findings whatever their
    /// values look like (no pattern, no validator), once per flow and value.
    pub fn credentials(&mut self, creds: Vec<Credential>, at: &Place, out: &mut Vec<Finding>) {
        for c in creds {
            let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == c.kind) else {
                continue;
            };
            if c.value.is_empty() || !self.reported.insert((kind, value_hash(&c.value))) {
                continue;
            }
            if kind.is_pii() {
                self.pii.insert((c.dir, 0));
            }
            out.push(Finding {
                rule: c.rule.to_owned(),
                severity: match c.level {
                    Level::Low => Severity::Low,
                    Level::Medium => Severity::Medium,
                    Level::High => Severity::High,
                    Level::Critical => Severity::Critical,
                },
                ts_ns: at.ts_ns,
                ifindex: at.ifindex,
                key: at.key,
                direction: c.dir,
                from_client: c.from_client,
                service: at.service,
                head: at.head.clone(),
                outcome: c.outcome,
                crackable: c.crackable,
                protocol: at.protocol,
                third_party: at.third_party,
                hit: Hit {
                    rule: SEMANTIC,
                    kind,
                    value: c.value,
                    ctx: c.ctx,
                    name: c.name,
                    message: 0,
                    canary: None,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{matcher::rules, proto::fields::Ctx};

    fn set() -> RuleSet {
        let mut all = rules::builtin();
        let mut only_qobuz = all
            .iter()
            .find(|r| r.id == "auth_token_param")
            .unwrap()
            .clone();
        only_qobuz.id = "qobuz_only".into();
        only_qobuz.services = vec!["qobuz".into()];
        all.push(only_qobuz);
        RuleSet::compile(all).unwrap()
    }

    fn hit(set: &RuleSet, rule: &str, name: &str, value: &str, message: u64) -> Hit {
        let i = set.rules().position(|r| r.id == rule).unwrap();
        let r = set.rule(i);
        Hit {
            rule: i,
            kind: r.kind,
            value: value.into(),
            ctx: Ctx::Query,
            name: name.into(),
            message,
            canary: None,
        }
    }

    fn place(service: u32, from_client: bool) -> Place {
        // Responses answer message 0 of a flow whose request carried nothing.
        Place {
            ts_ns: 1,
            ifindex: 1,
            key: FlowKey::zeroed(),
            direction: u8::from(!from_client),
            from_client,
            service,
            head: None,
            protocol: Some(Protocol::Http),
            third_party: false,
        }
    }

    /// Each step of the policy, and that it is the only filter.
    #[test]
    fn the_policy_step_by_step() {
        let set = set();
        let mut ids = ServiceIds::default();
        let (qobuz, tidal) = (ids.id("qobuz"), ids.id("tidal"));
        let services = Services::new(ids, |n| {
            if n == "tidal" {
                vec!["token".into()]
            } else {
                Vec::new()
            }
        });
        let admit = |hits: Vec<Hit>, at: &Place| {
            let mut out = Vec::new();
            FlowFindings::default().admit(&set, &services, hits, at, &mut out);
            out.iter().map(|f| f.rule.clone()).collect::<Vec<_>>()
        };
        let tok = "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf";
        // 1. A rule for qobuz only: silent on tidal.
        assert_eq!(
            admit(
                vec![hit(&set, "qobuz_only", "t", tok, 0)],
                &place(qobuz, true)
            ),
            ["qobuz_only"]
        );
        assert!(
            admit(
                vec![hit(&set, "qobuz_only", "t", tok, 0)],
                &place(tidal, true)
            )
            .is_empty()
        );
        // 2. Tidal publishes `token`.
        assert!(
            admit(
                vec![hit(&set, "auth_token_param", "token", tok, 0)],
                &place(tidal, true)
            )
            .is_empty()
        );
        // 3. An address in a response's free text is not a leak; mail ids never.
        let email = |name, msg| hit(&set, "email_value", name, "jane@example.com", msg);
        let mut login = place(qobuz, false);
        login.head = crate::proto::http::parse_request_head(b"POST /api/login HTTP/1.1\r\n\r\n");
        assert!(admit(vec![email("", 0)], &login).is_empty());
        assert!(admit(vec![email("Message-ID", 0)], &place(qobuz, true)).is_empty());
        let card = |name| hit(&set, "payment_card", name, "4111111111111111", 0);
        assert!(admit(vec![card("order_id")], &place(qobuz, true)).is_empty());
        assert!(admit(vec![card("isrc")], &place(qobuz, true)).is_empty());
        assert_eq!(admit(vec![card("cc_number")], &place(qobuz, true)).len(), 1);
        // 6. In a response: the account exchange's fields are leaks…
        assert_eq!(admit(vec![email("email", 0)], &login).len(), 1);
        // …elsewhere only a record of people (a name beside an identity);
        // a short `pw` in a settings document is neither (nor critical).
        let settings = place(qobuz, false);
        assert!(admit(vec![email("email", 0)], &settings).is_empty());
        let name = hit(&set, "person_name_field", "surname", "Gordon", 0);
        let hash = hit(
            &set,
            "password_hash_param",
            "password",
            "e99a18c428cb38d5f260853678922e03",
            0,
        );
        assert_eq!(admit(vec![name, hash], &settings).len(), 2);
        assert!(
            admit(
                vec![hit(&set, "password_param", "pw", "abcd", 0)],
                &settings
            )
            .is_empty()
        );
        let mut out = Vec::new();
        FlowFindings::default().admit(
            &set,
            &services,
            vec![hit(&set, "password_param", "pw", "abcd", 0)],
            &login,
            &mut out,
        );
        assert_eq!(out[0].severity, Severity::Medium);
        // 4. Once per flow; 5. gender only beside other PII of its message.
        let mut flow = FlowFindings::default();
        let mut out = Vec::new();
        let at = place(qobuz, true);
        let gender = hit(&set, "gender_field", "sex", "female", 3);
        flow.admit(
            &set,
            &services,
            vec![gender, email("email", 3)],
            &at,
            &mut out,
        );
        assert_eq!(
            out.len(),
            2,
            "gender joins the e-mail of message 3? {out:?}"
        );
        let mut out = Vec::new();
        flow.admit(
            &set,
            &services,
            vec![
                email("mail", 4),
                hit(&set, "gender_field", "sex", "male", 5),
            ],
            &at,
            &mut out,
        );
        assert!(
            out.is_empty(),
            "the same e-mail again; gender alone in message 5: {out:?}"
        );
    }
}
