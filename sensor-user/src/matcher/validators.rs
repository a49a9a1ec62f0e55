//! Validators: Hyperscan finds candidates cheaply; these decide whether a
//! candidate value really is what its rule claims, so lookalikes (a request
//! signature, a public id, the all-zero IDFA, a number failing Luhn) are not
//! reported.

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

/// Shannon entropy in bits per character.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A generic secret token: long enough and random-looking, not a placeholder.
pub fn token_like(s: &str, min_len: usize, min_entropy: f64) -> bool {
    const PLACEHOLDERS: &[&str] = &[
        "null",
        "undefined",
        "none",
        "true",
        "false",
        "token",
        "xxxxxxxx",
        "changeme",
        "example",
    ];
    let lower = s.to_ascii_lowercase();
    s.len() >= min_len
        && !PLACEHOLDERS
            .iter()
            .any(|p| lower == *p || lower.starts_with("${") || lower.starts_with("{{"))
        && entropy(s.as_bytes()) >= min_entropy
}

/// Which digest a hex string's length says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Md5,
    Sha1,
    Sha256,
}

/// A hex digest: 32/40/64 hex characters that look random (both digits and
/// letters, no long runs), as a password hash sent in place of a password does.
pub fn hex_digest(s: &str) -> Option<Digest> {
    let kind = match s.len() {
        32 => Digest::Md5,
        40 => Digest::Sha1,
        64 => Digest::Sha256,
        _ => return None,
    };
    let b = s.as_bytes();
    if !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    // Mixed case is not how digests are printed.
    let upper = b.iter().any(u8::is_ascii_uppercase);
    let lower = b.iter().any(u8::is_ascii_lowercase);
    if upper && lower {
        return None;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // All digits or all letters: chance ≈ 1e-7 for 32 random hex characters.
    if digits == 0 || digits == b.len() || entropy(b) < 3.0 {
        return None;
    }
    Some(kind)
}

/// A JSON Web Token's decoded header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    pub alg: String,
    pub has_exp: bool,
}

/// A JWT: three base64url parts whose first two decode to JSON objects, the
/// header naming an `alg`.
pub fn jwt(s: &str) -> Option<Jwt> {
    let mut parts = s.split('.');
    let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.is_empty() || p.is_empty() {
        return None;
    }
    if !sig
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return None;
    }
    let decode = |part: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let header = decode(h)?;
    let payload = decode(p)?;
    let alg = header.get("alg")?.as_str()?.to_owned();
    Some(Jwt {
        alg,
        has_exp: payload.contains_key("exp"),
    })
}

/// Luhn checksum over ASCII digits.
pub fn luhn(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A payment card number: 13–19 digits (spaces and dashes allowed between
/// groups), a known issuer prefix, and a valid Luhn check digit.
pub fn payment_card(s: &str) -> bool {
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(13..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let prefix = |n: usize| digits[..n].parse::<u32>().unwrap_or(0);
    let issuer = digits.starts_with('4') // Visa
        || (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) // Mastercard
        || matches!(prefix(2), 34 | 37) // American Express
        || prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)) // Discover
        || (3528..=3589).contains(&prefix(4)) // JCB
        || matches!(prefix(2), 36 | 38 | 39) || (300..=305).contains(&prefix(3)) // Diners
        || prefix(2) == 62; // UnionPay
    issuer && luhn(&digits)
}

/// An IMEI: 15 digits with a Luhn check digit, not all zeros.
pub fn imei(s: &str) -> bool {
    s.len() == 15 && s.bytes().any(|b| b != b'0') && luhn(s)
}

/// A UUID (IDFA, device id), rejecting the all-zero one iOS sends when tracking
/// is denied.
pub fn device_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
        && b.iter().any(|c| c.is_ascii_hexdigit() && *c != b'0')
}

/// An Android id: 16 hex characters, not all zeros.
pub fn android_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// An email address: local@domain with a dotted domain and an alphabetic TLD.
pub fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// A calendar date (year, month, day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        (day >= 1 && day <= days_in_month(year, month)).then_some(Self { year, month, day })
    }

    /// Today (UTC).
    pub fn today() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::from_days((secs / 86_400) as i64)
    }

    /// The civil date of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn from_days(z: i64) -> Self {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self { year, month, day }
    }

    /// Whole years from `self` to `on`.
    pub fn age_on(&self, on: Date) -> i32 {
        let mut a = on.year - self.year;
        if (on.month, on.day) < (self.month, self.day) {
            a -= 1;
        }
        a
    }
}

/// A birthdate: a real calendar date (YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD,
/// DD/MM/YYYY, DD.MM.YYYY or DD-MM-YYYY) of someone aged 10 to 110 on `today`.
pub fn birthdate(s: &str, today: Date) -> Option<Date> {
    let s = s.trim();
    let num = |t: &str| t.parse::<u32>().ok();
    let d = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        Date::new(num(&s[..4])? as i32, num(&s[4..6])?, num(&s[6..])?)
    } else {
        let parts: Vec<&str> = s.split(['-', '/', '.']).collect();
        match parts.as_slice() {
            [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => {
                Date::new(num(y)? as i32, num(m)?, num(d)?)
            }
            [d, m, y] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => {
                Date::new(num(y)? as i32, num(m)?, num(d)?)
            }
            _ => None,
        }
    }?;
    (10..=110).contains(&d.age_on(today)).then_some(d)
}

/// HTTP Basic credentials: base64 of `user:password`, split at the first colon.
pub fn basic_credentials(b64: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    (!user.is_empty() || !pass.is_empty()).then(|| (user.to_owned(), pass.to_owned()))
}

/// A gender value (reported only together with other PII in the same message).
pub fn gender(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "m" | "f"
            | "male"
            | "female"
            | "man"
            | "woman"
            | "non-binary"
            | "nonbinary"
            | "other"
            | "x"
            | "d"
            | "1"
            | "2"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 11, 23).unwrap()
    }

    #[test]
    fn digests() {
        assert_eq!(
            hex_digest("5f4dcc3b5aa765d61d8327deb882cf99"),
            Some(Digest::Md5)
        );
        assert_eq!(
            hex_digest("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"),
            Some(Digest::Sha1)
        );
        assert_eq!(
            hex_digest("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"),
            Some(Digest::Sha256)
        );
        assert_eq!(
            hex_digest("00000000000000000000000000000000"),
            None,
            "no randomness"
        );
        assert_eq!(
            hex_digest("12345678901234567890123456789012"),
            None,
            "a number"
        );
        assert_eq!(
            hex_digest("abcdefabcdefabcdefabcdefabcdefab"),
            None,
            "letters only"
        );
        assert_eq!(
            hex_digest("5f4dcc3b5aa765d61d8327deb882cf9"),
            None,
            "31 chars"
        );
        assert_eq!(hex_digest("5f4dcc3b5aa765d61d8327deb882cf9g"), None);
        assert_eq!(
            hex_digest("5F4dcc3b5aa765d61d8327deb882cf99"),
            None,
            "mixed case"
        );
    }

    #[test]
    fn jwts() {
        let tok = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiZXhwIjoxNzAwMDAwMDAwfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_eq!(
            jwt(tok),
            Some(Jwt {
                alg: "HS256".into(),
                has_exp: true
            })
        );
        assert_eq!(jwt("a.b.c"), None);
        assert_eq!(
            jwt("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig"),
            None,
            "payload is not JSON"
        );
        assert_eq!(jwt("eyJ0eXAiOiJKV1QifQ.eyJhIjoxfQ.sig"), None, "no alg");
        assert_eq!(jwt("www.qobuz.com"), None);
    }

    #[test]
    fn cards_and_luhn() {
        assert!(luhn("79927398713"));
        assert!(!luhn("79927398710"));
        assert!(payment_card("4111 1111 1111 1111"));
        assert!(payment_card("5500-0000-0000-0004"));
        assert!(payment_card("378282246310005"));
        assert!(!payment_card("4111111111111112"), "Luhn fails");
        assert!(
            !payment_card("9111111111111111"),
            "no issuer with prefix 9… (and Luhn)"
        );
        assert!(!payment_card("1234567812345670"), "Luhn-valid, no issuer");
        assert!(!payment_card("411111111111"), "too short");
    }

    #[test]
    fn device_ids() {
        assert!(imei("490154203237518"));
        assert!(!imei("490154203237519"));
        assert!(!imei("000000000000000"));
        assert!(device_uuid("6D92078A-8246-4BA4-AE5B-76104861E7DC"));
        assert!(
            !device_uuid("00000000-0000-0000-0000-000000000000"),
            "tracking denied"
        );
        assert!(!device_uuid("6D92078A82464BA4AE5B76104861E7DC"));
        assert!(android_id("9774d56d682e549c"));
        assert!(!android_id("0000000000000000"));
    }

    #[test]
    fn emails() {
        assert!(email("jane.doe@example.com"));
        assert!(email("a+tag@mail.co.uk"));
        assert!(!email("jane@localhost"));
        assert!(!email("@example.com"));
        assert!(!email("jane@example.c0m"));
        assert!(!email("jane.@example.com"), "local part ends with a dot");
        assert!(!email("not an email"));
    }

    #[test]
    fn birthdates() {
        assert_eq!(birthdate("1990-02-28", today()), Date::new(1990, 2, 28));
        assert_eq!(birthdate("28/02/1990", today()), Date::new(1990, 2, 28));
        assert_eq!(birthdate("19900228", today()), Date::new(1990, 2, 28));
        assert_eq!(
            birthdate("2000-02-29", today()),
            Date::new(2000, 2, 29),
            "leap year"
        );
        assert_eq!(birthdate("1990-02-29", today()), None, "not a leap year");
        assert_eq!(birthdate("1990-13-01", today()), None);
        assert_eq!(birthdate("2024-01-01", today()), None, "aged 2");
        assert_eq!(birthdate("1800-01-01", today()), None);
        assert_eq!(birthdate("v1.2.3", today()), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(
            Date::from_days(0),
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            Date::from_days(20_415),
            Date {
                year: 2025,
                month: 11,
                day: 23
            }
        );
        assert_eq!(Date::new(1990, 11, 24).unwrap().age_on(today()), 35);
        assert_eq!(Date::new(1990, 11, 23).unwrap().age_on(today()), 36);
    }

    #[test]
    fn basic_auth_splits_at_the_first_colon() {
        // "test:pa:ss"
        assert_eq!(
            basic_credentials("dGVzdDpwYTpzcw=="),
            Some(("test".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("bm9jb2xvbg=="), None);
        assert_eq!(basic_credentials("!!!"), None);
    }

    #[test]
    fn tokens_and_entropy() {
        assert!(token_like("QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf", 16, 3.5));
        assert!(!token_like("aaaaaaaaaaaaaaaaaaaaaaaa", 16, 3.5));
        assert!(!token_like("short", 16, 3.5));
        assert!(!token_like("{{user_auth_token}}", 16, 1.0));
        assert!(entropy(b"abcd") > 1.99 && entropy(b"abcd") < 2.01);
        assert!(gender("Female") && gender("m") && !gender("maybe"));
    }
}
