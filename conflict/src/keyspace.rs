//! Which conflict resolver governs which keys: configuration names a resolver per key prefix
//! (plus a default), and every replica that applies a remote entry asks this table.
use crate::{ConflictResolver, LastWriterWins, RegistryError, ResolverRegistry};
use bytes::Bytes;
use std::sync::Arc;

/// Which resolver applies to which key: first matching prefix wins, else the default.
///
/// Rules keep their configured order (not longest-prefix): an operator who lists `a:` before
/// `a:b:` means it, and the same table must pick the same resolver at every site.
///
/// It keeps the registry it was built from, so a resolver can also be found by name: the
/// node that applies a remote entry (a partition's primary) is not always the node whose
/// configuration holds the table (the site's gateway host), so the gateway names the resolver
/// in the command.
#[derive(Clone, Debug)]
pub struct KeyspaceResolvers {
    rules: Vec<(Bytes, Arc<dyn ConflictResolver>)>,
    fallback: Arc<dyn ConflictResolver>,
    registry: ResolverRegistry,
}

impl KeyspaceResolvers {
    /// Look up every `(prefix, resolver name)` rule and the `default` resolver in `registry`.
    /// Fails on the first name the registry does not know.
    pub fn new<'a>(
        registry: &ResolverRegistry,
        rules: impl IntoIterator<Item = (&'a str, &'a str)>,
        default: &str,
    ) -> Result<Self, RegistryError> {
        let rules = rules
            .into_iter()
            .map(|(prefix, name)| {
                Ok((
                    Bytes::copy_from_slice(prefix.as_bytes()),
                    registry.get(name)?,
                ))
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        Ok(Self {
            rules,
            fallback: registry.get(default)?,
            registry: registry.clone(),
        })
    }

    /// The resolver registered as `name`, whether or not a rule here uses it.
    pub fn by_name(&self, name: &str) -> Result<Arc<dyn ConflictResolver>, RegistryError> {
        self.registry.get(name)
    }

    /// The resolver for `key`.
    pub fn for_key(&self, key: &[u8]) -> &Arc<dyn ConflictResolver> {
        self.rules
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map_or(&self.fallback, |(_, resolver)| resolver)
    }
}

impl Default for KeyspaceResolvers {
    /// Every key resolved last-writer-wins; the built-ins found by name.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            fallback: Arc::new(LastWriterWins),
            registry: ResolverRegistry::with_builtins(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_prefix_wins_and_the_rest_fall_back() {
        let registry = ResolverRegistry::with_builtins();
        let resolvers = KeyspaceResolvers::new(
            &registry,
            [("c:", "counter-merge"), ("c:x", "site-priority")],
            "lww",
        )
        .expect("known names");
        // (key, expected resolver name)
        let cases: &[(&[u8], &str)] = &[
            (b"c:1", "counter-merge"),
            (b"c:x1", "counter-merge"),
            (b"c", "lww"),
            (b"", "lww"),
            (b"s:c:1", "lww"),
        ];
        for (key, name) in cases {
            assert_eq!(resolvers.for_key(key).name(), *name, "key {key:?}");
        }
    }

    #[test]
    fn the_default_table_is_all_lww() {
        let resolvers = KeyspaceResolvers::default();
        for key in [&b""[..], b"c:1", b"anything"] {
            assert_eq!(resolvers.for_key(key).name(), "lww");
        }
    }

    #[test]
    fn unknown_names_fail_in_rules_and_default() {
        let registry = ResolverRegistry::with_builtins();
        let in_rule = KeyspaceResolvers::new(&registry, [("a:", "nope")], "lww").expect_err("rule");
        assert!(matches!(in_rule, RegistryError::Unknown { ref name, .. } if name == "nope"));
        let in_default =
            KeyspaceResolvers::new(&registry, [("a:", "lww")], "missing").expect_err("default");
        assert!(matches!(in_default, RegistryError::Unknown { ref name, .. } if name == "missing"));
    }
}
