//! HTTP/1.1 request heads, chunked bodies and responses over byte buffers, and DRP's error shape.
//!
//! Nothing here touches a socket: the connection appends what it read to a buffer and asks
//! [`parse_head`] whether a whole head is there ([`Head::Partial`] is the cheap "need more bytes"
//! answer), then feeds the body to a [`ChunkedDecoder`] or takes `Content-Length` bytes itself.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;

/// Default limit on the size of a request head (request line and headers), per
/// `docs/protocol.md` §1.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most headers a request may carry; httparse needs a fixed stack array, and DRP clients send ~10.
pub const MAX_HEADERS: usize = 100;

/// Longest chunk-size line (size plus extensions) we wait for before calling it malformed, so a
/// client cannot make us buffer an endless extension.
const MAX_CHUNK_SIZE_LINE: usize = 1024;

/// Most bytes of trailer fields after the last chunk; trailers are read and ignored.
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Why a request could not be read; each maps to the HTTP status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request head is longer than the configured limit (431).
    #[error("request head is larger than the limit of {limit} bytes")]
    HeaderTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request carries more headers than [`MAX_HEADERS`] (431).
    #[error("request has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// The head did not arrive in time (408); raised by the connection, answered here.
    #[error("request head was not complete within {seconds} seconds")]
    HeaderTimeout {
        /// The timeout in seconds.
        seconds: u64,
    },
    /// The request line or a header is not valid HTTP/1.x (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// `Content-Length` is not a single non-negative decimal number (400).
    #[error("invalid Content-Length: {0}")]
    InvalidContentLength(String),
    /// Both `Content-Length` and `Transfer-Encoding` were sent, so the body's end is ambiguous (400).
    #[error("request has both Content-Length and Transfer-Encoding; send only one")]
    ConflictingBodyLength,
    /// A transfer coding other than plain `chunked` was requested (501).
    #[error("unsupported Transfer-Encoding {0:?}; only \"chunked\" is supported")]
    UnsupportedTransferEncoding(String),
    /// The body is, or declares to be, larger than the limit (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The chunked body is not well formed (400).
    #[error("malformed chunked body: {0}")]
    InvalidChunk(&'static str),
    /// The path contains a percent-escape that does not decode to UTF-8 (400).
    #[error("request path is not valid percent-encoded UTF-8: {0:?}")]
    InvalidPath(String),
}

impl HttpError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeaderTooLarge { .. } | HttpError::TooManyHeaders => 431,
            HttpError::HeaderTimeout { .. } => 408,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedTransferEncoding(_) => 501,
            HttpError::Malformed(_)
            | HttpError::InvalidContentLength(_)
            | HttpError::ConflictingBodyLength
            | HttpError::InvalidChunk(_)
            | HttpError::InvalidPath(_) => 400,
        }
    }

    /// This error in DRP's error shape, ready for [`Response::error`].
    pub fn api_error(&self) -> ApiError {
        ApiError::new(self.status(), self.to_string())
    }
}

/// The request method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// Any other method token, verbatim.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no framing headers, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A `Transfer-Encoding: chunked` body; read it with a [`ChunkedDecoder`].
    Chunked,
}

/// One header as received: the name as sent, the raw value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderField {
    name: String,
    value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target as sent: raw path and raw query.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// The client's `Sec-WebSocket-Key` when this is a valid websocket upgrade request.
    pub websocket_key: Option<String>,
    headers: Vec<HeaderField>,
}

impl RequestHead {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value.as_slice())
    }

    /// Every value of the header `name` (case-insensitive), in the order received.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value.as_slice())
    }

    /// The first value of the header `name` as text, when it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The raw path, without the query; for an absolute-form target, the path part of it.
    pub fn path(&self) -> &str {
        let without_query = match self.target.split_once('?') {
            Some((path, _)) => path,
            None => &self.target,
        };
        // RFC 9112 §3.2.2: servers must accept absolute-form targets (sent to proxies).
        for scheme in ["http://", "https://"] {
            if let Some(rest) = strip_prefix_ignore_case(without_query, scheme) {
                return match rest.find('/') {
                    Some(start) => rest.get(start..).unwrap_or("/"),
                    None => "/",
                };
            }
        }
        without_query
    }

    /// The raw query string (without `?`), or `""`.
    pub fn raw_query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }

    /// The percent-decoded segments of the path: `/api/v3/ws` is `["api","v3","ws"]`, `/` is `[]`.
    ///
    /// Segments are split before decoding, so an escaped `%2F` stays inside its segment.
    pub fn path_segments(&self) -> Result<Vec<String>, HttpError> {
        let path = self.path();
        let path = path.strip_prefix('/').unwrap_or(path);
        if path.is_empty() {
            return Ok(Vec::new());
        }
        path.split('/')
            .map(|segment| {
                percent_encoding::percent_decode_str(segment)
                    .decode_utf8()
                    .map(|decoded| decoded.into_owned())
                    .map_err(|_| HttpError::InvalidPath(segment.to_owned()))
            })
            .collect()
    }

    /// The first value of query parameter `name`, form-decoded (`+` is a space).
    pub fn query(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.raw_query().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Why this request is not a valid websocket upgrade, or `None` when it is one.
    pub fn websocket_refusal(&self) -> Option<&'static str> {
        websocket_upgrade_key(self).err()
    }
}

/// The result of looking for a request head at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The head is not complete yet: read more bytes and call again.
    Partial,
    /// A whole head, which occupies the first `len` bytes of the buffer.
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// How many bytes of the buffer the head occupies; the body starts there.
        len: usize,
    },
}

/// Parses a request head at the start of `buf` with httparse (up to [`MAX_HEADERS`] headers).
///
/// A head longer than `max_header_bytes`, or a buffer of that size without a whole head, is
/// [`HttpError::HeaderTooLarge`]. Only a complete head allocates.
pub fn parse_head(buf: &[u8], max_header_bytes: usize) -> Result<Head, HttpError> {
    let window = buf.get(..max_header_bytes).unwrap_or(buf);
    let mut header_slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut header_slots);
    let len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_header_bytes => {
            return Err(HttpError::HeaderTooLarge {
                limit: max_header_bytes,
            });
        }
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(err) => return Err(HttpError::Malformed(describe_httparse_error(err))),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::Malformed("incomplete request line".to_owned()));
    };
    let headers: Vec<HeaderField> = request
        .headers
        .iter()
        .map(|header| HeaderField {
            name: header.name.to_owned(),
            value: header.value.to_vec(),
        })
        .collect();
    let mut head = RequestHead {
        method: Method::from_token(method),
        target: target.to_owned(),
        minor_version,
        body: BodyKind::None,
        keep_alive: false,
        websocket_key: None,
        headers,
    };
    head.body = body_kind(&head)?;
    head.keep_alive = keep_alive(&head);
    head.websocket_key = websocket_upgrade_key(&head).ok();
    Ok(Head::Complete { head, len })
}

fn describe_httparse_error(err: httparse::Error) -> String {
    match err {
        httparse::Error::HeaderName => "invalid byte in a header name",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "unsupported HTTP version; use HTTP/1.1",
    }
    .to_owned()
}

/// Decides the body framing from `Content-Length` and `Transfer-Encoding` (RFC 9112 §6).
fn body_kind(head: &RequestHead) -> Result<BodyKind, HttpError> {
    let mut length: Option<u64> = None;
    for value in head.headers("content-length") {
        let text = std::str::from_utf8(value)
            .map_err(|_| HttpError::InvalidContentLength("not ASCII".to_owned()))?;
        // A list of identical values ("5, 5") is allowed by RFC 9110 §8.6; anything else is not.
        for item in text.split(',') {
            let number = parse_content_length(item.trim())?;
            match length {
                Some(previous) if previous != number => {
                    return Err(HttpError::InvalidContentLength(format!(
                        "conflicting values {previous} and {number}"
                    )));
                }
                _ => length = Some(number),
            }
        }
    }

    let mut codings = Vec::new();
    for value in head.headers("transfer-encoding") {
        let text = std::str::from_utf8(value).map_err(|_| {
            HttpError::UnsupportedTransferEncoding(String::from_utf8_lossy(value).into_owned())
        })?;
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|coding| !coding.is_empty()),
        );
    }
    if codings.is_empty() && head.header("transfer-encoding").is_none() {
        return Ok(match length {
            None | Some(0) => BodyKind::None,
            Some(length) => BodyKind::Length(length),
        });
    }
    if length.is_some() {
        return Err(HttpError::ConflictingBodyLength);
    }
    if head.minor_version == 0 {
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing cannot be trusted.
        return Err(HttpError::Malformed(
            "Transfer-Encoding is not allowed in HTTP/1.0".to_owned(),
        ));
    }
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(BodyKind::Chunked),
        _ => Err(HttpError::UnsupportedTransferEncoding(codings.join(", "))),
    }
}

fn parse_content_length(text: &str) -> Result<u64, HttpError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HttpError::InvalidContentLength(format!(
            "{text:?} is not a non-negative decimal number"
        )));
    }
    // Only digits, so the one failure left is overflow: a length no limit could allow.
    text.parse::<u64>()
        .map_err(|_| HttpError::BodyTooLarge { limit: u64::MAX })
}

/// Iterates the comma-separated tokens of every `name` header, trimmed.
fn header_tokens<'a>(head: &'a RequestHead, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers(name)
        .flat_map(|value| value.split(|byte| *byte == b','))
        .map(|token| token.trim_ascii())
}

fn has_token(head: &RequestHead, name: &str, token: &str) -> bool {
    header_tokens(head, name).any(|candidate| candidate.eq_ignore_ascii_case(token.as_bytes()))
}

fn keep_alive(head: &RequestHead) -> bool {
    if has_token(head, "connection", "close") {
        return false;
    }
    head.minor_version >= 1 || has_token(head, "connection", "keep-alive")
}

/// The checks of RFC 6455 §4.2.1 on an opening handshake; the key when they all pass.
fn websocket_upgrade_key(head: &RequestHead) -> Result<String, &'static str> {
    if head.method != Method::Get {
        return Err("a websocket upgrade must use GET");
    }
    if head.minor_version < 1 {
        return Err("a websocket upgrade needs HTTP/1.1");
    }
    if !has_token(head, "upgrade", "websocket") {
        return Err("missing header Upgrade: websocket");
    }
    if !has_token(head, "connection", "upgrade") {
        return Err("missing header Connection: Upgrade");
    }
    if head.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13".as_slice()) {
        return Err("unsupported Sec-WebSocket-Version; use 13");
    }
    let key = head
        .header_str("sec-websocket-key")
        .map(str::trim)
        .ok_or("missing header Sec-WebSocket-Key")?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(key.to_owned()),
        _ => Err("Sec-WebSocket-Key must be 16 bytes in base64"),
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// How far a [`ChunkedDecoder::decode`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that were used; remove them before the next call.
    pub consumed: usize,
    /// Whether the whole body, trailers included, has been read.
    pub done: bool,
}

/// Where a [`ChunkedDecoder`] is within the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// After the last chunk, reading trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// Incremental decoder of a `Transfer-Encoding: chunked` body (RFC 9112 §7.1).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body_bytes: u64,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            body_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decodes what it can of `input` into `out`.
    ///
    /// Returns how many input bytes were used and whether the body is complete; a chunk that
    /// would take the body over `max_body` is [`HttpError::BodyTooLarge`] before its data arrives.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<ChunkProgress, HttpError> {
        let mut position = 0;
        loop {
            let rest = input.get(position..).unwrap_or_default();
            match self.state {
                ChunkState::Done => break,
                // httparse reads an empty size as 0, which would end the body early.
                ChunkState::Size if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err(HttpError::InvalidChunk(
                        "chunk size must be hexadecimal digits",
                    ));
                }
                // Never past the limit: the answer must not depend on how the line was split
                // across reads, and a bad byte beyond the limit is never reached in pieces.
                ChunkState::Size => match httparse::parse_chunk_size(
                    rest.get(..MAX_CHUNK_SIZE_LINE).unwrap_or(rest),
                ) {
                    Ok(httparse::Status::Complete((line_len, size))) => {
                        let total = self.body_bytes.saturating_add(size);
                        if total > max_body as u64 {
                            return Err(HttpError::BodyTooLarge {
                                limit: max_body as u64,
                            });
                        }
                        position += line_len;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() >= MAX_CHUNK_SIZE_LINE {
                            return Err(HttpError::InvalidChunk("chunk-size line is too long"));
                        }
                        break;
                    }
                    Err(httparse::InvalidChunkSize) => {
                        return Err(HttpError::InvalidChunk("invalid chunk size"));
                    }
                },
                ChunkState::Data(remaining) => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    position += take;
                    self.body_bytes += take as u64;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let Some(&byte) = rest.first() else { break };
                    let expected = if self.state == ChunkState::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if byte != expected {
                        return Err(HttpError::InvalidChunk(
                            "chunk data is not followed by CRLF",
                        ));
                    }
                    position += 1;
                    self.state = if self.state == ChunkState::DataCr {
                        ChunkState::DataLf
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Trailer => {
                    let Some(newline) = rest.iter().position(|byte| *byte == b'\n') else {
                        if self.trailer_bytes + rest.len() > MAX_TRAILER_BYTES {
                            return Err(HttpError::InvalidChunk("trailer is too long"));
                        }
                        break;
                    };
                    let line_len = newline + 1;
                    self.trailer_bytes += line_len;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(HttpError::InvalidChunk("trailer is too long"));
                    }
                    let line = rest.get(..newline).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    position += line_len;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
        Ok(ChunkProgress {
            consumed: position,
            done: self.state == ChunkState::Done,
        })
    }
}

/// DRP's error shape: `{"Model":"…","Key":"…","Type":"…","Messages":["…"],"Code":400}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The object type the error is about (`machines`), or `""`.
    #[serde(rename = "Model")]
    pub model: String,
    /// The key of the object the error is about, or `""`.
    #[serde(rename = "Key")]
    pub key: String,
    /// The error class, such as `API_ERROR` or `AUTH_ERROR`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// What was wrong, in words.
    #[serde(rename = "Messages")]
    pub messages: Vec<String>,
    /// The HTTP status.
    #[serde(rename = "Code")]
    pub code: u16,
}

impl ApiError {
    /// An error with one message and the default class for `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            model: String::new(),
            key: String::new(),
            kind: default_error_kind(code).to_owned(),
            messages: vec![message.into()],
            code,
        }
    }

    /// Sets the object type the error is about.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the key of the object the error is about.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Replaces the error class.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Adds another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.messages.push(message.into());
        self
    }
}

/// The error class used when a caller does not name one.
fn default_error_kind(code: u16) -> &'static str {
    match code {
        401 | 403 => "AUTH_ERROR",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "CONFLICT",
        422 => "VALIDATION_ERROR",
        500..=599 => "SERVER_ERROR",
        _ => "API_ERROR",
    }
}

/// An HTTP response to be encoded onto a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `body` serialized as JSON.
    pub fn json<T: Serialize>(status: u16, body: &T) -> Response {
        match serde_json::to_vec(body) {
            Ok(bytes) => Response::empty(status).with_body("application/json", bytes),
            Err(err) => Response::error(ApiError::new(
                500,
                format!("could not encode the answer as JSON: {err}"),
            )),
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Response {
        Response::empty(204)
    }

    /// An error in DRP's shape, with the error's code as status.
    pub fn error(err: ApiError) -> Response {
        // ApiError holds only strings and numbers, so serializing it cannot fail.
        let body = serde_json::to_vec(&err).unwrap_or_default();
        let response = Response::empty(err.code).with_body("application/json", body);
        // Every 503 herald answers is passing (stopping, busy, the cluster's log unreachable).
        if err.code == 503 {
            response.with_header("Retry-After", "1")
        } else {
            response
        }
    }

    /// The first of the `Messages` of an error answer in DRP's shape, for the server log.
    pub fn error_message(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        body.get("Messages")?.get(0)?.as_str().map(str::to_owned)
    }

    /// A response with this status, no headers and no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header; CR and LF in the value become spaces so no value can split the head.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        let value = value.into().replace(['\r', '\n'], " ");
        let name = name.replace(['\r', '\n', ':'], "");
        self.headers.push((name, value));
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Response {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self = self.with_header("Content-Type", content_type);
        self.body = body;
        self
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Appends the whole response to `out`.
    ///
    /// `Content-Length` always (except on 1xx, 204 and 304, which never have content and where
    /// RFC 9110 §8.6 forbids a length that is not the representation's),
    /// `Content-Type: application/json` when no other type was set (a 204 too: drpcli refuses
    /// every answer but a 304 without it), `Connection: close` when `!keep_alive`, and no body
    /// when `head_only` (a HEAD request).
    pub fn encode(&self, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        let typed = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if !typed {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let body_allowed = !(100..200).contains(&self.status) && !matches!(self.status, 204 | 304);
        if body_allowed {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if body_allowed && !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The standard reason phrase for `status`, or `""` for codes without one.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = DEFAULT_MAX_HEADER_BYTES;

    fn complete(raw: &[u8]) -> RequestHead {
        match parse_head(raw, LIMIT) {
            Ok(Head::Complete { head, len }) => {
                assert_eq!(len, raw.len(), "head length");
                head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn error_of(raw: &[u8]) -> HttpError {
        match parse_head(raw, LIMIT) {
            Err(err) => err,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    const UPGRADE: &[u8] = b"GET /api/v3/ws?token=abc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn a_simple_get_parses_with_its_fields() {
        let head =
            complete(b"GET /api/v3/info?x=1 HTTP/1.1\r\nHost: example\r\nX-Thing: a b\r\n\r\n");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/api/v3/info?x=1");
        assert_eq!(head.path(), "/api/v3/info");
        assert_eq!(head.raw_query(), "x=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.body, BodyKind::None);
        assert!(head.keep_alive);
        assert_eq!(head.websocket_key, None);
        assert_eq!(head.header("host"), Some(b"example".as_slice()));
        assert_eq!(head.header("X-THING"), Some(b"a b".as_slice()));
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn the_body_starts_right_after_the_head() {
        let raw = b"POST /api/v3/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        match parse_head(raw, LIMIT) {
            Ok(Head::Complete { head, len }) => {
                assert_eq!(head.body, BodyKind::Length(2));
                assert_eq!(raw.get(len..), Some(b"{}".as_slice()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_head_split_at_every_byte_is_partial_until_complete() {
        for raw in [
            UPGRADE,
            b"POST /x HTTP/1.0\nContent-Length: 3\n\n".as_slice(),
        ] {
            let whole = complete(raw);
            for cut in 0..raw.len() {
                assert_eq!(
                    parse_head(&raw[..cut], LIMIT),
                    Ok(Head::Partial),
                    "prefix {cut}"
                );
            }
            assert_eq!(complete(raw), whole);
        }
    }

    #[test]
    fn header_size_limits_are_431() {
        let limit = 64;
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("complete but too long", long.clone().into_bytes()),
            ("partial at the limit", long.as_bytes()[..limit].to_vec()),
            (
                "partial past the limit",
                long.as_bytes()[..limit + 10].to_vec(),
            ),
        ];
        for (name, raw) in cases {
            assert_eq!(
                parse_head(&raw, limit),
                Err(HttpError::HeaderTooLarge { limit }),
                "{name}"
            );
            assert_eq!(HttpError::HeaderTooLarge { limit }.status(), 431);
        }
        assert_eq!(
            parse_head(&long.as_bytes()[..limit - 1], limit),
            Ok(Head::Partial)
        );
        let exact = b"GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(
            parse_head(exact, exact.len()),
            Ok(Head::Complete { .. })
        ));
    }

    #[test]
    fn more_than_a_hundred_headers_are_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for index in 0..=MAX_HEADERS {
            raw.push_str(&format!("X-{index}: v\r\n"));
        }
        raw.push_str("\r\n");
        let err = error_of(raw.as_bytes());
        assert_eq!(err, HttpError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn malformed_requests_are_400_with_a_reason() {
        let cases: &[&[u8]] = &[
            b"GET\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for raw in cases {
            let err = error_of(raw);
            assert_eq!(
                err.status(),
                400,
                "{:?}: {err}",
                String::from_utf8_lossy(raw)
            );
            assert!(matches!(err, HttpError::Malformed(_)), "{err:?}");
        }
    }

    #[test]
    fn content_length_variants_are_checked() {
        let ok: &[(&str, BodyKind)] = &[
            ("Content-Length: 10\r\n", BodyKind::Length(10)),
            ("Content-Length: 0\r\n", BodyKind::None),
            (
                "Content-Length: 7\r\nContent-Length: 7\r\n",
                BodyKind::Length(7),
            ),
            ("Content-Length: 7, 7\r\n", BodyKind::Length(7)),
            ("content-length:  12 \r\n", BodyKind::Length(12)),
            ("Transfer-Encoding: chunked\r\n", BodyKind::Chunked),
            ("Transfer-Encoding: Chunked\r\n", BodyKind::Chunked),
        ];
        for (headers, expected) in ok {
            let raw = format!("POST /x HTTP/1.1\r\n{headers}\r\n");
            assert_eq!(complete(raw.as_bytes()).body, *expected, "{headers}");
        }
        let bad: &[(&str, u16)] = &[
            ("Content-Length: abc\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: 1.5\r\n", 400),
            ("Content-Length: 0x10\r\n", 400),
            ("Content-Length:\r\n", 400),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", 400),
            ("Content-Length: 5, 6\r\n", 400),
            ("Content-Length: 1 2\r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 413),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: gzip\r\n", 501),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                501,
            ),
            ("Transfer-Encoding: \r\n", 501),
        ];
        for (headers, status) in bad {
            let raw = format!("POST /x HTTP/1.1\r\n{headers}\r\n");
            let err = error_of(raw.as_bytes());
            assert_eq!(err.status(), *status, "{headers}: {err}");
        }
        let http10 = error_of(b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(http10.status(), 400);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let cases: &[(&str, bool)] = &[
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                "GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (raw, expected) in cases {
            assert_eq!(complete(raw.as_bytes()).keep_alive, *expected, "{raw}");
        }
    }

    #[test]
    fn a_valid_upgrade_carries_the_websocket_key() {
        let head = complete(UPGRADE);
        assert_eq!(
            head.websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(head.websocket_refusal(), None);
        assert_eq!(head.query("token").as_deref(), Some("abc"));
    }

    #[test]
    fn invalid_upgrades_have_no_key_and_a_reason() {
        let text = std::str::from_utf8(UPGRADE).unwrap_or_default();
        let cases = [
            ("GET /api", "POST /api"),
            ("Upgrade: websocket", "Upgrade: h2c"),
            ("Connection: keep-alive, Upgrade", "Connection: keep-alive"),
            ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            ("HTTP/1.1", "HTTP/1.0"),
        ];
        for (from, to) in cases {
            let raw = text.replacen(from, to, 1);
            let head = complete(raw.as_bytes());
            assert_eq!(head.websocket_key, None, "{to}");
            assert!(head.websocket_refusal().is_some(), "{to}");
        }
    }

    #[test]
    fn path_segments_are_split_before_percent_decoding() {
        let cases: &[(&str, Result<Vec<&str>, ()>)] = &[
            ("/", Ok(vec![])),
            ("/api/v3/ws", Ok(vec!["api", "v3", "ws"])),
            ("/api/v3/ws/", Ok(vec!["api", "v3", "ws", ""])),
            (
                "/api/v3/connections/127.0.0.1%3A50412",
                Ok(vec!["api", "v3", "connections", "127.0.0.1:50412"]),
            ),
            ("/a%2Fb/c?x=%2F", Ok(vec!["a/b", "c"])),
            ("/caf%C3%A9", Ok(vec!["café"])),
            ("/bad%FF", Err(())),
            (
                "http://host:8092/api/v3/info?x",
                Ok(vec!["api", "v3", "info"]),
            ),
            ("http://host:8092", Ok(vec![])),
        ];
        for (target, expected) in cases {
            let head = complete(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
            let got = head.path_segments();
            match expected {
                Ok(segments) => assert_eq!(
                    got.as_deref().ok(),
                    Some(
                        segments
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .as_slice()
                    ),
                    "{target}"
                ),
                Err(()) => assert_eq!(got.map_err(|err| err.status()), Err(400), "{target}"),
            }
        }
    }

    #[test]
    fn query_returns_the_first_form_decoded_value() {
        let head =
            complete(b"GET /e?since=5&filter=a.b.c%2Cd&since=9&q=a+b&empty= HTTP/1.1\r\n\r\n");
        assert_eq!(head.query("since").as_deref(), Some("5"));
        assert_eq!(head.query("filter").as_deref(), Some("a.b.c,d"));
        assert_eq!(head.query("q").as_deref(), Some("a b"));
        assert_eq!(head.query("empty").as_deref(), Some(""));
        assert_eq!(head.query("Since"), None);
    }

    fn decode_all(
        input: &[u8],
        max_body: usize,
        piece: usize,
    ) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut fed = 0;
        loop {
            let next = (fed + piece).min(input.len());
            pending.extend_from_slice(&input[fed..next]);
            fed = next;
            let progress = decoder.decode(&pending, &mut out, max_body)?;
            pending.drain(..progress.consumed);
            if progress.done {
                return Ok((out, pending.len() + input.len() - fed));
            }
            if fed == input.len() {
                return Err(HttpError::InvalidChunk("test input ended early"));
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_the_same_in_pieces_of_every_size() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for piece in 1..=body.len() {
            let (out, left) =
                decode_all(body, 1024, piece).unwrap_or_else(|err| panic!("{piece}: {err}"));
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.", "piece {piece}");
            assert_eq!(left, 4, "the bytes after the body are left alone");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_rejected() {
        let long_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(2000));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "y".repeat(10_000));
        let cases: Vec<(&str, Vec<u8>, usize, u16)> = vec![
            ("non-hex size", b"zz\r\nab\r\n0\r\n\r\n".to_vec(), 100, 400),
            ("negative size", b"-1\r\nab\r\n0\r\n\r\n".to_vec(), 100, 400),
            ("empty size", b"\r\nab\r\n0\r\n\r\n".to_vec(), 100, 400),
            (
                "size that is only an extension",
                b";x\r\n".to_vec(),
                100,
                400,
            ),
            (
                "space before the size",
                b" 5\r\nhello\r\n0\r\n\r\n".to_vec(),
                100,
                400,
            ),
            (
                "overflowing size",
                b"fffffffffffffffff\r\n".to_vec(),
                100,
                400,
            ),
            (
                "missing CRLF after data",
                b"2\r\nabc\r\n0\r\n\r\n".to_vec(),
                100,
                400,
            ),
            (
                "LF only after data",
                b"2\r\nab\n0\r\n\r\n".to_vec(),
                100,
                400,
            ),
            ("endless extension", long_extension.into_bytes(), 100, 400),
            ("endless trailer", long_trailer.into_bytes(), 100, 400),
            ("one chunk over the limit", b"b\r\n".to_vec(), 10, 413),
            (
                "chunks adding up over the limit",
                b"6\r\nabcdef\r\n5\r\n".to_vec(),
                10,
                413,
            ),
            (
                "huge declared chunk",
                b"ffffffffffffffff\r\n".to_vec(),
                1 << 20,
                413,
            ),
        ];
        for (name, input, max_body, status) in cases {
            let result = decode_all(&input, max_body, input.len());
            assert_eq!(result.map_err(|err| err.status()), Err(status), "{name}");
        }
        assert!(
            decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10, 3).is_ok(),
            "exactly at the limit"
        );
    }

    #[test]
    fn a_long_chunk_size_line_gets_the_same_error_however_it_arrives() {
        // Found by fuzzing: a bare CR after the limit answered "invalid chunk size" when the
        // line came in one read and "too long" when it came in pieces.
        let line = format!(
            "2;{}\rX\r\nab\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_SIZE_LINE)
        );
        for piece in [1, 7, 1000, line.len()] {
            assert_eq!(
                decode_all(line.as_bytes(), 100, piece),
                Err(HttpError::InvalidChunk("chunk-size line is too long")),
                "pieces of {piece}"
            );
        }
        let longest = format!(
            "2;{}\r\nab\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_SIZE_LINE - 4)
        );
        for piece in [1, longest.len()] {
            assert_eq!(
                decode_all(longest.as_bytes(), 100, piece).map(|(out, _)| out),
                Ok(b"ab".to_vec()),
                "a line exactly at the limit, pieces of {piece}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_the_head_parser_or_chunk_decoder(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            piece in 1usize..64,
        ) {
            let _ = parse_head(&bytes, 256);
            let _ = decode_all(&bytes, 128, piece);
            let mut request = b"GET /".to_vec();
            request.extend_from_slice(&bytes);
            if let Ok(Head::Complete { head, .. }) = parse_head(&request, LIMIT) {
                let _ = (head.path_segments(), head.query("a"), head.websocket_refusal());
            }
        }
    }

    #[test]
    fn responses_encode_with_length_and_connection() {
        let mut out = Vec::new();
        Response::json(200, &serde_json::json!({"a": 1}))
            .with_header("Herald-Seq", "5")
            .encode(true, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nHerald-Seq: 5\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );

        out.clear();
        Response::json(200, &[1, 2]).encode(false, true, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        );

        out.clear();
        Response::no_content()
            .with_header("Herald-Seq", "9")
            .encode(true, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nHerald-Seq: 9\r\n\r\n"
        );

        // A 304 has no content, and a length would have to be the unsent file's.
        out.clear();
        Response::empty(304)
            .with_header("ETag", "\"1\"")
            .encode(true, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 304 Not Modified\r\nContent-Type: application/json\r\nETag: \"1\"\r\n\r\n"
        );
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut out = Vec::new();
        Response::no_content()
            .with_header("X", "a\r\nSet-Cookie: b")
            .encode(true, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nX: a  Set-Cookie: b\r\n\r\n"
        );
    }

    #[test]
    fn errors_use_drps_shape_with_the_matching_status() {
        let err = ApiError::new(404, "no such machine")
            .with_model("machines")
            .with_key("abc");
        let response = Response::error(err);
        assert_eq!(response.status, 404);
        assert_eq!(
            String::from_utf8_lossy(response.body()),
            r#"{"Model":"machines","Key":"abc","Type":"NOT_FOUND","Messages":["no such machine"],"Code":404}"#
        );
        let from_http = HttpError::BodyTooLarge { limit: 10 }.api_error();
        assert_eq!(from_http.code, 413);
        assert_eq!(from_http.kind, "API_ERROR");
        assert_eq!(ApiError::new(401, "x").kind, "AUTH_ERROR");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    }
}
