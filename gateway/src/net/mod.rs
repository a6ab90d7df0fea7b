//! The WAN transport between site gateways: QUIC with mutual TLS, one connection and one
//! bidirectional stream per link, carrying [`wire`](crate::wire) frames both ways.
//!
//! - Every gateway presents its site certificate (`<site>.tern`, issued by the grid's CA) as
//!   server *and* client; both sides check the other's chain against the CA. The dialer also
//!   checks that the server's certificate names the site it meant to reach; the acceptor reads
//!   the dialer's site from its certificate and admits it only if it is in the allowed set
//!   ([`WanEndpoint::set_allowed`]). The ALPN is [`WAN_ALPN`], distinct from the node transport's,
//!   so a node port and a gateway port can never be cross-wired.
//! - The dialing side is the delegator (sends `Hello`, `Batch`), the accepting side the sink;
//!   the API itself is symmetric. **The dialer must send first** (normally `Hello`): QUIC only
//!   announces a stream to the peer with its first bytes, so [`WanEndpoint::accept`] yields the
//!   link once they arrive (or refuses it after `connect_timeout_ms`).
//! - QUIC keep-alives every `keep_alive_ms` and an idle timeout of `idle_timeout_ms` make a cut
//!   WAN (packets silently dropped) fail `recv` on both sides within about `idle_timeout_ms`.
//!
//! | file | job |
//! |---|---|
//! | [`tls`] | rustls/quinn configs with the WAN ALPN, transport parameters, stateless-reset key |
//! | [`endpoint`] | [`WanEndpoint`]: bind, dial, accept with site checks, refusal counters |
//! | [`link`] | [`WanLink`], [`WanSender`], [`WanReceiver`]: frames on the link's stream |
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::limits::GatewayLimits;
use crate::wire::{EncodeError, WireError};
use serde::{Deserialize, Serialize};
use tern_node::transport::{IdentityError, TlsError};

pub mod endpoint;
pub mod link;
pub mod tls;

#[cfg(test)]
mod tests;

pub use endpoint::{REFUSAL_REASONS, WanEndpoint};
pub use link::{WanLink, WanReceiver, WanSender};
pub use tls::WAN_ALPN;

/// Transport limits of the WAN endpoint, each named with its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WanNetLimits {
    /// Largest frame sent or accepted; a bigger incoming frame fails the link.
    pub frame_bytes_max: usize,
    /// A link with no packet from the peer for this long is dead (QUIC idle timeout; the
    /// effective value is the smaller of both sides').
    pub idle_timeout_ms: u64,
    /// QUIC keep-alive interval: keeps a quiet link from idling out and probes a cut one.
    pub keep_alive_ms: u64,
    /// Bound on dialing (handshake plus opening the stream) and on an accepted connection's
    /// first bytes.
    pub connect_timeout_ms: u64,
}

impl Default for WanNetLimits {
    fn default() -> Self {
        Self {
            frame_bytes_max: GatewayLimits::default().frame_bytes_max,
            idle_timeout_ms: 3_000,
            keep_alive_ms: 500,
            connect_timeout_ms: 3_000,
        }
    }
}

impl WanNetLimits {
    /// Checks the limits are usable together.
    pub fn validate(&self) -> Result<(), WanNetError> {
        let invalid = |reason: String| Err(WanNetError::Limits(reason));
        if self.frame_bytes_max <= crate::wire::HEADER_BYTES
            || u32::try_from(self.frame_bytes_max).is_err()
        {
            return invalid(format!(
                "frame_bytes_max ({}) must exceed the {}-byte frame header and fit in 32 bits",
                self.frame_bytes_max,
                crate::wire::HEADER_BYTES
            ));
        }
        if self.idle_timeout_ms == 0 || self.keep_alive_ms == 0 || self.connect_timeout_ms == 0 {
            return invalid(
                "idle_timeout_ms, keep_alive_ms and connect_timeout_ms must be > 0".into(),
            );
        }
        if self.keep_alive_ms >= self.idle_timeout_ms {
            return invalid(format!(
                "keep_alive_ms ({}) must be below idle_timeout_ms ({}), or quiet links idle out",
                self.keep_alive_ms, self.idle_timeout_ms
            ));
        }
        Ok(())
    }
}

/// Why a WAN transport operation failed. Each message names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum WanNetError {
    #[error("invalid WAN transport limits: {0}")]
    Limits(String),
    #[error("bind the WAN endpoint: no tokio runtime is running")]
    NoRuntime,
    #[error("use site name {site:?}: {source}")]
    InvalidSite { site: String, source: IdentityError },
    #[error("load TLS material for site {site} from {dir}: {source}")]
    LoadTls {
        site: String,
        dir: PathBuf,
        source: TlsError,
    },
    #[error("check own certificate: it names {found}, expected {expected}")]
    OwnCertificate { expected: String, found: String },
    #[error("build the WAN TLS configuration: {0}")]
    BuildTls(String),
    #[error("bind UDP {addr} for the WAN endpoint: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dial site {site} at {addr}: {source}")]
    Dial {
        site: String,
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("connect to site {site} at {addr}: {source}")]
    Connect {
        site: String,
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("connect to site {site} at {addr}: no answer within {timeout_ms} ms")]
    ConnectTimeout {
        site: String,
        addr: SocketAddr,
        timeout_ms: u64,
    },
    #[error("connect to site {expected} at {addr}: the peer's certificate names {found}")]
    WrongPeer {
        expected: String,
        addr: SocketAddr,
        found: String,
    },
    #[error("encode a message for site {site}: {source}")]
    Encode { site: String, source: EncodeError },
    #[error("send to site {site}: {source}")]
    Write {
        site: String,
        source: quinn::WriteError,
    },
    #[error("receive from site {site}: {source}")]
    Read {
        site: String,
        source: quinn::ReadError,
    },
    #[error("decode a frame from site {site}: {source}")]
    Decode { site: String, source: WireError },
    #[error("receive from site {site}: the stream ended inside a frame ({bytes} bytes left over)")]
    Truncated { site: String, bytes: usize },
    #[error("use the WAN endpoint: it is closed")]
    EndpointClosed,
}
