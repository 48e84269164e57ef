//! Spare buffers, one of each kind per worker thread.
//!
//! An idle connection holds no buffer: before a connection waits, its empty receive
//! and send buffers are handed here, and the next connection this thread serves
//! borrows them. A busy server thus reuses the same few buffers instead of
//! allocating per request, and 15,000 idle connections cost none.

use std::cell::Cell;

use bytes::BytesMut;

use crate::connection::ConnectionCore;

/// Buffers larger than this are not kept (a burst's buffer is given back).
const MAX_SPARE: usize = 64 * 1024;

thread_local! {
    static RECV: Cell<Option<BytesMut>> = const { Cell::new(None) };
    static SEND: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// A receive buffer with at least `room` bytes of capacity.
pub(crate) fn recv_buffer(room: usize) -> BytesMut {
    let mut buffer = RECV.take().unwrap_or_default();
    buffer.clear();
    buffer.reserve(room);
    buffer
}

/// Makes room in a connection's receive buffer for one read of about `chunk` bytes:
/// this thread's spare if it holds none, more if it is nearly full.
#[inline]
pub(crate) fn make_room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() == 0 {
        *buf = recv_buffer(chunk);
    } else if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

/// After a read that brought nothing: a buffer holding nothing goes back to the
/// thread, so that a waiting connection holds none.
#[inline]
pub(crate) fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() {
        give_recv(std::mem::take(buf));
    }
}

/// Gives an empty receive buffer back.
pub(crate) fn give_recv(buffer: BytesMut) {
    if buffer.is_empty() && buffer.capacity() <= MAX_SPARE {
        RECV.set(Some(buffer));
    }
}

/// Lends the core a send buffer if this thread has one spare.
pub(crate) fn lend_send(core: &mut ConnectionCore) {
    if let Some(buffer) = SEND.take() {
        SEND.set(core.lend_send_buffer(buffer));
    }
}

/// Takes the buffers a connection about to wait no longer needs.
pub(crate) fn shed(core: &mut ConnectionCore) {
    let (recv, send) = core.take_spare_buffers();
    if let Some(recv) = recv {
        give_recv(recv);
    }
    if let Some(send) = send {
        if send.is_empty() && send.capacity() <= MAX_SPARE {
            SEND.set(Some(send));
        }
    }
}
