//! Raw sockets for bytes no well-behaved client sends: HTTP/1.1 and websocket frames by hand.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{HttpReply, REPLY_TIMEOUT, Server};

impl Server {
    /// A TCP connection to the listener with read and write timeouts set.
    pub fn connect_tcp(&self) -> TcpStream {
        let tcp = TcpStream::connect_timeout(&self.addr, REPLY_TIMEOUT).expect("connect");
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set write timeout");
        tcp.set_nodelay(true).expect("set nodelay");
        tcp
    }

    /// A raw TCP connection for bytes as they are, whatever the server speaks.
    pub fn raw_tcp(&self) -> RawHttp {
        RawHttp {
            stream: self.connect_tcp(),
            buf: Vec::new(),
        }
    }

    /// A raw HTTP connection from another loopback address (127.0.0.2 and so on), so a test
    /// can be several clients (plain servers only).
    pub fn raw_from(&self, source: std::net::IpAddr) -> RawHttp {
        assert!(self.tls.is_none(), "raw connections need a plain server");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&std::net::SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket
            .connect_timeout(&self.addr.into(), REPLY_TIMEOUT)
            .expect("connect");
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        tcp.set_nodelay(true).expect("set nodelay");
        RawHttp {
            stream: tcp,
            buf: Vec::new(),
        }
    }

    /// A raw HTTP connection (plain servers only).
    pub fn raw(&self) -> RawHttp {
        assert!(self.tls.is_none(), "raw connections need a plain server");
        RawHttp {
            stream: self.connect_tcp(),
            buf: Vec::new(),
        }
    }

    /// A raw websocket connection that completed the upgrade as the admin (plain servers only).
    pub fn raw_ws(&self) -> RawWs {
        let mut http = self.raw();
        let request = format!(
            "GET /api/v3/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: {}\r\n\r\n",
            self.addr,
            self.admin().header_value().unwrap_or_default()
        );
        http.send(request.as_bytes()).expect("send the upgrade");
        let reply = http
            .read_head(REPLY_TIMEOUT)
            .expect("read the upgrade answer");
        assert_eq!(reply.status, 101, "upgrade refused: {reply:?}");
        RawWs { http }
    }
}

/// A raw HTTP/1.1 connection for requests no well-behaved client sends.
pub struct RawHttp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawHttp {
    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a GET with these credentials on this connection, kept alive, and reads the answer
    /// within `timeout`.
    pub fn get(
        &mut self,
        path: &str,
        auth: &super::Auth,
        timeout: Duration,
    ) -> io::Result<HttpReply> {
        let authorization = auth
            .header_value()
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        let path = auth.apply_to_path(path);
        self.send(
            format!("GET {path} HTTP/1.1\r\nHost: herald\r\n{authorization}\r\n").as_bytes(),
        )?;
        self.read_response(timeout)
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads more bytes into the buffer before `deadline`; `Ok(0)` at end of stream.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.stream.set_read_timeout(Some(remaining))?;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }

    /// Reads a response head (status line and headers) only.
    pub fn read_head(&mut self, timeout: Duration) -> io::Result<HttpReply> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let reply = HttpReply {
                        status: response.code.unwrap_or_default(),
                        headers: response
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: String::new(),
                    };
                    self.buf.drain(..len);
                    return Ok(reply);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bad response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ));
                }
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a response; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// Reads one whole response (Content-Length, chunked, or until close).
    pub fn read_response(&mut self, timeout: Duration) -> io::Result<HttpReply> {
        let deadline = Instant::now() + timeout;
        let mut reply = self.read_head(timeout)?;
        let body = if matches!(reply.status, 100..=199 | 204 | 304) {
            Vec::new()
        } else if let Some(len) = reply.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            while self.buf.len() < len {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
            }
            self.buf.drain(..len).collect()
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked(deadline)?
        } else {
            while self.fill(deadline)? > 0 {}
            std::mem::take(&mut self.buf)
        };
        reply.body = String::from_utf8_lossy(&body).into_owned();
        Ok(reply)
    }

    fn read_chunked(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            while self.buf.len() < line_end + 2 + size + 2 {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// True when the server closes (or resets) the connection within `timeout`; unread response
    /// bytes are discarded.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return true,
                Ok(_) => self.buf.clear(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A raw websocket connection for frames a well-behaved client never sends.
pub struct RawWs {
    http: RawHttp,
}

/// What a raw websocket read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame's payload.
    Text(String),
    /// A close frame's status code (`None` when it carried none).
    Close(Option<u16>),
    /// Any other frame's opcode.
    Other(u8),
    /// The TCP connection ended without a close frame.
    Eof,
}

impl RawWs {
    /// FIN set, opcode text.
    pub const TEXT: u8 = 0x81;
    /// FIN set, opcode binary.
    pub const BINARY: u8 = 0x82;

    /// Sends one frame; `first_byte` is FIN, RSV and opcode as on the wire.
    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        self.send_frame_start(first_byte, payload.len(), payload, masked);
    }

    /// Sends the header of a frame declaring `declared_len` payload bytes, followed by only
    /// `payload` (its first bytes), as a client whose frame is still on its way.
    pub fn send_frame_start(
        &mut self,
        first_byte: u8,
        declared_len: usize,
        payload: &[u8],
        masked: bool,
    ) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match declared_len {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may close while we write; the close is what the test then checks.
        let _ = self.http.send(&frame);
    }

    /// Sends a masked text frame (FIN set) whose payload may be any bytes.
    pub fn send_text_bytes(&mut self, payload: &[u8]) {
        self.send_frame(Self::TEXT, payload, true);
    }

    /// Reads one server frame; `None` on timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.http.buf) {
                self.http.buf.drain(..used);
                return Some(frame);
            }
            match self.http.fill(deadline) {
                Ok(0) => return Some(RawFrame::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(RawFrame::Eof),
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until the server's close frame and returns its code; panics when the
    /// connection ends without one or nothing arrives in time.
    pub fn expect_close_code(&mut self) -> u16 {
        loop {
            match self.read_frame(REPLY_TIMEOUT) {
                Some(RawFrame::Close(Some(code))) => return code,
                Some(RawFrame::Close(None)) => panic!("close frame without a status code"),
                Some(RawFrame::Eof) => panic!("connection dropped without a close frame"),
                None => panic!("no close frame within {REPLY_TIMEOUT:?}"),
                Some(_) => {}
            }
        }
    }

    /// Reads the next text frame and parses it as JSON; panics otherwise.
    pub fn expect_event(&mut self) -> Value {
        match self.read_frame(REPLY_TIMEOUT) {
            Some(RawFrame::Text(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Parses one unmasked server frame from the front of `buf`: the frame and bytes used.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let first = *buf.first()?;
    let second = *buf.get(1)?;
    let (len, header) = match second & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        len => (usize::from(len), 2),
    };
    let payload = buf.get(header..header + len)?;
    let frame = match first & 0x0f {
        0x1 => RawFrame::Text(String::from_utf8_lossy(payload).into_owned()),
        0x8 => RawFrame::Close(
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]])),
        ),
        opcode => RawFrame::Other(opcode),
    };
    Some((frame, header + len))
}
