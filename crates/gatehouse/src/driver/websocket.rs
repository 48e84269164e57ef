//! The WebSocket transport: one binary message is one envelope (the message framing
//! replaces the 4-byte length). tungstenite caps a message at `limits.max_frame_bytes`
//! from its frame header, before buffering the payload; a text message is a protocol
//! error. A kick goes out as the kick envelope and then a close frame whose code is
//! 4000 + the kick reason ([`KickReason::websocket_close_code`]) and whose reason is
//! the kick's text.
//!
//! [`KickReason::websocket_close_code`]: gatehouse_protocol::KickReason::websocket_close_code

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::transport::{Goodbye, Received, Transport};
use crate::connection::{ConnectionCore, DisconnectReason};

/// A close frame's reason holds at most 123 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// tungstenite's settings for a connection whose envelopes are at most
/// `max_frame_bytes`: messages and frames capped there; a small read buffer (its
/// default of 128 KiB would cost every idle connection); writes gathered up to 16 KiB
/// before they go out (a burst of pushes in few writes). tungstenite takes a message
/// only once what it holds has gone below that, so at most 16 KiB and one message
/// wait there beyond the connection's own bounded queue.
pub(crate) fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Messages taken into the core at most per receive.
const MAX_BATCH: usize = 64;

/// A WebSocket connection.
pub(crate) struct WebSocketTransport<S> {
    ws: WebSocketStream<S>,
    /// What ended the last batch of messages (a close, a text message, an error),
    /// handled once the messages before it are.
    deferred: Option<Option<Result<Message, WsError>>>,
    /// Messages started but not yet flushed.
    unflushed: bool,
    close_sent: bool,
}

impl<S> WebSocketTransport<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        WebSocketTransport {
            ws,
            deferred: None,
            unflushed: false,
            close_sent: false,
        }
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::NotConnected.into(),
        other => io::Error::other(other),
    }
}

/// The close frame for a kick, its text cut to what fits.
pub(crate) fn close_frame(kick: Goodbye<'_>) -> CloseFrame {
    let mut end = kick.text.len().min(MAX_CLOSE_REASON);
    while !kick.text.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: kick.reason.websocket_close_code().into(),
        reason: kick.text[..end].into(),
    }
}

impl<S> Transport for WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<Received>> {
        // Every message already here is taken in one go (up to a batch), so that the
        // answers to a burst of requests leave in one write, as on TCP.
        let mut taken = 0;
        loop {
            let next = match self.deferred.take() {
                Some(next) => next,
                None => match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Pending if taken > 0 => return Poll::Ready(Ok(Received::Input)),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(next) => next,
                },
            };
            if taken > 0 && !matches!(next, Some(Ok(Message::Binary(_)))) {
                // Whatever ends the batch waits until the frames before it are handled.
                self.deferred = Some(next);
                return Poll::Ready(Ok(Received::Input));
            }
            let message = match next {
                None => return Poll::Ready(Ok(Received::Closed)),
                Some(Ok(message)) => message,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    core.close(
                        DisconnectReason::FrameTooLarge,
                        Some(format!(
                            "message of {size} bytes is over the limit of {max_size}"
                        )),
                    );
                    return Poll::Ready(Ok(Received::Input));
                }
                Some(Err(WsError::Protocol(e))) => {
                    core.close(
                        DisconnectReason::ProtocolError,
                        Some(format!("WebSocket: {e}")),
                    );
                    return Poll::Ready(Ok(Received::Input));
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(Received::Closed))
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            match message {
                Message::Binary(body) => {
                    core.receive_frame(&body);
                    taken += 1;
                    if taken == MAX_BATCH {
                        return Poll::Ready(Ok(Received::Input));
                    }
                }
                Message::Text(_) => {
                    core.close(
                        DisconnectReason::ProtocolError,
                        Some("text message: envelopes travel in binary messages".into()),
                    );
                    return Poll::Ready(Ok(Received::Input));
                }
                Message::Close(_) => return Poll::Ready(Ok(Received::Closed)),
                // tungstenite queues the pong itself; it goes out with the next flush.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => self.unflushed = true,
            }
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<()>> {
        while core.has_output() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            let Some(body) = core.take_output_frame() else {
                break;
            };
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(body))
                .map_err(io_error)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io_error)?;
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
        kick: Option<Goodbye<'_>>,
    ) -> Poll<io::Result<()>> {
        if !self.close_sent {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            Pin::new(&mut self.ws)
                .start_send(Message::Close(kick.map(close_frame)))
                .map_err(io_error)?;
            self.close_sent = true;
        }
        match ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_drain_until_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
            }
        }
    }
}
