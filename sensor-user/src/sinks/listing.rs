//! `leakwatch rules list` and `leakwatch catalog list`: the effective rules and
//! catalog as text tables.

use std::io::{self, Write};

use crate::{matcher::engine::RuleSet, targets::catalog::Catalog};

pub fn rules(out: &mut impl Write, set: &RuleSet) -> io::Result<()> {
    writeln!(
        out,
        "{:<22} {:<14} {:<9} {:<7} {:<15} services",
        "id", "kind", "severity", "context", "validator"
    )?;
    for r in set.rules() {
        let validator = r
            .validator
            .map_or("-", crate::matcher::rules::Validator::name);
        let services = if r.services.is_empty() {
            "all".to_owned()
        } else {
            r.services.join(",")
        };
        let context = format!("{:?}", r.context).to_ascii_lowercase();
        writeln!(
            out,
            "{:<22} {:<14} {:<9} {:<7} {:<15} {services}",
            r.id,
            r.kind.name(),
            r.severity.name(),
            context,
            validator
        )?;
    }
    Ok(())
}

pub fn catalog(out: &mut impl Write, catalog: &Catalog) -> io::Result<()> {
    for s in catalog.services() {
        writeln!(out, "{}", s.id)?;
        writeln!(out, "  domains:    {}", s.domains.join(", "))?;
        if !s.cidrs.is_empty() {
            let c: Vec<String> = s.cidrs.iter().map(ToString::to_string).collect();
            writeln!(out, "  cidrs:      {}", c.join(", "))?;
        }
        if !s.public_ids.is_empty() {
            writeln!(out, "  public ids: {}", s.public_ids.join(", "))?;
        }
    }
    Ok(())
}

/// `leakwatch rules check`: the compiled rule count and the rules without triggers.
pub fn rules_check(w: &mut impl Write, set: &RuleSet) -> std::io::Result<()> {
    writeln!(
        w,
        "{} rules compiled (version {})",
        set.rules().count(),
        set.version
    )?;
    for id in &set.triggers().untriggered {
        writeln!(
            w,
            "note: rule {id} has no triggers: every message section is decoded for it (slow); \
             give it `triggers` or a `^(name|…)=` pattern"
        )?;
    }
    Ok(())
}

/// Prints `e` as the binary does and exits with `code` (for callers such as
/// systemd's ExecCondition that read the code).
pub fn exit(e: &anyhow::Error, code: i32) -> ! {
    eprintln!("leakwatch: {e:#}");
    std::process::exit(code)
}
