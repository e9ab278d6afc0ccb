//! The NATS text protocol as a subscriber and publisher see it. Over websocket, NATS frames are
//! arbitrary cuts of the byte stream, so the parser works on a reassembled stream and reports
//! how much of it each operation used.

/// Sent first on every connection: no `+OK` per command, and no echo of our own publishes.
pub(crate) const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false,\"lang\":\"rust\",\"version\":\"0\",\"name\":\"loadgen\"}\r\n";

/// One server operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
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
pub(crate) fn next_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, String> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("a NATS control line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    if let Some(args) = line.strip_prefix(b"MSG ") {
        let size = last_number(args)
            .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
        let start = eol + 2;
        let end = start + size;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        return Ok(Some((Op::Msg(&buf[start..end]), end + 2)));
    }
    if let Some(args) = line.strip_prefix(b"HMSG ") {
        // Headers and payload are counted together in the last field; the benchmark's events
        // carry no headers, so only JetStream's control messages come this way: skip them.
        let total = last_number(args)
            .ok_or_else(|| format!("bad HMSG line {:?}", String::from_utf8_lossy(line)))?;
        let end = eol + 2 + total;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        return Ok(Some((Op::Other, end + 2)));
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

/// The last space-separated field of a control line, as a byte count.
fn last_number(args: &[u8]) -> Option<usize> {
    let field = args.rsplit(|&b| b == b' ').next()?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The JetStream stream that holds the replay workload's events.
pub(crate) const STREAM: &str = "LOADGEN";

/// The request that creates [`STREAM`] over every benchmark subject.
pub(crate) fn stream_create() -> (String, Vec<u8>) {
    (
        format!("$JS.API.STREAM.CREATE.{STREAM}"),
        format!(r#"{{"name":"{STREAM}","subjects":["machines.>"],"storage":"file"}}"#).into_bytes(),
    )
}

/// The request that asks for [`STREAM`]'s state (its `"messages"` count).
pub(crate) fn stream_info() -> String {
    format!("$JS.API.STREAM.INFO.{STREAM}")
}

/// `SUB`s and the request for an ephemeral push consumer that delivers the whole stream to
/// `inbox.d` as fast as it can (no acks), answering on `inbox.r`: JetStream's replay. The
/// deliver subject needs a literal subscription: nats-server 2.9 does not count a wildcard one
/// as interest and then never delivers.
pub(crate) fn replay_commands(inbox: &str) -> Vec<u8> {
    let config = format!(
        r#"{{"stream_name":"{STREAM}","config":{{"deliver_subject":"{inbox}.d","deliver_policy":"all","ack_policy":"none","replay_policy":"instant","filter_subject":"machines.>"}}}}"#
    );
    let mut out = format!(
        "SUB {inbox}.d 1\r\nSUB {inbox}.r 2\r\nPUB $JS.API.CONSUMER.CREATE.{STREAM} {inbox}.r {}\r\n",
        config.len()
    )
    .into_bytes();
    out.extend_from_slice(config.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}
