//! Service ids: what every stage may name a service by.

/// Service ids become metric labels: a bounded, plain alphabet.
pub fn valid_service_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Service names ↔ the u32 ids the kernel stores in its tries. Id 0 is "none".
#[derive(Debug, Default, Clone)]
pub struct ServiceIds {
    names: Vec<String>,
}

impl ServiceIds {
    /// The id of `name`, assigning the next one on first use.
    pub fn id(&mut self, name: &str) -> u32 {
        let pos = if let Some(p) = self.names.iter().position(|n| n == name) {
            p
        } else {
            self.names.push(name.to_owned());
            self.names.len() - 1
        };
        pos as u32 + 1
    }

    /// The id of `name` if it has one.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|p| p as u32 + 1)
    }

    /// Names in id order (the first has id 1).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        let idx = usize::try_from(id).ok()?.checked_sub(1)?;
        self.names.get(idx).map(String::as_str)
    }
}
