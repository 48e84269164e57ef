//! arena: the reference game, and the example other games copy. It is written only
//! against gatehouse's public API.
//!
//! Players log in by name (their saved state is loaded), move between rooms (hub
//! groups), chat in the room, move around, whisper to anyone on the server, and ask
//! who is online. Messages are protobuf (`proto/arena.proto`, compiled by prost in
//! `build.rs`). A player's state is saved through the [`SaveWriter`] when the
//! connection ends, whatever ends it (the seed's `save_on_end`), and checkpointed
//! while they play: within `limits.checkpoint_interval` of a change (a move, a room
//! change, a login), so that even a killed server loses no more than that.
//!
//! Duplicate login: logging in as a player who is online kicks the old connection
//! (`duplicate_login`) and waits until its disconnect hook has queued its save, so the
//! new login loads the latest state; the old connection's end only removes the
//! registry entry if it is still its own, so it never unregisters the new one. Logins
//! to one name take turns, so however many arrive at once, the last one is left
//! online and every other is told why (kicked, or LOGIN_BUSY).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::{ConnId, Context, Disconnect, HubHandle, KickReason, Reply, Service, Status};
use gatehouse_store::{SaveSlot, SaveWriter, Store};
use prost::Message as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The protobuf messages of `proto/arena.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/arena.rs"));
}

/// Route numbers: requests from the client, pushes from the server.
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
    /// Request `Move` → `PlayerState`.
    pub const MOVE: u16 = 6;
    /// Request `Whisper` → empty.
    pub const WHISPER: u16 = 7;
    /// Request (empty) → `WhoReply`.
    pub const WHO: u16 = 8;
    /// Push `Chat`.
    pub const CHAT: u16 = 100;
    /// Push `Moved`.
    pub const MOVED: u16 = 101;
    /// Push `RoomEvent`.
    pub const ROOM_EVENT: u16 = 102;
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
/// How long a login waits for the same player's previous connection to save and go.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The arena service.
pub struct Arena<S> {
    writer: SaveWriter<S>,
    online: Mutex<HashMap<String, Online>>,
    /// Logins to one name take turns: each takes over from the one before, so that
    /// however many arrive at once, exactly one is left online.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A player's entry in the online registry.
struct Online {
    conn: ConnId,
    /// Becomes true once that connection's save is queued and it is gone.
    released: watch::Receiver<bool>,
}

/// A name taken in the online registry by a login in progress. If the login does not
/// complete (it fails, or its handler is dropped at an await because the connection
/// was kicked or the server stops), dropping the claim gives the name back, so that
/// no ghost entry blocks the player's next login.
struct Claim<'a, S> {
    arena: &'a Arena<S>,
    name: String,
    conn: ConnId,
    /// `None` once the login completed and the session owns it.
    released: Option<watch::Sender<bool>>,
}

impl<S> Claim<'_, S> {
    /// The login completed: the session now holds the name until it disconnects.
    fn keep(mut self) -> watch::Sender<bool> {
        // `released` is only taken here or in drop, so it is still there; the
        // fallback (an already-released sender) is never used.
        self.released
            .take()
            .unwrap_or_else(|| watch::channel(true).0)
    }
}

/// A login's place in the line of logins to one name; the line is forgotten when
/// its last login is done with it.
struct Turn<'a, S> {
    arena: &'a Arena<S>,
    name: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a, S> Turn<'a, S> {
    fn take(arena: &'a Arena<S>, name: &'a str) -> Self {
        let line = lock(&arena.turns)
            .entry(name.to_owned())
            .or_default()
            .clone();
        Turn {
            arena,
            name,
            lock: line,
        }
    }
}

impl<S> Drop for Turn<'_, S> {
    fn drop(&mut self) {
        let mut turns = lock(&self.arena.turns);
        // Two holders: the map and this turn; then nobody else is in line.
        if turns
            .get(self.name)
            .is_some_and(|l| Arc::strong_count(l) == 2)
        {
            turns.remove(self.name);
        }
    }
}

impl<S> Drop for Claim<'_, S> {
    fn drop(&mut self) {
        if let Some(released) = self.released.take() {
            self.arena.release(&self.name, self.conn, &released);
        }
    }
}

/// Per connection: nothing until login.
#[derive(Default)]
pub struct Session {
    player: Option<Player>,
}

struct Player {
    state: pb::PlayerState,
    /// Where the state is saved: it builds on the version loaded at login.
    slot: SaveSlot,
    /// Tells a waiting login that this session's save is queued.
    released: watch::Sender<bool>,
    /// To tell the room this player left, from the disconnect hook.
    hub: HubHandle<()>,
}

impl<S> Arena<S> {
    fn online(&self) -> MutexGuard<'_, HashMap<String, Online>> {
        lock(&self.online)
    }

    /// Removes `name` from the registry if this connection still holds it.
    fn release(&self, name: &str, conn: ConnId, released: &watch::Sender<bool>) {
        let mut online = self.online();
        if online.get(name).is_some_and(|entry| entry.conn == conn) {
            online.remove(name);
        }
        drop(online);
        released.send_replace(true);
    }
}

impl<S: Store> Arena<S> {
    /// The game, saving through `writer`.
    pub fn new(writer: SaveWriter<S>) -> Self {
        Arena {
            writer,
            online: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// The save writer (to flush it at shutdown).
    pub fn writer(&self) -> &SaveWriter<S> {
        &self.writer
    }

    async fn login(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, ()>,
        payload: Bytes,
    ) -> Reply {
        if session.player.is_some() {
            return Reply::error(status::ALREADY_LOGGED_IN, "already logged in");
        }
        let Ok(request) = pb::LoginRequest::decode(payload) else {
            return Reply::error(Status::BAD_REQUEST, "expected LoginRequest");
        };
        let name = request.name;
        if !valid_name(&name) {
            return Reply::error(status::BAD_NAME, "names are 1-24 letters, digits, _ or -");
        }
        let claim = match self.claim(&name, ctx).await {
            Ok(claim) => claim,
            Err(reply) => return reply,
        };
        let (mut state, slot) = match self.writer.load(&name).await {
            Ok(loaded) => {
                let state = match loaded.data {
                    Some(saved) => pb::PlayerState::decode(saved).unwrap_or_else(|e| {
                        warn!(player = %name, error = %e, "saved state unreadable; starting afresh");
                        new_player(&name)
                    }),
                    None => new_player(&name),
                };
                (state, loaded.slot)
            }
            Err(e) => {
                // Without the saved state, playing on would overwrite it at logout;
                // dropping the claim lets the name go.
                drop(claim);
                warn!(player = %name, error = %e, "cannot load the player");
                return Reply::error(Status::UNAVAILABLE, "the player store is unavailable");
            }
        };
        state.logins += 1;
        ctx.mark_dirty();
        let hub = ctx.hub().clone();
        let _ = hub.join(ctx.id(), &state.room).await;
        announce(&hub, &state.name, &state.room, true, Some(ctx.id())).await;
        info!(player = %name, room = %state.room, "logged in");
        let reply = pb::LoginReply {
            state: Some(state.clone()),
        };
        session.player = Some(Player {
            state,
            slot,
            released: claim.keep(),
            hub,
        });
        Reply::ok(reply.encode_to_vec())
    }

    /// Registers `name` as online on this connection, first kicking the connection
    /// that has it and waiting until it has saved and gone. Logins to one name take
    /// turns, so no other login can take the name between that wait and the claim.
    async fn claim(&self, name: &str, ctx: &Context<'_, ()>) -> Result<Claim<'_, S>, Reply> {
        let busy = || Reply::error(status::LOGIN_BUSY, "the previous session is still closing");
        let turn = Turn::take(self, name);
        let Ok(_my_turn) = tokio::time::timeout(TAKEOVER_TIMEOUT, turn.lock.lock()).await else {
            return Err(busy());
        };
        let previous = self
            .online()
            .get(name)
            .map(|entry| (entry.conn, entry.released.clone()));
        if let Some((previous, mut released)) = previous {
            info!(player = %name, previous = %previous, "duplicate login; kicking the previous connection");
            let _ = ctx
                .hub()
                .kick(
                    previous,
                    KickReason::DUPLICATE_LOGIN,
                    "logged in from another connection",
                )
                .await;
            // An error means the sender is gone: released as well.
            let waited = tokio::time::timeout(TAKEOVER_TIMEOUT, released.wait_for(|r| *r)).await;
            if waited.is_err() {
                return Err(busy());
            }
        }
        let (tx, rx) = watch::channel(false);
        self.online().insert(
            name.to_owned(),
            Online {
                conn: ctx.id(),
                released: rx,
            },
        );
        Ok(Claim {
            arena: self,
            name: name.to_owned(),
            conn: ctx.id(),
            released: Some(tx),
        })
    }

    async fn play(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        let me = ctx.id();
        let hub = ctx.hub().clone();
        let state = &mut player.state;
        match route {
            routes::ROOMS => match hub.groups().await {
                Ok(groups) => Reply::ok(
                    pb::RoomList {
                        total: u32::try_from(groups.len()).unwrap_or(u32::MAX),
                        rooms: groups
                            .into_iter()
                            .take(MAX_ROOMS)
                            .map(|(name, players)| pb::RoomInfo {
                                name,
                                players: u32::try_from(players).unwrap_or(u32::MAX),
                            })
                            .collect(),
                    }
                    .encode_to_vec(),
                ),
                Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
            },
            routes::JOIN | routes::LEAVE => {
                let room = if route == routes::LEAVE {
                    LOBBY.to_owned()
                } else {
                    match pb::JoinRoom::decode(payload) {
                        Ok(join) if valid_name(&join.room) => join.room,
                        Ok(_) => return Reply::error(status::BAD_NAME, "bad room name"),
                        Err(_) => return Reply::error(Status::BAD_REQUEST, "expected JoinRoom"),
                    }
                };
                if room != state.room {
                    let _ = hub.leave(me, &state.room).await;
                    announce(&hub, &state.name, &state.room, false, None).await;
                    let _ = hub.join(me, &room).await;
                    announce(&hub, &state.name, &room, true, Some(me)).await;
                    state.room = room;
                    ctx.mark_dirty();
                }
                Reply::ok(state.encode_to_vec())
            }
            routes::SAY => {
                let Ok(say) = pb::Say::decode(payload) else {
                    return Reply::error(Status::BAD_REQUEST, "expected Say");
                };
                if say.text.len() > MAX_TEXT {
                    return Reply::error(status::OUT_OF_RANGE, "text too long");
                }
                let chat = pb::Chat {
                    from: state.name.clone(),
                    text: say.text,
                    room: state.room.clone(),
                    whisper: false,
                };
                let _ = hub
                    .group_broadcast(&state.room, routes::CHAT, chat.encode_to_vec().into(), None)
                    .await;
                Reply::empty()
            }
            routes::MOVE => {
                let Ok(to) = pb::Move::decode(payload) else {
                    return Reply::error(Status::BAD_REQUEST, "expected Move");
                };
                let edge = -WORLD_EDGE..=WORLD_EDGE;
                if !edge.contains(&to.x) || !edge.contains(&to.y) {
                    return Reply::error(status::OUT_OF_RANGE, "outside the world");
                }
                state.x = to.x;
                state.y = to.y;
                state.moves += 1;
                ctx.mark_dirty();
                let moved = pb::Moved {
                    name: state.name.clone(),
                    x: to.x,
                    y: to.y,
                };
                let _ = hub
                    .group_broadcast(
                        &state.room,
                        routes::MOVED,
                        moved.encode_to_vec().into(),
                        Some(me),
                    )
                    .await;
                Reply::ok(state.encode_to_vec())
            }
            routes::WHISPER => {
                let Ok(whisper) = pb::Whisper::decode(payload) else {
                    return Reply::error(Status::BAD_REQUEST, "expected Whisper");
                };
                if whisper.text.len() > MAX_TEXT {
                    return Reply::error(status::OUT_OF_RANGE, "text too long");
                }
                let Some(to) = self.online().get(&whisper.to).map(|entry| entry.conn) else {
                    return Reply::error(status::NO_SUCH_PLAYER, "not online");
                };
                let chat = pb::Chat {
                    from: state.name.clone(),
                    text: whisper.text,
                    room: String::new(),
                    whisper: true,
                };
                let _ = hub
                    .push_to(to, routes::CHAT, chat.encode_to_vec().into())
                    .await;
                Reply::empty()
            }
            routes::WHO => {
                let mut players: Vec<String> = self.online().keys().cloned().collect();
                let online = players.len();
                players.sort_unstable();
                players.truncate(MAX_WHO);
                let in_room = hub.group_count(&state.room).await.unwrap_or(0);
                Reply::ok(
                    pb::WhoReply {
                        players,
                        online: u32::try_from(online).unwrap_or(u32::MAX),
                        in_room: u32::try_from(in_room).unwrap_or(u32::MAX),
                    }
                    .encode_to_vec(),
                )
            }
            other => Reply::unknown_route(other),
        }
    }
}

impl<S: Store> Service for Arena<S> {
    type Session = Session;
    type Message = ();

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
            return self.login(session, ctx, payload).await;
        }
        match &mut session.player {
            Some(player) => self.play(player, ctx, route, payload).await,
            None if self.route_name(route).is_some() => {
                Reply::error(status::NOT_LOGGED_IN, "log in first")
            }
            None => Reply::unknown_route(route),
        }
    }

    /// Saves a player who changed since the last checkpoint, while they play.
    fn checkpoint(&self, session: &mut Session, _ctx: &mut Context<'_, ()>) {
        let Some(player) = &mut session.player else {
            return;
        };
        let state = player.state.encode_to_vec().into();
        if let Err(e) = self.writer.save(&mut player.slot, state) {
            error!(player = %player.state.name, error = %e, "checkpoint not saved");
        }
    }

    /// Saves the player (the seed's `save_on_end`), then lets a waiting login in.
    async fn disconnect(&self, session: Session, info: Disconnect) {
        let Some(player) = session.player else {
            return;
        };
        let Player {
            state,
            mut slot,
            released,
            hub,
        } = player;
        if let Err(e) = self.writer.save(&mut slot, state.encode_to_vec().into()) {
            error!(player = %state.name, error = %e, "the player's state could not be saved");
        }
        // The room hears "left" before a waiting login can announce "joined".
        announce(&hub, &state.name, &state.room, false, Some(info.id)).await;
        self.release(&state.name, info.id, &released);
        info!(player = %state.name, reason = %info.reason, "left; save queued");
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
            _ => return None,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn new_player(name: &str) -> pb::PlayerState {
    pb::PlayerState {
        name: name.to_owned(),
        room: LOBBY.to_owned(),
        ..Default::default()
    }
}

/// Player and room names: 1 to 24 letters, digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// Tells a room that someone joined or left. A hub that is restarting has no rooms
/// to tell, so its error is ignored.
async fn announce(
    hub: &HubHandle<()>,
    name: &str,
    room: &str,
    joined: bool,
    except: Option<ConnId>,
) {
    let event = pb::RoomEvent {
        name: name.to_owned(),
        room: room.to_owned(),
        joined,
    };
    let _ = hub
        .group_broadcast(
            room,
            routes::ROOM_EVENT,
            event.encode_to_vec().into(),
            except,
        )
        .await;
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
