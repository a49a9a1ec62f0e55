//! The matcher: Hyperscan streaming prefilter over reassembled, decoded flow
//! data, then precise confirmation of each candidate.
//!
//! | module       | holds                                                 |
//! |--------------|-------------------------------------------------------|
//! | `rules`      | the rule format, built-in rules                        |
//! | `triggers`   | the raw-bytes prefilter in front of decoding           |
//! | `canaries`   | the canaries file: test-account values, its checks     |
//! | `canary_db`  | the canaries compiled, matched and confirmed           |
//! | `canary_forms` | the encodings a canary value travels in              |
//! | `engine`     | compiled rules, per-direction Hyperscan streams, hits  |
//! | `db_cache`   | the compiled rule databases cached on disk             |
//! | `validators` | digest, JWT, Luhn, IMEI, email, date, entropy checks   |
//! | `finding`    | which hits become findings: the one policy             |
//! | `evidence`   | evidence modes, keyed fingerprints, replay detector    |

pub mod canaries;
pub mod canary_db;
pub mod canary_forms;
pub mod db_cache;
pub mod digits;
pub mod engine;
pub mod evidence;
pub mod finding;
pub mod rules;
pub mod triggers;
pub mod validators;
