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
//! | `tern_writes_refused_wan_full_total` | counter | | client writes refused: WAN backlog full (`block_writes`) |
//! | `tern_partition_role` | gauge | partition, role | per replica held here: 1 for the role held, 0 for the other |
//! | `tern_partition_epoch` | gauge | partition | epoch of each partition this node holds a replica of |
//! | `tern_backup_lag_records` | gauge | partition, node | records a backup is behind, when known |
//! | `tern_member_up` | gauge | node, name | 1 unless the map marks the member down |
//! | `tern_member_draining` | gauge | node, name | 1 while the member is draining |
//! | `tern_transport_*_total` | counter | | QUIC transport counters (when the node runs one) |
//!
//! When this node runs its site's WAN gateway (a [`WanStatus`] was published), also:
//!
//! | family | type | labels | value |
//! |---|---|---|---|
//! | `tern_wan_connected` | gauge | target | 1 while connected to the target site's gateway |
//! | `tern_wan_backlog_bytes`, `tern_wan_backlog_records` | gauge | target | kept until acknowledged |
//! | `tern_wan_shipped_total` | counter | target | records the target acknowledged |
//! | `tern_wan_repairing_partitions` | gauge | target | partitions marked for anti-entropy |
//! | `tern_wan_overflows_total` | counter | target | times the backlog overflowed and dropped records |
//! | `tern_wan_write_blocked` | gauge | target | 1 while local writes are blocked by a full backlog |
//! | `tern_wan_applied_total` | counter | source | records applied here |
//! | `tern_wan_duplicates_total` | counter | source | records received again and skipped |
//! | `tern_wan_conflicts_total` | counter | source, resolver | concurrent writes resolved |
//! | `tern_wan_lag_seconds` | histogram | source | source commit → applied here |
//! | `tern_wan_refused_total` | counter | reason | incoming connections refused |
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::status::{MemberState, NodeStatus, ReplicaRole, StatusHub};
use super::wan::{WanHub, WanSourceStatus, WanStatus, WanTargetStatus};
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
    pub fn new(hub: StatusHub, wan: WanHub, transport: Option<Arc<TransportStats>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector {
            hub,
            wan,
            transport,
        }));
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
    wan: WanHub,
    transport: Option<Arc<TransportStats>>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let status = self.hub.get();
        encode_status(&status, &mut encoder)?;
        if let Some(transport) = &self.transport {
            encode_transport(&transport.snapshot(), &mut encoder)?;
        }
        if let Some(wan) = self.wan.get() {
            encode_wan(&wan, &mut encoder)?;
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

/// [`gauge_family`] for counters (`name` without `_total`, which the encoder appends).
fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, u64)],
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
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
    counter(
        encoder,
        "tern_writes_refused_wan_full",
        "Client writes refused because the WAN backlog to a remote site was full (overflow = block_writes).",
        status.wan_writes_refused_total,
    )?;
    counter(
        encoder,
        "tern_writes_refused_memory_full",
        "Client writes refused because the node was over data_bytes_max.",
        status.memory_writes_refused_total,
    )?;
    gauge(
        encoder,
        "tern_forward_requests_pending",
        "Requests this node forwarded to another node's primary and still waits on.",
        status.forward_requests_pending,
    )?;
    gauge(
        encoder,
        "tern_forward_requests_pending_max",
        "The cap on forwarded requests waiting for an answer (limits.forward_requests_pending_max).",
        status.forward_requests_pending_max,
    )?;
    counter(
        encoder,
        "tern_forward_requests_refused_pending_full",
        "Requests answered -TRYAGAIN unsent because the forwarding table stayed full until their deadline.",
        status.forward_requests_refused_pending_full_total,
    )?;
    gauge(
        encoder,
        "tern_data_bytes",
        "What this node's partition copies cost as counted against data_bytes_max (keys, values, per-entry overhead).",
        status.data_bytes,
    )?;
    gauge(
        encoder,
        "tern_data_bytes_max",
        "This node's data cap (0: none).",
        status.data_bytes_max,
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

fn encode_wan(wan: &WanStatus, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let per_target = |value: fn(&WanTargetStatus) -> u64| -> Vec<(Labels, u64)> {
        wan.targets
            .iter()
            .map(|t| (vec![("target", t.site.clone())], value(t)))
            .collect()
    };
    let per_source = |value: fn(&WanSourceStatus) -> u64| -> Vec<(Labels, u64)> {
        wan.sources
            .iter()
            .map(|s| (vec![("source", s.site.clone())], value(s)))
            .collect()
    };
    gauge_family(
        encoder,
        "tern_wan_connected",
        "1 while the gateway is connected to the target site's gateway.",
        &per_target(|t| u64::from(t.connected)),
    )?;
    gauge_family(
        encoder,
        "tern_wan_backlog_bytes",
        "Bytes of records kept for the target site until it acknowledges them.",
        &per_target(|t| t.backlog_bytes),
    )?;
    gauge_family(
        encoder,
        "tern_wan_backlog_records",
        "Records kept for the target site until it acknowledges them.",
        &per_target(|t| t.backlog_records),
    )?;
    counter_family(
        encoder,
        "tern_wan_shipped",
        "Records the target site acknowledged (applied).",
        &per_target(|t| t.shipped_total),
    )?;
    gauge_family(
        encoder,
        "tern_wan_repairing_partitions",
        "Partitions marked for anti-entropy against the target site.",
        &per_target(|t| t.repairing_partitions.len() as u64),
    )?;
    counter_family(
        encoder,
        "tern_wan_overflows",
        "Times the backlog for the target site passed its cap and dropped records.",
        &per_target(|t| t.overflows_total),
    )?;
    gauge_family(
        encoder,
        "tern_wan_write_blocked",
        "1 while local writes are blocked because the target's backlog is full.",
        &per_target(|t| u64::from(t.write_blocked)),
    )?;
    counter_family(
        encoder,
        "tern_wan_applied",
        "Records from the source site applied through the local partition primaries.",
        &per_source(|s| s.applied_total),
    )?;
    counter_family(
        encoder,
        "tern_wan_duplicates",
        "Records from the source site received again and skipped.",
        &per_source(|s| s.duplicates_total),
    )?;
    let conflicts: Vec<(Labels, u64)> = wan
        .sources
        .iter()
        .flat_map(|s| {
            s.conflicts_total.iter().map(|(resolver, n)| {
                let labels = vec![("source", s.site.clone()), ("resolver", resolver.clone())];
                (labels, *n)
            })
        })
        .collect();
    counter_family(
        encoder,
        "tern_wan_conflicts",
        "Concurrent writes from the source site resolved, by resolver.",
        &conflicts,
    )?;
    if !wan.sources.is_empty() {
        let mut family = encoder.encode_descriptor(
            "tern_wan_lag_seconds",
            "Time from a record's commit at the source site to its application here.",
            None,
            MetricType::Histogram,
        )?;
        for source in &wan.sources {
            let labels: Labels = vec![("source", source.site.clone())];
            let buckets = lag_bucket_increments(source);
            let count = buckets.iter().map(|(_, n)| n).sum();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(source.lag_seconds_sum, count, &buckets, None)?;
        }
    }
    let refused: Vec<(Labels, u64)> = wan
        .refused_total
        .iter()
        .map(|(reason, n)| (vec![("reason", reason.clone())], *n))
        .collect();
    counter_family(
        encoder,
        "tern_wan_refused",
        "Incoming gateway connections refused, by reason.",
        &refused,
    )?;
    Ok(())
}

/// The encoder wants per-bucket counts (it accumulates them itself) ending in `+Inf`; the
/// gateway reports cumulative ones. Decreasing or out-of-order input is clamped rather than
/// wrapped, and the `+Inf` bucket holds whatever `lag_count` has beyond the last bound, so
/// `_count` always equals the `+Inf` bucket as OpenMetrics requires.
fn lag_bucket_increments(source: &WanSourceStatus) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(source.lag_buckets.len() + 1);
    let mut below = 0u64;
    let mut last_bound = f64::NEG_INFINITY;
    for &(bound, cumulative) in &source.lag_buckets {
        // NaN, repeated or descending bounds, and a reported +Inf, are left out.
        if bound.partial_cmp(&last_bound) != Some(std::cmp::Ordering::Greater)
            || bound.is_infinite()
        {
            continue;
        }
        last_bound = bound;
        let cumulative = cumulative.max(below);
        out.push((bound, cumulative - below));
        below = cumulative;
    }
    out.push((f64::INFINITY, source.lag_count.saturating_sub(below)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::wan::WanTargetStatus;

    fn sample_wan() -> WanStatus {
        WanStatus {
            site: "a".into(),
            site_id: 1,
            targets: vec![
                WanTargetStatus {
                    site: "b".into(),
                    site_id: 2,
                    addr: "127.0.0.1:7302".into(),
                    connected: true,
                    backlog_records: 12,
                    backlog_bytes: 3400,
                    shipped_total: 900,
                    repairing_partitions: vec![3, 9],
                    overflows_total: 1,
                    ..WanTargetStatus::default()
                },
                WanTargetStatus {
                    site: "c".into(),
                    site_id: 3,
                    addr: "127.0.0.1:7303".into(),
                    write_blocked: true,
                    ..WanTargetStatus::default()
                },
            ],
            sources: vec![WanSourceStatus {
                site: "b".into(),
                site_id: 2,
                connected: true,
                applied_total: 700,
                duplicates_total: 5,
                conflicts_total: vec![("counter-merge".into(), 4), ("lww".into(), 2)],
                lag_buckets: vec![(0.005, 3), (0.05, 8), (0.5, 9)],
                lag_seconds_sum: 0.75,
                lag_count: 10,
                ..WanSourceStatus::default()
            }],
            refused_total: vec![("unknown_site".into(), 6)],
        }
    }

    fn render(wan: Option<WanStatus>) -> String {
        let hub = WanHub::new();
        if let Some(status) = wan {
            hub.publish(status);
        }
        NodeMetrics::new(StatusHub::new(), hub, None)
            .render()
            .expect("metrics encode")
    }

    #[test]
    fn a_gateway_status_becomes_the_wan_families() {
        let text = render(Some(sample_wan()));
        let expected = [
            "# TYPE tern_wan_connected gauge",
            "tern_wan_connected{target=\"b\"} 1",
            "tern_wan_connected{target=\"c\"} 0",
            "tern_wan_backlog_bytes{target=\"b\"} 3400",
            "tern_wan_backlog_records{target=\"b\"} 12",
            "# TYPE tern_wan_shipped counter",
            "tern_wan_shipped_total{target=\"b\"} 900",
            "tern_wan_shipped_total{target=\"c\"} 0",
            "tern_wan_repairing_partitions{target=\"b\"} 2",
            "tern_wan_repairing_partitions{target=\"c\"} 0",
            "tern_wan_overflows_total{target=\"b\"} 1",
            "tern_wan_write_blocked{target=\"b\"} 0",
            "tern_wan_write_blocked{target=\"c\"} 1",
            "tern_wan_applied_total{source=\"b\"} 700",
            "tern_wan_duplicates_total{source=\"b\"} 5",
            "tern_wan_conflicts_total{source=\"b\",resolver=\"counter-merge\"} 4",
            "tern_wan_conflicts_total{source=\"b\",resolver=\"lww\"} 2",
            "tern_wan_refused_total{reason=\"unknown_site\"} 6",
            "# TYPE tern_wan_lag_seconds histogram",
            "tern_wan_lag_seconds_sum{source=\"b\"} 0.75",
            "tern_wan_lag_seconds_count{source=\"b\"} 10",
            "tern_wan_lag_seconds_bucket{le=\"0.005\",source=\"b\"} 3",
            "tern_wan_lag_seconds_bucket{le=\"0.05\",source=\"b\"} 8",
            "tern_wan_lag_seconds_bucket{le=\"0.5\",source=\"b\"} 9",
            "tern_wan_lag_seconds_bucket{le=\"+Inf\",source=\"b\"} 10",
        ];
        let lines: Vec<&str> = text.lines().collect();
        for line in expected {
            assert!(lines.contains(&line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn without_a_gateway_there_are_no_wan_lines() {
        let text = render(None);
        assert!(!text.contains("tern_wan_"), "{text}");
        assert!(text.contains("tern_node_ready"), "{text}");
    }

    #[test]
    fn lag_buckets_become_increments_ending_in_inf() {
        const INF: f64 = f64::INFINITY;
        type Buckets = &'static [(f64, u64)];
        // (cumulative buckets reported, lag_count, per-bucket counts encoded)
        let cases: &[(Buckets, u64, Buckets)] = &[
            (&[], 0, &[(INF, 0)]),
            (&[], 4, &[(INF, 4)]),
            (&[(0.1, 2), (1.0, 5)], 5, &[(0.1, 2), (1.0, 3), (INF, 0)]),
            // A reported +Inf is replaced by the count.
            (&[(0.1, 2), (INF, 7)], 7, &[(0.1, 2), (INF, 5)]),
            // Decreasing cumulative counts clamp instead of wrapping.
            (&[(0.1, 5), (1.0, 3)], 4, &[(0.1, 5), (1.0, 0), (INF, 0)]),
            // Out-of-order and NaN bounds are dropped.
            (
                &[(1.0, 2), (0.5, 3), (f64::NAN, 9), (2.0, 4)],
                4,
                &[(1.0, 2), (2.0, 2), (INF, 0)],
            ),
        ];
        for (cumulative, count, want) in cases {
            let source = WanSourceStatus {
                lag_buckets: cumulative.to_vec(),
                lag_count: *count,
                ..WanSourceStatus::default()
            };
            assert_eq!(
                lag_bucket_increments(&source),
                want.to_vec(),
                "{cumulative:?}"
            );
        }
    }
}
