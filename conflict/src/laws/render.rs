//! Human-readable renderings for law violations.
use super::LawCase;
use super::history::{Effect, History, Step};
use crate::{Value, Versioned};
use std::fmt::Write;

pub(super) fn entry(entry: &Versioned) -> String {
    let value = match &entry.value {
        Value::Bytes(bytes) => format!("\"{}\"", bytes.escape_ascii()),
        Value::Counter(counter) => {
            let sites: Vec<String> = counter
                .writers()
                .map(|(actor, c)| format!("{actor}:+{}-{}", c.added, c.subtracted))
                .collect();
            let total = counter
                .value()
                .map_or("overflow".to_owned(), |v| v.to_string());
            format!("counter {total} [{}]", sites.join(" "))
        }
        Value::Tombstone => "tombstone".to_owned(),
    };
    let vv: Vec<String> = entry
        .version
        .vv
        .iter()
        .map(|(s, c)| format!("{s}:{c}"))
        .collect();
    let expiry = entry
        .expires_at_ms
        .map_or("never".to_owned(), |at| format!("at {at} ms"));
    format!(
        "{value} | hlc {} from {} | vv {{{}}} | expires {expiry}",
        entry.version.hlc,
        entry.version.origin,
        vv.join(", ")
    )
}

pub(super) fn maybe(e: Option<&Versioned>) -> String {
    e.map_or("(no entry)".to_owned(), entry)
}

pub(super) fn case(case: &LawCase, history: &History) -> String {
    let mut out = String::new();
    let script = &case.script;
    let _ = writeln!(
        out,
        "  key \"{}\", site clock skews (ms) {:?}",
        script.key.escape_ascii(),
        script.skews_ms
    );
    let _ = writeln!(out, "  steps:");
    for (step, effect) in script.steps.iter().zip(&history.effects) {
        let _ = match (step, effect) {
            (
                Step::Write {
                    site,
                    advance_ms,
                    action,
                    expires_at_ms,
                },
                effect,
            ) => {
                let made = match effect {
                    Effect::Wrote(n) => format!("-> #{n}"),
                    _ => "-> refused".to_owned(),
                };
                writeln!(
                    out,
                    "    site-{site} +{advance_ms} ms writes {action:?}, expires {expires_at_ms:?} {made}"
                )
            }
            (
                Step::Deliver { site, .. },
                Effect::Applied {
                    update,
                    outcome,
                    relayed,
                },
            ) => {
                let relayed = relayed.map_or(String::new(), |n| format!(", relayed as #{n}"));
                writeln!(
                    out,
                    "    site-{site} receives #{update}: {outcome:?}{relayed}"
                )
            }
            (Step::Deliver { site, .. }, _) => writeln!(out, "    site-{site} receives nothing"),
        };
    }
    let _ = writeln!(out, "  updates (creation order):");
    for (i, update) in history.updates.iter().enumerate() {
        let _ = writeln!(out, "    #{i}: {}", entry(update));
    }
    out
}
