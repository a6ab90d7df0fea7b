//! `forward_requests_pending_max`: at the cap a new forwarded request waits for a slot until
//! its deadline, and every way a request ends gives its slot back.
//!
//! The peer never answers: the forwarder has an outbox for it but no flusher, so requests sit
//! queued and only what a test does ends them (an answer or redirect arriving, the router
//! dropping a timed-out attempt, the link refusing the frame).
use super::outbox::Outbox;
use super::pending::Pending;
use super::{Answer, ForwardStats, Forwarder};
use crate::cluster::{MapCommand, NodeId, PartitionMap, PeerSpec};
use crate::core::{
    Command, Keyspace, PartitionConfig, PartitionId, ReplicaCore, ReplicationLimits, RequestId,
    Response,
};
use crate::limits::Limits;
use crate::shell::actor::{Outcome, PartitionActor, PartitionLinks, ProposeMap};
use crate::shell::board::ReplicaBoard;
use crate::shell::map_view::MapView;
use crate::shell::peers::Peers;
use crate::shell::router::{Router, ShellError};
use crate::shell::routes::Routes;
use actix::{Actor, Arbiter, Context, Handler};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_conflict::SiteId;

const SILENT: u64 = 2;

/// Long enough for a request that could proceed to have done so.
const SETTLE: Duration = Duration::from_millis(100);

/// Far enough away that no test reaches it unless it means to.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// A forwarder of at most `cap` pending requests, whose only peer ([`SILENT`]) never answers.
fn forwarder_to_a_silent_peer(cap: usize) -> Forwarder {
    let silent = NodeId::new(SILENT).expect("non-zero");
    Forwarder {
        peers: Arc::new(Peers::none()),
        pending: Arc::new(Pending::new(cap)),
        outboxes: BTreeMap::from([(silent, Arc::new(Outbox::new(silent)))]),
    }
}

fn id(counter: u64) -> RequestId {
    RequestId { origin: 1, counter }
}

fn answered(n: i64) -> Outcome {
    Outcome::Answered(vec![Ok(Response::Int(n))])
}

fn redirected() -> Outcome {
    Outcome::Redirected {
        epoch: 3,
        primary: Some(SILENT),
    }
}

async fn send(
    forwarder: &Forwarder,
    counter: u64,
    attempt: u32,
    deadline: Instant,
) -> Option<Answer> {
    forwarder
        .send(
            SILENT,
            PartitionId(0),
            id(counter),
            attempt,
            &[Command::DbSize],
            deadline,
        )
        .await
}

/// Whether `future` is still waiting after [`SETTLE`].
async fn still_waits<F: Future + Unpin>(future: &mut F) -> bool {
    tokio::time::timeout(SETTLE, future).await.is_err()
}

/// How a request in flight ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The primary answers.
    Answered,
    /// The router's attempt timeout (or a map change, or the client leaving) drops the answer.
    Abandoned,
    /// The link refuses the frame it was in.
    Refused,
    /// The primary redirects (the router retries after a pause, as a new attempt).
    Redirected,
    /// The primary redirects; the retry (same id, next attempt) is answered.
    RedirectedThenAnswered,
}

/// Ends request `counter` (attempt 1, `answer`) as `end` says, checking what its caller sees.
async fn end(forwarder: &Forwarder, counter: u64, answer: Answer, end: End) {
    match end {
        End::Answered => {
            forwarder.complete(id(counter), 1, answered(1));
            assert_eq!(answer.await, Ok(Ok(answered(1))));
        }
        End::Abandoned => drop(answer),
        End::Refused => {
            forwarder.pending.forget(&[(id(counter), 1)]);
            assert!(answer.await.is_err(), "a refused attempt is lost");
        }
        End::Redirected => {
            forwarder.complete(id(counter), 1, redirected());
            assert_eq!(answer.await, Ok(Ok(redirected())));
        }
        End::RedirectedThenAnswered => {
            forwarder.complete(id(counter), 1, redirected());
            assert_eq!(answer.await, Ok(Ok(redirected())));
            let retry = send(forwarder, counter, 2, far())
                .await
                .expect("the redirected request's slot is free again");
            forwarder.complete(id(counter), 2, answered(2));
            assert_eq!(retry.await, Ok(Ok(answered(2))));
        }
    }
}

/// Cap 2: a third request waits (neither sent nor failed) while two are in flight, and goes
/// out as soon as one of them ends, however it ends.
#[tokio::test]
async fn at_the_cap_a_request_waits_until_one_in_flight_ends() {
    for how in [End::Answered, End::Abandoned, End::Refused, End::Redirected] {
        let forwarder = forwarder_to_a_silent_peer(2);
        let first = send(&forwarder, 1, 1, far()).await.expect("below the cap");
        let _second = send(&forwarder, 2, 1, far()).await.expect("below the cap");
        assert_eq!(forwarder.pending.slots_free(), 0);

        let mut third = Box::pin(send(&forwarder, 3, 1, far()));
        assert!(
            still_waits(&mut third).await,
            "{how:?}: not held at the cap"
        );

        end(&forwarder, 1, first, how).await;
        let mut third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap_or_else(|_| panic!("{how:?}: the third never went out"))
            .expect("queued in the outbox");
        assert_eq!(forwarder.pending.slots_free(), 0, "{how:?}");
        assert!(
            still_waits(&mut third).await,
            "{how:?}: the third is in flight, unanswered"
        );
    }
}

/// A request that finds no slot by its deadline is not sent, takes nothing, and the slot of
/// the request in flight is still that request's.
#[tokio::test]
async fn a_request_waiting_past_its_deadline_is_not_sent_and_takes_nothing() {
    let forwarder = forwarder_to_a_silent_peer(1);
    let first = send(&forwarder, 1, 1, far()).await.expect("below the cap");
    let full = ForwardStats {
        pending: 1,
        pending_max: 1,
        refused_pending_full_total: 0,
    };
    assert_eq!(forwarder.stats(), full);
    let started = Instant::now();
    let late = send(&forwarder, 2, 1, started + SETTLE).await;
    assert!(late.is_none(), "sent without a slot");
    assert!(started.elapsed() >= SETTLE, "gave up before its deadline");
    assert_eq!(forwarder.pending.slots_free(), 0);
    // Counted for the metrics.
    let refused = ForwardStats {
        refused_pending_full_total: 1,
        ..full
    };
    assert_eq!(forwarder.stats(), refused);
    // The first is still in flight and still answered.
    forwarder.complete(id(1), 1, answered(7));
    assert_eq!(first.await, Ok(Ok(answered(7))));
    assert_eq!(forwarder.pending.slots_free(), 1);
    assert_eq!(
        forwarder.stats(),
        ForwardStats {
            pending: 0,
            ..refused
        }
    );
}

/// A retry of an id whose previous attempt is still registered takes that attempt's slot, not
/// a second one: at the cap it does not wait, and the earlier attempt ends as lost.
#[tokio::test]
async fn a_retry_of_a_registered_request_reuses_its_slot() {
    let forwarder = forwarder_to_a_silent_peer(1);
    let first = send(&forwarder, 1, 1, far()).await.expect("below the cap");
    let retry = send(&forwarder, 1, 2, Instant::now())
        .await
        .expect("the retry reuses the first attempt's slot");
    assert!(first.await.is_err(), "the replaced attempt is lost");
    assert_eq!(forwarder.pending.slots_free(), 0);
    forwarder.complete(id(1), 2, answered(2));
    assert_eq!(retry.await, Ok(Ok(answered(2))));
    assert_eq!(forwarder.pending.slots_free(), 1);
}

/// However requests end, every slot comes back.
#[tokio::test]
async fn every_way_a_request_ends_gives_its_slot_back() {
    const CAP: usize = 3;
    for how in [
        End::Answered,
        End::Abandoned,
        End::Refused,
        End::RedirectedThenAnswered,
    ] {
        let forwarder = forwarder_to_a_silent_peer(CAP);
        for counter in 1..=CAP as u64 {
            let answer = send(&forwarder, counter, 1, far())
                .await
                .expect("below the cap");
            end(&forwarder, counter, answer, how).await;
        }
        assert_eq!(forwarder.pending.slots_free(), CAP, "{how:?}");
        assert!(forwarder.pending.is_empty(), "{how:?}");
    }
}

/// Takes the map proposals nobody makes here.
struct NoCluster;

impl Actor for NoCluster {
    type Context = Context<Self>;
}

impl Handler<ProposeMap> for NoCluster {
    type Result = ();

    fn handle(&mut self, _: ProposeMap, _: &mut Self::Context) {}
}

/// Through the router: at the cap, `submit` itself waits (the client connection stops), and a
/// request that got no slot within `forward_retry_ms_max` gets the `-TRYAGAIN` of a request
/// that found no primary; the one in flight keeps its slot until it ends.
#[test]
fn through_the_router_a_request_without_a_slot_gets_tryagain() {
    let system = actix::System::new();
    system.block_on(async {
        let arbiter = Arbiter::new();
        let keyspace = Keyspace::new(1).expect("one partition is valid");
        let ids = [1, SILENT].map(|n| NodeId::new(n).expect("non-zero"));
        let mut map = PartitionMap::bootstrap(
            1,
            0,
            ids.map(|id| PeerSpec {
                id,
                addr: format!("node-{id}"),
                zone: None,
            }),
        );
        for id in ids {
            map.apply(&MapCommand::MarkUp { id, incarnation: 1 })
                .expect("register");
        }
        let primary = map.partitions()[0].primary.expect("a primary");
        let me = ids.into_iter().find(|&n| n != primary).expect("two nodes");
        let view = Arc::new(MapView::new(map, me, 1));
        let limits = Limits {
            forward_retry_ms_max: 300,
            forward_requests_pending_max: 1,
            ..Limits::default()
        };
        let config = PartitionConfig {
            partition: PartitionId(0),
            site: SiteId(1),
            limits: limits.clone(),
            hash_seed: 7,
        };
        let links = PartitionLinks {
            peers: Arc::new(Peers::none()),
            cluster: NoCluster.start().recipient(),
            board: Arc::new(ReplicaBoard::new(1)),
        };
        let actor_view = Arc::clone(&view);
        let addr = PartitionActor::start_in_arbiter(&arbiter.handle(), move |_| {
            let core = ReplicaCore::new(me.get(), config, ReplicationLimits::default());
            PartitionActor::new(core, actor_view, links, Duration::from_secs(60))
        });
        // Every request goes to the primary, which never answers.
        let mut forwarder = forwarder_to_a_silent_peer(limits.forward_requests_pending_max);
        forwarder.outboxes = BTreeMap::from([(primary, Arc::new(Outbox::new(primary)))]);
        let forwarder = Arc::new(forwarder);
        let router = Router::new(
            keyspace,
            vec![addr],
            &limits,
            me.get(),
            1,
            Arc::new(Routes::new(&view)),
            Some(Arc::clone(&forwarder)),
        );

        let first = router
            .submit(PartitionId(0), vec![Command::DbSize])
            .await
            .expect("submitted");
        assert_eq!(forwarder.pending.slots_free(), 0);
        let started = Instant::now();
        let second = router
            .submit(PartitionId(0), vec![Command::DbSize])
            .await
            .expect("submitted");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "submit did not wait for a slot ({waited:?})"
        );
        assert_eq!(forwarder.pending.slots_free(), 0, "the second took nothing");
        let outcome = second.wait().await;
        assert!(
            matches!(outcome, Err(ShellError::TryAgain { .. })),
            "{outcome:?}"
        );
        // The first times out at its own deadline and gives its slot back.
        let outcome = first.wait().await;
        assert!(
            matches!(outcome, Err(ShellError::TryAgain { .. })),
            "{outcome:?}"
        );
        assert_eq!(forwarder.pending.slots_free(), 1);
        arbiter.stop();
        assert!(arbiter.join().is_ok());
    });
}
