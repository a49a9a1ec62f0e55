//! What streaming apps send, as the lab replays it: each scenario is one HTTP
//! request to a catalog host, with the findings a correct sensor reports for
//! it. Shared by the end-to-end tests, `cargo xtask demo` and `cargo xtask lab`.
//! The secrets are made up for the lab.

use std::net::SocketAddr;

use anyhow::Context as _;

use crate::{dns, http::exchange, netns::Netns};

/// The lab's server address for each host the scenarios use (IPv4, IPv6);
/// the lab's DNS answers with these.
pub const HOSTS: &[(&str, &str, &str)] = &[
    ("www.qobuz.com", "198.51.100.2", "2001:db8:5::2"),
    ("api.qobuz.com", "198.51.100.4", "2001:db8:5::4"),
    ("www.deezer.com", "198.51.100.5", "2001:db8:5::5"),
    ("api.spotify.com", "198.51.100.6", "2001:db8:5::6"),
    ("api.soundcloud.com", "198.51.100.7", "2001:db8:5::7"),
    ("www.example.org", "198.51.100.3", "2001:db8:5::3"),
];

/// api.qobuz.com is a CNAME to this CDN name (the sensor follows the chain).
pub const QOBUZ_API_CDN: &str = "qobuz-api.cdn.example.net";

pub const MD5: &str = "5f4dcc3b5aa765d61d8327deb882cf99";
pub const TOKEN: &str = "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf";
pub const ARL: &str = "a3f9c1e07b5d42e8b6c0d7f1e2a4b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f";
pub const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyOjQyIiwiaWF0IjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJlLW9mLXRoZS1sYWI";
/// `jane:hunter2!x`
pub const BASIC: &str = "amFuZTpodW50ZXIyIXg=";
pub const IDFA: &str = "6D92078A-8246-4BA4-AE5B-76104861E7DC";

/// The app each service's requests come from, as its User-Agent names it:
/// one app per service, so the lab's app inventory shows each (and a service
/// with no app of its own here gets Qobuz's). No service: a browser, which
/// `follow_apps` leaves alone.
pub fn user_agent(service: &str) -> &'static str {
    match service {
        "" => BROWSER_UA,
        "deezer" => "Deezer/7.0.20.5 (Android; 13; Mobile; fr)",
        "spotify" => "Spotify/8.9.18.512 Android/33 (SM-G991B)",
        "soundcloud" => "SoundCloud/2024.01.08 (iPhone; iOS 17.2; Scale/3.00)",
        _ => "Qobuz/6.1.2 (iPhone; iOS 17.2)",
    }
}

/// A browser on the client's phone: no app.
pub const BROWSER_UA: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1";

/// One request an app sends.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub what: &'static str,
    pub service: &'static str,
    pub host: &'static str,
    pub method: &'static str,
    /// Path with query.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    /// Content type and body.
    pub body: Option<(&'static str, String)>,
    /// (kind, how many distinct findings).
    pub expect: &'static [(&'static str, u64)],
}

impl Scenario {
    /// The request as HTTP/1.1 bytes (Connection: close).
    pub fn http1(&self) -> Vec<u8> {
        let mut s = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n",
            self.method,
            self.target,
            self.host,
            self.user_agent()
        );
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some((ct, body)) = &self.body {
            s.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        s.push_str("Connection: close\r\n\r\n");
        if let Some((_, body)) = &self.body {
            s.push_str(body);
        }
        s.into_bytes()
    }

    /// curl arguments sending the same request to `scheme://host`.
    pub fn curl_args(&self, scheme: &str) -> Vec<String> {
        let mut a = vec![
            "-sS".into(),
            "-k".into(),
            "--max-time".into(),
            "10".into(),
            "-X".into(),
            self.method.into(),
            "-A".into(),
            self.user_agent().into(),
        ];
        for (k, v) in &self.headers {
            a.push("-H".into());
            a.push(format!("{k}: {v}"));
        }
        if let Some((ct, body)) = &self.body {
            a.push("-H".into());
            a.push(format!("Content-Type: {ct}"));
            a.push("--data-binary".into());
            a.push(body.clone());
        }
        a.push(format!("{scheme}://{}{}", self.host, self.target));
        a
    }

    /// The User-Agent the request carries: its service's app's.
    pub fn user_agent(&self) -> &'static str {
        user_agent(self.service)
    }

    /// The first line, for people watching, with each query value cut to
    /// its first four characters: the lab's secrets are made up, but the
    /// demo shows them as the product treats real ones, never whole.
    pub fn first_line(&self) -> String {
        let Some((path, query)) = self.target.split_once('?') else {
            return format!("{} {}", self.method, self.target);
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if v.chars().count() > 4 => {
                    format!("{k}={}…", v.chars().take(4).collect::<String>())
                }
                _ => pair.to_owned(),
            })
            .collect();
        format!("{} {path}?{}", self.method, query.join("&"))
    }
}

fn get(
    what: &'static str,
    service: &'static str,
    host: &'static str,
    target: &str,
    headers: Vec<(&'static str, String)>,
    expect: &'static [(&'static str, u64)],
) -> Scenario {
    Scenario {
        what,
        service,
        host,
        method: "GET",
        target: target.into(),
        headers,
        body: None,
        expect,
    }
}

/// Qobuz login: e-mail and the MD5 of the password in the query.
pub fn qobuz_login() -> Scenario {
    get(
        "Qobuz login: e-mail and MD5 password hash in the query",
        "qobuz",
        "www.qobuz.com",
        &format!(
            "/api.json/0.2/user/login?email=jane.doe%40example.com&password={MD5}&app_id=950096963"
        ),
        vec![],
        &[("password_hash", 1), ("email", 1)],
    )
}

/// Qobuz API call with the user auth token in a parameter.
pub fn qobuz_token_param(token: &str) -> Scenario {
    get(
        "Qobuz API call: user_auth_token in the query",
        "qobuz",
        "api.qobuz.com",
        &format!("/api.json/0.2/favorite/getUserFavorites?user_auth_token={token}"),
        vec![],
        &[("auth_token", 1)],
    )
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        qobuz_login(),
        qobuz_token_param(TOKEN),
        get(
            "Qobuz API call: X-User-Auth-Token header",
            "qobuz",
            "api.qobuz.com",
            "/api.json/0.2/track/getFileUrl?track_id=1234",
            vec![
                ("X-User-Auth-Token", TOKEN.into()),
                ("X-App-Id", "950096963".into()),
            ],
            &[("auth_token", 1)],
        ),
        Scenario {
            what: "Qobuz registration: JSON body with name, e-mail, birthdate, gender, device",
            service: "qobuz",
            host: "www.qobuz.com",
            method: "POST",
            target: "/api.json/0.2/user/create".into(),
            headers: vec![],
            body: Some((
                "application/json",
                format!(
                    r#"{{"firstname":"Jane","lastname":"Doe","email":"jane.doe@example.com","birthdate":"1990-02-28","gender":"female","device":{{"idfa":"{IDFA}","device_model":"iPhone15,2"}},"newsletter":false}}"#
                ),
            )),
            expect: &[
                ("person_name", 2),
                ("email", 1),
                ("birthdate", 1),
                ("gender", 1),
                ("device_info", 2),
            ],
        },
        get(
            "Deezer web call: arl session cookie",
            "deezer",
            "www.deezer.com",
            "/ajax/gw-light.php?method=deezer.getUserData&api_version=1.0",
            vec![(
                "Cookie",
                format!("arl={ARL}; dzr_uniq_id=dzr_uniq_id_fr1a2b"),
            )],
            &[("auth_token", 1)],
        ),
        get(
            "Spotify Web API: Authorization: Bearer (a JWT)",
            "spotify",
            "api.spotify.com",
            "/v1/me/player/currently-playing",
            vec![("Authorization", format!("Bearer {JWT}"))],
            &[("auth_token", 1)],
        ),
        get(
            "SoundCloud API: HTTP Basic credentials",
            "soundcloud",
            "api.soundcloud.com",
            "/me",
            vec![("Authorization", format!("Basic {BASIC}"))],
            &[("password", 1), ("username", 1)],
        ),
    ]
}

/// The login with the same secrets to a host that is no streaming service.
pub fn unwatched() -> Scenario {
    let mut s = qobuz_login();
    s.what = "The same secrets from a browser to an unrelated site (its first request is looked at for an app, then left alone)";
    s.service = "";
    s.host = "www.example.org";
    s.expect = &[];
    s
}

/// A host no catalog service owns, where an app's analytics SDK reports,
/// and the lab server's address for it (watched by no one).
pub const ANALYTICS: (&str, &str) = ("collector.stats-example.net", "198.51.100.8");

/// An analytics SDK's requests on one keep-alive connection to
/// [`ANALYTICS`], sent with User-Agent `ua`: a config fetch that carries
/// nothing, then a login event with the user's e-mail and name. Only
/// `follow_apps` sees the second, and only when `ua` names an app: the
/// sensor then follows the flow from its first request (docs/app-audit.md).
/// Three findings: an e-mail, two names.
pub fn analytics_requests(ua: &str) -> [String; 2] {
    let (host, _) = ANALYTICS;
    let body = "event=login&email=jane.doe%40example.com&first_name=Jane&last_name=Doe";
    [
        format!("GET /v1/config?sdk=3.2 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n\r\n"),
        format!(
            "POST /v1/track HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    ]
}

/// Resolves the scenario's host from `ns` (AAAA when `v6`), as an app would,
/// and sends the request in cleartext to port 80. Returns the address used and
/// the response.
pub fn send(ns: &Netns, s: &Scenario, v6: bool) -> anyhow::Result<(String, Vec<u8>)> {
    let addrs = if v6 {
        dns::resolve_v6(ns, s.host)
    } else {
        dns::resolve_v4(ns, s.host)
    }
    .with_context(|| format!("resolving {}", s.host))?;
    let ip = addrs.first().context("no address")?.clone();
    let addr: SocketAddr = if v6 {
        format!("[{ip}]:80")
    } else {
        format!("{ip}:80")
    }
    .parse()?;
    let resp = exchange(ns, addr, s.http1())?;
    Ok((ip, resp))
}

/// One request of a recorded session: from which client, over IPv6 or not,
/// over TLS or not.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1: `client` (lan0), 2: `client2` (lan1, VLAN 100).
    pub client: u8,
    pub v6: bool,
    pub tls: bool,
    pub scenario: Scenario,
}

/// The session `cargo xtask lab record` plays and records: every scenario in
/// cleartext, the login again over IPv6 and over TLS, the registration from
/// the VLAN client, the first client's token from the second, and an
/// unrelated site.
pub fn session() -> Vec<Step> {
    let step = |client, v6, tls, scenario| Step {
        client,
        v6,
        tls,
        scenario,
    };
    let mut s: Vec<Step> = scenarios()
        .into_iter()
        .map(|sc| step(1, false, false, sc))
        .collect();
    s.push(step(1, true, false, qobuz_login()));
    s.push(step(1, false, true, qobuz_login()));
    s.push(step(2, false, false, scenarios()[3].clone()));
    s.push(step(2, false, false, qobuz_token_param(TOKEN)));
    s.push(step(1, false, false, unwatched()));
    s
}

/// Findings (service, kind) → count that a session produces: one per value
/// per flow, every cleartext step being its own flow.
pub fn expected_findings(steps: &[Step]) -> std::collections::BTreeMap<(String, String), u64> {
    expected_of(steps.iter().filter(|s| !s.tls).map(|s| &s.scenario))
}

/// Findings (service, kind) → count of these requests sent in cleartext, each
/// on its own connection.
pub fn expected_of<'a>(
    list: impl IntoIterator<Item = &'a Scenario>,
) -> std::collections::BTreeMap<(String, String), u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in list {
        for (kind, n) in s.expect {
            *m.entry((s.service.to_owned(), (*kind).to_owned()))
                .or_default() += n;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_line_keeps_no_value_whole() {
        let line = qobuz_login().first_line();
        assert_eq!(
            line,
            "GET /api.json/0.2/user/login?email=jane…&password=5f4d…&app_id=9500…"
        );
        assert!(!qobuz_token_param(TOKEN).first_line().contains(TOKEN));
        let plain = scenarios()
            .into_iter()
            .find(|s| !s.target.contains('?'))
            .unwrap();
        assert_eq!(
            plain.first_line(),
            format!("{} {}", plain.method, plain.target)
        );
    }
}
