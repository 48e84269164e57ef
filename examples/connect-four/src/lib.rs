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
//! A game ends with four in a row (a win), a full board (a draw), a resignation or a
//! disconnect (a loss for that player); or without a result when the opponent never
//! sits down, the server stops, or the game room crashes. Results are counted in both
//! records the moment the game ends and saved through the [`SaveWriter`].
//!
//! - this file: the service, its options, the session, the routing.
//! - `player`: the handlers, matchmaking among them.
//! - [`game`]: the game room.
//! - `account`: a player's record while online, and its saves.
//! - [`board`]: the rules.
//! - [`wire`]: routes, statuses, messages.

mod account;
pub mod board;
pub mod game;
mod player;
pub mod wire;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{Membership, RoomError, Rooms};
use gatehouse::{typed, ConnId, Context, Disconnect, Reply, Service};
use gatehouse_store::{SaveWriter, Store};

use crate::account::Account;
use crate::game::{Game, Invitation};
use crate::wire::{routes, status};

/// How the game runs (also what every game room is made with).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a game waits for its players to sit down once it is made.
    pub join_time: Duration,
    /// Games at once; past it, QUEUE answers `UNAVAILABLE` when it would make one.
    pub max_games: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            join_time: Duration::from_secs(10),
            max_games: 1000,
        }
    }
}

/// The service: what gatehouse calls for every connection.
pub struct ConnectFour<S> {
    writer: SaveWriter<S>,
    games: Rooms<Game>,
    /// The waiting line: the player waiting for an opponent, if any. The second
    /// player to queue is matched with the first at once, so at most one waits.
    waiting: Mutex<Option<ConnId>>,
    games_made: AtomicU64,
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
    Playing(Membership<Game>),
}

impl Player {
    /// Where the player is, a game that is over counting as none.
    fn place(&mut self) -> &mut Place {
        if let Place::Playing(game) = &self.place {
            // What the room recorded for this player: `over` once the game is.
            if game.state().over {
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
            waiting: Mutex::new(None),
            games_made: AtomicU64::new(0),
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
            return Reply::error(status::NOT_LOGGED_IN, "log in first");
        };
        match route {
            routes::STATS => typed::request(payload, |asked| self.stats(player, asked)).await,
            routes::QUEUE => typed::request(payload, |()| self.queue(player, ctx)).await,
            routes::LEAVE_QUEUE => {
                typed::request(payload, |()| self.leave_queue(player, ctx)).await
            }
            // Raw bytes: one byte, the column.
            routes::MOVE => match self.play(player, &payload).await {
                Ok(()) => Reply::empty(),
                Err(failure) => failure.into(),
            },
            routes::RESIGN => typed::request(payload, |()| self.resign(player)).await,
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
}
