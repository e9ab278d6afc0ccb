//! Subscribers: a few threads, each multiplexing thousands of sockets on one mio poll.
//!
//! mio rather than an async runtime: a subscriber here is a state machine of a few bytes that
//! only reacts to readiness, so there is no task, waker or per-socket read buffer to pay for.
//! Each thread reads every socket into one shared scratch buffer and keeps only the tail of an
//! incomplete frame per connection, which keeps 20,000 idle clients cheap and leaves the CPU
//! to the server being measured.

use std::io::{self, Read, Write};
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;

use crate::event::{self, MarkReader};
use crate::nats;
use crate::ws::{self, OpCode};

/// Measurement phases an event can be tagged with (see `publish::mode`).
pub(crate) const PHASES: usize = 3;
/// Bytes each thread reads per `read` call.
const SCRATCH_BYTES: usize = 256 * 1024;
/// How often a thread recomputes its slowest full-stream subscriber for the publishers' window.
const FLOW_EVERY: Duration = Duration::from_millis(1);
/// Distinct errors kept for the report.
const ERRORS_KEPT: usize = 5;

/// Which server's protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// herald (and DRP): `register FILTER`, one JSON event per text frame.
    Herald,
    /// NATS over websocket: `CONNECT`, `SUB`, `MSG`.
    Nats,
}

/// Where and how to connect.
pub(crate) struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// TLS client setup, or `None` for plain.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A complete `Authorization` value, or empty.
    pub authorization: String,
    /// Where [`Role::Failover`] subscribers go when this server dies.
    pub failover: Option<Arc<Failover>>,
}

/// The failover workload's shared facts: where a subscriber moves when its server dies, and
/// what it must receive there to count as caught up.
pub(crate) struct Failover {
    /// The surviving node.
    pub to: SocketAddr,
    /// The stream's `Epoch`, sent with `replay`.
    pub epoch: String,
    /// When the first node was killed ([`event::now_ns`]); 0 before.
    pub killed_ns: AtomicU64,
    /// The highest `Seq` acknowledged when the node was killed: a moved subscriber that has
    /// received it (and everything before, in order) is caught up.
    pub target_seq: AtomicU64,
}

/// What a subscriber is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Receives every event: paces the publishers' window.
    Stream,
    /// Receives the events of its own key.
    Keyed,
    /// Replays the log after `after` and finishes after `events` events.
    Replay {
        /// The `replay` argument.
        after: u64,
        /// Events it expects.
        events: u64,
    },
    /// Receives every event; when its server dies, moves to [`Endpoint::failover`]'s node and
    /// replays from the last `Seq` it received.
    Failover,
    /// Receives everything, connecting with many others at once: counts the
    /// `connections.create` events of the ones after it (herald) and checks their `Seq` order.
    Storm,
}

/// One subscriber to open.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// A herald filter or a NATS subject.
    pub subscription: String,
    /// What it is for.
    pub role: Role,
}

/// A thread's live counters, read by the controller and the publishers.
#[derive(Default)]
pub(crate) struct Progress {
    /// Subscribers whose subscription is acknowledged.
    pub ready: AtomicU64,
    /// Subscribers that failed before being ready.
    pub failed: AtomicU64,
    /// Ready subscribers that were closed.
    pub dropped: AtomicU64,
    /// Benchmark events received, per phase.
    pub delivered: [AtomicU64; PHASES],
    /// When the last event of each phase arrived ([`event::now_ns`]).
    pub last_ns: [AtomicU64; PHASES],
    /// Events received by this thread's slowest full-stream subscriber (`u64::MAX` if none).
    pub min_stream: AtomicU64,
    /// Replaying subscribers that received everything they expected.
    pub replays_done: AtomicU64,
    /// Failover subscribers whose `replay` on the surviving node was answered.
    pub moved: AtomicU64,
    /// Moved failover subscribers that received the failover's target `Seq`.
    pub caught_up: AtomicU64,
    /// `connections.create` events received by storm subscribers.
    pub created: AtomicU64,
    /// When the last of them arrived ([`event::now_ns`]).
    pub created_last_ns: AtomicU64,
}

/// What a thread measured, handed back when it stops.
pub(crate) struct Report {
    /// Publish-to-receive latency per phase, in nanoseconds.
    pub latency: Vec<Histogram<u64>>,
    /// Time from a replaying subscriber's connect to its last expected event, or from the kill
    /// to a moved failover subscriber's catch-up, in nanoseconds.
    pub replay: Histogram<u64>,
    /// The first few distinct errors, with how often each happened.
    pub errors: Vec<(String, u64)>,
    /// Replayed events whose `Seq` was not the one after the previous.
    pub out_of_order: u64,
    /// `replay` replies with `Recovered` false.
    pub not_recovered: u64,
}

/// The controller's handle on a thread.
pub(crate) struct Subscribers {
    /// Per-thread counters.
    pub progress: Vec<Arc<Progress>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Report>>,
}

impl Subscribers {
    /// Opens `plans` spread over `threads` threads, at most `concurrency` handshakes at once in total.
    pub(crate) fn start(
        endpoint: &Arc<Endpoint>,
        plans: Vec<Plan>,
        threads: usize,
        concurrency: usize,
    ) -> Subscribers {
        let threads = threads.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut shares: Vec<Vec<Plan>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, plan) in plans.into_iter().enumerate() {
            shares[i % threads].push(plan);
        }
        let mut progress = Vec::new();
        let mut handles = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            let p = Arc::new(Progress {
                min_stream: AtomicU64::new(u64::MAX),
                ..Progress::default()
            });
            progress.push(p.clone());
            let (endpoint, stop) = (endpoint.clone(), stop.clone());
            let limit = (concurrency / threads).max(1);
            let handle = thread::Builder::new()
                .name(format!("loadgen-sub-{i}"))
                .spawn(move || Worker::new(endpoint, share, p, limit).run(&stop))
                .unwrap_or_else(|e| panic!("cannot start a subscriber thread: {e}"));
            handles.push(handle);
        }
        Subscribers {
            progress,
            stop,
            threads: handles,
        }
    }

    /// Sum of one counter over all threads.
    pub(crate) fn sum(&self, counter: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.progress
            .iter()
            .map(|p| counter(p).load(Ordering::Acquire))
            .sum()
    }

    /// Subscribers that failed or were dropped so far.
    pub(crate) fn broken(&self) -> u64 {
        self.sum(|p| &p.failed) + self.sum(|p| &p.dropped)
    }

    /// Waits, polling every `poll`, until all `count` subscribers are ready (registered) and
    /// hands them back; stops them and says why when one fails or `deadline` passes first.
    pub(crate) fn await_ready(
        self,
        count: u64,
        deadline: Instant,
        poll: Duration,
    ) -> Result<Subscribers, String> {
        loop {
            let failed = self.broken();
            if failed > 0 {
                let report = self.stop();
                return Err(format!(
                    "{failed} of {count} subscribers failed: {:?}",
                    report.errors
                ));
            }
            let ready = self.sum(|p| &p.ready);
            if ready >= count {
                return Ok(self);
            }
            if Instant::now() > deadline {
                let report = self.stop();
                return Err(format!(
                    "only {ready} of {count} subscribers were ready in time: {:?}",
                    report.errors
                ));
            }
            thread::sleep(poll);
        }
    }

    /// Latest arrival of an event of `phase` over all threads.
    pub(crate) fn last_ns(&self, phase: usize) -> u64 {
        self.progress
            .iter()
            .map(|p| p.last_ns[phase].load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }

    /// Closes every connection and merges what the threads measured.
    pub(crate) fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Release);
        let mut merged = Report {
            latency: (0..PHASES).map(|_| crate::stats::histogram()).collect(),
            replay: crate::stats::histogram(),
            errors: Vec::new(),
            out_of_order: 0,
            not_recovered: 0,
        };
        for handle in std::mem::take(&mut self.threads) {
            let Ok(report) = handle.join() else {
                merged
                    .errors
                    .push(("a subscriber thread panicked".into(), 1));
                continue;
            };
            for (into, from) in merged.latency.iter_mut().zip(&report.latency) {
                crate::stats::merge(into, from);
            }
            crate::stats::merge(&mut merged.replay, &report.replay);
            for (error, count) in report.errors {
                match merged.errors.iter_mut().find(|(e, _)| *e == error) {
                    Some((_, c)) => *c += count,
                    None => merged.errors.push((error, count)),
                }
            }
            merged.out_of_order += report.out_of_order;
            merged.not_recovered += report.not_recovered;
        }
        merged
    }
}

impl Drop for Subscribers {
    /// Threads never outlive their handle, even when a run ends early.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Upgrading,
    Subscribing,
    Ready,
}

/// One subscriber socket.
struct Conn {
    stream: TcpStream,
    tls: Option<ClientConnection>,
    state: State,
    plan: usize,
    /// Bytes of an incomplete frame (or of the upgrade answer).
    partial: Vec<u8>,
    /// NATS: bytes of an incomplete protocol operation.
    nats_partial: Vec<u8>,
    /// Plain: bytes not yet written.
    out: Vec<u8>,
    received: u64,
    last_seq: u64,
    started_ns: u64,
    done: bool,
    /// A failover subscriber that moved to the surviving node.
    moved: bool,
    /// Moved, and the `replay` not answered yet: what arrives live before the answer comes
    /// again after it, so it is not counted.
    awaiting_replay: bool,
}

impl Conn {
    /// Reads plaintext into `scratch`; `Ok(0)` when the server closed.
    fn read_plain(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.stream.read(scratch);
        };
        loop {
            match tls.reader().read(scratch) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
            flush_tls(tls, &mut self.stream)?;
        }
    }

    /// Queues plaintext to send.
    fn queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => {
                self.out.extend_from_slice(bytes);
                Ok(())
            }
            Some(tls) => tls.writer().write_all(bytes),
        }
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            return flush_tls(tls, &mut self.stream);
        }
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.out.drain(..written);
        Ok(())
    }

    fn queue_frame(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        ws::encode_masked(&mut frame, opcode, payload);
        self.queue(&frame)
    }
}

fn flush_tls(tls: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Per-thread counters, copied to [`Progress`] once per poll round.
struct Tally {
    ready: u64,
    failed: u64,
    dropped: u64,
    delivered: [u64; PHASES],
    last_ns: [u64; PHASES],
    replays_done: u64,
    moved: u64,
    caught_up: u64,
    created: u64,
    created_last_ns: u64,
    latency: Vec<Histogram<u64>>,
    replay: Histogram<u64>,
    errors: Vec<(String, u64)>,
    out_of_order: u64,
    not_recovered: u64,
}

impl Tally {
    fn error(&mut self, error: String) {
        if let Some((_, count)) = self.errors.iter_mut().find(|(e, _)| *e == error) {
            *count += 1;
        } else if self.errors.len() < ERRORS_KEPT {
            self.errors.push((error, 1));
        }
    }
}

struct Worker {
    endpoint: Arc<Endpoint>,
    plans: Vec<Plan>,
    progress: Arc<Progress>,
    concurrency: usize,
    marks: MarkReader,
    tally: Tally,
}

impl Worker {
    fn new(
        endpoint: Arc<Endpoint>,
        plans: Vec<Plan>,
        progress: Arc<Progress>,
        concurrency: usize,
    ) -> Worker {
        Worker {
            endpoint,
            plans,
            progress,
            concurrency,
            marks: MarkReader::new(),
            tally: Tally {
                ready: 0,
                failed: 0,
                dropped: 0,
                delivered: [0; PHASES],
                last_ns: [0; PHASES],
                replays_done: 0,
                moved: 0,
                caught_up: 0,
                created: 0,
                created_last_ns: 0,
                latency: (0..PHASES).map(|_| crate::stats::histogram()).collect(),
                replay: crate::stats::histogram(),
                errors: Vec::new(),
                out_of_order: 0,
                not_recovered: 0,
            },
        }
    }

    fn run(mut self, stop: &AtomicBool) -> Report {
        let mut poll = match Poll::new() {
            Ok(poll) => poll,
            Err(error) => {
                self.tally.failed = self.plans.len() as u64;
                self.tally.error(format!("cannot create a poll: {error}"));
                self.publish_progress();
                return self.report();
            }
        };
        let mut events = Events::with_capacity(4096);
        let mut conns: Vec<Option<Conn>> = (0..self.plans.len()).map(|_| None).collect();
        let stream_conns: Vec<usize> = (0..self.plans.len())
            .filter(|&i| self.plans[i].role == Role::Stream)
            .collect();
        let mut scratch = vec![0u8; SCRATCH_BYTES];
        let mut next_plan = 0;
        let mut pending = 0usize;
        let mut last_flow = Instant::now();
        while !stop.load(Ordering::Acquire) {
            while pending < self.concurrency && next_plan < self.plans.len() {
                match self.open(&poll, next_plan) {
                    Ok(conn) => {
                        conns[next_plan] = Some(conn);
                        pending += 1;
                    }
                    Err(error) => {
                        self.tally.failed += 1;
                        self.tally.error(format!("connect: {error}"));
                    }
                }
                next_plan += 1;
            }
            if let Err(error) = poll.poll(&mut events, Some(Duration::from_millis(5))) {
                if error.kind() != io::ErrorKind::Interrupted {
                    self.tally.error(format!("poll: {error}"));
                }
                continue;
            }
            for ready in events.iter() {
                let i = ready.token().0;
                let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                let was_ready = conn.state == State::Ready;
                match self.service(conn, &mut scratch) {
                    Ok(()) => {
                        if !was_ready && conn.state == State::Ready {
                            pending -= 1;
                        }
                    }
                    Err(_) if self.may_move(conn) => {
                        let _ = poll.registry().deregister(&mut conn.stream);
                        if let Err(error) = self.reopen(&poll, conn) {
                            self.tally.dropped += 1;
                            self.tally.error(format!("moving: {error}"));
                            conns[i] = None;
                        } else {
                            // Counted as pending again until the surviving node answers.
                            pending += 1;
                        }
                    }
                    Err(error) => {
                        if conn.state == State::Ready {
                            self.tally.dropped += 1;
                        } else {
                            self.tally.failed += 1;
                            pending -= 1;
                        }
                        self.tally.error(error);
                        let _ = poll.registry().deregister(&mut conn.stream);
                        conns[i] = None;
                    }
                }
            }
            if last_flow.elapsed() >= FLOW_EVERY {
                last_flow = Instant::now();
                let slowest = stream_conns
                    .iter()
                    .filter_map(|&i| conns[i].as_ref())
                    .filter(|c| c.state == State::Ready)
                    .map(|c| c.received)
                    .min()
                    .unwrap_or(u64::MAX);
                self.progress.min_stream.store(slowest, Ordering::Release);
            }
            self.publish_progress();
        }
        drop(conns);
        self.report()
    }

    fn publish_progress(&self) {
        let p = &self.progress;
        let t = &self.tally;
        p.ready.store(t.ready, Ordering::Release);
        p.failed.store(t.failed, Ordering::Release);
        p.dropped.store(t.dropped, Ordering::Release);
        p.replays_done.store(t.replays_done, Ordering::Release);
        p.moved.store(t.moved, Ordering::Release);
        p.caught_up.store(t.caught_up, Ordering::Release);
        p.created.store(t.created, Ordering::Release);
        p.created_last_ns
            .store(t.created_last_ns, Ordering::Release);
        for phase in 0..PHASES {
            p.delivered[phase].store(t.delivered[phase], Ordering::Release);
            p.last_ns[phase].store(t.last_ns[phase], Ordering::Release);
        }
    }

    fn report(self) -> Report {
        Report {
            latency: self.tally.latency,
            replay: self.tally.replay,
            errors: self.tally.errors,
            out_of_order: self.tally.out_of_order,
            not_recovered: self.tally.not_recovered,
        }
    }

    /// A failover subscriber whose server went away after the kill, not yet moved.
    fn may_move(&self, conn: &Conn) -> bool {
        self.plans[conn.plan].role == Role::Failover
            && !conn.moved
            && conn.state == State::Ready
            && self
                .endpoint
                .failover
                .as_ref()
                .is_some_and(|f| f.killed_ns.load(Ordering::Acquire) > 0)
    }

    /// Reconnects `conn` to the surviving node; `subscribe` then replays from its last `Seq`.
    fn reopen(&self, poll: &Poll, conn: &mut Conn) -> io::Result<()> {
        let Some(failover) = &self.endpoint.failover else {
            return Err(io::Error::other("no node to move to"));
        };
        let mut stream = TcpStream::connect(failover.to)?;
        poll.registry().register(
            &mut stream,
            Token(conn.plan),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if let Some(config) = &self.endpoint.tls {
            conn.tls = Some(
                ClientConnection::new(config.clone(), crate::tls::server_name())
                    .map_err(io::Error::other)?,
            );
        }
        conn.stream = stream;
        conn.state = State::Connecting;
        conn.moved = true;
        conn.awaiting_replay = true;
        conn.partial.clear();
        conn.out.clear();
        Ok(())
    }

    fn open(&self, poll: &Poll, plan: usize) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(self.endpoint.addr)?;
        poll.registry().register(
            &mut stream,
            Token(plan),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = match &self.endpoint.tls {
            None => None,
            Some(config) => Some(
                ClientConnection::new(config.clone(), crate::tls::server_name())
                    .map_err(io::Error::other)?,
            ),
        };
        Ok(Conn {
            stream,
            tls,
            state: State::Connecting,
            plan,
            partial: Vec::new(),
            nats_partial: Vec::new(),
            out: Vec::new(),
            received: 0,
            last_seq: 0,
            started_ns: event::now_ns(),
            done: false,
            moved: false,
            awaiting_replay: false,
        })
    }

    /// Reacts to readiness: finishes the connect, writes what is queued, reads until the
    /// socket would block (edge-triggered), and writes what reading queued.
    fn service(&mut self, conn: &mut Conn, scratch: &mut [u8]) -> Result<(), String> {
        if conn.state == State::Connecting {
            if let Ok(Some(error)) | Err(error) = conn.stream.take_error() {
                return Err(format!("connect: {error}"));
            }
            match conn.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect: {e}")),
            }
            let _ = conn.stream.set_nodelay(true);
            conn.state = State::Upgrading;
            let request = ws::upgrade_request(
                &self.endpoint.addr.to_string(),
                "/api/v3/ws",
                &self.endpoint.authorization,
            );
            conn.queue(&request).map_err(|e| format!("write: {e}"))?;
        }
        conn.flush().map_err(|e| format!("write: {e}"))?;
        loop {
            match conn.read_plain(scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    let now = event::now_ns();
                    self.feed(conn, &scratch[..n], now)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        conn.flush().map_err(|e| format!("write: {e}"))
    }

    fn feed(&mut self, conn: &mut Conn, data: &[u8], now: u64) -> Result<(), String> {
        if conn.state == State::Upgrading {
            conn.partial.extend_from_slice(data);
            let Some(head) = ws::upgrade_response(&conn.partial)? else {
                return Ok(());
            };
            conn.partial.drain(..head);
            conn.state = State::Subscribing;
            self.subscribe(conn).map_err(|e| format!("write: {e}"))?;
            let buf = mem::take(&mut conn.partial);
            let used = self.frames(conn, &buf, now)?;
            conn.partial = buf;
            conn.partial.drain(..used);
            return Ok(());
        }
        if conn.partial.is_empty() {
            let used = self.frames(conn, data, now)?;
            conn.partial.extend_from_slice(&data[used..]);
        } else {
            conn.partial.extend_from_slice(data);
            let buf = mem::take(&mut conn.partial);
            let used = self.frames(conn, &buf, now)?;
            conn.partial = buf;
            conn.partial.drain(..used);
        }
        Ok(())
    }

    fn subscribe(&self, conn: &mut Conn) -> io::Result<()> {
        let plan = &self.plans[conn.plan];
        match self.endpoint.protocol {
            Protocol::Herald => {
                conn.queue_frame(
                    OpCode::Text,
                    format!("register {}", plan.subscription).as_bytes(),
                )?;
                if let Role::Replay { after, .. } = plan.role {
                    conn.last_seq = after;
                    conn.queue_frame(OpCode::Text, format!("replay {after}").as_bytes())?;
                }
                if conn.moved
                    && let Some(failover) = &self.endpoint.failover
                {
                    let command = format!("replay {} {}", conn.last_seq, failover.epoch);
                    conn.queue_frame(OpCode::Text, command.as_bytes())?;
                }
            }
            Protocol::Nats => {
                let mut hello = nats::CONNECT.to_vec();
                if let Role::Replay { .. } = plan.role {
                    // The subscription is this client's inbox: JetStream delivers there.
                    hello.extend_from_slice(&nats::replay_commands(&plan.subscription));
                } else {
                    hello.extend_from_slice(format!("SUB {} 1\r\n", plan.subscription).as_bytes());
                }
                hello.extend_from_slice(b"PING\r\n");
                conn.queue_frame(OpCode::Binary, &hello)?;
            }
        }
        Ok(())
    }

    /// Handles every complete frame at the start of `buf`; answers the bytes used.
    fn frames(&mut self, conn: &mut Conn, buf: &[u8], now: u64) -> Result<usize, String> {
        let mut at = 0;
        while let Some(frame) = ws::parse_frame(&buf[at..])? {
            let payload = &buf[at + frame.payload.start..at + frame.payload.end];
            match frame.opcode {
                OpCode::Ping => conn
                    .queue_frame(OpCode::Pong, payload)
                    .map_err(|e| format!("write: {e}"))?,
                OpCode::Pong => {}
                OpCode::Close => return Err(close_text(payload)),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    match self.endpoint.protocol {
                        Protocol::Herald => self.herald_message(conn, payload, now)?,
                        Protocol::Nats => self.nats_bytes(conn, payload, now)?,
                    }
                }
            }
            at += frame.len;
        }
        Ok(at)
    }

    fn event(&mut self, conn: &mut Conn, mark: event::Mark, now: u64) {
        let phase = mark.phase.min(PHASES - 1);
        let _ = self.tally.latency[phase].record(now.saturating_sub(mark.sent_ns).max(1_000));
        self.tally.delivered[phase] += 1;
        self.tally.last_ns[phase] = now;
        conn.received += 1;
    }

    /// Counts a replaying client done once it has every event it expects.
    fn replay_progress(&mut self, conn: &mut Conn, now: u64) {
        if let Role::Replay { events, .. } = self.plans[conn.plan].role
            && !conn.done
            && conn.received >= events
        {
            conn.done = true;
            self.tally.replays_done += 1;
            let _ = self
                .tally
                .replay
                .record(now.saturating_sub(conn.started_ns).max(1_000));
        }
    }

    /// Counts a moved failover subscriber caught up once it received the target `Seq`.
    fn failover_progress(&mut self, conn: &mut Conn, now: u64) {
        let Some(failover) = &self.endpoint.failover else {
            return;
        };
        if conn.moved && !conn.done && conn.last_seq >= failover.target_seq.load(Ordering::Acquire)
        {
            conn.done = true;
            self.tally.caught_up += 1;
            let killed = failover.killed_ns.load(Ordering::Acquire);
            let _ = self
                .tally
                .replay
                .record(now.saturating_sub(killed).max(1_000));
        }
    }

    fn herald_message(&mut self, conn: &mut Conn, payload: &[u8], now: u64) -> Result<(), String> {
        if let Some(mark) = self.marks.read(payload) {
            if conn.awaiting_replay {
                return Ok(());
            }
            self.event(conn, mark, now);
            let role = self.plans[conn.plan].role;
            if matches!(role, Role::Replay { .. } | Role::Failover) {
                match event::herald_seq(payload) {
                    // Other events in the log leave gaps that the filter skips; order is what counts.
                    Some(seq) if seq > conn.last_seq => conn.last_seq = seq,
                    Some(seq) => {
                        self.tally.out_of_order += 1;
                        conn.last_seq = seq;
                    }
                    None => self.tally.out_of_order += 1,
                }
            }
            self.replay_progress(conn, now);
            self.failover_progress(conn, now);
            return Ok(());
        }
        let has = |needle: &[u8]| memchr::memmem::find(payload, needle).is_some();
        if self.plans[conn.plan].role == Role::Storm
            && has(b"\"Type\":\"connections\",\"Action\":\"create\"")
        {
            match event::herald_seq(payload) {
                Some(seq) if seq > conn.last_seq => conn.last_seq = seq,
                _ => self.tally.out_of_order += 1,
            }
            self.tally.created += 1;
            self.tally.created_last_ns = now;
            return Ok(());
        }
        if has(b"\"Type\":\"websocket\",\"Action\":\"register\"") {
            if conn.state == State::Subscribing {
                conn.state = State::Ready;
                if !conn.moved {
                    self.tally.ready += 1;
                }
            }
        } else if has(b"\"Type\":\"websocket\",\"Action\":\"replay\"") {
            if !has(b"\"Recovered\":true") {
                self.tally.not_recovered += 1;
            }
            if conn.moved {
                conn.awaiting_replay = false;
                self.tally.moved += 1;
                // It may have had the target already before its node died.
                self.failover_progress(conn, now);
            }
        } else if has(b"\"Type\":\"websocket\",\"Action\":\"error\"") {
            return Err(format!(
                "herald refused a command: {}",
                String::from_utf8_lossy(payload)
            ));
        }
        Ok(())
    }

    fn nats_bytes(&mut self, conn: &mut Conn, payload: &[u8], now: u64) -> Result<(), String> {
        if conn.nats_partial.is_empty() {
            let used = self.nats_ops(conn, payload, now)?;
            conn.nats_partial.extend_from_slice(&payload[used..]);
        } else {
            conn.nats_partial.extend_from_slice(payload);
            let buf = mem::take(&mut conn.nats_partial);
            let used = self.nats_ops(conn, &buf, now)?;
            conn.nats_partial = buf;
            conn.nats_partial.drain(..used);
        }
        Ok(())
    }

    fn nats_ops(&mut self, conn: &mut Conn, buf: &[u8], now: u64) -> Result<usize, String> {
        let mut at = 0;
        while let Some((op, len)) = nats::next_op(&buf[at..])? {
            match op {
                nats::Op::Msg(payload) => {
                    if let Some(mark) = self.marks.read(payload) {
                        self.event(conn, mark, now);
                        self.replay_progress(conn, now);
                    } else if memchr::memmem::find(payload, b"\"error\"").is_some() {
                        return Err(format!("NATS: {}", String::from_utf8_lossy(payload)));
                    }
                }
                nats::Op::Ping => conn
                    .queue_frame(OpCode::Binary, b"PONG\r\n")
                    .map_err(|e| format!("write: {e}"))?,
                nats::Op::Pong => {
                    if conn.state == State::Subscribing {
                        conn.state = State::Ready;
                        self.tally.ready += 1;
                    }
                }
                nats::Op::Err(text) => {
                    return Err(format!("NATS: -ERR{}", String::from_utf8_lossy(text)));
                }
                nats::Op::Other => {}
            }
            at += len;
        }
        Ok(at)
    }
}

/// The close frame's code and reason, as an error for the report.
fn close_text(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!(
            "the server closed with {}: {}",
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason)
        ),
        _ => "the server closed".into(),
    }
}
