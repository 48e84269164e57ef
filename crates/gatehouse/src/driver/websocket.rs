//! The WebSocket transport: one binary message is one envelope (the message framing
//! replaces the 4-byte length). tungstenite caps a message at `limits.max_frame_bytes`
//! from its frame header, before buffering the payload; a text message is a protocol
//! error. A kick goes out as the kick envelope and then a close frame whose code is
//! 4000 + the kick reason ([`KickReason::websocket_close_code`]) and whose reason is
//! the kick's text.
//!
//! WebSocket control frames never reach the core: tungstenite answers pings itself.
//! They are limited here instead (at most `limits.inbound_frames_burst` a second, or
//! the connection is kicked `dos`), and the pongs they cause wait in a write buffer of
//! bounded size, which the send stall clock watches like the core's own queue.
//!
//! [`KickReason::websocket_close_code`]: gatehouse_protocol::KickReason::websocket_close_code

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::transport::{Goodbye, Received, Transport};
use crate::config::LimitsConfig;
use crate::connection::{cut_at_char, ConnectionCore, DisconnectReason};

/// A close frame's reason holds at most 123 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// Bytes of output gathered before tungstenite writes them (a burst of pushes in few
/// writes).
const WRITE_BUFFER: usize = 16 * 1024;

/// tungstenite's settings for a connection whose envelopes are at most
/// `max_frame_bytes`: messages and frames capped there; a small read buffer (its
/// default of 128 KiB would cost every idle connection); writes gathered up to
/// [`WRITE_BUFFER`]. tungstenite takes a message only while it holds less than that,
/// and never holds more than that and one largest message (a pong it must queue then
/// waits for room), so at most that waits there beyond the connection's own queue.
pub(crate) fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max_frame_bytes + 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// The kick's text for a text message.
const TEXT_REFUSED: &str = "text message: envelopes travel in binary messages";

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
    /// The peer sent its close: nothing more may be sent but the close's answer.
    peer_closed: bool,
    /// A batch stops once the core holds this much input (one largest frame).
    max_batch_bytes: usize,
    /// Control frames allowed per second, and the current second's count.
    max_control_per_sec: u32,
    control_window: (Instant, u32),
}

impl<S> WebSocketTransport<S> {
    pub(crate) fn new(ws: WebSocketStream<S>, limits: &LimitsConfig) -> Self {
        WebSocketTransport {
            ws,
            deferred: None,
            unflushed: false,
            close_sent: false,
            peer_closed: false,
            max_batch_bytes: limits.max_frame_bytes,
            max_control_per_sec: limits.inbound_frames_burst,
            control_window: (Instant::now(), 0),
        }
    }

    /// Counts a ping or pong; false once the second's allowance is spent.
    fn allow_control(&mut self) -> bool {
        let now = Instant::now();
        let (start, count) = &mut self.control_window;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.max_control_per_sec
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::NotConnected.into(),
        other => io::Error::other(other),
    }
}

/// Whether a client's close frame says it leaves on purpose: no code, or a normal
/// close (1000) or going away (1001). A lost connection sends no close frame; a
/// client that abandons one it thinks lost, to resume elsewhere, gives another code
/// (`docs/PROTOCOL.md`, "WebSocket").
fn is_goodbye(frame: Option<&CloseFrame>) -> bool {
    frame.is_none_or(|f| matches!(f.code, CloseCode::Normal | CloseCode::Away))
}

/// The close frame for a kick, its text cut to what fits.
pub(crate) fn close_frame(kick: Goodbye<'_>) -> CloseFrame {
    CloseFrame {
        code: kick.reason.websocket_close_code().into(),
        reason: cut_at_char(kick.text, MAX_CLOSE_REASON).into(),
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
                Some(Err(e)) => return Poll::Ready(receive_error(e, core)),
            };
            match message {
                Message::Binary(body) => {
                    core.receive_frame(&body);
                    taken += 1;
                    if taken == MAX_BATCH || core.recv_buffer().len() >= self.max_batch_bytes {
                        return Poll::Ready(Ok(Received::Input));
                    }
                }
                Message::Text(_) => {
                    core.close(DisconnectReason::ProtocolError, Some(TEXT_REFUSED.into()));
                    return Poll::Ready(Ok(Received::Input));
                }
                Message::Close(frame) => {
                    // tungstenite queued the answering close; it goes out with the flush.
                    self.peer_closed = true;
                    if is_goodbye(frame.as_ref()) {
                        core.leave_session();
                    }
                    self.unflushed = true;
                    return Poll::Ready(Ok(Received::Closed));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    if !self.allow_control() {
                        core.close(
                            DisconnectReason::Dos,
                            Some("WebSocket control frames over the frame rate".into()),
                        );
                        return Poll::Ready(Ok(Received::Input));
                    }
                    // tungstenite queues the pong itself; it goes out with the next flush.
                    self.unflushed = true;
                }
            }
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<()>> {
        while core.has_output() && !self.peer_closed {
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
            match ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
                Ok(()) => {}
                // Once both closes have crossed, tungstenite ends the connection.
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) if self.peer_closed => {}
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
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

/// What a read error means for the connection: the client's fault (a kick, decided
/// in the core), the client gone, or the socket failing.
fn receive_error(e: WsError, core: &mut ConnectionCore) -> io::Result<Received> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            let text = format!("message of {size} bytes is over the limit of {max_size}");
            core.close(DisconnectReason::FrameTooLarge, Some(text));
            Ok(Received::Input)
        }
        // A client that drops the connection without a close frame (most do, and any
        // lost network): it left, as on TCP.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => Ok(Received::Closed),
        WsError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Received::Closed),
        WsError::Protocol(e) => {
            core.close(
                DisconnectReason::ProtocolError,
                Some(format!("WebSocket: {e}")),
            );
            Ok(Received::Input)
        }
        WsError::Utf8(_) => {
            core.close(DisconnectReason::ProtocolError, Some(TEXT_REFUSED.into()));
            Ok(Received::Input)
        }
        other => Err(io_error(other)),
    }
}
