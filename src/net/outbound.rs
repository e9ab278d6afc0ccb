//! A websocket connection's outbound queue. Live events are queued by reference to their
//! batch ([`SharedFrames`]), whose frames every receiver shares: fan-out to a thousand connections queues
//! a thousand references, not a thousand copies. Replies, pings and replayed events are the
//! connection's own bytes. The writer takes everything queued as one [`OutChunk`] and sends it
//! with `writev`, [`MAX_IOVECS`] pieces per call.

use std::collections::VecDeque;
use std::rc::Rc;

use monoio::buf::IoVecBuf;

/// Most pieces handed to one `writev`: Linux's `IOV_MAX`.
pub(crate) const MAX_IOVECS: usize = 1024;

/// Own bytes are appended to the last own piece up to this size, so a run of small replies or
/// replayed events is one piece.
const OWN_PIECE_BYTES: usize = 16 * 1024;

/// Encoded frames that every receiver on a core shares, held by `Rc` while queued: the queue is
/// generic over them so it knows frames, not who sequenced them.
///
/// The bytes of a frame must not change while the value is alive: queued chunks point into them.
pub(crate) trait SharedFrames {
    /// The bytes of frame `index`, or `None` past the end.
    fn frame(&self, index: usize) -> Option<&[u8]>;
}

impl<T: SharedFrames> SharedFrames for std::sync::Arc<T> {
    fn frame(&self, index: usize) -> Option<&[u8]> {
        (**self).frame(index)
    }
}

/// One queued piece of the outbound stream.
enum Piece<B> {
    /// The frame of event `index` in a batch shared with every receiver on this core.
    Shared { batch: Rc<B>, index: u32 },
    /// Bytes only this connection sends.
    Own(Vec<u8>),
}

impl<B: SharedFrames> Piece<B> {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Shared { batch, index } => batch.frame(*index as usize).unwrap_or_default(),
            Piece::Own(bytes) => bytes,
        }
    }
}

/// What a connection has queued and not yet handed to its writer.
pub(crate) struct OutQueue<B> {
    pieces: VecDeque<Piece<B>>,
    bytes: usize,
}

impl<B> Default for OutQueue<B> {
    fn default() -> Self {
        OutQueue {
            pieces: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<B: SharedFrames> OutQueue<B> {
    /// Queues event `index` of `batch` by reference.
    pub(crate) fn push_shared(&mut self, batch: &Rc<B>, index: usize) {
        let Ok(index) = u32::try_from(index) else {
            return;
        };
        let piece = Piece::Shared {
            batch: Rc::clone(batch),
            index,
        };
        self.bytes += piece.bytes().len();
        self.pieces.push_back(piece);
    }

    /// Queues a copy of `bytes`.
    pub(crate) fn push_own(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        if let Some(Piece::Own(last)) = self.pieces.back_mut()
            && last.len() + bytes.len() <= OWN_PIECE_BYTES
        {
            last.extend_from_slice(bytes);
            return;
        }
        self.pieces.push_back(Piece::Own(bytes.to_vec()));
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
    }

    /// Moves everything queued into `chunk` (emptied first).
    pub(crate) fn take_into(&mut self, chunk: &mut OutChunk<B>) {
        chunk.clear();
        chunk.pieces.extend(self.pieces.drain(..));
        for piece in &chunk.pieces {
            let bytes = piece.bytes();
            chunk.len += bytes.len();
            chunk.iovecs.push(libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            });
        }
        self.bytes = 0;
    }
}

/// Pieces on their way to the socket, with the `iovec`s that point into them.
pub(crate) struct OutChunk<B> {
    pieces: Vec<Piece<B>>,
    iovecs: Vec<libc::iovec>,
    len: usize,
    /// The first iovec not yet completely written; the next `writev` sends at most
    /// [`MAX_IOVECS`] from there.
    cursor: usize,
}

impl<B> Default for OutChunk<B> {
    fn default() -> Self {
        OutChunk {
            pieces: Vec::new(),
            iovecs: Vec::new(),
            len: 0,
            cursor: 0,
        }
    }
}

impl<B: SharedFrames> OutChunk<B> {
    /// A chunk of one own piece.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> OutChunk<B> {
        let mut queue = OutQueue {
            bytes: bytes.len(),
            pieces: VecDeque::new(),
        };
        queue.pieces.push_back(Piece::Own(bytes));
        let mut chunk = OutChunk::default();
        queue.take_into(&mut chunk);
        chunk
    }

    /// Bytes in the chunk.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether every byte has been written (see [`OutChunk::advance`]).
    pub(crate) fn is_written(&self) -> bool {
        self.cursor >= self.iovecs.len()
    }

    /// Records that a `writev` wrote `written` bytes: the next one starts right after them.
    pub(crate) fn advance(&mut self, mut written: usize) {
        while let Some(iovec) = self.iovecs.get_mut(self.cursor) {
            if iovec.iov_len <= written {
                written -= iovec.iov_len;
                self.cursor += 1;
                continue;
            }
            // SAFETY: `written < iov_len`, so the pointer stays inside the same piece.
            iovec.iov_base = unsafe { iovec.iov_base.cast::<u8>().add(written) }.cast();
            iovec.iov_len -= written;
            return;
        }
    }

    /// The chunk's bytes, piece by piece.
    pub(crate) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces.iter().map(Piece::bytes)
    }

    /// Drops the pieces (releasing their batches), keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.iovecs.clear();
        self.pieces.clear();
        self.len = 0;
        self.cursor = 0;
    }

    /// Allocated piece slots, to decide whether a burst grew the chunk too large to keep.
    pub(crate) fn capacity(&self) -> usize {
        self.pieces.capacity()
    }
}

// SAFETY: every iovec points into a piece the chunk owns: a frame inside an `Rc`-held batch,
// whose frames do not change while it is alive (the contract of `SharedFrames`), or an own `Vec` that is never touched again once in the chunk; moving the
// chunk moves neither. `advance` only moves an iovec forward inside its own piece. The iovecs
// change only through `&mut self` methods (`take_into`, `advance`, `clear`), which the
// runtime's ownership of the chunk during a write rules out; the cursor never passes the end.
unsafe impl<B: 'static> IoVecBuf for OutChunk<B> {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.get(self.cursor..).unwrap_or_default().as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs
            .len()
            .saturating_sub(self.cursor)
            .min(MAX_IOVECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of frames, as a sequenced batch holds them.
    struct Frames(Vec<Vec<u8>>);

    impl SharedFrames for Frames {
        fn frame(&self, index: usize) -> Option<&[u8]> {
            self.0.get(index).map(Vec::as_slice)
        }
    }

    fn batch(count: u64) -> Rc<Frames> {
        let frames = (1..=count)
            .map(|seq| format!("frame of event {seq}").into_bytes())
            .collect();
        Rc::new(Frames(frames))
    }

    fn bytes_of(chunk: &OutChunk<Frames>) -> Vec<u8> {
        chunk.slices().flatten().copied().collect()
    }

    #[test]
    fn shared_frames_and_own_bytes_come_out_in_queue_order() {
        let batch = batch(2);
        let mut queue = OutQueue::default();
        queue.push_own(b"hello");
        queue.push_shared(&batch, 1);
        queue.push_own(b"a");
        queue.push_own(b"b");
        queue.push_shared(&batch, 0);
        let expected: Vec<u8> = [&b"hello"[..], &batch.0[1], b"ab", &batch.0[0]].concat();
        assert_eq!(queue.len(), expected.len());
        let mut chunk = OutChunk::default();
        queue.take_into(&mut chunk);
        assert_eq!(chunk.iovecs.len(), 4, "consecutive own bytes share a piece");
        assert_eq!(bytes_of(&chunk), expected);
        assert_eq!(chunk.len(), expected.len());
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
        for (iovec, slice) in chunk.iovecs.iter().zip(chunk.slices()) {
            assert_eq!(iovec.iov_base.cast_const().cast::<u8>(), slice.as_ptr());
            assert_eq!(iovec.iov_len, slice.len());
        }
    }

    /// What the next `writev` of `chunk` would send.
    fn next_writev(chunk: &OutChunk<Frames>) -> Vec<u8> {
        let iovecs = &chunk.iovecs[chunk.cursor..];
        assert_eq!(iovecs.as_ptr(), chunk.read_iovec_ptr());
        iovecs[..chunk.read_iovec_len()]
            .iter()
            .flat_map(|iovec| {
                // SAFETY: a test reading the iovecs the chunk built over its own pieces.
                unsafe { std::slice::from_raw_parts(iovec.iov_base.cast::<u8>(), iovec.iov_len) }
            })
            .copied()
            .collect()
    }

    #[test]
    fn partial_writes_resume_at_the_exact_byte_and_send_every_byte_once() {
        let batch = batch(3);
        let mut queue = OutQueue::default();
        for i in 0..MAX_IOVECS + 10 {
            queue.push_shared(&batch, i % 3);
            if i % 100 == 0 {
                queue.push_own(b"reply");
            }
        }
        let mut chunk = OutChunk::default();
        queue.take_into(&mut chunk);
        let expected = bytes_of(&chunk);
        assert_eq!(chunk.read_iovec_len(), MAX_IOVECS);
        let mut sent = Vec::new();
        // Write sizes that end inside pieces and cross the IOV_MAX boundary.
        let mut step = 1;
        while !chunk.is_written() {
            let offered = next_writev(&chunk);
            let written = offered.len().min(step);
            sent.extend_from_slice(&offered[..written]);
            chunk.advance(written);
            step = step * 7 % 9973 + 1;
        }
        assert_eq!(sent, expected);
        assert_eq!(chunk.read_iovec_len(), 0);
    }

    #[test]
    fn queued_references_keep_the_batch_alive_until_written() {
        let batch = batch(1);
        let mut queue = OutQueue::default();
        queue.push_shared(&batch, 0);
        assert_eq!(Rc::strong_count(&batch), 2);
        let mut chunk = OutChunk::default();
        queue.take_into(&mut chunk);
        assert_eq!(Rc::strong_count(&batch), 2);
        chunk.clear();
        assert_eq!(Rc::strong_count(&batch), 1);
    }
}
