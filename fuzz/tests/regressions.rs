//! Every input saved under fuzz/regressions/TARGET/ — one that once crashed
//! or hung TARGET — replayed through the target's code as a normal test: a
//! regression fails `cargo test` without libFuzzer or a sanitizer build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test"
)]

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

/// An input taking longer than this is a hang.
const HANG: Duration = Duration::from_secs(10);

/// Replays every input under `root` (one folder per target) with `run`;
/// returns what failed, by file.
fn replay(root: &Path, run: fn(&str, &[u8]) -> bool, hang: Duration) -> Vec<String> {
    let mut failed = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else {
        return failed;
    };
    let mut dirs: Vec<PathBuf> = dirs
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let (tx, rx) = mpsc::channel();
            let name = target.clone();
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(|| run(&name, &data));
                let _ = tx.send(r);
            });
            match rx.recv_timeout(hang) {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    failed.push(format!("{}: no fuzz target {target:?}", input.display()))
                }
                Ok(Err(_)) => failed.push(format!("{}: panics", input.display())),
                Err(_) => failed.push(format!("{}: hangs (over {hang:?})", input.display())),
            }
        }
    }
    failed
}

#[test]
fn every_saved_regression_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let failed = replay(&root, leakwatch_fuzz::targets::run, HANG);
    assert!(
        failed.is_empty(),
        "fuzz regressions fail again:\n{}",
        failed.join("\n")
    );
}

/// The replay fails on a crash, a hang and a folder no target owns.
#[test]
fn a_crash_a_hang_and_an_unknown_target_fail_the_replay() {
    let root = std::env::temp_dir().join(format!("lw-fuzz-regressions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (dir, file, data) in [
        ("parse", "ok", &b"fine"[..]),
        ("parse", "crash", b"boom"),
        ("parse", "hang", b"hang"),
        ("nosuch", "x", b"fine"),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join(file), data).unwrap();
    }
    fn fake(name: &str, data: &[u8]) -> bool {
        match data {
            b"boom" => panic!("a crash"),
            b"hang" => std::thread::sleep(Duration::from_secs(30)),
            _ => {}
        }
        name == "parse"
    }
    // Well above what a panic takes to print its backtrace (symbolising a
    // debug build under load took over 300 ms once).
    let failed = replay(&root, fake, Duration::from_secs(3));
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(
        failed[0].ends_with("nosuch/x: no fuzz target \"nosuch\""),
        "{failed:#?}"
    );
    assert!(failed[1].ends_with("parse/crash: panics"), "{failed:#?}");
    assert!(failed[2].contains("parse/hang: hangs"), "{failed:#?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Every target the fuzz runner knows has its code here.
#[test]
fn every_target_is_callable() {
    for name in leakwatch_fuzz::targets::NAMES {
        assert!(leakwatch_fuzz::targets::run(name, b""), "{name}");
    }
}
