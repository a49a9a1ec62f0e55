//! The service catalog: which domains and prefixes belong to which streaming
//! service. Built in (data/catalog.toml), extended by the admin's config.

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Deserialize;

use super::valid_service_id;

const BUILTIN: &str = include_str!("../../data/catalog.toml");

/// One service as the catalog file and the admin config spell it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub id: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    #[serde(default)]
    pub public_ids: Vec<String>,
    /// The service's apps, as User-Agent product tokens name them.
    #[serde(default)]
    pub apps: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    services: Vec<ServiceDef>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("service {0:?}: ids are lowercase letters, digits and '_' (at most 32)")]
    BadId(String),
    #[error("service {service}: domain {domain:?} is not a DNS name")]
    BadDomain { service: String, domain: String },
    #[error("domain {domain:?} is listed for both {first} and {second}")]
    DuplicateDomain {
        domain: String,
        first: String,
        second: String,
    },
}

/// Lowercase, without a trailing dot, if `d` is a plausible DNS name.
pub fn normalize_domain(d: &str) -> Option<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(d)
}

/// The effective catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    services: Vec<ServiceDef>,
    /// Normalised domain → index into `services`.
    by_domain: HashMap<String, usize>,
}

impl Catalog {
    /// The built-in catalog.
    #[expect(
        clippy::expect_used,
        reason = "embedded data, parsed and checked by a unit test of this module"
    )]
    pub fn builtin() -> Self {
        let file: CatalogFile =
            toml::from_str(BUILTIN).expect("data/catalog.toml is valid (tested)");
        let mut c = Self {
            services: Vec::new(),
            by_domain: HashMap::new(),
        };
        c.extend(file.services)
            .expect("data/catalog.toml is consistent (tested)");
        c
    }

    /// Adds services, or extends those with an existing id.
    pub fn extend(&mut self, defs: Vec<ServiceDef>) -> Result<(), CatalogError> {
        for def in defs {
            if !valid_service_id(&def.id) {
                return Err(CatalogError::BadId(def.id));
            }
            let idx = if let Some(i) = self.services.iter().position(|s| s.id == def.id) {
                i
            } else {
                self.services.push(ServiceDef {
                    id: def.id.clone(),
                    domains: vec![],
                    cidrs: vec![],
                    public_ids: vec![],
                    apps: vec![],
                });
                self.services.len() - 1
            };
            for d in &def.domains {
                let norm = normalize_domain(d).ok_or_else(|| CatalogError::BadDomain {
                    service: def.id.clone(),
                    domain: d.clone(),
                })?;
                match self.by_domain.get(&norm) {
                    Some(&other) if other != idx => {
                        return Err(CatalogError::DuplicateDomain {
                            domain: norm,
                            first: self.services[other].id.clone(),
                            second: def.id.clone(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        self.by_domain.insert(norm.clone(), idx);
                        self.services[idx].domains.push(norm);
                    }
                }
            }
            let svc = &mut self.services[idx];
            for c in def.cidrs {
                if !svc.cidrs.contains(&c.trunc()) {
                    svc.cidrs.push(c.trunc());
                }
            }
            for p in def.public_ids {
                if !svc.public_ids.contains(&p) {
                    svc.public_ids.push(p);
                }
            }
            for a in def.apps {
                if !svc.apps.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
                    svc.apps.push(a);
                }
            }
        }
        Ok(())
    }

    /// The catalog's name for app `name` of `service` (the User-Agent's
    /// product token, matched without case), if it is one of its apps.
    pub fn app_of(&self, service: &str, name: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.id == service)?
            .apps
            .iter()
            .find(|a| a.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    /// The service, and its app, that an app identifier names (`follow_apps`):
    /// a User-Agent product token or an `X-App-Id`-style value equal (without
    /// case) to one of a service's `apps` or to its id, or a reverse-DNS id
    /// (`com.qobuz.music`) with the service id as one of its labels.
    pub fn app_named(&self, id: &str) -> Option<(&str, &str)> {
        let id = id.trim();
        if id.is_empty() {
            return None;
        }
        let exact = self.services.iter().find_map(|s| {
            let a = s.apps.iter().find(|a| a.eq_ignore_ascii_case(id))?;
            Some((s.id.as_str(), a.as_str()))
        });
        exact.or_else(|| {
            self.services.iter().find_map(|s| {
                let named = s.id.eq_ignore_ascii_case(id)
                    || (id.contains('.') && id.split('.').any(|l| l.eq_ignore_ascii_case(&s.id)));
                named.then(|| {
                    let app = s.apps.first().map_or(s.id.as_str(), String::as_str);
                    (s.id.as_str(), app)
                })
            })
        })
    }

    pub fn services(&self) -> &[ServiceDef] {
        &self.services
    }

    /// Whether `field` (a parameter, header or cookie name) carries a public
    /// identifier of `service` (not a secret).
    pub fn is_public(&self, service: &str, field: &str) -> bool {
        self.services
            .iter()
            .find(|s| s.id == service)
            .is_some_and(|s| s.public_ids.iter().any(|p| p.eq_ignore_ascii_case(field)))
    }

    /// The service whose domain is `name` or a parent of it (label boundaries,
    /// case-insensitive, trailing dot tolerated).
    pub fn service_for(&self, name: &str) -> Option<&str> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(&i) = self.by_domain.get(rest) {
                return Some(&self.services[i].id);
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_every_required_service() {
        let c = Catalog::builtin();
        let ids: Vec<&str> = c.services().iter().map(|s| s.id.as_str()).collect();
        for want in [
            "qobuz",
            "deezer",
            "spotify",
            "apple_music",
            "youtube_music",
            "soundcloud",
            "pandora",
            "tidal",
            "amazon_music",
            "napster",
            "audiomack",
            "anghami",
        ] {
            assert!(ids.contains(&want), "{want} missing");
        }
        assert!(c.services().iter().all(|s| !s.domains.is_empty()));
    }

    #[test]
    fn suffix_matching_on_label_boundaries() {
        let c = Catalog::builtin();
        assert_eq!(c.service_for("api.qobuz.com"), Some("qobuz"));
        assert_eq!(c.service_for("qobuz.com"), Some("qobuz"));
        assert_eq!(c.service_for("API.QOBUZ.COM."), Some("qobuz"));
        assert_eq!(c.service_for("notqobuz.com"), None);
        assert_eq!(c.service_for("qobuz.com.evil.example"), None);
        assert_eq!(c.service_for("e-cdns-proxy-1.dzcdn.net"), Some("deezer"));
        assert_eq!(c.service_for("music.apple.com"), Some("apple_music"));
        assert_eq!(c.service_for("www.apple.com"), None);
        assert_eq!(c.service_for("com"), None);
        assert_eq!(c.service_for(""), None);
    }

    #[test]
    fn admin_entries_extend_and_add() {
        let mut c = Catalog::builtin();
        c.extend(vec![
            ServiceDef {
                id: "qobuz".into(),
                domains: vec!["Qobuz-CDN.example.".into()],
                cidrs: vec!["198.51.100.7/24".parse().unwrap()],
                public_ids: vec![],
                apps: vec![],
            },
            ServiceDef {
                id: "internal_radio".into(),
                domains: vec!["radio.corp.example".into()],
                cidrs: vec![],
                public_ids: vec![],
                apps: vec![],
            },
        ])
        .unwrap();
        assert_eq!(c.service_for("a.qobuz-cdn.example"), Some("qobuz"));
        assert_eq!(c.service_for("radio.corp.example"), Some("internal_radio"));
        let q = c.services().iter().find(|s| s.id == "qobuz").unwrap();
        assert_eq!(q.cidrs, ["198.51.100.0/24".parse::<IpNet>().unwrap()]);
        let dup = c.extend(vec![ServiceDef {
            id: "tidal".into(),
            domains: vec!["qobuz.com".into()],
            cidrs: vec![],
            public_ids: vec![],
            apps: vec![],
        }]);
        assert!(matches!(dup, Err(CatalogError::DuplicateDomain { .. })));
        let bad = c.extend(vec![ServiceDef {
            id: "x".into(),
            domains: vec!["bad domain".into()],
            cidrs: vec![],
            public_ids: vec![],
            apps: vec![],
        }]);
        assert!(matches!(bad, Err(CatalogError::BadDomain { .. })));
        assert!(matches!(
            c.extend(vec![ServiceDef {
                id: "Bad".into(),
                domains: vec![],
                cidrs: vec![],
                public_ids: vec![],
                apps: vec![],
            }]),
            Err(CatalogError::BadId(_))
        ));
    }
}
