//! QUIC transport between nodes of a site and between sites' gateways (quinn + rustls, mutual
//! TLS). See docs/design/site-ha.md.
//!
//! - [`identity`]: who a peer is (`n1.a.tern`, `a.tern`), read from its certificate;
//! - [`certs`]: the development PKI (`tern certs init`);
//! - [`tls`]: quinn server/client configs, refusal counting, the peer identity after handshake;
//! - [`frame`]: channels and the length-prefixed framing on long-lived streams;
//! - [`endpoint`]: the [`Transport`] handle (bind, dial/accept, send, status);
//! - `connection`: per-peer link, writer and reader tasks;
//! - [`config`], [`stats`]: limits and peers; counters and per-peer status;
//! - [`addr`]: peer addresses (IP or DNS name) and how they are resolved.
pub mod addr;
pub mod certs;
pub mod config;
mod connection;
pub mod endpoint;
pub mod frame;
pub mod identity;
pub mod stats;
pub mod tls;

pub use addr::{PeerAddr, PeerAddrError, Resolve, Resolving, SystemResolver};
pub use config::{PeerConfig, TransportConfig, TransportLimits};
pub use endpoint::{Inbound, PeerSender, SendError, Transport, TransportError, bind_udp_socket};
pub use frame::Channel;
pub use identity::{Identity, IdentityError};
pub use stats::{PeerStatus, TransportStats, TransportStatsSnapshot};
pub use tls::{ALPN, TlsError, TlsMaterial};
