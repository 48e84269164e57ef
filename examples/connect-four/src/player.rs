//! The handlers: logging in, records, the queue and matchmaking, moves and
//! resignations, sitting down when matched, and leaving when the connection ends. Each returns its answer
//! or a [`Failure`] (a status and a text); `lib.rs` routes to them.

use std::sync::atomic::Ordering;
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
use crate::{lock, valid_name, ConnectFour, Place, Player};

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
            Place::Playing(game) => Ok(game),
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
    ) -> Result<Record, Failure> {
        let own = player.account.name();
        let name = if asked.name.is_empty() {
            own.to_owned()
        } else {
            asked.name
        };
        if !valid_name(&name) {
            return Err(Failure::new(status::BAD_NAME, "no such name"));
        }
        match self.load(&name).await?.0 {
            Some(record) => Ok(record),
            // Online, but no game finished yet.
            None if name == own => Ok(Record::default()),
            None => Err(Failure::new(status::NO_SUCH_PLAYER, "no record")),
        }
    }

    /// QUEUE: wait for an opponent, or be matched with the one waiting, who plays
    /// red (moves first). A room takes a connection only from that connection's own
    /// handlers, so each player sits down from its own session: both are sent an
    /// [`Invitation`], by a task of their own, which no handler being dropped can
    /// cut short.
    pub(crate) async fn queue(
        &self,
        player: &mut Player,
        ctx: &mut Context<'_, Invitation>,
    ) -> Result<wire::Queued, Failure> {
        match player.place() {
            Place::Idle => {}
            Place::Queued => return Err(Failure::new(status::BUSY, "already in the queue")),
            Place::Playing(_) => return Err(Failure::new(status::BUSY, "in a game")),
        }
        let (them, game) = {
            let mut waiting = lock(&self.waiting);
            let Some(them) = *waiting else {
                *waiting = Some(ctx.id());
                player.place = Place::Queued;
                return Ok(wire::Queued { matched: false });
            };
            // Made under the line's lock: nobody leaves the line for a game that
            // cannot be made.
            let number = self.games_made.fetch_add(1, Ordering::Relaxed) + 1;
            let game = self.games.create(&format!("game-{number}"));
            let game = game.map_err(|e| unavailable(format!("no game: {e}")))?;
            *waiting = None;
            (them, game)
        };
        player.place = Place::Queued;
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

    /// Takes `conn` out of the waiting line; false if it was not there.
    fn unqueue(&self, conn: ConnId) -> bool {
        let mut waiting = lock(&self.waiting);
        let there = *waiting == Some(conn);
        if there {
            *waiting = None;
        }
        there
    }

    /// LEAVE_QUEUE.
    pub(crate) async fn leave_queue(
        &self,
        player: &mut Player,
        ctx: &Context<'_, Invitation>,
    ) -> Result<(), Failure> {
        if !matches!(player.place(), Place::Queued) {
            return Err(Failure::new(status::NOT_QUEUED, "not in the queue"));
        }
        if !self.unqueue(ctx.id()) {
            // Taken from the line by an opponent: the invitation is on its way.
            return Err(Failure::new(status::NOT_QUEUED, "matched already"));
        }
        player.place = Place::Idle;
        Ok(())
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
        let entrant = Entrant {
            colour,
            conn: ctx.id(),
            account: player.account.clone(),
            over: false,
        };
        match game.join(ctx, entrant).await {
            Ok(game) => player.place = Place::Playing(game),
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
                self.unqueue(info.id);
            }
            Place::Playing(game) => {
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
