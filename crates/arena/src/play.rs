//! The handlers of a logged-in player: rooms, chat, moving, whispers, who, and the
//! fault-injection route. Each is a typed function over arena's protobuf messages;
//! `lib.rs` routes to them.

use gatehouse::room::RoomError;
use gatehouse::typed::Failure;
use gatehouse::{Context, Status};
use gatehouse_store::Store;
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::info;

use crate::world::ToRoom;
use crate::{
    pb, routes, status, valid_name, Arena, Player, MAX_ROOMS, MAX_TEXT, MAX_WHO, WORLD_EDGE,
};

/// The least time between two STATS answers, server-wide.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Chat and whispers: at most [`MAX_TEXT`] bytes.
fn check_text(text: &str) -> Result<(), Failure> {
    if text.len() > MAX_TEXT {
        return Err(Failure::new(status::OUT_OF_RANGE, "text too long"));
    }
    Ok(())
}

/// A join the room refused: full, in all or for the player's address, is arena's
/// ROOM_FULL (not the framework's 503, which clients take for a restarting server).
pub(crate) fn room_refused(room: &str, error: RoomError) -> Failure {
    match error {
        RoomError::Full => Failure::new(status::ROOM_FULL, format!("room {room} is full")),
        RoomError::AddressShareFull => Failure::new(
            status::ROOM_FULL,
            format!("room {room} has all the players it takes from your address"),
        ),
        other => other.into(),
    }
}

fn no_room() -> Failure {
    Failure::new(Status::UNAVAILABLE, "not in a room; join one")
}

impl<S: Store> Arena<S> {
    /// Route ROOMS.
    pub(crate) fn room_list(&self) -> pb::RoomList {
        let rooms = self.rooms.list();
        pb::RoomList {
            total: count(rooms.len()),
            rooms: rooms
                .into_iter()
                .take(MAX_ROOMS)
                .map(|room| pb::RoomInfo {
                    name: room.name,
                    players: count(room.members),
                })
                .collect(),
        }
    }

    /// Routes JOIN and LEAVE (a join of the lobby).
    pub(crate) async fn join(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, ()>,
        request: pb::JoinRoom,
    ) -> Result<pb::PlayerState, Failure> {
        let room = request.room;
        if !valid_name(&room) {
            return Err(Failure::new(status::BAD_NAME, "bad room name"));
        }
        if let (true, Some(current)) = (room == player.state.room, &player.room) {
            // Already there: a fresh RoomState, to resync.
            current.send(ToRoom::Resync).await?;
            return Ok(player.view());
        }
        {
            // Leave first: the same connection cannot be in two rooms.
            player.leave_room();
            let membership = match self.rooms.join(&room, ctx, player.joining()).await {
                Ok(membership) => membership,
                Err(e) => {
                    // Back where the player was (or the lobby), so it is somewhere.
                    player.room = self
                        .rooms
                        .join(&player.state.room, ctx, player.joining())
                        .await
                        .ok();
                    return Err(room_refused(&room, e));
                }
            };
            player.room = Some(membership);
            player.state.room = room;
            ctx.mark_dirty();
        }
        Ok(player.view())
    }

    /// Route SAY.
    pub(crate) async fn say(&self, player: &mut Player, request: pb::Say) -> Result<(), Failure> {
        check_text(&request.text)?;
        let room = player.room.as_ref().ok_or_else(no_room)?;
        room.send(ToRoom::Say(request.text)).await?;
        Ok(())
    }

    /// Route MOVE: the room places the player, then the answer says where it stands.
    pub(crate) async fn move_to(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, ()>,
        to: pb::Move,
    ) -> Result<pb::PlayerState, Failure> {
        let edge = -WORLD_EDGE..=WORLD_EDGE;
        if !edge.contains(&to.x) || !edge.contains(&to.y) {
            return Err(Failure::new(status::OUT_OF_RANGE, "outside the world"));
        }
        let room = player.room.as_ref().ok_or_else(no_room)?;
        let (done, placed) = oneshot::channel();
        room.send(ToRoom::Place {
            x: to.x,
            y: to.y,
            done,
        })
        .await?;
        ctx.mark_dirty();
        if room.host().is_some() {
            // The room runs on another node: its answer cannot cross, and the
            // position it records comes by message. It places the player where
            // asked (within the world, as checked above), one move more.
            let mut view = player.view();
            (view.x, view.y, view.moves) = (to.x, to.y, view.moves + 1);
            return Ok(view);
        }
        placed
            .await
            .map_err(|_| Failure::new(Status::UNAVAILABLE, "the room restarted; move again"))?;
        Ok(player.view())
    }

    /// Notify INPUT.
    pub(crate) async fn input(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, ()>,
        input: pb::Input,
    ) -> Result<(), Failure> {
        let room = player.room.as_ref().ok_or_else(no_room)?;
        room.send(ToRoom::Input(input)).await?;
        ctx.mark_dirty();
        Ok(())
    }

    /// Route WHISPER: to anyone online, wherever they are (on another node too).
    pub(crate) async fn whisper(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, ()>,
        whisper: pb::Whisper,
    ) -> Result<(), Failure> {
        check_text(&whisper.text)?;
        if ctx.server().locate(&whisper.to).await?.is_none() {
            return Err(Failure::new(status::NO_SUCH_PLAYER, "not online"));
        }
        let chat = pb::Chat {
            from: player.state.name.clone(),
            text: whisper.text,
            room: String::new(),
            whisper: true,
        };
        ctx.server()
            .push_to_player(&whisper.to, routes::CHAT, chat.encode_to_vec())
            .await?;
        Ok(())
    }

    /// Route WHO.
    pub(crate) async fn who(
        &self,
        player: &Player,
        ctx: &Context<'_, ()>,
    ) -> Result<pb::WhoReply, Failure> {
        let players = ctx.server().players(MAX_WHO).await?;
        let in_room = self
            .rooms
            .get(&player.state.room)
            .map_or(0, |room| room.stats().members);
        Ok(pb::WhoReply {
            online: count(players.online),
            players: players.names,
            in_room: count(in_room),
        })
    }

    /// Route STATS: at most one answer per [`STATS_EVERY`] server-wide (each one
    /// copies the lateness histogram, under the lock every tick takes).
    pub(crate) async fn stats(&self, ctx: &Context<'_, ()>) -> Result<pb::ServerStats, Failure> {
        let online = ctx.server().players(0).await?.online;
        let mut window = crate::lock(&self.stats_window);
        let now = std::time::Instant::now();
        if window
            .1
            .is_some_and(|last| now.duration_since(last) < STATS_EVERY)
        {
            return Err(Failure::new(
                Status::UNAVAILABLE,
                "stats asked too often; wait a moment",
            ));
        }
        window.1 = Some(now);
        let lateness = self.rooms.lateness_window(&mut window.0);
        drop(window);
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Ok(pb::ServerStats {
            ticks: lateness.ticks,
            late_ticks: lateness.late,
            lateness_p50_us: micros(lateness.p50),
            lateness_p99_us: micros(lateness.p99),
            lateness_max_us: micros(lateness.max),
            rooms: count(self.rooms.len()),
            online: count(online),
        })
    }

    /// Route CRASH_ROOM: fault injection, for tests and drills.
    pub(crate) async fn crash_room(&self, player: &mut Player) -> Result<(), Failure> {
        if !self.fault_injection {
            return Err(Failure::new(
                Status::FORBIDDEN,
                "fault injection is disabled (server.allow_fault_injection)",
            ));
        }
        info!(player = %player.state.name, room = %player.state.room, "fault injection: crashing the room");
        let room = player.room.as_ref().ok_or_else(no_room)?;
        room.send(ToRoom::Crash).await?;
        Ok(())
    }
}
