//! Ring record decoding: a damaged record is an error, never a panic.

use sensor_user::capture::record::Record;

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let bytes = data;

    if let Ok(r) = Record::decode(bytes) {
        let _ = (r.payload().len(), r.src(), r.dst());
    }
}
