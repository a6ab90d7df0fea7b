//! `tern status` and `tern space list-instances`: read a node's `/v1/status` and print it
//! (`tern space force-primary` lives in [`crate::space_cmd`]).
use std::time::Duration;

use tern_node::admin::NodeStatus;

use crate::admin_client::AdminClient;
use crate::cli::{AdminArgs, SpaceCommand};
use crate::node_host;
use crate::space_cmd;
use crate::views;

/// How long one admin request may take before the CLI gives up.
pub const ADMIN_REQUEST_MAX: Duration = Duration::from_secs(10);

pub fn status(args: AdminArgs) -> anyhow::Result<()> {
    let status = fetch(&args.admin)?;
    print!("{}", views::render_status(&status));
    Ok(())
}

pub fn space(command: SpaceCommand) -> anyhow::Result<()> {
    match command {
        SpaceCommand::ListInstances(args) => {
            let status = fetch(&args.admin)?;
            print!("{}", views::render_instances(&status));
            Ok(())
        }
        SpaceCommand::ForcePrimary(args) => space_cmd::force_primary(args),
    }
}

fn fetch(admin: &str) -> anyhow::Result<NodeStatus> {
    let client = AdminClient::new(admin, ADMIN_REQUEST_MAX);
    node_host::block_on(async move { client.get_json::<NodeStatus>("/v1/status").await })
}
