//! tern-conflict: the replicated data model of tern, with no I/O.
//!
//! - [`Hlc`]: hybrid logical clock, time passed in by the caller;
//! - [`Version`]: HLC + origin site + per-entry [`VersionVector`];
//! - [`Value`] / [`Versioned`]: what entries hold;
//! - [`ConflictResolver`]: the plugin trait, its [`ResolverRegistry`] and the built-ins
//!   [`LastWriterWins`] (`lww`), [`SitePriority`] (`site-priority`) and [`CounterMerge`]
//!   (`counter-merge`);
//! - [`KeyspaceResolvers`]: which resolver governs which key prefix;
//! - [`reconcile`] / [`reconcile_into`]: the one apply rule (causal order first, resolver only for
//!   real concurrency); its docs explain what makes the result independent of delivery order;
//! - `laws` (feature `law-kit`): proptest checks every resolver must pass —
//!   `laws::check_laws(&my_resolver, 256)` or `assert_resolver_laws!(my_resolver)` in a test.
mod builtin;
mod hlc;
mod keyspace;
mod reconcile;
mod registry;
mod resolver;
mod site;
mod value;
mod version;
mod writer;

#[cfg(feature = "law-kit")]
pub mod laws;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod reconcile_tests;

pub use builtin::{CounterMerge, LastWriterWins, SitePriority};
/// The byte-string type inside [`Value::Bytes`], re-exported so plugins need not depend on
/// `bytes` themselves.
pub use bytes::Bytes;
pub use hlc::{Hlc, HlcError, HlcTimestamp};
pub use keyspace::KeyspaceResolvers;
pub use reconcile::{Outcome, Reconciled, ResolutionKind, reconcile, reconcile_into};
pub use registry::{RegistryError, ResolverRegistry};
pub use resolver::{ConflictResolver, Resolution};
pub use site::SiteId;
pub use value::{CounterOverflow, PnCounter, SiteCounts, Value, Versioned};
pub use version::{Causality, Version, VersionVector};
pub use writer::Writer;
