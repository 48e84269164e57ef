//! connect-four: a turn-based game on gatehouse, the second one after arena and of
//! another shape: players log in with a name, queue, are matched two by two into
//! game rooms, take turns dropping pieces into a 7 x 6 board, and keep a record of
//! wins, losses and draws that outlives the server. It is written only against the
//! public APIs of `gatehouse` and `gatehouse-store`; `docs/GUIDE.md` ("Your first
//! game") walks through it.
//!
//! The routes and what they carry are [`wire::routes`]; payloads are protobuf
//! ([`wire`]), but for MOVE's single byte. Every route but LOGIN needs a logged-in
//! player ([`status::NOT_LOGGED_IN`] otherwise); refusals are the statuses of
//! [`wire::status`], with a text saying why. There are no passwords: a name is taken
//! by whoever logs in with it while nobody online has it ([`status::NAME_TAKEN`]
//! otherwise).
//!
//! A game ends with four in a row (a win), a full board (a draw), a resignation, a
//! disconnect, or a player out of time (a loss for them); or without a result when
//! the opponent never sits down or the server stops. Results are counted in both
//! records the moment the game ends and saved through the [`SaveWriter`].
//!
//! - this file: the service, its options, the session, the routing.
//! - `player`: the handlers.
//! - `lobby`: the waiting line.
//! - [`game`]: the game room.
//! - `account`: a player's record while online, and its saves.
//! - [`board`]: the rules.
//! - [`wire`]: routes, statuses, messages.

mod account;
pub mod board;
pub mod game;
mod lobby;
mod player;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{Membership, RoomError, Rooms};
use gatehouse::{typed, Context, Disconnect, Reply, Service};
use gatehouse_store::{SaveWriter, Store};

use crate::account::Account;
use crate::game::{Game, Invitation};
use crate::lobby::Lobby;
use crate::wire::{routes, status};

/// How the game runs (also what every game room is made with).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a player has for each move; past it, they lose.
    pub turn_time: Duration,
    /// How long a game waits for its second player to sit down after the first.
    pub join_time: Duration,
    /// Games at once; past it, QUEUE answers `UNAVAILABLE` when it would make one.
    pub max_games: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            turn_time: Duration::from_secs(60),
            join_time: Duration::from_secs(10),
            max_games: 1000,
        }
    }
}

/// The service: what gatehouse calls for every connection.
pub struct ConnectFour<S> {
    writer: SaveWriter<S>,
    games: Rooms<Game>,
    lobby: Lobby,
}

/// A logged-in player: a connection's session is `Option<Player>`, `None` until it
/// logs in.
pub struct Player {
    account: Arc<Account>,
    place: Place,
}

/// Where a player is.
enum Place {
    Idle,
    /// In the waiting line, or matched and about to sit down.
    Queued,
    /// In a game; dropping the membership leaves the room.
    Playing {
        game: Membership<Game>,
        /// Set by the room when the game is over.
        over: Arc<AtomicBool>,
    },
}

impl Player {
    /// Where the player is, a game that is over counting as none.
    fn place(&mut self) -> &mut Place {
        if let Place::Playing { over, .. } = &self.place {
            if over.load(Ordering::Acquire) {
                self.place = Place::Idle;
            }
        }
        &mut self.place
    }
}

impl<S: Store> ConnectFour<S> {
    /// The game, keeping records through `writer`; an error if `options` cannot work
    /// (no games at all).
    pub fn new(writer: SaveWriter<S>, options: Options) -> Result<Self, RoomError> {
        let rooms = game::room_options(options.max_games);
        Ok(ConnectFour {
            writer,
            games: Rooms::new(options, rooms)?,
            lobby: Lobby::default(),
        })
    }

    /// The game rooms, for the server to own (`Server::with_rooms`).
    pub fn games(&self) -> &Rooms<Game> {
        &self.games
    }
}

/// Player names: 1 to 16 letters, digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=16).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// Locks `mutex`: no code that can panic halfway through a change runs under this
/// crate's locks, so a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Store> Service for ConnectFour<S> {
    type Session = Option<Player>;
    type Message = Invitation;
    const LOGIN_REQUIRED: bool = true;

    async fn connect(&self, _ctx: &mut Context<'_, Invitation>) -> Option<Player> {
        None
    }

    /// Handlers that never wait: answered at once, without a future.
    fn request_now(
        &self,
        session: &mut Option<Player>,
        ctx: &mut Context<'_, Invitation>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        if !matches!(route, routes::QUEUE | routes::LEAVE_QUEUE) {
            return None;
        }
        let Some(player) = session else {
            return Some(Reply::error(status::NOT_LOGGED_IN, "log in first"));
        };
        Some(match route {
            routes::QUEUE => typed::request_now(payload, |()| self.queue(player, ctx)),
            _ => typed::request_now(payload, |()| self.leave_queue(player, ctx.id())),
        })
    }

    async fn request(
        &self,
        session: &mut Option<Player>,
        ctx: &mut Context<'_, Invitation>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        if route == routes::LOGIN {
            return typed::request(payload, |login| self.login(session, ctx, login)).await;
        }
        let Some(player) = session else {
            return match self.route_name(route) {
                Some(_) => Reply::error(status::NOT_LOGGED_IN, "log in first"),
                None => Reply::unknown_route(route),
            };
        };
        match route {
            routes::STATS => typed::request(payload, |asked| self.stats(player, asked)).await,
            // Raw bytes: one byte, the column.
            routes::MOVE => match self.play(player, &payload).await {
                Ok(()) => Reply::empty(),
                Err(failure) => failure.into(),
            },
            routes::RESIGN => typed::request(payload, |()| self.resign(player)).await,
            routes::LOBBY => typed::request(payload, |()| self.lobby_info(ctx)).await,
            other => Reply::unknown_route(other),
        }
    }

    /// A matched player's invitation: sit down in the game.
    async fn message(
        &self,
        session: &mut Option<Player>,
        ctx: &mut Context<'_, Invitation>,
        invitation: Invitation,
    ) {
        if let Some(player) = session {
            self.accept(player, ctx, invitation).await;
        }
    }

    /// Whatever ended the connection: out of the line, out of the game in progress
    /// (a loss, unless the server is to blame) once the game has counted it. The
    /// name is free again when this returns.
    async fn disconnect(&self, session: Option<Player>, info: Disconnect) {
        if let Some(player) = session {
            self.leave(player, &info).await;
        }
    }

    fn route_name(&self, route: u16) -> Option<&'static str> {
        Some(match route {
            routes::LOGIN => "login",
            routes::STATS => "stats",
            routes::QUEUE => "queue",
            routes::LEAVE_QUEUE => "leave_queue",
            routes::MOVE => "move",
            routes::RESIGN => "resign",
            routes::LOBBY => "lobby",
            _ => return None,
        })
    }
}
