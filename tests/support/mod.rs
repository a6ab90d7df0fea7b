//! Real-process helpers: spawn the `tern` binary with a clean environment, read its announced
//! address, signal it, and make sure it is dead when the test ends (pass or panic).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");
/// How long a node may take to announce its address (debug build, busy 2-core machine).
pub const STARTUP_MAX: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take after SIGTERM/SIGINT.
pub const SHUTDOWN_MAX: Duration = Duration::from_secs(10);
/// How long one reply may take.
pub const REPLY_MAX: Duration = Duration::from_secs(10);
/// The stdout line prefix `tern node` prints once it accepts connections.
pub const LISTENING_PREFIX: &str = "tern node listening on ";

/// A `tern` command with an empty environment (so a developer's `TERN_*` or `RUST_LOG` cannot
/// change what a test sees) plus `envs`.
pub fn tern_command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(TERN);
    cmd.args(args).env_clear();
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd
}

/// A child process that is killed and reaped when dropped, so no test leaves an orphan.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl ChildGuard {
    /// Spawns with stdout piped (returned as a line channel) and stderr collected.
    pub fn spawn(mut cmd: Command) -> (Self, Receiver<String>) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("spawning tern (built by cargo for this test)");
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr_pipe = child.stderr.take().expect("stderr was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_reader = thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .expect("stderr sink not poisoned")
                    .push_str(&text);
            }
        });
        let guard = Self {
            child,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        (guard, rx)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .expect("stderr sink not poisoned")
            .clone()
    }

    /// All of stderr, once the child has exited (the pipe then reaches end of file).
    pub fn stderr_after_exit(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr()
    }

    /// Sends a signal by name (`TERM`, `INT`) with the system `kill`, which keeps the tests free
    /// of `unsafe` libc calls (the workspace forbids unsafe code).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits for exit at most `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait().expect("polling the child") {
                Some(status) => return Some(status),
                None if Instant::now() >= deadline => return None,
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running `tern node` and the address it announced.
#[derive(Debug)]
pub struct NodeProcess {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    pub stdout: Receiver<String>,
}

impl NodeProcess {
    /// Starts `tern node` on 127.0.0.1, port chosen by the OS, plus extra args and env.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut all_envs = vec![("TERN_LISTEN", "127.0.0.1:0")];
        all_envs.extend_from_slice(envs);
        let mut all_args = vec!["node"];
        all_args.extend_from_slice(args);
        let (mut guard, stdout) = ChildGuard::spawn(tern_command(&all_args, &all_envs));
        let deadline = Instant::now() + STARTUP_MAX;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
                        let addr = addr.trim().parse().expect("announced address parses");
                        return Self {
                            guard,
                            addr,
                            stdout,
                        };
                    }
                }
                Err(_) => {
                    let status = guard.wait_timeout(Duration::ZERO);
                    panic!(
                        "tern node did not announce its address within {STARTUP_MAX:?} \
                         (exit status {status:?}); stderr:\n{}",
                        guard.stderr()
                    );
                }
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A connection whose every reply is bounded by [`REPLY_MAX`]; redis-rs's own default
    /// (500 ms) is too tight for a debug build on a busy CI machine.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("valid redis url");
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(STARTUP_MAX))
            .set_response_timeout(Some(REPLY_MAX));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connecting to tern node")
    }
}

/// Output of a process run to completion.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tern args` to completion, killing it (and failing the test) after `timeout`.
pub fn run_bounded(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Finished {
    let (mut guard, stdout) = ChildGuard::spawn(tern_command(args, envs));
    let Some(status) = guard.wait_timeout(timeout) else {
        panic!(
            "tern {args:?} still running after {timeout:?}; stderr:\n{}",
            guard.stderr()
        );
    };
    // The reader thread ends when the pipe closes at exit; the bound only guards a stuck pipe.
    let mut lines = Vec::new();
    while let Ok(line) = stdout.recv_timeout(Duration::from_secs(2)) {
        lines.push(line);
    }
    Finished {
        status,
        stdout: lines.join("\n"),
        stderr: guard.stderr_after_exit(),
    }
}

/// A temp dir holding `tern.toml` with `contents`; the dir is removed on drop.
pub fn config_file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let path = dir.path().join("tern.toml");
    std::fs::write(&path, contents).expect("writing the config file");
    (dir, path)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
