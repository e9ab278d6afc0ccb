//! One websocket client: its outbound queue with a byte budget, its filters, its reader task
//! (the only task that reads the socket) and its writer task (one write per wake-up, however
//! many events were queued meanwhile).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::Core;
use super::view::{self, ConnectionView};
use crate::auth::Claims;
use crate::metrics::CoreStats;
use crate::net::notify::Notify;
use crate::net::outbound::{OutChunk, OutQueue};
use crate::net::transport::{self, ReadSide, Shutdown, WriteSide};
use crate::sequencer::Batch;
use crate::wire::command::{self, Command};
use crate::wire::event::{self, EncodedEvent};
use crate::wire::filter::Filter;
use crate::wire::websocket::{self, FrameReader, Message, OpCode};

/// Why a connection closed, as recorded in its history and counted in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed, or its socket ended.
    ClientClosed,
    /// The connection fell a whole outbound budget behind.
    SlowConsumer,
    /// The client did not answer pings in time.
    PingTimeout,
    /// The server is stopping.
    ServerShutdown,
    /// A cluster node found events gone from the stream before it could deliver them.
    StreamGap,
    /// The client broke the websocket protocol.
    Protocol(String),
}

impl CloseReason {
    /// The reason as `docs/protocol.md` §6 spells it.
    pub(crate) fn text(&self) -> String {
        match self {
            CloseReason::ClientClosed => "client closed".into(),
            CloseReason::SlowConsumer => "slow consumer".into(),
            CloseReason::PingTimeout => "ping timeout".into(),
            CloseReason::ServerShutdown => "server shutdown".into(),
            CloseReason::StreamGap => "stream gap".into(),
            CloseReason::Protocol(what) => format!("protocol error: {what}"),
        }
    }

    /// The label the close is counted under in metrics (protocol errors without their detail).
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client closed",
            CloseReason::SlowConsumer => crate::metrics::SLOW_CONSUMER,
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ServerShutdown => "server shutdown",
            CloseReason::StreamGap => "stream gap",
            CloseReason::Protocol(_) => "protocol error",
        }
    }
}

/// How the connection is being closed: the reason and the close frame still to send.
struct Closing {
    reason: CloseReason,
    /// Close code and reason to send, or `None` when the close frame went out already.
    frame: Option<(u16, String)>,
    since: Instant,
}

/// The state of one websocket connection, shared by its tasks and its core's fan-out.
pub(crate) struct WsConn {
    /// Slot in the core's connection table (also its id in the filter index).
    pub slot: u32,
    /// Who authenticated, e.g. `user:rocketskates`.
    pub principal: String,
    /// What the principal may see, fixed at connect time.
    pub claims: Arc<Claims>,
    superuser: bool,
    /// The peer's address.
    pub remote: SocketAddr,
    /// When the connection authenticated.
    pub created: SystemTime,
    /// When its credentials expire (Unix seconds); `None` for a password.
    pub expires: Option<u64>,
    fd: RawFd,
    budget: usize,
    out: RefCell<OutQueue<Batch>>,
    out_last_seq: Cell<u64>,
    inflight: Cell<usize>,
    /// Seq of the last event handed completely to the kernel.
    pub last_sent_seq: Cell<u64>,
    wake: Rc<Notify>,
    drained: Notify,
    closing: RefCell<Option<Closing>>,
    /// Registered filters, by text.
    pub filters: RefCell<Vec<Filter>>,
    /// The fan-out's per-event stamp, for at-most-once delivery.
    pub stamp: Cell<u64>,
    /// Last time anything arrived from the client.
    pub last_heard: Cell<Instant>,
    last_ping: Cell<Instant>,
    /// Events written to the socket.
    pub events_sent: Cell<u64>,
    /// Bytes written to the socket.
    pub bytes_sent: Cell<u64>,
    queued_events: Cell<u64>,
    oldest_durable: Cell<Option<Instant>>,
    core: Rc<Core>,
}

impl WsConn {
    /// The connection as the connections API shows it.
    pub(crate) fn view(&self) -> ConnectionView {
        ConnectionView {
            remote_addr: self.remote.to_string(),
            principal: self.principal.clone(),
            create_time: humantime::format_rfc3339_nanos(self.created).to_string(),
            expires_at: view::expires_at(self.expires),
            kind: "websocket".to_owned(),
            node: self.core.shared.cluster.as_ref().map(|c| c.node.clone()),
            filters: self
                .filters
                .borrow()
                .iter()
                .map(|f| f.text().to_owned())
                .collect(),
            events_sent: self.events_sent.get(),
            bytes_sent: self.bytes_sent.get(),
            last_seq: self.last_sent_seq.get(),
            close_time: None,
            close_reason: None,
        }
    }
}

impl WsConn {
    /// Queues live event `index` of `batch` by reference to its shared frame; returns false
    /// when that would exceed the budget, in which case the connection is now closing as a slow
    /// consumer.
    pub(crate) fn queue_live(&self, batch: &Rc<Batch>, index: usize) -> bool {
        let Some(event) = batch.events.get(index) else {
            return true;
        };
        if self.oldest_durable.get().is_none() {
            // For the delivery-lag metric.
            self.oldest_durable.set(Some(batch.durable_at));
        }
        self.enqueue(event, |out| out.push_shared(batch, index))
    }

    /// Queues a copy of an event's frame (a replayed event, which no other connection shares);
    /// returns false as [`WsConn::queue_live`] does.
    pub(crate) fn queue_event(&self, event: &EncodedEvent) -> bool {
        self.enqueue(event, |out| out.push_own(event.frame()))
    }

    fn enqueue(&self, event: &EncodedEvent, push: impl FnOnce(&mut OutQueue<Batch>)) -> bool {
        if self.closing.borrow().is_some() {
            return true;
        }
        if !self.superuser && !self.claims.may_see(&event.ty, &event.action, &event.key) {
            return true;
        }
        let mut out = self.out.borrow_mut();
        if out.len() + self.inflight.get() + event.frame().len() > self.budget {
            out.clear();
            drop(out);
            self.begin_close(CloseReason::SlowConsumer, 4008, String::new());
            return false;
        }
        let was_empty = out.is_empty();
        push(&mut out);
        drop(out);
        self.out_last_seq.set(event.seq);
        self.queued_events.set(self.queued_events.get() + 1);
        if was_empty {
            self.wake.notify();
        }
        true
    }

    /// Queues a frame the server itself sends (replies, pings, pongs), outside the budget.
    pub(crate) fn queue_control(&self, frame: &[u8]) {
        if self.closing.borrow().is_some() {
            return;
        }
        let mut out = self.out.borrow_mut();
        // A client that sends commands or pings but never reads the answers is as far behind
        // as one that does not read events: the same budget bounds both.
        if out.len() + self.inflight.get() + frame.len() > self.budget {
            out.clear();
            drop(out);
            self.begin_close(CloseReason::SlowConsumer, 4008, String::new());
            return;
        }
        out.push_own(frame);
        drop(out);
        self.wake.notify();
    }

    /// Starts closing: queued events are dropped (the client resumes by replay) and the writer
    /// sends the close frame. The first reason wins.
    pub(crate) fn begin_close(&self, reason: CloseReason, code: u16, text: String) {
        let mut closing = self.closing.borrow_mut();
        if closing.is_some() {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            self.out.borrow_mut().clear();
        }
        *closing = Some(Closing {
            reason,
            frame: Some((code, text)),
            since: Instant::now(),
        });
        drop(closing);
        self.wake.notify();
    }

    /// Bytes queued or being written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out.borrow().len() + self.inflight.get()
    }

    /// The outbound budget in bytes.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Notified each time the writer finishes a write.
    pub(crate) fn drained(&self) -> &Notify {
        &self.drained
    }

    /// After a `replay` reply: what the client is owed now starts at `cursor`, so a close
    /// before the replayed events are written says to resume from there.
    pub(crate) fn restart_resume_point(&self, cursor: u64) {
        self.out_last_seq.set(cursor);
    }

    /// Whether the connection is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// The close reason, once closing.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.closing.borrow().as_ref().map(|c| c.reason.clone())
    }

    /// For the core's sweeper: pings when idle, closes when silent too long, and ends a close
    /// that the client does not complete within the grace period.
    pub(crate) fn sweep(&self, now: Instant, limits: &crate::config::Limits) {
        if let Some(closing) = self.closing.borrow().as_ref() {
            if now.duration_since(closing.since) > CLOSE_GRACE {
                transport::shutdown(self.fd, Shutdown::Both);
            }
            return;
        }
        if now.duration_since(self.last_heard.get()) > limits.ping_timeout {
            self.begin_close(CloseReason::PingTimeout, 1001, "ping timeout".into());
        } else if now.duration_since(self.last_ping.get()) >= limits.ping_interval {
            self.last_ping.set(now);
            self.queue_control(&websocket::encode_frame(OpCode::Ping, b""));
        }
    }
}

/// Most pieces a connection's spare write chunk keeps room for between writes.
const SPARE_KEEP_PIECES: usize = 64;

/// How long a closing connection may take to flush its close frame before its socket is cut.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs an upgraded connection until it closes; the caller has already sent the 101.
pub(crate) async fn run(
    core: Rc<Core>,
    read: ReadSide,
    write: WriteSide,
    fd: RawFd,
    remote: SocketAddr,
    identity: crate::auth::Identity,
    leftover: Vec<u8>,
) {
    let limits = &core.shared.config.limits;
    let now = Instant::now();
    let wake = read.tls_wakeup();
    let superuser = identity.claims.is_superuser();
    let conn = core.add_conn(|slot| WsConn {
        slot,
        principal: identity.principal.clone(),
        claims: identity.claims.clone(),
        superuser,
        remote,
        created: SystemTime::now(),
        expires: identity.expires,
        fd,
        budget: limits.outbound_budget_bytes,
        out: RefCell::new(OutQueue::default()),
        // Nothing before the connection existed is owed to it: a slow-consumer close before its
        // first event says to resume from the live position, not from the start of the log.
        out_last_seq: Cell::new(core.last_delivered.get()),
        inflight: Cell::new(0),
        last_sent_seq: Cell::new(core.last_delivered.get()),
        wake,
        drained: Notify::default(),
        closing: RefCell::new(None),
        filters: RefCell::new(Vec::new()),
        stamp: Cell::new(0),
        last_heard: Cell::new(now),
        last_ping: Cell::new(now),
        events_sent: Cell::new(0),
        bytes_sent: Cell::new(0),
        queued_events: Cell::new(0),
        oldest_durable: Cell::new(None),
        core: core.clone(),
    });
    let (id, stored) = core.open_connection(conn.view()).await;
    if core.shared.cluster.is_none()
        && let Some(stored) = stored
    {
        // Commands are read once the create is stored (and so handed to the cores): in a storm
        // of connects each client then gets the creates of those after it, not of all before.
        let _ = stored.recv_async().await;
    }
    if core.is_stopping() {
        // Upgraded while the server began to stop: close like every other websocket.
        conn.begin_close(CloseReason::ServerShutdown, 1001, "server shutdown".into());
    }
    let writer = monoio::spawn(write_loop(conn.clone(), write));
    read_loop(&core, &conn, read, leftover).await;
    if !conn.is_closing() {
        conn.begin_close(CloseReason::ClientClosed, 1000, String::new());
    }
    core.remove_filters(&conn);
    let _ = writer.await;
    let reason = conn.close_reason().unwrap_or(CloseReason::ClientClosed);
    core.close_connection(id, conn.view(), reason.text()).await;
    core.remove_conn(&conn);
}

async fn read_loop(core: &Rc<Core>, conn: &Rc<WsConn>, mut read: ReadSide, mut buf: Vec<u8>) {
    let limits = &core.shared.config.limits;
    let mut frames = FrameReader::new(limits.max_command_bytes);
    loop {
        loop {
            match frames.next_message(&mut buf) {
                Ok(None) => break,
                Ok(Some(message)) => {
                    conn.last_heard.set(Instant::now());
                    if !handle_message(core, conn, message) {
                        return;
                    }
                }
                Err(error) => {
                    let what = error.to_string();
                    conn.begin_close(
                        CloseReason::Protocol(what.clone()),
                        error.close_code(),
                        what,
                    );
                    return;
                }
            }
        }
        match read.read_into(&mut buf).await {
            Ok(0) | Err(_) => {
                // The socket ended: whatever is queued cannot reach the client any more.
                transport::shutdown(conn.fd, Shutdown::Both);
                return;
            }
            Ok(_) => conn.last_heard.set(Instant::now()),
        }
        if conn.is_closing() {
            // Keep reading only to see the client's close; stop once the socket ends.
            continue;
        }
    }
}

/// Handles one client message; false when the connection is done reading.
fn handle_message(core: &Rc<Core>, conn: &Rc<WsConn>, message: Message) -> bool {
    match message {
        Message::Text(text) => {
            if !conn.is_closing() {
                handle_command(core, conn, &text);
            }
            true
        }
        Message::Binary { .. } => {
            if !conn.is_closing() {
                conn.queue_control(&error_reply(
                    "",
                    "binary frames are not commands; send text",
                ));
            }
            true
        }
        Message::Ping(payload) => {
            conn.queue_control(&websocket::encode_frame(OpCode::Pong, &payload));
            true
        }
        Message::Pong(_) => true,
        Message::Close(close) => {
            let code = close.map(|(code, _)| code).unwrap_or(1000);
            conn.begin_close(CloseReason::ClientClosed, code, String::new());
            false
        }
    }
}

fn error_reply(key: &str, message: &str) -> Vec<u8> {
    let object = serde_json::json!({ "Messages": [message], "Code": 400 }).to_string();
    event::reply_frame("error", key, Some(&object))
}

fn handle_command(core: &Rc<Core>, conn: &Rc<WsConn>, text: &str) {
    let (command, argument) = match command::parse(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            conn.queue_control(&error_reply(command::error_key(text), &error.to_string()));
            return;
        }
    };
    match command {
        Command::Register(filter) => {
            let mut filters = conn.filters.borrow_mut();
            if filters.iter().any(|f| f.text() == filter.text()) {
                conn.queue_control(&event::reply_frame("register", argument, None));
                return;
            }
            let max = core.shared.config.limits.max_filters;
            if filters.len() >= max {
                let message =
                    format!("this connection already holds {max} filters, the most allowed");
                conn.queue_control(&error_reply(command::error_key(text), &message));
                return;
            }
            // The reply is queued before the filter can match, so it precedes every event it affects.
            conn.queue_control(&event::reply_frame("register", argument, None));
            core.index.borrow_mut().insert(conn.slot, &filter);
            CoreStats::add(&core.stats().filters, 1);
            filters.push(filter);
        }
        Command::Deregister(filter) => {
            conn.queue_control(&event::reply_frame("deregister", argument, None));
            let mut filters = conn.filters.borrow_mut();
            if let Some(pos) = filters.iter().position(|f| f.text() == filter.text()) {
                let removed = filters.remove(pos);
                core.index.borrow_mut().remove(conn.slot, &removed);
                CoreStats::sub(&core.stats().filters, 1);
            }
        }
        Command::Replay(replay) => core.start_replay(conn, argument, replay),
    }
}

async fn write_loop(conn: Rc<WsConn>, write: WriteSide) {
    write_until_closed(&conn, write).await;
    // A replay waiting for the writer to drain must not wait for a writer that has ended.
    conn.drained.notify();
}

async fn write_until_closed(conn: &Rc<WsConn>, mut write: WriteSide) {
    let mut spare = OutChunk::<Batch>::default();
    loop {
        let chunk = {
            let mut out = conn.out.borrow_mut();
            if out.is_empty() {
                None
            } else {
                let mut chunk = std::mem::take(&mut spare);
                out.take_into(&mut chunk);
                Some(chunk)
            }
        };
        let Some(chunk) = chunk else {
            if write.flush_tls_records().await.is_err() {
                break;
            }
            let close = conn
                .closing
                .borrow_mut()
                .as_mut()
                .map(|c| (c.reason.clone(), c.frame.take()));
            match close {
                Some((reason, Some((code, text)))) => {
                    let text = if reason == CloseReason::SlowConsumer {
                        let resume_after = conn.last_sent_seq.get();
                        if let Some(suppressed) = crate::logging::SLOW_CONSUMERS.admit() {
                            tracing::info!(
                                remote = %conn.remote,
                                principal = %conn.principal,
                                outbound_budget = conn.budget,
                                resume_after,
                                suppressed = crate::logging::suppressed_field(suppressed),
                                "closed a slow consumer"
                            );
                        }
                        format!("slow consumer; resume after {resume_after}")
                    } else if matches!(reason, CloseReason::ServerShutdown | CloseReason::StreamGap)
                    {
                        // The client reconnects (to another node, in a cluster) and replays from here.
                        format!("{text}; resume after {}", conn.last_sent_seq.get())
                    } else {
                        text
                    };
                    let frame = OutChunk::<Batch>::from_bytes(websocket::close_frame(code, &text));
                    let (_, _) = write.write_chunk(frame).await;
                    write.close_tls().await;
                    transport::shutdown(conn.fd, Shutdown::Both);
                    break;
                }
                Some((_, None)) => break,
                None => conn.wake.notified().await,
            }
            continue;
        };
        let last_seq = conn.out_last_seq.get();
        let events = conn.queued_events.replace(0);
        let oldest = conn.oldest_durable.take();
        let len = chunk.len();
        conn.inflight.set(len);
        let (result, mut written) = write.write_chunk(chunk).await;
        // Releases the shared batches now, not at the next write.
        written.clear();
        conn.inflight.set(0);
        conn.drained.notify();
        // Keep room for the next write, but not the room a burst grew.
        spare = if written.capacity() > SPARE_KEEP_PIECES {
            OutChunk::default()
        } else {
            written
        };
        if result.is_err() {
            conn.begin_close(CloseReason::ClientClosed, 1000, String::new());
            transport::shutdown(conn.fd, Shutdown::Both);
            break;
        }
        conn.last_sent_seq.set(last_seq);
        conn.events_sent.set(conn.events_sent.get() + events);
        conn.bytes_sent.set(conn.bytes_sent.get() + len as u64);
        let stats = conn.core.stats();
        CoreStats::add(&stats.events_delivered, events);
        CoreStats::add(&stats.bytes_delivered, len as u64);
        if let Some(durable_at) = oldest {
            let lag = durable_at.elapsed();
            crate::metrics::delivery_lag().record(lag.as_secs_f64());
            CoreStats::add(&stats.delivery_lag_micros, lag.as_micros() as u64);
            CoreStats::add(&stats.delivery_lag_writes, 1);
        }
    }
}
