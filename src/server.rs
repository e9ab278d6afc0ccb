//! Startup: open storage, start the sequencer, then one named, pinned thread per core, each with
//! its own monoio runtime (io_uring, or epoll where io_uring is refused) and its own
//! `SO_REUSEPORT` listener on the same port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::auth::{AdminPassword, AdminStart, AuthStore, DEFAULT_ADMIN_USER};
use crate::cluster::Node;
use crate::config::{Config, DEFAULT_LISTEN, DEFAULT_PASSWORD_LISTEN, TlsMode};
use crate::core::accept::{self, CoreControl, CoreInputs};
use crate::core::{Heartbeats, ServerState};
use crate::sequencer::{self, Sequencer};
use crate::store::EventLog;

/// Pending connections the kernel queues per core listener.
const LISTEN_BACKLOG: i32 = 4096;

/// Why the server could not start.
///
/// Each message is complete with its cause, and no variant exposes a `source`: a cause chain
/// printed with `{:#}` then says everything once. The wrapped errors already name their area.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be prepared.
    #[error(transparent)]
    DataDir(#[from] crate::config::ConfigError),
    /// The data directory is in use, or its log is missing.
    #[error(transparent)]
    Directory(#[from] crate::store::data_dir::DataDirError),
    /// The sled database could not be opened.
    #[error(
        "cannot open the database in {path}: {}",
        crate::store::sled_reason(cause)
    )]
    Database {
        /// The database directory.
        path: String,
        /// What sled reported.
        cause: sled::Error,
    },
    /// The event log could not be opened.
    #[error(transparent)]
    Log(#[from] crate::store::StoreError),
    /// The connection history could not be opened.
    #[error(transparent)]
    History(#[from] crate::core::history::HistoryError),
    /// Users and roles could not be opened.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The server's id could not be read or made.
    #[error("server id: {0}")]
    Info(#[from] crate::api::info::InfoError),
    /// The object store could not be opened.
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectError),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(crate::net::tls::TlsError),
    /// The password-verification threads could not be started.
    #[error("cannot start the password-verification threads: {0}")]
    Threads(std::io::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        cause: std::io::Error,
    },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}: {cause}")]
    Start {
        /// The thread or runtime.
        what: String,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The node could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The storage failed while serving; the log thread stopped (already logged there).
    #[error(transparent)]
    StorageFailed(#[from] sequencer::StorageFailed),
}

impl ServerError {
    /// The process exit code for this error: the storage failure's own, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::StorageFailed(failure) => failure.exit_code(),
            _ => 1,
        }
    }
}

impl From<crate::net::tls::TlsError> for ServerError {
    fn from(error: crate::net::tls::TlsError) -> ServerError {
        ServerError::Tls(error)
    }
}

/// Re-reads the configuration (from its file, flags and environment) on SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, crate::config::ConfigError>>;

/// Runs the server until SIGTERM or SIGINT, then stops gracefully: no new connections, every
/// websocket closed with 1001 `server shutdown`, the log flushed, all within the shutdown timeout.
pub fn run(config: Config, reload: Reload) -> Result<(), ServerError> {
    // Installed before anything starts, so a signal during startup is not lost.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|cause| ServerError::Start {
            what: "signal handling".into(),
            cause,
        })?;
    crate::config::prepare_data_dir(&config.data_dir)?;
    // Held until run returns, so a second herald on this directory is refused before it
    // touches anything.
    let _lock = crate::store::data_dir::lock(&config.data_dir)?;
    let db_path = config.data_dir.join("db");
    let db = crate::store::db::open(&db_path, config.cache_bytes).map_err(|cause| {
        ServerError::Database {
            path: db_path.display().to_string(),
            cause,
        }
    })?;
    // A cluster node's event log is the cluster's stream; the local one stays as it was.
    let log_source = match &config.cluster {
        Some(cluster) => LogSource::Cluster(cluster),
        None => LogSource::Local(Box::new(open_local_log(&config, &db_path, &db)?)),
    };
    let (history, crashed) = crate::core::history::History::open(&db)?;
    if crashed > 0 {
        tracing::warn!(
            connections = crashed,
            "the previous run ended without closing its connections; recorded them as 'server crashed'"
        );
    }
    start_history_trim(history.clone(), config.history.clone());
    let server_id = crate::api::info::open_server_id(&db)?;
    if !config.tls_san.is_empty() && config.tls != TlsMode::SelfSigned {
        tracing::warn!(
            "tls_san is ignored: it names the self-signed certificate, which herald does not \
             use with tls_cert or plain"
        );
    }
    let tls = crate::net::tls::server_config(&config.tls, &config.data_dir, &config.tls_san)?;
    let (query_txs, query_rxs): (Vec<_>, Vec<_>) =
        (0..config.cores).map(|_| flume::bounded(64)).unzip();
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..config.cores)
        .map(|_| flume::bounded(sequencer::INBOX_DEPTH))
        .unzip();
    // Installed before the log threads start, so their first gauges are kept.
    crate::metrics::mark_start();
    let metrics_handle = match crate::metrics::install() {
        Ok(handle) => {
            let upkeep = handle.clone();
            let _ = thread::Builder::new()
                .name("herald-metrics".into())
                .spawn(move || {
                    loop {
                        thread::sleep(crate::metrics::UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics are unavailable");
            None
        }
    };
    // A storage failure ends the signal wait below, so it reaches `main` with its exit code.
    let signals_handle = signals.handle();
    let on_failure = Box::new(move || signals_handle.close());
    let mut cluster_connections = None;
    let (sequencer, publisher, log_reader, objects, auth, admin) = match log_source {
        LogSource::Cluster(cluster) => {
            let table = Arc::new(crate::core::cluster_conns::ClusterConnections::open(
                &db,
                history.clone(),
                &cluster.node,
            )?);
            cluster_connections = Some(table.clone());
            let (node, publisher) = Node::start(
                cluster,
                &config.data_dir,
                config.cache_bytes,
                config.retention.clone(),
                inboxes,
                table,
                on_failure,
            )?;
            let reader = node.reader.clone();
            // A cluster node serves the cluster's objects, users and roles, as its copy of the
            // stream holds them.
            let objects = node.objects.clone();
            let auth = node.auth.clone();
            let admin = match cluster_admin(&node, &publisher, config.admin_password.as_deref()) {
                Ok(admin) => admin,
                Err(error) => {
                    node.stop();
                    return Err(error);
                }
            };
            (
                LogThread::Cluster(node),
                publisher,
                reader,
                objects,
                auth,
                admin,
            )
        }
        LogSource::Local(log) => {
            // A cluster node's users and roles are the cluster's, which its copy holds.
            let (auth, admin) = AuthStore::open(&db, config.admin_password.as_deref())?;
            let reader = log.reader();
            let (sequencer, publisher) = Sequencer::start(
                *log,
                config.durability,
                config.retention.clone(),
                inboxes,
                on_failure,
            )
            .map_err(|cause| ServerError::Start {
                what: "the log thread".into(),
                cause,
            })?;
            let objects = Arc::new(crate::objects::ObjectStore::open(&db)?);
            let auth = Arc::new(auth);
            (
                LogThread::Local(sequencer),
                publisher,
                reader,
                objects,
                auth,
                admin,
            )
        }
    };
    log_admin_start(admin);
    let listen = listen_address(&config, admin.default_password);
    let listeners = bind_listeners(listen, config.cores)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|cause| ServerError::Listen {
            addr: listen,
            cause,
        })?;
    let log_records = publisher.clone();
    crate::logging::publish_log_events(move |event| log_records.publish_log_record(event));
    let driver = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    let hash_pool = crate::auth::HashPool::new(crate::auth::HASH_THREADS, crate::auth::HASH_QUEUE)
        .map_err(ServerError::Threads)?;
    // The first job, so the decoy exists before any login is verified.
    let decoy_store = auth.clone();
    hash_pool.submit(move || decoy_store.prepare_decoy());
    let shared = Arc::new(ServerState {
        config: config.clone(),
        auth,
        objects,
        publisher,
        log_status: sequencer.status(),
        cluster: sequencer.cluster_view(),
        cluster_connections,
        log_reader,
        tls,
        started: Instant::now(),
        driver,
        core_stats: (0..config.cores)
            .map(|_| crate::metrics::CoreStats::default())
            .collect(),
        metrics: metrics_handle,
        history,
        next_conn_id: std::sync::atomic::AtomicU64::new(1),
        queries: query_txs,
        server_id,
        heartbeats: Heartbeats::new(config.cores),
        activity: Arc::default(),
        hash_pool,
        login_throttle: crate::auth::LoginThrottle::new(crate::auth::Budget {
            burst: config.limits.auth_failure_burst,
            per_second: f64::from(config.limits.auth_failures_per_minute) / 60.0,
        }),
        open_connections: std::sync::atomic::AtomicUsize::new(0),
    });
    let sampled = shared.clone();
    let sample = move || sampled.activity_totals();
    if let Err(error) = crate::metrics::activity::start(shared.activity.clone(), sample) {
        tracing::warn!(%error, "the console's activity charts are unavailable");
    }
    let blocking = monoio::blocking::DefaultThreadPool::new(2);
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
    let (controls, control_rxs): (Vec<_>, Vec<_>) =
        (0..config.cores).map(|_| flume::bounded(1)).unzip();
    let mut threads = Vec::new();
    let cores_io = listeners
        .into_iter()
        .zip(receivers)
        .zip(control_rxs)
        .zip(query_rxs);
    for (id, (((listener, inbox), control), queries)) in cores_io.enumerate() {
        let inputs = CoreInputs {
            listener,
            inbox,
            control,
            queries,
        };
        let shared = shared.clone();
        let pin = core_ids.get(id % core_ids.len().max(1)).copied();
        let blocking = blocking.clone();
        let ready = ready_tx.clone();
        let done = done_tx.clone();
        let thread = thread::Builder::new()
            .name(format!("herald-core-{id}"))
            .spawn(move || {
                if let Some(core_id) = pin {
                    core_affinity::set_for_current(core_id);
                }
                // The core serves HTTP through the handler handed to it: it does not import the routes.
                accept::run(id, shared, inputs, blocking, ready, crate::api::serve);
                let _ = done.send(id);
            })
            .map_err(|cause| ServerError::Start {
                what: format!("core thread {id}"),
                cause,
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    drop(done_tx);
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(cause)) => {
                return Err(ServerError::Start {
                    what: "a core runtime".into(),
                    cause,
                });
            }
            Err(_) => break,
        }
    }
    let scheme = if config.tls == TlsMode::Plain {
        "http"
    } else {
        "https"
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.data_dir.display(),
        durability = config.durability.as_str(),
        first_seq = shared.log_status.first_seq(),
        last_seq = shared.log_status.last_seq(),
        driver,
        cores = config.cores,
        "listening on {}",
        paste_urls(scheme, addr).join(", ")
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    start_watchdog(shared.clone());

    for signal in signals.forever() {
        if signal == SIGHUP {
            apply_reload(&shared, &reload);
            continue;
        }
        break;
    }
    if let Some(failure) = sequencer.failure() {
        // Nothing more may be answered or delivered: stop now, without the graceful close.
        return Err(failure.into());
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    let started = Instant::now();
    // Keep a slice of the timeout for the final flush.
    let deadline = started + config.shutdown_timeout.mul_f32(0.8);
    tracing::info!(
        timeout = %humantime::format_duration(config.shutdown_timeout),
        "stopping: closing clients and flushing the log"
    );
    for control in &controls {
        let _ = control.send(CoreControl::Shutdown { deadline });
    }
    let mut finished = 0;
    while finished < threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(_) => finished += 1,
            Err(_) => {
                tracing::warn!(
                    cores_left = threads.len() - finished,
                    "cores did not finish closing in time"
                );
                break;
            }
        }
    }
    sequencer.stop();
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}

/// Applies what SIGHUP can change without a restart and says what it could not.
fn apply_reload(shared: &ServerState, reload: &Reload) {
    let new = match reload() {
        Ok(new) => new,
        Err(error) => {
            tracing::error!(%error, "reload refused: the configuration is invalid; nothing changed");
            return;
        }
    };
    let old = &shared.config;
    match crate::logging::reload(&new.log_level, new.log_events_level) {
        Ok(()) => tracing::info!(
            log_level = %new.log_level,
            log_events_level = new.log_events_level.as_str(),
            "reloaded the log level"
        ),
        Err(error) => tracing::warn!(%error, "could not reload the log level"),
    }
    if new.retention != old.retention {
        shared.publisher.set_retention(new.retention.clone());
        let retention = &new.retention;
        tracing::info!(
            retain_events = retention.max_events,
            retain_age = %humantime::format_duration(retention.max_age),
            retain_bytes = retention.max_bytes,
            "reloaded retention"
        );
    }
    let needs_restart = new.needing_restart(old);
    if !needs_restart.is_empty() {
        tracing::warn!(
            settings = %needs_restart.join(", "),
            "these changed settings take effect only after a restart"
        );
    }
}

/// Where the event log comes from.
enum LogSource<'a> {
    /// The single node's log in its data directory.
    Local(Box<EventLog>),
    /// The stream of the cluster this node joins.
    Cluster(&'a crate::config::Cluster),
}

/// The thread that owns the event log: the sequencer of a single node, or a cluster node's
/// copy of the cluster's stream.
enum LogThread {
    Local(Sequencer),
    Cluster(Node),
}

impl LogThread {
    fn status(&self) -> Arc<crate::sequencer::LogStatus> {
        match self {
            LogThread::Local(sequencer) => sequencer.status.clone(),
            LogThread::Cluster(node) => node.status.clone(),
        }
    }

    fn cluster_view(&self) -> Option<Arc<crate::cluster::ClusterView>> {
        match self {
            LogThread::Local(_) => None,
            LogThread::Cluster(node) => Some(node.view.clone()),
        }
    }

    fn failure(&self) -> Option<sequencer::StorageFailed> {
        match self {
            LogThread::Local(sequencer) => sequencer.failure(),
            LogThread::Cluster(node) => node.failure(),
        }
    }

    fn stop(self) {
        match self {
            LogThread::Local(sequencer) => sequencer.stop(),
            LogThread::Cluster(node) => node.stop(),
        }
    }
}

/// Opens the single node's event log, after checking that the data directory still holds the
/// log it last held.
fn open_local_log(config: &Config, db_path: &Path, db: &sled::Db) -> Result<EventLog, ServerError> {
    let marker = crate::store::data_dir::read_epoch_marker(&config.data_dir)?;
    check_log_present(config, db_path, marker.as_deref(), db)?;
    let log = EventLog::open_synced(db, db_path)?;
    if marker.as_deref() != Some(log.epoch()) {
        crate::store::data_dir::write_epoch_marker(&config.data_dir, log.epoch())?;
    }
    Ok(log)
}

/// Refuses to replace a lost log with a new one unless `--reset` says so: the marker names the
/// log this data directory held, and an empty or missing database no longer holds it.
fn check_log_present(
    config: &Config,
    db_path: &Path,
    marker: Option<&str>,
    db: &sled::Db,
) -> Result<(), ServerError> {
    let stored = crate::store::log::stored_epoch(db)?;
    match (marker, stored.as_deref()) {
        (Some(epoch), None) if !config.reset => {
            Err(crate::store::data_dir::DataDirError::LogMissing {
                dir: config.data_dir.clone(),
                db: db_path.to_owned(),
                epoch: epoch.to_owned(),
            }
            .into())
        }
        (Some(epoch), None) => {
            tracing::warn!(
                lost_epoch = epoch,
                "--reset: the event log is gone, so herald starts a new, empty log with a new Epoch"
            );
            Ok(())
        }
        (Some(epoch), Some(held)) if epoch != held => {
            tracing::warn!(
                marker = epoch,
                epoch = held,
                "the database holds another log than this data directory last held (restored \
                 from another server?); serving the database's log"
            );
            Ok(())
        }
        _ => {
            if config.reset {
                tracing::info!("--reset: the event log is intact, so there is nothing to reset");
            }
            Ok(())
        }
    }
}

/// Applies the admin password to the cluster's `rocketskates` (see [`AdminPassword`]) as a
/// write of the cluster's, made only when the cluster's admin is absent or has another
/// password: nodes starting together with one password write it once, and the others find it.
fn cluster_admin(
    node: &Node,
    publisher: &sequencer::Publisher,
    password: Option<&str>,
) -> Result<AdminStart, ServerError> {
    use crate::cluster::write::{OnThread, Plan, Planned, Target, WriteFailed, write};
    let auth = node.auth.clone();
    let Some(versions) = auth.versions().cloned() else {
        return Err(cluster_admin_failed("the node's copy holds no accounts"));
    };
    let planned_start = Arc::new(std::sync::Mutex::new(None));
    let plan: Plan<crate::auth::AuthError> = {
        let planned_start = planned_start.clone();
        let password = password.map(str::to_owned);
        Arc::new(move || {
            let (start, change) = auth.plan_admin(password.as_deref())?;
            if let Ok(mut planned) = planned_start.lock() {
                *planned = Some(start);
            }
            Ok(change.map(|change| {
                let action = match start.password {
                    AdminPassword::Created => "create",
                    _ => "update",
                };
                let event = crate::wire::event::Event::new(
                    "users",
                    action,
                    DEFAULT_ADMIN_USER,
                    crate::wire::event::SYSTEM_PRINCIPAL,
                );
                Planned {
                    event: match change.user_view() {
                        Some(view) => event.with_object(&view),
                        None => event,
                    },
                    answer: serde_json::Value::Null,
                    private: Some(change.to_header()),
                }
            }))
        })
    };
    let to = Target {
        publisher,
        status: &node.status,
        versions: &versions,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|cause| ServerError::Start {
            what: "the admin user's write".into(),
            cause,
        })?;
    match runtime.block_on(write(&OnThread, to, "users", DEFAULT_ADMIN_USER, plan)) {
        Ok(_) => {}
        Err(WriteFailed::Plan(error)) => return Err(error.into()),
        Err(WriteFailed::Publish(error)) => return Err(cluster_admin_failed(&error.to_string())),
        Err(WriteFailed::NotReadBack(seq)) => {
            return Err(cluster_admin_failed(&format!(
                "stored as Seq {seq}, but not read back in time"
            )));
        }
        Err(WriteFailed::Contended) => {
            return Err(cluster_admin_failed("other nodes kept writing it"));
        }
        Err(WriteFailed::Copy(error)) => return Err(cluster_admin_failed(&error)),
    }
    let start = planned_start.lock().ok().and_then(|start| *start);
    start.ok_or_else(|| cluster_admin_failed("it was never planned"))
}

fn cluster_admin_failed(why: &str) -> ServerError {
    ServerError::Cluster(crate::cluster::ClusterError::JetStream(format!(
        "writing the cluster's admin user {DEFAULT_ADMIN_USER}: {why}"
    )))
}

/// Says in the log what starting did to the admin user and its password.
fn log_admin_start(admin: AdminStart) {
    let user = DEFAULT_ADMIN_USER;
    match admin.password {
        AdminPassword::Created if admin.default_password => {
            tracing::info!("created the admin user {user} with DRP's default password");
        }
        AdminPassword::Created => {
            tracing::info!("created the admin user {user} with the configured admin password");
        }
        AdminPassword::Set => tracing::info!(
            "set the admin user {user}'s password to the configured admin password; its \
             previous password and tokens no longer work"
        ),
        AdminPassword::Unchanged => {
            tracing::info!("the admin user {user} has the configured admin password (unchanged)");
        }
        AdminPassword::NotConfigured => tracing::info!(
            "no admin password configured; the admin user {user} keeps its stored password"
        ),
        AdminPassword::Absent => tracing::info!(
            "the admin user {user} was deleted; configure an admin password to create it again"
        ),
    }
    if admin.default_password {
        tracing::warn!(
            "the admin user {user} has DRP's default password r0cketsk8ts: anyone who can \
             connect can log in; set another with --admin-password (applied at every start) or \
             PUT /api/v3/users/{user}/password"
        );
    }
}

/// The configured address, or loopback while the admin has DRP's default password and no
/// address was configured, so the well-known password is not offered to the network.
fn listen_address(config: &Config, default_password: bool) -> SocketAddr {
    if default_password && !config.listen_explicit {
        tracing::warn!(
            "listening on {DEFAULT_PASSWORD_LISTEN} only, because the admin has DRP's default \
             password; set an admin password to listen on {DEFAULT_LISTEN}, or choose the \
             address with --listen"
        );
        return DEFAULT_PASSWORD_LISTEN;
    }
    config.listen
}

/// Trims the connection history by count and age in the background.
fn start_history_trim(
    history: crate::core::history::History,
    retention: crate::config::HistoryRetention,
) {
    let _ = thread::Builder::new()
        .name("herald-history".into())
        .spawn(move || {
            loop {
                if let Err(error) = history.trim(&retention, std::time::SystemTime::now()) {
                    tracing::warn!(%error, "trimming the connection history failed; will retry");
                }
                thread::sleep(crate::core::history::HISTORY_TRIM_EVERY);
            }
        });
}

/// Pings systemd's watchdog while every core's sweeper keeps running.
fn start_watchdog(shared: Arc<ServerState>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let _ = thread::Builder::new()
        .name("herald-watchdog".into())
        .spawn(move || {
            loop {
                thread::sleep(period / 2);
                if shared.heartbeats.all_within(period) {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
            }
        });
}

/// URLs of `addr` that a user can paste: an unspecified address (`0.0.0.0`, `::`) becomes
/// loopback followed by this machine's interface addresses, or its host name when they cannot
/// be listed.
fn paste_urls(scheme: &str, addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let url = |ip: IpAddr| format!("{scheme}://{}", SocketAddr::new(ip, port));
    let ip = addr.ip();
    if !ip.is_unspecified() {
        return vec![url(ip)];
    }
    let loopback = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let mut urls = vec![url(loopback)];
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => urls.extend(
            interfaces
                .iter()
                // An IPv4 listener serves IPv4 only; link-local IPv6 needs a zone no URL carries.
                .filter(|i| !i.is_loopback() && !i.is_link_local())
                .filter(|i| ip.is_ipv6() || i.ip().is_ipv4())
                .map(|i| url(i.ip())),
        ),
        Err(_) => {
            urls.extend(crate::config::host_name().map(|host| format!("{scheme}://{host}:{port}")))
        }
    }
    urls.dedup();
    urls
}

/// One listener per core, all on one port (port 0 picks it once, for every core).
///
/// The first core binds without `SO_REUSEPORT`, so the bind fails with "address already in use"
/// when any other socket holds the port, even one of another process that set `SO_REUSEPORT`
/// itself; it sets the option only before `listen`, which lets the other cores join its group.
fn bind_listeners(addr: SocketAddr, cores: usize) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::with_capacity(cores);
    let mut addr = addr;
    for core in 0..cores {
        let group = if core == 0 {
            ReusePort::AfterBind
        } else {
            ReusePort::BeforeBind
        };
        let listener =
            bind_one(addr, group).map_err(|cause| ServerError::Listen { addr, cause })?;
        if addr.port() == 0 {
            addr = listener
                .local_addr()
                .map_err(|cause| ServerError::Listen { addr, cause })?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// When a core's socket sets `SO_REUSEPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReusePort {
    /// After `bind`: the bind claims the port alone, then the socket opens its group.
    AfterBind,
    /// Before `bind`: the socket joins the group the first core opened.
    BeforeBind,
}

fn bind_one(addr: SocketAddr, reuse_port: ReusePort) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted herald bind while its old connections sit in TIME_WAIT; Linux never lets
    // it share a port with a listening socket.
    socket.set_reuse_address(true)?;
    if reuse_port == ReusePort::BeforeBind {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if reuse_port == ReusePort::AfterBind {
        socket.set_reuse_port(true)?;
    }
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
