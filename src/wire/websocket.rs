//! The websocket upgrade answer, reading client frames (RFC 6455), and writing server frame headers.
//!
//! Like [`crate::wire::http`], this is a codec over byte buffers: the connection appends what it read
//! and calls [`FrameReader::next_message`], which answers `Ok(None)` when more bytes are needed.
//! The frame header is parsed here rather than with tungstenite's `FrameHeader`, because we must
//! reject a frame from its first bytes (reserved bits, opcode, an oversized declared length)
//! without waiting for the rest of a 14-byte header, and the header is small.

/// Longest close reason that fits a control frame: 125 payload bytes minus the 2-byte code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Largest payload a control frame may carry (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Frame opcodes (RFC 6455 §5.2) that herald understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A further fragment of a text or binary message (0x0).
    Continuation,
    /// The first frame of a UTF-8 text message (0x1).
    Text,
    /// The first frame of a binary message (0x2).
    Binary,
    /// A close frame (0x8).
    Close,
    /// A ping (0x9).
    Ping,
    /// A pong (0xA).
    Pong,
}

impl OpCode {
    /// The 4-bit opcode as sent on the wire.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// The opcode of these 4 bits, or `None` for a reserved one.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The 101 answer to an upgrade, with `Sec-WebSocket-Accept` derived by tungstenite.
pub fn upgrade_response(client_key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// The one function that writes server frame headers: FIN set, unmasked, shortest length form.
pub fn write_frame_header(out: &mut Vec<u8>, opcode: OpCode, payload_len: usize) {
    out.push(0x80 | opcode.bits());
    if payload_len < 126 {
        // Lossless: payload_len < 126.
        out.push(payload_len as u8);
    } else if let Ok(short) = u16::try_from(payload_len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

/// A whole server frame (FIN set, unmasked) carrying `payload`.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    write_frame_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A close frame with `code` and `reason`, the reason cut to 123 bytes on a char boundary.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode_frame(OpCode::Close, &payload)
}

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, reassembled from its fragments.
    Text(String),
    /// A binary message; herald has no use for its bytes, so only its length is kept.
    Binary {
        /// The message length in bytes.
        len: usize,
    },
    /// A ping with its payload, to be echoed in a pong.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close, with the client's code and reason when it sent them.
    Close(Option<(u16, String)>),
}

/// A violation of RFC 6455 or of herald's message limit; the connection closes with
/// [`ProtocolError::close_code`] and this error's text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The client sent a frame without a mask; clients must mask every frame.
    #[error("client frames must be masked")]
    Unmasked,
    /// A reserved bit was set without a negotiated extension.
    #[error("reserved bits set in a frame header; no extension was negotiated")]
    ReservedBits,
    /// The opcode is one of the reserved values.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame (close, ping, pong) arrived without FIN.
    #[error("control frames must not be fragmented")]
    FragmentedControl,
    /// A control frame declared more than 125 payload bytes.
    #[error("control frame payload is longer than 125 bytes")]
    ControlTooLong,
    /// The 64-bit payload length has its most significant bit set.
    #[error("frame length has its most significant bit set")]
    InvalidLength,
    /// A continuation frame arrived while no fragmented message was in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived before the fragmented message was finished.
    #[error("new data frame while a fragmented message is unfinished")]
    UnfinishedFragments,
    /// The message is larger than the limit (detected from declared frame lengths).
    #[error("message is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A text message is not valid UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame carried a 1-byte payload, too short for a close code.
    #[error("close frame payload of 1 byte; a close code needs 2")]
    CloseTooShort,
    /// A close frame carried a code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close reason is not valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
}

impl ProtocolError {
    /// The close code this error is answered with: 1009, 1007, or 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::TooLarge { .. } => 1009,
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => 1007,
            _ => 1002,
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4 and the IANA registry):
/// 1004–1006 and 1015 are reserved for local use, 1016–2999 are unassigned.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A frame header that passed the structural checks.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

/// Parses the 2–14 byte header at the start of `buf`; `Ok(None)` when it is not all there.
///
/// Each check runs as soon as the byte it needs has arrived, so a bad frame is refused early.
fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode_bits = first & 0x0F;
    let opcode =
        OpCode::from_bits(opcode_bits).ok_or(ProtocolError::ReservedOpcode(opcode_bits))?;
    let fin = first & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    let Some(&second) = buf.get(1) else {
        return Ok(None);
    };
    if second & 0x80 == 0 {
        return Err(ProtocolError::Unmasked);
    }
    let length_byte = second & 0x7F;
    if opcode.is_control() && u64::from(length_byte) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlTooLong);
    }
    let (payload_len, length_end) = match length_byte {
        126 => {
            let Some(&[high, low]) = buf.get(2..4).and_then(|b| b.first_chunk::<2>()) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([high, low])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10).and_then(|b| b.first_chunk::<8>()) else {
                return Ok(None);
            };
            let length = u64::from_be_bytes(*bytes);
            if length >> 63 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            (length, 10)
        }
        short => (u64::from(short), 2),
    };
    let Some(mask) = buf
        .get(length_end..length_end + 4)
        .and_then(|b| b.first_chunk::<4>())
    else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask: *mask,
        header_len: length_end + 4,
        payload_len,
    }))
}

/// The data type of a fragmented message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A text or binary message whose final fragment has not arrived yet.
#[derive(Debug)]
struct Fragmented {
    kind: DataKind,
    /// The unmasked text so far; binary bytes are not kept.
    text: Vec<u8>,
    /// The message length so far, text or binary.
    len: usize,
}

/// UTF-8 validation of a text message as its bytes arrive, so that invalid text fails at the
/// first bad byte (RFC 6455 §8.1) rather than when the whole message is in.
#[derive(Debug, Default)]
struct Utf8Stream {
    /// The start of a character whose remaining bytes have not arrived yet (at most 3 bytes).
    incomplete: Vec<u8>,
}

impl Utf8Stream {
    /// Checks the next bytes of the message.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        if let Some(&lead) = self.incomplete.first() {
            // Complete the character split by the previous bytes, then go on from after it.
            let width = match lead {
                0xF0..=0xF4 => 4,
                0xE0..=0xEF => 3,
                _ => 2,
            };
            let take = (width - self.incomplete.len()).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            self.incomplete.extend_from_slice(head);
            bytes = rest;
            match std::str::from_utf8(&self.incomplete) {
                Ok(_) => self.incomplete.clear(),
                Err(error) if error.error_len().is_none() => return Ok(()),
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // Only the end is missing: keep that character's start for the next bytes.
            Err(error) if error.error_len().is_none() => {
                let tail = bytes.get(error.valid_up_to()..).unwrap_or_default();
                self.incomplete.extend_from_slice(tail);
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Checks that the message does not end inside a character.
    fn finish(&mut self) -> Result<(), ProtocolError> {
        let whole = self.incomplete.is_empty();
        self.incomplete.clear();
        if whole {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }
}

/// Reads client frames of one connection, reassembling fragmented messages.
#[derive(Debug)]
pub struct FrameReader {
    max_message_bytes: usize,
    fragmented: Option<Fragmented>,
    /// The text message in progress, checked up to the last byte received.
    utf8: Utf8Stream,
    /// How many payload bytes of the incomplete text frame at the front of the buffer have
    /// been checked already.
    checked: usize,
}

impl FrameReader {
    /// A reader that refuses messages over `max_message_bytes` (after reassembly) with 1009.
    pub fn new(max_message_bytes: usize) -> Self {
        FrameReader {
            max_message_bytes,
            fragmented: None,
            utf8: Utf8Stream::default(),
            checked: 0,
        }
    }

    /// Takes the next complete message out of the front of `buf` (removing its bytes);
    /// `Ok(None)` when more bytes are needed.
    ///
    /// A frame's payload is only buffered once its header has shown that it fits the limit, so a
    /// declared 1 GiB frame fails after at most 14 bytes.
    pub fn next_message(&mut self, buf: &mut Vec<u8>) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = parse_frame_header(buf)? else {
                return Ok(None);
            };
            self.check_sequence(&header)?;
            // Checked above: data frames fit max_message_bytes, control frames 125 bytes.
            let payload_len =
                usize::try_from(header.payload_len).map_err(|_| ProtocolError::TooLarge {
                    limit: self.max_message_bytes,
                })?;
            let frame_len = header.header_len + payload_len;
            let is_text = match header.opcode {
                OpCode::Text => true,
                OpCode::Continuation => self
                    .fragmented
                    .as_ref()
                    .is_some_and(|fragmented| fragmented.kind == DataKind::Text),
                _ => false,
            };
            if is_text {
                self.check_text(&header, buf, frame_len)?;
            }
            let Some(masked) = buf.get(header.header_len..frame_len) else {
                return Ok(None);
            };
            let unmasked = masked
                .iter()
                .zip(header.mask.iter().cycle())
                .map(|(byte, mask)| byte ^ mask);
            let message = match header.opcode {
                OpCode::Ping => Some(Message::Ping(unmasked.collect())),
                OpCode::Pong => Some(Message::Pong(unmasked.collect())),
                OpCode::Close => Some(parse_close(&unmasked.collect::<Vec<u8>>())?),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    let kind = match header.opcode {
                        OpCode::Text => DataKind::Text,
                        OpCode::Binary => DataKind::Binary,
                        _ => self
                            .fragmented
                            .as_ref()
                            .map_or(DataKind::Binary, |fragmented| fragmented.kind),
                    };
                    let fragmented = self.fragmented.get_or_insert_with(|| Fragmented {
                        kind,
                        text: Vec::new(),
                        len: 0,
                    });
                    if kind == DataKind::Text {
                        fragmented.text.extend(unmasked);
                    }
                    fragmented.len += payload_len;
                    if header.fin {
                        self.fragmented.take().map(finish_data).transpose()?
                    } else {
                        None
                    }
                }
            };
            buf.drain(..frame_len);
            self.checked = 0;
            if let Some(message) = message {
                return Ok(Some(message));
            }
        }
    }

    /// Checks the text payload bytes of the frame at the front of `buf` that arrived since the
    /// last call, and at the end of the message that it does not stop inside a character.
    fn check_text(
        &mut self,
        header: &FrameHeader,
        buf: &[u8],
        frame_len: usize,
    ) -> Result<(), ProtocolError> {
        if header.opcode == OpCode::Text && self.checked == 0 {
            self.utf8 = Utf8Stream::default();
        }
        let arrived = buf.len().min(frame_len).saturating_sub(header.header_len);
        let new = buf
            .get(header.header_len + self.checked..header.header_len + arrived)
            .unwrap_or_default();
        if !new.is_empty() {
            // The mask repeats every 4 bytes of the payload, counted from its start.
            let unmasked: Vec<u8> = new
                .iter()
                .zip(header.mask.iter().cycle().skip(self.checked % 4))
                .map(|(byte, mask)| byte ^ mask)
                .collect();
            self.utf8.feed(&unmasked)?;
            self.checked = arrived;
        }
        if header.fin && buf.len() >= frame_len {
            self.utf8.finish()?;
        }
        Ok(())
    }

    /// Checks a data frame against the fragmentation state and the message limit.
    fn check_sequence(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let so_far = match (header.opcode, &self.fragmented) {
            (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => return Ok(()),
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(fragmented)) => fragmented.len,
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::UnfinishedFragments);
            }
            (OpCode::Text | OpCode::Binary, None) => 0,
        };
        let total = (so_far as u64).saturating_add(header.payload_len);
        if total > self.max_message_bytes as u64 {
            return Err(ProtocolError::TooLarge {
                limit: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

/// Turns a reassembled data message into a [`Message`]; its text was checked as it arrived.
fn finish_data(fragmented: Fragmented) -> Result<Message, ProtocolError> {
    match fragmented.kind {
        DataKind::Text => String::from_utf8(fragmented.text)
            .map(Message::Text)
            .map_err(|_| ProtocolError::InvalidUtf8),
        DataKind::Binary => Ok(Message::Binary {
            len: fragmented.len,
        }),
    }
}

fn parse_close(payload: &[u8]) -> Result<Message, ProtocolError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(ProtocolError::CloseTooShort),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Message::Close(Some((code, reason.to_owned()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with full control over every header field.
    fn raw_frame(first: u8, masked: bool, length_form: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match length_form {
            126 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            127 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
            _ => out.push(mask_bit | payload.len() as u8),
        }
        if masked {
            out.extend_from_slice(&MASK);
            out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// A masked client frame with the shortest length form.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let form = match payload.len() {
            0..=125 => 0,
            126..=65535 => 126,
            _ => 127,
        };
        raw_frame(if fin { 0x80 } else { 0 } | opcode, true, form, payload)
    }

    /// Every message or the first error from `stream`, delivered in pieces of `piece` bytes.
    fn read_all(stream: &[u8], piece: usize, max: usize) -> (Vec<Message>, Option<ProtocolError>) {
        let mut reader = FrameReader::new(max);
        let mut buf = Vec::new();
        let mut messages = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match reader.next_message(&mut buf) {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(err) => return (messages, Some(err)),
                }
            }
        }
        assert!(buf.is_empty(), "bytes left over: {buf:?}");
        (messages, None)
    }

    fn close_code_of(stream: &[u8], max: usize) -> Option<u16> {
        read_all(stream, stream.len(), max)
            .1
            .map(|err| err.close_code())
    }

    #[test]
    fn the_upgrade_answer_carries_the_rfc_accept_key() {
        let answer = upgrade_response("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn server_frame_headers_use_the_shortest_length_form() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65535, &[0x81, 126, 0xff, 0xff]),
            (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, expected) in cases {
            let mut out = Vec::new();
            write_frame_header(&mut out, OpCode::Text, *len);
            assert_eq!(out.as_slice(), *expected, "length {len}");
        }
        assert_eq!(encode_frame(OpCode::Pong, b"hi"), vec![0x8A, 2, b'h', b'i']);
    }

    #[test]
    fn close_frames_cut_the_reason_on_a_char_boundary() {
        assert_eq!(close_frame(1000, ""), vec![0x88, 2, 0x03, 0xE8]);
        let reason = format!("{}é", "a".repeat(122));
        let frame = close_frame(4008, &reason);
        assert_eq!(
            frame.len(),
            2 + 2 + 122,
            "the 2-byte é does not fit after 122 bytes"
        );
        assert_eq!(frame.get(1), Some(&124));
        let long = "slow consumer; resume after 1042 ".repeat(10);
        assert_eq!(close_frame(4008, &long).len(), 2 + 125);
    }

    #[test]
    fn single_frames_become_messages() {
        let cases: Vec<(Vec<u8>, Message)> = vec![
            (
                frame(true, 1, b"register a.b.c"),
                Message::Text("register a.b.c".into()),
            ),
            (frame(true, 1, b""), Message::Text(String::new())),
            (frame(true, 2, &[0, 1, 2]), Message::Binary { len: 3 }),
            (frame(true, 9, b"ping"), Message::Ping(b"ping".to_vec())),
            (frame(true, 10, b""), Message::Pong(Vec::new())),
            (frame(true, 8, b""), Message::Close(None)),
            (
                frame(true, 8, b"\x03\xe8bye"),
                Message::Close(Some((1000, "bye".into()))),
            ),
            (
                frame(true, 8, b"\x0f\xa0"),
                Message::Close(Some((4000, String::new()))),
            ),
            (
                raw_frame(0x81, true, 126, b"long form"),
                Message::Text("long form".into()),
            ),
            (
                raw_frame(0x81, true, 127, b"longer form"),
                Message::Text("longer form".into()),
            ),
        ];
        for (bytes, expected) in cases {
            let (messages, err) = read_all(&bytes, bytes.len(), 4096);
            assert_eq!(err, None, "{expected:?}");
            assert_eq!(messages, vec![expected]);
        }
    }

    #[test]
    fn each_protocol_violation_closes_with_its_code() {
        let big_text = vec![b'x'; 100];
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked frame", raw_frame(0x81, false, 0, b"hi"), 1002),
            ("rsv1 set", raw_frame(0xC1, true, 0, b"hi"), 1002),
            ("rsv2 set", raw_frame(0xA1, true, 0, b"hi"), 1002),
            ("rsv3 set", raw_frame(0x91, true, 0, b"hi"), 1002),
            ("reserved data opcode", frame(true, 3, b""), 1002),
            ("reserved control opcode", frame(true, 0xB, b""), 1002),
            ("fragmented ping", frame(false, 9, b""), 1002),
            ("fragmented close", frame(false, 8, b""), 1002),
            ("ping over 125 bytes", frame(true, 9, &[0; 126]), 1002),
            (
                "close over 125 bytes",
                raw_frame(0x88, true, 126, &[3; 100]),
                1002,
            ),
            ("continuation first", frame(true, 0, b"x"), 1002),
            (
                "text inside a fragmented text",
                [frame(false, 1, b"a"), frame(true, 1, b"b")].concat(),
                1002,
            ),
            (
                "binary inside a fragmented text",
                [frame(false, 1, b"a"), frame(true, 2, b"b")].concat(),
                1002,
            ),
            ("text over the limit", frame(true, 1, &big_text), 1009),
            ("binary over the limit", frame(true, 2, &big_text), 1009),
            (
                "fragments adding up over the limit",
                [
                    frame(false, 1, &[b'x'; 40]),
                    frame(false, 0, &[b'x'; 40]),
                    frame(true, 0, b"x"),
                ]
                .concat(),
                1009,
            ),
            ("invalid UTF-8 text", frame(true, 1, b"\xff\xfe"), 1007),
            (
                "truncated UTF-8 at the end",
                frame(true, 1, b"caf\xc3"),
                1007,
            ),
            ("one-byte close", frame(true, 8, b"\x03"), 1002),
            (
                "close code 999",
                frame(true, 8, &999u16.to_be_bytes()),
                1002,
            ),
            (
                "close code 1005",
                frame(true, 8, &1005u16.to_be_bytes()),
                1002,
            ),
            (
                "close code 1006",
                frame(true, 8, &1006u16.to_be_bytes()),
                1002,
            ),
            (
                "close code 1015",
                frame(true, 8, &1015u16.to_be_bytes()),
                1002,
            ),
            (
                "close code 2999",
                frame(true, 8, &2999u16.to_be_bytes()),
                1002,
            ),
            (
                "close code 5000",
                frame(true, 8, &5000u16.to_be_bytes()),
                1002,
            ),
            (
                "invalid UTF-8 close reason",
                frame(true, 8, b"\x03\xe8\xff"),
                1007,
            ),
        ];
        for (name, bytes, code) in cases {
            assert_eq!(close_code_of(&bytes, 80), Some(code), "{name}");
        }
    }

    /// Feeds `stream` in the given pieces and answers the error and how many pieces it took.
    fn first_error_after(pieces: &[&[u8]]) -> Option<(ProtocolError, usize)> {
        let mut reader = FrameReader::new(1 << 20);
        let mut buf = Vec::new();
        for (at, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match reader.next_message(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(error) => return Some((error, at + 1)),
                }
            }
        }
        None
    }

    #[test]
    fn invalid_utf8_in_a_first_fragment_fails_before_the_message_ends() {
        let first = frame(
            false,
            1,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        );
        let last = frame(true, 0, b"edited");
        assert_eq!(
            first_error_after(&[&first, &last]),
            Some((ProtocolError::InvalidUtf8, 1))
        );
    }

    #[test]
    fn invalid_utf8_in_part_of_a_frame_fails_before_the_frame_is_complete() {
        let whole = frame(
            true,
            1,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
        );
        // Header (6 bytes) plus the valid text, then the first invalid byte, then the rest.
        let (valid, rest) = whole.split_at(6 + 11);
        let (bad, rest) = rest.split_at(2);
        assert_eq!(
            first_error_after(&[valid, bad, rest]),
            Some((ProtocolError::InvalidUtf8, 2))
        );
    }

    #[test]
    fn a_character_split_across_fragments_and_reads_is_accepted() {
        let text = "κόσμε €𝄞";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let stream = [frame(false, 1, a), frame(true, 0, b)].concat();
            for piece in 1..=stream.len() {
                assert_eq!(
                    read_all(&stream, piece, 1 << 20),
                    (vec![Message::Text(text.into())], None),
                    "split at {split}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_message_ending_inside_a_character_fails_even_when_fragments_were_valid() {
        let stream = [frame(false, 1, b"caf"), frame(true, 0, b"\xc3")].concat();
        assert_eq!(close_code_of(&stream, 80), Some(1007));
        // A new message starts clean after a complete one.
        let stream = [frame(true, 1, b"ok"), frame(true, 1, b"\xc3\xa9")].concat();
        assert_eq!(
            read_all(&stream, 1, 80),
            (
                vec![Message::Text("ok".into()), Message::Text("é".into())],
                None
            )
        );
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_accepted() {
        let (messages, err) = read_all(&frame(true, 1, &[b'x'; 80]), 7, 80);
        assert_eq!(err, None);
        assert_eq!(messages.len(), 1);
    }

    #[test]
    fn a_huge_declared_frame_fails_before_its_payload_arrives() {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        let mut reader = FrameReader::new(4096);
        let mut buf = header.clone();
        assert_eq!(
            reader.next_message(&mut buf),
            Ok(None),
            "mask not there yet"
        );
        buf.extend_from_slice(&MASK);
        assert_eq!(
            reader.next_message(&mut buf).map_err(|e| e.close_code()),
            Err(1009)
        );
        let mut top_bit = vec![0x82, 0x80 | 127];
        top_bit.extend_from_slice(&u64::MAX.to_be_bytes());
        top_bit.extend_from_slice(&MASK);
        assert_eq!(close_code_of(&top_bit, 4096), Some(1002));
    }

    #[test]
    fn a_bad_first_byte_fails_without_waiting_for_more() {
        for first in [0xC1u8, 0x83, 0x09] {
            let mut buf = vec![first];
            assert!(
                FrameReader::new(10).next_message(&mut buf).is_err(),
                "{first:#x}"
            );
        }
    }

    #[test]
    fn fragments_are_reassembled_with_control_frames_between() {
        let stream = [
            frame(false, 1, b"regi"),
            frame(true, 9, b"p1"),
            frame(false, 0, b"ster caf\xc3"),
            frame(true, 10, b""),
            frame(true, 0, b"\xa9.*.*"),
            frame(false, 2, &[1, 2]),
            frame(true, 0, &[3]),
            frame(true, 1, b"after"),
        ]
        .concat();
        let (messages, err) = read_all(&stream, stream.len(), 4096);
        assert_eq!(err, None);
        assert_eq!(
            messages,
            vec![
                Message::Ping(b"p1".to_vec()),
                Message::Pong(Vec::new()),
                Message::Text("register café.*.*".into()),
                Message::Binary { len: 3 },
                Message::Text("after".into()),
            ]
        );
    }

    #[test]
    fn a_stream_fed_in_pieces_of_every_size_reads_the_same() {
        let streams = [
            [
                frame(false, 1, b"hello "),
                frame(true, 9, b"x"),
                frame(true, 0, "wörld".as_bytes()),
                frame(true, 2, &[7; 300]),
                raw_frame(0x81, true, 127, b"wide"),
                frame(true, 8, b"\x03\xe8done"),
            ]
            .concat(),
            [
                frame(true, 1, b"ok"),
                frame(false, 1, b"a"),
                frame(true, 1, b"b"),
            ]
            .concat(),
            [frame(true, 1, b"ok"), frame(true, 1, &[b'y'; 600])].concat(),
        ];
        for stream in streams {
            let whole = read_all(&stream, stream.len(), 512);
            for piece in 1..stream.len() {
                assert_eq!(read_all(&stream, piece, 512), whole, "piece size {piece}");
            }
        }
    }

    #[test]
    fn bytes_after_a_message_stay_in_the_buffer() {
        let mut buf = [frame(true, 1, b"one"), frame(true, 1, b"tw")].concat();
        buf.pop();
        let mut reader = FrameReader::new(100);
        assert_eq!(
            reader.next_message(&mut buf),
            Ok(Some(Message::Text("one".into())))
        );
        assert_eq!(reader.next_message(&mut buf), Ok(None));
        assert_eq!(buf.len(), frame(true, 1, b"tw").len() - 1);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), piece in 1usize..64) {
            let mut reader = FrameReader::new(256);
            let mut buf = Vec::new();
            'feed: for chunk in bytes.chunks(piece) {
                buf.extend_from_slice(chunk);
                loop {
                    match reader.next_message(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        #[test]
        fn random_masked_frames_never_panic(
            frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..8),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|(first, payload)| raw_frame(*first, true, 0, payload.get(..125).unwrap_or(payload))).collect();
            let _ = read_all_lenient(&stream);
        }
    }

    fn read_all_lenient(stream: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut reader = FrameReader::new(256);
        let mut buf = stream.to_vec();
        let mut messages = Vec::new();
        while let Some(message) = reader.next_message(&mut buf)? {
            messages.push(message);
        }
        Ok(messages)
    }
}
