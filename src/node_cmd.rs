//! `tern node`: load the config, run the node, stop gracefully on SIGTERM/SIGINT.
use tracing::{info, warn};

use crate::cli::NodeArgs;
use crate::config_load;
use crate::node_host;
use crate::shutdown::ShutdownSignals;

/// The stdout line announcing the bound address; tests and scripts parse it, keep it stable.
pub const LISTENING_PREFIX: &str = "tern node listening on ";

pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = config_load::load(&args.config)?;
    node_host::block_on(async move {
        let mut signals = ShutdownSignals::install()?;
        let hosted = node_host::start_hosted(config).await?;
        let addr = hosted.node.local_addr();
        println!("{LISTENING_PREFIX}{addr}");
        if let Some(gateway) = &hosted.gateway {
            println!(
                "{}{}",
                node_host::GATEWAY_LISTENING_PREFIX,
                gateway.local_addr()
            );
        }
        info!(%addr, "tern node listening");

        let stdin_closed = stdin_eof(args.stop_on_stdin_eof);
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            () = stdin_closed => "end of stdin (the supervisor is gone)",
        };
        info!(
            signal,
            "shutting down: no new connections, finishing requests in flight"
        );
        tokio::select! {
            () = hosted.shutdown() => {
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

/// Resolves when stdin reaches end of file (or fails), if `enabled`; never otherwise. A plain
/// thread does the blocking read: tokio's stdin would hold up runtime shutdown until the read
/// returns, and this read only returns when the supervisor goes away.
async fn stdin_eof(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
    match spawned {
        // Either the sender fired or the thread died; both mean stdin is gone.
        Ok(_) => {
            let _ = rx.await;
        }
        Err(err) => {
            warn!(%err, "cannot watch stdin; only signals will stop this node");
            std::future::pending::<()>().await;
        }
    }
}
