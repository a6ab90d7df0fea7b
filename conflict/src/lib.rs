//! tern-conflict: the replicated data model of tern, with no I/O.
//!
//! - [`Hlc`]: hybrid logical clock, time passed in by the caller;
//! - [`Version`]: HLC + origin site + per-entry [`VersionVector`];
//! - [`Value`] / [`Versioned`]: what entries hold;
//! - [`ConflictResolver`]: the plugin trait, its [`ResolverRegistry`] and built-ins;
//! - [`reconcile`]: the one apply rule (causal order first, resolver only for real concurrency);
//! - `laws` (feature `law-kit`): proptest checks every resolver must pass.
mod hlc;
mod site;
mod value;
mod version;

pub use hlc::{Hlc, HlcError, HlcTimestamp};
pub use site::SiteId;
pub use value::{CounterOverflow, PnCounter, SiteCounts, Value, Versioned};
pub use version::{Causality, Version, VersionVector};
