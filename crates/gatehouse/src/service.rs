//! The trait a game implements, and what its handlers are given.
//!
//! A [`Service`] is the game: `connect` makes the per-connection session (the seed's
//! `ConnStat`); `request`, `notify` and `message` handle what arrives, one at a time
//! and in arrival order, with `&mut` access to the session (`request_now` and
//! `notify_now` are their allocation-free fast path for handlers that never wait); `disconnect` (the seed's
//! `save_on_end`) receives the session back exactly once, whatever ended the
//! connection; `checkpoint` saves a session its handlers marked dirty while it lives.
//! Handlers reach their own connection through [`Context`] and every other
//! connection through the [`ServerHandle`] it holds.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::{KickReason, Status};

use crate::cluster::LinkError;
use crate::connection::{ConnId, ConnectionCore, DisconnectReason, Staged};
use crate::handle::ServerHandle;
use crate::hub::HandleError;
use crate::mailbox::{Mailbox, MemberSink};
use crate::players::{LoginTurn, LOGIN_WAIT};
use crate::timer::{Timer, TimerError};

/// A game (or any protocol service) served by gatehouse.
///
/// Handlers of one connection never run concurrently; a panic in any of them ends
/// that connection only (kick `internal_error`), and `disconnect` still runs.
///
/// While a handler waits (at an `.await`), its connection goes on: what is queued
/// for it is written, pushes from the hub and rooms are delivered, pings are
/// answered, and its limits and deadlines are enforced; only the next request,
/// notify or message waits for the handler, so answers keep their order. What the
/// handler does through its [`Context`] (a push, a kick) is put into the
/// connection's output as it happens; a kick closes the connection once the handler
/// returns.
///
/// A handler may be dropped at any `.await`: when its connection is kicked or
/// breaks a limit (`dos`, `slow_consumer`, `idle`, a deadline), the server shuts
/// down, the hub restarts, or it runs past `limits.handler_timeout`.
/// `disconnect` then runs with the session as the handler left it, so keep what a
/// handler changes outside the session consistent across its awaits (a guard that
/// undoes on drop, as arena's login claim does).
///
/// A whole service, served on a port until the process ends:
///
/// ```no_run
/// use bytes::Bytes;
/// use gatehouse::{Config, Context, Disconnect, Reply, Server, Service};
///
/// /// Echoes every request, and counts them per connection.
/// struct Echo;
///
/// impl Service for Echo {
///     type Session = u64;
///     type Message = ();
///
///     async fn connect(&self, _ctx: &mut Context<'_, ()>) -> u64 {
///         0
///     }
///
///     async fn request(
///         &self,
///         count: &mut u64,
///         _ctx: &mut Context<'_, ()>,
///         _route: u16,
///         payload: Bytes,
///     ) -> Reply {
///         *count += 1;
///         Reply::ok(payload)
///     }
///
///     async fn disconnect(&self, count: u64, info: Disconnect) {
///         println!("{} sent {count} requests and left: {}", info.id, info.reason);
///     }
/// }
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = gatehouse::bind("127.0.0.1:7000".parse()?).await?;
/// Server::new(Config::default(), Echo)?
///     .run(listener, std::future::pending())
///     .await?;
/// # Ok(())
/// # }
/// ```
pub trait Service: Send + Sync + 'static {
    /// Per-connection state, created by `connect`, handed back to `disconnect`.
    type Session: Send + 'static;
    /// Messages other parts of the game send to a connection via
    /// [`ServerHandle::send_message`]; use `()` if there are none.
    type Message: Send + 'static;

    /// Whether a connection must log in: unless a handler calls
    /// [`Context::logged_in`] within `limits.login_timeout` of the connect, it is
    /// kicked `login_timeout`, however many frames it sends. The service decides the
    /// login itself (from its first request, or any): it answers a refusal with its
    /// own status, or kicks with its own reason.
    const LOGIN_REQUIRED: bool = false;

    /// Whether a logged-in connection is offered session resume (`[resume]`,
    /// `docs/PROTOCOL.md`): when a request's handler logs the connection in
    /// ([`Context::logged_in`]), a `session` frame goes before that request's
    /// response, and from then on the responses and pushes are numbered and kept
    /// (within `resume.buffer_bytes`) until the client acknowledges them.
    ///
    /// A session whose connection is lost then waits `resume.window` for its client
    /// to resume it on a new connection: the same session, id, groups, player and
    /// rooms, with nothing lost or run twice, and no hook runs. If nobody comes,
    /// [`Service::disconnect`] runs once, with the reason the connection was lost.
    /// So a player who drops stays in their rooms for the window; the clients end
    /// the session first when the player leaves on purpose (the end session request,
    /// a normal WebSocket close), and then it ends with the connection, at once.
    /// A connection that opens with `resume` has no session of its own, so for a
    /// resumable service [`Service::connect`] runs when a connection's first frame
    /// arrives, once it is known not to be a resume (a connection that sends
    /// nothing has no hooks at all).
    const RESUMABLE: bool = false;

    /// A connection was accepted: make its session.
    fn connect(
        &self,
        ctx: &mut Context<'_, Self::Message>,
    ) -> impl Future<Output = Self::Session> + Send;

    /// The fast path for a request: answer it at once, without a future. It is tried
    /// first for every request; `None` hands the request to [`Service::request`].
    ///
    /// A request answered here costs no allocation, where `request` costs one (its
    /// future is boxed, so that a large future does not enlarge every idle
    /// connection), so handlers that never wait belong here: reading or changing the
    /// session, pushing to the caller, answering from memory. It must not block; it
    /// runs under the same panic guard as the other handlers.
    fn request_now(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        let _ = (session, ctx, route, payload);
        None
    }

    /// A request arrived; its reply is sent back with the request's id. (Unless
    /// [`Service::request_now`] answered it.)
    fn request(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Reply> + Send;

    /// The fast path for a notify, as [`Service::request_now`] is for requests: `None`
    /// hands it to [`Service::notify`].
    fn notify_now(
        &self,
        session: &mut Self::Session,
        ctx: &mut Context<'_, Self::Message>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Status> {
        let _ = (session, ctx, route, payload);
        None
    }

    /// A notify arrived (no reply). Returns [`Status::UNKNOWN_ROUTE`] for routes the
    /// service does not know, which the framework logs. (Unless
    /// [`Service::notify_now`] took it.)
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

    /// A checkpoint of a session its handlers marked dirty ([`Context::mark_dirty`]):
    /// save it while it lives, so that a crash of the whole process (a SIGKILL, an
    /// OOM kill, a lost machine) loses at most `limits.checkpoint_interval` of
    /// acknowledged state. Called at most once per interval, only after a change. It
    /// must not block: queue the save (gatehouse-store's writer never waits). It runs
    /// under the same panic guard as the handlers.
    fn checkpoint(&self, session: &mut Self::Session, ctx: &mut Context<'_, Self::Message>) {
        let _ = (session, ctx);
    }

    /// A resumable session's connection was lost ([`Service::RESUMABLE`]): the
    /// session waits `resume.window` for its client. Tell others the player is away,
    /// say; the session itself goes on (its handler in flight finishes, pushes to it
    /// are kept for the resume). It must not block, and runs under the panic guard
    /// (a panic ends the session).
    fn detached(&self, ctx: &mut Context<'_, Self::Message>) {
        let _ = ctx;
    }

    /// A session that waited was resumed by a new connection (or a half-open one
    /// replaced), with nothing lost: the counterpart of [`Service::detached`], which
    /// did not always run before it (a half-open connection is not known lost).
    fn resumed(&self, ctx: &mut Context<'_, Self::Message>) {
        let _ = ctx;
    }

    /// The connection ended (the seed's `save_on_end`): called exactly once per
    /// session, on every exit path. It runs under `limits.disconnect_timeout`: queue
    /// the save before anything that can wait, so a hook that is dropped has saved.
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

/// What a handler can do with its own connection, and the way to all the others.
pub struct Context<'a, M> {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    server: &'a ServerHandle<M>,
    /// The connection's mailbox: for its timers, and for rooms to reach it.
    pub(crate) mailbox: &'a Arc<Mailbox<M>>,
    /// Where what the handler does to its own connection goes.
    own: Own<'a>,
}

/// A handler's way to its own connection.
pub(crate) enum Own<'a> {
    /// Straight into the connection's state machine: for handlers that run to their
    /// end before the connection goes on (the fast paths, checkpoints, `connect`).
    Core(&'a mut ConnectionCore),
    /// Kept for the driver, which moves it into the core after each poll: for
    /// handlers that may wait while the connection goes on.
    Staged(&'a Staged),
}

impl<'a, M> Context<'a, M> {
    pub(crate) fn new(
        id: ConnId,
        peer: SocketAddr,
        server: &'a ServerHandle<M>,
        mailbox: &'a Arc<Mailbox<M>>,
        own: Own<'a>,
    ) -> Self {
        Context {
            id,
            peer,
            server,
            mailbox,
            own,
        }
    }
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

    /// The server: broadcast, push to and kick other connections and players, groups,
    /// lookups, counts. Clone it to keep it beyond the handler (a spawned task).
    pub fn server(&self) -> &ServerHandle<M> {
        self.server
    }

    /// Pushes a message to this connection. Returns false if it was not queued: its
    /// outbound queue is full (the connection then closes as a slow consumer), or the
    /// payload is larger than a frame may be (dropped and logged).
    pub fn push(&mut self, route: u16, payload: impl Into<Bytes>) -> bool {
        match &mut self.own {
            Own::Core(core) => core.push(route, payload.into()),
            Own::Staged(staged) => staged.push(route, payload.into()),
        }
    }

    /// The session changed in a way worth saving: [`Service::checkpoint`] runs within
    /// `limits.checkpoint_interval` (once, however many changes happen meanwhile).
    pub fn mark_dirty(&mut self) {
        match &mut self.own {
            Own::Core(core) => core.mark_dirty(),
            Own::Staged(staged) => staged.mark_dirty(),
        }
    }

    /// Closes this connection once the current handler returns, sending `reason`.
    /// The first close decided wins.
    pub fn kick(&mut self, reason: KickReason, text: impl Into<String>) {
        match &mut self.own {
            Own::Core(core) => core.kick(reason, text.into()),
            Own::Staged(staged) => staged.kick(reason, text.into()),
        }
    }

    /// Delivers `message` to this session's [`Service::message`] handler after
    /// `delay`. The timer ends with the connection; at most
    /// [`MAX_TIMERS`](crate::timer::MAX_TIMERS) run at once per session.
    pub fn after(&mut self, delay: Duration, message: M) -> Result<Timer, TimerError> {
        let mut message = Some(message);
        self.mailbox
            .start_timer(delay, None, move || message.take())
    }

    /// Delivers a copy of `message` to this session's [`Service::message`] handler
    /// every `period` (above zero), the first after one period, until the connection
    /// ends or the timer is cancelled. Missed ticks are not made up in a burst; but
    /// each message waits in the connection's queue like any other delivery, so a
    /// handler slower than the period lets them pile up until the outbound budget is
    /// spent (the connection then closes as a slow consumer).
    pub fn every(&mut self, period: Duration, message: M) -> Result<Timer, TimerError>
    where
        M: Clone,
    {
        self.mailbox
            .start_timer(period, Some(period), move || Some(message.clone()))
    }

    /// This connection is now `player`'s: the login deadline no longer applies (see
    /// [`Service::LOGIN_REQUIRED`]), the server reaches it by that name
    /// ([`ServerHandle::push_to_player`], [`ServerHandle::player`]), and it counts
    /// among [`ServerHandle::players`] until its disconnect hook has run. The latest
    /// login of a name has it; to take a player over from another connection (kicked
    /// `duplicate_login`, its hook run before this login goes on), log in within a
    /// [`Context::login_turn`] after [`Context::take_over`].
    pub async fn logged_in(&mut self, player: &str) -> Result<(), HandleError> {
        match &mut self.own {
            Own::Core(core) => core.set_logged_in(),
            Own::Staged(staged) => staged.set_logged_in(),
        }
        self.server.players.log_in(player, self.id);
        Ok(())
    }

    /// Waits for this login's turn among the logins to `player` (at most
    /// [`LOGIN_WAIT`], then [`HandleError::Busy`]): while
    /// the [`LoginTurn`] is held no other login to that name goes on, so a password
    /// check or an account creation cannot race a second login, and of many logins at
    /// once the last is left online. See [`LoginTurn`] for the whole login.
    pub async fn login_turn(&self, player: &str) -> Result<LoginTurn, HandleError> {
        self.server
            .players
            .turn(player)
            .await
            .ok_or(HandleError::Busy)
    }

    /// Takes `turn`'s player over: the connection logged in as it (if another),
    /// on this node or on another of the cluster, is kicked `duplicate_login`, and
    /// this returns once that connection's disconnect hook has run, so that a load
    /// after it sees the save the hook queued. Returns the connection taken over
    /// from if it was on this node; [`HandleError::Busy`] if that session did not
    /// end within [`LOGIN_WAIT`], and
    /// [`HandleError::Unavailable`] if the player is on another node and this one
    /// is cut off from the cluster. A node that has died ends nothing: the login
    /// goes on at once. Then log in ([`Context::logged_in`]) before dropping the
    /// turn.
    pub async fn take_over(&self, turn: &LoginTurn) -> Result<Option<ConnId>, HandleError> {
        let Some((previous, mut gone)) = turn.place.players.holder(&turn.name) else {
            let players = &turn.place.players;
            if let Some(cluster) = players.cluster() {
                if let Some(node) = cluster.owner_node(&turn.name) {
                    let asked = cluster.ask_take_over(&node, turn.name.clone(), LOGIN_WAIT);
                    match asked.await {
                        // A node nobody answers for is gone: it has nothing to end.
                        Ok(true) | Err(LinkError::NoResponders) => {}
                        Ok(false) | Err(LinkError::TimedOut) => return Err(HandleError::Busy),
                        Err(_) => return Err(HandleError::Unavailable),
                    }
                }
            }
            return Ok(None);
        };
        if previous == self.id {
            return Ok(None);
        }
        // A kick that finds the connection already closing is fine: its hook is
        // what is waited for either way.
        let _ = self
            .server
            .kick(
                previous,
                KickReason::DUPLICATE_LOGIN,
                "logged in from another connection",
            )
            .await;
        // A dropped sender means the holder was replaced or released: gone either way.
        let waiting = gone.wait_for(|gone| *gone);
        let ended = tokio::time::timeout(LOGIN_WAIT, waiting).await.is_ok();
        if ended {
            Ok(Some(previous))
        } else {
            Err(HandleError::Busy)
        }
    }

    /// How a room reaches this connection.
    pub(crate) fn member_sink(&self) -> Arc<dyn MemberSink> {
        self.mailbox.clone()
    }
}
