//! The clients' workload: which operation next, on which key, with which arguments, and how
//! long to think in between.
use super::{ClientOp, Config};
use crate::rng::SimRng;
use bytes::Bytes;
use tern_node::core::{Command, Expiry, SetCondition, TtlUnit};

/// Mostly quick successions, sometimes long pauses so time jumps past TTLs and retention.
pub(super) fn think_time_us(rng: &mut SimRng) -> u64 {
    match rng.weighted(&[(70, 0u8), (22, 1), (6, 2), (2, 3)]) {
        0 => rng.between(0, 20_000),
        1 => rng.between(20_000, 500_000),
        2 => rng.between(500_000, 3_000_000),
        _ => rng.between(3_000_000, 15_000_000),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Set,
    Del,
    Exists,
    IncrBy,
    Decr,
    Expire,
    PExpire,
    Ttl,
    PTtl,
    DbSize,
    Scan,
    FlushAll,
}

const KINDS: &[(u32, Kind)] = &[
    (1800, Kind::Get),
    (2500, Kind::Set),
    (600, Kind::Del),
    (500, Kind::Exists),
    (1000, Kind::IncrBy),
    (300, Kind::Decr),
    (500, Kind::Expire),
    (500, Kind::PExpire),
    (400, Kind::Ttl),
    (400, Kind::PTtl),
    (150, Kind::DbSize),
    (250, Kind::Scan),
    (8, Kind::FlushAll),
];

/// Values chosen to hit integer parsing's edges: canonical integers, near-overflow ones, and
/// strings that look like integers but are not (`05`, `-0`, `+1`, ` 1`).
const VALUES: &[&str] = &[
    "a",
    "b",
    "hello",
    "",
    "0",
    "7",
    "-3",
    "42",
    "05",
    "-0",
    "+1",
    " 1",
    "1.5",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775806",
];

pub(super) fn random_op(rng: &mut SimRng, config: &Config, client_now_ms: u64) -> ClientOp {
    let all_keys = || config.plain_keys.iter().chain(&config.ttl_keys);
    let any_key = |rng: &mut SimRng| {
        let n = config.plain_keys.len() + config.ttl_keys.len();
        all_keys().nth(rng.index(n)).cloned().unwrap_or_default()
    };
    let ttl_key = |rng: &mut SimRng| rng.pick(&config.ttl_keys).clone();
    let ttl_max = i64::try_from(config.limits.ttl_ms_max).unwrap_or(i64::MAX);
    let client_now = i64::try_from(client_now_ms).unwrap_or(i64::MAX);
    let command = match rng.weighted(KINDS) {
        Kind::Get => Command::Get { key: any_key(rng) },
        Kind::Exists => Command::Exists { key: any_key(rng) },
        Kind::Del => Command::Del { key: any_key(rng) },
        Kind::Ttl => Command::Ttl {
            key: any_key(rng),
            unit: TtlUnit::Seconds,
        },
        Kind::PTtl => Command::Ttl {
            key: any_key(rng),
            unit: TtlUnit::Milliseconds,
        },
        Kind::Decr => Command::IncrBy {
            key: any_key(rng),
            delta: -1,
        },
        Kind::IncrBy => {
            let delta = match rng.weighted(&[(90, 0u8), (4, 1), (3, 2), (3, 3)]) {
                0 => rng.between_i64(-10, 10),
                1 => i64::MAX,
                2 => i64::MIN,
                _ => rng.between_i64(-(1 << 62), 1 << 62),
            };
            Command::IncrBy {
                key: any_key(rng),
                delta,
            }
        }
        Kind::Set => {
            let key = any_key(rng);
            let value = if rng.chance_ppm(300_000) {
                // A value no other operation writes, so reads pin down which write they saw.
                Bytes::from(format!("v{}", rng.between(0, 1_000_000)))
            } else {
                Bytes::from_static(rng.pick(VALUES).as_bytes())
            };
            let condition = rng.weighted(&[
                (70, SetCondition::Always),
                (15, SetCondition::IfAbsent),
                (15, SetCondition::IfPresent),
            ]);
            let get = rng.chance_ppm(250_000);
            let expiry = if config.plain_keys.contains(&key) {
                rng.weighted(&[(4, None), (1, Some(Expiry::Keep))])
            } else {
                random_set_expiry(rng, client_now, ttl_max)
            };
            Command::Set {
                key,
                value,
                condition,
                expiry,
                get,
            }
        }
        Kind::Expire => {
            let seconds = rng.weighted(&[(10, 0u8), (80, 1), (5, 2), (5, 3)]);
            let ms = match seconds {
                0 => rng.between_i64(-2, 0) * 1000,
                1 => rng.between_i64(1, 5) * 1000,
                2 => ttl_max.saturating_add(1000),
                _ => (client_now / 1000 + rng.between_i64(-1, 4)) * 1000 - client_now,
            };
            Command::Expire {
                key: ttl_key(rng),
                expiry: Expiry::InMs(ms),
            }
        }
        Kind::PExpire => {
            let expiry = match rng.weighted(&[(10, 0u8), (75, 1), (3, 2), (12, 3)]) {
                0 => Expiry::InMs(rng.between_i64(-100, 0)),
                1 => Expiry::InMs(rng.between_i64(1, 4_000)),
                2 => Expiry::InMs(ttl_max.saturating_add(1)),
                // PEXPIREAT by the client's clock, which disagrees with the node's.
                _ => Expiry::AtMs(client_now + rng.between_i64(-1_000, 4_000)),
            };
            Command::Expire {
                key: ttl_key(rng),
                expiry,
            }
        }
        Kind::DbSize => return ClientOp::DbSize,
        Kind::Scan => {
            let count = rng.between(1, 6) as usize;
            let patterns = [
                None,
                Some("*"),
                Some("p*"),
                Some("t*"),
                Some("*1"),
                Some("?0"),
            ];
            let pattern = rng
                .pick(&patterns)
                .map(|p| Bytes::from_static(p.as_bytes()));
            return ClientOp::Scan { count, pattern };
        }
        Kind::FlushAll => return ClientOp::FlushAll,
    };
    ClientOp::Key(command)
}

fn random_set_expiry(rng: &mut SimRng, client_now: i64, ttl_max: i64) -> Option<Expiry> {
    match rng.weighted(&[(30, 0u8), (15, 1), (20, 2), (20, 3), (8, 4), (3, 5), (4, 6)]) {
        0 => None,
        1 => Some(Expiry::Keep),
        // EX n
        2 => Some(Expiry::InMs(rng.between_i64(1, 4) * 1000)),
        // PX n
        3 => Some(Expiry::InMs(rng.between_i64(1, 3_000))),
        // PXAT by the client's clock: may already be past on the node's.
        4 => Some(Expiry::AtMs(client_now + rng.between_i64(-1_000, 3_000))),
        // EXAT
        5 => Some(Expiry::AtMs(
            (client_now / 1000 + rng.between_i64(1, 3)) * 1000,
        )),
        // Invalid: refused whatever the key holds.
        _ => Some(*rng.pick(&[
            Expiry::InMs(0),
            Expiry::InMs(-7),
            Expiry::InMs(ttl_max.saturating_add(1)),
            Expiry::AtMs(0),
            Expiry::AtMs(-1),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::single_node::node::command_key;
    use crate::time::HostClock;

    #[test]
    fn workload_covers_every_kind_of_operation() {
        let mut rng = SimRng::from_seed(11);
        let config = Config::for_seed(&mut rng);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let label = match random_op(&mut rng, &config, HostClock::RUN_START_UNIX_MS) {
                ClientOp::Key(command) => format!("{command:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
                other => format!("{other:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            };
            seen.insert(label);
        }
        let expected = [
            "DbSize", "Del", "Exists", "Expire", "FlushAll", "Get", "IncrBy", "Scan", "Set", "Ttl",
        ];
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn plain_keys_never_get_a_ttl() {
        let mut rng = SimRng::from_seed(12);
        let config = Config::for_seed(&mut rng);
        for _ in 0..20_000 {
            if let ClientOp::Key(command) =
                random_op(&mut rng, &config, HostClock::RUN_START_UNIX_MS)
            {
                let key = command_key(&command).cloned().unwrap_or_default();
                let ttl = matches!(
                    command,
                    Command::Expire { .. }
                        | Command::Set {
                            expiry: Some(Expiry::InMs(_) | Expiry::AtMs(_)),
                            ..
                        }
                );
                assert!(!(ttl && config.plain_keys.contains(&key)), "{command:?}");
            }
        }
    }
}
