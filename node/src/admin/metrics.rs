//! `/metrics`: OpenMetrics text computed at scrape time from the latest [`NodeStatus`] and the
//! transport counters (prometheus-client's collector pattern), so nothing on the event loop
//! updates a metric: the shell publishes snapshots, a scrape reads one.
//!
//! Families (Prometheus naming: base units, `_total` on counters — prometheus-client appends
//! `_total` to counter names itself, so counters are declared without it):
//!
//! | family | type | labels | value |
//! |---|---|---|---|
//! | `tern_node_ready` | gauge | | 1 when `/readyz` says ready |
//! | `tern_map_version` | gauge | | partition map version this node applied |
//! | `tern_map_leader` | gauge | | 1 if this node leads the map's Raft group |
//! | `tern_failovers_total` | counter | | primaries this node took over from a failed node |
//! | `tern_partition_role` | gauge | partition, role | per replica held here: 1 for the role held, 0 for the other |
//! | `tern_partition_epoch` | gauge | partition | epoch of each partition this node holds a replica of |
//! | `tern_backup_lag_records` | gauge | partition, node | records a backup is behind, when known |
//! | `tern_member_up` | gauge | node, name | 1 unless the map marks the member down |
//! | `tern_member_draining` | gauge | node, name | 1 while the member is draining |
//! | `tern_transport_*_total` | counter | | QUIC transport counters (when the node runs one) |
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::status::{MemberState, NodeStatus, ReplicaRole, StatusHub};
use crate::transport::{TransportStats, TransportStatsSnapshot};

/// `Content-Type` of the `/metrics` response.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose only collector reads the hub and the transport counters on each scrape.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
}

impl NodeMetrics {
    pub fn new(hub: StatusHub, transport: Option<Arc<TransportStats>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector { hub, transport }));
        Self { registry }
    }

    /// The OpenMetrics exposition of the node right now (ends with `# EOF`).
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct SnapshotCollector {
    hub: StatusHub,
    transport: Option<Arc<TransportStats>>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let status = self.hub.get();
        encode_status(&status, &mut encoder)?;
        if let Some(transport) = &self.transport {
            encode_transport(&transport.snapshot(), &mut encoder)?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(gauge_value(value));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Gauges are signed in OpenMetrics; versions and epochs never come near `i64::MAX`, but an
/// input is not a reason to wrap into a negative number, so saturate.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One gauge family with a sample per label set; emits nothing (not even the header) when
/// there are no samples, so an absent family means "not applicable here".
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, u64)],
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(gauge_value(*value)).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

type Labels = Vec<(&'static str, String)>;

fn encode_status(status: &NodeStatus, encoder: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        encoder,
        "tern_node_ready",
        "1 when every partition replica on this node has caught up (what /readyz reports).",
        u64::from(status.ready),
    )?;
    gauge(
        encoder,
        "tern_map_version",
        "Version of the partition map this node has applied.",
        status.map_version,
    )?;
    let leads = status.node_id != 0 && status.map_leader == Some(status.node_id);
    gauge(
        encoder,
        "tern_map_leader",
        "1 if this node is the Raft leader of the partition map.",
        u64::from(leads),
    )?;
    counter(
        encoder,
        "tern_failovers",
        "Primaries this node took over because their node failed.",
        status.failovers_total,
    )?;

    let mut roles: Vec<(Labels, u64)> = Vec::new();
    let mut epochs: Vec<(Labels, u64)> = Vec::new();
    let mut lags: Vec<(Labels, u64)> = Vec::new();
    for partition in &status.partitions {
        let id = partition.partition.to_string();
        if let Some(mine) = partition
            .replicas
            .iter()
            .find(|r| r.node_id == status.node_id)
        {
            for (role, name) in [
                (ReplicaRole::Primary, "primary"),
                (ReplicaRole::Backup, "backup"),
            ] {
                let labels = vec![("partition", id.clone()), ("role", name.to_owned())];
                roles.push((labels, u64::from(mine.role == role)));
            }
            epochs.push((vec![("partition", id.clone())], partition.epoch));
        }
        for replica in &partition.replicas {
            if let (ReplicaRole::Backup, Some(lag)) = (replica.role, replica.lag_records) {
                let labels = vec![
                    ("partition", id.clone()),
                    ("node", replica.node_id.to_string()),
                ];
                lags.push((labels, lag));
            }
        }
    }
    gauge_family(
        encoder,
        "tern_partition_role",
        "Role of each partition replica on this node: 1 for the role it holds, 0 for the other.",
        &roles,
    )?;
    gauge_family(
        encoder,
        "tern_partition_epoch",
        "Epoch (primary term) of each partition this node holds a replica of.",
        &epochs,
    )?;
    gauge_family(
        encoder,
        "tern_backup_lag_records",
        "Change-log records a backup replica is behind its primary, where this node knows it.",
        &lags,
    )?;

    let member_samples = |wanted: fn(MemberState) -> bool| -> Vec<(Labels, u64)> {
        status
            .members
            .iter()
            .map(|m| {
                let labels = vec![("node", m.node_id.to_string()), ("name", m.name.clone())];
                (labels, u64::from(wanted(m.state)))
            })
            .collect()
    };
    gauge_family(
        encoder,
        "tern_member_up",
        "1 unless the partition map marks the member down.",
        &member_samples(|s| s != MemberState::Down),
    )?;
    gauge_family(
        encoder,
        "tern_member_draining",
        "1 while the member is draining (gets no primaries).",
        &member_samples(|s| s == MemberState::Draining),
    )?;
    Ok(())
}

fn encode_transport(
    stats: &TransportStatsSnapshot,
    encoder: &mut DescriptorEncoder,
) -> fmt::Result {
    // Destructured field by field so that a counter added to the transport fails to compile
    // here until it is exported too.
    let TransportStatsSnapshot {
        connections_established_total,
        handshakes_failed_total,
        refused_unknown_ca_total,
        refused_bad_certificate_total,
        refused_identity_not_allowed_total,
        frames_sent_total,
        bytes_sent_total,
        write_batches_total,
        frames_received_total,
        bytes_received_total,
        frames_oversized_rejected_total,
        streams_rejected_total,
        send_queue_full_total,
        frames_lost_on_disconnect_total,
    } = *stats;
    let counters: [(&str, &str, u64); 14] = [
        (
            "connections_established",
            "Connections that passed the handshake and the allow-list.",
            connections_established_total,
        ),
        (
            "handshakes_failed",
            "Handshakes that failed for any reason.",
            handshakes_failed_total,
        ),
        (
            "refused_unknown_ca",
            "Peer certificates refused because no configured CA signed them.",
            refused_unknown_ca_total,
        ),
        (
            "refused_bad_certificate",
            "Peer certificates refused as expired, misnamed, misused or malformed.",
            refused_bad_certificate_total,
        ),
        (
            "refused_identity_not_allowed",
            "Connections closed because the peer's identity is not configured.",
            refused_identity_not_allowed_total,
        ),
        (
            "frames_sent",
            "Frames written to a stream.",
            frames_sent_total,
        ),
        (
            "bytes_sent",
            "Payload bytes of the frames sent.",
            bytes_sent_total,
        ),
        (
            "write_batches",
            "Stream writes (frames_sent / write_batches is the mean batch).",
            write_batches_total,
        ),
        (
            "frames_received",
            "Frames delivered to the inbound queue.",
            frames_received_total,
        ),
        (
            "bytes_received",
            "Payload bytes of the frames received.",
            bytes_received_total,
        ),
        (
            "frames_oversized_rejected",
            "Inbound frames over frame_bytes_max (their stream was stopped).",
            frames_oversized_rejected_total,
        ),
        (
            "streams_rejected",
            "Inbound streams without a tern stream header.",
            streams_rejected_total,
        ),
        (
            "send_queue_full",
            "Sends refused because the peer's channel queue was full.",
            send_queue_full_total,
        ),
        (
            "frames_lost_on_disconnect",
            "Frames whose write failed because the connection broke.",
            frames_lost_on_disconnect_total,
        ),
    ];
    for (name, help, value) in counters {
        counter(encoder, &format!("tern_transport_{name}"), help, value)?;
    }
    Ok(())
}
