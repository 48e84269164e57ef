//! A stream transport over anything `AsyncRead + AsyncWrite` (TLS): `{packet, 4}`
//! frames as on TCP, through the stream's own buffers. Reads borrow the thread's
//! spare buffer as TCP's do; a write hands everything queued to the stream and then
//! flushes it, so no TLS record waits for the next frame.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use super::spare;
use super::tcp::{MAX_IOVECS, READ_CHUNK};
use super::transport::{Goodbye, Received, Transport};
use crate::connection::ConnectionCore;

/// A connection over a byte stream with its own buffering.
pub(crate) struct StreamTransport<S> {
    stream: S,
    /// Written but not yet flushed.
    unflushed: bool,
}

impl<S> StreamTransport<S> {
    pub(crate) fn new(stream: S) -> Self {
        StreamTransport {
            stream,
            unflushed: false,
        }
    }
}

impl<S> Transport for StreamTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<Received>> {
        let buf = core.recv_buffer();
        spare::make_room(buf, READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, buf) {
            Poll::Pending => {
                spare::release_if_empty(buf); // nothing came: hold nothing
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(Received::Closed)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(Received::Input)),
            // A TLS peer that closes TCP without a close_notify (most clients do):
            // it left, as on TCP; a frame it cut short is its own loss.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(Received::Closed))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<()>> {
        while core.has_output() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = core.output_slices(&mut slices);
            let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            core.consume_output(n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn holds_output(&self) -> bool {
        self.unflushed
    }

    fn poll_shutdown(
        &mut self,
        cx: &mut Context<'_>,
        _kick: Option<Goodbye<'_>>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_drain_until_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sink = [0u8; 4096];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut sink);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}
