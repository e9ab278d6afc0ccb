//! The byte stream under a connection: plain TCP, or TLS with rustls driven by hand over
//! monoio's owned-buffer IO.
//!
//! Before a websocket upgrade one task owns the whole [`Transport`]; after it, the stream is split
//! into a [`ReadSide`] (the connection's only reader task: io_uring reads are never cancelled) and
//! a [`WriteSide`] (its writer task), which share the TLS state on the same core.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::net::notify::Notify;
use crate::net::outbound::{OutChunk, SharedFrames};

/// Bytes asked of the socket per read at first: an idle connection keeps this buffer in flight
/// for its whole life, so it starts small (commands are small) and grows only under load.
const READ_MIN: usize = 1024;
/// The largest read buffer a busy connection grows to.
const READ_MAX: usize = 64 * 1024;
/// Ciphertext gathered before a TLS write.
const TLS_CHUNK: usize = 16 * 1024;
/// Plaintext handed to rustls per call, so its record buffer stays small.
const TLS_WRITE_CHUNK: usize = 16 * 1024;
/// How long a client that sent plain HTTP to the TLS port has to read the 400 and close before
/// the socket is closed under it.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(1);

/// One accepted connection's byte stream.
pub(crate) struct Transport {
    stream: TcpStream,
    tls: Option<ServerConnection>,
    scratch: ReadBuf,
    fd: RawFd,
    first_byte: Option<u8>,
}

/// The buffer a read owns while it is in flight; doubles when a read fills it.
struct ReadBuf {
    buf: Vec<u8>,
    size: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: Vec::new(),
            size: READ_MIN,
        }
    }

    /// The buffer for the next read: empty, with room for `size` bytes.
    fn take(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(self.size);
        buf
    }

    /// Takes the buffer back after a read of `n` bytes.
    fn put_back(&mut self, buf: Vec<u8>, n: usize) {
        if n >= self.size && self.size < READ_MAX {
            self.size *= 2;
        }
        self.buf = buf;
    }

    fn filled(&self, n: usize) -> &[u8] {
        &self.buf[..n.min(self.buf.len())]
    }
}

impl Transport {
    /// Wraps an accepted stream; with a TLS config the handshake happens on the first reads.
    pub(crate) fn new(stream: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Transport> {
        let tls = match tls {
            Some(config) => {
                Some(ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?)
            }
            None => None,
        };
        let fd = stream.as_raw_fd();
        Ok(Transport {
            stream,
            tls,
            scratch: ReadBuf::new(),
            fd,
            first_byte: None,
        })
    }

    /// Whether this is TLS with its handshake not yet complete.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    /// Whether the peer's first byte was an ASCII letter: an HTTP method, where a TLS client
    /// would have sent a handshake record (byte 0x16).
    pub(crate) fn began_with_plain_http(&self) -> bool {
        self.first_byte
            .is_some_and(|b| crate::net::tls::is_plain_http(&[b]))
    }

    /// The socket's file descriptor, for `shutdown` from a watchdog.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Appends plaintext to `out`; `Ok(0)` means the peer closed.
    pub(crate) async fn read_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            if let Some(tls) = self.tls.as_mut() {
                flush_tls(tls, &mut self.stream).await?;
            }
            let (res, buf) = self.stream.read(self.scratch.take()).await;
            let n = res.as_ref().map_or(0, |n| *n);
            self.scratch.put_back(buf, n);
            let n = res?;
            if n == 0 {
                return Ok(0);
            }
            let first = self.first_byte.is_none();
            if first {
                self.first_byte = self.scratch.filled(n).first().copied();
            }
            match self.tls.as_mut() {
                None => {
                    out.extend_from_slice(self.scratch.filled(n));
                    return Ok(n);
                }
                Some(tls) => {
                    if first && crate::net::tls::is_plain_http(self.scratch.filled(n)) {
                        return Err(self.refuse_plain_http(n).await);
                    }
                    let got = feed_tls(tls, self.scratch.filled(n), out)?;
                    flush_tls(tls, &mut self.stream).await?;
                    if got > 0 {
                        return Ok(got);
                    }
                    if tls.wants_read() {
                        continue;
                    }
                }
            }
        }
    }

    /// Answers a plain HTTP request on the TLS port with a plain `400` naming https://, ends
    /// the sending side, then reads until the client closes or [`PLAIN_HTTP_LINGER`] passes, so
    /// the answer is not lost to a reset caused by unread bytes. Returns the error that ends the
    /// connection.
    async fn refuse_plain_http(&mut self, n: usize) -> io::Error {
        let answer = crate::net::tls::plain_http_refusal(self.scratch.filled(n));
        let (written, _) = self.stream.write_all(answer).await;
        if written.is_ok() {
            shutdown(self.fd, Shutdown::Write);
            let stream = &mut self.stream;
            let drain = async {
                loop {
                    let (res, _) = stream.read(Vec::with_capacity(READ_MIN)).await;
                    if !matches!(res, Ok(n) if n > 0) {
                        break;
                    }
                }
            };
            let _ = monoio::time::timeout(PLAIN_HTTP_LINGER, drain).await;
        }
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a plain HTTP request came to the TLS port; answered 400",
        )
    }

    /// Writes all of `data`.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => {
                let (res, _) = self.stream.write_all(data.to_vec()).await;
                res.map(|_| ())
            }
            Some(tls) => {
                for chunk in data.chunks(TLS_WRITE_CHUNK) {
                    tls.writer().write_all(chunk)?;
                    flush_tls(tls, &mut self.stream).await?;
                }
                Ok(())
            }
        }
    }

    /// Splits into the reader and writer halves of an upgraded connection.
    pub(crate) fn into_split(self) -> (ReadSide, WriteSide) {
        let (read, write) = self.stream.into_split();
        let tls = self.tls.map(|t| Rc::new(RefCell::new(t)));
        let wake_writer = Rc::new(Notify::default());
        (
            ReadSide {
                read,
                tls: tls.clone(),
                scratch: self.scratch,
                wake_writer,
            },
            WriteSide {
                write,
                tls,
                cipher: Vec::new(),
            },
        )
    }
}

/// Feeds ciphertext to rustls and appends the plaintext it yields.
fn feed_tls(tls: &mut ServerConnection, mut cipher: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
    let mut got = 0;
    while !cipher.is_empty() {
        tls.read_tls(&mut cipher)?;
        let state = tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            let start = out.len();
            out.resize(start + available, 0);
            let n = tls.reader().read(&mut out[start..])?;
            out.truncate(start + n);
            got += n;
        }
    }
    Ok(got)
}

/// Sends whatever rustls has queued (handshake messages, records, alerts).
async fn flush_tls(tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        let mut cipher = Vec::with_capacity(TLS_CHUNK);
        while tls.wants_write() && cipher.len() < 4 * TLS_CHUNK {
            tls.write_tls(&mut cipher)?;
        }
        let (res, _) = stream.write_all(cipher).await;
        res?;
    }
    Ok(())
}

/// The reading half of an upgraded connection.
pub(crate) struct ReadSide {
    read: OwnedReadHalf<TcpStream>,
    tls: Option<Rc<RefCell<ServerConnection>>>,
    scratch: ReadBuf,
    wake_writer: Rc<Notify>,
}

impl ReadSide {
    /// Appends plaintext to `out`; `Ok(0)` means the peer closed.
    pub(crate) async fn read_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            let (res, buf) = self.read.read(self.scratch.take()).await;
            let n = res.as_ref().map_or(0, |n| *n);
            self.scratch.put_back(buf, n);
            let n = res?;
            if n == 0 {
                return Ok(0);
            }
            let Some(tls) = self.tls.as_ref() else {
                out.extend_from_slice(self.scratch.filled(n));
                return Ok(n);
            };
            let (got, wants_write) = {
                let mut tls = tls.borrow_mut();
                let got = feed_tls(&mut tls, self.scratch.filled(n), out)?;
                (got, tls.wants_write())
            };
            if wants_write {
                // Alerts or key updates produced by reading go out through the writer task.
                self.wake_writer.notify();
            }
            if got > 0 {
                return Ok(got);
            }
        }
    }

    /// Set when the reader produced TLS records that only the writer may send.
    pub(crate) fn tls_wakeup(&self) -> Rc<Notify> {
        self.wake_writer.clone()
    }
}

/// The writing half of an upgraded connection.
pub(crate) struct WriteSide {
    write: OwnedWriteHalf<TcpStream>,
    tls: Option<Rc<RefCell<ServerConnection>>>,
    cipher: Vec<u8>,
}

impl WriteSide {
    /// Writes all of `chunk` (plaintext): with `writev` on plain TCP, through the TLS session
    /// otherwise. Returns the chunk for reuse.
    pub(crate) async fn write_chunk<B: SharedFrames + 'static>(
        &mut self,
        mut chunk: OutChunk<B>,
    ) -> (io::Result<()>, OutChunk<B>) {
        let Some(tls) = self.tls.clone() else {
            while !chunk.is_written() {
                let (res, back) = self.write.writev(chunk).await;
                chunk = back;
                match res {
                    Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), chunk),
                    Ok(written) => chunk.advance(written),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return (Err(e), chunk),
                }
            }
            return (Ok(()), chunk);
        };
        let result = self.write_tls(&tls, &chunk).await;
        (result, chunk)
    }

    /// Encrypts and sends `chunk`, [`TLS_WRITE_CHUNK`] bytes of plaintext at a time.
    async fn write_tls<B: SharedFrames>(
        &mut self,
        tls: &Rc<RefCell<ServerConnection>>,
        chunk: &OutChunk<B>,
    ) -> io::Result<()> {
        // Pieces are gathered into full records: rustls seals each write as a record of its
        // own, and a record per small event costs both sides a seal and 22 bytes.
        let mut plain = Vec::with_capacity(chunk.len().min(TLS_WRITE_CHUNK));
        for slice in chunk.slices() {
            let mut rest = slice;
            while !rest.is_empty() {
                let take = rest.len().min(TLS_WRITE_CHUNK - plain.len());
                plain.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if plain.len() == TLS_WRITE_CHUNK {
                    tls.borrow_mut().writer().write_all(&plain)?;
                    plain.clear();
                    self.drain_tls(&mut tls.borrow_mut())?;
                    self.send_cipher().await?;
                }
            }
        }
        if !plain.is_empty() {
            tls.borrow_mut().writer().write_all(&plain)?;
        }
        self.drain_tls(&mut tls.borrow_mut())?;
        self.send_cipher().await
    }

    /// Sends TLS records the reader produced (alerts, key updates), if any.
    pub(crate) async fn flush_tls_records(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.clone() else {
            return Ok(());
        };
        self.drain_tls(&mut tls.borrow_mut())?;
        self.send_cipher().await
    }

    fn drain_tls(&mut self, tls: &mut ServerConnection) -> io::Result<()> {
        while tls.wants_write() {
            tls.write_tls(&mut self.cipher)?;
        }
        Ok(())
    }

    async fn send_cipher(&mut self) -> io::Result<()> {
        if self.cipher.is_empty() {
            return Ok(());
        }
        let cipher = std::mem::take(&mut self.cipher);
        let (res, mut buf) = self.write.write_all(cipher).await;
        buf.clear();
        self.cipher = buf;
        res.map(|_| ())
    }

    /// Sends a TLS close_notify where TLS is in use.
    pub(crate) async fn close_tls(&mut self) {
        if let Some(tls) = self.tls.clone() {
            tls.borrow_mut().send_close_notify();
            let _ = self.flush_tls_records().await;
        }
    }
}

/// Shuts a socket down, ending a read (and with [`Shutdown::Both`] a write) in flight on it.
pub(crate) fn shutdown(fd: RawFd, how: Shutdown) {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown(2) takes a descriptor number and touches no memory. Callers only pass the
    // descriptor of a connection whose tasks still own the open socket, so it cannot be reused.
    unsafe { libc::shutdown(fd, how) };
}

/// Which direction [`shutdown`] ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shutdown {
    /// End reads only: a pending read returns end-of-stream, writes still work.
    Read,
    /// End writes only: the peer reads end-of-stream, reads still work.
    Write,
    /// End both directions.
    Both,
}
