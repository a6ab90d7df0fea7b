//! `tern demo` runs its whole narrated, self-checking session and exits 0.
mod support;

use std::time::Duration;

#[test]
fn demo_runs_and_passes_its_own_checks() {
    let run = support::run_bounded(&["demo"], &[], Duration::from_secs(120));
    assert_eq!(
        run.status.code(),
        Some(0),
        "demo failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    for expected in [
        "embedded node listening on 127.0.0.1:",
        "Scene 1/",
        "MSET",
        "PTTL",
        "SCAN",
        "demo passed",
    ] {
        assert!(
            run.stdout.contains(expected),
            "stdout lacks {expected:?}:\n{}",
            run.stdout
        );
    }
}
