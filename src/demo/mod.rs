//! `tern demo`: an embedded node on a free loopback port and a narrated, self-checking client
//! session against it over real TCP, told in scenes.
mod failover;
mod narrator;
mod render;
mod scenes;
mod wan;

use std::time::{Duration, Instant};

use anyhow::Context;
use tern_node::config::NodeConfig;

use crate::cli::DemoArgs;
use crate::node_host;
use narrator::Narrator;
use scenes::Scene;

/// Bounds on the client side, loose enough for a debug build on a busy machine (redis-rs's
/// default reply timeout is 500 ms) and tight enough that a hung node fails the demo.
const CONNECT_MAX: Duration = Duration::from_secs(10);
const REPLY_MAX: Duration = Duration::from_secs(10);

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    node_host::block_on(play(args))
}

async fn play(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = NodeConfig {
        listen: node_host::LOOPBACK_ANY_PORT,
        ..NodeConfig::default()
    };
    let node = node_host::start(config)
        .await
        .context("starting the embedded node")?;
    let addr = node.local_addr();
    println!("tern demo: embedded node listening on {addr}");

    let outcome = tell_story(&format!("redis://{addr}/"), args.quiet).await;
    // Shut down whatever the story's outcome, so a failed check still leaves no node behind.
    node.shutdown().await;
    let commands = outcome?;
    println!(
        "\ndemo passed: {} scenes, {commands} commands checked against a real node in {} ms; node shut down.",
        Scene::ALL.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Plays every scene in order; returns how many commands were sent.
async fn tell_story(url: &str, quiet: bool) -> anyhow::Result<u64> {
    let client = redis::Client::open(url).with_context(|| format!("parsing {url}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_MAX))
        .set_response_timeout(Some(REPLY_MAX));
    let con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let mut narrator = Narrator::new(con, quiet);
    for (index, scene) in Scene::ALL.into_iter().enumerate() {
        if !quiet {
            println!(
                "\nScene {}/{}: {}",
                index + 1,
                Scene::ALL.len(),
                scene.title()
            );
        }
        scene
            .play(&mut narrator)
            .await
            .with_context(|| format!("demo scene {:?} failed", scene.title()))?;
    }
    Ok(narrator.commands())
}
