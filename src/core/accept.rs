//! A core's startup and its accept loop: the core's own monoio runtime, its tasks (fan-out,
//! sweeper, queries, accept), and each accepted socket handed to the HTTP handler that startup
//! passed in, so the core depends on nothing above it.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent as _, AsyncWriteRent as _, AsyncWriteRentExt as _};
use monoio::net::{TcpListener, TcpStream};

use super::query::CoreQuery;
use super::{Core, ServerState};
use crate::sequencer::Batch;

/// A message from the main thread to a core.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CoreControl {
    /// Stop accepting, close every client, and finish by the deadline.
    Shutdown {
        /// When the core must be done.
        deadline: Instant,
    },
}

/// What one core receives from startup: its listener and the ends of its channels.
pub(crate) struct CoreInputs {
    /// The core's own `SO_REUSEPORT` listener.
    pub listener: std::net::TcpListener,
    /// Sequenced batches to fan out.
    pub inbox: flume::Receiver<Batch>,
    /// The main thread's orders.
    pub control: flume::Receiver<CoreControl>,
    /// Other cores' questions.
    pub queries: flume::Receiver<CoreQuery>,
}

/// Runs core `id` on the calling thread until it is told to shut down: its runtime, its tasks,
/// and `serve` for every accepted connection. Reports on `ready` once it accepts.
pub(crate) fn run<S, F>(
    id: usize,
    shared: Arc<ServerState>,
    inputs: CoreInputs,
    blocking: monoio::blocking::DefaultThreadPool,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
    serve: S,
) where
    S: Fn(Rc<Core>, TcpStream, SocketAddr, ConnectionSlot) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let CoreInputs {
        listener,
        inbox,
        control,
        queries,
    } = inputs;
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
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let listener_fd = listener.as_raw_fd();
        let core = Core::new(id, shared);
        monoio::spawn(core.clone().receive_batches(inbox));
        monoio::spawn(core.clone().sweep_forever());
        monoio::spawn(core.clone().answer_queries(queries));
        monoio::spawn(accept_forever(core.clone(), listener, serve));
        let _ = ready.send(Ok(()));
        if let Ok(CoreControl::Shutdown { deadline }) = control.recv_async().await {
            core.shut_down(listener_fd, deadline).await;
        }
    });
}

/// A client connection's place under `max_connections`, given back when it is dropped.
pub(crate) struct ConnectionSlot(Arc<ServerState>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot for one more connection, or `None` when `max_connections` are open.
fn take_slot(shared: &Arc<ServerState>) -> Option<ConnectionSlot> {
    let max = shared.config.limits.max_connections;
    let open = shared.open_connections.fetch_add(1, Ordering::Relaxed);
    let slot = ConnectionSlot(shared.clone());
    (open < max).then_some(slot)
}

/// What a connection beyond `max_connections` gets before it is closed (plain HTTP only: a
/// TLS client could not read it).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain\r\nContent-Length: 44\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
herald has too many connections; retry later";

/// Answers a connection beyond the limit and closes it, without holding up the accept loop.
async fn refuse(stream: TcpStream, remote: SocketAddr, plain: bool, max: usize) {
    if let Some(suppressed) = crate::logging::REFUSED_CONNECTIONS.admit() {
        tracing::warn!(
            remote = %remote,
            max_connections = max,
            suppressed = crate::logging::suppressed_field(suppressed),
            "connection refused: max_connections are open"
        );
    }
    if plain {
        let mut stream = stream;
        let answer = async {
            let (written, _) = stream.write_all(TOO_MANY_CONNECTIONS).await;
            if written.is_ok() {
                let _ = stream.shutdown().await;
                // Reads what the client sent, so closing does not reset the answer away.
                let (_, _) = stream.read(vec![0u8; 4096]).await;
            }
        };
        // A client that reads nothing must not keep the descriptor the limit protects.
        let _ = monoio::time::timeout(Duration::from_secs(1), answer).await;
    }
}

/// The accept loop of one core's listener.
async fn accept_forever<S, F>(core: Rc<Core>, listener: TcpListener, serve: S)
where
    S: Fn(Rc<Core>, TcpStream, SocketAddr, ConnectionSlot) -> F,
    F: Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok(_) if core.is_stopping() => return,
            Err(_) if core.is_stopping() => return,
            Ok((stream, remote)) => {
                metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED, "type" => "api")
                    .increment(1);
                let Some(slot) = take_slot(&core.shared) else {
                    let plain = core.shared.tls.is_none();
                    let max = core.shared.config.limits.max_connections;
                    monoio::spawn(refuse(stream, remote, plain, max));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(core.clone(), stream, remote, slot));
            }
            Err(error) => {
                // Out of descriptors or memory: back off instead of spinning, and say so at a
                // bounded rate.
                if let Some(suppressed) = crate::logging::ACCEPT_FAILURES.admit() {
                    tracing::warn!(
                        %error,
                        core = core.id,
                        suppressed = crate::logging::suppressed_field(suppressed),
                        "accept failed; retrying in 100 ms"
                    );
                }
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
