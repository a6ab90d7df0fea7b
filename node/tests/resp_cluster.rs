//! Redis Cluster topology commands against real nodes: every node of a 3-node site tells the
//! same slot table, in which each slot's primary is its partition's primary, and a cluster-mode
//! client (`redis::cluster_async`) routes by it; a standalone node owns every slot.
mod common;
mod site_harness;

use common::{Raw, redis_connection};
use redis::AsyncCommands;
use redis::cluster::ClusterClient;
use redis::cluster_read_routing::RandomReplicaStrategy;
use site_harness::{SERIAL, Site, bounded};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tern_node::core::{SLOT_COUNT, slot_of};

const PARTITIONS: u32 = 8;
const KEYS: usize = 300;

/// CLUSTER SLOTS as `slot -> (primary address, replica addresses)`, checking its shape.
async fn slot_table(
    con: &mut redis::aio::MultiplexedConnection,
) -> BTreeMap<u16, (SocketAddr, Vec<SocketAddr>)> {
    let reply: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await
        .expect("CLUSTER SLOTS answers");
    let redis::Value::Array(ranges) = reply else {
        panic!("CLUSTER SLOTS is not an array: {reply:?}");
    };
    let node = |value: &redis::Value| -> SocketAddr {
        match value {
            redis::Value::Array(fields) => match fields.as_slice() {
                [
                    redis::Value::BulkString(host),
                    redis::Value::Int(port),
                    redis::Value::BulkString(id),
                    redis::Value::Array(_),
                ] => {
                    assert_eq!(id.len(), 40, "node ids are 40 characters");
                    assert!(id.iter().all(u8::is_ascii_hexdigit), "node ids are hex");
                    format!("{}:{port}", String::from_utf8_lossy(host))
                        .parse()
                        .expect("an IP address and port")
                }
                other => panic!("not a CLUSTER SLOTS node: {other:?}"),
            },
            other => panic!("not a CLUSTER SLOTS node: {other:?}"),
        }
    };
    let mut table = BTreeMap::new();
    for range in &ranges {
        let redis::Value::Array(fields) = range else {
            panic!("not a CLUSTER SLOTS range: {range:?}");
        };
        let [
            redis::Value::Int(start),
            redis::Value::Int(end),
            primary,
            replicas @ ..,
        ] = fields.as_slice()
        else {
            panic!("not a CLUSTER SLOTS range: {fields:?}");
        };
        let served = (node(primary), replicas.iter().map(node).collect::<Vec<_>>());
        for slot in *start..=*end {
            let slot = u16::try_from(slot).expect("slot fits u16");
            assert!(
                table.insert(slot, served.clone()).is_none(),
                "slot {slot} listed twice"
            );
        }
    }
    table
}

async fn info(con: &mut redis::aio::MultiplexedConnection) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(con)
        .await
        .expect("CLUSTER INFO answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_mode_client_routes_by_the_slot_table_of_a_site() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(120), async {
        let site = Site::start(51, 3, PARTITIONS).await;
        site.wait_settled(Duration::from_secs(30)).await;
        let addrs: Vec<SocketAddr> = (0..3).map(|i| site.addr(i)).collect();
        let addr_of = |node_id: u64| addrs[usize::try_from(node_id - 1).expect("small id")];

        // Every node tells the same table, and each slot's primary is its partition's.
        let primaries = site.primaries();
        let keyspace = site.keyspace();
        let mut plain = Vec::new();
        for &addr in &addrs {
            plain.push(redis_connection(addr).await);
        }
        let mut tables = Vec::new();
        for con in &mut plain {
            assert!(
                info(con).await.contains("cluster_state:ok\r\n"),
                "a settled site is ok"
            );
            tables.push(slot_table(con).await);
        }
        assert_eq!(
            tables[0].len(),
            usize::from(SLOT_COUNT),
            "every slot is served"
        );
        assert!(tables.iter().all(|t| *t == tables[0]), "nodes disagree");
        for (&slot, (primary, replicas)) in &tables[0] {
            let partition = slot % keyspace.partition_count();
            let want = primaries[&partition].expect("settled: a primary");
            assert_eq!(*primary, addr_of(want), "slot {slot}");
            assert_eq!(replicas.len(), 1, "slot {slot}: one in-sync backup");
            assert_ne!(replicas[0], *primary, "slot {slot}");
        }

        // The cluster-mode client writes and reads through the table.
        let client = ClusterClient::builder(addrs.iter().map(|a| format!("redis://{a}/")))
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(10))
            .build()
            .expect("cluster client");
        let mut cluster = client
            .get_async_connection()
            .await
            .expect("the cluster client reads the slot table");
        let keys: Vec<String> = (0..KEYS).map(|k| format!("key:{k}")).collect();
        let nodes_used: BTreeSet<SocketAddr> = keys
            .iter()
            .map(|k| tables[0][&slot_of(k.as_bytes())].0)
            .collect();
        assert_eq!(nodes_used.len(), 3, "the keys reach every primary");
        for (k, key) in keys.iter().enumerate() {
            let () = cluster
                .set(key, format!("v{k}"))
                .await
                .expect("SET through the cluster client");
            let counter = format!("{key}:n");
            for want in 1..=2 {
                let got: i64 = cluster.incr(&counter, 1).await.expect("INCR");
                assert_eq!(got, want, "{counter}");
            }
        }
        for (k, key) in keys.iter().enumerate() {
            let got: String = cluster
                .get(key)
                .await
                .expect("GET through the cluster client");
            assert_eq!(got, format!("v{k}"));
        }

        // Replica reads (READONLY) are answered by the primaries through any node.
        let replica_reads = ClusterClient::builder(addrs.iter().map(|a| format!("redis://{a}/")))
            .read_routing_strategy(RandomReplicaStrategy)
            .response_timeout(Duration::from_secs(10))
            .build()
            .expect("cluster client");
        let mut replica_reads = replica_reads
            .get_async_connection()
            .await
            .expect("the replica-reading client connects");
        for key in &keys {
            let got: i64 = replica_reads
                .get(format!("{key}:n"))
                .await
                .expect("GET from a replica");
            assert_eq!(got, 2, "{key}:n");
        }

        // Every node answers every key, whichever primary holds it.
        for con in &mut plain {
            for (k, key) in keys.iter().enumerate() {
                let got: String = con.get(key).await.expect("GET through one node");
                assert_eq!(got, format!("v{k}"));
            }
        }
        drop((cluster, replica_reads, plain));
        site.stop_all().await;
    })
    .await;
}

#[tokio::test]
async fn a_standalone_node_owns_every_slot() {
    common::bounded(async {
        let node = common::start(common::test_config()).await;
        let addr = node.local_addr();
        let mut con = redis_connection(addr).await;
        let table = slot_table(&mut con).await;
        assert_eq!(table.len(), usize::from(SLOT_COUNT));
        assert!(table.values().all(|served| *served == (addr, Vec::new())));
        let info = info(&mut con).await;
        for needle in [
            "cluster_state:ok\r\n",
            "cluster_known_nodes:1\r\n",
            "cluster_size:1\r\n",
        ] {
            assert!(
                info.contains(needle),
                "CLUSTER INFO lacks {needle:?}: {info}"
            );
        }

        let mut raw = Raw::connect(addr).await;
        let myid = raw.cmd(&["CLUSTER", "MYID"]).await;
        let nodes = raw.cmd(&["CLUSTER", "NODES"]).await;
        assert_eq!(
            nodes,
            format!(
                "{:?}",
                format!(
                    "{} {addr}@0 myself,master - 0 0 1 connected 0-16383\n",
                    myid.trim_matches('"')
                )
            )
        );
        raw.expect_table(&[
            (&["CLUSTER", "KEYSLOT", "somekey"], ":11058"),
            (&["READONLY"], "+OK"),
            (&["READWRITE"], "+OK"),
            (
                &["CLUSTER"],
                "-ERR wrong number of arguments for 'cluster' command",
            ),
            (
                &["INFO", "cluster"],
                "\"# Cluster\\r\\ncluster_enabled:1\\r\\n\"",
            ),
        ])
        .await;

        // A cluster-mode client works against a single node too.
        let client = ClusterClient::new([format!("redis://{addr}/")]).expect("cluster client");
        let mut cluster = client.get_async_connection().await.expect("connects");
        let () = cluster.set("{user1}:a", "1").await.expect("SET");
        let got: i64 = cluster.incr("{user1}:a", 41).await.expect("INCRBY");
        assert_eq!(got, 42);
        drop((cluster, con));
        node.shutdown().await;
    })
    .await;
}
