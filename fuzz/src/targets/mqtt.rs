//! The mqtt dissector, both sides of a conversation, gaps and ends anywhere.

use crate::{Step, converse, dissector};

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(steps) = <Vec<Step> as arbitrary::Arbitrary>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };

    converse(dissector("mqtt").as_mut(), &steps);
}
