//! Resolvers by name, so configuration can pick one with a string.
use crate::{ConflictResolver, CounterMerge, LastWriterWins, SitePriority};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("a conflict resolver named {name:?} is already registered")]
    Duplicate { name: String },
    #[error("unknown conflict resolver {name:?}; known resolvers: {}", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
}

/// Resolvers by name. A `BTreeMap` so [`ResolverRegistry::names`] (and error messages) come out
/// in a stable order.
#[derive(Debug, Clone, Default)]
pub struct ResolverRegistry {
    resolvers: BTreeMap<String, Arc<dyn ConflictResolver>>,
}

impl ResolverRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-ins: `lww`, `counter-merge` and `site-priority`.
    ///
    /// The built-in `site-priority` has an empty priority list, so on its own it behaves like
    /// `lww`. To use site priorities, build a configured [`SitePriority`] and either
    /// [`replace`](Self::replace) the built-in (keeping the name `site-priority`) or
    /// [`register`](Self::register) it under a name of your own with
    /// [`SitePriority::named`].
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        let builtins: [Arc<dyn ConflictResolver>; 3] = [
            Arc::new(LastWriterWins),
            Arc::new(CounterMerge),
            Arc::new(SitePriority::new(Vec::new())),
        ];
        for resolver in builtins {
            registry
                .resolvers
                .insert(resolver.name().to_owned(), resolver);
        }
        registry
    }

    /// Add `resolver` under its own name; fails if that name is taken.
    pub fn register(&mut self, resolver: Arc<dyn ConflictResolver>) -> Result<(), RegistryError> {
        let name = resolver.name();
        if self.resolvers.contains_key(name) {
            return Err(RegistryError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.resolvers.insert(name.to_owned(), resolver);
        Ok(())
    }

    /// Add `resolver` under its own name, replacing (and returning) any resolver of that name.
    pub fn replace(
        &mut self,
        resolver: Arc<dyn ConflictResolver>,
    ) -> Option<Arc<dyn ConflictResolver>> {
        self.resolvers.insert(resolver.name().to_owned(), resolver)
    }

    /// The resolver registered as `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn ConflictResolver>, RegistryError> {
        self.resolvers
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_owned(),
                known: self.resolvers.keys().cloned().collect(),
            })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.resolvers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resolution, Versioned};

    #[derive(Debug)]
    struct Named(&'static str);

    impl ConflictResolver for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn resolve(&self, _: &[u8], _: &Versioned, _: &Versioned) -> Resolution {
            Resolution::KeepLocal
        }
    }

    #[test]
    fn new_registry_is_empty_and_builtins_are_sorted() {
        assert_eq!(ResolverRegistry::new().names().count(), 0);
        let registry = ResolverRegistry::with_builtins();
        let names: Vec<&str> = registry.names().collect();
        assert_eq!(names, ["counter-merge", "lww", "site-priority"]);
        for name in names {
            let resolver = registry.get(name).expect("built-in is registered");
            assert_eq!(resolver.name(), name);
        }
    }

    #[test]
    fn duplicate_names_are_rejected_and_the_first_one_kept() {
        let mut registry = ResolverRegistry::with_builtins();
        let err = registry
            .register(Arc::new(Named("lww")))
            .expect_err("duplicate");
        assert_eq!(err, RegistryError::Duplicate { name: "lww".into() });
        assert_eq!(
            format!("{:?}", registry.get("lww").expect("still there")),
            "LastWriterWins"
        );
        registry
            .register(Arc::new(Named("mine")))
            .expect("new name registers");
        assert!(registry.get("mine").is_ok());
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = ResolverRegistry::with_builtins()
            .get("nope")
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown conflict resolver \"nope\"; known resolvers: counter-merge, lww, site-priority"
        );
    }

    #[test]
    fn replace_swaps_and_returns_the_previous_resolver() {
        let mut registry = ResolverRegistry::with_builtins();
        let configured = SitePriority::new(vec![crate::SiteId(2)]);
        let previous = registry
            .replace(Arc::new(configured))
            .expect("built-in replaced");
        assert_eq!(previous.name(), "site-priority");
        let now = registry.get("site-priority").expect("registered");
        assert!(format!("{now:?}").contains("SiteId(2)"), "{now:?}");
        assert!(registry.replace(Arc::new(Named("fresh"))).is_none());
    }
}
