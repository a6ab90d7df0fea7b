//! Adding a node to a running site and removing it again, as an operator does it: a rolling
//! configuration change (every node restarted, one at a time, with the new peer list). See
//! docs/design/site-ha.md, "Membership", and `site_harness` for how the nodes run.
mod common;
mod site_harness;

use common::Raw;
use site_harness::{SERIAL, Site, bounded, settled};
use std::time::Duration;

const PARTITIONS: u32 = 8;
const KEYS: usize = 40;

fn key(k: usize) -> (String, String) {
    (format!("member-key-{k}"), format!("value-{k}"))
}

/// Every written key reads back through node `via`.
async fn assert_all_readable(site: &Site, via: usize) {
    let mut client = Raw::connect(site.addr(via)).await;
    for k in 0..KEYS {
        let (key, value) = key(k);
        assert_eq!(
            client.cmd(&["GET", &key]).await,
            format!("\"{value}\""),
            "{key} lost (read through node {})",
            via + 1
        );
    }
}

/// Graceful restart of each of `nodes` in turn, each waiting until they serve again (a node
/// waiting to join is left out: it has no map until it is added).
async fn rolling_restart(site: &mut Site, nodes: &[usize]) {
    for &i in nodes {
        site.shutdown(i).await;
        site.restart(i).await;
        site.wait_for(
            &format!("node {} back after its restart", i + 1),
            Duration::from_secs(30),
            |statuses| settled(&statuses[..nodes.len()]),
        )
        .await;
    }
}

fn map_nodes(site: &Site) -> Vec<Vec<u64>> {
    site.statuses()
        .iter()
        .map(|s| s.members.iter().map(|m| m.node_id).collect())
        .collect()
}

/// Starts 3 nodes, writes keys, then adds node 4 by a rolling config change; returns the site
/// with 4 members, settled, node 4 primary of some partitions, every key readable everywhere.
async fn grow_to_four(net: u8) -> Site {
    let mut site = Site::start_with_spares(net, 3, 1, PARTITIONS).await;
    site.wait_settled(Duration::from_secs(20)).await;
    let mut client = Raw::connect(site.addr(0)).await;
    for k in 0..KEYS {
        let (key, value) = key(k);
        assert_eq!(client.cmd(&["SET", &key, &value]).await, "+OK");
    }
    drop(client);

    // Add node 4: it starts with the 4-peer list and joins; the others are restarted with
    // that list one at a time, and whichever of them leads with it adds node 4.
    site.set_members(&[0, 1, 2, 3]);
    site.join(3).await;
    rolling_restart(&mut site, &[0, 1, 2]).await;
    site.wait_for(
        "every node's map lists 4 nodes",
        Duration::from_secs(30),
        |statuses| {
            statuses.len() == 4
                && statuses
                    .iter()
                    .all(|s| s.members.len() == 4 && s.map_version == statuses[0].map_version)
        },
    )
    .await;
    // Placement over 4 nodes gives node 4 preferred primaries; it catches up as a backup,
    // then failback hands them over.
    site.wait_settled(Duration::from_secs(60)).await;
    let primaries = site.primaries();
    assert!(
        primaries.values().any(|p| *p == Some(4)),
        "node 4 leads nothing: {primaries:?}"
    );
    for via in site.running() {
        assert_all_readable(&site, via).await;
    }

    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_site_and_takes_primaries_without_losing_a_key() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(180), async {
        let site = grow_to_four(21).await;
        site.stop_all().await;
    })
    .await;
}

/// Known gap (see docs/design/site-ha.md, "Membership"): a drained node keeps its *backup*
/// copies (the map's placement still counts `Draining` nodes), so restarting the others with
/// a config without it can leave a restarted node's only partner copy on the node its
/// transport no longer reaches. Needs the map to move backups off draining nodes.
#[ignore = "needs map.rs: move backup copies off Draining nodes before removal"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_is_removed_by_a_rolling_config_change_without_losing_a_key() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(300), async {
        let mut site = grow_to_four(22).await;
        // Remove node 4: drain it, restart the others without it (node 4 keeps running, so
        // each restart leaves a quorum of the 4 voters), then stop it.
        site.drain(0, 4).await;
        site.wait_for("node 4 drained", Duration::from_secs(30), |statuses| {
            settled(statuses) && statuses[0].partitions.iter().all(|p| p.primary != Some(4))
        })
        .await;
        site.set_members(&[0, 1, 2]);
        for i in [0, 1, 2] {
            site.shutdown(i).await;
            site.restart(i).await;
            site.wait_for(
                &format!("node {} back after its restart", i + 1),
                Duration::from_secs(30),
                |statuses| {
                    statuses.iter().all(|s| s.ready)
                        && statuses[..3]
                            .iter()
                            .all(|s| s.partitions.iter().all(|p| p.primary.is_some()))
                },
            )
            .await;
        }
        let mut removed = false;
        for _ in 0..300 {
            let lists = map_nodes(&site);
            if lists[..3].iter().all(|l| l == &[1, 2, 3]) {
                removed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(removed, "node 4 still in the map: {:?}", map_nodes(&site));
        site.crash(3).await;
        site.wait_settled(Duration::from_secs(60)).await;
        for statuses in site.statuses() {
            assert_eq!(statuses.members.len(), 3, "{statuses:#?}");
            for p in &statuses.partitions {
                assert!(p.replicas.iter().all(|r| r.node_id != 4), "{p:?}");
            }
        }
        for via in site.running() {
            assert_all_readable(&site, via).await;
        }
        site.stop_all().await;
    })
    .await;
}
