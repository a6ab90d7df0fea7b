//! Realistic multi-site histories: sites write (each write overwrites what the site holds, so
//! version vectors and counters grow the way they do in a real grid) and receive each other's
//! updates, in any interleaving.
use super::{LawConfig, WriteKinds};
use crate::{
    ConflictResolver, Hlc, Outcome, PnCounter, SiteId, Value, Version, Versioned, Writer, reconcile,
};
use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

/// A client write at one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// SET: replace with bytes (sometimes an integer string, which INCR then takes over).
    Set(Bytes),
    /// INCR/DECR: add to the counter the site holds (a fresh one if it holds none).
    Incr(i64),
    /// DEL: write a tombstone.
    Delete,
}

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Step {
    /// `site` advances its clock by `advance_ms` and writes.
    Write {
        site: usize,
        advance_ms: u64,
        action: Action,
        expires_at_ms: Option<u64>,
    },
    /// `site` receives update number `update` (taken modulo the updates so far) and applies it
    /// with [`reconcile`]. With `relay`, the entry it then holds (if it changed) is shipped on as
    /// an update of its own, as a gateway forwarding merged state would. Without `observe`, the
    /// site's clock does not see the update's HLC (a path that skips `Hlc::observe`), so its
    /// next write relies on [`Version::successor`] alone to stay LWW-greater.
    Deliver {
        site: usize,
        update: Index,
        relay: bool,
        observe: bool,
    },
}

/// A resolver-independent recipe for a history; [`Script::play`] runs it against a resolver.
/// Proptest shrinks scripts, so failures come out as short recipes.
#[derive(Clone, Debug)]
pub struct Script {
    pub key: Bytes,
    /// Per-site physical clock offset, so HLCs of different sites interleave and sometimes tie.
    pub skews_ms: Vec<u64>,
    pub steps: Vec<Step>,
}

/// The updates a played script produced, in creation order: every write, plus relayed entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub key: Bytes,
    pub updates: Vec<Versioned>,
    /// What each script step did, step by step.
    pub effects: Vec<Effect>,
}

/// What one [`Step`] did when played.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Created update number `.0`.
    Wrote(usize),
    /// Applied update `update`; `relayed` is the update number of the relayed result.
    Applied {
        update: usize,
        outcome: Outcome,
        relayed: Option<usize>,
    },
    /// Nothing (no such site, nothing to deliver yet, or a refused write).
    Skipped,
}

struct Site {
    id: SiteId,
    hlc: Hlc,
    clock_ms: u64,
    entry: Option<Versioned>,
}

impl Script {
    /// Run the script: each site holds one entry for `key`, writes successors of it, and applies
    /// delivered updates through [`reconcile`] with `resolver`.
    pub fn play(&self, resolver: &dyn ConflictResolver) -> History {
        let mut sites: Vec<Site> = self
            .skews_ms
            .iter()
            .enumerate()
            .map(|(i, &skew)| Site {
                id: SiteId(u16::try_from(i).unwrap_or(u16::MAX)),
                hlc: Hlc::new(u64::MAX),
                clock_ms: skew,
                entry: None,
            })
            .collect();
        let mut updates: Vec<Versioned> = Vec::new();
        let mut effects = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let effect = match *step {
                Step::Write {
                    site,
                    advance_ms,
                    ref action,
                    expires_at_ms,
                } => sites.get_mut(site).map_or(Effect::Skipped, |site| {
                    site.write(advance_ms, action, expires_at_ms, &mut updates)
                }),
                Step::Deliver {
                    site,
                    update,
                    relay,
                    observe,
                } => match sites.get_mut(site) {
                    Some(site) if !updates.is_empty() => {
                        site.deliver(resolver, &self.key, update, relay, observe, &mut updates)
                    }
                    _ => Effect::Skipped,
                },
            };
            effects.push(effect);
        }
        History {
            key: self.key.clone(),
            updates,
            effects,
        }
    }
}

impl Site {
    fn write(
        &mut self,
        advance_ms: u64,
        action: &Action,
        expires_at_ms: Option<u64>,
        updates: &mut Vec<Versioned>,
    ) -> Effect {
        self.clock_ms = self.clock_ms.saturating_add(advance_ms);
        let hlc = self.hlc.now(self.clock_ms);
        let Some(value) = apply_action(self.id, self.entry.as_ref(), action) else {
            return Effect::Skipped; // refused (counter overflow), as a node would
        };
        let version = match &self.entry {
            Some(entry) => entry.version.successor(self.id, hlc),
            None => Version::first(self.id, hlc),
        };
        let entry = Versioned {
            value,
            version,
            expires_at_ms,
        };
        self.entry = Some(entry.clone());
        updates.push(entry);
        Effect::Wrote(updates.len() - 1)
    }

    fn deliver(
        &mut self,
        resolver: &dyn ConflictResolver,
        key: &[u8],
        update: Index,
        relay: bool,
        observe: bool,
        updates: &mut Vec<Versioned>,
    ) -> Effect {
        let number = update.index(updates.len());
        let incoming = &updates[number];
        if observe {
            // The offset limit is u64::MAX, so observing never fails.
            let _ = self.hlc.observe(incoming.version.hlc, self.clock_ms);
        }
        let result = reconcile(resolver, key, self.entry.as_ref(), incoming);
        let mut relayed = None;
        if result.changed() {
            if relay {
                relayed = Some(updates.len());
                updates.push(result.entry.clone());
            }
            self.entry = Some(result.entry);
        }
        Effect::Applied {
            update: number,
            outcome: result.outcome,
            relayed,
        }
    }
}

/// The value a site writes for `action` on top of what it holds; `None` if refused.
fn apply_action(site: SiteId, current: Option<&Versioned>, action: &Action) -> Option<Value> {
    match action {
        Action::Set(bytes) => Some(Value::Bytes(bytes.clone())),
        Action::Delete => Some(Value::Tombstone),
        Action::Incr(delta) => {
            // Mirrors the node: INCR extends a counter, takes over an integer string
            // (attributed to its writer), and starts from zero on anything else.
            let mut counter = match current.map(|e| (&e.value, e.version.origin)) {
                Some((Value::Counter(counter), _)) => counter.clone(),
                Some((Value::Bytes(bytes), origin)) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(|start| PnCounter::starting_at(origin, start))
                    .unwrap_or_default(),
                Some((Value::Tombstone, _)) | None => PnCounter::new(),
            };
            // The site's own increments count under a lineage of their own (never 0, the
            // converted strings' start values), as the node's do.
            counter.add(Writer::new(site, 1), *delta).ok()?;
            Some(Value::Counter(counter))
        }
    }
}

/// Keys: short readable ones, some raw bytes, and (half the time) one of `extra` — pass the
/// keys or prefixes a key-dependent resolver treats specially.
pub fn keys(extra: &[Bytes]) -> BoxedStrategy<Bytes> {
    let generated = prop_oneof![
        2 => Just(Bytes::from_static(b"k")),
        3 => "[a-c]{1,3}:[a-z0-9]{0,3}".prop_map(Bytes::from),
        1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from),
    ];
    if extra.is_empty() {
        generated.boxed()
    } else {
        prop_oneof![generated, prop::sample::select(extra.to_vec())].boxed()
    }
}

/// Bytes a SET writes: tiny (so values collide and ties happen), sometimes integer strings.
pub fn set_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::collection::vec(b'a'..=b'c', 0..4).prop_map(Bytes::from),
        "-?[0-9]{1,3}".prop_map(Bytes::from),
    ]
}

/// INCR/DECR amounts: mostly small, sometimes huge (to exercise overflow refusal).
pub fn increments() -> impl Strategy<Value = i64> {
    prop_oneof![9 => -5i64..=5, 1 => any::<i64>()]
}

/// Client writes of the enabled kinds (all kinds if none is enabled).
pub fn actions(kinds: WriteKinds) -> BoxedStrategy<Action> {
    let kinds = if kinds.bytes || kinds.counters || kinds.tombstones {
        kinds
    } else {
        WriteKinds::ALL
    };
    let mut options: Vec<BoxedStrategy<Action>> = Vec::new();
    if kinds.bytes {
        options.push(set_bytes().prop_map(Action::Set).boxed());
    }
    if kinds.counters {
        options.push(increments().prop_map(Action::Incr).boxed());
    }
    if kinds.tombstones {
        options.push(Just(Action::Delete).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

/// Absolute expiry: none, or a small time (so expiries collide).
pub fn expiries() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(0u64..100)
}

/// Scripts with `config`'s sites (at least 1), steps, write kinds and keys.
pub fn scripts(config: &LawConfig) -> impl Strategy<Value = Script> + use<> {
    let sites = config.sites.max(1);
    let write = (0..sites, 0u64..4, actions(config.kinds), expiries()).prop_map(
        |(site, advance_ms, action, expires_at_ms)| Step::Write {
            site,
            advance_ms,
            action,
            expires_at_ms,
        },
    );
    let deliver = (
        0..sites,
        any::<Index>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(site, update, relay, observe)| Step::Deliver {
            site,
            update,
            relay,
            observe,
        });
    let step = prop_oneof![3 => write, 2 => deliver];
    (
        keys(&config.keys),
        prop::collection::vec(0u64..6, sites),
        prop::collection::vec(step, 1..=config.max_steps.max(1)),
    )
        .prop_map(|(key, skews_ms, steps)| Script {
            key,
            skews_ms,
            steps,
        })
}
