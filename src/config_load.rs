//! Loads a [`NodeConfig`]: defaults ← TOML file ← `TERN_*` environment (`__` nests), then
//! validates it. Every failure becomes a [`InvalidConfig`] whose message names the key, the
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

/// Loads and validates the node configuration.
pub fn load(file: Option<&Path>) -> Result<NodeConfig, InvalidConfig> {
    load_from(file, Env::prefixed(ENV_PREFIX))
}

/// Like [`load`] with the environment provider given, so tests need not touch the process
/// environment.
pub fn load_from(file: Option<&Path>, env: Env) -> Result<NodeConfig, InvalidConfig> {
    let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
    if let Some(path) = file {
        // figment silently skips a missing file; a path the operator typed must exist.
        if !path.is_file() {
            return Err(InvalidConfig::single(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(env.ignore(ENV_NOT_FOR_NODE).split("__"));
    extract_valid(&figment)
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
            Some(Path::new("/nonexistent/tern.toml")),
            Env::prefixed("TERN_UNIT_TEST_"),
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/tern.toml"), "{err}");
    }
}
