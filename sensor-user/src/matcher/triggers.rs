//! The raw-bytes prefilter in front of field decoding.
//!
//! Decoding a message into fields (percent-decoding, JSON, allocation per field)
//! costs far more than scanning its bytes. So every rule names triggers: Hyperscan
//! expressions one of which must occur in the raw bytes of a section (an HTTP
//! head, a body after de-chunking and inflation, a run of raw lines) for the rule
//! to be able to match any field decoded from it. One block database of all
//! triggers is scanned over each section; only a section where one fires is
//! decoded and goes through the rule database. Rules without triggers make every
//! section decode (`rules check` says which).

use hyperscan::{Block, prelude::*};

use super::{
    canary_db::Canaries,
    digits,
    rules::{Rule, RuleError},
};
use crate::proto::fields::{Ctx, FieldBatch, FieldSink};

/// The compiled triggers of a rule set.
pub struct Triggers {
    /// `None` when some rule has no trigger: every section is decoded.
    db: Option<BlockDatabase>,
    /// The shortest digit run some rule triggers on (see matcher::digits).
    digits: Option<usize>,
    /// Triggers that are one plain byte (`@`): found with memchr, which is
    /// several times faster than a one-byte literal in the database.
    bytes: Vec<u8>,
    /// Ids of the rules without triggers.
    pub untriggered: Vec<String>,
    /// Registered canaries: their literals are triggers too.
    canaries: Option<std::sync::Arc<Canaries>>,
    /// With canaries: the triggers and the canaries' anchors in one database
    /// (one scan of each section, not two), ids past the count the anchors'.
    /// Built at load, never cached: it holds parts of the literals.
    combined: Option<(BlockDatabase, usize)>,
}

/// The trigger database's patterns, not yet compiled, with (rule id, expression) each.
pub struct Plan {
    patterns: Vec<Pattern>,
    owners: Vec<(String, String)>,
}

impl Plan {
    /// The expressions, in database order (for the compiled-database cache key).
    pub fn expressions(&self) -> impl Iterator<Item = &str> {
        self.owners.iter().map(|(_, e)| e.as_str())
    }

    /// Compiles the database; only on failure each trigger alone, to name it.
    pub fn compile(self) -> Result<Option<BlockDatabase>, RuleError> {
        if self.patterns.is_empty() {
            return Ok(None);
        }
        match Patterns(self.patterns.clone()).build::<Block>() {
            Ok(db) => Ok(Some(db)),
            Err(err) => {
                for (p, (id, e)) in self.patterns.into_iter().zip(self.owners) {
                    Patterns(vec![p])
                        .build::<Block>()
                        .map_err(|x| RuleError::Pattern {
                            id,
                            message: format!("trigger {e:?}: {x}"),
                        })?;
                }
                Err(RuleError::Database(err.to_string()))
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl Triggers {
    pub fn compile(rules: &[Rule]) -> Result<Self, RuleError> {
        let (mut t, plan) = Self::plan(rules)?;
        t.db = plan.compile()?;
        Ok(t)
    }

    /// Everything but the database, and the plan to compile it.
    pub fn plan(rules: &[Rule]) -> Result<(Self, Plan), RuleError> {
        let mut patterns = Vec::new();
        let mut digits: Option<usize> = None;
        let mut seen = std::collections::HashSet::new();
        let mut bytes = Vec::new();
        let mut owners = Vec::new();
        let mut untriggered = Vec::new();
        for rule in rules {
            let Some(exprs) = rule.trigger_expressions() else {
                untriggered.push(rule.id.clone());
                continue;
            };
            if let Some(n) = rule.trigger_digits {
                if !(8..=32).contains(&n) {
                    return Err(RuleError::Pattern {
                        id: rule.id.clone(),
                        message: format!("trigger_digits = {n}: must be 8 to 32"),
                    });
                }
                let n = usize::from(n);
                digits = Some(digits.map_or(n, |d| d.min(n)));
            } else if exprs.is_empty() {
                return Err(RuleError::Pattern {
                    id: rule.id.clone(),
                    message: "`triggers` is empty: leave it out to decode every section".into(),
                });
            }
            for e in exprs {
                // Rules often share a trigger (three `authorization` rules).
                if !seen.insert(e.clone()) {
                    continue;
                }
                if let [b] = e.as_bytes()
                    && (b.is_ascii_punctuation() || b.is_ascii_alphanumeric())
                    && !br".^$|?*+()[]{}\".contains(b)
                    && bytes.len() < 3
                {
                    bytes.push(*b);
                    continue;
                }
                let mut p =
                    Pattern::with_flags(e.as_str(), CompileFlags::SINGLEMATCH).map_err(|x| {
                        RuleError::Pattern {
                            id: rule.id.clone(),
                            message: format!("trigger {e:?}: {x}"),
                        }
                    })?;
                p.id = Some(patterns.len());
                patterns.push(p);
                owners.push((rule.id.clone(), e));
            }
        }
        Ok((
            Self {
                db: None,
                digits,
                bytes,
                untriggered,
                canaries: None,
                combined: None,
            },
            Plan { patterns, owners },
        ))
    }

    /// Sets the compiled database (from `Plan::compile` or a cache).
    pub fn set_db(&mut self, db: Option<BlockDatabase>) {
        self.db = db;
    }

    pub fn db(&self) -> Option<&BlockDatabase> {
        self.db.as_ref()
    }

    /// Makes the canaries' literals triggers too: one database of `rules`'
    /// triggers and the literals.
    pub fn set_canaries(
        &mut self,
        canaries: Option<std::sync::Arc<Canaries>>,
        rules: &[Rule],
    ) -> Result<(), RuleError> {
        self.combined = None;
        if let Some(c) = &canaries {
            let (_, plan) = Self::plan(rules)?;
            let n = plan.patterns.len();
            let mut all = plan.patterns;
            all.extend(
                c.anchors(n)
                    .map_err(|e| RuleError::Database(e.to_string()))?,
            );
            let db = Patterns(all)
                .build::<Block>()
                .map_err(|e| RuleError::Database(format!("triggers with canaries: {e}")))?;
            self.combined = Some((db, n));
        }
        self.canaries = canaries;
        Ok(())
    }

    pub fn canaries(&self) -> Option<&Canaries> {
        self.canaries.as_deref()
    }

    /// Grows `scratch` to serve this database too.
    pub fn fit_scratch(&self, scratch: &mut Scratch) -> Result<(), RuleError> {
        if let Some(db) = &self.db {
            db.realloc_scratch(scratch)
                .map_err(|e| RuleError::Database(e.to_string()))?;
        }
        if let Some(c) = &self.canaries {
            c.fit_scratch(scratch)
                .map_err(|e| RuleError::Database(e.to_string()))?;
        }
        if let Some((db, _)) = &self.combined {
            db.realloc_scratch(scratch)
                .map_err(|e| RuleError::Database(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether some trigger occurs in `raw` (scanning stops at the first).
    pub fn fires(&self, scratch: &Scratch, raw: &[u8]) -> bool {
        if !self.untriggered.is_empty() {
            return true;
        }
        let byte = match self.bytes[..] {
            [] => false,
            [a] => memchr::memchr(a, raw).is_some(),
            [a, b] => memchr::memchr2(a, b, raw).is_some(),
            [a, b, c, ..] => memchr::memchr3(a, b, c, raw).is_some(),
        };
        if byte || self.digits.is_some_and(|n| digits::has_run(raw, n)) {
            return true;
        }
        if let (Some(c), Some((db, n))) = (&self.canaries, &self.combined) {
            // A trigger decides at once; a canary's anchor only asks for the
            // canaries' own scan, after this one (one scratch, one scan at a
            // time).
            let (mut fired, mut anchor) = (false, false);
            let r = db.scan(raw, scratch, |id, _, _, _| {
                if (id as usize) < *n {
                    fired = true;
                    Matching::Terminate
                } else {
                    anchor = true;
                    Matching::Continue
                }
            });
            return fired || r.is_err() || anchor && c.fires(scratch, raw);
        }
        let Some(db) = &self.db else {
            return false;
        };
        let mut fired = false;
        // A scan error other than the termination we ask for decodes the section:
        // the prefilter may only ever cost time, never a finding.
        let r = db.scan(raw, scratch, |_, _, _, _| {
            fired = true;
            Matching::Terminate
        });
        fired || r.is_err()
    }
}

/// Counts of what the prefilter let through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GateStats {
    /// Raw bytes the triggers were scanned over.
    pub bytes: u64,
    pub sections: u64,
    /// Sections decoded because a trigger fired.
    pub decoded: u64,
}

impl GateStats {
    pub fn add(&mut self, o: GateStats) {
        self.bytes += o.bytes;
        self.sections += o.sections;
        self.decoded += o.decoded;
    }
}

/// A field sink that decodes only the sections a trigger fires on.
pub struct Gate<'a> {
    pub batch: &'a mut FieldBatch,
    triggers: &'a Triggers,
    scratch: &'a Scratch,
    pub stats: GateStats,
}

impl<'a> Gate<'a> {
    pub fn new(batch: &'a mut FieldBatch, triggers: &'a Triggers, scratch: &'a Scratch) -> Self {
        Self {
            batch,
            triggers,
            scratch,
            stats: GateStats::default(),
        }
    }
}

impl FieldSink for Gate<'_> {
    fn wants(&mut self, raw: &[u8]) -> bool {
        self.stats.bytes += raw.len() as u64;
        self.stats.sections += 1;
        let fires = self.triggers.fires(self.scratch, raw);
        self.stats.decoded += u64::from(fires);
        fires
    }

    fn wants_all(&mut self, raw: &[u8], sections: u64) -> bool {
        let fires = self.triggers.fires(self.scratch, raw);
        if !fires {
            // Skipped, all of them; when one fires, each is asked on its own.
            self.stats.bytes += raw.len() as u64;
            self.stats.sections += sections;
        }
        fires
    }

    fn push(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        self.batch.push(ctx, name, value, message);
    }

    fn push_number(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        FieldSink::push_number(self.batch, ctx, name, value, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::rules;

    fn builtin() -> (Triggers, Scratch) {
        let set = crate::matcher::engine::RuleSet::compile(rules::builtin()).unwrap();
        let t = Triggers::compile(&rules::builtin()).unwrap();
        let mut s = set.scratch().unwrap();
        t.fit_scratch(&mut s).unwrap();
        (t, s)
    }

    #[test]
    fn every_builtin_rule_has_triggers() {
        let (t, _) = builtin();
        assert!(t.untriggered.is_empty(), "{:?}", t.untriggered);
    }

    #[test]
    fn names_are_derived_from_anchored_patterns() {
        let r = |p: &str| rules::Rule::bare("r", p);
        assert_eq!(
            r("^(pw|pass)=(?P<v>.+)$").trigger_expressions().unwrap(),
            [r#"(?i)(?:pw|pass)[=:>]|"(?:pw|pass)""#]
        );
        assert!(
            r("^authorization=[Bb]asic (?P<v>.+)$")
                .trigger_expressions()
                .is_some()
        );
        assert!(r("(?P<v>[a-z]+@x)").trigger_expressions().is_none());
        assert!(
            r("^(x-[a-z]*token)=(?P<v>.+)$")
                .trigger_expressions()
                .is_none()
        );
        let t = Triggers::compile(&[r("(?P<v>[a-z]+@x)")]).unwrap();
        assert_eq!(t.untriggered, ["r"]);
        assert!(
            t.fires(&builtin().1, b"anything"),
            "no trigger: always decode"
        );
    }

    #[test]
    fn bad_triggers_name_their_rule() {
        let mut r = rules::builtin().remove(0);
        r.id = "mine".into();
        r.triggers = Some(vec!["(unclosed".into()]);
        let e = Triggers::compile(&[r.clone()]).err().unwrap().to_string();
        assert!(e.starts_with("rule mine: trigger \"(unclosed\""), "{e}");
        r.triggers = Some(vec![]);
        let e = Triggers::compile(&[r.clone()]).err().unwrap().to_string();
        assert!(e.contains("`triggers` is empty"), "{e}");
        r.triggers = None;
        r.trigger_digits = Some(3);
        let e = Triggers::compile(&[r]).err().unwrap().to_string();
        assert!(e.contains("trigger_digits = 3"), "{e}");
    }

    #[test]
    fn fires_on_wire_forms_not_on_lookalikes() {
        let (t, s) = builtin();
        for yes in [
            "GET /?Password=x HTTP/1.1",
            "Authorization: Bearer x",
            "AUTHORIZATION: Basic x",
            r#"{"first_name" : "Jane"}"#,
            "Cookie: a=1; arl=x",
            "a%40b.com",
            r"a\u0040b",
            "PASS ftp@example.com",
            r#"{"email":"titi@titi.fr"}"#,
            "jane.doe+tag@mail.example.co.uk",
            "X-User-Auth-Token: x",
            "eyJhbGciOiJIUzI1NiJ9",
            "card=4111+1111+1111+1111",
            "n=4111%201111%201111%201111",
            "4111111111111111",
        ] {
            assert!(t.fires(&s, yes.as_bytes()), "{yes}");
        }
        for no in [
            "GET /api?track_id=123456&q=passenger HTTP/1.1",
            "Cookie: _ga=GA1.2.123456789.987654321; lang=fr",
            r#"{"title":"pwxsid","id":12345678,"ts":"2026-11-23"}"#,
            "User-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)",
            "Accept-Language: fr-FR,fr;q=0.9",
            "x-request-id: 12",
            "@media screen { a { color: red } }",
            "user@localhost",
            "\x01@\x02",
        ] {
            assert!(!t.fires(&s, no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn binary_segments_seldom_decode() {
        // A binary stream (compressed audio, encrypted data) has an `@` in
        // almost every 1,400-byte segment; a lone `@` must not make the
        // fallback dissector decode them all.
        let (t, s) = builtin();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut fired = 0;
        for _ in 0..400 {
            let seg: Vec<u8> = (0..1400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            fired += usize::from(t.fires(&s, &seg));
        }
        assert!(fired <= 4, "{fired} of 400 random segments decoded");
    }
}
