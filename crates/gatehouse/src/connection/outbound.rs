//! A connection's output queue: encoded frames waiting for the transport, in order.
//!
//! Small frames the connection makes itself (responses, pushes, pongs) are encoded
//! straight into `tail`, one buffer reused while the connection is busy, so a
//! response costs no allocation and pipelined answers leave in one contiguous write.
//! Frames made elsewhere and shared (a broadcast, encoded once for every recipient)
//! are queued as they are, in `chunks`, without copying. A stream transport writes
//! the queue with one vectored write ([`OutputQueue::slices`]); a message transport
//! takes it frame by frame ([`OutputQueue::take_frame`]). The queue knows where each
//! frame ends, so that a slow consumer's unsent frames can be dropped without
//! cutting the one already half written.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use gatehouse_protocol::HEADER_LEN;

/// Frames waiting for the transport: every chunk, then the tail.
#[derive(Debug, Default)]
pub(crate) struct OutputQueue {
    /// Sealed bytes ahead of `tail`: shared frames, and earlier contents of the tail.
    /// Each chunk holds whole frames, except that the front one may be partly sent.
    chunks: VecDeque<Bytes>,
    /// Where the connection encodes its own frames; last in the stream.
    tail: BytesMut,
    /// Bytes left of the frame at the front of the stream, 0 at a frame boundary.
    front_remaining: usize,
    /// Bytes queued in all.
    len: usize,
}

impl OutputQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The buffer to encode the connection's own frames into, with room for
    /// `additional` more bytes; `commit` must follow with what was written.
    pub(crate) fn tail_for(&mut self, additional: usize) -> &mut BytesMut {
        // Reclaims the space of what was sent when nothing else holds it.
        self.tail.reserve(additional);
        &mut self.tail
    }

    /// Accounts `n` bytes just encoded into the tail.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Queues a whole encoded frame made elsewhere, without copying it.
    pub(crate) fn push_shared(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            // Order: what the tail holds goes before the shared frame.
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += frame.len();
        self.chunks.push_back(frame);
    }

    /// Fills `dst` with the queued bytes in order; returns how many slices it used.
    pub(crate) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let parts = self
            .chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
            .filter(|part| !part.is_empty());
        let mut used = 0;
        for (slot, part) in dst.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
            used += 1;
        }
        used
    }

    /// The first `n` bytes queued (all of them, if fewer), in order, in as few
    /// pieces as they are held.
    pub(crate) fn front(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        let mut left = n.min(self.len);
        self.chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
            .map_while(move |part| {
                let piece = &part[..part.len().min(left)];
                left -= piece.len();
                (!piece.is_empty() || left > 0).then_some(piece)
            })
    }

    /// Removes the first `n` bytes (the transport took them).
    pub(crate) fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "consumed more than was queued");
        if n >= self.len {
            // Everything went (the usual case): no frame boundary to find.
            self.chunks.clear();
            self.tail.clear();
            self.front_remaining = 0;
            self.len = 0;
            return;
        }
        self.len -= n;
        while n > 0 {
            if self.front_remaining == 0 {
                self.front_remaining = self.front_frame_len();
            }
            let step = n.min(self.front_remaining);
            self.advance_front(step);
            self.front_remaining -= step;
            n -= step;
        }
    }

    /// Takes the next whole frame's body (without its header), for a transport that
    /// sends one message per frame. Returns the body and the bytes it took from the
    /// queue. Never called on a partly sent frame.
    pub(crate) fn take_frame(&mut self) -> Option<(Bytes, usize)> {
        if self.len == 0 {
            return None;
        }
        debug_assert_eq!(self.front_remaining, 0, "a frame was partly sent");
        let len = self.front_frame_len();
        let frame = match self.chunks.front_mut() {
            Some(chunk) if chunk.len() > len => chunk.split_to(len),
            Some(_) => self.chunks.pop_front().unwrap_or_default(),
            None => self.tail.split_to(len).freeze(),
        };
        self.len -= len;
        Some((frame.slice(HEADER_LEN.min(frame.len())..), len))
    }

    /// Drops every frame not yet started, keeping the one partly sent (so the stream
    /// stays well framed); returns the bytes dropped.
    pub(crate) fn discard_unstarted(&mut self) -> usize {
        let keep = self.front_remaining;
        let dropped = self.len - keep;
        if keep == 0 {
            self.chunks.clear();
            self.tail.clear();
        } else if let Some(front) = self.chunks.front_mut() {
            front.truncate(keep);
            self.chunks.truncate(1);
            self.tail.clear();
        } else {
            self.tail.truncate(keep);
        }
        self.len = keep;
        dropped
    }

    /// Drops everything queued, the frame partly sent too (its connection is gone);
    /// returns the bytes dropped.
    pub(crate) fn clear(&mut self) -> usize {
        self.chunks.clear();
        self.tail.clear();
        self.front_remaining = 0;
        std::mem::take(&mut self.len)
    }

    /// Hands back the tail's buffer if nothing is queued, so an idle connection holds
    /// none (the driver keeps it for the next busy connection).
    pub(crate) fn take_spare_buffer(&mut self) -> Option<BytesMut> {
        if self.len > 0 {
            return None;
        }
        self.chunks = VecDeque::new();
        reusable(&mut self.tail)
    }

    /// Lends a buffer to encode into (from a spare), when the tail has none; gives
    /// it back otherwise.
    pub(crate) fn lend_buffer(&mut self, mut buffer: BytesMut) -> Option<BytesMut> {
        if self.tail.capacity() == 0 && self.tail.is_empty() {
            buffer.clear();
            self.tail = buffer;
            None
        } else {
            Some(buffer)
        }
    }

    /// Length of the whole frame starting at the front of the stream (a boundary).
    fn front_frame_len(&self) -> usize {
        let front = self
            .chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
            .find(|part| !part.is_empty())
            .unwrap_or_default();
        // Invariant: every queued frame was encoded whole, header first.
        let body = front
            .first_chunk::<HEADER_LEN>()
            .map_or(0, |header| u32::from_be_bytes(*header) as usize);
        HEADER_LEN + body
    }

    /// Removes `n` bytes from the front of the stream (`n` within the front frame).
    fn advance_front(&mut self, mut n: usize) {
        while n > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() > n => {
                    chunk.advance(n);
                    return;
                }
                Some(chunk) => {
                    n -= chunk.len();
                    self.chunks.pop_front();
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }
}

/// Takes an empty buffer out of `buffer` if its memory can be written again without
/// allocating; one still shared with a frame someone keeps is dropped instead (the
/// memory stays with that frame).
pub(crate) fn reusable(buffer: &mut BytesMut) -> Option<BytesMut> {
    if !buffer.is_empty() {
        return None;
    }
    let mut taken = std::mem::take(buffer);
    taken.try_reclaim(1).then_some(taken)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn frame(body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u32(body.len() as u32);
        b.put_slice(body);
        b.freeze()
    }

    fn encode(queue: &mut OutputQueue, body: &[u8]) {
        let f = frame(body);
        queue.tail_for(f.len()).put_slice(&f);
        queue.commit(f.len());
    }

    fn contents(queue: &OutputQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = queue.slices(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn own_and_shared_frames_leave_in_the_order_they_were_queued() {
        let mut q = OutputQueue::default();
        encode(&mut q, b"a");
        encode(&mut q, b"bb");
        q.push_shared(frame(b"shared"));
        encode(&mut q, b"c");
        let expected = [frame(b"a"), frame(b"bb"), frame(b"shared"), frame(b"c")].concat();
        assert_eq!(contents(&q), expected);
        assert_eq!(q.len, expected.len());
        let mut iov = [IoSlice::new(&[]); 16];
        assert_eq!(
            q.slices(&mut iov),
            3,
            "own frames coalesce around the shared one"
        );
    }

    #[test]
    fn consuming_any_split_keeps_the_rest_intact() {
        let all = [frame(b"one"), frame(b""), frame(b"three"), frame(b"four!")].concat();
        for split in 0..=all.len() {
            let mut q = OutputQueue::default();
            encode(&mut q, b"one");
            encode(&mut q, b"");
            q.push_shared(frame(b"three"));
            encode(&mut q, b"four!");
            q.consume(split);
            assert_eq!(contents(&q), &all[split..], "after {split}");
            assert_eq!(q.len, all.len() - split);
        }
    }

    #[test]
    fn discarding_keeps_only_the_partly_sent_frame() {
        let mut q = OutputQueue::default();
        q.push_shared(frame(b"0123456789"));
        encode(&mut q, b"next");
        q.consume(6); // the header and 2 bytes of the first body
        let dropped = q.discard_unstarted();
        assert_eq!(dropped, frame(b"next").len());
        assert_eq!(contents(&q), b"23456789");
        let mut q = OutputQueue::default();
        encode(&mut q, b"abc");
        encode(&mut q, b"def");
        q.consume(frame(b"abc").len());
        assert_eq!(
            q.discard_unstarted(),
            frame(b"def").len(),
            "at a boundary all goes"
        );
        assert!(q.is_empty());
        let mut q = OutputQueue::default();
        encode(&mut q, b"abc");
        encode(&mut q, b"def");
        q.consume(2);
        q.discard_unstarted();
        assert_eq!(
            contents(&q),
            &frame(b"abc")[2..],
            "a partly sent tail frame stays"
        );
    }

    #[test]
    fn frames_are_taken_whole_without_their_headers() {
        let mut q = OutputQueue::default();
        encode(&mut q, b"a");
        encode(&mut q, b"bb");
        q.push_shared(frame(b"shared"));
        encode(&mut q, b"");
        let mut taken = Vec::new();
        while let Some((body, wire)) = q.take_frame() {
            assert_eq!(wire, body.len() + HEADER_LEN);
            taken.push(body);
        }
        assert_eq!(taken, [&b"a"[..], b"bb", b"shared", b""]);
        assert!(q.is_empty());
    }

    #[test]
    fn an_idle_queue_gives_its_buffer_back_and_reuses_a_lent_one() {
        let mut q = OutputQueue::default();
        assert!(q.take_spare_buffer().is_none(), "nothing to give");
        encode(&mut q, b"hello");
        assert!(q.take_spare_buffer().is_none(), "still queued");
        q.consume(q.len);
        let spare = q
            .take_spare_buffer()
            .expect("an idle queue returns its buffer");
        assert!(spare.capacity() >= 9);
        let mut q2 = OutputQueue::default();
        let ptr = spare.as_ptr();
        assert!(q2.lend_buffer(spare).is_none());
        encode(&mut q2, b"x");
        assert_eq!(
            q2.tail.as_ptr(),
            ptr,
            "the lent buffer is used, not a new one"
        );
    }
}
