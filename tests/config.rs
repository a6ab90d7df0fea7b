//! Configuration through the real binary: bad config exits 2 naming the field; good config
//! (file and environment, with env winning) reaches the running node.
mod support;

use std::time::Duration;

use support::{NodeProcess, config_file, path_str, run_bounded};

const BAD_CONFIG_EXIT_MAX: Duration = Duration::from_secs(20);

struct BadCase {
    name: &'static str,
    /// TOML file contents, if the case uses a file.
    toml: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
    /// Every fragment must appear in stderr.
    stderr_has: &'static [&'static str],
}

const BAD_CASES: &[BadCase] = &[
    BadCase {
        name: "env value of the wrong type",
        toml: None,
        env: &[("TERN_LIMITS__VALUE_BYTES_MAX", "x")],
        stderr_has: &[
            "invalid config",
            "limits.value_bytes_max",
            "\"x\"",
            "TERN_LIMITS__VALUE_BYTES_MAX",
        ],
    },
    BadCase {
        name: "file value of the wrong type",
        toml: Some("[limits]\nvalue_bytes_max = \"big\"\n"),
        env: &[],
        stderr_has: &[
            "invalid config",
            "limits.value_bytes_max",
            "\"big\"",
            "tern.toml",
        ],
    },
    BadCase {
        name: "unknown key in the file",
        toml: Some("listn = \"127.0.0.1:0\"\n"),
        env: &[],
        stderr_has: &["invalid config", "listn"],
    },
    BadCase {
        name: "unknown nested key in the environment",
        toml: None,
        env: &[("TERN_LIMITS__VALUE_BYTE_MAX", "1")],
        stderr_has: &["invalid config", "value_byte_max"],
    },
    BadCase {
        name: "unparsable listen address from env",
        toml: None,
        env: &[("TERN_LISTEN", "not-an-address")],
        stderr_has: &["invalid config", "listen", "TERN_LISTEN"],
    },
    BadCase {
        name: "value out of range (caught by validation)",
        toml: Some("partitions = 0\n"),
        env: &[],
        stderr_has: &["invalid config", "partitions", "between 1 and"],
    },
    BadCase {
        name: "TOML syntax error",
        toml: Some("[limits\nvalue_bytes_max = 1\n"),
        env: &[],
        stderr_has: &["invalid config", "tern.toml"],
    },
];

#[test]
fn bad_config_exits_2_and_names_the_field() {
    for case in BAD_CASES {
        let file = case.toml.map(config_file);
        let mut args = vec!["node"];
        if let Some((_, path)) = &file {
            args.extend(["--config", path_str(path)]);
        }
        let mut env = vec![("TERN_LISTEN", "127.0.0.1:0")];
        env.extend_from_slice(case.env);
        let run = run_bounded(&args, &env, BAD_CONFIG_EXIT_MAX);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{}: exit code; stderr:\n{}",
            case.name,
            run.stderr
        );
        for fragment in case.stderr_has {
            assert!(
                run.stderr.contains(fragment),
                "{}: stderr lacks {fragment:?}:\n{}",
                case.name,
                run.stderr
            );
        }
        assert!(
            !run.stdout.contains("listening"),
            "{}: a bad config must not start the node",
            case.name
        );
    }
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let missing = dir.path().join("nope.toml");
    let run = run_bounded(
        &["node", "--config", path_str(&missing)],
        &[],
        BAD_CONFIG_EXIT_MAX,
    );
    assert_eq!(run.status.code(), Some(2), "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("nope.toml"), "stderr:\n{}", run.stderr);
}

/// The file caps values at 4 bytes, the environment raises it to 8: env wins, and the running
/// node enforces exactly 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_file_and_the_node_enforces_it() {
    let (_dir, path) = config_file("[limits]\nvalue_bytes_max = 4\n");
    let node = NodeProcess::start(
        &["--config", path_str(&path)],
        &[("TERN_LIMITS__VALUE_BYTES_MAX", "8")],
    );
    let mut con = node.connect().await;
    let cases: &[(&str, bool)] = &[("1234", true), ("12345678", true), ("123456789", false)];
    for (value, accepted) in cases {
        let reply: redis::RedisResult<()> = redis::cmd("SET")
            .arg("k")
            .arg(*value)
            .query_async(&mut con)
            .await;
        assert_eq!(
            reply.is_ok(),
            *accepted,
            "SET of {} bytes: {reply:?}",
            value.len()
        );
    }
}

/// `--config` repeats: the second file (4 → 8 bytes) overrides the first, the environment is
/// unset, and the running node enforces exactly 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_config_file_overrides_an_earlier_one() {
    let (_shared_dir, shared) = config_file("[limits]\nvalue_bytes_max = 4\n");
    let (_extra_dir, extra) = config_file("[limits]\nvalue_bytes_max = 8\n");
    let node = NodeProcess::start(
        &["--config", path_str(&shared), "--config", path_str(&extra)],
        &[],
    );
    let mut con = node.connect().await;
    let cases: &[(&str, bool)] = &[("12345678", true), ("123456789", false)];
    for (value, accepted) in cases {
        let reply: redis::RedisResult<()> = redis::cmd("SET")
            .arg("k")
            .arg(*value)
            .query_async(&mut con)
            .await;
        assert_eq!(
            reply.is_ok(),
            *accepted,
            "SET of {} bytes: {reply:?}",
            value.len()
        );
    }
}
