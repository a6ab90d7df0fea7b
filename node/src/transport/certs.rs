//! Development PKI: one CA, and one certificate per identity (site or node), made with rcgen.
//!
//! Layout of a PKI directory (what `tern certs init` writes and what [`crate::transport::tls`]
//! reads): `ca.pem`, `ca.key`, and `<identity>.pem` / `<identity>.key` per identity, where
//! `<identity>` is [`Identity::short_name`] (`a`, `n1.a`). Private keys are written with mode
//! 0600. Keys are ECDSA P-256; certificates use rcgen's default validity (1975 to 4096), which is
//! fine for development and tests and must not be used for production (use a real CA there: the
//! transport only needs `ca.pem` plus its own certificate and key).
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;

use super::identity::{Identity, IdentityError};

/// File name of the CA certificate in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";

#[derive(Debug, Error)]
pub enum CertError {
    #[error("generate certificate for {subject}: {source}")]
    Generate {
        subject: String,
        source: rcgen::Error,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {}: {source}", path.display())]
    Parse { path: PathBuf, source: rcgen::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("no sites given")]
    NoSites,
}

/// A development certificate authority that can issue identity certificates.
pub struct DevCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate (PEM) and its private key (PEM) for one identity.
pub struct IssuedCert {
    pub identity: Identity,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// What [`init_dev_pki`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiSummary {
    pub dir: PathBuf,
    /// True when `ca.pem`/`ca.key` already existed and were reused (so earlier certificates
    /// stay valid); false when a new CA was generated.
    pub ca_reused: bool,
    /// Every identity a certificate was written for, in the order written.
    pub identities: Vec<Identity>,
}

/// Generates a self-signed CA named `name` (its subject common name).
pub fn generate_ca(name: &str) -> Result<DevCa, CertError> {
    let generate = |source| CertError::Generate {
        subject: name.to_owned(),
        source,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "tern development PKI");
    // Leaves are signed directly by this CA: no intermediates allowed.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok(DevCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

/// Issues a certificate for `identity`, signed by `ca`, usable both as a TLS server and client
/// certificate (every connection is mutually authenticated). Its only subjectAltName is the
/// identity's DNS name.
pub fn issue(ca: &DevCa, identity: &Identity) -> Result<IssuedCert, CertError> {
    let generate = |source| CertError::Generate {
        subject: identity.to_string(),
        source,
    };
    let mut params =
        CertificateParams::new(vec![identity.dns_name().to_owned()]).map_err(generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.dns_name());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(generate)?;
    Ok(IssuedCert {
        identity: identity.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl DevCa {
    /// The CA certificate, PEM; this is the trust root every peer is configured with.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.pem` and `ca.key` (0600) into `dir`, creating it if needed.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write_public(&dir.join(CA_CERT_FILE), &self.cert_pem)?;
        write_private(&dir.join(CA_KEY_FILE), &self.key_pem)
    }

    /// Reads `ca.pem` and `ca.key` from `dir`, to issue more certificates under an existing CA.
    pub fn load_from_dir(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CertError::Parse {
            path: key_path,
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CertError::Parse {
                path: cert_path,
                source,
            })?;
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
        })
    }
}

impl IssuedCert {
    /// Writes `<identity>.pem` and `<identity>.key` (0600) into `dir`, creating it if needed.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        let (cert_path, key_path) = identity_paths(dir, &self.identity);
        write_public(&cert_path, &self.cert_pem)?;
        write_private(&key_path, &self.key_pem)
    }
}

/// Paths of an identity's certificate and key inside a PKI directory.
pub fn identity_paths(dir: &Path, identity: &Identity) -> (PathBuf, PathBuf) {
    let stem = identity.short_name();
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// `tern certs init --sites a,b,c [--nodes N] --out DIR`: a development PKI for local runs and
/// the demo. Reuses the CA already in `out_dir` if there is one (so certificates issued before
/// stay valid), else generates one. Writes one certificate per site (`a.tern`, for the WAN
/// gateway) and, when `nodes_per_site > 0`, one per node `n1..nN` of each site (`n1.a.tern`).
/// Existing identity files are overwritten.
pub fn init_dev_pki(
    out_dir: &Path,
    sites: &[String],
    nodes_per_site: u32,
) -> Result<DevPkiSummary, CertError> {
    if sites.is_empty() {
        return Err(CertError::NoSites);
    }
    // Validate every name before writing anything, so a typo leaves no half-made PKI.
    let mut identities = Vec::new();
    for site in sites {
        identities.push(Identity::site(site)?);
        for n in 1..=nodes_per_site {
            identities.push(Identity::node(site, &format!("n{n}"))?);
        }
    }
    let ca_reused = out_dir.join(CA_CERT_FILE).exists() && out_dir.join(CA_KEY_FILE).exists();
    let ca = if ca_reused {
        DevCa::load_from_dir(out_dir)?
    } else {
        let ca = generate_ca("tern development CA")?;
        ca.write_to_dir(out_dir)?;
        ca
    };
    for identity in &identities {
        issue(&ca, identity)?.write_to_dir(out_dir)?;
    }
    Ok(DevPkiSummary {
        dir: out_dir.to_owned(),
        ca_reused,
        identities,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write_public(path: &Path, contents: &str) -> Result<(), CertError> {
    fs::write(path, contents).map_err(|source| CertError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Writes a private key readable by its owner only. The mode is set on creation *and* after,
/// because `mode` is ignored when the file already exists with looser permissions.
fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    let io = |action, source| CertError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path).map_err(|e| io("create", e))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restrict permissions of", e))?;
        write_all(file, contents).map_err(|e| io("write", e))
    }
    #[cfg(not(unix))]
    {
        let file = options.open(path).map_err(|e| io("create", e))?;
        write_all(file, contents).map_err(|e| io("write", e))
    }
}

fn write_all(mut file: fs::File, contents: &str) -> std::io::Result<()> {
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_its_identity() {
        let ca = generate_ca("test CA").expect("generate CA");
        for identity in [
            Identity::site("a").expect("valid"),
            Identity::node("a", "n3").expect("valid"),
        ] {
            let issued = issue(&ca, &identity).expect("issue");
            let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
                .expect("PEM parses");
            assert_eq!(
                Identity::from_certificate_der(&der).expect("names an identity"),
                identity
            );
        }
    }

    use rustls::pki_types::pem::PemObject;
}
