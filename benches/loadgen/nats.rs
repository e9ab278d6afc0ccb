//! The NATS text protocol as a subscriber and publisher see it. Over websocket, NATS frames are
//! arbitrary cuts of the byte stream, so the parser works on a reassembled stream and reports
//! how much of it each operation used.

/// Sent first on every connection: no `+OK` per command, and no echo of our own publishes.
pub const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false,\"lang\":\"rust\",\"version\":\"0\",\"name\":\"loadgen\"}\r\n";

/// One server operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// A delivered message and its payload.
    Msg(&'a [u8]),
    /// The server's keep-alive; answer `PONG`.
    Ping,
    /// The answer to our `PING`: everything sent before it has been processed.
    Pong,
    /// `INFO`, `+OK`: nothing to do.
    Other,
    /// `-ERR '…'`, with the server's text.
    Err(&'a [u8]),
}

/// Parses the operation at the start of `buf`: `Ok(None)` until it is complete, else the
/// operation and the bytes it used.
pub fn next_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, String> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("a NATS control line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    if let Some(args) = line.strip_prefix(b"MSG ") {
        let size = args
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
        let start = eol + 2;
        let end = start + size;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        return Ok(Some((Op::Msg(&buf[start..end]), end + 2)));
    }
    let op = if line == b"PING" {
        Op::Ping
    } else if line == b"PONG" {
        Op::Pong
    } else if let Some(text) = line.strip_prefix(b"-ERR") {
        Op::Err(text)
    } else {
        Op::Other
    };
    Ok(Some((op, eol + 2)))
}
