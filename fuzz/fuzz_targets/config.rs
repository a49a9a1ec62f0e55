//! The config file and its rules: any text is a config or one clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_user::config::Config;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::parse(text, "fuzz.toml") {
        assert!(
            e.to_string().starts_with("config fuzz.toml") || e.to_string().contains("fuzz.toml")
        );
    }
});
