//! The primary side: runs forwarded requests on the local replicas and answers the origin.
use crate::cluster::NodeId;
use crate::core::{Command, PartitionId, Request, RequestId};
use crate::shell::actor::{Outcome, Reply};
use crate::shell::peers::Peers;
use crate::shell::router::{NotQueued, Router, ShellError};
use crate::shell::wire::{
    self, BatchFrame, ForwardMessage, ForwardReply, ForwardRequest, WireCommand, WireKind,
};
use crate::transport::Channel;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Runs a request forwarded alone (`ForwardMessage::Request`) and answers it alone, as a node of
/// an older release expects.
pub async fn serve(
    router: Router,
    peers: Arc<Peers>,
    from: NodeId,
    id: RequestId,
    attempt: u32,
    partition: PartitionId,
    commands: Vec<WireCommand>,
) {
    let request = Request {
        id,
        commands: commands.into_iter().map(Command::from).collect(),
    };
    let reply = match router.submit_local(partition, request).await {
        Ok(rx) => rx.await.ok(),
        Err(_) => None,
    };
    let message = match reply_to(id, attempt, reply) {
        ForwardReply::Answer { attempt, outcome } => ForwardMessage::Answer { attempt, outcome },
        ForwardReply::Redirect {
            id,
            attempt,
            epoch,
            primary,
        } => ForwardMessage::Redirect {
            id,
            attempt,
            epoch,
            primary,
        },
    };
    match wire::encode(WireKind::Forward, &message) {
        Ok(frame) => {
            peers.send(from, Channel::Forward, frame);
        }
        Err(e) => tracing::error!(%partition, "encode a forwarded answer: {e}"),
    }
}

/// Runs the requests of one `Requests` frame from `from` and answers them in `Answers` frames
/// as they complete: all that are ready when this task runs go in one frame, and a slow one (a
/// full mailbox, a late backup) never holds up the others.
pub async fn serve_batch(
    router: Router,
    peers: Arc<Peers>,
    from: NodeId,
    requests: Vec<ForwardRequest>,
) {
    let mut answers = Answers {
        peers: &peers,
        to: from,
        frame: BatchFrame::answers(),
    };
    let mut running = Vec::with_capacity(requests.len());
    for ForwardRequest {
        id,
        attempt,
        partition,
        commands,
    } in requests
    {
        let partition = PartitionId(partition);
        let request = Request {
            id,
            commands: commands.into_iter().map(Command::from).collect(),
        };
        let step = match router.try_submit_local(partition, request) {
            Ok(rx) => Step::Queued(rx),
            Err(NotQueued::Full(request)) => {
                Step::Submitting(Box::pin(router.submit_local(partition, request)))
            }
            Err(NotQueued::Stopped) => {
                answers.push(&reply_to(id, attempt, None));
                continue;
            }
        };
        running.push(Running { id, attempt, step });
    }
    while !running.is_empty() {
        std::future::poll_fn(|cx| poll_ready(cx, &mut running, &mut answers)).await;
        answers.send();
    }
    answers.send();
}

/// Polls every running request; answers those done. Ready once at least one is.
fn poll_ready(
    cx: &mut Context<'_>,
    running: &mut Vec<Running<'_>>,
    answers: &mut Answers<'_>,
) -> Poll<()> {
    let mut done = false;
    let mut i = 0;
    while let Some(request) = running.get_mut(i) {
        match request.poll(cx) {
            Poll::Ready(reply) => {
                answers.push(&reply);
                running.swap_remove(i);
                done = true;
            }
            Poll::Pending => i += 1,
        }
    }
    if done { Poll::Ready(()) } else { Poll::Pending }
}

/// The answers frame being filled for the origin.
struct Answers<'a> {
    peers: &'a Peers,
    to: NodeId,
    frame: BatchFrame,
}

impl Answers<'_> {
    fn push(&mut self, reply: &ForwardReply) {
        match self.frame.push(reply) {
            Ok(None) => {}
            Ok(Some(full)) => {
                self.peers.send(self.to, Channel::Forward, full.finish());
            }
            // The origin's attempt times out and is retried.
            Err(e) => tracing::error!("encode a forwarded answer: {e}"),
        }
    }

    /// Sends what was pushed since the last send (a frame the link refuses is lost like any
    /// answer: the origin's attempt times out and is retried).
    fn send(&mut self) {
        if !self.frame.is_empty() {
            let frame = std::mem::replace(&mut self.frame, BatchFrame::answers());
            self.peers.send(self.to, Channel::Forward, frame.finish());
        }
    }
}

type Submitting<'a> =
    Pin<Box<dyn Future<Output = Result<oneshot::Receiver<Reply>, ShellError>> + 'a>>;

/// One request of a batch on its way through the local replica.
struct Running<'a> {
    id: RequestId,
    attempt: u32,
    step: Step<'a>,
}

enum Step<'a> {
    /// Waiting for room in the partition's mailbox.
    Submitting(Submitting<'a>),
    /// In the mailbox; the replica answers exactly once.
    Queued(oneshot::Receiver<Reply>),
}

impl Running<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ForwardReply> {
        loop {
            match &mut self.step {
                Step::Submitting(submit) => match submit.as_mut().poll(cx) {
                    Poll::Ready(Ok(rx)) => self.step = Step::Queued(rx),
                    Poll::Ready(Err(_)) => {
                        return Poll::Ready(reply_to(self.id, self.attempt, None));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Step::Queued(rx) => {
                    return Pin::new(rx)
                        .poll(cx)
                        .map(|reply| reply_to(self.id, self.attempt, reply.ok()));
                }
            }
        }
    }
}

/// What to tell the origin about a request the local replica answered (`Some`) or never got.
fn reply_to(id: RequestId, attempt: u32, reply: Option<Reply>) -> ForwardReply {
    match reply {
        Some(Ok(Outcome::Answered(results))) => ForwardReply::answer(id, attempt, results),
        Some(Ok(Outcome::Redirected { epoch, primary })) => ForwardReply::Redirect {
            id,
            attempt,
            epoch,
            primary,
        },
        // A failed partition or a stopping node: the origin's retry finds another way, or
        // gives up with -TRYAGAIN.
        Some(Err(_)) | None => ForwardReply::Redirect {
            id,
            attempt,
            epoch: 0,
            primary: None,
        },
    }
}
