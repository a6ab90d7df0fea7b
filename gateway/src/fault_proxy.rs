//! A UDP relay that injects WAN faults (loss, delay, jitter, a full cut) between a client and an
//! upstream server: for tests and the demo, in front of a gateway's QUIC port.
//!
//! One client at a time: replies go to the address the latest client datagram came from. Each
//! direction has a receiving task (decides drop or delay, seeded randomness) and a sending task
//! that releases datagrams in arrival order at their due time, so jitter adds delay but never
//! reorders (QUIC would cope, but in-order keeps runs comparable).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Faults applied to every datagram, both directions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub drop_ratio: f64,
    /// Added one-way delay.
    pub delay_ms: u64,
    /// Extra delay, uniform in `[0, jitter_ms]`, per datagram.
    pub jitter_ms: u64,
    /// Drop everything (a cut WAN link).
    pub cut: bool,
}

/// Datagram counters since start, both directions together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded_total: u64,
    pub dropped_total: u64,
}

/// Largest UDP payload.
const DATAGRAM_BYTES_MAX: usize = 65_535;
/// Datagrams waiting for their due time per direction; beyond this they are dropped (a full
/// router queue).
const QUEUE_DATAGRAMS_MAX: usize = 16_384;

/// The running proxy. Stops on [`UdpFaultProxy::stop`] or drop.
#[derive(Debug)]
pub struct UdpFaultProxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
struct Shared {
    faults: Mutex<Faults>,
    client: Mutex<Option<SocketAddr>>,
    forwarded_total: AtomicU64,
    dropped_total: AtomicU64,
}

impl Shared {
    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn client(&self) -> Option<SocketAddr> {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dropped(&self) {
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a direction's datagrams go.
#[derive(Clone, Copy, Debug)]
enum Destination {
    Upstream(SocketAddr),
    /// The latest client address seen.
    Client,
}

impl UdpFaultProxy {
    /// Listens on `listen` and relays datagrams to `upstream` and replies back to the client,
    /// applying the current [`Faults`] (none at start) both ways. Randomness comes from `seed`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let unspecified = match upstream.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let back = Arc::new(UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?);
        let local_addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            client: Mutex::new(None),
            forwarded_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        // client → upstream: received on the front socket, sent from the back one.
        let (to_upstream, queue) = mpsc::channel(QUEUE_DATAGRAMS_MAX);
        tasks.push(spawn(release(
            back.clone(),
            Destination::Upstream(upstream),
            queue,
            shared.clone(),
        )));
        tasks.push(spawn(intake(
            front.clone(),
            true,
            to_upstream,
            shared.clone(),
            Rng::new(seed),
        )));
        // upstream → client: received on the back socket, sent from the front one.
        let (to_client, queue) = mpsc::channel(QUEUE_DATAGRAMS_MAX);
        tasks.push(spawn(release(
            front,
            Destination::Client,
            queue,
            shared.clone(),
        )));
        tasks.push(spawn(intake(
            back,
            false,
            to_client,
            shared.clone(),
            Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15),
        )));
        Ok(Self {
            local_addr,
            shared,
            tasks,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the faults; applies to datagrams received from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded_total: self.shared.forwarded_total.load(Ordering::Relaxed),
            dropped_total: self.shared.dropped_total.load(Ordering::Relaxed),
        }
    }

    /// Stops relaying and closes both sockets (once the tasks have unwound).
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for UdpFaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
    tokio::spawn(task).abort_handle()
}

/// Receives datagrams on `socket`, drops or schedules them.
async fn intake(
    socket: Arc<UdpSocket>,
    from_client: bool,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    mut rng: Rng,
) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            // E.g. ICMP port unreachable surfaced on some platforms: keep relaying.
            Err(error) => {
                tracing::debug!(%error, "fault proxy: receive failed");
                continue;
            }
        };
        if from_client {
            *shared.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
        }
        let faults = shared.faults();
        // Draw every time so the random sequence doesn't depend on which faults are on.
        let lose = rng.next_f64() < faults.drop_ratio;
        let jitter_ms = match faults.jitter_ms {
            0 => 0,
            jitter => rng.next_u64() % (jitter + 1),
        };
        if faults.cut || lose {
            shared.dropped();
            continue;
        }
        let due = Instant::now() + Duration::from_millis(faults.delay_ms.saturating_add(jitter_ms));
        if queue.try_send((due, buffer[..len].to_vec())).is_err() {
            shared.dropped();
        }
    }
}

/// Sends queued datagrams in arrival order, each no earlier than its due time.
async fn release(
    socket: Arc<UdpSocket>,
    destination: Destination,
    mut queue: mpsc::Receiver<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    while let Some((due, datagram)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        let target = match destination {
            Destination::Upstream(addr) => Some(addr),
            Destination::Client => shared.client(),
        };
        let sent = match target {
            Some(addr) => socket.send_to(&datagram, addr).await.is_ok(),
            None => false,
        };
        if sent {
            shared.forwarded_total.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.dropped();
        }
    }
}

/// xorshift64*: small, seeded, good enough to pick which datagrams to drop.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed: never zero-stuck, and nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_uniform_enough() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..10_000).map(|_| rng.next_f64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let values = draw(0);
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below = values.iter().filter(|v| **v < 0.2).count();
        assert!(
            (1_700..2_300).contains(&below),
            "{below} of 10000 below 0.2"
        );
    }
}
