//! Publishes to the cluster's stream. The events of each publish (or of each state change) are
//! sent in queue order, each with its own message id, and the publisher is answered only once
//! JetStream stored every one on a quorum of replicas and this node's copy holds them, so a
//! replay on this node right after the answer finds them. An event without an answer is sent
//! again with the same id (stored once: JetStream's deduplication) until the publish deadline;
//! then the publisher gets 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::stream::Link;
use super::subject;
use crate::config::Cluster;
use crate::sequencer::{Condition, Publish, PublishError, Source};

/// Longest a publish waits for JetStream before its publisher gets 503: longer than a stream
/// leader election after a server died (4 to 9 s with nats-server 2.9), so a publish rides one
/// out.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// Longest an answer waits for this node's copy once JetStream stored the events.
const COPY_WAIT: Duration = Duration::from_secs(5);
/// How often a publish waiting for the NATS connection checks it.
const CONNECTED_POLL: Duration = Duration::from_millis(20);
/// Pause before an event without an answer is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Subjects and message ids of this node's publishes.
pub(super) struct Names {
    prefix: String,
    objects: String,
    accounts: String,
    connections: String,
    /// Unique to this run of this node, so no two runs' ids meet in the duplicate window.
    run: String,
    next: u64,
}

impl Names {
    pub(super) fn new(settings: &Cluster) -> Names {
        Names {
            prefix: subject::event_prefix(&settings.name),
            objects: subject::object_prefix(&settings.name),
            accounts: subject::account_prefix(&settings.name),
            connections: subject::connection_prefix(&settings.name),
            run: format!("{}-{}", settings.node, uuid::Uuid::new_v4().simple()),
            next: 0,
        }
    }

    /// herald's own connection events go under [`subject::connection_prefix`], the cluster's
    /// connection table's only source; every other event, a client's `connections` event
    /// included, under the events' prefix.
    fn event_prefix(&self, source: Source, ty: &str) -> &str {
        if source == Source::Connections && ty == "connections" {
            &self.connections
        } else {
            &self.prefix
        }
    }

    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.run, self.next)
    }
}

/// One event on its way to the stream.
struct Outgoing {
    subject: String,
    payload: Bytes,
    id: String,
    /// For an object write: the `Seq` JetStream is to find as the object's newest event, and
    /// the one the write was planned on (they differ only once retention removed the object's
    /// events from the stream), and the planning copy's horizon.
    expected: Option<(u64, u64, u64)>,
    /// An account write's private part, for [`super::PRIVATE_HEADER`].
    private: Option<String>,
}

/// Why events were not stored.
enum Refused {
    /// JetStream did not answer in time.
    Unavailable(String),
    /// An object write found a newer event of its object: its `Seq`.
    Conflict(u64),
}

/// Sends every queued publish until the queue closes or the node stops, then waits (bounded)
/// for the answers still owed.
pub(super) async fn run(
    publishes: flume::Receiver<Publish>,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    mut names: Names,
    delivered: watch::Receiver<u64>,
    link: Arc<Link>,
    mut stop: watch::Receiver<bool>,
) {
    let mut in_flight = JoinSet::new();
    loop {
        let publish = tokio::select! {
            biased;
            received = publishes.recv_async() => match received {
                Ok(publish) => publish,
                Err(_) => break,
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    // What was queued before the stop is still answered.
                    while let Ok(publish) = publishes.try_recv() {
                        let to = Target { js: &js, stream: &stream };
                        send(publish, to, &mut names, &delivered, &link, &mut in_flight).await;
                    }
                    break;
                }
                continue;
            }
        };
        let to = Target {
            js: &js,
            stream: &stream,
        };
        send(publish, to, &mut names, &delivered, &link, &mut in_flight).await;
        while in_flight.try_join_next().is_some() {}
    }
    let owed = async { while in_flight.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(PUBLISH_DEADLINE + COPY_WAIT, owed).await;
}

/// Where publishes go: the JetStream context, and the stream to check a duplicate's answer in.
#[derive(Clone, Copy)]
struct Target<'a> {
    js: &'a jetstream::Context,
    stream: &'a jetstream::stream::Stream,
}

/// Runs the publish's state change, if any, sends its events and leaves the wait for their
/// acknowledgements to a task, so the next publish goes out at once.
async fn send(
    publish: Publish,
    to: Target<'_>,
    names: &mut Names,
    delivered: &watch::Receiver<u64>,
    link: &Arc<Link>,
    in_flight: &mut JoinSet<()>,
) {
    let Publish {
        events,
        change,
        reply,
        condition,
        source,
    } = publish;
    let events = match change {
        Some(change) => crate::sequencer::with_prefixes(change.write()),
        None => events,
    };
    if events.is_empty() {
        let _ = reply.send(Ok(*delivered.borrow()));
        return;
    }
    // Nothing is sent while the connection is down: the client would send it on reconnect,
    // after its publisher was told 503.
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    let down_for = link.down_for();
    if !link.connected() && (down_for >= PUBLISH_DEADLINE || !until_connected(link, deadline).await)
    {
        let _ = reply.send(Err(PublishError::Unavailable(format!(
            "no NATS server has answered for {} s",
            link.down_for().as_secs()
        ))));
        return;
    }
    let outgoing: Vec<Outgoing> = events
        .iter()
        .map(|(event, prefix)| {
            let (subject, expected) = match &condition {
                Some(Condition {
                    ty,
                    key,
                    expected,
                    base,
                    horizon,
                    ..
                }) => {
                    // Users and roles have subjects of their own, beside the objects'.
                    let prefix = if subject::is_account(ty) {
                        &names.accounts
                    } else {
                        &names.objects
                    };
                    (
                        subject::object_subject(prefix, ty, key),
                        Some((*expected, *base, *horizon)),
                    )
                }
                None => (
                    subject::event_subject(
                        names.event_prefix(source, &event.ty),
                        &event.ty,
                        &event.action,
                        &event.key,
                    ),
                    None,
                ),
            };
            Outgoing {
                subject,
                payload: Bytes::from(subject::payload(prefix)),
                id: names.next_id(),
                expected,
                private: condition.as_ref().and_then(|c| c.private.clone()),
            }
        })
        .collect();
    let mut acks = Vec::with_capacity(outgoing.len());
    for message in &outgoing {
        acks.push(publish_one(to.js, message).await);
    }
    let js = to.js.clone();
    let stream = to.stream.clone();
    let delivered = delivered.clone();
    let link = link.clone();
    in_flight.spawn(async move {
        let to = Target {
            js: &js,
            stream: &stream,
        };
        let answer = acknowledged(to, &link, deadline, outgoing, acks).await;
        let answer = match answer {
            Ok(last) => {
                // Answered once this node's copy holds the events, or at the latest after
                // COPY_WAIT: they are stored on a quorum either way.
                let mut delivered = delivered;
                let _ = tokio::time::timeout(COPY_WAIT, delivered.wait_for(|d| *d >= last)).await;
                Ok(last)
            }
            Err(Refused::Unavailable(error)) => Err(PublishError::Unavailable(error)),
            Err(Refused::Conflict(latest)) => Err(PublishError::Conflict { latest }),
        };
        let _ = reply.send(answer);
    });
}

/// The `Seq` JetStream names in a "wrong last sequence: N" refusal (0 when it names none).
fn latest_in(refusal: &str) -> u64 {
    refusal
        .rsplit("wrong last sequence: ")
        .next()
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

/// Waits until the NATS connection is up; false when `deadline` passes first.
async fn until_connected(link: &Link, deadline: Instant) -> bool {
    while !link.connected() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CONNECTED_POLL).await;
    }
    true
}

async fn publish_one(
    js: &jetstream::Context,
    message: &Outgoing,
) -> Result<PublishAckFuture, String> {
    let mut publish = jetstream::message::PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(&message.id);
    if let Some((expected, base, horizon)) = message.expected {
        publish = publish
            .expected_last_subject_sequence(expected)
            .header(super::BASE_HEADER, base.to_string().as_str())
            .header(super::HORIZON_HEADER, horizon.to_string().as_str());
    }
    if let Some(private) = &message.private {
        publish = publish.header(super::PRIVATE_HEADER, private.as_str());
    }
    js.send_publish(message.subject.clone(), publish)
        .await
        .map_err(|error| error.to_string())
}

/// Whether the message JetStream names as the one stored under `message`'s id (the answer to
/// a message sent again) is that message, as the stream's leader holds it: an answer from a
/// server whose copy of the stream went astray must not pass for an acknowledgement.
async fn is_stored_as(
    stream: &jetstream::stream::Stream,
    message: &Outgoing,
    seq: u64,
) -> Result<bool, String> {
    // Read from the stream leader (not a direct get, which any replica may answer).
    let stored = stream
        .get_raw_message(seq)
        .await
        .map_err(|error| format!("reading Seq {seq} back: {error}"))?;
    let id = stored
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str().to_owned());
    Ok(id.as_deref() == Some(message.id.as_str()))
}

/// Waits for every event's acknowledgement, sending again (same ids) from the first without
/// one until the publish deadline; answers the highest `Seq` stored. A "duplicate" answer is
/// checked against the stream: one that names another message's `Seq` means the event was not
/// stored, and it is sent again under a new id.
async fn acknowledged(
    to: Target<'_>,
    link: &Link,
    deadline: Instant,
    mut outgoing: Vec<Outgoing>,
    mut acks: Vec<Result<PublishAckFuture, String>>,
) -> Result<u64, Refused> {
    let js = to.js;
    let mut last = 0;
    let mut from = 0;
    loop {
        let mut failed = None;
        for (offset, ack) in acks.into_iter().enumerate() {
            let stored = match ack {
                Ok(future) => match future.await {
                    Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                        return Err(Refused::Conflict(latest_in(&error.to_string())));
                    }
                    other => other.map_err(|error| error.to_string()),
                },
                Err(error) => Err(error),
            };
            let index = from + offset;
            let stored = match stored {
                Ok(ack) if ack.duplicate => match outgoing.get(index) {
                    Some(message) => match is_stored_as(to.stream, message, ack.sequence).await {
                        Ok(true) => Ok(ack.sequence),
                        Ok(false) => {
                            tracing::warn!(
                                seq = ack.sequence,
                                "JetStream answered a publish sent again with another message's Seq; sending it under a new id"
                            );
                            if let Some(message) = outgoing.get_mut(index) {
                                message.id.push_str("-again");
                            }
                            Err(format!("Seq {} is another message's", ack.sequence))
                        }
                        Err(error) => Err(error),
                    },
                    None => Ok(ack.sequence),
                },
                Ok(ack) => Ok(ack.sequence),
                Err(error) => Err(error),
            };
            match stored {
                Ok(seq) => last = last.max(seq),
                Err(error) => {
                    failed = Some((index, error));
                    break;
                }
            }
        }
        let Some((at, error)) = failed else {
            return Ok(last);
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            tracing::debug!(%error, "a publish to the cluster's stream went unanswered");
            return Err(Refused::Unavailable(error));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        if !until_connected(link, deadline).await {
            return Err(Refused::Unavailable(error));
        }
        let again = outgoing.get(at..).unwrap_or_default();
        metrics::counter!(crate::metrics::CLUSTER_PUBLISH_RETRIES).increment(again.len() as u64);
        from = at;
        acks = Vec::with_capacity(again.len());
        for message in again {
            acks.push(publish_one(js, message).await);
        }
    }
}
