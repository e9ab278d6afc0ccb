//! Joining the cluster: the NATS connection and its state, the stream (created by the first
//! node, checked by the others), its limits kept equal to the retention settings, the Epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, stream};
use tokio::sync::watch;

use super::{ClusterError, subject};
use crate::config::{Cluster, Retention};

/// The version of what herald keeps in the stream (subjects, payloads); recorded in the
/// stream's description, and checked by every node that joins. 3: herald's own connection
/// events under `<cluster>.herald.>`. 4: users, roles and the token secret under
/// `<cluster>.accounts.>`.
const STREAM_SCHEMA: u32 = 4;
/// How long JetStream remembers a message id, so a publish sent again is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Wait for one JetStream answer (an ack, a stream request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a starting node keeps asking for the stream while JetStream does not answer in
/// time: several nodes creating a replicated stream at once on busy servers can take longer
/// than one request's wait.
const OPEN_PATIENCE: Duration = Duration::from_secs(15);
/// How often an idle NATS connection is pinged: a server that stopped answering is left for
/// another within about two of these.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How often the retention settings are compared with the stream's limits.
const LIMITS_EVERY: Duration = Duration::from_secs(1);

/// The state of the NATS connection, kept by the client's event callback.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Shared with [`ClusterView`], which answers `/api/v3/info` and marks stale reads.
    connected: Arc<AtomicBool>,
    down_since: Mutex<Option<Instant>>,
}

impl Link {
    /// Whether the connection is up.
    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The flag that says whether the connection is up, to share.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// How long the connection has been down (zero while it is up).
    pub(super) fn down_for(&self) -> Duration {
        self.down_since
            .lock()
            .ok()
            .and_then(|since| since.map(|s| s.elapsed()))
            .unwrap_or_default()
    }

    fn set(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::gauge!(crate::metrics::CLUSTER_NATS_CONNECTED).set(if up { 1.0 } else { 0.0 });
        if let Ok(mut since) = self.down_since.lock() {
            if up {
                *since = None;
            } else if since.is_none() {
                *since = Some(Instant::now());
            }
        }
    }
}

/// The stream's facts a node needs.
pub(super) struct Facts {
    pub epoch: String,
    pub first: u64,
    pub last: u64,
    pub replicas: usize,
}

/// Connects and opens (or creates) the stream.
pub(super) async fn join(
    settings: &Cluster,
    retention: &Mutex<Retention>,
    link: Arc<Link>,
) -> Result<
    (
        async_nats::Client,
        jetstream::Context,
        stream::Stream,
        Facts,
    ),
    ClusterError,
> {
    let client = connect(settings, link).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    let retention = retention
        .lock()
        .map(|r| r.clone())
        .unwrap_or(Retention::UNLIMITED);
    let asked_since = Instant::now();
    let (stream, facts) = loop {
        match open_stream(&js, settings, &retention).await {
            // async-nats keeps the kind of a request's failure inside each call's own error
            // type; the message is what they share.
            Err(ClusterError::JetStream(message))
                if message.contains("timed out") && asked_since.elapsed() < OPEN_PATIENCE =>
            {
                tracing::warn!(%message, "JetStream did not answer in time; asking again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            opened => break opened?,
        }
    };
    tracing::info!(
        stream = %stream_name(&settings.name),
        epoch = %facts.epoch,
        first_seq = facts.first,
        last_seq = facts.last,
        replicas = facts.replicas,
        node = %settings.node,
        "joined the cluster"
    );
    Ok((client, js, stream, facts))
}

async fn connect(settings: &Cluster, link: Arc<Link>) -> Result<async_nats::Client, ClusterError> {
    let urls = settings.nats.join(",");
    let callback_link = link.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("herald {}", settings.node))
        .ping_interval(PING_INTERVAL)
        .connection_timeout(REQUEST_TIMEOUT)
        // Never give up: a node keeps its websocket clients through a NATS outage.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        })
        .event_callback(move |event| {
            let link = callback_link.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        link.set(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the connection to NATS; reconnecting");
                        link.set(false);
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        });
    if let Some(creds) = &settings.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|cause| ClusterError::File {
                path: creds.clone(),
                cause,
            })?;
    }
    if let Some(ca) = &settings.tls_ca {
        if let Err(cause) = std::fs::metadata(ca) {
            return Err(ClusterError::File {
                path: ca.clone(),
                cause,
            });
        }
        options = options.add_root_certificates(ca.clone());
    }
    let addrs: Vec<async_nats::ServerAddr> = settings
        .nats
        .iter()
        .map(|url| url.parse())
        .collect::<Result<_, _>>()
        .map_err(|cause: std::io::Error| ClusterError::Connect {
            urls: urls.clone(),
            cause: cause.to_string(),
        })?;
    let client =
        options
            .connect(addrs.as_slice())
            .await
            .map_err(|cause| ClusterError::Connect {
                urls,
                cause: cause.to_string(),
            })?;
    link.set(true);
    Ok(client)
}

/// The stream's name for cluster `name`.
pub(super) fn stream_name(name: &str) -> String {
    format!("{name}-events")
}

/// What every node writes in the stream's description and expects to find there.
fn description(name: &str) -> String {
    format!("herald cluster {name}: the event log, schema {STREAM_SCHEMA}")
}

fn config(settings: &Cluster, retention: &Retention, replicas: usize) -> stream::Config {
    let mut config = stream::Config {
        name: stream_name(&settings.name),
        subjects: vec![
            format!("{}.>", subject::event_prefix(&settings.name)),
            format!("{}.>", subject::object_prefix(&settings.name)),
            format!("{}.>", subject::account_prefix(&settings.name)),
            format!("{}.>", subject::connection_prefix(&settings.name)),
        ],
        description: Some(description(&settings.name)),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        // Seq has no holes but those retention makes: no message is removed on its own.
        deny_delete: true,
        ..Default::default()
    };
    apply_limits(&mut config, retention);
    config
}

/// Sets the stream's limits from the retention settings (`-1`/zero: no limit).
fn apply_limits(config: &mut stream::Config, retention: &Retention) {
    config.max_messages = i64::try_from(retention.max_events).unwrap_or(-1);
    config.max_bytes = i64::try_from(retention.max_bytes).unwrap_or(-1);
    // JetStream counts age in nanoseconds in an i64: anything longer is no limit.
    config.max_age = if retention.max_age.as_nanos() < i64::MAX as u128 {
        retention.max_age
    } else {
        Duration::ZERO
    };
}

/// JetStream's error code of a failed stream lookup.
fn get_code(error: &jetstream::context::GetStreamError) -> Option<ErrorCode> {
    match error.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(error) => Some(error.error_code()),
        _ => None,
    }
}

/// JetStream's error code of a failed stream creation.
fn create_code(error: &jetstream::context::CreateStreamError) -> Option<ErrorCode> {
    match error.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(error) => Some(error.error_code()),
        _ => None,
    }
}

async fn open_stream(
    js: &jetstream::Context,
    settings: &Cluster,
    retention: &Retention,
) -> Result<(stream::Stream, Facts), ClusterError> {
    let name = stream_name(&settings.name);
    let mut stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error) if get_code(&error) == Some(ErrorCode::STREAM_NOT_FOUND) => {
            create_stream(js, settings, retention).await?
        }
        Err(error) => return Err(ClusterError::JetStream(format!("{name}: {error}"))),
    };
    let info = stream
        .info()
        .await
        .map_err(|error| ClusterError::JetStream(format!("{name}: {error}")))?
        .clone();
    let expected = description(&settings.name);
    if info.config.description.as_deref() != Some(expected.as_str()) {
        return Err(ClusterError::Incompatible {
            stream: name,
            difference: format!(
                "its description is {:?}, this node expects {expected:?}",
                info.config.description.unwrap_or_default()
            ),
        });
    }
    if let Some(wanted) = settings.replicas
        && wanted != info.config.num_replicas
    {
        return Err(ClusterError::Incompatible {
            stream: name,
            difference: format!(
                "it has {} replicas, this node asks for {wanted} (stream_replicas)",
                info.config.num_replicas
            ),
        });
    }
    let mut wanted = info.config.clone();
    apply_limits(&mut wanted, retention);
    if wanted != info.config {
        js.update_stream(wanted).await.map_err(|error| {
            ClusterError::JetStream(format!("updating {name}'s limits: {error}"))
        })?;
    }
    let facts = Facts {
        epoch: format!("{name}-{:x}", info.created.unix_timestamp_nanos()),
        first: info.state.first_sequence,
        last: info.state.last_sequence,
        replicas: info.config.num_replicas,
    };
    Ok((stream, facts))
}

/// Creates the stream: with the replicas asked for, or by default with 3, or as many as the
/// JetStream servers allow. A node that loses the race to create it opens the winner's.
async fn create_stream(
    js: &jetstream::Context,
    settings: &Cluster,
    retention: &Retention,
) -> Result<stream::Stream, ClusterError> {
    let name = stream_name(&settings.name);
    let tries: &[usize] = match settings.replicas {
        Some(ref n) => std::slice::from_ref(n),
        None => &[3, 2, 1],
    };
    let mut last_error = String::new();
    for &replicas in tries {
        match js
            .create_stream(config(settings, retention, replicas))
            .await
        {
            Ok(stream) => {
                tracing::info!(stream = %name, replicas, "created the cluster's stream");
                return Ok(stream);
            }
            // Made by another node meanwhile.
            Err(error) if create_code(&error) == Some(ErrorCode::STREAM_NAME_EXIST) => {
                return js
                    .get_stream(&name)
                    .await
                    .map_err(|error| ClusterError::JetStream(format!("{name}: {error}")));
            }
            // Not enough servers, or a server without clustering.
            Err(error)
                if matches!(
                    create_code(&error),
                    Some(
                        ErrorCode::INSUFFICIENT_RESOURCES
                            | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
                    )
                ) =>
            {
                last_error = error.to_string();
            }
            Err(error) => {
                return Err(ClusterError::JetStream(format!("creating {name}: {error}")));
            }
        }
    }
    Err(ClusterError::JetStream(format!(
        "creating {name} with {tries:?} replicas: {last_error}"
    )))
}

/// Keeps the stream's limits equal to the retention settings, which a SIGHUP may change, and
/// tells the copy where the stream now begins.
pub(super) async fn keep_limits(
    js: jetstream::Context,
    mut stream: stream::Stream,
    retention: Arc<Mutex<Retention>>,
    stream_first: Arc<std::sync::atomic::AtomicU64>,
    stream_last: Arc<std::sync::atomic::AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    // The limits were set at start; only a reload changes them again, so nodes started with
    // different settings do not undo each other every second.
    let mut applied = retention.lock().ok().map(|r| r.clone());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LIMITS_EVERY) => {}
            _ = stop.changed() => return,
        }
        let Ok(wanted) = retention.lock().map(|r| r.clone()) else {
            return;
        };
        let config = match stream.info().await {
            Ok(info) => {
                stream_first.fetch_max(info.state.first_sequence, Ordering::AcqRel);
                stream_last.fetch_max(info.state.last_sequence, Ordering::AcqRel);
                info.config.clone()
            }
            Err(error) => {
                tracing::debug!(%error, "reading the stream's limits failed; will retry");
                continue;
            }
        };
        if applied.as_ref() == Some(&wanted) {
            continue;
        }
        let mut updated = config.clone();
        apply_limits(&mut updated, &wanted);
        if updated != config {
            if let Err(error) = js.update_stream(updated).await {
                tracing::warn!(%error, "updating the stream's limits failed; will retry");
                continue;
            }
            tracing::info!("the stream's limits follow the new retention settings");
        }
        applied = Some(wanted);
    }
}
