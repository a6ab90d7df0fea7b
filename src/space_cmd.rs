//! `tern space force-primary`: `POST /v1/partitions/{partition}/force-primary` with the
//! confirmation the node insists on, sent only when the operator passed
//! `--yes-i-accept-data-loss` (clap refuses the command without it).
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use tern_node::admin::http::{FORCE_PRIMARY_CONFIRMATION, ForcePrimaryDone, ForcePrimaryRequest};

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
    let done = node_host::block_on(send(&client, args.partition, args.node))?;
    println!("{}", describe(&done));
    Ok(())
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
    use tern_node::admin::{AdminRequest, AdminRequestError, StatusHub};

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
                assert_eq!((args.partition, args.node), (3, 2));
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
}
