//! Mutual TLS for the transport: quinn server/client configs from (CA, own cert, own key).
//!
//! - The server requires a client certificate signed by a configured CA (`WebPkiClientVerifier`).
//! - The client verifies the server against the CA *and* the identity it meant to dial (the
//!   DNS name in the certificate's subjectAltName).
//! - After the handshake the endpoint reads the peer's identity from its certificate and checks
//!   it against the allow-list (see `endpoint.rs`).
//!
//! Both verifiers are wrapped to log and count refusals in [`TransportStats`]. One crypto
//! provider, `ring`, is used explicitly (never the process default), matching quinn's
//! `rustls-ring` feature. TLS session resumption is off: connections are long-lived, and a full
//! handshake means every connection's certificate is checked against the current CA.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;

use super::certs::{CA_CERT_FILE, DevCa, IssuedCert, identity_paths};
use super::config::TransportLimits;
use super::identity::{Identity, IdentityError};
use super::stats::{TransportStats, add};

/// The one application protocol the transport speaks.
pub const ALPN: &[u8] = b"tern/1";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("read {what} from {source_name}: {source}")]
    Pem {
        what: &'static str,
        source_name: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} contains no certificate")]
    NoCertificate(String),
    #[error("add CA certificate to the trust store: {0}")]
    TrustStore(rustls::Error),
    #[error("build client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("build TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS config unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
    #[error("own certificate: {0}")]
    OwnIdentity(#[from] IdentityError),
    #[error("idle_timeout_ms out of QUIC's range")]
    IdleTimeout,
}

/// Trust roots plus own certificate chain and key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// CA certificates a peer's certificate must chain to.
    pub ca_roots: Vec<CertificateDer<'static>>,
    /// Own certificate first, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            ca_roots: self.ca_roots.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsMaterial {
    /// From PEM text: the CA bundle, own certificate chain, own private key.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Ok(Self {
            ca_roots: certs_from_pem(ca_pem.as_bytes(), "CA certificate")?,
            cert_chain: certs_from_pem(cert_pem.as_bytes(), "certificate")?,
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| {
                TlsError::Pem {
                    what: "private key",
                    source_name: "PEM text".into(),
                    source,
                }
            })?,
        })
    }

    /// From a PKI directory as written by [`super::certs::init_dev_pki`]: `ca.pem`,
    /// `<identity>.pem`, `<identity>.key`.
    pub fn from_dir(dir: &Path, identity: &Identity) -> Result<Self, TlsError> {
        let (cert_path, key_path) = identity_paths(dir, identity);
        Ok(Self {
            ca_roots: certs_from_file(&dir.join(CA_CERT_FILE), "CA certificate")?,
            cert_chain: certs_from_file(&cert_path, "certificate")?,
            key: PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Pem {
                what: "private key",
                source_name: key_path.display().to_string(),
                source,
            })?,
        })
    }

    /// From an in-memory CA and issued certificate (tests, demos).
    pub fn from_issued(ca: &DevCa, issued: &IssuedCert) -> Result<Self, TlsError> {
        Self::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem)
    }

    /// The identity our own certificate names.
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        let leaf = self
            .cert_chain
            .first()
            .ok_or(IdentityError::CertificateNamesNoIdentity)?;
        Identity::from_certificate_der(leaf)
    }

    fn root_store(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.ca_roots {
            roots.add(ca.clone()).map_err(TlsError::TrustStore)?;
        }
        Ok(Arc::new(roots))
    }
}

fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            source_name: "PEM text".into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(format!("{what} PEM text")));
    }
    Ok(certs)
}

fn certs_from_file(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        source_name: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC transport parameters shared by both directions.
pub(crate) fn quic_transport_config(
    limits: &TransportLimits,
) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_interval_ms)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
            .map_err(|_| TlsError::IdleTimeout)?,
    ));
    // One stream per channel per direction, plus headroom for streams replaced after a stop.
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(64));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    Ok(Arc::new(transport))
}

/// The server side: requires a client certificate from a configured CA.
pub fn server_config(
    material: &TlsMaterial,
    limits: &TransportLimits,
    stats: Arc<TransportStats>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
        material.root_store()?,
        provider.clone(),
    )
    .build()?;
    let verifier = Arc::new(CountingClientVerifier { inner, stats });
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.send_tls13_tickets = 0;
    crypto.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    config.transport_config(quic_transport_config(limits)?);
    Ok(config)
}

/// The client side: verifies the server against the CA and the dialed identity's DNS name
/// (passed to `Endpoint::connect_with` as the server name), and presents our certificate.
pub fn client_config(
    material: &TlsMaterial,
    limits: &TransportLimits,
    stats: Arc<TransportStats>,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        material.root_store()?,
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(CountingServerVerifier { inner, stats });
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.resumption = rustls::client::Resumption::disabled();
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    config.transport_config(quic_transport_config(limits)?);
    Ok(config)
}

/// A stateless-reset key derived from our private key, so it survives restarts: when a peer
/// keeps sending on a connection our previous process owned, the restarted endpoint answers with
/// a reset the peer can verify, and the peer notices at once instead of after the idle timeout.
pub(crate) fn stateless_reset_key(material: &TlsMaterial) -> ring::hmac::Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tern transport stateless reset v1");
    ctx.update(material.key.secret_der());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref())
}

/// The identity named by the certificate the peer presented on `conn`.
pub fn peer_identity(conn: &quinn::Connection) -> Result<Identity, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::CertificateNamesNoIdentity)?;
    let leaf = certs
        .first()
        .ok_or(IdentityError::CertificateNamesNoIdentity)?;
    Identity::from_certificate_der(leaf)
}

/// Logs and counts a refused peer certificate; `role` says which side presented it.
fn record_refusal(
    stats: &TransportStats,
    role: &str,
    end_entity: &CertificateDer<'_>,
    error: &rustls::Error,
) {
    let claimed = Identity::from_certificate_der(end_entity)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| "<no tern identity>".into());
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            add(&stats.refused_unknown_ca_total, 1);
            tracing::warn!(peer = %claimed, role, "refused peer certificate: not signed by a configured CA");
        }
        other => {
            add(&stats.refused_bad_certificate_total, 1);
            tracing::warn!(peer = %claimed, role, error = %other, "refused peer certificate");
        }
    }
}

#[derive(Debug)]
struct CountingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    stats: Arc<TransportStats>,
}

impl ClientCertVerifier for CountingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| record_refusal(&self.stats, "client", end_entity, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct CountingServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    stats: Arc<TransportStats>,
}

impl ServerCertVerifier for CountingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| record_refusal(&self.stats, "server", end_entity, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
