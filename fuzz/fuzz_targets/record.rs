//! Ring record decoding: a damaged record is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_user::capture::record::Record;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(r) = Record::decode(bytes) {
        let _ = (r.payload().len(), r.src(), r.dst());
    }
});
