//! Publishers: a few blocking threads, each with one connection and one batch in flight.
//!
//! herald gets `POST /api/v3/events` with a JSON array, acknowledged by `204` and `Herald-Seq`;
//! NATS gets one websocket frame of `PUB`s followed by `PING`, acknowledged by its `PONG` (the
//! server has processed every `PUB` before it answers). Both acknowledge a whole batch at once.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clients::{Endpoint, PHASES, Progress, Protocol};
use crate::event::{self, EventTemplate, KEY_BYTES};
use crate::nats;
use crate::ws::{self, OpCode};

/// What the publishers are doing; a phase number (below [`PHASES`]) means publishing in it.
pub(crate) mod mode {
    /// Publish into the log before anyone listens, up to [`super::Control::limit`] events.
    pub(crate) const PREFILL: usize = 0;
    /// As fast as the slowest full-stream subscriber keeps up, within the window.
    pub(crate) const MAX: usize = 1;
    /// At the configured rate.
    pub(crate) const PACED: usize = 2;
    /// Not publishing.
    pub(crate) const PAUSE: usize = 8;
    /// Stop the threads.
    pub(crate) const EXIT: usize = 9;
}

/// Shared between the controller and the publisher threads.
pub(crate) struct Control {
    /// One of [`mode`].
    pub mode: AtomicUsize,
    /// Events per second across all publishers in [`mode::PACED`].
    pub rate: AtomicU64,
    /// Events that may be published but not yet received by every full-stream subscriber.
    pub window: u64,
    /// Publishers between confirming the mode and settling their batch.
    pub busy: AtomicUsize,
    /// Events handed to a connection so far (the next event's ordinal).
    pub sent: AtomicU64,
    /// Events acknowledged, per phase.
    pub acked: [AtomicU64; PHASES],
    /// Events whose batch failed.
    pub failed: AtomicU64,
    /// [`mode::PREFILL`] stops once this many events were sent.
    pub limit: AtomicU64,
    /// Highest `Herald-Seq` seen.
    pub last_seq: AtomicU64,
    /// Publisher threads sharing [`Control::rate`].
    pub publishers: usize,
    /// Subscriber progress, for the window.
    pub flow: Vec<Arc<Progress>>,
    /// The first failure, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Control {
    /// Paused publishers with the given window, watching `flow` for it.
    pub(crate) fn new(publishers: usize, window: u64, flow: Vec<Arc<Progress>>) -> Arc<Control> {
        Arc::new(Control {
            mode: AtomicUsize::new(mode::PAUSE),
            rate: AtomicU64::new(0),
            window,
            busy: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            acked: Default::default(),
            failed: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            publishers: publishers.max(1),
            flow,
            first_error: Mutex::new(None),
        })
    }

    /// Switches every publisher to `next` and waits (up to `timeout`) until no batch of the
    /// previous mode is still in flight.
    pub(crate) fn switch(&self, next: usize, timeout: Duration) {
        self.mode.store(next, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// Events acknowledged in all phases, plus those that failed.
    pub(crate) fn settled(&self) -> u64 {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .sum::<u64>()
            + self.failed.load(Ordering::Acquire)
    }

    fn in_flight(&self) -> u64 {
        let slowest = self
            .flow
            .iter()
            .map(|p| p.min_stream.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        self.sent.load(Ordering::Acquire).saturating_sub(slowest)
    }

    fn fail(&self, events: u64, error: String) {
        self.failed.fetch_add(events, Ordering::AcqRel);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }
}

/// What one publisher thread measured.
pub(crate) struct PublisherReport {
    /// Batch round trips (send to acknowledgement), in nanoseconds, per phase.
    pub ack: Vec<Histogram<u64>>,
}

/// The shape of every batch.
#[derive(Clone)]
pub(crate) struct BatchShape {
    /// Events per batch.
    pub batch: usize,
    /// Events per batch in the paced phase.
    pub paced_batch: usize,
    /// One event.
    pub template: EventTemplate,
    /// Keys, used round-robin by event ordinal.
    pub keys: Arc<Vec<[u8; KEY_BYTES]>>,
}

/// Starts the publisher threads; each connects first, and reports a connect failure.
pub(crate) fn spawn(
    endpoint: &Arc<Endpoint>,
    shape: &BatchShape,
    control: &Arc<Control>,
) -> Vec<JoinHandle<PublisherReport>> {
    (0..control.publishers)
        .map(|i| {
            let (endpoint, shape, control) = (endpoint.clone(), shape.clone(), control.clone());
            thread::Builder::new()
                .name(format!("loadgen-pub-{i}"))
                .spawn(move || run(i, &endpoint, &shape, &control))
                .unwrap_or_else(|e| panic!("cannot start a publisher thread: {e}"))
        })
        .collect()
}

fn histograms() -> Vec<Histogram<u64>> {
    (0..PHASES).map(|_| crate::stats::histogram()).collect()
}

fn run(
    index: usize,
    endpoint: &Endpoint,
    shape: &BatchShape,
    control: &Control,
) -> PublisherReport {
    let mut report = PublisherReport { ack: histograms() };
    let mut conn = match Connection::open(endpoint, shape) {
        Ok(conn) => conn,
        Err(error) => {
            control.fail(0, format!("publisher could not connect: {error}"));
            return report;
        }
    };
    let mut next_due: Option<Instant> = None;
    loop {
        let phase = control.mode.load(Ordering::Acquire);
        let per_batch = if phase == mode::PACED {
            shape.paced_batch
        } else {
            shape.batch
        } as u64;
        match phase {
            mode::EXIT => break,
            mode::PAUSE => {
                next_due = None;
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            mode::MAX if control.in_flight() + per_batch > control.window => {
                thread::sleep(Duration::from_micros(50));
                continue;
            }
            mode::PACED => {
                let rate =
                    control.rate.load(Ordering::Acquire).max(1) as f64 / control.publishers as f64;
                let interval = Duration::from_secs_f64(per_batch as f64 / rate);
                let now = Instant::now();
                let due = match next_due {
                    // Fell more than a second behind: the server cannot keep this rate; do not
                    // burst to catch up.
                    Some(due) if now.duration_since(due) > Duration::from_secs(1) => now,
                    Some(due) => due,
                    // Spread the publishers over one interval instead of sending together.
                    None => now + interval.mul_f64(index as f64 / control.publishers as f64),
                };
                if due > now {
                    thread::sleep(due - now);
                }
                next_due = Some(due + interval);
            }
            _ => {}
        }
        // Announce the send before confirming the mode: the controller stores a new mode and
        // then waits for `busy` to reach zero, so no batch of a finished phase slips out after
        // it counted the phase (both sides use SeqCst, so one always sees the other).
        control.busy.fetch_add(1, Ordering::SeqCst);
        if control.mode.load(Ordering::SeqCst) != phase {
            control.busy.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let first = if phase == mode::PREFILL {
            // Claim exactly up to the limit, so the log holds exactly the events asked for.
            let limit = control.limit.load(Ordering::Acquire);
            let claimed = control
                .sent
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
                    (sent + per_batch <= limit).then_some(sent + per_batch)
                });
            match claimed {
                Ok(first) => first,
                Err(_) => {
                    control.busy.fetch_sub(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        } else {
            control.sent.fetch_add(per_batch, Ordering::AcqRel)
        };
        let started = Instant::now();
        match conn.publish(shape, first, phase) {
            Ok(seq) => {
                control.last_seq.fetch_max(seq, Ordering::AcqRel);
                if let Some(h) = report.ack.get_mut(phase) {
                    let _ = h.record(started.elapsed().as_nanos() as u64);
                }
                control.acked[phase].fetch_add(per_batch, Ordering::AcqRel);
            }
            Err(error) => {
                control.fail(per_batch, error.to_string());
                match Connection::open(endpoint, shape) {
                    Ok(fresh) => conn = fresh,
                    Err(_) => {
                        control.busy.fetch_sub(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
        }
        control.busy.fetch_sub(1, Ordering::SeqCst);
    }
    report
}

/// A byte stream, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One batch laid out once and patched per send: a complete request (herald) or the payload of
/// one websocket frame (NATS).
struct Prepared {
    body: Vec<u8>,
    /// Where each event's JSON starts in `body`.
    event_at: Vec<usize>,
    /// NATS: where each subject's key starts in `body`.
    subject_key_at: Vec<usize>,
}

impl Prepared {
    fn new(endpoint: &Endpoint, template: &EventTemplate, batch: usize) -> Prepared {
        let json = &template.json;
        let mut prepared = Prepared {
            body: Vec::new(),
            event_at: Vec::new(),
            subject_key_at: Vec::new(),
        };
        let body = &mut prepared.body;
        match endpoint.protocol {
            Protocol::Herald => {
                let length = batch * (json.len() + 1) + 1;
                let head = format!(
                    "POST /api/v3/events HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
                     Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
                    endpoint.addr, endpoint.authorization
                );
                body.extend_from_slice(head.as_bytes());
                body.push(b'[');
                for i in 0..batch {
                    if i > 0 {
                        body.push(b',');
                    }
                    prepared.event_at.push(body.len());
                    body.extend_from_slice(json);
                }
                body.push(b']');
            }
            Protocol::Nats => {
                let subject = format!("{}.{}.", event::TYPE, event::ACTION);
                for _ in 0..batch {
                    body.extend_from_slice(b"PUB ");
                    body.extend_from_slice(subject.as_bytes());
                    prepared.subject_key_at.push(body.len());
                    body.extend_from_slice(&[b'0'; KEY_BYTES]);
                    body.extend_from_slice(format!(" {}\r\n", json.len()).as_bytes());
                    prepared.event_at.push(body.len());
                    body.extend_from_slice(json);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"PING\r\n");
            }
        }
        prepared
    }

    /// Writes keys, phase and send time of events `first..` into the body.
    fn patch(&mut self, shape: &BatchShape, first: u64, phase: usize) {
        let now = event::now_ns();
        for (i, &at) in self.event_at.iter().enumerate() {
            let ordinal = (first + i as u64) as usize;
            let key = &shape.keys[ordinal % shape.keys.len()];
            shape.template.patch(&mut self.body, at, key, phase, now);
            if let Some(&key_at) = self.subject_key_at.get(i) {
                self.body[key_at..key_at + KEY_BYTES].copy_from_slice(key);
            }
        }
    }
}

/// One publisher's connection and its prepared batches.
struct Connection {
    stream: Box<dyn Stream>,
    protocol: Protocol,
    /// The batch of the as-fast-as-possible and prefill phases.
    full: Prepared,
    /// The batch of the paced phase.
    paced: Prepared,
    read_buf: Vec<u8>,
    /// NATS: protocol bytes not yet parsed.
    nats_buf: Vec<u8>,
    frame: Vec<u8>,
}

fn connect(endpoint: &Endpoint) -> io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(endpoint.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(match &endpoint.tls {
        None => Box::new(tcp),
        Some(config) => {
            let tls = rustls::ClientConnection::new(config.clone(), crate::tls::server_name())
                .map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(tls, tcp))
        }
    })
}

impl Connection {
    fn open(endpoint: &Endpoint, shape: &BatchShape) -> io::Result<Connection> {
        let mut conn = Connection {
            stream: connect(endpoint)?,
            protocol: endpoint.protocol,
            full: Prepared::new(endpoint, &shape.template, shape.batch),
            paced: Prepared::new(endpoint, &shape.template, shape.paced_batch),
            read_buf: Vec::with_capacity(4096),
            nats_buf: Vec::new(),
            frame: Vec::new(),
        };
        if endpoint.protocol == Protocol::Nats {
            conn.stream
                .write_all(&ws::upgrade_request(&endpoint.addr.to_string(), "/", ""))?;
            read_upgrade(&mut conn.stream, &mut conn.read_buf)?;
            let mut hello = nats::CONNECT.to_vec();
            hello.extend_from_slice(b"PING\r\n");
            ws::encode_masked(&mut conn.frame, OpCode::Binary, &hello);
            conn.stream.write_all(&conn.frame)?;
            conn.await_pong()?;
        }
        Ok(conn)
    }

    /// Publishes the batch of `phase` starting at event `first`; answers the `Herald-Seq`
    /// (0 for NATS).
    fn publish(&mut self, shape: &BatchShape, first: u64, phase: usize) -> io::Result<u64> {
        let prepared = if phase == mode::PACED {
            &mut self.paced
        } else {
            &mut self.full
        };
        prepared.patch(shape, first, phase);
        match self.protocol {
            Protocol::Herald => {
                self.stream.write_all(&prepared.body)?;
                self.read_response()
            }
            Protocol::Nats => {
                self.frame.clear();
                ws::encode_masked(&mut self.frame, OpCode::Binary, &prepared.body);
                self.stream.write_all(&self.frame)?;
                self.await_pong()?;
                Ok(0)
            }
        }
    }

    /// Reads one HTTP response; a 204 answers its `Herald-Seq`, anything else is an error with
    /// the server's words.
    fn read_response(&mut self) -> io::Result<u64> {
        self.read_buf.clear();
        let head_end = loop {
            if let Some(end) = memchr::memmem::find(&self.read_buf, b"\r\n\r\n") {
                break end + 4;
            }
            fill(&mut self.stream, &mut self.read_buf)?;
        };
        let head = String::from_utf8_lossy(&self.read_buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        let mut seq = 0u64;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("herald-seq") {
                    seq = value.parse().unwrap_or(0);
                }
            }
        }
        while self.read_buf.len() < head_end + length {
            fill(&mut self.stream, &mut self.read_buf)?;
        }
        if !status.starts_with("HTTP/1.1 204") {
            let body = String::from_utf8_lossy(&self.read_buf[head_end..head_end + length]);
            return Err(io::Error::other(format!(
                "publish answered {status}: {body}"
            )));
        }
        Ok(seq)
    }

    /// Reads NATS frames until `PONG`, answering the server's `PING`s on the way.
    fn await_pong(&mut self) -> io::Result<()> {
        self.await_nats(false).map(|_| ())
    }

    /// Reads NATS frames until `PONG` (or, with `want_msg`, the first `MSG`, whose payload it
    /// answers), answering the server's `PING`s on the way.
    fn await_nats(&mut self, want_msg: bool) -> io::Result<Option<Vec<u8>>> {
        loop {
            let mut used = 0;
            while let Some(frame) =
                ws::parse_frame(&self.read_buf[used..]).map_err(io::Error::other)?
            {
                let payload = &self.read_buf[used + frame.payload.start..used + frame.payload.end];
                match frame.opcode {
                    OpCode::Close => {
                        return Err(io::Error::other("NATS closed the publisher's websocket"));
                    }
                    OpCode::Ping => {
                        let mut pong = Vec::new();
                        ws::encode_masked(&mut pong, OpCode::Pong, payload);
                        self.stream.write_all(&pong)?;
                    }
                    OpCode::Pong => {}
                    _ => self.nats_buf.extend_from_slice(payload),
                }
                used += frame.len;
            }
            self.read_buf.drain(..used);
            let mut at = 0;
            let mut done = None;
            while let Some((op, len)) =
                nats::next_op(&self.nats_buf[at..]).map_err(io::Error::other)?
            {
                at += len;
                match op {
                    nats::Op::Pong if !want_msg => done = Some(None),
                    nats::Op::Msg(payload) if want_msg => done = Some(Some(payload.to_vec())),
                    nats::Op::Ping => {
                        let mut pong = Vec::new();
                        ws::encode_masked(&mut pong, OpCode::Binary, b"PONG\r\n");
                        self.stream.write_all(&pong)?;
                    }
                    nats::Op::Err(text) => {
                        return Err(io::Error::other(format!(
                            "NATS: -ERR{}",
                            String::from_utf8_lossy(text)
                        )));
                    }
                    _ => {}
                }
                if done.is_some() {
                    break;
                }
            }
            self.nats_buf.drain(..at);
            if let Some(answer) = done {
                return Ok(answer);
            }
            fill(&mut self.stream, &mut self.read_buf)?;
        }
    }
}

/// Sends one NATS request over a fresh websocket and answers the reply's payload: how the load
/// generator talks to the JetStream API (`$JS.API.…`).
pub(crate) fn nats_request(endpoint: &Endpoint, subject: &str, body: &[u8]) -> io::Result<Vec<u8>> {
    let shape = BatchShape {
        batch: 1,
        paced_batch: 1,
        template: EventTemplate::new(0),
        keys: Arc::new(vec![[b'0'; KEY_BYTES]]),
    };
    let mut conn = Connection::open(endpoint, &shape)?;
    let mut request = format!(
        "SUB _INBOX.loadgen 1\r\nPUB {subject} _INBOX.loadgen {}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n");
    conn.frame.clear();
    ws::encode_masked(&mut conn.frame, OpCode::Binary, &request);
    conn.stream.write_all(&conn.frame)?;
    conn.await_nats(true)?
        .ok_or_else(|| io::Error::other("NATS answered no message"))
}

fn fill(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn read_upgrade(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        if let Some(len) = ws::upgrade_response(buf).map_err(io::Error::other)? {
            buf.drain(..len);
            return Ok(());
        }
        fill(stream, buf)?;
    }
}

/// Sends one authenticated `GET /api/v3/info` and answers its JSON body (`Epoch`, `LastSeq`).
pub(crate) fn info(endpoint: &Endpoint) -> io::Result<serde_json::Value> {
    let mut stream = connect(endpoint)?;
    let request = format!(
        "GET /api/v3/info HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        endpoint.addr, endpoint.authorization
    );
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    loop {
        match fill(&mut stream, &mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    let body = memchr::memmem::find(&buf, b"\r\n\r\n").map_or(&buf[..0], |at| &buf[at + 4..]);
    serde_json::from_slice(body).map_err(|e| {
        io::Error::other(format!(
            "info is not JSON ({e}): {}",
            String::from_utf8_lossy(&buf)
        ))
    })
}

/// Sends one authenticated `GET /api/v3/info` and answers its status line: checks the
/// credentials, and lets herald cache them before thousands of sockets present them at once.
pub(crate) fn probe(endpoint: &Endpoint) -> io::Result<String> {
    let mut stream = connect(endpoint)?;
    let request = format!(
        "GET /api/v3/info HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        endpoint.addr, endpoint.authorization
    );
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    while memchr::memmem::find(&buf, b"\r\n").is_none() {
        fill(&mut stream, &mut buf)?;
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
