//! The admin's files: the config file and its rules, the canaries file and
//! the advisories file. Any text is a file or one clear error naming it; a
//! canaries error never repeats the text (it may hold a value).

use sensor_user::{config::Config, matcher::canaries, sinks::advisories::Advisories};

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Err(e) = Config::parse(text, "fuzz.toml") {
        assert!(
            e.to_string().starts_with("config fuzz.toml") || e.to_string().contains("fuzz.toml")
        );
    }
    match canaries::parse("fuzz.toml", text) {
        Ok(cs) => assert!(cs.iter().all(|c| !c.label.is_empty())),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("canaries file fuzz.toml"), "{e}");
            // What a `value` key holds is never echoed (checked for values
            // with a `~`, which no message or valid label has, found once in
            // the text).
            for part in text.split("value").skip(1) {
                let rest = part.trim_start_matches([' ', '\t', '=']);
                if let Some(v) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                    && v.chars().count() >= 6
                    && v.contains('~')
                    && text.matches(v).count() == 1
                {
                    assert!(!e.contains(v), "{e} repeats {v:?}");
                }
            }
        }
    }
    if let Err(e) = Advisories::parse("fuzz.toml", text, |s| s == "qobuz") {
        assert!(e.to_string().starts_with("advisories file fuzz.toml"));
    }
}
