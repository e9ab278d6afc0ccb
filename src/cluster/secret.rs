//! The cluster's token secret, in a stream of its own, `<cluster>-secret`, that holds one
//! message for good: no age or count limit trims it (the event stream's retention would, and a
//! node starting after that would sign with a secret of its own), and the stream refuses a
//! second message, so nodes starting together agree on whichever JetStream stored first.

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, ErrorCode, message::PublishMessage};
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

/// The name of cluster `name`'s secret stream.
pub(crate) fn stream_name(name: &str) -> String {
    format!("{name}-secret")
}

/// One message, never trimmed, never replaced or deleted: the first stored is the secret.
fn config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: stream_name(name),
        description: Some(format!("herald cluster {name}: its token secret")),
        subjects: vec![subject::secret_subject(name)],
        max_messages: 1,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The cluster's token secret, published first if the cluster has none yet.
pub(super) async fn obtain(
    js: &jetstream::Context,
    cluster: &str,
    replicas: usize,
) -> Result<Vec<u8>, ClusterError> {
    let name = stream_name(cluster);
    let failed = |what: &str, error: String| {
        ClusterError::JetStream(format!(
            "{what} the cluster's token secret ({name}): {error}"
        ))
    };
    let deadline = Instant::now() + DEADLINE;
    let mut last_error = String::from("no answer");
    let mut pause = false;
    while Instant::now() < deadline {
        if std::mem::take(&mut pause) {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let made = js.create_stream(config(cluster, replicas)).await;
        let stream = match made {
            Ok(stream) => stream,
            // Made by another node, or by this one's earlier start.
            Err(error)
                if matches!(error.kind(), CreateStreamErrorKind::JetStream(ref e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                match js.get_stream(&name).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        last_error = format!("opening it: {error}");
                        pause = true;
                        continue;
                    }
                }
            }
            Err(error) => {
                last_error = format!("creating it: {error}");
                pause = true;
                continue;
            }
        };
        match stream
            .get_first_raw_message_by_subject(subject::secret_subject(cluster), 1)
            .await
        {
            Ok(message) => {
                return URL_SAFE_NO_PAD
                    .decode(message.payload.as_ref())
                    .ok()
                    .filter(|secret| secret.len() == crate::auth::TOKEN_SECRET_BYTES)
                    .ok_or_else(|| {
                        failed(
                            "reading",
                            format!("message {} is not a herald token secret", message.sequence),
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
        let offer = PublishMessage::build().payload(Bytes::from(URL_SAFE_NO_PAD.encode(fresh)));
        let ack = match js
            .send_publish(subject::secret_subject(cluster), offer)
            .await
        {
            Ok(ack) => ack.await,
            Err(error) => {
                last_error = format!("publishing it: {error}");
                pause = true;
                continue;
            }
        };
        if let Err(error) = ack {
            // A full stream refuses the offer when another node's secret came first; it is
            // read on the next turn.
            last_error = format!("publishing it: {error}");
            pause = true;
        }
    }
    Err(failed(
        "obtaining",
        format!("none within {} s; last: {last_error}", DEADLINE.as_secs()),
    ))
}
