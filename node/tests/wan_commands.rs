//! The node-side commands of the WAN gateway host, through a real node's `Router`: `WanApply`
//! commits a remote site's entry at the partition's primary (visible over RESP, replicated),
//! `WanChanges` reads committed change records; resolvers come from `[wan]`.
mod common;
mod site_harness;

use bytes::Bytes;
use common::{bounded, redis_connection, start, test_config};
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_conflict::{
    ConflictResolver, HlcTimestamp, PnCounter, Resolution, ResolverRegistry, SiteId, Value,
    Version, Versioned,
};
use tern_node::config::{NodeConfig, WanConfig, WanResolverRule};
use tern_node::core::{Command, CommandResult, Keyspace, PartitionId, Response, WanChangesPage};
use tern_node::server::{self, NodeHandle, StartError};

const OTHER_SITE: SiteId = SiteId(2);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An entry the other site wrote a second ago (well within the HLC offset bound).
fn remote(value: Value) -> Versioned {
    Versioned {
        value,
        version: Version::first(OTHER_SITE, HlcTimestamp::new(now_ms() - 1_000, 0)),
        expires_at_ms: None,
    }
}

fn partition_of(config: &NodeConfig, key: &str) -> PartitionId {
    Keyspace::new(config.partitions)
        .expect("valid partition count")
        .partition_of(key.as_bytes())
}

fn applied(changed: bool, conflict: bool) -> CommandResult {
    Ok(Response::WanApplied {
        changed,
        conflict,
        clock_rejected: false,
    })
}

async fn execute(node: &NodeHandle, partition: PartitionId, command: Command) -> CommandResult {
    let mut results = node
        .router()
        .execute(partition, vec![command])
        .await
        .expect("the router reaches the primary");
    assert_eq!(results.len(), 1, "one result per command");
    results.remove(0)
}

async fn changes_after(
    node: &NodeHandle,
    partition: PartitionId,
    after_seq: u64,
) -> WanChangesPage {
    let command = Command::WanChanges {
        after_seq,
        records_max: 100,
        bytes_max: 1 << 20,
        hold_ms: 0,
    };
    match execute(node, partition, command).await {
        Ok(Response::WanChanges(page)) => page,
        other => panic!("not a page: {other:?}"),
    }
}

fn wan_config(rules: &[(&str, &str)], default: &str) -> WanConfig {
    let mut wan = WanConfig::new(
        "a",
        "127.0.0.1:0".parse().expect("literal address"),
        "unused-tls".into(),
        "unused-data".into(),
    );
    wan.resolvers = rules
        .iter()
        .map(|&(prefix, resolver)| WanResolverRule {
            prefix: prefix.to_owned(),
            resolver: resolver.to_owned(),
        })
        .collect();
    wan.default_resolver = default.to_owned();
    wan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wan_entry_applied_through_the_router_is_read_over_resp_and_logged() {
    bounded(async {
        let config = test_config();
        let partition = partition_of(&config, "k");
        let node = start(config).await;
        let entry = remote(Value::Bytes(Bytes::from_static(b"from-b")));
        let apply = Command::WanApply {
            key: Bytes::from_static(b"k"),
            entry: entry.clone(),
            resolver: None,
        };
        assert_eq!(
            execute(&node, partition, apply.clone()).await,
            applied(true, false)
        );

        let mut redis = redis_connection(node.local_addr()).await;
        let read: Option<String> = redis.get("k").await.expect("GET");
        assert_eq!(read.as_deref(), Some("from-b"));

        let page = changes_after(&node, partition, 0).await;
        assert_eq!(page.last_seq, 1);
        assert_eq!(page.records.len(), 1, "{page:?}");
        let record = &page.records[0];
        assert_eq!((record.partition, record.seq), (partition, 1));
        assert_eq!((&record.key[..], &record.entry), (&b"k"[..], &entry));

        // The same entry again changes nothing; a local write logs after it.
        assert_eq!(
            execute(&node, partition, apply).await,
            applied(false, false)
        );
        let () = redis.set("k", "local").await.expect("SET");
        let page = changes_after(&node, partition, 1).await;
        assert_eq!(page.last_seq, 2);
        assert_eq!(page.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
        assert!(changes_after(&node, partition, 2).await.records.is_empty());
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolvers_come_from_the_wan_section() {
    bounded(async {
        let mut config = test_config();
        config.wan = Some(wan_config(&[("c:", "counter-merge")], "lww"));
        let merged = partition_of(&config, "c:n");
        let lww = partition_of(&config, "n");
        let node = start(config).await;
        let mut redis = redis_connection(node.local_addr()).await;
        // A local increment of 5, then the other site's concurrent +3 to the same key.
        for (key, partition, expected) in [("c:n", merged, "8"), ("n", lww, "5")] {
            let _: i64 = redis.incr(key, 5).await.expect("INCRBY");
            let mut counter = PnCounter::new();
            counter.add(OTHER_SITE, 3).expect("small");
            let apply = Command::WanApply {
                key: Bytes::copy_from_slice(key.as_bytes()),
                entry: remote(Value::Counter(counter)),
                resolver: None,
            };
            assert_eq!(
                execute(&node, partition, apply).await,
                applied(true, true),
                "{key}"
            );
            let read: String = redis.get(key).await.expect("GET");
            assert_eq!(read, expected, "{key}");
        }
        node.shutdown().await;
    })
    .await;
}

/// A plugin resolver, known only to the registry the embedding binary passes in.
#[derive(Debug)]
struct KeepLocal;

impl ConflictResolver for KeepLocal {
    fn name(&self) -> &str {
        "keep-local"
    }
    fn resolve(&self, _key: &[u8], _local: &Versioned, _incoming: &Versioned) -> Resolution {
        Resolution::KeepLocal
    }
}

/// (`[[wan.resolvers]]` as (prefix, name), `wan.default_resolver`, text the error must contain)
type StartCase<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resolver_names_fail_startup_and_plugins_come_from_the_registry() {
    bounded(async {
        let cases: &[StartCase] = &[
            (
                &[("c:", "counter-merge"), ("p:", "keep-local")],
                "lww",
                "wan.resolvers[1].resolver (prefix \"p:\"): unknown conflict resolver \"keep-local\"",
            ),
            (&[], "nope", "wan.default_resolver: unknown conflict resolver \"nope\""),
        ];
        for &(rules, default, expected) in cases {
            let mut config = test_config();
            config.wan = Some(wan_config(rules, default));
            let err = server::start(config).await.expect_err("unknown resolver");
            assert!(matches!(err, StartError::Resolver { .. }), "{err:?}");
            assert!(err.to_string().contains(expected), "{err}");
        }

        let mut registry = ResolverRegistry::with_builtins();
        registry.register(Arc::new(KeepLocal)).expect("new name");
        let mut config = test_config();
        config.wan = Some(wan_config(&[("p:", "keep-local")], "lww"));
        let partition = partition_of(&config, "p:k");
        let node = server::start_with_registry(config, registry)
            .await
            .expect("the plugin is known");
        let mut redis = redis_connection(node.local_addr()).await;
        let () = redis.set("p:k", "local").await.expect("SET");
        // Newer by the clock than the local write, but the plugin keeps the local value.
        let mut entry = remote(Value::Bytes(Bytes::from_static(b"remote")));
        entry.version = Version::first(OTHER_SITE, HlcTimestamp::new(now_ms() + 100, 0));
        let apply = Command::WanApply {
            key: Bytes::from_static(b"p:k"),
            entry,
            resolver: None,
        };
        assert_eq!(execute(&node, partition, apply).await, applied(true, true));
        let read: String = redis.get("p:k").await.expect("GET");
        assert_eq!(read, "local");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_commands_sent_to_a_node_that_is_not_the_primary_are_forwarded() {
    use site_harness::{SERIAL, Site};
    let _serial = SERIAL.lock().await;
    site_harness::bounded(Duration::from_secs(60), async {
        let site = Site::start(16, 3, 4).await;
        site.wait_settled(Duration::from_secs(20)).await;
        let primaries = site.primaries();
        for partition in 0..4u16 {
            let key = site.key_in(partition, "wan");
            let primary = primaries[&partition].expect("settled: a primary");
            // Node index i has node id i + 1.
            let via = (0..3)
                .find(|&i| i + 1 != primary as usize)
                .expect("two other nodes");
            let entry = remote(Value::Bytes(Bytes::from(format!("v{partition}"))));
            let apply = Command::WanApply {
                key: Bytes::from(key.clone()),
                entry: entry.clone(),
                resolver: None,
            };
            let node = site.node(via);
            let pid = PartitionId(partition);
            assert_eq!(execute(node, pid, apply).await, applied(true, false));
            // Read back over RESP at the primary, and the log through the other node.
            let mut redis = redis_connection(site.addr(primary as usize - 1)).await;
            let read: Option<String> = redis.get(&key).await.expect("GET");
            assert_eq!(read, Some(format!("v{partition}")), "partition {partition}");
            let page = changes_after(node, pid, 0).await;
            let record = page.records.last().expect("the applied record");
            assert_eq!((record.seq, &record.entry), (page.last_seq, &entry));
            assert_eq!(&record.key[..], key.as_bytes());
        }
        site.stop_all().await;
    })
    .await;
}
