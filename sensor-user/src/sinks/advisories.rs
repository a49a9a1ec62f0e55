//! Advisories: app versions known to leak, filled in by the admin
//! (`advisories_file`, `--advisories`). A client seen running an affected
//! version raises a `vulnerable_app` event, once per client, version and
//! advisory.
//!
//! ```toml
//! [[advisories]]
//! id = "example-2016-1"
//! service = "qobuz"
//! app = "Qobuz"
//! platform = "iOS"               # optional: any platform
//! versions = "<4.1.0"            # dotted numeric versions; missing parts are 0
//! reference = "https://…"
//! advice = "upgrade the app"
//! ```
//!
//! A range is one or more comparisons (`<`, `<=`, `>`, `>=`, `=`, or a bare
//! version for `=`) joined by `,` (all must hold); `||` separates
//! alternatives: `">=4.0, <4.1.2 || =5.0"`.

use std::{cmp::Ordering, path::Path};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    #[error("advisories file {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("advisories file {path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("advisories file {path}: advisory {id:?}: {message}")]
    Invalid {
        path: String,
        id: String,
        message: String,
    },
}

/// A dotted numeric version, missing parts 0 (`6.1` = `6.1.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(Vec<u64>);

impl Version {
    /// The leading dotted numbers of `s` (`6.1.2-beta` → 6.1.2); none: `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = Vec::new();
        for p in s.trim().split('.') {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            if digits.len() != p.len() {
                break;
            }
        }
        (!parts.is_empty()).then_some(Self(parts))
    }

    fn cmp_to(&self, o: &Self) -> Ordering {
        let n = self.0.len().max(o.0.len());
        (0..n)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = o.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|c| c.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

/// A version range: alternatives of all-must-hold comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range(Vec<Vec<(Op, Version)>>);

impl Range {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut alts = Vec::new();
        for alt in s.split("||") {
            let mut all = Vec::new();
            for c in alt.split(',') {
                let c = c.trim();
                let (op, rest) = [
                    ("<=", Op::Le),
                    (">=", Op::Ge),
                    ("<", Op::Lt),
                    (">", Op::Gt),
                    ("=", Op::Eq),
                ]
                .iter()
                .find_map(|(p, op)| c.strip_prefix(p).map(|r| (*op, r)))
                .unwrap_or((Op::Eq, c));
                let rest = rest.trim();
                let ok = !rest.is_empty()
                    && rest
                        .split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                let v = Version::parse(rest).filter(|_| ok).ok_or_else(|| {
                    format!(
                        "versions {s:?}: {c:?} is not a comparison with a dotted numeric version (e.g. \"<4.1.0\")"
                    )
                })?;
                all.push((op, v));
            }
            alts.push(all);
        }
        Ok(Self(alts))
    }

    pub fn contains(&self, v: &Version) -> bool {
        self.0.iter().any(|all| {
            all.iter().all(|(op, b)| {
                let c = v.cmp_to(b);
                match op {
                    Op::Lt => c.is_lt(),
                    Op::Le => c.is_le(),
                    Op::Gt => c.is_gt(),
                    Op::Ge => c.is_ge(),
                    Op::Eq => c.is_eq(),
                }
            })
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    service: String,
    app: String,
    #[serde(default)]
    platform: Option<String>,
    versions: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    advice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    advisories: Vec<Entry>,
}

/// One advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    pub service: String,
    pub app: String,
    pub platform: Option<String>,
    pub range: Range,
    pub reference: Option<String>,
    pub advice: Option<String>,
}

impl Advisory {
    /// Whether `app`/`platform`/`version` of `service` is affected.
    pub fn affects(&self, service: &str, app: &str, platform: Option<&str>, version: &str) -> bool {
        self.service == service
            && self.app.eq_ignore_ascii_case(app)
            && self
                .platform
                .as_deref()
                .is_none_or(|p| platform.is_some_and(|q| p.eq_ignore_ascii_case(q)))
            && Version::parse(version).is_some_and(|v| self.range.contains(&v))
    }
}

/// The advisories in force.
#[derive(Debug, Clone, Default)]
pub struct Advisories(pub Vec<Advisory>);

impl Advisories {
    /// Reads `path`; `known_service` says whether a service id exists.
    pub fn load(path: &Path, known_service: impl Fn(&str) -> bool) -> Result<Self, AdvisoryError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| AdvisoryError::Io {
            path: p.clone(),
            err,
        })?;
        Self::parse(&p, &text, known_service)
    }

    pub fn parse(
        path: &str,
        text: &str,
        known_service: impl Fn(&str) -> bool,
    ) -> Result<Self, AdvisoryError> {
        let doc: FileDoc = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            AdvisoryError::Parse {
                path: path.to_owned(),
                line: text[..at].matches('\n').count() + 1,
                column: at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1,
                message: e.message().lines().next().unwrap_or("").to_owned(),
            }
        })?;
        let mut out: Vec<Advisory> = Vec::new();
        for e in doc.advisories {
            let invalid = |message: String| AdvisoryError::Invalid {
                path: path.to_owned(),
                id: e.id.clone(),
                message,
            };
            if e.id.is_empty() || e.id.len() > 64 || e.id.contains(char::is_whitespace) {
                return Err(invalid(
                    "id must be 1 to 64 characters without spaces".into(),
                ));
            }
            if out.iter().any(|a| a.id == e.id) {
                return Err(invalid("id used twice".into()));
            }
            if !known_service(&e.service) {
                return Err(invalid(format!(
                    "service {:?} is not in the catalog (`leakwatch catalog list`)",
                    e.service
                )));
            }
            if e.app.trim().is_empty() {
                return Err(invalid("app is empty".into()));
            }
            let range = Range::parse(&e.versions).map_err(invalid)?;
            out.push(Advisory {
                id: e.id,
                service: e.service,
                app: e.app,
                platform: e.platform,
                range,
                reference: e.reference,
                advice: e.advice,
            });
        }
        Ok(Self(out))
    }

    /// The advisories that affect this app version.
    pub fn affecting<'a>(
        &'a self,
        service: &'a str,
        app: &'a str,
        platform: Option<&'a str>,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Advisory> + 'a {
        self.0
            .iter()
            .filter(move |a| a.affects(service, app, platform, version))
    }

    /// Whether some advisory names this version (its label may then be shown).
    pub fn names(&self, service: &str, app: &str, platform: Option<&str>, version: &str) -> bool {
        self.affecting(service, app, platform, version)
            .next()
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_over_dotted_versions_with_missing_parts_zero() {
        let r = |s: &str| Range::parse(s).unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(r("<4.1.0").contains(&v("4.0.9")));
        assert!(!r("<4.1.0").contains(&v("4.1")), "4.1 = 4.1.0");
        assert!(r("=6.1").contains(&v("6.1.0")));
        assert!(r("6.1").contains(&v("6.1.0.0")));
        assert!(r(">=4.0, <4.1.2").contains(&v("4.1.1-beta")));
        assert!(!r(">=4.0, <4.1.2").contains(&v("3.9")));
        assert!(r("<2 || >=5.0, <=5.2").contains(&v("5.2")));
        assert!(!r("<2 || >=5.0, <=5.2").contains(&v("5.3")));
        assert!(r(">4.1").contains(&v("4.10")), "numeric, not text order");
        for bad in ["", "<", "<4.x", "~4.1", "<=4..1", "4.1-beta"] {
            assert!(Range::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Version::parse("beta"), None);
    }

    #[test]
    fn a_file_is_checked_and_matched_by_service_app_platform_and_version() {
        let doc = "[[advisories]]\nid = \"qobuz-ios-1\"\nservice = \"qobuz\"\napp = \"Qobuz\"\nplatform = \"iOS\"\nversions = \"<4.1.0\"\nreference = \"https://example.org/a\"\nadvice = \"upgrade the app\"\n";
        let known = |s: &str| s == "qobuz";
        let a = Advisories::parse("a.toml", doc, known).unwrap();
        assert!(a.names("qobuz", "qobuz", Some("iOS"), "4.0.3"));
        assert!(!a.names("qobuz", "Qobuz", Some("Android"), "4.0.3"));
        assert!(!a.names("qobuz", "Qobuz", Some("iOS"), "4.1"));
        assert!(!a.names("qobuz", "Qobuz", Some("iOS"), "unknown"));
        assert!(!a.names("deezer", "Qobuz", Some("iOS"), "4.0"));
        let bad = |d: &str| {
            Advisories::parse("a.toml", d, known)
                .unwrap_err()
                .to_string()
        };
        let e = bad(&doc.replace("<4.1.0", "<4.x"));
        assert!(
            e.starts_with("advisories file a.toml: advisory \"qobuz-ios-1\": versions"),
            "{e}"
        );
        let e = bad(&doc.replace("service = \"qobuz\"", "service = \"nope\""));
        assert!(e.contains("\"nope\" is not in the catalog"), "{e}");
        let e = bad(&doc.replace("advice", "advise"));
        assert!(
            e.starts_with("advisories file a.toml:8:") && e.contains("advise"),
            "{e}"
        );
        let e = bad(&format!("{doc}\n{doc}"));
        assert!(e.contains("used twice"), "{e}");
        assert!(Advisories::parse("a.toml", "", known).unwrap().0.is_empty());
    }
}
