//! arena: the reference game, and the example other games copy. It is written only
//! against gatehouse's public API.
//!
//! Players log in with a name and a password (an Argon2id hash is saved with the
//! player), and play in real-time rooms: gatehouse rooms ticking 20 times a second,
//! where they walk, are placed, chat, and see each other move through one delta per
//! tick; they whisper to anyone on the server and ask who is online. Messages are
//! protobuf (`proto/arena.proto`, compiled by prost in `build.rs`); handlers are
//! typed (`gatehouse::typed`). A player's state is saved through the [`SaveWriter`]
//! when the connection ends, whatever ends it (the seed's `save_on_end`), and
//! checkpointed while they play, within `limits.checkpoint_interval` of a change.
//!
//! - this file: the service, its routes and statuses, the session.
//! - `login`: passwords; turns and takeovers are gatehouse's.
//! - `play`: the handlers of a logged-in player.
//! - [`world`]: the real-time room.
//! - [`accounts`]: password hashes, fair hashing between addresses, and the budgets
//!   on guessing and on new accounts (its module documentation states what holds).

pub mod accounts;
mod login;
mod play;
pub mod world;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{LatenessMark, Membership, Restart, RoomError, RoomOptions, Rooms};
use gatehouse::{typed, Context, Disconnect, Reply, Service, Status};
use gatehouse_store::{SaveSlot, SaveWriter, Store};
use prost::Message as _;
use tracing::{error, info, warn};

use crate::accounts::{Accounts, AuthStats, Guessing};
use crate::world::{ArenaRoom, Position};

/// The protobuf messages of `proto/arena.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/arena.rs"));
}

/// Route numbers: requests (and one notify) from the client, pushes from the server.
pub mod routes {
    /// Request `LoginRequest` → `LoginReply`.
    pub const LOGIN: u16 = 1;
    /// Request (empty) → `RoomList`.
    pub const ROOMS: u16 = 2;
    /// Request `JoinRoom` → `PlayerState`.
    pub const JOIN: u16 = 3;
    /// Request (empty) → `PlayerState`: back to the lobby.
    pub const LEAVE: u16 = 4;
    /// Request `Say` → empty.
    pub const SAY: u16 = 5;
    /// Request `Move` → `PlayerState`: placed at once.
    pub const MOVE: u16 = 6;
    /// Request `Whisper` → empty.
    pub const WHISPER: u16 = 7;
    /// Request (empty) → `WhoReply`.
    pub const WHO: u16 = 8;
    /// Notify `Input`: walk.
    pub const INPUT: u16 = 9;
    /// Request (empty) → empty: crash the caller's room (fault injection only).
    pub const CRASH_ROOM: u16 = 10;
    /// Request (empty) → `ServerStats`: tick lateness since the previous one, rooms,
    /// players.
    pub const STATS: u16 = 11;
    /// Push `Chat`.
    pub const CHAT: u16 = 100;
    /// Push `RoomState`: the whole room, on joining it.
    pub const ROOM_STATE: u16 = 103;
    /// Push `Delta`: what changed in the room during one tick.
    pub const DELTA: u16 = 104;
}

/// arena's own response statuses (gatehouse leaves 1000 and up to games).
pub mod status {
    use gatehouse::Status;
    /// The request needs a logged-in player.
    pub const NOT_LOGGED_IN: Status = Status(1001);
    /// This connection already has a player.
    pub const ALREADY_LOGGED_IN: Status = Status(1002);
    /// A player or room name breaks the naming rules.
    pub const BAD_NAME: Status = Status(1003);
    /// The whisper's addressee is not online.
    pub const NO_SUCH_PLAYER: Status = Status(1004);
    /// A position outside the world, or a text too long.
    pub const OUT_OF_RANGE: Status = Status(1005);
    /// The player's previous connection did not let go in time; try again.
    pub const LOGIN_BUSY: Status = Status(1006);
    /// Not the player's password.
    pub const WRONG_PASSWORD: Status = Status(1007);
    /// Too many wrong passwords lately for this name or from this address.
    pub const TOO_MANY_ATTEMPTS: Status = Status(1008);
    /// A password shorter than 8 or longer than 128 bytes.
    pub const BAD_PASSWORD: Status = Status(1009);
    /// The room (at login: and the lobby) has all the players it takes, or all it
    /// takes from the player's address.
    pub const ROOM_FULL: Status = Status(1010);
    /// This address created all the accounts it may for now; try later.
    pub const TOO_MANY_ACCOUNTS: Status = Status(1011);
}

/// Where new players start, and where `leave` takes them.
pub const LOBBY: &str = "lobby";
/// Largest |x| and |y|.
pub const WORLD_EDGE: i32 = 1000;
/// Longest chat or whisper text, in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest player or room name, in characters.
pub const MAX_NAME: usize = 24;
/// Most names a `who` answer lists.
pub const MAX_WHO: usize = 100;
/// Most rooms a `rooms` answer lists: with names of at most [`MAX_NAME`] characters,
/// an answer stays far below the smallest frame limit a server would set.
pub const MAX_ROOMS: usize = 100;
/// In a cluster, how often a room's walks are checkpointed to the store.
const ROOM_CHECKPOINT: Duration = Duration::from_secs(5);
/// In a cluster, how long a login waits for its claim save to land, and a
/// disconnect for its last save: less than a take-over from another node waits for
/// the session it ends ([`gatehouse::LOGIN_WAIT`] less the cluster's request timeout).
const LAND_WAIT: Duration = Duration::from_secs(2);

/// How an arena server runs.
#[derive(Debug, Clone)]
pub struct ArenaOptions {
    /// The rooms' tick period (50 ms: 20 Hz).
    pub tick: Duration,
    /// Players one room takes (a delta of all of them moving stays far below the
    /// default frame limit).
    pub max_room_players: usize,
    /// Players one address (an IPv4 address, an IPv6 /64) may have in one room, the
    /// lobby included, so that one client's many connections cannot fill it.
    pub max_room_players_per_ip: usize,
    /// Rooms at once.
    pub max_rooms: usize,
    /// Honour `crash_room` (the server's `server.allow_fault_injection`).
    pub fault_injection: bool,
    /// The limit on wrong passwords.
    pub guessing: Guessing,
    /// Accounts one address may create: that many at once, then one back every
    /// hour divided by it.
    pub new_accounts_per_ip_per_hour: NonZeroU32,
}

impl Default for ArenaOptions {
    fn default() -> Self {
        ArenaOptions {
            tick: Duration::from_millis(50),
            max_room_players: 200,
            max_room_players_per_ip: 20,
            max_rooms: 10_000,
            fault_injection: false,
            guessing: Guessing::default(),
            new_accounts_per_ip_per_hour: NonZeroU32::new(accounts::NEW_ACCOUNTS_PER_IP_PER_HOUR)
                .expect("not zero"),
        }
    }
}

/// The arena service.
pub struct Arena<S> {
    writer: SaveWriter<S>,
    rooms: Rooms<ArenaRoom>,
    accounts: Accounts,
    fault_injection: bool,
    /// Where the STATS route's window of tick lateness starts, and when it last
    /// answered.
    stats_window: Mutex<(LatenessMark, Option<std::time::Instant>)>,
}

/// Per connection: nothing until login.
#[derive(Default)]
pub struct Session {
    player: Option<Player>,
}

struct Player {
    /// Name, room, logins and password hash; where the player stands as of its
    /// last room (while in one, its room owns that: see [`Player::position`]).
    state: pb::PlayerState,
    /// The room the player is in (`None` only while changing rooms).
    room: Option<Membership<ArenaRoom>>,
    /// Where the state is saved: it builds on the version loaded at login.
    slot: SaveSlot,
    /// In a cluster: the login claimed the player, and the last save must land
    /// before another node's login loads it.
    fenced: bool,
}

impl Player {
    /// Where the player stands: as its room last recorded it, or as saved.
    fn position(&self) -> Position {
        match &self.room {
            Some(room) => room.state().at,
            None => Position::of(&self.state),
        }
    }

    /// Leaves the room, keeping where the player stood in it (no longer walking).
    fn leave_room(&mut self) {
        if let Some(room) = self.room.take() {
            room.state().at.write_into(&mut self.state);
        }
    }

    /// The state to save: with the room's position.
    fn saved(&self) -> pb::PlayerState {
        let mut state = self.state.clone();
        self.position().write_into(&mut state);
        state
    }

    /// What the player brings into a room.
    fn joining(&self) -> world::Joining {
        world::Joining {
            name: Arc::from(self.state.name.as_str()),
            at: self.position(),
        }
    }

    /// The state a client sees: without the password hash.
    fn view(&self) -> pb::PlayerState {
        let mut state = self.saved();
        state.password_hash.clear();
        state
    }
}

impl<S: Store> Arena<S> {
    /// The game with default options, saving through `writer`.
    pub fn new(writer: SaveWriter<S>) -> Self {
        Arena::with_options(writer, ArenaOptions::default()).expect("the default options are valid")
    }

    /// The game, saving through `writer`, run by `options`; an error if they cannot
    /// work (a zero tick or room size).
    pub fn with_options(writer: SaveWriter<S>, options: ArenaOptions) -> Result<Self, RoomError> {
        let room_options = RoomOptions {
            tick: Some(options.tick),
            // Positions live in the players' cells; walks in the snapshot.
            restart: Restart::FromSnapshot,
            max_members: options.max_room_players,
            max_members_per_address: Some(options.max_room_players_per_ip),
            max_rooms: options.max_rooms,
            ..RoomOptions::default()
        };
        let rooms = Rooms::new((), room_options)?;
        // In a cluster (the rooms shared), a room whose node is gone is made again
        // from its last checkpoint.
        rooms.checkpoint_to(&writer, ROOM_CHECKPOINT);
        Ok(Arena {
            writer,
            rooms,
            accounts: Accounts::new(options.guessing, options.new_accounts_per_ip_per_hour),
            fault_injection: options.fault_injection,
            stats_window: Mutex::new((LatenessMark::default(), None)),
        })
    }

    /// The save writer (to flush it at shutdown).
    pub fn writer(&self) -> &SaveWriter<S> {
        &self.writer
    }

    /// The rooms (to shut them down after the server, and for their numbers).
    pub fn rooms(&self) -> &Rooms<ArenaRoom> {
        &self.rooms
    }

    /// The login counters (and their collector, `gatehouse_arena_*`).
    pub fn auth_stats(&self) -> AuthStats {
        self.accounts.stats().clone()
    }

    /// Queues a save of the player's state.
    fn save(&self, player: &mut Player) {
        let state = player.saved();
        if let Err(e) = self
            .writer
            .save(&mut player.slot, state.encode_to_vec().into())
        {
            error!(player = %state.name, error = %e, "the player's state could not be saved");
        }
    }
}

impl<S: Store> Service for Arena<S> {
    type Session = Session;
    type Message = ();
    const LOGIN_REQUIRED: bool = true;
    /// A player whose connection drops (a phone changing networks) comes back to the
    /// same session within `resume.window`, standing where they stood, with every
    /// chat line and delta sent meanwhile; the save and the room's "left" wait until
    /// the session ends. The clients leave on purpose when the player logs out.
    const RESUMABLE: bool = true;

    async fn connect(&self, _ctx: &mut Context<'_, ()>) -> Session {
        Session::default()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        if route == routes::LOGIN {
            return typed::request(payload, |r| self.login(session, ctx, r)).await;
        }
        let Some(player) = &mut session.player else {
            return match self.route_name(route) {
                Some(_) => Reply::error(status::NOT_LOGGED_IN, "log in first"),
                None => Reply::unknown_route(route),
            };
        };
        match route {
            routes::ROOMS => typed::request(payload, |()| async { Ok(self.room_list()) }).await,
            routes::JOIN => typed::request(payload, |r| self.join(player, ctx, r)).await,
            routes::LEAVE => {
                let lobby = pb::JoinRoom { room: LOBBY.into() };
                typed::request(payload, |()| self.join(player, ctx, lobby)).await
            }
            routes::SAY => typed::request(payload, |r| self.say(player, r)).await,
            routes::MOVE => typed::request(payload, |r| self.move_to(player, ctx, r)).await,
            routes::WHISPER => typed::request(payload, |r| self.whisper(player, ctx, r)).await,
            routes::WHO => typed::request(payload, |()| self.who(player, ctx)).await,
            routes::CRASH_ROOM => typed::request(payload, |()| self.crash_room(player)).await,
            routes::STATS => typed::request(payload, |()| self.stats(ctx)).await,
            other => Reply::unknown_route(other),
        }
    }

    async fn notify(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Status {
        match (&mut session.player, route) {
            (Some(player), routes::INPUT) => {
                typed::notify(payload, |r| self.input(player, ctx, r)).await
            }
            (None, routes::INPUT) => status::NOT_LOGGED_IN,
            _ => Status::UNKNOWN_ROUTE,
        }
    }

    /// Saves a player who changed since the last checkpoint, while they play; one who
    /// is still walking stays dirty, so that the walk is checkpointed too.
    fn checkpoint(&self, session: &mut Session, ctx: &mut Context<'_, ()>) {
        let Some(player) = &mut session.player else {
            return;
        };
        self.save(player);
        if player.position().walking {
            ctx.mark_dirty();
        }
    }

    /// Leaves the room and saves the player (the seed's `save_on_end`); a login
    /// taking the player over goes on once this has returned, so the room hears
    /// "left" before its join. In a cluster the save has landed by then (or
    /// two seconds passed), for a login on another node loads from the database.
    async fn disconnect(&self, session: Session, info: Disconnect) {
        let Some(mut player) = session.player else {
            return;
        };
        player.leave_room();
        if !player.fenced {
            self.save(&mut player);
            info!(player = %player.state.name, reason = %info.reason, "left; save queued");
            return;
        }
        let data = player.saved().encode_to_vec().into();
        let name = &player.state.name;
        match self.writer.land(&mut player.slot, data, LAND_WAIT).await {
            Ok(()) => info!(player = %name, reason = %info.reason, "left; saved"),
            Err(e) => {
                warn!(player = %name, reason = %info.reason, error = %e, "left; the save did not land")
            }
        }
    }

    fn route_name(&self, route: u16) -> Option<&'static str> {
        Some(match route {
            routes::LOGIN => "login",
            routes::ROOMS => "rooms",
            routes::JOIN => "join",
            routes::LEAVE => "leave",
            routes::SAY => "say",
            routes::MOVE => "move",
            routes::WHISPER => "whisper",
            routes::WHO => "who",
            routes::INPUT => "input",
            routes::CRASH_ROOM => "crash_room",
            routes::STATS => "stats",
            _ => return None,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Player and room names: 1 to 24 letters, digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(valid_name("alice"));
        assert!(valid_name("Bob_2-x"));
        assert!(valid_name("ålesund"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(25)));
        assert!(valid_name(&"x".repeat(24)));
    }
}
