//! The WAN gateway's part of the operations surface: the status the gateway host publishes and
//! the requests operators send it. Data only, like [`super::status`]: the gateway (crate
//! `tern-gateway`, which depends on this one) writes [`WanStatus`] into the [`WanHub`] and reads
//! [`WanAdminRequest`]s from the channel the node created; the HTTP layer reads and sends.
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Everything the gateway of this site reports. Counters only grow while the process lives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WanStatus {
    /// This site's name (`[wan] site`).
    pub site: String,
    /// This site's id (`site` of the node config).
    pub site_id: u16,
    /// One per target site this gateway ships to, in site-name order.
    pub targets: Vec<WanTargetStatus>,
    /// One per source site this gateway receives from, in site-name order.
    pub sources: Vec<WanSourceStatus>,
    /// Incoming connections refused, by reason (`unknown_ca`, `unknown_site`, ...).
    pub refused_total: Vec<(String, u64)>,
}

/// The sending side towards one target site (its delegator).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WanTargetStatus {
    pub site: String,
    pub site_id: u16,
    pub addr: String,
    pub connected: bool,
    /// Records kept until the target acknowledges them.
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// Records the target acknowledged (applied) since this process started.
    pub shipped_total: u64,
    /// Records not shipped because the target is their origin.
    pub filtered_total: u64,
    /// Partitions marked for repair (anti-entropy pending or running).
    pub repairing_partitions: Vec<u16>,
    /// The backlog passed its byte cap and dropped records (DropAndRepair) this many times.
    pub overflows_total: u64,
    /// Local writes are blocked because the backlog is full (BlockWrites).
    pub write_blocked: bool,
    /// Why the delegator stopped, if it did (store failure).
    pub failure: Option<String>,
    /// Repairs completed towards this target.
    pub repairs_total: u64,
}

/// The receiving side from one source site (its sink).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WanSourceStatus {
    pub site: String,
    pub site_id: u16,
    pub connected: bool,
    /// Records applied through the local partition primaries since this process started.
    pub applied_total: u64,
    /// Records received again and skipped (resends, duplicates).
    pub duplicates_total: u64,
    /// Concurrent writes resolved, by resolver name, in name order.
    pub conflicts_total: Vec<(String, u64)>,
    /// Local commit at the source → applied here, of the last record applied (ms; clocks of
    /// the two sites assumed synchronised within `hlc_offset_ms_max`).
    pub lag_ms_last: Option<u64>,
    /// Lag percentiles over the recent window (ms).
    pub lag_ms_p50: Option<u64>,
    pub lag_ms_p99: Option<u64>,
    /// Cumulative lag histogram for `tern_wan_lag_seconds`: (upper bound in seconds, count
    /// of applied records with lag ≤ bound), bounds ascending, plus the sum of lags in seconds.
    pub lag_buckets: Vec<(f64, u64)>,
    pub lag_seconds_sum: f64,
    pub lag_count: u64,
}

/// A target site an operator adds at runtime (`POST /v1/wan/targets`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanTargetSpec {
    pub site: String,
    pub site_id: u16,
    /// `ip:port` of the target's gateway (UDP).
    pub addr: String,
}

/// An operator request to the gateway host.
#[derive(Debug)]
pub enum WanAdminRequest {
    /// Start shipping to (and accept connections from) a new peer site.
    AddTarget {
        spec: WanTargetSpec,
        reply: oneshot::Sender<Result<(), WanAdminError>>,
    },
    /// Stop shipping to a peer site and refuse its connections; its backlog is deleted.
    RemoveTarget {
        site: String,
        reply: oneshot::Sender<Result<(), WanAdminError>>,
    },
    /// Run anti-entropy against a peer site now (every partition).
    Repair {
        site: String,
        reply: oneshot::Sender<Result<(), WanAdminError>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum WanAdminError {
    #[error("this node runs no WAN gateway (no [wan] section)")]
    NoGateway,
    #[error("unknown site {0:?}")]
    UnknownSite(String),
    #[error("site {0:?} is already a target")]
    AlreadyTarget(String),
    #[error("invalid target: {0}")]
    Invalid(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Shared between the gateway host (writer of the status, reader of requests) and the HTTP
/// layer (reader of the status, sender of requests). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WanHub {
    latest: Arc<RwLock<Option<WanStatus>>>,
    requests: Arc<Mutex<Option<mpsc::Sender<WanAdminRequest>>>>,
}

impl WanHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// The gateway's latest status; `None` when this node runs no gateway.
    pub fn get(&self) -> Option<WanStatus> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn publish(&self, status: WanStatus) {
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Called once by the gateway host: requests sent from now on reach the returned receiver.
    pub fn attach(&self, queue_len: usize) -> mpsc::Receiver<WanAdminRequest> {
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Where to send a request; `None` when no gateway is attached.
    pub fn sender(&self) -> Option<mpsc::Sender<WanAdminRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
