//! Which addresses belong to which streaming service.
//!
//! | module     | holds                                                          |
//! |------------|----------------------------------------------------------------|
//! | `catalog`  | services → domains, static prefixes, public identifiers         |
//! | `dns`      | DNS response parsing, CNAME chains                              |
//! | `follow`   | which cleartext requests are a catalog app's (`follow_apps`)    |
//! | `learned`  | learned addresses with TTL expiry and a cap                     |
//! | `learning` | DNS/SNI/Host → learned addresses → the kernel's tries          |
//! | `sink`     | where watched prefixes and followed flows go: kernel or memory  |
//! | `store`    | learned addresses kept across a restart (state directory)      |
//! | `policy`   | blocking modes: global, per service, per domain; policy bits    |
//! | (here)     | service ids, `--watch` prefixes                                 |

pub mod catalog;
pub mod dns;
pub mod follow;
pub mod learned;
pub mod learning;
pub mod policy;
pub mod settings;
pub mod sink;
pub mod store;

use std::{fmt, str::FromStr};

use ipnet::IpNet;

pub use crate::shared::ids::ServiceIds;

/// A static watched prefix: `CIDR=SERVICE`, e.g. `192.0.2.0/24=qobuz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticWatch {
    pub net: IpNet,
    pub service: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchParseError {
    #[error("{0:?}: expected CIDR=SERVICE, e.g. 192.0.2.0/24=qobuz")]
    Shape(String),
    #[error("{0:?}: not an IPv4/IPv6 prefix or address")]
    Net(String),
    #[error("{0:?}: service ids are lowercase letters, digits and '_' (at most 32)")]
    Service(String),
}

pub use crate::shared::ids::valid_service_id;

impl FromStr for StaticWatch {
    type Err = WatchParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (net, service) = s
            .split_once('=')
            .ok_or_else(|| WatchParseError::Shape(s.to_owned()))?;
        let net = net.trim();
        let net = net
            .parse::<IpNet>()
            .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| WatchParseError::Net(net.to_owned()))?;
        let service = service.trim();
        if !valid_service_id(service) {
            return Err(WatchParseError::Service(service.to_owned()));
        }
        Ok(Self {
            net: net.trunc(),
            service: service.to_owned(),
        })
    }
}

impl fmt::Display for StaticWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.net, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_nonzero() {
        let mut ids = ServiceIds::default();
        assert_eq!(ids.id("qobuz"), 1);
        assert_eq!(ids.id("deezer"), 2);
        assert_eq!(ids.id("qobuz"), 1);
        assert_eq!(ids.name(2), Some("deezer"));
        assert_eq!(ids.name(0), None);
        assert_eq!(ids.name(3), None);
    }

    #[test]
    fn parses_static_watches() {
        let w: StaticWatch = "198.51.100.7/24=qobuz".parse().unwrap();
        assert_eq!(w.net.to_string(), "198.51.100.0/24");
        let w: StaticWatch = "2001:db8::1=tidal".parse().unwrap();
        assert_eq!(w.net.to_string(), "2001:db8::1/128");
        assert!(matches!(
            "198.51.100.0/24".parse::<StaticWatch>(),
            Err(WatchParseError::Shape(_))
        ));
        assert!(matches!(
            "300.1.1.1/8=x".parse::<StaticWatch>(),
            Err(WatchParseError::Net(_))
        ));
        assert!(matches!(
            "192.0.2.0/24=Qobuz!".parse::<StaticWatch>(),
            Err(WatchParseError::Service(_))
        ));
    }
}
