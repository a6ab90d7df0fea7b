//! `requirepass`: NOAUTH before authentication, AUTH and HELLO ... AUTH flows.
mod common;

use common::{Raw, bounded, redis_connection, start, test_config};

const NOAUTH: &str = "-NOAUTH Authentication required.";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.";

fn config_with_password() -> tern_node::config::NodeConfig {
    let mut config = test_config();
    config.requirepass = Some("s3cret".to_owned());
    config
}

#[tokio::test]
async fn commands_need_auth_first() {
    bounded(async {
        let node = start(config_with_password()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.expect_table(&[
            (&["PING"], NOAUTH),
            (&["GET", "k"], NOAUTH),
            (&["SELECT", "0"], NOAUTH),
            (&["CLIENT", "ID"], NOAUTH),
            // Unknown commands and arity are checked before authentication, as in Redis.
            (&["NOSUCH"], "-ERR unknown command 'NOSUCH', with args beginning with: "),
            (&["GET"], "-ERR wrong number of arguments for 'get' command"),
            (&["HELLO", "2"], "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"),
            (&["AUTH", "wrong"], WRONGPASS),
            (&["AUTH", "alice", "s3cret"], WRONGPASS),
            (&["AUTH", "a", "b", "c"], "-ERR syntax error"),
            (&["GET", "k"], NOAUTH),
            (&["AUTH", "s3cret"], "+OK"),
            (&["PING"], "+PONG"),
            (&["SET", "k", "v"], "+OK"),
        ])
        .await;

        let mut second = Raw::connect(node.local_addr()).await;
        second.expect_table(&[
            (&["GET", "k"], NOAUTH),
            (&["AUTH", "default", "s3cret"], "+OK"),
            (&["GET", "k"], "\"v\""),
        ])
        .await;

        let mut third = Raw::connect(node.local_addr()).await;
        assert_eq!(third.cmd(&["HELLO", "2", "AUTH", "default", "nope"]).await, WRONGPASS);
        let hello = third.cmd(&["HELLO", "2", "AUTH", "default", "s3cret"]).await;
        assert!(hello.starts_with("[\"server\", \"redis\""), "{hello}");
        assert_eq!(third.cmd(&["GET", "k"]).await, "\"v\"");

        let mut fourth = Raw::connect(node.local_addr()).await;
        assert_eq!(fourth.cmd(&["QUIT"]).await, "+OK", "QUIT needs no auth");
        assert!(fourth.is_closed().await);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn redis_crate_authenticates_with_a_url_password() {
    bounded(async {
        let node = start(config_with_password()).await;
        let addr = node.local_addr();
        let client = redis::Client::open(format!("redis://:s3cret@{addr}/")).expect("url");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("authenticated connection");
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut con)
            .await
            .expect("SET");
        let value: String = redis::cmd("GET")
            .arg("k")
            .query_async(&mut con)
            .await
            .expect("GET");
        assert_eq!(value, "v");

        let mut anonymous = redis_connection(addr).await;
        let err = redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut anonymous)
            .await
            .expect_err("NOAUTH");
        assert_eq!(err.code(), Some("NOAUTH"), "{err}");
        node.shutdown().await;
    })
    .await;
}
