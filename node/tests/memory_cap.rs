//! `limits.data_bytes_max` end to end on a real node: writes that store a value are refused with
//! Redis's `-OOM` once the node's data reaches the cap, reads/DEL/EXPIRE still work, deleting
//! makes room again, and INFO / the node status report it.
mod common;

use common::{Raw, bounded, start, test_config};
use std::time::{Duration, Instant};
use tern_node::host_memory;
use tern_node::limits::Limits;

const CAP_BYTES: usize = 64 * 1024;
const VALUE_BYTES: usize = 1000;
const OOM: &str =
    "-OOM command not allowed when used memory > 'maxmemory' (data_bytes_max reached)";

/// The value of `field` in an INFO reply rendered by `Raw::cmd` (a quoted bulk string).
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.split("\\r\\n")
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim_end_matches('"').parse().ok())
}

#[tokio::test]
async fn a_node_at_its_data_cap_refuses_writes_until_deletes_make_room() {
    bounded(async {
        let mut config = test_config();
        config.limits = Limits {
            data_bytes_max: CAP_BYTES,
            ..Limits::default()
        };
        let node = start(config).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let value = "v".repeat(VALUE_BYTES);

        // Fill until refused; every write before that succeeded.
        let mut stored = 0;
        let refusal = loop {
            let reply = c.cmd(&["SET", &format!("key:{stored}"), &value]).await;
            if reply != "+OK" {
                break reply;
            }
            stored += 1;
            assert!(stored < 1000, "the cap never refused a write");
        };
        assert_eq!(refusal, OOM);
        let per_key = VALUE_BYTES + 300; // at least the value plus a per-entry overhead
        assert!(
            stored >= 1 && stored <= CAP_BYTES / per_key + 1,
            "{stored} keys of {VALUE_BYTES} B fit under {CAP_BYTES} B"
        );

        // Full: what stores a value is refused, the rest runs.
        c.expect_table(&[
            (&["SET", "other", "x"], OOM),
            (&["INCR", "counter"], OOM),
            (&["GET", "key:0"], &format!("\"{value}\"")),
            (&["EXISTS", "key:1"], ":1"),
            (&["EXPIRE", "key:0", "1000"], ":1"),
            (&["DEL", "key:0", "key:1", "key:2"], ":3"),
        ])
        .await;
        // DEL made room (tombstones cost only the per-entry overhead).
        assert_eq!(c.cmd(&["SET", "after", "x"]).await, "+OK");
        assert_eq!(c.cmd(&["GET", "after"]).await, "\"x\"");

        // Reported: status, metrics' source, INFO memory (published about once a tick).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = node.status();
            let info = c.cmd(&["INFO", "memory"]).await;
            let reported = status.memory_writes_refused_total >= 3
                && status.data_bytes_max == CAP_BYTES as u64
                && status.data_bytes > 0
                && info_field(&info, "maxmemory") == Some(CAP_BYTES as u64)
                && info_field(&info, "used_memory") == Some(status.data_bytes)
                && info_field(&info, "used_memory_rss").is_some_and(|rss| rss > 0);
            if reported {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not reported: {status:?} / {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.shutdown().await;
    })
    .await;
}

/// Unset, the cap is half the container's memory limit if the test runs in one, else none.
#[tokio::test]
async fn an_unset_cap_refuses_nothing_here() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let value = "v".repeat(VALUE_BYTES);
        // Well past what the capped node above took.
        for i in 0..200 {
            assert_eq!(c.cmd(&["SET", &format!("key:{i}"), &value]).await, "+OK");
        }
        let info = c.cmd(&["INFO", "memory"]).await;
        let default_cap =
            host_memory::effective_data_cap(0, host_memory::container_memory_limit_bytes());
        assert_eq!(
            info_field(&info, "maxmemory"),
            Some(default_cap.bytes() as u64),
            "{info}"
        );
        node.shutdown().await;
    })
    .await;
}
