//! rustls and quinn configurations for the WAN link, following the node transport's
//! (`tern_node::transport::tls`) choices with the WAN's own ALPN and limits:
//! TLS 1.3 only, the `ring` provider passed explicitly (never the process default), client
//! certificates mandatory and checked against the CA, no session resumption (every connection
//! is checked against the current CA in a full handshake).
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use tern_node::transport::TlsMaterial;

use super::{WanNetError, WanNetLimits};

/// The application protocol WAN gateways speak; a node transport port (ALPN `tern/1`) refuses
/// it in the handshake and vice versa.
pub const WAN_ALPN: &[u8] = b"tern-wan/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_error(error: impl std::fmt::Display) -> WanNetError {
    WanNetError::BuildTls(error.to_string())
}

fn root_store(material: &TlsMaterial) -> Result<Arc<rustls::RootCertStore>, WanNetError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in &material.ca_roots {
        roots.add(ca.clone()).map_err(build_error)?;
    }
    Ok(Arc::new(roots))
}

/// Transport parameters for both roles: keep-alive and idle timeout detect a cut WAN; the peer
/// may open exactly one bidirectional stream (the link's) and no unidirectional ones.
pub(crate) fn transport_config(
    limits: &WanNetLimits,
) -> Result<Arc<quinn::TransportConfig>, WanNetError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_ms)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
            .map_err(|_| WanNetError::Limits("idle_timeout_ms is out of QUIC's range".into()))?,
    ));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Ok(Arc::new(transport))
}

/// The accepting role: requires a client certificate chaining to the CA. Which site it names
/// (and whether that site is allowed) is checked after the handshake, see `endpoint.rs`.
pub(crate) fn server_config(
    material: &TlsMaterial,
    limits: &WanNetLimits,
) -> Result<quinn::ServerConfig, WanNetError> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        root_store(material)?,
        provider.clone(),
    )
    .build()
    .map_err(build_error)?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(build_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())
        .map_err(build_error)?;
    crypto.alpn_protocols = vec![WAN_ALPN.to_vec()];
    crypto.send_tls13_tickets = 0;
    crypto.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(crypto).map_err(build_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// The dialing role: verifies the server against the CA and the dialed site's DNS name (the
/// server name passed to `connect_with`), and presents our certificate.
pub(crate) fn client_config(
    material: &TlsMaterial,
    limits: &WanNetLimits,
) -> Result<quinn::ClientConfig, WanNetError> {
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(build_error)?
        .with_root_certificates(root_store(material)?)
        .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())
        .map_err(build_error)?;
    crypto.alpn_protocols = vec![WAN_ALPN.to_vec()];
    crypto.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(crypto).map_err(build_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// A stateless-reset key derived from our private key, so it survives restarts: a peer still
/// sending on a connection the previous process owned gets a verifiable reset and notices at
/// once instead of after the idle timeout. Domain-separated from the node transport's key.
pub(crate) fn stateless_reset_key(material: &TlsMaterial) -> ring::hmac::Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tern WAN gateway stateless reset v1");
    ctx.update(material.key.secret_der());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref())
}
