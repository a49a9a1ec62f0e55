//! The import rule, enforced: data flows one way, so a module may import only
//! the modules to its left in [`ORDER`] (and `shared`, which imports nothing of
//! this crate). Within a stage, no two files import each other. Test code
//! (after the first `#[cfg(test)]`) and the `fixtures` test support are exempt.

use std::{collections::BTreeSet, fs, path::Path};

/// The stages, from the wire to the command line.
const ORDER: [&str; 9] = [
    "capture", "proto", "matcher", "targets", "flows", "sinks", "config", "pipeline", "cli",
];

/// The first path segment after each `crate::` and each `super::` in `code`,
/// brace groups expanded (`crate::{a::x, b}` gives `a` and `b`).
fn heads(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: names at brace depth 0.
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    c if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for it in items {
                let name = it.trim().split("::").next().unwrap_or("").trim().to_owned();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The code of a file before its tests, without comment lines.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    before_tests
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (stage, file stem, path) of every source file that belongs to a stage,
/// in sub-folders too (a folder's `mod.rs` takes the folder's name).
fn files(src: &Path) -> Vec<(String, String, std::path::PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for stage in ORDER {
        let single = src.join(format!("{stage}.rs"));
        if single.is_file() {
            out.push((stage.to_owned(), "mod".to_owned(), single));
        }
        let mut found = Vec::new();
        walk(&src.join(stage), &mut found);
        for p in found {
            let mut stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if stem == "mod"
                && let Some(parent) = p.parent()
                && parent != src.join(stage)
            {
                stem = parent
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
            }
            out.push((stage.to_owned(), stem, p));
        }
    }
    out
}

/// What breaks the rule in the tree at `src`, one line each.
fn violations(src: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let files = files(src);
    let mut edges = BTreeSet::new();
    for (stage, stem, path) in &files {
        let code = code(path);
        let me = ORDER.iter().position(|s| s == stage).unwrap_or(0);
        for head in heads(&code, "crate::") {
            if let Some(them) = ORDER.iter().position(|s| *s == head)
                && them > me
            {
                bad.push(format!(
                    "{}: {stage} imports {head}, which comes after it in {ORDER:?}",
                    path.display()
                ));
            }
            if head == "fixtures" {
                bad.push(format!("{}: imports the test fixtures", path.display()));
            }
        }
        // Siblings, through `super::x` or `crate::<stage>::x`.
        let mut sibs = heads(&code, "super::");
        sibs.extend(heads(&code, &format!("crate::{stage}::")));
        for s in sibs {
            if stem != "mod" && s != *stem {
                edges.insert((stage.clone(), stem.clone(), s));
            }
        }
    }
    for (stage, a, b) in &edges {
        if a < b && edges.contains(&(stage.clone(), b.clone(), a.clone())) {
            bad.push(format!(
                "{stage}/{a}.rs and {stage}/{b}.rs import each other"
            ));
        }
    }
    bad
}

#[test]
fn imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "the import rule is broken:\n{}",
        bad.join("\n")
    );
    // The test sees what it must: every stage has files.
    assert!(files(&src).len() > 30);
}

/// The checker itself catches a step back and a loop.
#[test]
fn a_step_back_and_a_loop_are_caught() {
    let dir = std::env::temp_dir().join(format!("lw-imports-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("matcher")).unwrap();
    fs::write(
        dir.join("matcher/a.rs"),
        "use super::b::X;\nuse crate::{proto::f, targets::valid};\n",
    )
    .unwrap();
    fs::write(dir.join("matcher/b.rs"), "use super::a::Y;\n").unwrap();
    fs::write(
        dir.join("matcher/c.rs"),
        "use crate::proto::x;\n#[cfg(test)]\nmod t { use crate::pipeline::P; }\n",
    )
    .unwrap();
    let bad = violations(&dir);
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("matcher imports targets"), "{bad:?}");
    assert!(
        bad[1].contains("a.rs and matcher/b.rs import each other"),
        "{bad:?}"
    );
}

/// Files stay readable: none over 500 lines before its tests, and `main.rs` a
/// dispatcher under 150.
#[test]
fn files_stay_small() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    walk(&src, &mut all);
    let mut big = Vec::new();
    for p in all {
        let text = fs::read_to_string(&p).unwrap_or_default();
        let before_tests = text.split("\n#[cfg(test)]").next().unwrap_or("");
        let n = before_tests.lines().count();
        let max = if p.ends_with("main.rs") { 150 } else { 500 };
        if n > max {
            big.push(format!("{}: {n} lines (at most {max})", p.display()));
        }
    }
    assert!(big.is_empty(), "split these:\n{}", big.join("\n"));
}
