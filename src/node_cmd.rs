//! `tern node`: load the config, run the node, stop gracefully on SIGTERM/SIGINT.
use tracing::{info, warn};

use crate::cli::NodeArgs;
use crate::config_load;
use crate::node_host;
use crate::shutdown::ShutdownSignals;

/// The stdout line announcing the bound address; tests and scripts parse it, keep it stable.
pub const LISTENING_PREFIX: &str = "tern node listening on ";

pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = config_load::load(args.config.as_deref())?;
    node_host::block_on(async move {
        let mut signals = ShutdownSignals::install()?;
        let node = node_host::start(config).await?;
        let addr = node.local_addr();
        println!("{LISTENING_PREFIX}{addr}");
        info!(%addr, "tern node listening");

        let signal = signals.recv().await;
        info!(
            signal,
            "shutting down: no new connections, finishing requests in flight"
        );
        tokio::select! {
            () = node.shutdown() => {
                info!("tern node stopped");
                Ok(())
            }
            second = signals.recv() => {
                warn!(signal = second, "second signal during shutdown; exiting at once");
                anyhow::bail!("shutdown interrupted by a second {second}")
            }
        }
    })
}
