//! Startup: open storage, start the sequencer, then one named, pinned thread per core, each with
//! its own monoio runtime (io_uring, or epoll where io_uring is refused) and its own
//! `SO_REUSEPORT` listener on the same port.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::auth::AuthStore;
use crate::config::{Config, TlsMode};
use crate::log::EventLog;
use crate::sequencer::{self, Sequencer};
use crate::worker::{self, Core, Shared};

/// Pending connections the kernel queues per core listener.
const LISTEN_BACKLOG: i32 = 4096;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be prepared.
    #[error("data directory: {0}")]
    DataDir(#[from] crate::config::ConfigError),
    /// The sled database could not be opened.
    #[error("cannot open the database in {path}: {source}; is another herald running on this data directory?")]
    Database { path: String, source: sled::Error },
    /// The event log could not be opened.
    #[error("event log: {0}")]
    Log(#[from] crate::log::StoreError),
    /// Users and roles could not be opened.
    #[error("users and roles: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The object store could not be opened.
    #[error("objects: {0}")]
    Objects(#[from] crate::objects::ObjectError),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Start { what: String, source: std::io::Error },
}

/// Runs the server until the process is stopped.
pub fn run(config: Config) -> Result<(), ServerError> {
    crate::config::prepare_data_dir(&config.data_dir)?;
    let db_path = config.data_dir.join("db");
    let db = sled::Config::new()
        .path(&db_path)
        .open()
        .map_err(|source| ServerError::Database { path: db_path.display().to_string(), source })?;
    let log = EventLog::open(&db)?;
    let log_reader = log.reader();
    let (auth, default_password) = AuthStore::open(&db, config.admin_password.as_deref())?;
    let objects = Arc::new(crate::objects::ObjectStore::open(&db)?);
    if default_password {
        tracing::warn!(
            "the admin user rocketskates has DRP's default password r0cketsk8ts: anyone can log in; \
             start with --admin-password or change it with PUT /api/v3/users/rocketskates/password"
        );
    }
    let tls = crate::tls::server_config(&config.tls, &config.data_dir)?;
    let listeners = bind_listeners(config.listen, config.cores)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;

    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        (0..config.cores).map(|_| flume::bounded(sequencer::INBOX_DEPTH)).unzip();
    let (sequencer, publisher) = Sequencer::start(log, config.durability, config.retention.clone(), inboxes)
        .map_err(|source| ServerError::Start { what: "the log thread".into(), source })?;
    let driver = if monoio::utils::detect_uring() { "io_uring" } else { "epoll" };
    let shared = Arc::new(Shared {
        config: config.clone(),
        auth: Arc::new(auth),
        objects,
        publisher,
        log_status: sequencer.status.clone(),
        log_reader,
        tls,
        started: Instant::now(),
        default_password,
        driver,
    });
    let blocking = monoio::blocking::DefaultThreadPool::new(2);
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (id, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        let pin = core_ids.get(id % core_ids.len().max(1)).copied();
        let blocking = blocking.clone();
        let ready = ready_tx.clone();
        let thread = thread::Builder::new()
            .name(format!("herald-core-{id}"))
            .spawn(move || {
                if let Some(core_id) = pin {
                    core_affinity::set_for_current(core_id);
                }
                run_core(id, shared, listener, inbox, blocking, ready)
            })
            .map_err(|source| ServerError::Start { what: format!("core thread {id}"), source })?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(ServerError::Start { what: "a core runtime".into(), source }),
            Err(_) => break,
        }
    }
    let scheme = if config.tls == TlsMode::Plain { "http" } else { "https" };
    tracing::info!(driver, cores = config.cores, "listening on {scheme}://{addr}");
    for thread in threads {
        let _ = thread.join();
    }
    sequencer.stop();
    Ok(())
}

/// One listener per core, all on one port (port 0 picks it once, for every core).
fn bind_listeners(addr: SocketAddr, cores: usize) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::with_capacity(cores);
    let mut addr = addr;
    for _ in 0..cores {
        let listener = bind_one(addr).map_err(|source| ServerError::Listen { addr, source })?;
        if addr.port() == 0 {
            addr = listener
                .local_addr()
                .map_err(|source| ServerError::Listen { addr, source })?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn run_core(
    id: usize,
    shared: Arc<Shared>,
    listener: TcpListener,
    inbox: flume::Receiver<sequencer::Batch>,
    blocking: monoio::blocking::DefaultThreadPool,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(blocking))
        .build();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let core = Core::new(id, shared);
        monoio::spawn(core.clone().receive_batches(inbox));
        monoio::spawn(core.clone().sweep_forever());
        let _ = ready.send(Ok(()));
        worker::accept_forever(core, listener).await;
    });
}
