//! The TCP transport: `{packet, 4}` frames over a `TcpStream`.
//!
//! It works on socket readiness rather than `AsyncRead`, so that a connection waiting
//! for input holds no read buffer (one is borrowed from the thread's spare when the
//! socket is readable), and a read shorter than the room given means the socket is
//! drained: readiness is cleared then and there, as tokio's own `poll_read` does,
//! instead of costing one more `recv` that only returns `EAGAIN`. Output goes out in
//! one vectored write of everything queued.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use super::spare;
use super::transport::{Goodbye, Received, Transport};
use crate::connection::ConnectionCore;

/// Bytes of room given to each read.
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// Most slices handed to one `writev`. Small on purpose: the array is set up on
/// every write, and the connection's own frames are contiguous (one slice), so more
/// slices only serve a backlog of broadcasts, which the next `writev` takes.
pub(super) const MAX_IOVECS: usize = 16;

/// A TCP connection.
pub(crate) struct TcpTransport {
    socket: TcpStream,
}

impl TcpTransport {
    pub(crate) fn new(socket: TcpStream) -> TcpTransport {
        TcpTransport { socket }
    }

    /// One read into `core`'s receive buffer: `Some(n)` bytes (0: the peer closed), or
    /// `None` if the readiness was stale (then it is cleared).
    fn read_once(&self, core: &mut ConnectionCore) -> io::Result<Option<usize>> {
        let buf = core.recv_buffer();
        spare::make_room(buf, READ_CHUNK);
        let room = buf.capacity() - buf.len();
        let mut read = None;
        let result = self.socket.try_io(Interest::READABLE, || {
            let n = self.socket.try_read_buf(buf)?;
            read = Some(n);
            if 0 < n && n < room {
                // Drained: report WouldBlock so that tokio clears the readiness.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (read, result) {
            (Some(n), _) => Ok(Some(n)),
            (None, Err(e)) if is_retry(&e) => {
                spare::release_if_empty(buf); // nothing came: hold nothing
                Ok(None)
            }
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(None),
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Transport for TcpTransport {
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<Received>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            match self.read_once(core)? {
                Some(0) => return Poll::Ready(Ok(Received::Closed)),
                Some(_) => return Poll::Ready(Ok(Received::Input)),
                None => {} // stale readiness, now cleared: poll again to register
            }
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<()>> {
        while core.has_output() {
            ready!(self.socket.poll_write_ready(cx))?;
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = core.output_slices(&mut slices);
            match self.socket.try_write_vectored(&slices[..count]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => core.consume_output(n),
                Err(e) if is_retry(&e) => {} // readiness cleared: poll again to register
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        &mut self,
        cx: &mut Context<'_>,
        _kick: Option<Goodbye<'_>>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }

    fn poll_drain_until_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sink = [0u8; 4096];
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            match self.socket.try_read(&mut sink) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if is_retry(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
