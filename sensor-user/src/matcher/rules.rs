//! Rules are data: a built-in file (data/rules.toml) plus the admin's rules in
//! the TOML config, each compiled for Hyperscan (prefilter) and for the `regex`
//! crate (precise extraction on the one field a candidate ended in).
//!
//! A rule's `pattern` is matched against one decoded field written `name=value`
//! (names lowercased; see proto::fields). `^` and `$` anchor to the field's start
//! and end. The value reported is the named group `v` (else the whole match).

use serde::Deserialize;

use crate::proto::fields::Ctx;

/// Why a rule set did not compile; every message names its rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("rule {id}: {message}")]
    Pattern { id: String, message: String },
    #[error("rule id {0:?} is used twice")]
    DuplicateId(String),
    #[error("rule {0:?}: ids are lowercase letters, digits and '_'")]
    BadId(String),
    #[error("building the rule database: {0}")]
    Database(String),
}

const BUILTIN: &str = include_str!("../../data/rules.toml");

/// Leak kinds (event and metric `kind` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Username,
    Password,
    PasswordHash,
    PersonName,
    Email,
    Birthdate,
    Gender,
    AuthToken,
    DeviceInfo,
    PaymentCard,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Username,
        Kind::Password,
        Kind::PasswordHash,
        Kind::PersonName,
        Kind::Email,
        Kind::Birthdate,
        Kind::Gender,
        Kind::AuthToken,
        Kind::DeviceInfo,
        Kind::PaymentCard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::Password => "password",
            Self::PasswordHash => "password_hash",
            Self::PersonName => "person_name",
            Self::Email => "email",
            Self::Birthdate => "birthdate",
            Self::Gender => "gender",
            Self::AuthToken => "auth_token",
            Self::DeviceInfo => "device_info",
            Self::PaymentCard => "payment_card",
        }
    }

    /// Kinds that are personal data (gender is reported only next to one of these).
    pub fn is_pii(self) -> bool {
        matches!(
            self,
            Self::Username
                | Self::PersonName
                | Self::Email
                | Self::Birthdate
                | Self::DeviceInfo
                | Self::PaymentCard
        )
    }

    /// Secrets whose reuse from another client is a replay.
    pub fn is_replayable(self) -> bool {
        matches!(self, Self::AuthToken | Self::PasswordHash)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Where a rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    Query,
    Header,
    Cookie,
    Body,
    /// Every field, and raw lines of non-HTTP payloads.
    #[default]
    Any,
}

impl Context {
    /// The field context codes this rule applies to.
    pub fn codes(self) -> &'static str {
        match self {
            Self::Query => "q",
            Self::Header => "h",
            Self::Cookie => "c",
            Self::Body => "b",
            Self::Any => "qhcbr",
        }
    }

    pub fn admits(self, ctx: Ctx) -> bool {
        self.codes().as_bytes().contains(&ctx.code())
    }
}

/// How a candidate is confirmed (see matcher::validators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    /// Non-empty (after trimming), not a placeholder.
    Nonempty,
    /// A password that is not itself a hex digest (those are `password_hash`).
    PlainPassword,
    HexDigest,
    Jwt,
    /// A JWT, or a random-looking token.
    Bearer,
    /// Long and random-looking (entropy ≥ 3 bits/char, ≥ 16 chars).
    Entropy,
    Email,
    Birthdate,
    Gender,
    PersonName,
    DeviceUuid,
    AndroidId,
    Imei,
    PaymentCard,
    /// `Authorization: Basic`: reports the password, and the username as a second finding.
    BasicAuth,
}

impl Validator {
    /// The name rules files use (`hex_digest`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Nonempty => "nonempty",
            Self::PlainPassword => "plain_password",
            Self::HexDigest => "hex_digest",
            Self::Jwt => "jwt",
            Self::Bearer => "bearer",
            Self::Entropy => "entropy",
            Self::Email => "email",
            Self::Birthdate => "birthdate",
            Self::Gender => "gender",
            Self::PersonName => "person_name",
            Self::DeviceUuid => "device_uuid",
            Self::AndroidId => "android_id",
            Self::Imei => "imei",
            Self::PaymentCard => "payment_card",
            Self::BasicAuth => "basic_auth",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub kind: Kind,
    pub pattern: String,
    pub severity: Severity,
    /// Only flows of these services (empty: all).
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub validator: Option<Validator>,
    #[serde(default)]
    pub context: Context,
    /// Hyperscan expressions, one of which must match the raw wire bytes of a
    /// message section (head, decoded body, raw lines) for the rule to possibly
    /// match a field of it (see matcher::triggers). Derived for `^(name|…)=`
    /// patterns; without them the rule decodes every section (slow, but sure).
    #[serde(default)]
    pub triggers: Option<Vec<String>>,
    /// A built-in trigger (8 to 32): fires where the wire bytes hold a run of at
    /// least this many digits, in one piece or in groups of four or more with
    /// single ` `, `+`, `-` or `%20` between them (see matcher::digits).
    #[serde(default)]
    pub trigger_digits: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<Rule>,
}

/// The built-in rules.
#[expect(
    clippy::expect_used,
    reason = "embedded data, parsed by a unit test of this module"
)]
pub fn builtin() -> Vec<Rule> {
    let f: RuleFile = toml::from_str(BUILTIN).expect("data/rules.toml is valid (tested)");
    f.rules
}

impl Rule {
    /// A low-severity `email` rule with just an id and a pattern (tests).
    #[cfg(test)]
    pub fn bare(id: &str, pattern: &str) -> Self {
        Self {
            id: id.into(),
            kind: Kind::Email,
            pattern: pattern.into(),
            severity: Severity::Low,
            services: vec![],
            validator: None,
            context: Context::Any,
            triggers: None,
            trigger_digits: None,
        }
    }

    /// The raw-bytes trigger expressions: the rule's own, else derived from a
    /// `^(name|…)=` pattern; `None` when the rule has to see every section.
    pub fn trigger_expressions(&self) -> Option<Vec<String>> {
        if let Some(t) = &self.triggers {
            return Some(t.clone());
        }
        if self.trigger_digits.is_some() {
            return Some(Vec::new());
        }
        let names = field_names(&self.pattern)?;
        // A field name on the wire, in any case: a query/form/cookie key (`name=`),
        // a header (`Name:`; RFC 9112 forbids space before the colon), an XML
        // element (`<name>`), a JSON key or multipart part name (`"name"`).
        // Literals with no assertions keep Hyperscan fast.
        let names = names.join("|");
        Some(vec![format!("(?i)(?:{names})[=:>]|\"(?:{names})\"")])
    }
    /// The Hyperscan expression. Anchored patterns (`^…`) start right after their
    /// field's `\x1e<ctx>\x1f` prefix (a literal that makes them cheap and applies
    /// the context). Unanchored ones are matched as they are: a leading `[^\n]*`
    /// would cost Hyperscan an NFA walk at every field, and confirmation checks the
    /// context of the field a match ends in anyway.
    pub fn hyperscan_expression(&self) -> String {
        let mut p = self.pattern.replace("(?P<v>", "(").replace("(?<v>", "(");
        if p.ends_with('$') && !p.ends_with("\\$") {
            p.pop();
            p.push_str("\\n");
        }
        match p.strip_prefix('^') {
            Some(rest) => format!("\\x1e[{}]\\x1f(?:{rest})", self.context.codes()),
            None => p,
        }
    }
}

/// The literal field names of a `^name=` or `^(a|b|…)=` pattern (ASCII names
/// only: those are what lowercasing leaves alone on the wire, modulo case).
fn field_names(pattern: &str) -> Option<Vec<&str>> {
    let rest = pattern.strip_prefix('^')?;
    let (names, _) =
        if let Some(group) = rest.strip_prefix("(?:").or_else(|| rest.strip_prefix('(')) {
            group.split_once(")=")?
        } else {
            rest.split_once('=')?
        };
    let names: Vec<&str> = names.split('|').collect();
    let literal = |n: &&str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    names.iter().all(literal).then_some(names)
}
