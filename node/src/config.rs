//! A node's configuration. The binary loads it with figment (TOML file, then `TERN_*`
//! environment variables nested with `__`, e.g. `TERN_LIMITS__CONNECTIONS_MAX`); every field
//! has a default so an empty file is a valid single-node setup.
use crate::cluster::ClusterTimings;
use crate::core::SLOT_COUNT;
use crate::limits::Limits;
pub use crate::transport::PeerAddr;
use crate::transport::{Identity, TransportLimits};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Most partition arbiters (threads) a node may run. Far above any core count this node type
/// targets; it only catches typos such as `workers = 100000` that would exhaust threads.
pub const WORKERS_MAX: usize = 1024;

/// Longest housekeeping interval: expiry and tombstone sweeps must run at least this often.
pub const TICK_MS_MAX: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address of the RESP listener; port 0 lets the OS choose (tests).
    pub listen: SocketAddr,
    /// Number of partitions of the keyspace (1..=16384). Every node and site must agree on it.
    pub partitions: u32,
    /// This site's id, stamped on every version this node creates.
    pub site: u16,
    /// When set, clients must AUTH (or HELLO ... AUTH) with this password first.
    pub requirepass: Option<String>,
    /// Partition arbiters (threads); 0 means one per available core.
    pub workers: usize,
    /// Housekeeping interval of every partition (expiry and tombstone sweeps).
    pub tick_ms: u64,
    /// Address of the admin HTTP server (`/livez`, `/readyz`, `/metrics`, `/v1/...`); none
    /// when unset.
    pub admin_listen: Option<SocketAddr>,
    pub limits: Limits,
    /// Membership of a multi-node site. Without it the node is a one-node site.
    pub cluster: Option<ClusterConfig>,
    /// This node runs its site's WAN gateway. Without it the site replicates to no other site.
    pub wan: Option<WanConfig>,
}

/// `[wan]`: the WAN gateway this node runs for its site (one node per site runs it). The
/// gateway ships every committed change of the site's partitions to each peer site and applies
/// theirs through the local partition primaries. Fine-grained protocol limits keep the
/// defaults of `tern_gateway::GatewayLimits`; the knobs here are the ones operators tune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// This site's name (a DNS label); the gateway's certificate names `<site>.tern`. With a
    /// `[cluster]` section it must equal `cluster.site`.
    pub site: String,
    /// UDP address the gateway's QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Directory with `ca.pem` and `<site>.pem` / `<site>.key` (`tern certs init --sites`).
    pub tls_dir: PathBuf,
    /// Directory of the durable backlogs (one per target site) and the sink cursors.
    pub data_dir: PathBuf,
    /// The other sites (full mesh). Connections from sites not listed are refused.
    #[serde(default)]
    pub peers: Vec<WanPeer>,
    /// Which conflict resolver applies to which keys (first matching prefix wins), by
    /// registry name (`lww`, `site-priority`, `counter-merge`, or a registered plugin).
    #[serde(default)]
    pub resolvers: Vec<WanResolverRule>,
    /// The resolver for keys no rule matches.
    #[serde(default = "default_wan_resolver")]
    pub default_resolver: String,
    /// A batch leaves at most this long after its oldest record was committed.
    #[serde(default = "default_wan_batch_wait_ms_max")]
    pub batch_wait_ms_max: u64,
    /// Cap on each target's durable backlog.
    #[serde(default = "default_wan_backlog_bytes_max")]
    pub backlog_bytes_max: u64,
    /// When backlog appends reach the disk.
    #[serde(default)]
    pub fsync: WanFsync,
    /// With `fsync = "interval"`: longest time appended records wait for an fsync.
    #[serde(default = "default_wan_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// What a full backlog does.
    #[serde(default)]
    pub overflow: WanOverflow,
    /// A partition whose change log had nothing new is asked again after at most this long.
    #[serde(default = "default_wan_feed_poll_ms_max")]
    pub feed_poll_ms_max: u64,
    /// Most records (and bytes) read from one partition's change log per request.
    #[serde(default = "default_wan_feed_records_max")]
    pub feed_records_max: u32,
    #[serde(default = "default_wan_feed_bytes_max")]
    pub feed_bytes_max: u32,
    /// Applied cursors of the sinks are written to disk at most this often (a cursor older
    /// than the data only replays records, which apply idempotently).
    #[serde(default = "default_wan_cursor_persist_ms")]
    pub cursor_persist_ms: u64,
    /// Anti-entropy against every peer this often (0: only after an overflow or on request).
    #[serde(default = "default_wan_repair_interval_ms")]
    pub repair_interval_ms: u64,
    /// A lost peer connection is dialed again after this long (doubling up to 16×).
    #[serde(default = "default_wan_reconnect_ms")]
    pub reconnect_ms: u64,
    /// Bytes per second of repair traffic on each peer link, each direction. Bootstrapping a
    /// new or wiped site is a repair of every partition, so this paces it; the live stream is
    /// not counted and never waits for it. At least 1.
    #[serde(default = "default_wan_bootstrap_bytes_per_sec_max")]
    pub bootstrap_bytes_per_sec_max: u64,
}

/// `[[wan.peers]]`: another site's gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanPeer {
    /// The peer site's name; its certificate must name `<site>.tern`.
    pub site: String,
    /// The peer site's id (its nodes' `site`), unique across sites.
    pub site_id: u16,
    /// Where its gateway listens (UDP): `ip:port` or `dns-name:port` (resolved again before
    /// every dial, so a gateway that moved is found at its new address).
    pub addr: PeerAddr,
}

/// `[[wan.resolvers]]`: keys starting with `prefix` are resolved by `resolver`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanResolverRule {
    pub prefix: String,
    pub resolver: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WanFsync {
    Always,
    #[default]
    Interval,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WanOverflow {
    BlockWrites,
    #[default]
    DropAndRepair,
}

fn default_wan_resolver() -> String {
    "lww".to_owned()
}
fn default_wan_batch_wait_ms_max() -> u64 {
    5
}
fn default_wan_backlog_bytes_max() -> u64 {
    1024 * 1024 * 1024
}
fn default_wan_fsync_interval_ms() -> u64 {
    100
}
fn default_wan_feed_poll_ms_max() -> u64 {
    4
}
fn default_wan_feed_records_max() -> u32 {
    4096
}
fn default_wan_feed_bytes_max() -> u32 {
    4 * 1024 * 1024
}
fn default_wan_cursor_persist_ms() -> u64 {
    200
}
fn default_wan_repair_interval_ms() -> u64 {
    0
}
fn default_wan_reconnect_ms() -> u64 {
    200
}
fn default_wan_bootstrap_bytes_per_sec_max() -> u64 {
    32 * 1024 * 1024
}

/// Smallest `wan.backlog_bytes_max`: a backlog must hold at least a few full batches.
pub const WAN_BACKLOG_BYTES_MIN: u64 = 1024 * 1024;

impl WanConfig {
    /// A `[wan]` section with every optional field at its default and no peers.
    pub fn new(site: &str, listen: SocketAddr, tls_dir: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            site: site.to_owned(),
            listen,
            tls_dir,
            data_dir,
            peers: Vec::new(),
            resolvers: Vec::new(),
            default_resolver: default_wan_resolver(),
            batch_wait_ms_max: default_wan_batch_wait_ms_max(),
            backlog_bytes_max: default_wan_backlog_bytes_max(),
            fsync: WanFsync::default(),
            fsync_interval_ms: default_wan_fsync_interval_ms(),
            overflow: WanOverflow::default(),
            feed_poll_ms_max: default_wan_feed_poll_ms_max(),
            feed_records_max: default_wan_feed_records_max(),
            feed_bytes_max: default_wan_feed_bytes_max(),
            cursor_persist_ms: default_wan_cursor_persist_ms(),
            repair_interval_ms: default_wan_repair_interval_ms(),
            reconnect_ms: default_wan_reconnect_ms(),
            bootstrap_bytes_per_sec_max: default_wan_bootstrap_bytes_per_sec_max(),
        }
    }

    /// Checks what the gateway depends on; resolver names are checked against the registry
    /// when the gateway starts (plugins register there, not here).
    fn validate(&self, site_id: u16, cluster: Option<&ClusterConfig>) -> Result<(), ConfigError> {
        let fail = |field: &'static str, reason: String| Err(ConfigError::Wan { field, reason });
        if let Err(e) = Identity::site(&self.site) {
            return fail("site", e.to_string());
        }
        if let Some(cluster) = cluster
            && cluster.site != self.site
        {
            return fail(
                "site",
                format!(
                    "{:?} differs from cluster.site {:?}: a gateway serves its own site",
                    self.site, cluster.site
                ),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if let Err(e) = Identity::site(&peer.site) {
                return fail("peers", format!("peer {}: {e}", peer.site_id));
            }
            if peer.site == self.site {
                return fail(
                    "peers",
                    format!("peer {:?} is this site (wan.site)", peer.site),
                );
            }
            if peer.site_id == site_id {
                return fail(
                    "peers",
                    format!(
                        "peer {:?} has site id {}, this node's own site id",
                        peer.site, peer.site_id
                    ),
                );
            }
            if !names.insert(peer.site.as_str()) {
                return fail("peers", format!("site {:?} appears twice", peer.site));
            }
            if !ids.insert(peer.site_id) {
                return fail("peers", format!("site id {} appears twice", peer.site_id));
            }
        }
        for (i, rule) in self.resolvers.iter().enumerate() {
            if rule.resolver.is_empty() {
                return fail(
                    "resolvers",
                    format!(
                        "rule {i} (prefix {:?}): resolver must not be empty",
                        rule.prefix
                    ),
                );
            }
        }
        if self.default_resolver.is_empty() {
            return fail("default_resolver", "must not be empty".into());
        }
        for (field, value) in [
            ("batch_wait_ms_max", self.batch_wait_ms_max),
            ("feed_poll_ms_max", self.feed_poll_ms_max),
            ("feed_records_max", u64::from(self.feed_records_max)),
            ("feed_bytes_max", u64::from(self.feed_bytes_max)),
            ("cursor_persist_ms", self.cursor_persist_ms),
            ("reconnect_ms", self.reconnect_ms),
            (
                "bootstrap_bytes_per_sec_max",
                self.bootstrap_bytes_per_sec_max,
            ),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if self.fsync == WanFsync::Interval && self.fsync_interval_ms == 0 {
            return fail(
                "fsync_interval_ms",
                "must be at least 1 with fsync = \"interval\"".into(),
            );
        }
        if self.backlog_bytes_max < WAN_BACKLOG_BYTES_MIN {
            return fail(
                "backlog_bytes_max",
                format!(
                    "must be at least {WAN_BACKLOG_BYTES_MIN} (1 MiB), got {}",
                    self.backlog_bytes_max
                ),
            );
        }
        Ok(())
    }
}

/// `[cluster]`: this node's place in a multi-node site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id (non-zero, unique in the site); must be one of `peers`.
    pub node_id: u64,
    /// The site's name (a DNS label); node identities are `<name>.<site>`.
    pub site: String,
    /// This node's name (a DNS label, e.g. `n1`); must equal its entry in `peers`.
    pub name: String,
    /// UDP address the QUIC transport binds (may be a wildcard address; peers dial the
    /// `quic_addr` of this node's `peers` entry).
    pub listen_quic: SocketAddr,
    /// Directory with `ca.pem` and this node's `<name>.<site>.pem` / `.key` (`tern certs init`).
    pub tls_dir: PathBuf,
    /// Directory for the partition map's Raft state and the incarnation counter.
    pub data_dir: PathBuf,
    /// Backups per partition (each partition has one primary and this many backups).
    #[serde(default = "default_backups")]
    pub backups: u8,
    /// On graceful shutdown, how long to wait for this node's primaries to move elsewhere.
    #[serde(default = "default_shutdown_drain_ms_max")]
    pub shutdown_drain_ms_max: u64,
    /// The Raft leader does not propose a planned map command again within this long (it is
    /// probably still in flight; a duplicate would only be rejected).
    #[serde(default = "default_planner_repropose_ms")]
    pub planner_repropose_ms: u64,
    /// Every member of the site, this node included; the same list on every node.
    pub peers: Vec<ClusterPeer>,
    /// Start as a new member of a running site (its data directory empty): wait for the Raft
    /// leader to add it and send the map, instead of bootstrapping a site with `peers`. Like
    /// etcd's `initial-cluster-state = existing`. Ignored once the node has Raft state. (An
    /// empty file named `join` in `data_dir` does the same.)
    #[serde(default)]
    pub join_existing: bool,
    #[serde(default)]
    pub timings: ClusterTimings,
    #[serde(default = "default_transport_limits")]
    pub transport: TransportLimits,
}

/// `[[cluster.peers]]`: one member of the site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPeer {
    pub id: u64,
    /// Node name (identity `<name>.<site>`).
    pub name: String,
    /// Where other nodes reach it over QUIC: `IP:port` or `dns-name:port` (e.g. a StatefulSet
    /// pod's `tern-0.tern-peers:7400`), resolved again on every dial so a restarted pod's new IP
    /// is found. Checked when the config is read.
    pub quic_addr: PeerAddr,
    /// Where clients reach it (RESP), same forms; only shown in status.
    pub resp_addr: PeerAddr,
    /// Failure zone; a partition's copies go to distinct zones when labelled.
    #[serde(default)]
    pub zone: Option<String>,
}

fn default_backups() -> u8 {
    1
}

fn default_shutdown_drain_ms_max() -> u64 {
    10_000
}

fn default_planner_repropose_ms() -> u64 {
    500
}

/// The transport's limits, with frames large enough for the largest request a client may send
/// (`limits.frame_bytes_max`): a forwarded request or a replicated value travels in one frame.
pub fn default_transport_limits() -> TransportLimits {
    TransportLimits {
        frame_bytes_max: 64 * 1024 * 1024 + 1024 * 1024,
        ..TransportLimits::default()
    }
}

impl ClusterConfig {
    /// A cluster section with every optional field at its default.
    pub fn new(
        node_id: u64,
        site: &str,
        name: &str,
        listen_quic: SocketAddr,
        tls_dir: PathBuf,
        data_dir: PathBuf,
        peers: Vec<ClusterPeer>,
    ) -> Self {
        Self {
            node_id,
            site: site.to_owned(),
            name: name.to_owned(),
            listen_quic,
            tls_dir,
            data_dir,
            backups: default_backups(),
            shutdown_drain_ms_max: default_shutdown_drain_ms_max(),
            planner_repropose_ms: default_planner_repropose_ms(),
            peers,
            join_existing: false,
            timings: ClusterTimings::default(),
            transport: default_transport_limits(),
        }
    }

    /// This node's transport identity, `<name>.<site>`.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        Identity::node(&self.site, &self.name).map_err(|e| ConfigError::Cluster {
            field: "name",
            reason: e.to_string(),
        })
    }

    /// This node's entry in `peers`.
    pub fn own_peer(&self) -> Option<&ClusterPeer> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }

    fn validate(&self, limits: &Limits) -> Result<(), ConfigError> {
        let fail =
            |field: &'static str, reason: String| Err(ConfigError::Cluster { field, reason });
        if self.node_id == 0 {
            return fail("node_id", "must be non-zero".into());
        }
        self.identity()?;
        if self.peers.is_empty() {
            return fail(
                "peers",
                "must list every member of the site, this node included".into(),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if peer.id == 0 {
                return fail(
                    "peers",
                    format!("peer {:?}: id must be non-zero", peer.name),
                );
            }
            if let Err(e) = Identity::node(&self.site, &peer.name) {
                return fail("peers", format!("peer {}: {e}", peer.id));
            }
            if !ids.insert(peer.id) {
                return fail("peers", format!("id {} appears twice", peer.id));
            }
            if !names.insert(peer.name.as_str()) {
                return fail("peers", format!("name {:?} appears twice", peer.name));
            }
        }
        match self.own_peer() {
            None => {
                return fail(
                    "peers",
                    format!("must include this node (id {})", self.node_id),
                );
            }
            Some(own) if own.name != self.name => {
                return fail(
                    "name",
                    format!(
                        "{:?} differs from peer {}'s name {:?}",
                        self.name, self.node_id, own.name
                    ),
                );
            }
            Some(_) => {}
        }
        if usize::from(self.backups) >= self.peers.len() {
            return fail(
                "backups",
                format!(
                    "{} backups need at least {} peers, got {}",
                    self.backups,
                    usize::from(self.backups) + 1,
                    self.peers.len()
                ),
            );
        }
        if self.shutdown_drain_ms_max == 0 {
            return fail("shutdown_drain_ms_max", "must be at least 1".into());
        }
        let t = &self.timings;
        for (field, value) in [
            ("timings.heartbeat_interval_ms", t.heartbeat_interval_ms),
            ("timings.raft_tick_ms", t.raft_tick_ms),
            ("timings.raft_snapshot_entries", t.raft_snapshot_entries),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if t.node_failure_timeout_ms <= t.heartbeat_interval_ms {
            return fail(
                "timings.node_failure_timeout_ms",
                format!(
                    "must exceed timings.heartbeat_interval_ms ({}), got {}",
                    t.heartbeat_interval_ms, t.node_failure_timeout_ms
                ),
            );
        }
        if t.raft_heartbeat_ticks == 0 || t.raft_heartbeat_ticks >= t.raft_election_ticks {
            return fail(
                "timings.raft_heartbeat_ticks",
                format!(
                    "must be at least 1 and below timings.raft_election_ticks ({}), got {}",
                    t.raft_election_ticks, t.raft_heartbeat_ticks
                ),
            );
        }
        if let Err(reason) = self.transport.validate() {
            return fail("transport", reason);
        }
        // One replicated record (key + value) or one forwarded request must fit in a frame.
        let needed = limits
            .frame_bytes_max
            .max(limits.key_bytes_max + limits.value_bytes_max + limits.catchup_batch_bytes_max);
        if self.transport.frame_bytes_max < needed {
            return fail(
                "transport.frame_bytes_max",
                format!(
                    "must be at least {needed} (limits.frame_bytes_max, or the largest key and \
                     value plus a catch-up batch), got {}",
                    self.transport.frame_bytes_max
                ),
            );
        }
        Ok(())
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6379)),
            partitions: 64,
            site: 1,
            requirepass: None,
            workers: 0,
            tick_ms: 100,
            admin_listen: None,
            limits: Limits::default(),
            cluster: None,
            wan: None,
        }
    }
}

/// A configuration value the node cannot run with; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("partitions: must be between 1 and {SLOT_COUNT}, got {0}")]
    Partitions(u32),
    #[error("workers: must be at most {WORKERS_MAX} (0 = one per core), got {0}")]
    TooManyWorkers(usize),
    #[error("tick_ms: must be between 1 and {TICK_MS_MAX}, got {0}")]
    TickMs(u64),
    #[error("requirepass: must not be empty; leave it unset to disable authentication")]
    EmptyPassword,
    #[error("limits.{field}: must be at least {min}, got {value}")]
    LimitTooSmall {
        field: &'static str,
        min: u64,
        value: u64,
    },
    #[error("limits.{field}: must be at most {max}, got {value}")]
    LimitTooLarge {
        field: &'static str,
        max: usize,
        value: usize,
    },
    #[error("cluster.{field}: {reason}")]
    Cluster { field: &'static str, reason: String },
    #[error("wan.{field}: {reason}")]
    Wan { field: &'static str, reason: String },
    #[error("limits.{field}: must not exceed limits.frame_bytes_max ({frame}), got {value}")]
    LimitAboveFrame {
        field: &'static str,
        frame: usize,
        value: usize,
    },
}

impl NodeConfig {
    /// Checks every value the node depends on, so a bad config fails at startup with a clear
    /// message rather than later with a confusing one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > u32::from(SLOT_COUNT) {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if self.workers > WORKERS_MAX {
            return Err(ConfigError::TooManyWorkers(self.workers));
        }
        if self.tick_ms == 0 || self.tick_ms > TICK_MS_MAX {
            return Err(ConfigError::TickMs(self.tick_ms));
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(ConfigError::EmptyPassword);
        }
        self.validate_limits()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate(&self.limits)?;
        }
        match &self.wan {
            Some(wan) => wan.validate(self.site, self.cluster.as_ref()),
            None => Ok(()),
        }
    }

    /// Number of partition arbiters to start: `workers`, or one per core when 0.
    pub fn effective_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        // The smallest values with which the node still works: a frame must hold at least
        // `*1\r\n$4\r\nPING\r\n`, SET needs 3 arguments, and so on.
        let minimums: [(&'static str, usize, usize); 15] = [
            ("frame_bytes_max", l.frame_bytes_max, 64),
            ("value_bytes_max", l.value_bytes_max, 1),
            ("key_bytes_max", l.key_bytes_max, 1),
            ("args_per_command_max", l.args_per_command_max, 3),
            ("connections_max", l.connections_max, 1),
            ("pipeline_commands_max", l.pipeline_commands_max, 1),
            (
                "partition_mailbox_messages_max",
                l.partition_mailbox_messages_max,
                1,
            ),
            ("expiry_sweep_keys_max", l.expiry_sweep_keys_max, 1),
            ("scan_count_max", l.scan_count_max, 1),
            ("replicate_batch_bytes_max", l.replicate_batch_bytes_max, 1),
            (
                "replicate_inflight_bytes_max",
                l.replicate_inflight_bytes_max,
                l.replicate_batch_bytes_max.max(1),
            ),
            ("catchup_batch_bytes_max", l.catchup_batch_bytes_max, 1),
            ("dedup_requests_max", l.dedup_requests_max, 1),
            ("epoch_history_entries_max", l.epoch_history_entries_max, 1),
            (
                "forward_requests_pending_max",
                l.forward_requests_pending_max,
                1,
            ),
        ];
        for (field, value, min) in minimums {
            if value < min {
                return Err(ConfigError::LimitTooSmall {
                    field,
                    min: min as u64,
                    value: value as u64,
                });
            }
        }
        for (field, value) in [
            ("ttl_ms_max", l.ttl_ms_max),
            ("backup_ack_timeout_ms", l.backup_ack_timeout_ms),
            ("replicate_retransmit_ms", l.replicate_retransmit_ms),
            ("map_proposal_retry_ms", l.map_proposal_retry_ms),
            ("forward_retry_ms_max", l.forward_retry_ms_max),
            ("forward_attempt_timeout_ms", l.forward_attempt_timeout_ms),
            ("forward_backoff_ms", l.forward_backoff_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::LimitTooSmall {
                    field,
                    min: 1,
                    value: 0,
                });
            }
        }
        // tokio's semaphore (the mailbox and forwarding bounds) refuses more than
        // usize::MAX >> 3 permits.
        let permits_max = tokio::sync::Semaphore::MAX_PERMITS;
        for (field, value) in [
            (
                "partition_mailbox_messages_max",
                l.partition_mailbox_messages_max,
            ),
            (
                "forward_requests_pending_max",
                l.forward_requests_pending_max,
            ),
        ] {
            if value > permits_max {
                return Err(ConfigError::LimitTooLarge {
                    field,
                    max: permits_max,
                    value,
                });
            }
        }
        for (field, value) in [
            ("value_bytes_max", l.value_bytes_max),
            ("key_bytes_max", l.key_bytes_max),
        ] {
            if value > l.frame_bytes_max {
                return Err(ConfigError::LimitAboveFrame {
                    field,
                    frame: l.frame_bytes_max,
                    value,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_values_are_named() {
        type Mutation = Box<dyn Fn(&mut NodeConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("partitions", Box::new(|c| c.partitions = 0)),
            ("partitions", Box::new(|c| c.partitions = 16385)),
            ("workers", Box::new(|c| c.workers = WORKERS_MAX + 1)),
            ("tick_ms", Box::new(|c| c.tick_ms = 0)),
            (
                "requirepass",
                Box::new(|c| c.requirepass = Some(String::new())),
            ),
            (
                "limits.connections_max",
                Box::new(|c| c.limits.connections_max = 0),
            ),
            (
                "limits.args_per_command_max",
                Box::new(|c| c.limits.args_per_command_max = 2),
            ),
            (
                "limits.value_bytes_max",
                Box::new(|c| c.limits.value_bytes_max = c.limits.frame_bytes_max + 1),
            ),
            (
                "limits.dedup_requests_max",
                Box::new(|c| c.limits.dedup_requests_max = 0),
            ),
            (
                "limits.forward_retry_ms_max",
                Box::new(|c| c.limits.forward_retry_ms_max = 0),
            ),
            (
                "limits.replicate_inflight_bytes_max",
                Box::new(|c| c.limits.replicate_inflight_bytes_max = 1),
            ),
        ];
        for (field, mutate) in cases {
            let mut config = NodeConfig::default();
            mutate(&mut config);
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(&format!("{field}:")), "{field}: got {err}");
        }
    }

    fn site_member() -> NodeConfig {
        let peers = (1..=3)
            .map(|i| ClusterPeer {
                id: i,
                name: format!("n{i}"),
                quic_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7100 + i as u16)).into(),
                resp_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 6380 + i as u16)).into(),
                zone: None,
            })
            .collect();
        NodeConfig {
            cluster: Some(ClusterConfig::new(
                2,
                "a",
                "n2",
                SocketAddr::from((Ipv4Addr::LOCALHOST, 7102)),
                PathBuf::from("pki"),
                PathBuf::from("data/n2"),
                peers,
            )),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn peer_addresses_may_be_ips_or_dns_names() {
        // (quic_addr as written, Ok(as shown) or Err(part of the message))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("127.0.0.1:7101", Ok("127.0.0.1:7101")),
            ("[::1]:7101", Ok("[::1]:7101")),
            ("tern-0.tern-peers:7400", Ok("tern-0.tern-peers:7400")),
            (
                "tern-0.tern.ns.svc.cluster.local:7400",
                Ok("tern-0.tern.ns.svc.cluster.local:7400"),
            ),
            ("tern-0.tern-peers", Err("missing :port")),
            ("127.0.0.1", Err("missing :port")),
            (":7400", Err("empty host")),
            ("tern_0.peers:7400", Err("only letters")),
            ("10.0.0.300:7400", Err("numeric label")),
        ];
        for (quic, want) in cases {
            let json = format!(
                r#"{{"id":1,"name":"n1","quic_addr":"{quic}","resp_addr":"127.0.0.1:6379"}}"#
            );
            match (serde_json::from_str::<ClusterPeer>(&json), want) {
                (Ok(peer), Ok(shown)) => {
                    assert_eq!(peer.quic_addr.to_string(), *shown, "{quic}");
                    // Written back as the same string (`tern up` writes configs with serde).
                    let again = serde_json::to_string(&peer).expect("serializes");
                    assert!(
                        again.contains(&format!(r#""quic_addr":"{shown}""#)),
                        "{again}"
                    );
                }
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{quic}: {e}"),
                (got, want) => panic!("{quic}: got {got:?}, want {want:?}"),
            }
        }
        // A site whose peers are all DNS names is valid (they resolve only when dialed).
        let mut config = site_member();
        if let Some(cluster) = config.cluster.as_mut() {
            for (i, peer) in cluster.peers.iter_mut().enumerate() {
                peer.quic_addr = format!("tern-{i}.tern-peers:7400").parse().expect("valid");
                peer.resp_addr = format!("tern-{i}.tern-peers:6379").parse().expect("valid");
            }
        }
        assert_eq!(config.validate(), Ok(()));
    }

    /// Node 1 of site `a` (site id 1) running the gateway, with peers `b` (2) and `c` (3).
    fn gateway_node() -> NodeConfig {
        let mut config = site_member();
        let mut wan = WanConfig::new(
            "a",
            SocketAddr::from((Ipv4Addr::LOCALHOST, 7301)),
            PathBuf::from("pki"),
            PathBuf::from("data/n2/wan"),
        );
        wan.peers = [("b", 2), ("c", 3)]
            .into_iter()
            .map(|(site, site_id)| WanPeer {
                site: site.into(),
                site_id,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7300 + site_id)).into(),
            })
            .collect();
        wan.resolvers = vec![WanResolverRule {
            prefix: "c:".into(),
            resolver: "counter-merge".into(),
        }];
        config.wan = Some(wan);
        config
    }

    #[test]
    fn a_gateway_node_is_valid_and_its_mistakes_are_named() {
        assert_eq!(gateway_node().validate(), Ok(()));
        type Mutation = Box<dyn Fn(&mut NodeConfig)>;
        fn wan(f: impl Fn(&mut WanConfig) + 'static) -> Mutation {
            Box::new(move |c: &mut NodeConfig| {
                if let Some(w) = c.wan.as_mut() {
                    f(w)
                }
            })
        }
        let cases: Vec<(&str, Mutation)> = vec![
            ("wan.site", wan(|w| w.site = "A_1".into())),
            ("wan.site", wan(|w| w.site = String::new())),
            ("wan.site", wan(|w| w.site = "b2".into())),
            ("wan.peers", wan(|w| w.peers[1].site = "b".into())),
            ("wan.peers", wan(|w| w.peers[1].site_id = 2)),
            ("wan.peers", wan(|w| w.peers[0].site = "a".into())),
            ("wan.peers", Box::new(|c| c.site = 3)),
            ("wan.peers", wan(|w| w.peers[0].site = "-b".into())),
            ("wan.resolvers", wan(|w| w.resolvers[0].resolver.clear())),
            ("wan.default_resolver", wan(|w| w.default_resolver.clear())),
            ("wan.batch_wait_ms_max", wan(|w| w.batch_wait_ms_max = 0)),
            ("wan.feed_poll_ms_max", wan(|w| w.feed_poll_ms_max = 0)),
            ("wan.feed_records_max", wan(|w| w.feed_records_max = 0)),
            ("wan.feed_bytes_max", wan(|w| w.feed_bytes_max = 0)),
            ("wan.cursor_persist_ms", wan(|w| w.cursor_persist_ms = 0)),
            ("wan.reconnect_ms", wan(|w| w.reconnect_ms = 0)),
            (
                "wan.bootstrap_bytes_per_sec_max",
                wan(|w| w.bootstrap_bytes_per_sec_max = 0),
            ),
            ("wan.fsync_interval_ms", wan(|w| w.fsync_interval_ms = 0)),
            (
                "wan.backlog_bytes_max",
                wan(|w| w.backlog_bytes_max = WAN_BACKLOG_BYTES_MIN - 1),
            ),
        ];
        for (field, mutate) in cases {
            let mut config = gateway_node();
            mutate(&mut config);
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(&format!("{field}:")), "{field}: got {err}");
        }
    }

    #[test]
    fn a_gateway_accepts_its_edge_values() {
        type Mutation = Box<dyn Fn(&mut NodeConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "no cluster: any valid site name",
                Box::new(|c| {
                    c.cluster = None;
                    if let Some(w) = c.wan.as_mut() {
                        w.site = "z".into();
                    }
                }),
            ),
            (
                "no peers",
                Box::new(|c| {
                    if let Some(w) = c.wan.as_mut() {
                        w.peers.clear();
                    }
                }),
            ),
            (
                "smallest backlog",
                Box::new(|c| {
                    if let Some(w) = c.wan.as_mut() {
                        w.backlog_bytes_max = WAN_BACKLOG_BYTES_MIN;
                    }
                }),
            ),
            (
                "fsync never ignores the interval",
                Box::new(|c| {
                    if let Some(w) = c.wan.as_mut() {
                        w.fsync = WanFsync::Never;
                        w.fsync_interval_ms = 0;
                    }
                }),
            ),
            (
                "the slowest bootstrap",
                Box::new(|c| {
                    if let Some(w) = c.wan.as_mut() {
                        w.bootstrap_bytes_per_sec_max = 1;
                    }
                }),
            ),
            (
                "repairs only on demand",
                Box::new(|c| {
                    if let Some(w) = c.wan.as_mut() {
                        w.repair_interval_ms = 0;
                    }
                }),
            ),
        ];
        for (name, mutate) in cases {
            let mut config = gateway_node();
            mutate(&mut config);
            assert_eq!(config.validate(), Ok(()), "{name}");
        }
    }

    #[test]
    fn wan_sections_parse_with_their_defaults() {
        // Only the required keys: every other one takes its documented default.
        let json = r#"{
            "site": 1,
            "wan": {
                "site": "a",
                "listen": "127.0.0.1:7301",
                "tls_dir": "pki",
                "data_dir": "wan",
                "peers": [{"site": "b", "site_id": 2, "addr": "127.0.0.1:7302"}]
            }
        }"#;
        let parsed: NodeConfig = serde_json::from_str(json).expect("parses");
        let mut want = WanConfig::new(
            "a",
            SocketAddr::from((Ipv4Addr::LOCALHOST, 7301)),
            PathBuf::from("pki"),
            PathBuf::from("wan"),
        );
        want.peers = vec![WanPeer {
            site: "b".into(),
            site_id: 2,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7302)).into(),
        }];
        assert_eq!(parsed.wan, Some(want));
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn a_site_member_is_valid_and_its_mistakes_are_named() {
        assert_eq!(site_member().validate(), Ok(()));
        type Mutation = Box<dyn Fn(&mut ClusterConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("cluster.node_id", Box::new(|c| c.node_id = 0)),
            ("cluster.name", Box::new(|c| c.name = "N 2".into())),
            ("cluster.name", Box::new(|c| c.name = "n3".into())),
            ("cluster.name", Box::new(|c| c.site = "-a".into())),
            ("cluster.peers", Box::new(|c| c.peers.clear())),
            ("cluster.peers", Box::new(|c| c.peers.retain(|p| p.id != 2))),
            ("cluster.peers", Box::new(|c| c.peers[2].id = 1)),
            ("cluster.peers", Box::new(|c| c.peers[2].name = "n1".into())),
            ("cluster.peers", Box::new(|c| c.peers[0].id = 0)),
            ("cluster.backups", Box::new(|c| c.backups = 3)),
            (
                "cluster.shutdown_drain_ms_max",
                Box::new(|c| c.shutdown_drain_ms_max = 0),
            ),
            (
                "cluster.timings.node_failure_timeout_ms",
                Box::new(|c| c.timings.node_failure_timeout_ms = c.timings.heartbeat_interval_ms),
            ),
            (
                "cluster.timings.raft_heartbeat_ticks",
                Box::new(|c| c.timings.raft_heartbeat_ticks = c.timings.raft_election_ticks),
            ),
            (
                "cluster.timings.raft_tick_ms",
                Box::new(|c| c.timings.raft_tick_ms = 0),
            ),
            (
                "cluster.transport",
                Box::new(|c| c.transport.send_queue_frames_max = 0),
            ),
            (
                "cluster.transport.frame_bytes_max",
                Box::new(|c| c.transport.frame_bytes_max = 16 * 1024 * 1024),
            ),
        ];
        for (field, mutate) in cases {
            let mut config = site_member();
            if let Some(cluster) = config.cluster.as_mut() {
                mutate(cluster);
            }
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(&format!("{field}:")), "{field}: got {err}");
        }
    }
}
