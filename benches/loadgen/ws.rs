//! The client side of RFC 6455, as much as a load generator needs: the upgrade request, masked
//! client frames, and a parser for the server's unmasked frames that never copies a payload.

use std::ops::Range;

/// Websocket opcodes: the server's own definition.
pub(crate) use herald::wire::websocket::OpCode;

/// One complete server frame inside a buffer.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The frame's opcode.
    pub opcode: OpCode,
    /// Where the payload lies in the buffer.
    pub payload: Range<usize>,
    /// Bytes of the whole frame, header included.
    pub len: usize,
}

/// The GET that asks for an upgrade; `authorization` is a complete header value or empty.
pub(crate) fn upgrade_request(host: &str, path: &str, authorization: &str) -> Vec<u8> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !authorization.is_empty() {
        request.push_str("Authorization: ");
        request.push_str(authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Checks the upgrade answer: `Ok(None)` until the head is complete, then the head's length.
pub(crate) fn upgrade_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err("the upgrade answer has no end of head in 16 KiB".into());
        }
        return Ok(None);
    };
    let head = &buf[..end];
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!(
            "the server refused the upgrade: {}",
            String::from_utf8_lossy(line)
        ));
    }
    Ok(Some(end + 4))
}

/// The fixed mask of every client frame. RFC 6455 wants it unpredictable to protect proxies;
/// on loopback a fixed non-zero mask costs the servers the same unmasking work.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Appends one masked client frame with FIN set.
pub(crate) fn encode_masked(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.push(0x80 | opcode.bits());
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= MASK[i & 3];
    }
}

/// Parses the server frame at the start of `buf`: `Ok(None)` when it is not complete yet.
pub(crate) fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, String> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err("the server sent a masked frame".into());
    }
    let opcode = OpCode::from_bits(first & 0x0f)
        .ok_or_else(|| format!("unknown opcode {:#x}", first & 0x0f))?;
    let (header, len) = match second & 0x7f {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (4, u64::from(u16::from_be_bytes([bytes[0], bytes[1]])))
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut eight = [0u8; 8];
            eight.copy_from_slice(bytes);
            (10, u64::from_be_bytes(eight))
        }
        short => (2, u64::from(short)),
    };
    let len = usize::try_from(len).map_err(|_| "a frame longer than memory".to_string())?;
    let total = header + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        opcode,
        payload: header..total,
        len: total,
    }))
}
