//! The game room: one gatehouse room per game, without ticks (nothing happens
//! between moves). It owns the board and the two seats, checks every move (a player
//! of this game, the game under way, their turn, the column), pushes each move to
//! both players, ends the game (four in a row, a full board, a resignation, a
//! disconnect) and counts the result in both players' records, which queues their
//! saves.
//!
//! A room takes a connection only from that connection's own handlers, so each
//! player sits down from its own session, when it handles its [`Invitation`]. The
//! game starts when both sit; from the moment it opens, a game waits at most
//! [`Options::join_time`] for them.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::room::StopReason;
use gatehouse::room::{Origin, Refusal, Restart, Room, RoomContext, RoomHandle, RoomOptions};
use gatehouse::typed::Failure;
use gatehouse::ConnId;
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::account::Account;
use crate::board::{Board, MoveError};
use crate::wire::{routes, status, Colour, End, GameOver, Matched, Moved};
use crate::Options;

/// One game: the room type the server runs (registered with `Server::with_rooms`).
pub struct Game {
    board: Board,
    /// Who sits in red's seat, then in yellow's.
    seats: [Option<Entrant>; 2],
    phase: Phase,
    join_time: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Seating,
    Playing,
    Over,
}

/// What a player brings to its seat: the room type's `Join`, and the member state
/// its session reads (`Membership::state`).
#[derive(Clone)]
pub struct Entrant {
    pub(crate) colour: Colour,
    pub(crate) conn: ConnId,
    pub(crate) account: Arc<Account>,
    /// Set by the room (`set_member_state`) once the game is over, before it says
    /// so: the session reads it to know the player is free to queue again.
    pub(crate) over: bool,
}

/// What the server tells a matched player's session: sit down in this game, with this
/// colour. The service's `Message`.
pub struct Invitation {
    pub(crate) game: RoomHandle<Game>,
    pub(crate) colour: Colour,
}

/// What players' sessions and the room's timer send the room: its `Message`.
pub enum ToGame {
    /// The game is made: the players have `join_time` to sit down.
    Open,
    /// Drop a piece into `column`; the answer is the move's verdict.
    Move {
        /// 0 to 6 (anything else is refused).
        column: u8,
        /// Where the verdict goes.
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// The player leaves the game, the opponent winning (`Resigned`, `Disconnected`)
    /// or nobody (`Abandoned`: the server is to blame); `done` says it is counted.
    Quit {
        /// How the game ends.
        end: End,
        /// Answered once the result is counted.
        done: oneshot::Sender<()>,
    },
    /// The time for both players to sit down ran out.
    SeatingDeadline,
}

/// How the server runs its games: no tick, two seats, and a crash (a hook that
/// panics) ends the game: no restart, its players are kicked `room_closed`.
pub(crate) fn room_options(max_games: usize) -> RoomOptions {
    RoomOptions {
        tick: None,
        restart: Restart::Never,
        max_members: 2,
        // A player's session waits for the verdict of each move: one or two queued.
        member_queue: 4,
        max_rooms: max_games,
        ..RoomOptions::default()
    }
}

impl Game {
    /// The seat of the player who sent a message.
    fn seat_of(&self, from: Origin) -> Option<&Entrant> {
        let Origin::Member(member) = from else {
            return None;
        };
        self.seats.iter().flatten().find(|seat| seat.conn == member)
    }

    /// Both players sit: tell each their colour and opponent; red moves first.
    fn start(&mut self, ctx: &mut RoomContext<'_, Self>) {
        self.phase = Phase::Playing;
        let [Some(red), Some(yellow)] = &self.seats else {
            return;
        };
        for (seat, opponent) in [(red, yellow), (yellow, red)] {
            let matched = Matched {
                game: ctx.name().to_owned(),
                colour: seat.colour as i32,
                opponent: opponent.account.name().to_owned(),
            };
            ctx.push(seat.conn, routes::MATCHED, matched.encode_to_vec());
        }
        info!(
            game = ctx.name(),
            red = red.account.name(),
            yellow = yellow.account.name(),
            "game started"
        );
    }

    /// A MOVE, checked: by a player of this game, under way, in turn, in a column with
    /// room.
    fn play(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        from: Origin,
        column: u8,
    ) -> Result<(), Failure> {
        let not_playing = |why: &str| Failure::new(status::NOT_PLAYING, why);
        let colour = self
            .seat_of(from)
            .ok_or_else(|| not_playing("not a player of this game"))?
            .colour;
        match self.phase {
            Phase::Seating => return Err(not_playing("the game has not started")),
            Phase::Over => return Err(not_playing("the game is over")),
            Phase::Playing => {}
        }
        let board = &mut self.board;
        if board.to_move() != colour {
            return Err(Failure::new(
                status::NOT_YOUR_TURN,
                "it is your opponent's move",
            ));
        }
        let row = board.drop_piece(usize::from(column)).map_err(|e| match e {
            MoveError::NoSuchColumn => Failure::new(status::BAD_COLUMN, "columns are 0 to 6"),
            MoveError::ColumnFull => Failure::new(status::COLUMN_FULL, "that column is full"),
        })?;
        let end = if board.wins_at(usize::from(column), row) {
            Some((End::FourInARow, colour))
        } else if board.is_full() {
            Some((End::BoardFull, Colour::Nobody))
        } else {
            None
        };
        let moved = Moved {
            colour: colour as i32,
            column: u32::from(column),
            row: row as u32,
            board: board.to_bytes(),
            next: end.map_or(board.to_move(), |_| Colour::Nobody) as i32,
        };
        // Encoded once for both players.
        ctx.broadcast(routes::MOVED, moved.encode_to_vec());
        if let Some((end, winner)) = end {
            self.finish(ctx, end, winner);
        }
        Ok(())
    }

    /// A player leaves: the opponent wins, or nobody if the game had not started or
    /// the server is to blame (`Abandoned`).
    fn quit(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, end: End) {
        let colour = self.seat_of(from).map(|seat| seat.colour);
        match (self.phase, colour) {
            (Phase::Over, _) | (_, None) => {}
            (Phase::Playing, Some(colour)) if end != End::Abandoned => {
                self.finish(ctx, end, colour.other());
            }
            _ => self.finish(ctx, End::Abandoned, Colour::Nobody),
        }
    }

    /// The game is over: count it in both records (which queues their saves), tell
    /// both players, close the room.
    fn finish(&mut self, ctx: &mut RoomContext<'_, Self>, end: End, winner: Colour) {
        self.phase = Phase::Over;
        for seat in self.seats.iter().flatten() {
            let account = &seat.account;
            let record = match (end, winner) {
                (End::Abandoned, _) => account.record(),
                (_, Colour::Nobody) => account.count(|record| &mut record.draws),
                (_, winner) if winner == seat.colour => account.count(|record| &mut record.wins),
                _ => account.count(|record| &mut record.losses),
            };
            // Before the push: a client that reads GAME_OVER may queue again at once.
            let over = Entrant {
                over: true,
                ..seat.clone()
            };
            ctx.set_member_state(seat.conn, over);
            let over = GameOver {
                end: end as i32,
                winner: winner as i32,
                record: Some(record),
            };
            ctx.push(seat.conn, routes::GAME_OVER, over.encode_to_vec());
        }
        info!(game = ctx.name(), ?end, ?winner, "game over");
        ctx.close();
    }
}

impl Room for Game {
    type Config = Options;
    type Join = Entrant;
    type Message = ToGame;
    type Snapshot = ();

    fn create(_name: &str, options: &Options, _restored: Option<()>) -> Self {
        Game {
            board: Board::default(),
            seats: [None, None],
            phase: Phase::Seating,
            join_time: options.join_time,
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        _member: ConnId,
        entrant: &Entrant,
    ) -> Result<(), Refusal> {
        let seat = &mut self.seats[usize::from(entrant.colour == Colour::Yellow)];
        if self.phase != Phase::Seating || seat.is_some() {
            return Err(Refusal::new(status::NOT_PLAYING, "the game is over"));
        }
        *seat = Some(entrant.clone());
        if self.seats.iter().all(Option::is_some) {
            self.start(ctx);
        }
        Ok(())
    }

    /// A member left without quitting (its session ended some other way): as if its
    /// connection had ended.
    fn leave(&mut self, ctx: &mut RoomContext<'_, Self>, member: ConnId) {
        self.quit(ctx, Origin::Member(member), End::Disconnected);
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToGame) {
        match message {
            ToGame::Open => {
                if let Err(e) = ctx.after(self.join_time, ToGame::SeatingDeadline) {
                    warn!(game = ctx.name(), error = %e, "no deadline to sit down");
                }
            }
            ToGame::Move { column, reply } => {
                let verdict = self.play(ctx, from, column);
                let _ = reply.send(verdict);
            }
            ToGame::Quit { end, done } => {
                self.quit(ctx, from, end);
                let _ = done.send(());
            }
            ToGame::SeatingDeadline => {
                if self.phase == Phase::Seating {
                    self.finish(ctx, End::Abandoned, Colour::Nobody);
                }
            }
        }
    }

    /// The server stops with the game under way: no result.
    fn stopped(&mut self, ctx: &mut RoomContext<'_, Self>, _reason: StopReason) {
        if self.phase != Phase::Over {
            self.finish(ctx, End::Abandoned, Colour::Nobody);
        }
    }
}
