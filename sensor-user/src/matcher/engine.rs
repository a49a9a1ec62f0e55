//! The rule set compiled into one Hyperscan streaming database, and the
//! per-direction scanning state.
//!
//! Hyperscan scans the serialized field stream of a flow direction and reports
//! (rule, end offset); the end offset names the field the match ended in; the
//! rule's regex then extracts the value from that one field and its validator
//! confirms it.

use std::{collections::HashSet, fmt, path::Path, ptr};

use foreign_types::ForeignType as _;
use hyperscan::{Streaming, prelude::*};
use regex::Regex;

pub use super::rules::RuleError;
use super::{
    canaries::Canary,
    canary_db::{Canaries, CanaryMatch},
    db_cache,
    rules::{Kind, Rule, Severity, Validator},
    triggers::Triggers,
    validators::{self, Date},
};
use crate::proto::fields::{Ctx, FieldBatch};

struct Compiled {
    rule: Rule,
    re: Regex,
}

/// A compiled rule set.
pub struct RuleSet {
    rules: Vec<Compiled>,
    db: StreamingDatabase,
    /// Bytes of one open stream's state (asked once: flows are charged it on
    /// every record).
    stream_bytes: usize,
    triggers: Triggers,
    /// Short hash of the rules (`leakwatch_rules_info{version}`).
    pub version: String,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Compiles `rules`; every error names its rule and says what Hyperscan or the
    /// regex engine found wrong.
    pub fn compile(rules: Vec<Rule>) -> Result<Self, RuleError> {
        Self::build(rules, None)
    }

    /// As `compile`, reusing the Hyperscan databases an earlier run serialized
    /// into `dir` for the same expressions and Hyperscan build, and saving them
    /// there otherwise (compiling is most of start-up). A cache file that does
    /// not load (another Hyperscan, other CPU features, damage) is recompiled.
    pub fn compile_cached(rules: Vec<Rule>, dir: &Path) -> Result<Self, RuleError> {
        Self::build(rules, Some(dir))
    }

    fn build(rules: Vec<Rule>, cache: Option<&Path>) -> Result<Self, RuleError> {
        let mut seen = HashSet::new();
        let mut compiled = Vec::with_capacity(rules.len());
        let mut patterns = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            if !crate::shared::ids::valid_service_id(&rule.id) {
                return Err(RuleError::BadId(rule.id));
            }
            if !seen.insert(rule.id.clone()) {
                return Err(RuleError::DuplicateId(rule.id));
            }
            let re = Regex::new(&rule.pattern).map_err(|e| RuleError::Pattern {
                id: rule.id.clone(),
                message: e.to_string(),
            })?;
            let mut p = Pattern::with_flags(rule.hyperscan_expression(), CompileFlags::empty())
                .map_err(|e| RuleError::Pattern {
                    id: rule.id.clone(),
                    message: e.to_string(),
                })?;
            p.id = Some(i);
            patterns.push(p);
            compiled.push(Compiled { rule, re });
        }
        let rules: Vec<Rule> = compiled.iter().map(|c| c.rule.clone()).collect();
        let (mut triggers, plan) = Triggers::plan(&rules)?;
        let key = cache_key(&rules, &plan);
        let cached = cache.and_then(|dir| db_cache::load(&dir.join(format!("rules-{key}.hsdb"))));
        let db = match cached {
            Some((db, tdb)) if tdb.is_some() != plan.is_empty() => {
                triggers.set_db(tdb);
                db
            }
            _ => {
                // One compile for the set; only when it fails is each rule
                // compiled alone, so the error names its rule.
                let db = match Patterns(patterns.clone()).build::<Streaming>() {
                    Ok(db) => db,
                    Err(e) => {
                        for (p, c) in patterns.into_iter().zip(&compiled) {
                            Patterns(vec![p]).build::<Streaming>().map_err(|e| {
                                RuleError::Pattern {
                                    id: c.rule.id.clone(),
                                    message: e.to_string(),
                                }
                            })?;
                        }
                        return Err(RuleError::Database(e.to_string()));
                    }
                };
                triggers.set_db(plan.compile()?);
                if let Some(dir) = cache {
                    let path = dir.join(format!("rules-{key}.hsdb"));
                    if let Err(e) = db_cache::save(&path, &db, triggers.db()) {
                        log::debug!("caching the rule databases in {}: {e}", path.display());
                    }
                }
                db
            }
        };
        let version = rules_version(compiled.iter().map(|c| &c.rule));
        let stream_bytes = db.stream_size().unwrap_or(0);
        Ok(Self {
            rules: compiled,
            db,
            stream_bytes,
            triggers,
            version,
        })
    }

    /// Adds registered canaries: their own database (never cached: the
    /// literals must not reach the disk), triggers and findings.
    pub fn with_canaries(mut self, canaries: Vec<Canary>) -> Result<Self, RuleError> {
        let c = Canaries::compile(canaries).map_err(|e| RuleError::Database(e.to_string()))?;
        let rules: Vec<Rule> = self.rules().cloned().collect();
        self.triggers
            .set_canaries(c.map(std::sync::Arc::new), &rules)?;
        Ok(self)
    }

    pub fn canaries(&self) -> Option<&Canaries> {
        self.triggers.canaries()
    }

    /// A canary finding's severity: the highest of the rules for its kind.
    pub fn severity_of(&self, kind: Kind) -> Severity {
        self.rules()
            .filter(|r| r.kind == kind)
            .map(|r| r.severity)
            .max()
            .unwrap_or(Severity::High)
    }

    /// Bytes of one open stream's state.
    pub fn stream_bytes(&self) -> usize {
        self.stream_bytes
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i].rule
    }

    /// The raw-bytes prefilter of this rule set.
    pub fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    /// Scratch space for one thread (both the rule and the trigger database).
    pub fn scratch(&self) -> Result<Scratch, RuleError> {
        let mut s = self
            .db
            .alloc_scratch()
            .map_err(|e| RuleError::Database(e.to_string()))?;
        self.triggers.fit_scratch(&mut s)?;
        Ok(s)
    }

    /// Scanning state for one flow direction; its Hyperscan stream opens with the
    /// first fields, so a direction the prefilter never lets through costs none.
    pub fn open(&self) -> DirScanner {
        DirScanner {
            stream: None,
            offset: 0,
        }
    }

    /// Confirms rule `i` on one field: the values it leaks.
    fn confirm(
        &self,
        i: usize,
        ctx: Ctx,
        name: &str,
        value: &str,
        today: Date,
        out: &mut Vec<(Kind, String)>,
    ) {
        let c = &self.rules[i];
        if !c.rule.context.admits(ctx) {
            return;
        }
        let line = format!("{name}={value}");
        for cap in c.re.captures_iter(&line) {
            let v = cap
                .name("v")
                .or_else(|| cap.get(0))
                .map_or("", |m| m.as_str());
            if let Some(Validator::BasicAuth) = c.rule.validator {
                if let Some((user, pass)) = validators::basic_credentials(v) {
                    if !pass.is_empty() {
                        out.push((Kind::Password, pass));
                    }
                    if !user.is_empty() {
                        out.push((Kind::Username, user));
                    }
                }
                continue;
            }
            // `Login=Login`: a form's submit button, not an account name.
            let echo = matches!(c.rule.validator, Some(Validator::Nonempty))
                && v.trim().eq_ignore_ascii_case(name);
            if !echo && validate(c.rule.validator, v, today) {
                out.push((c.rule.kind, v.to_owned()));
            }
        }
    }
}

const PLACEHOLDERS: &[&str] = &[
    "null",
    "undefined",
    "none",
    "nil",
    "-",
    "true",
    "false",
    "***",
    "******",
    "********",
];

fn validate(v: Option<Validator>, s: &str, today: Date) -> bool {
    let t = s.trim();
    // One character repeated (`0000…`, `********`, `xxxx`) is a placeholder.
    let repeated = t.len() >= 4 && t.bytes().all(|b| b == t.as_bytes()[0]);
    let nonempty = !t.is_empty()
        && !repeated
        && !PLACEHOLDERS.contains(&t.to_ascii_lowercase().as_str())
        && !t.starts_with("{{")
        && !t.starts_with("${");
    match v {
        None | Some(Validator::Nonempty) => nonempty,
        Some(Validator::PlainPassword) => nonempty && validators::hex_digest(t).is_none(),
        Some(Validator::HexDigest) => validators::hex_digest(t).is_some(),
        Some(Validator::Jwt) => validators::jwt(t).is_some(),
        Some(Validator::Bearer) => {
            validators::jwt(t).is_some() || validators::token_like(t, 16, 3.0)
        }
        Some(Validator::Entropy) => validators::token_like(t, 16, 3.0),
        Some(Validator::Email) => validators::email(t),
        Some(Validator::Birthdate) => validators::birthdate(t, today).is_some(),
        Some(Validator::Gender) => validators::gender(t),
        Some(Validator::PersonName) => {
            let letters = t.chars().filter(|c| c.is_alphabetic()).count();
            (2..=64).contains(&t.chars().count())
                && letters >= 2
                && t.chars()
                    .all(|c| c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.'))
                && nonempty
        }
        Some(Validator::DeviceUuid) => validators::device_uuid(t),
        Some(Validator::AndroidId) => validators::android_id(t),
        Some(Validator::Imei) => validators::imei(t),
        Some(Validator::PaymentCard) => validators::payment_card(t),
        Some(Validator::BasicAuth) => validators::basic_credentials(t).is_some(),
    }
}

/// What the databases are compiled from, and by which Hyperscan: the cache key.
fn cache_key(rules: &[Rule], plan: &super::triggers::Plan) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b.iter().chain(b"\0") {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(hyperscan::version_str().to_bytes());
    for r in rules {
        eat(r.hyperscan_expression().as_bytes());
    }
    for e in plan.expressions() {
        eat(e.as_bytes());
    }
    format!("{h:016x}")
}

/// A confirmed value in one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub kind: Kind,
    pub value: String,
    pub ctx: Ctx,
    /// The field's name (e.g. the query parameter), for evidence.
    pub name: String,
    /// HTTP message index within the direction.
    pub message: u64,
    /// A registered canary's value (`rule` is then [`CANARY`]).
    pub canary: Option<CanaryMatch>,
}

/// `Hit::rule` of a canary's hit: no pattern rule.
pub const CANARY: usize = usize::MAX - 1;

/// Hyperscan stream state of one flow direction. Closes its stream when dropped
/// (the `hyperscan` crate leaks a dropped stream).
pub struct DirScanner {
    stream: Option<Stream>,
    offset: u64,
}

impl DirScanner {
    /// Scans a batch of fields; returns confirmed hits.
    pub fn scan(
        &mut self,
        set: &RuleSet,
        scratch: &Scratch,
        batch: &FieldBatch,
        today: Date,
    ) -> Result<Vec<Hit>, RuleError> {
        if batch.fields.is_empty() {
            return Ok(Vec::new());
        }
        if self.stream.is_none() {
            let s = set
                .db
                .open_stream()
                .map_err(|e| RuleError::Database(e.to_string()))?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_ref() else {
            return Ok(Vec::new());
        };
        let mut buf = Vec::new();
        let base = self.offset;
        let ends = batch.serialize(base, &mut buf);
        let mut raw: Vec<(usize, u64)> = Vec::new();
        stream
            .scan(&buf[..], scratch, |id, _from, to, _flags| {
                raw.push((id as usize, to));
                Matching::Continue
            })
            .map_err(|e| RuleError::Database(e.to_string()))?;
        self.offset += buf.len() as u64;
        let mut seen = HashSet::new();
        let mut hits = Vec::new();
        for (rule, to) in raw {
            // The field whose line holds the match's end.
            let field = ends.partition_point(|&e| e < to);
            if field >= batch.fields.len() || !seen.insert((rule, field)) {
                continue;
            }
            let f = &batch.fields[field];
            let mut values = Vec::new();
            // Apps send card numbers as strings (a 16-digit JSON number is past
            // what JSON numbers carry exactly): numbers are stats and ids.
            if f.number && set.rules[rule].rule.validator == Some(Validator::PaymentCard) {
                continue;
            }
            set.confirm(rule, f.ctx, &f.name, &f.value, today, &mut values);
            for (kind, value) in values {
                hits.push(Hit {
                    rule,
                    kind,
                    value,
                    ctx: f.ctx,
                    name: f.name.clone(),
                    message: f.message,
                    canary: None,
                });
            }
        }
        if let Some(c) = set.canaries() {
            let found = c
                .scan(scratch, &buf, &ends, base)
                .map_err(|e| RuleError::Database(e.to_string()))?;
            // A pattern rule's hit on the canary's value is the canary's
            // finding: one finding, confirmed.
            hits.retain(|h| {
                !found.iter().any(|x| {
                    batch
                        .fields
                        .get(x.field)
                        .is_some_and(|f| f.name == h.name && f.message == h.message)
                        && c.covers(x, &h.value)
                })
            });
            for x in found {
                let f = &batch.fields[x.field];
                hits.push(Hit {
                    rule: CANARY,
                    kind: x.kind,
                    value: x.value,
                    ctx: f.ctx,
                    name: f.name.clone(),
                    message: f.message,
                    canary: Some(x.at),
                });
            }
        }
        Ok(hits)
    }

    /// Whether the Hyperscan stream is open (it holds the database's stream
    /// state).
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Bytes scanned so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for DirScanner {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            // SAFETY: a live stream we own; NULL scratch is allowed when no matches
            // are to be reported (hs_close_stream). The crate's drop frees nothing.
            unsafe {
                hyperscan_sys::hs_close_stream(s.as_ptr(), ptr::null_mut(), None, ptr::null_mut())
            };
        }
    }
}

/// The rule set's version: a hash of every field of every rule, so any change
/// that can change a finding changes it (`leakwatch_rules_info{version}`).
pub fn rules_version<'a>(rules: impl Iterator<Item = &'a Rule>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        // A separator after each field: ("ab", "c") and ("a", "bc") differ.
        for b in s.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for r in rules {
        eat(&r.id);
        eat(r.kind.name());
        eat(&r.pattern);
        eat(r.severity.name());
        eat(&r.services.join(","));
        eat(r
            .validator
            .map_or("", crate::matcher::rules::Validator::name));
        eat(r.context.codes());
        eat(&r
            .triggers
            .as_ref()
            .map_or_else(String::new, |t| t.join("\u{1}")));
        eat(&r.trigger_digits.map_or_else(String::new, |d| d.to_string()));
    }
    format!("{:012x}", h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::rules;

    #[test]
    fn the_version_changes_with_any_field_of_any_rule() {
        let base = rules::builtin();
        let v = |rs: &[Rule]| rules_version(rs.iter());
        let v0 = v(&base);
        assert_eq!(v0, v(&rules::builtin()), "stable");
        // Each change makes the field differ from what it was.
        let changes: [fn(&mut Rule); 7] = [
            |r| {
                r.severity = if r.severity == rules::Severity::Low {
                    rules::Severity::High
                } else {
                    rules::Severity::Low
                };
            },
            |r| {
                r.kind = if r.kind == Kind::Email {
                    Kind::Password
                } else {
                    Kind::Email
                }
            },
            |r| r.services.push("zz_other".into()),
            |r| {
                r.validator = match r.validator {
                    Some(Validator::Nonempty) => None,
                    _ => Some(Validator::Nonempty),
                };
            },
            |r| {
                r.context = if r.context == rules::Context::Cookie {
                    rules::Context::Body
                } else {
                    rules::Context::Cookie
                };
            },
            |r| r.triggers.get_or_insert_with(Vec::new).push("zz=".into()),
            |r| r.trigger_digits = Some(r.trigger_digits.map_or(12, |d| d + 1)),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut rs = base.clone();
            change(&mut rs[0]);
            assert_ne!(v(&rs), v0, "change {i} left the version as it was");
        }
    }

    fn today() -> Date {
        Date::new(2026, 11, 23).unwrap()
    }

    #[test]
    fn builtin_rules_compile() {
        let set = RuleSet::compile(rules::builtin()).unwrap();
        assert!(set.rules().count() >= 15);
        let kinds: HashSet<Kind> = set.rules().map(|r| r.kind).collect();
        for k in Kind::ALL {
            assert!(kinds.contains(&k), "no rule for {}", k.name());
        }
    }

    #[test]
    fn errors_name_the_rule() {
        let bad = Rule::bare("broken", "(unclosed");
        let e = RuleSet::compile(vec![bad.clone()]).unwrap_err();
        assert!(
            matches!(&e, RuleError::Pattern { id, .. } if id == "broken"),
            "{e}"
        );
        // Valid for the regex crate, not for Hyperscan (a backreference).
        let hs_only = Rule {
            id: "backref".into(),
            pattern: r"(a)\1".into(),
            ..bad.clone()
        };
        let e = RuleSet::compile(vec![hs_only]).unwrap_err().to_string();
        assert!(e.starts_with("rule backref:"), "{e}");
        let dup = Rule {
            id: "same".into(),
            pattern: "x".into(),
            ..bad
        };
        assert_eq!(
            RuleSet::compile(vec![dup.clone(), dup]).unwrap_err(),
            RuleError::DuplicateId("same".into())
        );
    }

    #[test]
    fn compiled_databases_are_cached_and_damage_is_recompiled() {
        let dir = std::env::temp_dir().join(format!("lw-hsdb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hits = |set: &RuleSet| {
            let scratch = set.scratch().unwrap();
            let mut b = FieldBatch::default();
            b.push(Ctx::Query, "email", "jane@example.com", 0);
            assert!(set.triggers().fires(&scratch, b"email=jane%40example.com"));
            set.open().scan(set, &scratch, &b, today()).unwrap().len()
        };
        let first = RuleSet::compile_cached(rules::builtin(), &dir).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one cache file");
        let path = files[0].path();
        assert!(path.to_string_lossy().ends_with(".hsdb"));
        let loaded = RuleSet::compile_cached(rules::builtin(), &dir).unwrap();
        assert_eq!((hits(&first), hits(&loaded)), (1, 1));
        // Damaged: recompiled, and the file replaced.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let again = RuleSet::compile_cached(rules::builtin(), &dir).unwrap();
        assert_eq!(hits(&again), 1);
        assert_eq!(std::fs::read(&path).unwrap().len(), full.len());
        // Other rules, another key.
        let mut fewer = rules::builtin();
        fewer.pop();
        RuleSet::compile_cached(fewer, &dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn streaming_across_batches_and_confirmation() {
        let set = RuleSet::compile(rules::builtin()).unwrap();
        let scratch = set.scratch().unwrap();
        let mut d = set.open();
        let mut b = FieldBatch::default();
        b.push(Ctx::Query, "email", "jane@example.com", 0);
        b.push(
            Ctx::Query,
            "password",
            "5f4dcc3b5aa765d61d8327deb882cf99",
            0,
        );
        b.push(
            Ctx::Query,
            "request_sig",
            "0123456789abcdef0123456789abcdef",
            0,
        );
        let hits = d.scan(&set, &scratch, &b, today()).unwrap();
        let kinds: Vec<(&str, &str)> = hits
            .iter()
            .map(|h| (h.kind.name(), h.value.as_str()))
            .collect();
        assert!(kinds.contains(&("email", "jane@example.com")), "{kinds:?}");
        assert!(kinds.contains(&("password_hash", "5f4dcc3b5aa765d61d8327deb882cf99")));
        assert!(
            !kinds.iter().any(|(k, _)| *k == "password"),
            "a digest is not a plain password"
        );
        assert!(
            !hits.iter().any(|h| h.name == "request_sig"),
            "a request signature is not a secret"
        );
        // The stream goes on in a second batch.
        let mut b2 = FieldBatch::default();
        b2.push(Ctx::Header, "Authorization", "Basic dGVzdDpwYTpzcw==", 1);
        let hits = d.scan(&set, &scratch, &b2, today()).unwrap();
        let kinds: Vec<(&str, &str)> = hits
            .iter()
            .map(|h| (h.kind.name(), h.value.as_str()))
            .collect();
        assert_eq!(kinds, [("password", "pa:ss"), ("username", "test")]);
    }
}
