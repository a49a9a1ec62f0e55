//! The matcher: Hyperscan streaming prefilter over reassembled, decoded flow
//! data, then precise confirmation of each candidate.
//!
//! | module       | holds                                                 |
//! |--------------|-------------------------------------------------------|
//! | `validators` | digest, JWT, Luhn, IMEI, email, date, entropy checks   |

pub mod digits;
pub mod engine;
pub mod findings;
pub mod rules;
pub mod triggers;
pub mod validators;
