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

/// Removing a node (docs/design/site-ha.md, "Membership"): drain it and wait until it holds
/// no copy (its partitions' stand-ins caught up), restart the others without it, then stop it.
/// Before the map moved copies off draining nodes, a restarted node whose only partner copy
/// was on the leaving node (its transport no longer reaches it) could lose a partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_is_removed_by_a_rolling_config_change_without_losing_a_key() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(300), async {
        let mut site = grow_to_four(22).await;
        // Remove node 4: drain it, restart the others without it (node 4 keeps running, so
        // each restart leaves a quorum of the 4 voters), then stop it.
        site.drain(0, 4).await;
        site.wait_for(
            "node 4 drained: primary nowhere, no copy left",
            Duration::from_secs(30),
            |statuses| {
                settled(statuses)
                    && statuses.iter().all(|s| {
                        s.partitions.iter().all(|p| {
                            p.primary != Some(4) && p.replicas.iter().all(|r| r.node_id != 4)
                        })
                    })
            },
        )
        .await;
        site.set_members(&[0, 1, 2]);
        for i in [0, 1, 2] {
            site.shutdown(i).await;
            site.restart(i).await;
            site.wait_for(
                &format!("node {} back after its restart", i + 1),
                Duration::from_secs(30),
                // Node 4 is left out: once removed, it no longer follows the map.
                |statuses| {
                    statuses[..3]
                        .iter()
                        .all(|s| s.ready && s.partitions.iter().all(|p| p.primary.is_some()))
                },
            )
            .await;
        }
        wait_until_removed(&site, &[0, 1, 2], 4).await;
        site.crash(3).await;
        assert_removed_and_every_key_kept(site, 4)
            .await
            .stop_all()
            .await;
    })
    .await;
}

/// A node that died (never drained) and was dropped from every config leaves the map once its
/// partitions failed over, and then the Raft voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_dropped_from_the_configs_leaves_the_map() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(300), async {
        let mut site = grow_to_four(23).await;
        site.crash(3).await;
        site.wait_for(
            "node 4's partitions failed over",
            Duration::from_secs(30),
            |statuses| {
                statuses.iter().all(|s| {
                    s.partitions
                        .iter()
                        .all(|p| p.primary.is_some() && p.primary != Some(4))
                })
            },
        )
        .await;
        site.set_members(&[0, 1, 2]);
        // Until a leader with the new config removes node 4, each restart leaves 2 of the 4
        // voters: the map waits for the restarted node, then carries on.
        rolling_restart(&mut site, &[0, 1, 2]).await;
        wait_until_removed(&site, &[0, 1, 2], 4).await;
        let mut site = assert_removed_and_every_key_kept(site, 4).await;
        // Node 4 left the Raft voters too: 2 of the 3 remaining voters are a quorum, so a
        // crash of node 3 still fails over (with node 4 still a voter, 2 of 4 would not be).
        site.crash(2).await;
        site.wait_for(
            "node 3's partitions failed over",
            Duration::from_secs(30),
            |statuses| {
                statuses.iter().all(|s| {
                    s.partitions
                        .iter()
                        .all(|p| p.primary.is_some() && p.primary != Some(3))
                })
            },
        )
        .await;
        for via in site.running() {
            assert_all_readable(&site, via).await;
        }
        site.stop_all().await;
    })
    .await;
}

/// Waits until the maps of nodes `via` list every node but `gone`.
async fn wait_until_removed(site: &Site, via: &[usize], gone: u64) {
    let expected: Vec<u64> = via.iter().map(|&i| i as u64 + 1).collect();
    let mut removed = false;
    for _ in 0..300 {
        let lists = map_nodes(site);
        if via.iter().all(|&i| lists.get(i) == Some(&expected)) {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        removed,
        "node {gone} still in the map: {:?}",
        map_nodes(site)
    );
}

/// With `gone` stopped: the site settles on the remaining nodes, no map lists `gone` or gives
/// it a copy, and every key reads back through every node.
async fn assert_removed_and_every_key_kept(site: Site, gone: u64) -> Site {
    site.wait_settled(Duration::from_secs(60)).await;
    for statuses in site.statuses() {
        assert_eq!(statuses.members.len(), 3, "{statuses:#?}");
        assert!(
            statuses.members.iter().all(|m| m.node_id != gone),
            "{statuses:#?}"
        );
        for p in &statuses.partitions {
            assert!(p.replicas.iter().all(|r| r.node_id != gone), "{p:?}");
        }
    }
    for via in site.running() {
        assert_all_readable(&site, via).await;
    }
    site
}
