//! The matcher: Hyperscan streaming prefilter over reassembled, decoded flow
//! data, then precise confirmation of each candidate.
//!
//! | module       | holds                                                 |
//! |--------------|-------------------------------------------------------|
//! | `rules`      | the rule format, built-in rules                        |
//! | `triggers`   | the raw-bytes prefilter in front of decoding           |
//! | `engine`     | compiled rules, per-direction Hyperscan streams, hits  |
//! | `validators` | digest, JWT, Luhn, IMEI, email, date, entropy checks   |
//! | `finding`    | which hits become findings: the one policy             |
//! | `evidence`   | evidence modes, keyed fingerprints, replay detector    |

pub mod digits;
pub mod engine;
pub mod evidence;
pub mod finding;
pub mod rules;
pub mod triggers;
pub mod validators;
