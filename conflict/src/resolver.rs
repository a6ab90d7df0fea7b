//! The conflict-resolver plugin trait.
use crate::Value;
use crate::Versioned;

/// What a resolver decided for two concurrent versions of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The local version wins as it is.
    KeepLocal,
    /// The incoming version wins as it is.
    TakeIncoming,
    /// A new value combining both (e.g. two counters merged).
    Merged(Value),
}

/// A conflict-resolution policy. Registered by name in a
/// [`ResolverRegistry`](crate::ResolverRegistry) and driven by [`reconcile`](crate::reconcile),
/// which calls it only for truly concurrent versions.
///
/// # Contract
///
/// Every replica of every site folds the same updates through [`reconcile`](crate::reconcile),
/// in whatever order the network delivers them, and must end with the same entry. So a resolver
/// must be:
///
/// - **deterministic**: a pure function of its arguments (no clock, no randomness, no state);
/// - **symmetric**: swapping `local` and `incoming` must pick the same winner (or merge to the
///   same value);
/// - **order independent**: "the newest of three" must not depend on which pair met first.
///   A picker is order independent when it picks the greater side of a *total order over
///   versions that never goes down along causal order* (e.g. HLC then origin, as
///   [`LastWriterWins`](crate::LastWriterWins) does). Ranking by something a later overwrite can
///   lower (the origin site, the value's length, the value's kind) is **not**: an overwritten
///   value can come back depending on delivery order. See [`reconcile`](crate::reconcile) for why.
///
/// With feature `law-kit`, `tern_conflict::laws::check_laws` tests all three against realistic
/// multi-site histories; run it on every resolver you write.
pub trait ConflictResolver: Send + Sync + std::fmt::Debug {
    /// The name the resolver is registered and configured under.
    fn name(&self) -> &str;

    /// Decide between two versions of `key`. Only called for truly concurrent versions (neither
    /// version vector dominates).
    fn resolve(&self, key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution;
}
