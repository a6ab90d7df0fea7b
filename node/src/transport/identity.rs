//! Who is at the other end of a connection: a site (WAN) or a node within a site (site-internal).
//!
//! Naming scheme (documented for operators, enforced here):
//! - a site `a` is `a.tern`;
//! - node `n1` of site `a` is `n1.a.tern`.
//!
//! Each label is a DNS label: 1–63 characters of `a-z`, `0-9` and `-`, not starting or ending
//! with `-`, and not all digits (so a name never looks like an IP address). Certificates carry the
//! identity as their single `*.tern` DNS subjectAltName; the transport reads it back from the
//! peer's certificate after the handshake. Files are named after the identity without the
//! `.tern` suffix: `a.pem`, `n1.a.pem`.
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The DNS suffix every tern identity ends with.
pub const IDENTITY_DNS_SUFFIX: &str = ".tern";

/// A validated identity; cheap to clone (one shared string: the full DNS name).
///
/// Ordered by DNS name; the transport uses this order to decide which side of a pair dials.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    dns_name: Arc<str>,
}

/// A name that cannot be a tern identity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("invalid identity {name:?}: {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("certificate cannot be parsed: {0}")]
    CertificateUnparsable(String),
    #[error("certificate names no tern identity (no `*.tern` DNS subjectAltName)")]
    CertificateNamesNoIdentity,
    #[error("certificate names several tern identities: {0:?}")]
    CertificateNamesSeveral(Vec<String>),
}

impl Identity {
    /// A site, as used between WAN gateways: `<site>.tern`.
    pub fn site(site: &str) -> Result<Self, IdentityError> {
        check_label(site, site)?;
        Ok(Self::from_checked(format!("{site}{IDENTITY_DNS_SUFFIX}")))
    }

    /// A node within a site: `<node>.<site>.tern`.
    pub fn node(site: &str, node: &str) -> Result<Self, IdentityError> {
        let whole = format!("{node}.{site}");
        check_label(site, &whole)?;
        check_label(node, &whole)?;
        Ok(Self::from_checked(format!("{whole}{IDENTITY_DNS_SUFFIX}")))
    }

    /// Parses `a`, `a.tern`, `n1.a` or `n1.a.tern`.
    pub fn parse(name: &str) -> Result<Self, IdentityError> {
        let short = name.strip_suffix(IDENTITY_DNS_SUFFIX).unwrap_or(name);
        let labels: Vec<&str> = short.split('.').collect();
        match labels.as_slice() {
            [site] => Self::site(site),
            [node, site] => Self::node(site, node),
            _ => Err(IdentityError::Invalid {
                name: name.to_owned(),
                reason: "expected <site> or <node>.<site>, optionally followed by .tern",
            }),
        }
    }

    /// The full DNS name, as it appears in the certificate's subjectAltName.
    pub fn dns_name(&self) -> &str {
        &self.dns_name
    }

    /// The name without the `.tern` suffix; also the stem of its `.pem`/`.key` files.
    pub fn short_name(&self) -> &str {
        self.dns_name
            .strip_suffix(IDENTITY_DNS_SUFFIX)
            .expect("every Identity is built with the suffix")
    }

    /// The site this identity belongs to (for a site identity, itself).
    pub fn site_name(&self) -> &str {
        let short = self.short_name();
        short.rsplit('.').next().unwrap_or(short)
    }

    /// The node name for a node identity, `None` for a site identity.
    pub fn node_name(&self) -> Option<&str> {
        self.short_name().split_once('.').map(|(node, _)| node)
    }

    /// Reads the identity a certificate names in its subjectAltName (exactly one `*.tern` DNS
    /// name; other SANs are ignored so a certificate may also carry e.g. a Kubernetes DNS name).
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::CertificateUnparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::CertificateUnparsable(e.to_string()))?;
        let mut found: Vec<String> = Vec::new();
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name
                && dns.ends_with(IDENTITY_DNS_SUFFIX)
            {
                found.push((*dns).to_owned());
            }
        }
        match found.as_slice() {
            [] => Err(IdentityError::CertificateNamesNoIdentity),
            [one] => Self::parse(one),
            _ => Err(IdentityError::CertificateNamesSeveral(found)),
        }
    }

    fn from_checked(dns_name: String) -> Self {
        Self {
            dns_name: dns_name.into(),
        }
    }
}

fn check_label(label: &str, whole: &str) -> Result<(), IdentityError> {
    let invalid = |reason| {
        Err(IdentityError::Invalid {
            name: whole.to_owned(),
            reason,
        })
    };
    if label.is_empty() || label.len() > 63 {
        return invalid("each label must be 1 to 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("labels may contain only a-z, 0-9 and '-'");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return invalid("labels may not start or end with '-'");
    }
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("labels may not be all digits");
    }
    Ok(())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dns_name)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.dns_name)
    }
}

impl std::str::FromStr for Identity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.dns_name)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_names_and_rejects_invalid_ones() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a", Some("a.tern")),
            ("a.tern", Some("a.tern")),
            ("n1.a", Some("n1.a.tern")),
            ("n1.site-2.tern", Some("n1.site-2.tern")),
            ("", None),
            ("A", None),
            ("a_b", None),
            ("-a", None),
            ("a-", None),
            ("123", None),
            ("x.n1.a", None),
            ("n1..a", None),
            (&"x".repeat(64), None),
        ];
        for (input, expected) in cases {
            let got = Identity::parse(input).ok();
            assert_eq!(
                got.as_ref().map(Identity::dns_name),
                *expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn exposes_site_and_node_parts() {
        let node = Identity::node("paris", "n2").expect("valid");
        assert_eq!(node.site_name(), "paris");
        assert_eq!(node.node_name(), Some("n2"));
        assert_eq!(node.short_name(), "n2.paris");
        let site = Identity::site("paris").expect("valid");
        assert_eq!(site.site_name(), "paris");
        assert_eq!(site.node_name(), None);
    }
}
