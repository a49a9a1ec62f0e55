//! What a User-Agent says about the app: name, version, platform — where
//! recognisable. Streaming apps send `App/1.2.3 (Platform; …)`; browsers and
//! system HTTP stacks (Mozilla, Dalvik, CFNetwork, okhttp) are not the app.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<&'static str>,
}

/// Product tokens that name an HTTP stack, not the app.
const STACKS: &[&str] = &[
    "mozilla",
    "dalvik",
    "cfnetwork",
    "darwin",
    "okhttp",
    "curl",
    "wget",
    "java",
    "python-requests",
    "go-http-client",
    "applewebkit",
    "safari",
    "chrome",
    "gecko",
    "firefox",
];

fn platform(ua: &str) -> Option<&'static str> {
    let l = ua.to_ascii_lowercase();
    [
        ("android", "Android"),
        ("iphone", "iOS"),
        ("ipad", "iPadOS"),
        ("ios", "iOS"),
        ("cfnetwork", "iOS"),
        ("windows", "Windows"),
        ("mac os x", "macOS"),
        ("macintosh", "macOS"),
        ("tvos", "tvOS"),
        ("linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| l.contains(k))
    .map(|(_, p)| *p)
}

/// The app behind a User-Agent, if one is named.
pub fn parse(ua: &str) -> Option<App> {
    // Product tokens are `name/version` outside parentheses.
    let mut depth = 0i32;
    let mut outside = String::new();
    for c in ua.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    let product = outside.split_whitespace().find(|t| {
        let name = t.split('/').next().unwrap_or("");
        !name.is_empty() && !STACKS.contains(&name.to_ascii_lowercase().as_str())
    })?;
    let (name, version) = match product.split_once('/') {
        Some((n, v)) => (n, Some(v.to_owned()).filter(|v| !v.is_empty())),
        None => (product, None),
    };
    Some(App {
        name: name.to_owned(),
        version,
        platform: platform(ua),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_apps() {
        assert_eq!(
            parse("Qobuz/6.1.2 (iPhone; iOS 17.2; Scale/3.00)"),
            Some(App {
                name: "Qobuz".into(),
                version: Some("6.1.2".into()),
                platform: Some("iOS")
            })
        );
        assert_eq!(
            parse("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7) Deezer/7.0.12"),
            Some(App {
                name: "Deezer".into(),
                version: Some("7.0.12".into()),
                platform: Some("Android")
            })
        );
        assert_eq!(
            parse("Spotify/8.8.0 Android/33 (Pixel 7)").map(|a| a.name),
            Some("Spotify".into())
        );
        assert_eq!(
            parse("Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
            None
        );
        assert_eq!(parse(""), None);
    }
}
