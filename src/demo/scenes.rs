//! The demo's story, scene by scene. Each scene leaves the keyspace in a known state the next
//! one relies on (the final scan checks the sum of all of them). The failover and multi-site
//! scenes run their own nodes.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::Value;

use super::narrator::{Expect, Narrator};

/// TTL the expiry scene sets, and how long it waits for the key to vanish at most.
const SESSION_TTL_MS: i64 = 300;
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(3);
const TTL_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Small on purpose, so the scan scene shows the cursor walking several pages.
const SCAN_PAGE_COUNT: &str = "2";
const SCAN_CALLS_MAX: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub enum Scene {
    Basics,
    ManyKeys,
    Counter,
    Expiry,
    Scan,
    Failover,
    Wan,
}

impl Scene {
    pub const ALL: [Scene; 7] = [
        Scene::Basics,
        Scene::ManyKeys,
        Scene::Counter,
        Scene::Expiry,
        Scene::Scan,
        Scene::Failover,
        Scene::Wan,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Scene::Basics => "strings in, strings out",
            Scene::ManyKeys => "many keys in one command",
            Scene::Counter => "a counter",
            Scene::Expiry => "keys that expire",
            Scene::Scan => "walking the keyspace",
            Scene::Failover => "a node dies; no write is lost",
            Scene::Wan => "two sites, one dataset: WAN replication through a cut",
        }
    }

    pub async fn play(self, n: &mut Narrator) -> anyhow::Result<()> {
        match self {
            Scene::Basics => basics(n).await,
            Scene::ManyKeys => many_keys(n).await,
            Scene::Counter => counter(n).await,
            Scene::Expiry => expiry(n).await,
            Scene::Scan => scan(n).await,
            Scene::Failover => super::failover::failover(n).await,
            Scene::Wan => super::wan::wan(n).await,
        }
    }
}

async fn basics(n: &mut Narrator) -> anyhow::Result<()> {
    n.say("A write is acknowledged once its partition has applied it; a read sees it at once.");
    n.check(&["SET", "greeting", "hello, tern"], Expect::Ok)
        .await?;
    n.check(&["GET", "greeting"], Expect::Bulk("hello, tern"))
        .await?;
    n.check(&["SET", "greeting", "hello again"], Expect::Ok)
        .await?;
    n.check(&["GET", "greeting"], Expect::Bulk("hello again"))
        .await?;
    n.check(&["EXISTS", "greeting"], Expect::Int(1)).await?;
    n.check(&["GET", "nobody-wrote-this"], Expect::Nil).await?;
    n.say("A delete leaves a versioned tombstone behind, so it can replicate like a write.");
    n.check(&["DEL", "greeting"], Expect::Int(1)).await?;
    n.check(&["GET", "greeting"], Expect::Nil).await?;
    Ok(())
}

async fn many_keys(n: &mut Narrator) -> anyhow::Result<()> {
    n.say("These keys hash to different partitions; the node fans out and answers in order.");
    n.check(
        &[
            "MSET", "city:1", "Lisbon", "city:2", "Oslo", "city:3", "Quito",
        ],
        Expect::Ok,
    )
    .await?;
    n.check(
        &["MGET", "city:1", "city:2", "city:404", "city:3"],
        Expect::Bulks(vec![Some("Lisbon"), Some("Oslo"), None, Some("Quito")]),
    )
    .await?;
    Ok(())
}

async fn counter(n: &mut Narrator) -> anyhow::Result<()> {
    n.say("Counters start at zero; each step is atomic in the key's partition.");
    n.check(&["INCR", "visits"], Expect::Int(1)).await?;
    n.check(&["INCRBY", "visits", "41"], Expect::Int(42))
        .await?;
    n.check(&["DECR", "visits"], Expect::Int(41)).await?;
    n.check(&["GET", "visits"], Expect::Bulk("41")).await?;
    n.say("Text is not a number, and the node says so instead of guessing:");
    n.check(&["INCR", "city:1"], Expect::Error).await?;
    n.check(&["GET", "city:1"], Expect::Bulk("Lisbon")).await?;
    Ok(())
}

async fn expiry(n: &mut Narrator) -> anyhow::Result<()> {
    let ttl = SESSION_TTL_MS.to_string();
    n.say(format!(
        "A session key that lives {SESSION_TTL_MS} ms; watch its TTL count down."
    ));
    n.check(&["SET", "session", "token-7", "PX", &ttl], Expect::Ok)
        .await?;
    n.check(&["GET", "session"], Expect::Bulk("token-7"))
        .await?;
    let started = Instant::now();
    let mut last_pttl = SESSION_TTL_MS;
    loop {
        let pttl = match n
            .check(&["PTTL", "session"], Expect::IntIn(-2..=last_pttl))
            .await?
        {
            Value::Int(pttl) => pttl,
            other => bail!("PTTL replied {other:?} after passing its check"),
        };
        if pttl == -2 {
            break; // -2: the key no longer exists.
        }
        if pttl == -1 {
            bail!("PTTL session replied -1: the key lost its TTL");
        }
        last_pttl = pttl;
        if started.elapsed() > EXPIRY_WAIT_MAX {
            bail!("session still exists {EXPIRY_WAIT_MAX:?} after a {SESSION_TTL_MS} ms TTL");
        }
        tokio::time::sleep(TTL_POLL_INTERVAL).await;
    }
    n.check(&["GET", "session"], Expect::Nil).await?;
    n.check(&["EXISTS", "session"], Expect::Int(0)).await?;
    n.say(format!(
        "Gone after {} ms, as promised.",
        started.elapsed().as_millis()
    ));
    Ok(())
}

async fn scan(n: &mut Narrator) -> anyhow::Result<()> {
    n.say("SCAN walks every partition with a cursor; COUNT is a hint, the cursor is the truth.");
    let mut cursor = "0".to_owned();
    let mut seen = BTreeSet::new();
    for _ in 0..SCAN_CALLS_MAX {
        let reply = n.show(&["SCAN", &cursor, "COUNT", SCAN_PAGE_COUNT]).await?;
        let (next, keys) = parse_scan(reply).context("reading the SCAN reply")?;
        seen.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    if cursor != "0" {
        bail!("SCAN did not finish within {SCAN_CALLS_MAX} calls");
    }
    // What the earlier scenes left behind: greeting deleted, session expired.
    let want: BTreeSet<String> = ["city:1", "city:2", "city:3", "visits"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if seen != want {
        bail!("SCAN found {seen:?}, expected {want:?}");
    }
    n.say(format!(
        "The scan found exactly the {} live keys.",
        want.len()
    ));
    let live = i64::try_from(want.len()).context("counting live keys")?;
    n.check(&["DBSIZE"], Expect::Int(live)).await?;
    Ok(())
}

/// `[cursor, [key, ...]]` → (cursor, keys).
fn parse_scan(reply: Value) -> anyhow::Result<(String, Vec<String>)> {
    let Value::Array(mut parts) = reply else {
        bail!("expected a two-element array, got {reply:?}");
    };
    if parts.len() != 2 {
        bail!("expected a two-element array, got {} elements", parts.len());
    }
    let keys = parts.pop().context("SCAN reply lost its key list")?;
    let cursor = parts.pop().context("SCAN reply lost its cursor")?;
    let cursor = as_text(&cursor).context("reading the cursor")?;
    let Value::Array(keys) = keys else {
        bail!("expected an array of keys, got {keys:?}");
    };
    let keys = keys
        .iter()
        .map(as_text)
        .collect::<anyhow::Result<Vec<_>>>()
        .context("reading the keys")?;
    Ok((cursor, keys))
}

fn as_text(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => bail!("expected a string, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_scan_replies() {
        let reply = Value::Array(vec![bulk("17"), Value::Array(vec![bulk("a"), bulk("b")])]);
        let (cursor, keys) = parse_scan(reply).expect("well-formed reply");
        assert_eq!(cursor, "17");
        assert_eq!(keys, vec!["a", "b"]);
    }

    #[test]
    fn rejects_malformed_scan_replies() {
        let cases = vec![
            Value::Nil,
            Value::Array(vec![bulk("0")]),
            Value::Array(vec![bulk("0"), bulk("not-an-array")]),
            Value::Array(vec![Value::Int(0), Value::Array(vec![])]),
        ];
        for reply in cases {
            assert!(parse_scan(reply.clone()).is_err(), "{reply:?}");
        }
    }
}
