//! The trait a game implements, and what its handlers are given.
//!
//! A [`Service`] is the game: `connect` makes the per-connection session (the seed's
//! `ConnStat`); `request`, `notify` and `message` handle what arrives, one at a time
//! and in arrival order, with `&mut` access to the session; `disconnect` (the seed's
//! `save_on_end`) receives the session back exactly once, whatever ended the
//! connection. Handlers reach their own connection through [`Context`] and every
//! other connection through the [`HubHandle`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::hub::HubHandle;
use crate::outbound::{Mailbox, WriteQueue};
use gatehouse_protocol::{KickReason, Message, Status};

/// A connection's id: unique for the life of the server process, across hub restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A game (or any protocol service) served by gatehouse.
///
/// Handlers of one connection never run concurrently; a panic in any of them ends
/// that connection only (kick `internal_error`), and `disconnect` still runs.
///
/// A handler may be dropped at any `.await`: when its connection is kicked, the
/// server shuts down, the hub restarts, or it runs past `limits.handler_timeout`.
/// `disconnect` then runs with the session as the handler left it, so keep what a
/// handler changes outside the session consistent across its awaits (a guard that
/// undoes on drop, as arena's login claim does).
pub trait Service: Send + Sync + 'static {
    /// Per-connection state, created by `connect`, handed back to `disconnect`.
    type Session: Send + 'static;
    /// Messages other parts of the game send to a connection via
    /// [`HubHandle::send_message`]; use `()` if there are none.
    type Message: Send + 'static;

    /// A connection was accepted: make its session.
    fn connect(
        &self,
        ctx: &mut Context<'_, Self::Message>,
    ) -> impl Future<Output = Self::Session> + Send;

    /// A request arrived; its reply is sent back with the request's id.
    fn request(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Reply> + Send;

    /// A notify arrived (no reply). Returns [`Status::UNKNOWN_ROUTE`] for routes the
    /// service does not know, which the framework logs.
    fn notify(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Status> + Send {
        let _ = (session, ctx, route, payload);
        async { Status::UNKNOWN_ROUTE }
    }

    /// A message sent to this connection through the hub.
    fn message(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        message: Self::Message,
    ) -> impl Future<Output = ()> + Send {
        let _ = (session, ctx, message);
        async {}
    }

    /// The connection ended (the seed's `save_on_end`): called exactly once per
    /// session, on every exit path.
    fn disconnect(
        &self,
        session: Self::Session,
        info: Disconnect,
    ) -> impl Future<Output = ()> + Send;

    /// A route's name, for logs.
    fn route_name(&self, route: u16) -> Option<&'static str> {
        let _ = route;
        None
    }
}

/// A request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// [`Status::OK`] or an error.
    pub status: Status,
    /// The response payload.
    pub payload: Bytes,
}

impl Reply {
    /// Success with a payload.
    pub fn ok(payload: impl Into<Bytes>) -> Reply {
        Reply {
            status: Status::OK,
            payload: payload.into(),
        }
    }

    /// Success without a payload.
    pub fn empty() -> Reply {
        Reply::ok(Bytes::new())
    }

    /// An error with a human-readable explanation as payload.
    pub fn error(status: Status, text: impl Into<String>) -> Reply {
        Reply {
            status,
            payload: Bytes::from(text.into()),
        }
    }

    /// The route is not one the service knows.
    pub fn unknown_route(route: u16) -> Reply {
        Reply::error(Status::UNKNOWN_ROUTE, format!("unknown route {route}"))
    }
}

/// What `disconnect` is told.
#[derive(Debug, Clone)]
pub struct Disconnect {
    /// The connection.
    pub id: ConnId,
    /// Its peer.
    pub peer: SocketAddr,
    /// Why it ended.
    pub reason: DisconnectReason,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed the connection.
    PeerClosed,
    /// The socket failed (reset, broken pipe, …).
    SocketError(io::ErrorKind),
    /// No first frame within `limits.first_frame_timeout`.
    LoginTimeout,
    /// No frame within `limits.idle_timeout`.
    Idle,
    /// Over the inbound byte or frame rate.
    Dos,
    /// A header announced a frame over `limits.max_frame_bytes`.
    FrameTooLarge,
    /// A malformed envelope, or a kind clients may not send.
    ProtocolError,
    /// The outbound queue passed `limits.outbound_queue_bytes`.
    SlowConsumer,
    /// Output made no progress for `limits.send_timeout`.
    SendTimeout,
    /// Kicked by the game (through the hub or its own context).
    Kicked(KickReason),
    /// The server is shutting down.
    Shutdown,
    /// The hub crashed; the connection was closed so that the restarted hub starts clean.
    ServerRestart,
    /// A handler panicked.
    HandlerPanic,
    /// A handler ran past `limits.handler_timeout`.
    HandlerTimeout,
}

impl DisconnectReason {
    /// The kick sent to the client before closing, if any (none when the peer is
    /// already gone or the socket cannot take it).
    pub fn kick(&self) -> Option<KickReason> {
        Some(match self {
            DisconnectReason::PeerClosed
            | DisconnectReason::SocketError(_)
            | DisconnectReason::SendTimeout => return None,
            DisconnectReason::LoginTimeout => KickReason::LOGIN_TIMEOUT,
            DisconnectReason::Idle => KickReason::IDLE,
            DisconnectReason::Dos => KickReason::DOS,
            DisconnectReason::FrameTooLarge => KickReason::FRAME_TOO_LARGE,
            DisconnectReason::ProtocolError => KickReason::PROTOCOL_ERROR,
            DisconnectReason::SlowConsumer => KickReason::SLOW_CONSUMER,
            DisconnectReason::Kicked(reason) => *reason,
            DisconnectReason::Shutdown => KickReason::SHUTDOWN,
            DisconnectReason::ServerRestart => KickReason::SERVER_RESTART,
            DisconnectReason::HandlerPanic | DisconnectReason::HandlerTimeout => {
                KickReason::INTERNAL_ERROR
            }
        })
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer_closed"),
            DisconnectReason::SocketError(kind) => write!(f, "socket_error({kind})"),
            DisconnectReason::SendTimeout => f.write_str("send_timeout"),
            DisconnectReason::HandlerTimeout => f.write_str("handler_timeout"),
            other => match other.kick() {
                Some(kick) => kick.fmt(f),
                None => Ok(()),
            },
        }
    }
}

/// A connection's outbound state as handlers see it.
pub(crate) struct Outbox<M> {
    pub(crate) queue: WriteQueue,
    pub(crate) mailbox: std::sync::Arc<Mailbox<M>>,
    /// Set when the connection must close after the current handler.
    pub(crate) close: Option<DisconnectReason>,
    /// Text sent with the kick of `close`.
    pub(crate) close_text: String,
}

impl<M> Outbox<M> {
    /// Queues an encoded frame within the byte budget; over it, the connection is
    /// marked to close as a slow consumer.
    pub(crate) fn enqueue(&mut self, frame: Bytes) -> bool {
        if self.mailbox.reserve(frame.len()) {
            self.queue.push(frame);
            true
        } else {
            self.close.get_or_insert(DisconnectReason::SlowConsumer);
            false
        }
    }
}

/// What a handler can do with its own connection, and the way to all the others.
pub struct Context<'a, M> {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) hub: &'a HubHandle<M>,
    pub(crate) out: &'a mut Outbox<M>,
}

impl<M: Send + 'static> Context<'_, M> {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The hub: broadcast, send to others, groups, counts.
    pub fn hub(&self) -> &HubHandle<M> {
        self.hub
    }

    /// Pushes a message to this connection. Returns false if its outbound queue is
    /// full, in which case the connection closes as a slow consumer.
    pub fn push(&mut self, route: u16, payload: impl Into<Bytes>) -> bool {
        let frame = Message::Push {
            route,
            payload: payload.into(),
        }
        .to_frame();
        self.out.enqueue(frame)
    }

    /// Closes this connection once the current handler returns, sending `reason`.
    pub fn kick(&mut self, reason: KickReason, text: impl Into<String>) {
        if self.out.close.is_none() {
            self.out.close = Some(DisconnectReason::Kicked(reason));
            self.out.close_text = text.into();
        }
    }
}
