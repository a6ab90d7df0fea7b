//! Starting and stopping nodes: port 0, several nodes per process, shutdown closes clients
//! and does not hang, invalid configs are refused, redis-crate clients work end to end.
mod common;

use common::{Raw, bounded, redis_connection, start, test_config};
use redis::AsyncCommands;
use std::time::Duration;
use tern_node::server::{self, StartError};

#[tokio::test]
async fn several_nodes_run_side_by_side_and_shut_down() {
    bounded(async {
        let a = start(test_config()).await;
        let b = start(test_config()).await;
        assert_ne!(a.local_addr(), b.local_addr());
        let mut con_a = redis_connection(a.local_addr()).await;
        let mut con_b = redis_connection(b.local_addr()).await;
        let () = con_a.set("k", "a").await.expect("SET a");
        let () = con_b.set("k", "b").await.expect("SET b");
        assert_eq!(con_a.get::<_, String>("k").await.expect("GET a"), "a");
        assert_eq!(con_b.get::<_, String>("k").await.expect("GET b"), "b");

        let mut raw = Raw::connect(a.local_addr()).await;
        assert_eq!(raw.cmd(&["PING"]).await, "+PONG");
        let addr = a.local_addr();
        a.shutdown().await;
        assert!(raw.is_closed().await, "shutdown closes client connections");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "shutdown stops listening"
        );
        assert_eq!(
            con_b
                .get::<_, String>("k")
                .await
                .expect("other node unaffected"),
            "b"
        );
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_node() {
    bounded(async {
        let node = start(test_config()).await;
        let addr = node.local_addr();
        drop(node);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node still listening after its handle was dropped");
    })
    .await;
}

#[tokio::test]
async fn invalid_configs_and_busy_ports_are_refused_clearly() {
    bounded(async {
        let mut config = test_config();
        config.partitions = 0;
        let err = server::start(config).await.expect_err("0 partitions");
        assert!(matches!(err, StartError::Config(_)), "{err}");
        assert!(err.to_string().contains("partitions"), "{err}");

        let node = start(test_config()).await;
        let mut taken = test_config();
        taken.listen = node.local_addr();
        let err = server::start(taken).await.expect_err("port in use");
        assert!(matches!(err, StartError::Bind { .. }), "{err}");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn redis_crate_round_trips_every_data_command() {
    bounded(async {
        let mut config = test_config();
        config.workers = 0; // one per core
        config.partitions = 16;
        let node = start(config).await;
        let mut con = redis_connection(node.local_addr()).await;
        let () = con.set("s", "hello").await.expect("SET");
        assert_eq!(
            con.get::<_, Option<String>>("s").await.expect("GET"),
            Some("hello".to_owned())
        );
        assert_eq!(
            con.get::<_, Option<String>>("nope").await.expect("GET"),
            None
        );
        assert_eq!(con.incr::<_, _, i64>("n", 5).await.expect("INCRBY"), 5);
        assert_eq!(con.decr::<_, _, i64>("n", 2).await.expect("DECRBY"), 3);
        let () = con.mset(&[("a", "1"), ("b", "2")]).await.expect("MSET");
        let values: Vec<Option<String>> = con.mget(&["a", "zz", "b"]).await.expect("MGET");
        assert_eq!(values, [Some("1".to_owned()), None, Some("2".to_owned())]);
        assert_eq!(
            con.exists::<_, i64>(&["a", "b", "zz"])
                .await
                .expect("EXISTS"),
            2
        );
        assert!(con.expire::<_, bool>("a", 100).await.expect("EXPIRE"));
        assert_eq!(con.ttl::<_, i64>("a").await.expect("TTL"), 100);
        assert!(con.pexpire::<_, bool>("b", 100_000).await.expect("PEXPIRE"));
        let pttl: i64 = con.pttl("b").await.expect("PTTL");
        assert!((99_000..=100_000).contains(&pttl), "{pttl}");
        assert_eq!(con.del::<_, i64>(&["a", "b", "zz"]).await.expect("DEL"), 2);
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .expect("DBSIZE");
        assert_eq!(size, 2);
        let err = con
            .incr::<_, _, i64>("s", 1)
            .await
            .expect_err("INCR on text");
        assert_eq!(
            err.detail(),
            Some("value is not an integer or out of range"),
            "{err}"
        );
        let () = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("FLUSHALL");
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .expect("DBSIZE");
        assert_eq!(size, 0);

        // A pipeline from the client library comes back in order.
        let mut pipe = redis::pipe();
        for i in 0..200 {
            pipe.set(format!("p{i}"), i).ignore().get(format!("p{i}"));
        }
        let got: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline");
        assert_eq!(got, (0..200).collect::<Vec<i64>>());
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_clients_are_served() {
    bounded(async {
        let node = start(test_config()).await;
        let addr = node.local_addr();
        let clients: Vec<_> = (0..50)
            .map(|c| {
                tokio::spawn(async move {
                    let mut con = redis_connection(addr).await;
                    for i in 0..100 {
                        let () = con.set(format!("c{c}:{i}"), i).await.expect("SET");
                        let _: i64 = con.incr("shared", 1).await.expect("INCR");
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client task");
        }
        let mut con = redis_connection(addr).await;
        assert_eq!(con.get::<_, i64>("shared").await.expect("GET"), 5000);
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .expect("DBSIZE");
        assert_eq!(size, 5001);
        node.shutdown().await;
    })
    .await;
}
