//! The interface between a connection and what it runs over.
//!
//! A transport moves bytes between its socket and a [`ConnectionCore`], and decides
//! nothing: limits, deadlines, events and closes are the core's. A stream transport
//! (TCP, TLS) appends what it reads to [`ConnectionCore::recv_buffer`] and writes
//! [`ConnectionCore::output_slices`]; a message transport (WebSocket) hands each
//! message to [`ConnectionCore::receive_frame`] and sends
//! [`ConnectionCore::take_output_frame`] one by one. Adding a transport means
//! implementing this trait and accepting its connections (`crate::listener`).

use std::io;
use std::task::{Context, Poll};

use gatehouse_protocol::KickReason;

use crate::connection::ConnectionCore;

/// What a receive brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Input was handed to the core (possibly only part of a frame).
    Input,
    /// The peer finished sending (a TCP FIN, a WebSocket close).
    Closed,
}

/// The kick a connection was closed with, for transports whose close says why (a
/// WebSocket close frame has a code and a reason).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Goodbye<'a> {
    pub(crate) reason: KickReason,
    pub(crate) text: &'a str,
}

/// What a connection runs over.
pub(crate) trait Transport: Send + 'static {
    /// Waits for input and moves what arrived into `core`. Holds no buffer while it
    /// waits, where the transport allows.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<Received>>;

    /// Sends what `core` has queued, as much as the transport takes without waiting,
    /// telling the core what was taken. `Ready(Ok(()))` once nothing is left;
    /// `Pending` while the rest waits for the peer to read.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        core: &mut ConnectionCore,
    ) -> Poll<io::Result<()>>;

    /// Whether output the core handed over is still held by the transport (TLS
    /// records, WebSocket frames not yet written): the driver keeps polling
    /// [`Transport::poll_send`] until it is not.
    fn holds_output(&self) -> bool {
        false
    }

    /// Closes our sending side after the last output (a TCP FIN, a TLS close_notify,
    /// a WebSocket close frame, which carries the kick's code and text).
    fn poll_shutdown(
        &mut self,
        cx: &mut Context<'_>,
        kick: Option<Goodbye<'_>>,
    ) -> Poll<io::Result<()>>;

    /// Reads and discards input until the peer closes too: lingering after a kick, so
    /// that the kernel does not answer late input with a reset that could destroy the
    /// kick before the client read it.
    fn poll_drain_until_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}
