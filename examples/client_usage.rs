//! Using tern from Rust: it speaks RESP, so the ordinary `redis` crate is the client.
//!
//! ```text
//! cargo run --release -- node &                              # a node on 127.0.0.1:6379
//! cargo run --example client_usage                           # or: TERN_URL=redis://host:port/
//! ```

/// Where the node listens unless `TERN_URL` says otherwise (tern's default `listen`).
const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";

#[tokio::main]
async fn main() -> redis::RedisResult<()> {
    let url = std::env::var("TERN_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let client = redis::Client::open(url.as_str())?;
    // One multiplexed connection is cheap to clone and safe to share between tasks.
    let mut con = client.get_multiplexed_async_connection().await?;

    let () = redis::cmd("SET")
        .arg("example:greeting")
        .arg("hello from Rust")
        .query_async(&mut con)
        .await?;
    let greeting: String = redis::cmd("GET")
        .arg("example:greeting")
        .query_async(&mut con)
        .await?;
    println!("GET example:greeting -> {greeting}");

    let visits: i64 = redis::cmd("INCRBY")
        .arg("example:visits")
        .arg(5)
        .query_async(&mut con)
        .await?;
    println!("INCRBY example:visits 5 -> {visits}");

    // Pipelining: many commands, one round trip.
    let (a, b): (Option<String>, Option<String>) = redis::pipe()
        .cmd("SET")
        .arg("example:a")
        .arg("1")
        .ignore()
        .cmd("SET")
        .arg("example:b")
        .arg("2")
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("GET")
        .arg("example:a")
        .cmd("GET")
        .arg("example:b")
        .query_async(&mut con)
        .await?;
    println!("pipelined GETs -> {a:?} {b:?}");

    let removed: i64 = redis::cmd("DEL")
        .arg(&[
            "example:greeting",
            "example:visits",
            "example:a",
            "example:b",
        ])
        .query_async(&mut con)
        .await?;
    println!("DEL (cleanup) -> {removed} keys");
    Ok(())
}
