//! Where a peer is dialed: `host:port`, the host an IP address or a DNS name.
//!
//! In Kubernetes a StatefulSet pod keeps its DNS name (`tern-0.tern-peers:7400`) but gets a new
//! IP on every restart, so a name is kept as a name and resolved on every dial attempt
//! ([`Resolve`]); an IP literal needs no lookup.
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest DNS name (RFC 1035, without the trailing dot).
const DNS_NAME_BYTES_MAX: usize = 253;
/// Longest DNS label.
const DNS_LABEL_BYTES_MAX: usize = 63;

/// A validated `host:port`. Serialized as that string, so TOML keeps `quic_addr = "…"` and every
/// existing `IP:port` value parses unchanged. IPv6 literals are bracketed: `[::1]:7400`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerAddr {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Ip(IpAddr),
    /// Lower-cased, without a trailing dot.
    Name(String),
}

/// Why a string is not a peer address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer address {input:?}: {reason} (expected host:port, host an IP or a DNS name)")]
pub struct PeerAddrError {
    input: String,
    reason: &'static str,
}

impl PeerAddr {
    /// Parses and validates `host:port` (port 1..=65535).
    pub fn parse(input: &str) -> Result<Self, PeerAddrError> {
        let fail = |reason| PeerAddrError {
            input: input.to_owned(),
            reason,
        };
        if let Ok(addr) = input.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(fail("port 0 cannot be dialed"));
            }
            return Ok(addr.into());
        }
        let Some((host, port)) = input.rsplit_once(':') else {
            return Err(fail("missing :port"));
        };
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        if host.contains(':') || host.starts_with('[') {
            return Err(fail("an IPv6 address must be bracketed, e.g. [::1]:7400"));
        }
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(fail("port 0 cannot be dialed")),
            Ok(port) => port,
            Err(_) => return Err(fail("port must be a number from 1 to 65535")),
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        validate_dns_name(name).map_err(fail)?;
        Ok(Self {
            host: Host::Name(name.to_ascii_lowercase()),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal (no lookup needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The DNS name, when the host is one.
    pub fn dns_name(&self) -> Option<&str> {
        match &self.host {
            Host::Ip(_) => None,
            Host::Name(name) => Some(name),
        }
    }
}

/// Rules of RFC 1123 host names: labels of letters, digits and inner hyphens, at most 63 bytes
/// each and 253 in all. A last label of digits only is refused: `10.0.0.256` is a mistyped IP,
/// not a name (no top-level domain is numeric).
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty host");
    }
    if name.len() > DNS_NAME_BYTES_MAX {
        return Err("DNS name longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty DNS label");
        }
        if label.len() > DNS_LABEL_BYTES_MAX {
            return Err("DNS label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("a DNS name has only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a DNS label cannot start or end with '-'");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not a valid IP address, and a DNS name cannot end in a numeric label");
    }
    Ok(())
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = PeerAddrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> Self {
        addr.to_string()
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// A boxed resolution in flight.
pub type Resolving = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a [`PeerAddr`] into socket addresses. The dialer asks again before every attempt, so a
/// peer that moved (a restarted pod's new IP) is found at its new address.
pub trait Resolve: Send + Sync + fmt::Debug + 'static {
    fn resolve(&self, addr: &PeerAddr) -> Resolving;
}

/// The system resolver (`tokio::net::lookup_host`, i.e. getaddrinfo); IP literals skip it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, addr: &PeerAddr) -> Resolving {
        let target = match &addr.host {
            Host::Ip(ip) => {
                let found = vec![SocketAddr::new(*ip, addr.port)];
                return Box::pin(async move { Ok(found) });
            }
            Host::Name(name) => (name.clone(), addr.port),
        };
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ips_and_names_and_refuses_the_rest() {
        // (input, Ok(display) or Err(substring of the reason))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("127.0.0.1:7100", Ok("127.0.0.1:7100")),
            ("[::1]:7100", Ok("[::1]:7100")),
            ("tern-0.tern-peers:7400", Ok("tern-0.tern-peers:7400")),
            (
                "tern-0.tern.ns.svc.cluster.local.:7400",
                Ok("tern-0.tern.ns.svc.cluster.local:7400"),
            ),
            ("LocalHost:1", Ok("localhost:1")),
            ("tern-0.tern-peers", Err("missing :port")),
            ("127.0.0.1", Err("missing :port")),
            (":7400", Err("empty host")),
            ("tern-0:", Err("port must be a number")),
            ("tern-0:70000", Err("port must be a number")),
            ("tern-0:0", Err("port 0")),
            ("127.0.0.1:0", Err("port 0")),
            ("::1:7400", Err("bracketed")),
            ("tern_0.peers:7400", Err("only letters")),
            ("-tern.peers:7400", Err("start or end with '-'")),
            ("tern..peers:7400", Err("empty DNS label")),
            ("10.0.0.256:7400", Err("numeric label")),
        ];
        for (input, want) in cases {
            match (PeerAddr::parse(input), want) {
                (Ok(addr), Ok(shown)) => assert_eq!(addr.to_string(), *shown, "{input}"),
                (Err(e), Err(reason)) => {
                    assert!(e.to_string().contains(reason), "{input}: {e}")
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let long_label = format!("{}.peers:7400", "a".repeat(64));
        assert!(PeerAddr::parse(&long_label).is_err());
        let long_name = format!("{}.x:7400", "a.".repeat(130));
        assert!(PeerAddr::parse(&long_name).is_err());
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let addr = PeerAddr::parse("10.1.2.3:7400").expect("valid");
        assert_eq!(
            addr.socket_addr(),
            Some("10.1.2.3:7400".parse().expect("ip"))
        );
        assert_eq!(addr.dns_name(), None);
        let name = PeerAddr::parse("tern-1.tern-peers:7400").expect("valid");
        assert_eq!(name.socket_addr(), None);
        assert_eq!(name.dns_name(), Some("tern-1.tern-peers"));
        assert_eq!(name.port(), 7400);
    }

    #[tokio::test]
    async fn the_system_resolver_answers_localhost_and_ips() {
        let ip = PeerAddr::parse("127.0.0.9:7400").expect("valid");
        let found = SystemResolver.resolve(&ip).await.expect("no lookup");
        assert_eq!(found, vec!["127.0.0.9:7400".parse().expect("ip")]);
        let local = PeerAddr::parse("localhost:7400").expect("valid");
        let found = SystemResolver
            .resolve(&local)
            .await
            .expect("localhost resolves");
        assert!(
            found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7400),
            "{found:?}"
        );
        assert!(!found.is_empty());
    }
}
