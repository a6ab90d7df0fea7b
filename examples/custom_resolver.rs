//! Writing a conflict-resolver plugin for tern.
//!
//! Run with `cargo run --example custom_resolver`.
//!
//! When two sites change the same key concurrently, tern's apply rule
//! (`tern_conflict::reconcile`) asks a `ConflictResolver` which version wins. This example:
//!
//! 1. writes a resolver: a per-keyspace policy where `config:` keys are owned by the EU site
//!    and everything else is last-writer-wins;
//! 2. registers it in a `ResolverRegistry` next to the built-ins;
//! 3. resolves a demo conflict and prints what happened;
//! 4. runs the law kit on it (determinism, idempotence, order independence) and exits non-zero
//!    if it fails;
//! 5. shows the kit catching a tempting but wrong resolver ("longest value wins").
use std::process::ExitCode;
use std::sync::Arc;

use tern_conflict::laws::{LawConfig, check_laws, check_laws_with};
use tern_conflict::{
    Bytes, ConflictResolver, HlcTimestamp, LastWriterWins, Resolution, ResolverRegistry, SiteId,
    SitePriority, Value, Version, Versioned, reconcile,
};

const EU: SiteId = SiteId(1);
const US: SiteId = SiteId(2);

/// Keys starting with `prefix` are resolved by `matching`, all others by `otherwise`.
///
/// A resolver is a pure function of the key and the two versions. Delegating on the key is
/// always safe: every key is resolved independently, so if both delegates obey the laws, so
/// does the router.
#[derive(Debug)]
struct PrefixPolicy {
    prefix: &'static [u8],
    matching: Arc<dyn ConflictResolver>,
    otherwise: Arc<dyn ConflictResolver>,
}

impl ConflictResolver for PrefixPolicy {
    fn name(&self) -> &str {
        "config-owned-by-eu"
    }

    fn resolve(&self, key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution {
        let delegate = if key.starts_with(self.prefix) {
            &self.matching
        } else {
            &self.otherwise
        };
        delegate.resolve(key, local, incoming)
    }
}

/// Tempting, and wrong: the longer value wins. It is deterministic and symmetric, yet the result
/// depends on delivery order, because a later, shorter overwrite can lose to the very value it
/// replaced once that value has been merged with a third, concurrent one. The rank a resolver
/// picks by must never go down along causal order (HLC does; length does not).
#[derive(Debug)]
struct LongestValueWins;

impl ConflictResolver for LongestValueWins {
    fn name(&self) -> &str {
        "longest-value-wins"
    }

    fn resolve(&self, _key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution {
        let len = |v: &Versioned| match &v.value {
            Value::Bytes(bytes) => bytes.len(),
            Value::Counter(_) | Value::Tombstone => 0,
        };
        match len(local).cmp(&len(incoming)) {
            std::cmp::Ordering::Greater => Resolution::KeepLocal,
            std::cmp::Ordering::Less => Resolution::TakeIncoming,
            std::cmp::Ordering::Equal => LastWriterWins::pick(local, incoming),
        }
    }
}

/// A first write of `value` at `site`, at wall-clock `wall_ms`.
fn write(site: SiteId, wall_ms: u64, value: &'static str) -> Versioned {
    Versioned {
        value: Value::Bytes(Bytes::from_static(value.as_bytes())),
        version: Version::first(site, HlcTimestamp::new(wall_ms, 0)),
        expires_at_ms: None,
    }
}

fn show(entry: &Versioned) -> String {
    match &entry.value {
        Value::Bytes(bytes) => format!("{:?} (written at {})", bytes, entry.version.origin),
        other => format!("{other:?}"),
    }
}

fn main() -> ExitCode {
    // 2. Register the plugin next to the built-ins; configuration then selects it by name.
    let mut registry = ResolverRegistry::with_builtins();
    let eu_first: Arc<dyn ConflictResolver> = Arc::new(SitePriority::named("eu-first", vec![EU]));
    let policy = PrefixPolicy {
        prefix: b"config:",
        matching: eu_first,
        otherwise: registry.get("lww").expect("lww is a built-in"),
    };
    if let Err(err) = registry.register(Arc::new(policy)) {
        eprintln!("registering the resolver failed: {err}");
        return ExitCode::FAILURE;
    }
    println!(
        "registered resolvers: {}",
        registry.names().collect::<Vec<_>>().join(", ")
    );
    let resolver = match registry.get("config-owned-by-eu") {
        Ok(resolver) => resolver,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };

    // 3. A demo conflict: EU and US write the same keys concurrently; the US write is later.
    println!("\nEU writes at t=100 ms, US writes the same key concurrently at t=150 ms:");
    for key in ["config:feature-x", "session:42"] {
        let local = write(EU, 100, "eu-value");
        let incoming = write(US, 150, "us-value");
        let result = reconcile(&*resolver, key.as_bytes(), Some(&local), &incoming);
        println!(
            "  {key:<18} -> {:?}: keeps {}",
            result.outcome,
            show(&result.entry)
        );
        // The result has seen both writes, so re-delivering either one changes nothing.
        let again = reconcile(&*resolver, key.as_bytes(), Some(&result.entry), &local);
        println!(
            "  {:<18}    re-delivering EU's write: {:?}",
            "", again.outcome
        );
    }

    // 4. The law kit: generated multi-site histories, fixed seed, shrunk counterexamples.
    //    Give it the keys the resolver treats specially, so both branches are exercised.
    let config = LawConfig {
        cases: 256,
        keys: vec![
            Bytes::from_static(b"config:a"),
            Bytes::from_static(b"session:1"),
        ],
        ..LawConfig::default()
    };
    println!("\nlaw kit on {:?}:", resolver.name());
    let verdict = check_laws_with(&*resolver, &config);
    match &verdict {
        Ok(()) => println!("  passed: deterministic, idempotent and order independent"),
        Err(violation) => println!("  FAILED\n{violation}"),
    }

    // 5. What a failure looks like: the law, the minimal history, the two differing results.
    println!(
        "\nlaw kit on {:?} (expected to fail):",
        LongestValueWins.name()
    );
    match check_laws(&LongestValueWins, 256) {
        Ok(()) => println!("  passed?! the kit should have caught it"),
        Err(violation) => println!("{violation}"),
    }

    if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
