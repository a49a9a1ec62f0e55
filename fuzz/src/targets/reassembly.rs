//! TCP reassembly fed arbitrary segment sequences: out of order, overlapping,
//! jumps, wrapping sequence numbers. Held bytes stay within the bound.

use arbitrary::Arbitrary;
use sensor_user::flows::reassembly::{Chunk, Reassembler};

#[derive(Arbitrary, Debug)]
enum Op {
    Syn(u32),
    Segment(u32, Vec<u8>),
    Jump(u32),
    SkipHole,
}

const BOUND: usize = 4096;

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(ops) =
        <Vec<Op> as arbitrary::Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(data))
    else {
        return;
    };

    let mut r = Reassembler::new(BOUND);
    let mut out = |c: Chunk<'_>| {
        if let Chunk::Data(b) = c {
            std::hint::black_box(b.len());
        }
    };
    for op in ops {
        match op {
            Op::Syn(isn) => r.syn(isn),
            Op::Segment(seq, data) => r.segment(seq, &data, &mut out),
            Op::Jump(seq) => r.jump(seq, &mut out),
            Op::SkipHole => r.skip_hole(&mut out),
        }
        assert!(
            r.pending_bytes() <= BOUND + 65_536,
            "held {} bytes",
            r.pending_bytes()
        );
    }
}
