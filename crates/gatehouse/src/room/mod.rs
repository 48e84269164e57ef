//! Rooms: supervised actors that own a piece of game state (a match, a zone, a
//! lobby), with a bounded mailbox and an optional fixed tick.
//!
//! The game implements [`Room`]; a [`Rooms`] registry (one per room type) creates
//! them and finds them by name, from handlers and from background tasks alike. A
//! connection joins through a [`RoomHandle`] and gets a [`Membership`]: its messages
//! reach the room in the order sent, and dropping it (as the session's end does)
//! leaves. The room pushes to its members directly, into their connections'
//! mailboxes, encoding a broadcast once.
//!
//! Each room is its own supervisor (OTP's one_for_one child with its own restart
//! intensity). Every hook runs under `catch_unwind`; a panic ends that life of the
//! room and its [`Restart`] policy decides what follows: a fresh room, one made from
//! the last [`Room::snapshot`], or none. After a restart every member is told
//! (a push on [`ROUTE_ROOM_RESTARTED`](gatehouse_protocol::ROUTE_ROOM_RESTARTED))
//! and joined again; when the room closes instead, its members are kicked with
//! [`KickReason::ROOM_CLOSED`](gatehouse_protocol::KickReason::ROOM_CLOSED). A
//! crashing room touches no other room, no hub, and no connection but with that push.
//!
//! Ticks are deadline based: tick `n` is due at `start + n * period`, so work does
//! not make them drift. A tick that runs late is run anyway (never skipped) and its
//! lateness is measured ([`RoomStats`], [`Rooms::lateness`]).
//!
//! - this file: the [`Room`] trait and the types its hooks see.
//! - `registry`: [`Rooms`], [`RoomHandle`], [`Membership`].
//! - `context`: [`RoomContext`], what a hook can do.
//! - `shared`: rooms shared by a cluster ([`RoomCodec`]): the directory, remote
//!   members, and what crosses between a room's host and its members' nodes.
//! - `task`: a room's task: its lives, restarts and tick loop.
//! - `stats`: per-room counters and the registry's lateness histogram.
//! - `metrics` (feature `metrics`): the rooms' Prometheus collector.

mod context;
#[cfg(feature = "metrics")]
mod metrics;
mod registry;
mod shared;
mod stats;
mod task;

use std::time::Duration;

use gatehouse_protocol::Status;

use crate::connection::ConnId;

pub use self::context::RoomContext;
#[cfg(feature = "metrics")]
pub(crate) use self::metrics::RoomMetrics;
pub use self::registry::{Membership, RoomHandle, Rooms};
pub use self::shared::RoomCodec;
pub use self::stats::{LatenessMark, RoomStats, TickLateness};

/// A room type. Hooks are plain functions: a room never waits, it answers at once
/// and reaches members and the world through its [`RoomContext`] (pushes, timers,
/// and background tasks the game spawns for anything slow).
///
/// A counter its members add to, which every member sees at each tick and which
/// survives a crash through its snapshot:
///
/// ```
/// use std::time::Duration;
/// use gatehouse::ConnId;
/// use gatehouse::room::{Origin, Refusal, Restart, Room, RoomContext, RoomOptions, Rooms};
///
/// struct Counter {
///     count: u64,
/// }
///
/// impl Room for Counter {
///     type Config = ();
///     type Join = ();
///     type Message = u64;
///     type Snapshot = u64;
///
///     fn create(_name: &str, _config: &(), restored: Option<u64>) -> Self {
///         Counter { count: restored.unwrap_or(0) }
///     }
///
///     fn join(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId, _: &()) -> Result<(), Refusal> {
///         Ok(())
///     }
///
///     fn leave(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId) {}
///
///     fn message(&mut self, _: &mut RoomContext<'_, Self>, _: Origin, add: u64) {
///         self.count += add;
///     }
///
///     fn tick(&mut self, ctx: &mut RoomContext<'_, Self>, _dt: Duration) {
///         ctx.broadcast(1, self.count.to_be_bytes().to_vec());
///     }
///
///     fn snapshot(&self) -> Option<u64> {
///         Some(self.count)
///     }
/// }
///
/// let options = RoomOptions {
///     tick: Some(Duration::from_millis(50)),
///     restart: Restart::FromSnapshot,
///     ..RoomOptions::default()
/// };
/// let counters = Rooms::<Counter>::new((), options).unwrap();
/// // Hand `counters` to the server (`Server::with_rooms`) and to the service, whose
/// // handlers join them: `counters.join("table-1", ctx, ()).await`.
/// # drop(counters);
/// ```
pub trait Room: Sized + Send + 'static {
    /// What every room of this type is made with (shared, read-only).
    type Config: Send + Sync + 'static;
    /// What a connection brings when it joins (a player's name, a team), kept for
    /// as long as it is a member so that it can be joined again after a restart.
    type Join: Clone + Send + 'static;
    /// What members, timers and background tasks send to the room.
    type Message: Send + 'static;
    /// The state a room restarted with [`Restart::FromSnapshot`] is made from.
    type Snapshot: Clone + Send + 'static;

    /// Makes the room, fresh (`restored` is `None`) or from its last snapshot.
    fn create(name: &str, config: &Self::Config, restored: Option<Self::Snapshot>) -> Self;

    /// A connection asks to join. It already counts among the members (so the room
    /// can push to it here); an `Err` refuses it and it is removed again.
    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        member: ConnId,
        join: &Self::Join,
    ) -> Result<(), Refusal>;

    /// A member left (its membership was dropped: it left, or its connection ended).
    fn leave(&mut self, ctx: &mut RoomContext<'_, Self>, member: ConnId);

    /// A message from a member, a timer, or the server.
    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: Self::Message);

    /// One tick, every [`RoomOptions::tick`]; `dt` is that period (a fixed step).
    fn tick(&mut self, ctx: &mut RoomContext<'_, Self>, dt: Duration) {
        let _ = (ctx, dt);
    }

    /// The state to restart from, taken after every tick (after every message for a
    /// room without ticks) when the policy is [`Restart::FromSnapshot`].
    fn snapshot(&self) -> Option<Self::Snapshot> {
        None
    }

    /// The room stops for good (not called for a life that crashed).
    fn stopped(&mut self, ctx: &mut RoomContext<'_, Self>, reason: StopReason) {
        let _ = (ctx, reason);
    }
}

/// Who sent a room a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A member, through its [`Membership`].
    Member(ConnId),
    /// One of the room's own timers.
    Timer,
    /// Anything else holding a [`RoomHandle`] (a handler, a background task).
    Server,
}

/// A join refused by the room: the status and text the game answers the client with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} ({status})")]
pub struct Refusal {
    /// A game status (1000 and up) or a framework one.
    pub status: Status,
    /// Why, for the player.
    pub text: String,
}

impl Refusal {
    /// A refusal with `status` and `text`.
    pub fn new(status: Status, text: impl Into<String>) -> Self {
        Refusal {
            status,
            text: text.into(),
        }
    }
}

/// Why a room stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The registry shut down ([`Rooms::shutdown`]).
    Shutdown,
    /// It was closed by the game ([`RoomHandle::close`], [`RoomContext::close`]).
    Closed,
    /// Its last member left ([`RoomOptions::close_when_empty`]).
    Empty,
    /// It crashed past its restart intensity, or with [`Restart::Never`].
    Crashed,
}

impl StopReason {
    /// Its name in logs and metrics: `shutdown`, `closed`, `empty`, `crashed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::Closed => "closed",
            StopReason::Empty => "empty",
            StopReason::Crashed => "crashed",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What follows a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// A fresh room ([`Room::create`] without a snapshot).
    Fresh,
    /// A room made from the last [`Room::snapshot`] (fresh if there is none yet).
    FromSnapshot,
    /// None: the room closes and its members are kicked `room_closed`.
    Never,
}

/// How the rooms of one registry run.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// The tick period, or `None` for a room without ticks.
    pub tick: Option<Duration>,
    /// A tick later than this counts as late in [`RoomStats`].
    pub late_after: Duration,
    /// What follows a crash.
    pub restart: Restart,
    /// Restart intensity: at most this many restarts within `restart_window`, or the
    /// room closes.
    pub max_restarts: u32,
    /// See `max_restarts`.
    pub restart_window: Duration,
    /// Joins and messages a room's mailbox holds; senders wait for room beyond it.
    pub mailbox: usize,
    /// Messages one member may have queued at its room; one more is a flood and
    /// kicks its connection with `dos`.
    pub member_queue: u32,
    /// Members a room takes; the next join is refused with [`RoomError::Full`].
    pub max_members: usize,
    /// Members one address (an IPv4 address, an IPv6 /64) may have in one room, so
    /// that one client's many connections cannot take every seat; the next join from
    /// it is refused with [`RoomError::AddressShareFull`]. `None`: no share.
    pub max_members_per_address: Option<usize>,
    /// Rooms the registry holds at once.
    pub max_rooms: usize,
    /// Whether a room stops when its last member leaves.
    pub close_when_empty: bool,
}

impl Default for RoomOptions {
    fn default() -> Self {
        RoomOptions {
            tick: None,
            late_after: Duration::from_millis(5),
            restart: Restart::Fresh,
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
            mailbox: 1024,
            member_queue: 64,
            max_members: 1000,
            max_members_per_address: None,
            max_rooms: 10_000,
            close_when_empty: true,
        }
    }
}

impl RoomOptions {
    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), RoomError> {
        let bad = |what: &str| Err(RoomError::BadOptions(what.to_owned()));
        if self.tick.is_some_and(|t| t.is_zero()) {
            return bad("tick must be above zero");
        }
        if self.mailbox == 0 || self.member_queue == 0 {
            return bad("mailbox and member_queue must be at least 1");
        }
        if self.max_members == 0 || self.max_rooms == 0 {
            return bad("max_members and max_rooms must be at least 1");
        }
        if self.max_members_per_address == Some(0) {
            return bad("max_members_per_address must be at least 1");
        }
        if self.restart_window.is_zero() {
            return bad("restart_window must be above zero");
        }
        Ok(())
    }
}

/// Why a room call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The room has stopped (or is stopping).
    #[error("the room is closed")]
    Closed,
    /// The room refused the join.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The room has [`RoomOptions::max_members`] members.
    #[error("the room is full")]
    Full,
    /// The room has [`RoomOptions::max_members_per_address`] members from the
    /// joiner's address.
    #[error("the room has all the members it takes from this address")]
    AddressShareFull,
    /// This connection is a member already.
    #[error("already a member")]
    AlreadyMember,
    /// The member had [`RoomOptions::member_queue`] messages queued: its connection
    /// is kicked `dos`.
    #[error("too many messages queued at the room")]
    Flooded,
    /// A room of that name exists.
    #[error("a room named {0:?} exists")]
    Exists(String),
    /// The registry holds [`RoomOptions::max_rooms`] rooms.
    #[error("too many rooms")]
    TooManyRooms,
    /// The registry has shut down.
    #[error("the rooms are shut down")]
    ShutDown,
    /// The room is shared by a cluster, and its host (or the cluster's directory)
    /// cannot be reached now.
    #[error("the room's node cannot be reached")]
    Unavailable,
    /// [`RoomOptions`] that cannot work.
    #[error("bad room options: {0}")]
    BadOptions(String),
}

impl RoomError {
    /// The status a handler answers a client with for this error.
    pub fn status(&self) -> Status {
        match self {
            RoomError::Refused(refusal) => refusal.status,
            RoomError::Exists(_) | RoomError::AlreadyMember => Status::BAD_REQUEST,
            RoomError::BadOptions(_) => Status::INTERNAL_ERROR,
            RoomError::Closed
            | RoomError::Full
            | RoomError::AddressShareFull
            | RoomError::Flooded
            | RoomError::TooManyRooms
            | RoomError::ShutDown
            | RoomError::Unavailable => Status::UNAVAILABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StopReason;

    #[test]
    fn stop_reasons_read_in_snake_case_like_every_other_reason() {
        let all = [
            StopReason::Shutdown,
            StopReason::Closed,
            StopReason::Empty,
            StopReason::Crashed,
        ];
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["shutdown", "closed", "empty", "crashed"]);
    }
}
