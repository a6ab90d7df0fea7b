//! `tern space force-primary`: `POST /v1/partitions/{partition}/force-primary` with the
//! confirmation the node insists on, sent only when the operator passed
//! `--yes-i-accept-data-loss` (clap refuses the command without it). `--all-without-primary`
//! does it for every partition the node sees without primary — the recovery after a whole site
//! restarted, where no copy kept its data and each partition would otherwise need its own call.
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use tern_node::admin::http::{FORCE_PRIMARY_CONFIRMATION, ForcePrimaryDone, ForcePrimaryRequest};
use tern_node::admin::{MemberState, NodeStatus};

use crate::admin_client::{AdminClient, describe_failure};
use crate::cli::ForcePrimaryArgs;
use crate::node_host;

/// The node answers once the partition map applied the command, or gives up after its own
/// request timeout (10 s by default) with 504; the CLI waits a little longer to see that.
const FORCE_REQUEST_MAX: Duration = Duration::from_secs(15);

pub fn force_primary(args: ForcePrimaryArgs) -> anyhow::Result<()> {
    // clap makes the flag required; checked again so no other caller can skip it.
    if !args.yes_i_accept_data_loss {
        bail!("refusing to force a primary without --yes-i-accept-data-loss");
    }
    let client = AdminClient::new(args.admin.admin, FORCE_REQUEST_MAX);
    match (args.partition, args.all_without_primary) {
        (Some(partition), false) => {
            let node = args.node.context("--partition needs --node")?;
            let done = node_host::block_on(send(&client, partition, node))?;
            println!("{}", describe(&done));
            Ok(())
        }
        (None, true) => {
            let outcome = node_host::block_on(force_all(&client, args.node))?;
            for line in &outcome.lines {
                println!("{line}");
            }
            if outcome.failed > 0 {
                bail!(
                    "{} of {} partitions without primary were not forced",
                    outcome.failed,
                    outcome.lines.len()
                );
            }
            Ok(())
        }
        _ => bail!("give either --partition P --node N, or --all-without-primary"),
    }
}

/// What `--all-without-primary` did, a line per partition without primary.
#[derive(Debug, Default, PartialEq, Eq)]
struct ForceAllOutcome {
    lines: Vec<String>,
    failed: usize,
}

async fn force_all(client: &AdminClient, node: Option<u64>) -> anyhow::Result<ForceAllOutcome> {
    let status: NodeStatus = client.get_json("/v1/status").await?;
    let mut outcome = ForceAllOutcome::default();
    for (partition, target) in plan_all(&status, node) {
        let line = match target {
            Ok(node) => match send(client, partition, node).await {
                Ok(done) => Ok(describe(&done)),
                Err(error) => Err(format!("partition {partition}: not forced: {error:#}")),
            },
            Err(why) => Err(format!("partition {partition}: not forced: {why}")),
        };
        match line {
            Ok(line) => outcome.lines.push(line),
            Err(line) => {
                outcome.failed += 1;
                outcome.lines.push(line);
            }
        }
    }
    if outcome.lines.is_empty() {
        outcome
            .lines
            .push("every partition has a primary: nothing to force".to_owned());
    }
    Ok(outcome)
}

/// For each partition without primary, the node to make its primary: `node` if given, else its
/// first replica that is up (it holds the partition's recent copy if any node does).
fn plan_all(status: &NodeStatus, node: Option<u64>) -> Vec<(u16, Result<u64, String>)> {
    let is_up = |id: u64| {
        status
            .members
            .iter()
            .any(|m| m.node_id == id && m.state == MemberState::Up)
    };
    status
        .partitions
        .iter()
        .filter(|p| p.primary.is_none())
        .map(|p| {
            let target = match node {
                Some(node) => Ok(node),
                None => p
                    .replicas
                    .iter()
                    .map(|r| r.node_id)
                    .find(|&id| is_up(id))
                    .ok_or_else(|| "none of its replicas is up; name one with --node".to_owned()),
            };
            (p.partition, target)
        })
        .collect()
}

async fn send(client: &AdminClient, partition: u16, node: u64) -> anyhow::Result<ForcePrimaryDone> {
    let path = format!("/v1/partitions/{partition}/force-primary");
    let body = serde_json::to_vec(&ForcePrimaryRequest {
        node,
        confirm: FORCE_PRIMARY_CONFIRMATION.to_owned(),
    })
    .context("encoding the request as JSON")?;
    let reply = client
        .request_with_body(Method::POST, &path, Some(Bytes::from(body)))
        .await?;
    let url = format!("POST http://{}{path}", client.addr());
    if !reply.status.is_success() {
        bail!("{url}: {}", describe_failure(&reply));
    }
    serde_json::from_slice(&reply.body).with_context(|| format!("decoding the JSON of {url}"))
}

fn describe(done: &ForcePrimaryDone) -> String {
    format!(
        "partition {}: node {} is its primary now; writes only the lost primary held are lost",
        done.partition, done.node_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tern_node::admin::http::{self, AdminContext};
    use tern_node::admin::{
        AdminRequest, AdminRequestError, MemberStatus, PartitionStatus, ReplicaRole, ReplicaStatus,
        StatusHub,
    };

    use crate::cli::{Cli, Command, SpaceCommand};

    #[test]
    fn the_data_loss_flag_is_required() {
        let base = [
            "tern",
            "space",
            "force-primary",
            "--partition",
            "3",
            "--node",
            "2",
        ];
        let refused = Cli::try_parse_from(base).expect_err("no flag, no command");
        assert!(
            refused.to_string().contains("--yes-i-accept-data-loss"),
            "{refused}"
        );
        let cli = Cli::try_parse_from(base.iter().chain(&["--yes-i-accept-data-loss"]))
            .expect("parses with the flag");
        match cli.command {
            Command::Space(SpaceCommand::ForcePrimary(args)) => {
                assert_eq!((args.partition, args.node), (Some(3), Some(2)));
                assert!(!args.all_without_primary);
                assert!(args.yes_i_accept_data_loss);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Through a real admin server to a fake shell: node 2 is accepted, node 9 is rejected by
    /// the map, and the request carries the confirmation (else the server answers 400).
    #[test]
    fn sends_the_confirmation_and_reports_the_answer() {
        node_host::block_on(async {
            let (tx, mut requests) = tokio::sync::mpsc::channel(4);
            let shell = tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(request) = requests.recv().await {
                    if let AdminRequest::ForcePrimary {
                        partition,
                        node_id,
                        reply,
                    } = request
                    {
                        seen.push((partition, node_id));
                        let _ = reply.send(match node_id {
                            2 => Ok(()),
                            _ => Err(AdminRequestError::Rejected(format!(
                                "partition {partition} has a primary"
                            ))),
                        });
                    }
                }
                seen
            });
            let ctx = AdminContext {
                hub: StatusHub::new(),
                wan: Default::default(),
                requests: tx,
                transport_stats: None,
            };
            let server = http::start("127.0.0.1:0".parse()?, ctx)?;
            let client = AdminClient::new(server.local_addr().to_string(), FORCE_REQUEST_MAX);
            let done = send(&client, 3, 2).await?;
            assert_eq!(
                describe(&done),
                "partition 3: node 2 is its primary now; writes only the lost primary held are lost"
            );
            let err = send(&client, 5, 9).await.expect_err("rejected");
            let text = format!("{err:#}");
            assert!(text.contains("409 Conflict"), "{text}");
            assert!(text.contains("partition 5 has a primary"), "{text}");
            server.shutdown().await;
            assert_eq!(shell.await?, vec![(3, 2), (5, 9)]);
            Ok(())
        })
        .expect("exchange with the admin server");
    }
    /// Which argument combinations clap accepts.
    #[test]
    fn one_partition_with_a_node_or_all_without_primary() {
        let table: [(&[&str], bool); 6] = [
            (&["--partition", "3", "--node", "2"], true),
            (&["--partition", "3"], false),
            (&["--node", "2"], false),
            (&["--all-without-primary"], true),
            (&["--all-without-primary", "--node", "2"], true),
            (
                &["--all-without-primary", "--partition", "3", "--node", "2"],
                false,
            ),
        ];
        for (args, accepted) in table {
            let line = ["tern", "space", "force-primary", "--yes-i-accept-data-loss"]
                .iter()
                .chain(args);
            assert_eq!(Cli::try_parse_from(line).is_ok(), accepted, "{args:?}");
        }
    }

    fn replica(node_id: u64) -> ReplicaStatus {
        ReplicaStatus {
            node_id,
            role: ReplicaRole::Backup,
            in_sync: false,
            last_seq: None,
            lag_records: None,
        }
    }

    fn member(node_id: u64, state: MemberState) -> MemberStatus {
        MemberStatus {
            node_id,
            name: format!("n{node_id}.a"),
            resp_addr: String::new(),
            zone: None,
            state,
            incarnation: 1,
        }
    }

    /// A site after a whole-site restart, as node 1 sees it: p0 has a primary again, p1's
    /// replicas are node 2 (down) and node 3 (up), p2's only replica is down, p3's is node 1.
    fn site_after_restart() -> NodeStatus {
        let partition = |partition: u16, primary: Option<u64>, replicas: &[u64]| PartitionStatus {
            partition,
            epoch: 4,
            primary,
            replicas: replicas.iter().map(|&id| replica(id)).collect(),
            handover_to: None,
        };
        NodeStatus {
            node_id: 1,
            partitions: vec![
                partition(0, Some(1), &[1, 2]),
                partition(1, None, &[2, 3]),
                partition(2, None, &[2]),
                partition(3, None, &[1, 3]),
            ],
            members: vec![
                member(1, MemberState::Up),
                member(2, MemberState::Down),
                member(3, MemberState::Up),
            ],
            ..NodeStatus::default()
        }
    }

    #[test]
    fn all_without_primary_picks_a_replica_that_is_up() {
        let status = site_after_restart();
        assert_eq!(
            plan_all(&status, None),
            vec![
                (1, Ok(3)),
                (
                    2,
                    Err("none of its replicas is up; name one with --node".to_owned())
                ),
                (3, Ok(1)),
            ]
        );
        assert_eq!(
            plan_all(&status, Some(3)),
            vec![(1, Ok(3)), (2, Ok(3)), (3, Ok(3))]
        );
    }

    /// Through a real admin server: the status is read, one request per partition without
    /// primary is sent, a rejection is reported and counted, the others still go.
    #[test]
    fn all_without_primary_forces_each_and_counts_failures() {
        node_host::block_on(async {
            let (tx, mut requests) = tokio::sync::mpsc::channel(4);
            let shell = tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(request) = requests.recv().await {
                    if let AdminRequest::ForcePrimary {
                        partition,
                        node_id,
                        reply,
                    } = request
                    {
                        seen.push((partition, node_id));
                        let _ = reply.send(match partition {
                            3 => Err(AdminRequestError::Rejected(format!(
                                "node {node_id} has not registered an incarnation yet"
                            ))),
                            _ => Ok(()),
                        });
                    }
                }
                seen
            });
            let hub = StatusHub::new();
            hub.publish(site_after_restart());
            let ctx = AdminContext {
                hub,
                wan: Default::default(),
                requests: tx,
                transport_stats: None,
            };
            let server = http::start("127.0.0.1:0".parse()?, ctx)?;
            let client = AdminClient::new(server.local_addr().to_string(), FORCE_REQUEST_MAX);
            let outcome = force_all(&client, None).await?;
            assert_eq!(outcome.failed, 2, "{outcome:#?}");
            assert_eq!(outcome.lines.len(), 3, "{outcome:#?}");
            assert!(outcome.lines[0].starts_with("partition 1: node 3 is its primary now"));
            assert!(outcome.lines[1].contains("none of its replicas is up"));
            assert!(
                outcome.lines[2].contains("has not registered"),
                "{outcome:#?}"
            );
            server.shutdown().await;
            assert_eq!(shell.await?, vec![(1, 3), (3, 1)]);
            Ok(())
        })
        .expect("exchange with the admin server");
    }
}
