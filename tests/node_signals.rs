//! Graceful shutdown: SIGTERM and SIGINT stop the node with exit code 0 and close its port.
mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::{NodeProcess, SHUTDOWN_MAX};

fn stops_gracefully_on(signal: &str, signal_name_in_log: &str) {
    let mut node = NodeProcess::start(&[], &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    runtime.block_on(async {
        let mut con = node.connect().await;
        let _: () = redis::cmd("SET")
            .arg("before")
            .arg("shutdown")
            .query_async(&mut con)
            .await
            .expect("SET before the signal");
    });

    node.guard.signal(signal);
    let status = node
        .guard
        .wait_timeout(SHUTDOWN_MAX)
        .unwrap_or_else(|| panic!("tern node still running {SHUTDOWN_MAX:?} after SIG{signal}"));
    let stderr = node.guard.stderr_after_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(signal_name_in_log),
        "the shutdown log should name {signal_name_in_log}; stderr:\n{stderr}"
    );
    let connect = TcpStream::connect_timeout(&node.addr, Duration::from_secs(2));
    assert!(
        connect.is_err(),
        "port {} still accepts after exit",
        node.addr
    );
}

#[test]
fn sigterm_exits_zero_and_closes_the_port() {
    stops_gracefully_on("TERM", "SIGTERM");
}

#[test]
fn sigint_exits_zero_and_closes_the_port() {
    stops_gracefully_on("INT", "SIGINT");
}
