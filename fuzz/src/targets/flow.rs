//! Whole TCP flows through the matcher's stream table: a handshake, then a
//! request cut into segments fed in any order, duplicated, overlapping, or
//! retransmitted with other bytes. Invariants: no panic, held bytes within the
//! flow buffer, and — when the bytes agree and the flow fits — the same
//! findings whatever the order.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use arbitrary::Arbitrary;
use sensor_common::{
    parse::{TCP_ACK, TCP_SYN},
    record::{RecordKind, flags},
};
use sensor_user::{
    fixtures::{FrameBuilder, record},
    flows::streams::StreamTable,
    matcher::{engine::RuleSet, rules},
    proto::coding::Limits,
};

#[derive(Arbitrary, Debug)]
struct Flow {
    body: Vec<u8>,
    cuts: Vec<u16>,
    order: Vec<u16>,
    /// Segments sent twice; with `conflict`, the second time with other bytes.
    dup: Vec<u16>,
    conflict: bool,
}

const BUFFER: usize = 64 * 1024;
const ISN: u32 = 1_000;

fn rules_once() -> Arc<RuleSet> {
    static R: OnceLock<Arc<RuleSet>> = OnceLock::new();
    Arc::clone(R.get_or_init(|| Arc::new(RuleSet::compile(rules::builtin()).expect("rules"))))
}

fn feed(segments: &[(u32, Vec<u8>)]) -> Vec<(String, String)> {
    let mut t = StreamTable::new(
        rules_once(),
        Arc::default(),
        Duration::from_secs(60),
        16,
        BUFFER,
        Limits::default(),
    )
    .expect("table");
    let mut found = Vec::new();
    let now = Instant::now();
    let syn = FrameBuilder::tcp("192.0.2.1", 40000, "198.51.100.2", 80)
        .flags(TCP_SYN)
        .seq(ISN)
        .build();
    let mut r = record(RecordKind::Meta, flags::FROM_CLIENT, &syn);
    r.hdr.service = 1;
    t.on_record(&r, now, &mut found);
    for (seq, data) in segments {
        let f = FrameBuilder::tcp("192.0.2.1", 40000, "198.51.100.2", 80)
            .flags(TCP_ACK | 0x08)
            .seq(*seq)
            .payload(data)
            .build();
        let mut r = record(RecordKind::Sample, flags::FROM_CLIENT, &f);
        r.hdr.service = 1;
        t.on_record(&r, now, &mut found);
    }
    t.sweep(now + Duration::from_secs(3600), &mut found);
    let mut v: Vec<(String, String)> = found
        .into_iter()
        .map(|f| (f.hit.kind.name().to_owned(), f.hit.value))
        .collect();
    v.sort();
    v
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(flow) =
        <Flow as arbitrary::Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(data))
    else {
        return;
    };

    let body = &flow.body[..flow.body.len().min(4096)];
    let mut msg = format!(
        "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    msg.extend_from_slice(body);
    let mut cuts: Vec<usize> = flow
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (msg.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(msg.len());
    cuts.sort_unstable();
    cuts.dedup();
    let segs: Vec<(u32, Vec<u8>)> = cuts
        .windows(2)
        .map(|w| (ISN + 1 + w[0] as u32, msg[w[0]..w[1]].to_vec()))
        .collect();
    let in_order = feed(&segs);
    let mut shuffled = segs.clone();
    for (i, o) in flow.order.iter().enumerate() {
        let n = shuffled.len();
        if n > 1 {
            shuffled.swap(i % n, usize::from(*o) % n);
        }
    }
    for d in &flow.dup {
        if let Some((seq, data)) = segs.get(usize::from(*d) % segs.len().max(1)).cloned() {
            let data = if flow.conflict {
                data.iter().map(|b| b ^ 0x55).collect()
            } else {
                data
            };
            shuffled.push((seq, data));
        }
    }
    let reordered = feed(&shuffled);
    if !flow.conflict {
        assert_eq!(in_order, reordered, "the same bytes in another order");
    }
}
