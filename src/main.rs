//! `tern`: run a grid node (`tern node`), watch a narrated client session (`tern demo`), launch
//! local sites (`tern up`), inspect one (`tern status`, `tern space list-instances`), inspect
//! and steer its WAN gateway (`tern gateway`), make development certificates (`tern certs init`).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (clap uses 2 too).
mod admin_client;
mod certs_cmd;
mod cli;
mod config_load;
mod demo;
mod gateway_cmd;
mod logging;
mod node_cmd;
mod node_host;
mod shutdown;
mod space_cmd;
mod status_cmd;
mod up;
mod views;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config_load::InvalidConfig;

/// mimalloc instead of glibc malloc: the write path allocates and frees small buffers across
/// arbiter threads, and glibc's consolidation and page churn were ~30% of a pipelined SET
/// profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Node(_) => "info",
        // The demo's story and the CLI's output go to stdout; only warnings interleave.
        Command::Demo(_)
        | Command::Certs(_)
        | Command::Status(_)
        | Command::Space(_)
        | Command::Up(_)
        | Command::Gateway(_) => "warn",
    };
    if let Err(err) = logging::init(cli.log.as_deref(), default_filter) {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Node(args) => node_cmd::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Certs(command) => certs_cmd::run(command),
        Command::Status(args) => status_cmd::status(args),
        Command::Space(command) => status_cmd::space(command),
        Command::Up(args) => up::run(args),
        Command::Gateway(command) => gateway_cmd::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<InvalidConfig>().is_some() => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// `context: cause: root cause`, skipping a cause whose text its parent already ends with
/// (library errors often print their source inline *and* expose it as `source()`).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_drops_causes_already_printed_inline() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        #[derive(Debug)]
        struct Bind(std::io::Error);
        impl std::fmt::Display for Bind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "binding: {}", self.0)
            }
        }
        impl std::error::Error for Bind {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Bind(io)).context("starting the node");
        assert_eq!(error_chain(&err), "starting the node: binding: in use");
    }
}
