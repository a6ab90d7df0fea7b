//! Loads a [`NodeConfig`]: defaults ← TOML files in order ← `TERN_*` environment (`__` nests),
//! then validates it. Several files let one node add to a shared config (in Kubernetes, the
//! gateway pod adds `wan.toml` to every pod's `tern.toml`). Every failure becomes a [`InvalidConfig`] whose message names the key, the
//! reason and where the bad value came from, because "invalid type" alone helps no operator.
use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use tern_node::config::NodeConfig;

/// Prefix of the environment variables that configure a node.
pub const ENV_PREFIX: &str = "TERN_";

/// Environment names under [`ENV_PREFIX`] that belong to clients and tools, not to the node
/// (e.g. `TERN_URL` for examples/client_usage.rs, `TERN_ADMIN` for `tern status`); without this
/// `deny_unknown_fields` would refuse to start a node in a shell where they are set.
const ENV_NOT_FOR_NODE: &[&str] = &["url", "admin"];

/// A configuration the node cannot run with; the binary exits with code 2 on it.
#[derive(Debug)]
pub struct InvalidConfig {
    problems: Vec<String>,
}

impl InvalidConfig {
    fn single(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid config: {one}"),
            many => {
                write!(f, "invalid config ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InvalidConfig {}

/// Loads and validates the node configuration from `files`, merged in order (a key set in a
/// later file wins; a later array, e.g. `[[wan.peers]]`, replaces an earlier one whole).
pub fn load<P: AsRef<Path>>(
    files: impl IntoIterator<Item = P>,
) -> Result<NodeConfig, InvalidConfig> {
    load_from(files, Env::prefixed(ENV_PREFIX))
}

/// Like [`load`] with the environment provider given, so tests need not touch the process
/// environment.
pub fn load_from<P: AsRef<Path>>(
    files: impl IntoIterator<Item = P>,
    env: Env,
) -> Result<NodeConfig, InvalidConfig> {
    let figment = with_files(files)?.merge(env.ignore(ENV_NOT_FOR_NODE).split("__"));
    extract_valid(&figment)
}

/// The defaults with `files` merged over them in order. Each value keeps its file as its
/// origin, so a bad value is reported with the file it came from.
fn with_files<P: AsRef<Path>>(
    files: impl IntoIterator<Item = P>,
) -> Result<Figment, InvalidConfig> {
    let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
    for file in files {
        let path = file.as_ref();
        // figment silently skips a missing file; a path the operator typed must exist.
        if !path.is_file() {
            return Err(InvalidConfig::single(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment)
}

/// Extracts the config and validates it, turning every problem into a readable line.
fn extract_valid(figment: &Figment) -> Result<NodeConfig, InvalidConfig> {
    let config: NodeConfig = figment.extract().map_err(|err| InvalidConfig {
        problems: err.into_iter().map(|e| describe(&e)).collect(),
    })?;
    config
        .validate()
        .map_err(|err| InvalidConfig::single(err.to_string()))?;
    Ok(config)
}

/// `limits.value_bytes_max: invalid type: found string "x", expected usize (from env
/// TERN_LIMITS__VALUE_BYTES_MAX)`.
fn describe(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let mut out = match &err.kind {
        // figment's own wording nests backticks (`one of `a`, `b``); list the keys plainly.
        figment::error::Kind::UnknownField(field, known) => {
            let key = if key.is_empty() { field.clone() } else { key };
            format!(
                "unknown key `{key}` (known keys here: {})",
                known.join(", ")
            )
        }
        kind if key.is_empty() => kind.to_string(),
        kind => format!("{key}: {kind}"),
    };
    if let Some(origin) = origin(err) {
        out.push_str(&format!(" (from {origin})"));
    }
    out
}

/// `["limits", "value_bytes_max"]` → `TERN_LIMITS__VALUE_BYTES_MAX`.
fn env_var_name(path: &[String]) -> String {
    let nested: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", nested.join("__"))
}

fn origin(err: &figment::Error) -> Option<String> {
    let md = err.metadata.as_ref()?;
    match &md.source {
        Some(figment::Source::File(path)) => Some(format!("file {}", path.display())),
        Some(figment::Source::Code(_)) => Some("defaults".to_owned()),
        Some(other) => Some(other.to_string()),
        // The env provider has no source; rebuild the variable's name from the key path.
        None if md.name.contains("environment") => Some(format!("env {}", env_var_name(&err.path))),
        None => Some(md.name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use figment::Provider;
    use figment::value::{Dict, Value};

    use super::*;

    const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tern.example.toml");

    fn defaults() -> Figment {
        Figment::from(Serialized::defaults(NodeConfig::default()))
    }

    /// Every leaf key of a figment dict, dotted (`limits.value_bytes_max`).
    fn leaf_keys(dict: &Dict, prefix: &str, out: &mut BTreeSet<String>) {
        for (key, value) in dict {
            let path = format!("{prefix}{key}");
            match value {
                Value::Dict(_, nested) => leaf_keys(nested, &format!("{path}."), out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    fn keys_of(figment: &Figment) -> BTreeSet<String> {
        let data = figment.data().expect("figment data");
        let mut out = BTreeSet::new();
        for dict in data.values() {
            leaf_keys(dict, "", &mut out);
        }
        out
    }

    const DEPLOY_OVERLAYS: [&str; 2] = ["us-east", "eu-west"];

    fn deploy_dir(kustomization: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(kustomization)
    }

    /// The files the StatefulSet's start script passes to pod `tern-<index>`: the shared
    /// tern.toml, and on pod 0 also wan.toml (the site's gateway).
    fn deploy_files(dir: &Path, index: u64) -> Vec<PathBuf> {
        let mut files = vec![dir.join("tern.toml")];
        if index == 0 {
            files.push(dir.join("wan.toml"));
        }
        files
    }

    /// A pod's config: its files, then the per-pod values its start script exports (merged
    /// here without touching the process environment).
    fn deploy_pod_config(dir: &Path, index: u64) -> Result<NodeConfig, InvalidConfig> {
        let node = index + 1;
        let figment = with_files(deploy_files(dir, index))?
            .merge(Serialized::default("cluster.node_id", node))
            .merge(Serialized::default("cluster.name", format!("n{node}")));
        extract_valid(&figment)
    }

    /// The Kubernetes configs load and validate for every pod, and exactly the overlays' pod 0
    /// runs a gateway (the base ships an empty wan.toml).
    #[test]
    fn deploy_configs_load_for_every_pod() {
        let overlays = DEPLOY_OVERLAYS.map(|o| format!("overlays/{o}"));
        for (kustomization, has_gateway) in std::iter::once(("base".to_owned(), false))
            .chain(overlays.into_iter().map(|o| (o, true)))
        {
            let dir = deploy_dir(&kustomization);
            for index in 0..3u64 {
                let config = deploy_pod_config(&dir, index)
                    .unwrap_or_else(|e| panic!("{kustomization} for pod tern-{index}: {e}"));
                let cluster = config.cluster.expect("deploy configs form a site");
                assert_eq!(cluster.node_id, index + 1, "{kustomization}");
                assert_eq!(cluster.peers.len(), 3, "{kustomization}");
                assert_eq!(
                    config.wan.is_some(),
                    has_gateway && index == 0,
                    "{kustomization} pod tern-{index}: gateway"
                );
            }
        }
    }

    /// The overlays' gateways name each other consistently, keep their backlogs on the pod's
    /// volume and their certificate in the mounted secret, and listen on the port the
    /// manifests expose.
    #[test]
    fn deploy_gateways_peer_each_other() {
        let gateway_pod = |overlay: &str| {
            deploy_pod_config(&deploy_dir(&format!("overlays/{overlay}")), 0)
                .unwrap_or_else(|e| panic!("{overlay} pod tern-0: {e}"))
        };
        let read = |file: &str| {
            std::fs::read_to_string(deploy_dir(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
        };
        let statefulset = read("base/statefulset.yaml");
        let service = read("components/wan-gateway/service-wan.yaml");
        for [this, other] in [DEPLOY_OVERLAYS, [DEPLOY_OVERLAYS[1], DEPLOY_OVERLAYS[0]]] {
            let (here, there) = (gateway_pod(this), gateway_pod(other));
            let cluster = here.cluster.as_ref().expect("cluster");
            let wan = here.wan.as_ref().expect("pod 0 runs the gateway");
            let other_wan = there.wan.as_ref().expect("pod 0 runs the gateway");
            assert_eq!(wan.site, this, "{this}: wan.site");
            assert!(
                wan.data_dir.starts_with(&cluster.data_dir) && wan.data_dir != cluster.data_dir,
                "{this}: backlog {} is not a directory of its own on the volume {}",
                wan.data_dir.display(),
                cluster.data_dir.display()
            );
            assert_eq!(wan.tls_dir, cluster.tls_dir, "{this}: the mounted secret");
            let [peer] = wan.peers.as_slice() else {
                panic!("{this}: one peer expected, got {:?}", wan.peers);
            };
            assert_eq!(peer.site, other, "{this}: peer name");
            assert_eq!(
                peer.site_id, there.site,
                "{this}: peer id is {other}'s `site`"
            );
            assert_eq!(
                peer.addr.port(),
                other_wan.listen.port(),
                "{this}: peer port"
            );
            assert!(
                wan.resolvers
                    .iter()
                    .any(|r| r.prefix == "c:" && r.resolver == "counter-merge"),
                "{this}: counters merge"
            );
            let port = wan.listen.port();
            assert!(
                statefulset.contains(&format!("containerPort: {port}")),
                "{this}: the StatefulSet declares the gateway port {port}"
            );
            assert!(
                service.contains(&format!("port: {port}")),
                "{this}: Service tern-wan exposes the gateway port {port}"
            );
        }
    }

    /// Writes each text to its own file in a fresh directory, in order.
    fn config_files(texts: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = dir.path().join(format!("{i}.toml"));
                std::fs::write(&path, text).expect("writing a config file");
                path
            })
            .collect();
        (dir, paths)
    }

    fn no_env() -> Env {
        Env::prefixed("TERN_UNIT_TEST_NOTHING_")
    }

    #[test]
    fn later_files_win_and_sections_merge() {
        // (files in order, partitions, tick_ms, limits.key_bytes_max, limits.value_bytes_max)
        let defaults = NodeConfig::default();
        let (key, value) = (
            defaults.limits.key_bytes_max,
            defaults.limits.value_bytes_max,
        );
        let cases: &[(&[&str], u32, u64, usize, usize)] = &[
            (&[], defaults.partitions, defaults.tick_ms, key, value),
            (&["partitions = 8"], 8, defaults.tick_ms, key, value),
            (
                &["partitions = 8", "partitions = 16"],
                16,
                defaults.tick_ms,
                key,
                value,
            ),
            (
                &["partitions = 16", "partitions = 8"],
                8,
                defaults.tick_ms,
                key,
                value,
            ),
            (&["partitions = 8", "tick_ms = 50"], 8, 50, key, value),
            (&["partitions = 8", ""], 8, defaults.tick_ms, key, value),
            (
                &[
                    "[limits]\nkey_bytes_max = 100",
                    "[limits]\nvalue_bytes_max = 200",
                ],
                defaults.partitions,
                defaults.tick_ms,
                100,
                200,
            ),
            (
                &[
                    "partitions = 2",
                    "partitions = 4",
                    "partitions = 6\ntick_ms = 7",
                ],
                6,
                7,
                key,
                value,
            ),
        ];
        for (texts, partitions, tick_ms, key_max, value_max) in cases {
            let (_dir, paths) = config_files(texts);
            let config = load_from(&paths, no_env()).unwrap_or_else(|e| panic!("{texts:?}: {e}"));
            let got = (
                config.partitions,
                config.tick_ms,
                config.limits.key_bytes_max,
                config.limits.value_bytes_max,
            );
            assert_eq!(
                got,
                (*partitions, *tick_ms, *key_max, *value_max),
                "{texts:?}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_an_error_wherever_it_comes() {
        let (dir, paths) = config_files(&["partitions = 8"]);
        let missing = dir.path().join("wan.toml");
        for files in [
            vec![paths[0].clone(), missing.clone()],
            vec![missing.clone(), paths[0].clone()],
        ] {
            let err = load_from(&files, no_env()).expect_err("missing file");
            assert!(
                err.to_string().contains(&missing.display().to_string()),
                "{files:?}: {err}"
            );
        }
    }

    #[test]
    fn a_wan_section_can_come_from_the_second_file_alone() {
        let shared = "site = 1\npartitions = 8\n";
        let wan = "[wan]\nsite = \"a\"\nlisten = \"127.0.0.1:7500\"\ntls_dir = \"pki\"\n\
                   data_dir = \"wan\"\n[[wan.peers]]\nsite = \"b\"\nsite_id = 2\n\
                   addr = \"127.0.0.1:7501\"\n";
        let (_dir, paths) = config_files(&[shared, wan]);
        let alone = load_from(&paths[..1], no_env()).expect("the shared file alone");
        assert_eq!(alone.wan, None);
        let merged = load_from(&paths, no_env()).expect("shared + wan");
        let got = merged.wan.expect("[wan] from the second file");
        assert_eq!((got.site.as_str(), got.peers.len()), ("a", 1));
        assert_eq!(merged.partitions, 8, "the first file still applies");
    }

    /// A bad value is reported with the file it came from, not merely the last file read.
    #[test]
    fn problems_name_the_file_the_bad_value_came_from() {
        let cases: &[(&[&str], usize)] = &[
            (&["partitions = \"many\"", "tick_ms = 50"], 0),
            (&["tick_ms = 50", "partitions = \"many\""], 1),
            (
                &[
                    "partitions = 8",
                    "[wan]\nsite = \"a\"\nlisten = \"nowhere\"",
                ],
                1,
            ),
        ];
        for (texts, culprit) in cases {
            let (_dir, paths) = config_files(texts);
            let err = load_from(&paths, no_env())
                .expect_err("bad value")
                .to_string();
            for (i, path) in paths.iter().enumerate() {
                let named = err.contains(&path.display().to_string());
                assert_eq!(named, i == *culprit, "{texts:?}: file {i} in {err:?}");
            }
        }
    }

    #[test]
    fn example_file_is_exactly_the_defaults() {
        let example = Figment::from(Toml::file_exact(EXAMPLE_PATH));
        let parsed: NodeConfig = extract_valid(&example).expect("tern.example.toml is valid");
        assert_eq!(parsed, NodeConfig::default());
    }

    /// Keys unset by default (`Option`s), so the example cannot set them: each must be there
    /// commented out, as this marker shows.
    const UNSET_BY_DEFAULT: &[(&str, &str)] = &[
        ("requirepass", "# requirepass = "),
        ("admin_listen", "# admin_listen = "),
        ("cluster", "# [cluster]"),
        ("wan", "# [wan]"),
    ];

    #[test]
    fn example_file_documents_every_key() {
        let documented = keys_of(&Figment::from(Toml::file_exact(EXAMPLE_PATH)));
        let all = keys_of(&defaults());
        let example = std::fs::read_to_string(EXAMPLE_PATH).expect("reading the example");
        for (key, marker) in UNSET_BY_DEFAULT {
            assert!(
                example.contains(marker),
                "{key} is documented (commented out: {marker:?})"
            );
        }
        let unset = |key: &String| {
            UNSET_BY_DEFAULT
                .iter()
                .any(|(top, _)| key == top || key.starts_with(&format!("{top}.")))
        };
        let missing: Vec<_> = all
            .difference(&documented)
            .filter(|key| !unset(key))
            .collect();
        assert!(missing.is_empty(), "tern.example.toml lacks {missing:?}");
        let unknown: Vec<_> = documented.difference(&all).collect();
        assert!(
            unknown.is_empty(),
            "tern.example.toml has unknown keys {unknown:?}"
        );
    }

    #[test]
    fn problems_name_the_key_the_reason_and_the_source() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[limits]\nvalue_bytes_max = \"x\"",
                &["limits.value_bytes_max: invalid type", "\"x\"", "usize"],
            ),
            ("partitions = 0", &["partitions: must be between 1"]),
            ("listen = \"nowhere\"", &["listen:"]),
            (
                "bogus = 1",
                &["unknown key `bogus`", "known keys here: listen, partitions"],
            ),
            (
                "[limits]\nvalue_byte_max = 1",
                &["unknown key `limits.value_byte_max`", "scan_count_max"],
            ),
            (
                "[limits]\nconnections_max = 0",
                &["limits.connections_max: must be at least 1"],
            ),
        ];
        for (toml, fragments) in cases {
            let figment = defaults().merge(Toml::string(toml));
            let err = extract_valid(&figment).expect_err(toml).to_string();
            assert!(err.starts_with("invalid config"), "{toml}: {err}");
            for fragment in *fragments {
                assert!(err.contains(fragment), "{toml}: {err:?} lacks {fragment:?}");
            }
        }
    }

    #[test]
    fn env_variable_names_follow_the_nesting() {
        let path = ["limits".to_owned(), "value_bytes_max".to_owned()];
        assert_eq!(env_var_name(&path), "TERN_LIMITS__VALUE_BYTES_MAX");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load_from(
            [Path::new("/nonexistent/tern.toml")],
            Env::prefixed("TERN_UNIT_TEST_"),
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/tern.toml"), "{err}");
    }
}
