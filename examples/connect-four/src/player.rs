//! The handlers: logging in, records, the queue, moves and resignations, sitting
//! down when matched, and leaving when the connection ends. Each returns its answer
//! or a [`Failure`] (a status and a text); `lib.rs` routes to them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gatehouse::room::{Membership, RoomError};
use gatehouse::typed::Failure;
use gatehouse::{ConnId, Context, Disconnect, DisconnectReason, Status};
use gatehouse_store::{SaveSlot, Store};
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::info;

use crate::account::Account;
use crate::game::{Entrant, Game, Invitation, ToGame};
use crate::wire::{self, routes, status, Colour, End, Record};
use crate::{valid_name, ConnectFour, Place, Player};

fn unavailable(what: impl std::fmt::Display) -> Failure {
    Failure::new(Status::UNAVAILABLE, what.to_string())
}

/// Sends `game` a message carrying a reply channel, and waits for the answer.
async fn ask<T>(
    game: &Membership<Game>,
    message: impl FnOnce(oneshot::Sender<T>) -> ToGame,
) -> Result<T, Failure> {
    let (reply, answer) = oneshot::channel();
    game.send(message(reply)).await.map_err(|e| match e {
        // It has ended (or is ending).
        RoomError::Closed => Failure::new(status::NOT_PLAYING, "the game is over"),
        other => other.into(),
    })?;
    answer
        .await
        .map_err(|_| unavailable("the game did not answer; try again"))
}

impl Player {
    /// The game the player is in, if it is still on.
    fn game(&mut self) -> Result<&Membership<Game>, Failure> {
        match self.place() {
            Place::Playing { game, .. } => Ok(game),
            Place::Idle | Place::Queued => Err(Failure::new(status::NOT_PLAYING, "not in a game")),
        }
    }
}

impl<S: Store> ConnectFour<S> {
    /// LOGIN: take the name (if nobody online has it), load the record.
    pub(crate) async fn login(
        &self,
        session: &mut Option<Player>,
        ctx: &mut Context<'_, Invitation>,
        login: wire::Login,
    ) -> Result<Record, Failure> {
        if session.is_some() {
            return Err(Failure::new(status::ALREADY_LOGGED_IN, "already logged in"));
        }
        let name = login.name;
        if !valid_name(&name) {
            return Err(Failure::new(
                status::BAD_NAME,
                "names are 1 to 16 letters, digits, _ or -",
            ));
        }
        // Until this login is done, no other login to the name goes on.
        let _turn = ctx.login_turn(&name).await?;
        // Held from its login until its connection's disconnect hook has run.
        let holder = ctx.server().player(&name).await?;
        if holder.is_some_and(|holder| holder != ctx.id()) {
            return Err(Failure::new(
                status::NAME_TAKEN,
                format!("{name} is online already"),
            ));
        }
        let (record, slot) = self.load(&name).await?;
        let record = record.unwrap_or_default();
        ctx.logged_in(&name).await?;
        let account = Account::new(&name, record, slot, &self.writer);
        *session = Some(Player {
            account: Arc::new(account),
            place: Place::Idle,
        });
        info!(player = %name, "logged in");
        Ok(record)
    }

    /// A player's latest record (none yet for a new player), a save still queued
    /// included, and where its next save goes. A record this code cannot read is an
    /// error: better refuse than overwrite it.
    async fn load(&self, name: &str) -> Result<(Option<Record>, SaveSlot), Failure> {
        let loaded = self.writer.load(name).await.map_err(unavailable)?;
        let unreadable = |e: prost::DecodeError| {
            Failure::new(Status::INTERNAL_ERROR, format!("unreadable record: {e}"))
        };
        let record = loaded.data.map(Record::decode).transpose();
        Ok((record.map_err(unreadable)?, loaded.slot))
    }

    /// STATS: a player's record, as stored (yours if no name is given).
    pub(crate) async fn stats(
        &self,
        player: &Player,
        asked: wire::StatsRequest,
    ) -> Result<wire::Stats, Failure> {
        let own = player.account.name();
        let name = if asked.name.is_empty() {
            own.to_owned()
        } else {
            asked.name
        };
        if !valid_name(&name) {
            return Err(Failure::new(status::BAD_NAME, "no such name"));
        }
        let record = match self.load(&name).await?.0 {
            Some(record) => record,
            // Online, but no game finished yet.
            None if name == own => Record::default(),
            None => return Err(Failure::new(status::NO_SUCH_PLAYER, "no record")),
        };
        Ok(wire::Stats {
            name,
            record: Some(record),
        })
    }

    /// QUEUE: wait for an opponent, or be matched with the one waiting, who plays
    /// red (moves first). A room takes a connection only from that connection's own
    /// handlers, so each player sits down from its own session: both are sent an
    /// [`Invitation`], by a task of their own, which no handler being dropped can
    /// cut short.
    pub(crate) fn queue(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, Invitation>,
    ) -> Result<wire::Queued, Failure> {
        match player.place() {
            Place::Idle => {}
            Place::Queued => return Err(Failure::new(status::BUSY, "already in the queue")),
            Place::Playing { .. } => return Err(Failure::new(status::BUSY, "in a game")),
        }
        let matched = self.lobby.queue(ctx.id(), |name| self.games.create(name));
        let matched = matched.map_err(|e| unavailable(format!("no game: {e}")))?;
        player.place = Place::Queued;
        let Some((them, game)) = matched else {
            return Ok(wire::Queued { matched: false });
        };
        let seats = [(them, Colour::Red), (ctx.id(), Colour::Yellow)];
        let server = ctx.server().clone();
        tokio::spawn(async move {
            // The players' time to sit down starts now, whatever becomes of them.
            if game.send(ToGame::Open).await.is_err() {
                return;
            }
            for (conn, colour) in seats {
                let invitation = Invitation {
                    game: game.clone(),
                    colour,
                };
                // Dropped if the player has gone: the deadline ends the game.
                let _ = server.send_message(conn, invitation).await;
            }
        });
        Ok(wire::Queued { matched: true })
    }

    /// LEAVE_QUEUE.
    pub(crate) fn leave_queue(&self, player: &mut Player, conn: ConnId) -> Result<(), Failure> {
        if !matches!(player.place(), Place::Queued) {
            return Err(Failure::new(status::NOT_QUEUED, "not in the queue"));
        }
        if !self.lobby.leave(conn) {
            // Taken from the line by an opponent: the invitation is on its way.
            return Err(Failure::new(status::NOT_QUEUED, "matched already"));
        }
        player.place = Place::Idle;
        Ok(())
    }

    /// LOBBY: who is online is the server's count.
    pub(crate) async fn lobby_info(
        &self,
        ctx: &Context<'_, Invitation>,
    ) -> Result<wire::LobbyInfo, Failure> {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(wire::LobbyInfo {
            online: count(ctx.server().players(0).await?.online),
            waiting: count(self.lobby.waiting()),
            games: count(self.games.len()),
        })
    }

    /// MOVE: one byte, the column; the game decides.
    pub(crate) async fn play(&self, player: &mut Player, payload: &[u8]) -> Result<(), Failure> {
        let &[column] = payload else {
            return Err(Failure::new(
                Status::BAD_REQUEST,
                "a move is one byte: the column, 0 to 6",
            ));
        };
        ask(player.game()?, |reply| ToGame::Move { column, reply }).await?
    }

    /// RESIGN: the opponent wins (GAME_OVER follows).
    pub(crate) async fn resign(&self, player: &mut Player) -> Result<(), Failure> {
        let end = End::Resigned;
        ask(player.game()?, |done| ToGame::Quit { end, done }).await
    }

    /// An invitation to sit down in a game, with a colour.
    pub(crate) async fn accept(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, Invitation>,
        Invitation { game, colour }: Invitation,
    ) {
        if !matches!(player.place(), Place::Queued) {
            return; // cannot happen: only a queued player is matched
        }
        let over = Arc::new(AtomicBool::new(false));
        let entrant = Entrant {
            colour,
            conn: ctx.id(),
            account: player.account.clone(),
            over: over.clone(),
        };
        match game.join(ctx, entrant).await {
            Ok(game) => player.place = Place::Playing { game, over },
            Err(_) => {
                // Too late: the game ended before this player sat down.
                player.place = Place::Idle;
                let over = wire::GameOver {
                    end: End::Abandoned as i32,
                    winner: Colour::Nobody as i32,
                    record: Some(player.account.record()),
                };
                ctx.push(routes::GAME_OVER, over.encode_to_vec());
            }
        }
    }

    /// The connection ended.
    pub(crate) async fn leave(&self, mut player: Player, info: &Disconnect) {
        match std::mem::replace(player.place(), Place::Idle) {
            Place::Idle => {}
            Place::Queued => {
                self.lobby.leave(info.id);
            }
            Place::Playing { game, .. } => {
                let end = match info.reason {
                    // Not the player's doing: nobody loses.
                    DisconnectReason::Shutdown
                    | DisconnectReason::ServerRestart
                    | DisconnectReason::HandlerPanic
                    | DisconnectReason::HandlerTimeout => End::Abandoned,
                    _ => End::Disconnected,
                };
                // The name is free once this hook returns: the result is counted
                // (and its save queued) first, so the player's next login loads it.
                let _ = ask(&game, |done| ToGame::Quit { end, done }).await;
            }
        }
        info!(player = player.account.name(), reason = %info.reason, "left");
    }
}
