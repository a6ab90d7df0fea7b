//! Waits for SIGTERM or SIGINT. Handlers are installed before the node announces its address,
//! so a supervisor that signals right after reading that line never hits the default
//! (kill-at-once) action.
use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    /// Must run inside a tokio runtime.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves with the name of the next signal received.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
