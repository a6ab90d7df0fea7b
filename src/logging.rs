//! tracing subscriber setup: `--log` beats `RUST_LOG`, which beats the command's default.
use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

pub fn init(cli_filter: Option<&str>, default_filter: &str) -> anyhow::Result<()> {
    let filter = match cli_filter {
        Some(spec) => {
            EnvFilter::try_new(spec).with_context(|| format!("parsing --log {spec:?}"))?
        }
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files, pipes or test captures.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|err| anyhow::anyhow!("installing the log subscriber: {err}"))
}
