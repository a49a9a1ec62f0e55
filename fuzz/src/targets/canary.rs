//! Canary matching on hostile bytes: the prefilter check and the field scan
//! (escapes undone, base64 runs decoded around a match) never panic, and a
//! registered value placed in the bytes between separators is always found.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use sensor_user::matcher::{
    canaries::Canary,
    engine::RuleSet,
    rules::{self, Kind},
};

const VALUES: [(&str, Kind, &str); 3] = [
    ("pw", Kind::Password, "Tr0ub4dor&3x?"),
    ("tok", Kind::AuthToken, "tKn_9fQ2xLm4Vb7Rz1Wc"),
    ("mail", Kind::Email, "audit.user@example.com"),
];

#[derive(Arbitrary, Debug)]
struct Input {
    before: Vec<u8>,
    after: Vec<u8>,
    which: u8,
    plant: bool,
}

fn set() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let cs = VALUES.map(|(l, k, v)| Canary::new(l, k, v)).to_vec();
        RuleSet::compile(rules::builtin())
            .and_then(|s| s.with_canaries(cs))
            .expect("canaries compile")
    })
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(i) =
        <Input as arbitrary::Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(data))
    else {
        return;
    };

    let set = set();
    let scratch = set.scratch().expect("scratch");
    let c = set.canaries().expect("canaries");
    let mut buf = i.before.clone();
    let planted = VALUES[usize::from(i.which) % VALUES.len()].2;
    if i.plant {
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(planted.as_bytes());
        buf.extend_from_slice(b" ");
    }
    buf.extend_from_slice(&i.after);
    let fires = set.triggers().fires(&scratch, &buf);
    let found = c
        .scan(&scratch, &buf, &[buf.len() as u64], 0)
        .expect("scan");
    if i.plant {
        assert!(fires, "the prefilter missed a planted value");
        assert!(!found.is_empty(), "the scan missed a planted value");
    }
    // A canary found in the field stream is one the prefilter fires on.
    assert!(found.is_empty() || fires);
}
