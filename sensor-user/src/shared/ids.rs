//! Service ids: what every stage may name a service by.

/// Service ids become metric labels: a bounded, plain alphabet.
pub fn valid_service_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
