//! The handlers: logging in, records, the queue, moves and resignations, sitting
//! down when matched, and leaving when the connection ends. Each returns its answer
//! or a [`Failure`] (a status and a text); `lib.rs` routes to them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::room::{Membership, RoomError};
use gatehouse::typed::Failure;
use gatehouse::{ConnId, Context, Disconnect, DisconnectReason, Status};
use gatehouse_store::Store;
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::info;

use crate::account::Account;
use crate::game::{Entrant, Game, Invitation, Quit, ToGame};
use crate::lobby::Waiting;
use crate::wire::{self, routes, status, Colour, End, Record};
use crate::{valid_name, ConnectFour, Place, Player, Session};

/// How long a disconnect waits for the game to count its result before the name is
/// free again (the hook itself has `limits.disconnect_timeout`).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(what: impl std::fmt::Display) -> Failure {
    Failure::new(Status::UNAVAILABLE, what.to_string())
}

/// A game that took no message: it has ended (or is ending).
fn game_gone(error: RoomError) -> Failure {
    match error {
        RoomError::Closed => Failure::new(status::NOT_PLAYING, "the game is over"),
        other => other.into(),
    }
}

fn not_playing() -> Failure {
    Failure::new(status::NOT_PLAYING, "not in a game")
}

impl Player {
    /// The game the player is in, if it is still on.
    fn game(&mut self) -> Result<&Membership<Game>, Failure> {
        match self.place() {
            Place::Playing { game, .. } => Ok(game),
            Place::Idle | Place::Queued => Err(not_playing()),
        }
    }
}

impl<S: Store> ConnectFour<S> {
    /// LOGIN: take the name (if nobody online has it), load the record.
    pub(crate) async fn login(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, Invitation>,
        login: wire::Login,
    ) -> Result<Record, Failure> {
        if session.player.is_some() {
            return Err(Failure::new(status::ALREADY_LOGGED_IN, "already logged in"));
        }
        let name = login.name;
        if !valid_name(&name) {
            return Err(Failure::new(
                status::BAD_NAME,
                "names are 1 to 16 letters, digits, _ or -",
            ));
        }
        let claim = self.lobby.claim(&name, ctx.id())?;
        // The latest record, a save still queued included.
        let loaded = self.writer.load(&name).await.map_err(unavailable)?;
        let account = Account::open(&name, loaded, &self.writer)
            .map_err(|e| Failure::new(Status::INTERNAL_ERROR, format!("unreadable record: {e}")))?;
        ctx.logged_in(&name).await?;
        claim.keep();
        let record = account.record();
        session.player = Some(Player {
            account: Arc::new(account),
            place: Place::Idle,
        });
        info!(player = %name, "logged in");
        Ok(record)
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
        let loaded = self.writer.load(&name).await.map_err(unavailable)?;
        let record = match loaded.data {
            Some(data) => Record::decode(data).map_err(|e| {
                Failure::new(Status::INTERNAL_ERROR, format!("unreadable record: {e}"))
            })?,
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
        let me = Waiting {
            name: player.account.name().to_owned(),
            conn: ctx.id(),
        };
        let matched = self.lobby.queue(me, |name| self.games.create(name));
        let matched = matched.map_err(|e| unavailable(format!("no game: {e}")))?;
        player.place = Place::Queued;
        let Some((them, game)) = matched else {
            return Ok(wire::Queued { matched: false });
        };
        info!(game = game.name(), red = %them.name, yellow = player.account.name(), "matched");
        let seats = [(them.conn, Colour::Red), (ctx.id(), Colour::Yellow)];
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

    /// LOBBY.
    pub(crate) fn lobby_info(&self) -> wire::LobbyInfo {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        wire::LobbyInfo {
            online: count(self.lobby.online()),
            waiting: count(self.lobby.waiting()),
            games: count(self.games.len()),
        }
    }

    /// MOVE: one byte, the column; the game decides.
    pub(crate) async fn play(&self, player: &mut Player, payload: &[u8]) -> Result<(), Failure> {
        let &[column] = payload else {
            return Err(Failure::new(
                Status::BAD_REQUEST,
                "a move is one byte: the column, 0 to 6",
            ));
        };
        let game = player.game()?;
        let (reply, verdict) = oneshot::channel();
        game.send(ToGame::Move { column, reply })
            .await
            .map_err(game_gone)?;
        verdict
            .await
            .map_err(|_| unavailable("the game did not take the move; try again"))?
    }

    /// RESIGN: the opponent wins (GAME_OVER follows).
    pub(crate) async fn resign(&self, player: &mut Player) -> Result<(), Failure> {
        let game = player.game()?;
        let (done, settled) = oneshot::channel();
        let why = Quit::Resigned;
        game.send(ToGame::Quit { why, done })
            .await
            .map_err(game_gone)?;
        settled
            .await
            .map_err(|_| unavailable("the game did not take the resignation; try again"))
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
        let entrant = Entrant::new(colour, player.account.clone(), over.clone());
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
        let name = player.account.name().to_owned();
        match std::mem::replace(player.place(), Place::Idle) {
            Place::Idle => {}
            Place::Queued => {
                self.lobby.leave(info.id);
            }
            Place::Playing { game, .. } => {
                let why = match info.reason {
                    // Not the player's doing: nobody loses.
                    DisconnectReason::Shutdown
                    | DisconnectReason::ServerRestart
                    | DisconnectReason::HandlerPanic
                    | DisconnectReason::HandlerTimeout => Quit::ServerStopping,
                    _ => Quit::Disconnected,
                };
                let (done, settled) = oneshot::channel();
                if game.send(ToGame::Quit { why, done }).await.is_ok() {
                    // The result is counted (and its save queued) before the name is
                    // free, so the player's next login loads it.
                    let _ = tokio::time::timeout(SETTLE_TIMEOUT, settled).await;
                }
            }
        }
        self.lobby.release(&name, info.id);
        info!(player = %name, reason = %info.reason, "left");
    }
}
