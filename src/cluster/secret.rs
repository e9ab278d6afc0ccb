//! The cluster's token secret: the first message on `<cluster>.accounts.secret` is the secret
//! every node signs and checks tokens with. A node that finds none publishes its own, on
//! condition that the subject is still empty; whichever JetStream stored first wins (read back
//! as the subject's first message, so two secrets stored at once still give one answer).

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::{self, message::PublishMessage};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use std::time::{Duration, Instant};

use super::{ClusterError, subject};

/// Longest a node tries to read or offer the secret: a stream just created may not answer
/// until its replicas have elected a leader.
const DEADLINE: Duration = Duration::from_secs(20);
/// Pause before a request that failed is made again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The cluster's token secret, published first if the cluster has none yet.
pub(super) async fn obtain(
    js: &jetstream::Context,
    stream: &Stream,
    cluster: &str,
) -> Result<Vec<u8>, ClusterError> {
    let subject = subject::secret_subject(cluster);
    let failed = |what: &str, error: String| {
        ClusterError::JetStream(format!("{what} the cluster's token secret: {error}"))
    };
    let deadline = Instant::now() + DEADLINE;
    let mut last_error = String::from("no answer");
    let mut pause = false;
    while Instant::now() < deadline {
        if std::mem::take(&mut pause) {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        // Read from the stream's leader, from its first message on the subject.
        let first = stream
            .raw_message_builder()
            .sequence(1)
            .next_by_subject(subject.clone())
            .send()
            .await;
        match first {
            Ok(message) => {
                return URL_SAFE_NO_PAD
                    .decode(message.payload.as_ref())
                    .ok()
                    .filter(|secret| secret.len() == crate::auth::TOKEN_SECRET_BYTES)
                    .ok_or_else(|| {
                        failed(
                            "reading",
                            format!("Seq {} is not a herald token secret", message.sequence),
                        )
                    });
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {}
            Err(error) => {
                last_error = format!("reading it: {error}");
                pause = true;
                continue;
            }
        }
        let fresh =
            crate::auth::new_token_secret().map_err(|error| failed("making", error.to_string()))?;
        let offer = PublishMessage::build()
            .payload(Bytes::from(URL_SAFE_NO_PAD.encode(fresh)))
            .expected_last_subject_sequence(0);
        let ack = match js.send_publish(subject.clone(), offer).await {
            Ok(ack) => ack.await,
            Err(error) => {
                last_error = format!("publishing it: {error}");
                pause = true;
                continue;
            }
        };
        match ack {
            // Stored, or another node's came first: either way the first one is read next.
            Ok(_) => {}
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {}
            Err(error) => {
                last_error = format!("publishing it: {error}");
                pause = true;
            }
        }
    }
    Err(failed(
        "obtaining",
        format!("none within {} s; last: {last_error}", DEADLINE.as_secs()),
    ))
}
