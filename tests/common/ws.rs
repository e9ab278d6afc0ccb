//! The event stream through tungstenite: connecting, commands, reading events and closes.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::{Auth, HttpReply, REPLY_TIMEOUT, Server};

impl Server {
    /// A websocket client that completed the upgrade; panics if it did not.
    pub fn ws(&self, auth: &Auth) -> Client {
        self.try_ws(auth).unwrap_or_else(|refused| {
            panic!(
                "websocket upgrade refused: {refused:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// A websocket upgrade; the HTTP answer when the server refuses it.
    pub fn try_ws(&self, auth: &Auth) -> Result<Client, HttpReply> {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let host = if self.tls.is_some() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        let url = format!("{scheme}://{host}{}", auth.apply_to_path("/api/v3/ws"));
        let mut request = url.into_client_request().expect("websocket request");
        if let Some(value) = auth.header_value() {
            request.headers_mut().insert(
                "Authorization",
                value.parse().expect("header value is ASCII"),
            );
        }
        let tcp = self.connect_tcp();
        let stream = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .expect("localhost is a server name");
                let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                    .expect("start a TLS client");
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
            }
            None => Stream::Plain(tcp),
        };
        match tungstenite::client::client(request, stream) {
            Ok((ws, _)) => Ok(Client {
                ws,
                pending: VecDeque::new(),
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(HttpReply {
                    status: response.status().as_u16(),
                    headers: response
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_ascii_lowercase(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                        .into_owned(),
                })
            }
            Err(e) => panic!(
                "websocket handshake failed without an HTTP answer: {e}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// A plain websocket with a tiny receive buffer that registers `filter` and then never
    /// reads, so it falls behind once the kernel's buffers are full.
    pub fn stalled_ws(&self, filter: &str) -> WebSocket<TcpStream> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("shrink the receive buffer");
        socket.connect(&self.addr().into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set a read timeout");
        let url = format!(
            "ws://{}/api/v3/ws?token=rocketskates:{}",
            self.addr(),
            self.admin_password()
        );
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        ws.send(Message::text(format!("register {filter}")))
            .expect("send register");
        ws.read().expect("register reply");
        ws
    }

    /// A websocket client whose socket has a receive buffer of `bytes`, set before connecting
    /// so the TCP window stays small (plain servers only).
    pub fn ws_with_receive_buffer(&self, auth: &Auth, bytes: usize) -> Client {
        assert!(self.tls.is_none(), "this client needs a plain server");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .set_recv_buffer_size(bytes)
            .expect("set the receive buffer size");
        socket
            .connect_timeout(&self.addr.into(), REPLY_TIMEOUT)
            .expect("connect");
        let tcp = TcpStream::from(socket);
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set write timeout");
        tcp.set_nodelay(true).expect("set nodelay");
        let url = format!("ws://{}{}", self.addr, auth.apply_to_path("/api/v3/ws"));
        let mut request = url.into_client_request().expect("websocket request");
        if let Some(value) = auth.header_value() {
            request.headers_mut().insert(
                "Authorization",
                value.parse().expect("header value is ASCII"),
            );
        }
        match tungstenite::client::client(request, Stream::Plain(tcp)) {
            Ok((ws, _)) => Client {
                ws,
                pending: VecDeque::new(),
            },
            Err(e) => panic!("websocket upgrade failed: {e}"),
        }
    }
}

/// A websocket's byte stream, plain or TLS: the CLI's own.
pub use herald::cli::Stream;

/// A websocket client (tungstenite) on the event stream.
pub struct Client {
    ws: WebSocket<Stream>,
    /// Events read while waiting for a command's reply, handed out first by `next_event`.
    pending: VecDeque<Value>,
}

impl Client {
    /// Sends one text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    /// Sends one binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send a binary frame: {e}"));
    }

    /// Sends a command and returns its reply (the next `websocket` event); events that arrive
    /// before it are kept for `next_event`.
    pub fn command(&mut self, text: &str) -> Value {
        self.send_text(text);
        self.await_reply(text)
    }

    /// Waits for the next `websocket` event, keeping other events for `next_event`.
    pub fn await_reply(&mut self, what: &str) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.read_event(remaining) else {
                panic!("no reply to {what:?} within {REPLY_TIMEOUT:?}");
            };
            if event["Type"] == "websocket" {
                return event;
            }
            self.pending.push_back(event);
        }
    }

    /// Registers a filter and asserts the success reply.
    pub fn register(&mut self, filter: &str) {
        let reply = self.command(&format!("register {filter}"));
        assert_eq!(reply["Action"], "register", "register {filter}: {reply}");
        assert_eq!(reply["Key"], filter, "register {filter}: {reply}");
    }

    /// The next text frame's raw text, or `None` when nothing arrives within `timeout`.
    /// Panics on a close, a binary frame or a broken connection.
    pub fn next_text(&mut self, timeout: Duration) -> Option<String> {
        match self.next_message(timeout) {
            Ok(None) => None,
            Ok(Some(Message::Text(text))) => Some(text.to_string()),
            Ok(Some(Message::Close(frame))) => panic!("server closed the websocket: {frame:?}"),
            Ok(Some(other)) => panic!("server sent a binary frame: {other:?}"),
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }

    /// The next text, binary or close frame within `timeout` (`None` when nothing arrives);
    /// pings and pongs are skipped. `Err` when the connection broke.
    fn next_message(&mut self, timeout: Duration) -> Result<Option<Message>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_ref()
                .tcp()
                .set_read_timeout(Some(remaining))
                .map_err(|e| e.to_string())?;
            match self.ws.read() {
                Ok(message @ (Message::Text(_) | Message::Binary(_) | Message::Close(_))) => {
                    return Ok(Some(message));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn read_event(&mut self, timeout: Duration) -> Option<Value> {
        let text = self.next_text(timeout)?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
        )
    }

    /// The next event (or reply) within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        self.read_event(timeout)
    }

    /// Like `next_event`, but a close or a broken connection is `Err` instead of a panic, for
    /// clients of a server that is killed under them.
    pub fn try_next_event(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        match self.next_message(timeout)? {
            None => Ok(None),
            Some(Message::Text(text)) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("frame is not JSON ({e}): {text}")),
            Some(other) => Err(format!("the stream ended with {other:?}")),
        }
    }

    /// The next event; panics if none arrives within `REPLY_TIMEOUT`.
    pub fn expect_event(&mut self) -> Value {
        self.next_event(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no event within {REPLY_TIMEOUT:?}"))
    }

    /// Asserts that nothing reached this client before now: publishes `sentinel` (an event its
    /// filters match) and asserts that the sentinel is the first thing received. Frames reach a
    /// connection in Seq order, so anything owed from before comes first, however slow it is.
    pub fn expect_sentinel_first(&mut self, server: &Server, sentinel: Value) {
        let seq = server.publish(sentinel);
        let first = self.expect_event();
        assert_eq!(
            first["Seq"].as_u64(),
            Some(seq),
            "the sentinel (Seq {seq}) must be the first thing received; got {first}"
        );
    }

    /// Publishes `sentinel` (an event this client's filters match) and returns every frame
    /// received before it, in order.
    pub fn events_before_sentinel(&mut self, server: &Server, sentinel: Value) -> Vec<Value> {
        let seq = server.publish(sentinel);
        let mut seen = self.events_through(seq);
        seen.pop();
        seen
    }

    /// Every frame up to and including the event with `Seq == seq` (a sentinel published by the
    /// test); panics if it does not arrive in time or is skipped.
    pub fn events_through(&mut self, seq: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let Some(event) = self.next_event(REPLY_TIMEOUT) else {
                panic!("event {seq} did not arrive within {REPLY_TIMEOUT:?}; got {seen:?}");
            };
            let this = event.get("Seq").and_then(Value::as_u64);
            seen.push(event);
            match this {
                Some(this) if this == seq => return seen,
                Some(this) if this > seq => panic!("event {seq} was skipped; got {seen:?}"),
                _ => {}
            }
        }
    }

    /// The client's own address: the `RemoteAddr` the server records for this connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.ws
            .get_ref()
            .tcp()
            .local_addr()
            .expect("a connected socket has a local address")
    }

    /// Closes politely.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// What a websocket read produced, closes included.
#[derive(Debug)]
pub enum Received {
    /// A text frame, parsed as JSON.
    Event(Value),
    /// The server's close frame.
    Closed {
        /// Its status code (0 when it carried none).
        code: u16,
        /// Its reason text.
        reason: String,
    },
    /// The connection ended without a close frame, or broke.
    Ended(String),
    /// Nothing arrived in time.
    Nothing,
}

impl Client {
    /// The next event, close or end of the connection within `timeout`; never panics on a close.
    pub fn next_received(&mut self, timeout: Duration) -> Received {
        if let Some(event) = self.pending.pop_front() {
            return Received::Event(event);
        }
        match self.next_message(timeout) {
            Ok(None) => Received::Nothing,
            Ok(Some(Message::Text(text))) => Received::Event(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
            ),
            Ok(Some(Message::Close(frame))) => match frame {
                Some(frame) => Received::Closed {
                    code: u16::from(frame.code),
                    reason: frame.reason.to_string(),
                },
                None => Received::Closed {
                    code: 0,
                    reason: String::new(),
                },
            },
            Ok(Some(other)) => panic!("server sent a binary frame: {other:?}"),
            Err(e) => Received::Ended(e),
        }
    }

    /// Sends `replay <argument>` and returns the reply's `Object`. Events that arrived before
    /// the reply are dropped: the replay restarts the stream, and they may come again.
    pub fn replay(&mut self, argument: &str) -> Value {
        self.send_text(&format!("replay {argument}"));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.read_event(remaining) else {
                panic!("no reply to replay {argument:?} within {REPLY_TIMEOUT:?}");
            };
            if event["Type"] == "websocket" && event["Action"] != "bookmark" {
                assert_eq!(event["Action"], "replay", "replay {argument}: {event}");
                assert_eq!(event["Key"], argument, "replay {argument}: {event}");
                assert!(
                    event.get("Seq").is_none(),
                    "a reply carries no Seq: {event}"
                );
                self.pending.clear();
                return event["Object"].clone();
            }
        }
    }

    /// Events (not replies or bookmarks) up to and including `seq`, asserting that they arrive in
    /// strictly increasing `Seq` order; panics if `seq` is skipped or does not arrive in time.
    pub fn ordered_events_through(&mut self, seq: u64, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<Value> = Vec::new();
        let mut last = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match self.next_received(remaining) {
                Received::Event(event) => event,
                other => panic!(
                    "event {seq} did not arrive within {timeout:?} ({other:?}); last Seq seen {last}, {} events",
                    seen.len()
                ),
            };
            let Some(this) = event.get("Seq").and_then(Value::as_u64) else {
                continue;
            };
            assert!(
                this > last,
                "Seq {this} arrived after Seq {last}: out of order or repeated"
            );
            last = this;
            seen.push(event);
            if this >= seq {
                assert_eq!(this, seq, "event {seq} was skipped");
                return seen;
            }
        }
    }
}
