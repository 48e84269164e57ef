//! The game room: one gatehouse room per game, without ticks (nothing happens between
//! moves but the clock, which is a room timer). It owns the board and the two seats,
//! checks every move (a player of this game, the game under way, their turn, the
//! column), pushes each move to both players, ends the game (four in a row, a full
//! board, a resignation, a disconnect, the clock) and counts the result in both
//! players' records, which queues their saves.
//!
//! A room takes a connection only from that connection's own handlers, so each
//! player sits down from its own session, when it handles its [`Invitation`]. The
//! game starts when both sit; from the moment it opens, a game waits at most
//! [`Options::join_time`] for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gatehouse::room::{
    Origin, Refusal, Restart, Room, RoomContext, RoomHandle, RoomOptions, StopReason,
};
use gatehouse::timer::Timer;
use gatehouse::typed::Failure;
use gatehouse::{ConnId, Status};
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::account::Account;
use crate::board::{Board, MoveError};
use crate::wire::{routes, status, Colour, End, GameOver, Matched, Moved};
use crate::Options;

/// One game: the room type the server runs (registered with `Server::with_rooms`).
pub struct Game {
    options: Options,
    table: Table,
    /// Runs out when the player to move has taken too long.
    clock: Option<Timer>,
}

/// The seats and the board: what a game that crashed restarts from (its snapshot).
#[derive(Clone, Default)]
pub struct Table {
    board: Board,
    /// Who sits in red's seat, then in yellow's.
    seats: [Option<Entrant>; 2],
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Seating,
    Playing,
    Over,
}

/// What a player brings to its seat: the room type's `Join`.
#[derive(Clone)]
pub struct Entrant {
    pub(crate) colour: Colour,
    /// The player's connection, the member it joins as (again after a restart).
    pub(crate) conn: ConnId,
    pub(crate) account: Arc<Account>,
    /// Set by the room once the game is over, before it says so: the session reads it
    /// to know the player is free to queue again.
    pub(crate) over: Arc<AtomicBool>,
}

/// What the server tells a matched player's session: sit down in this game, with this
/// colour. The service's `Message`.
pub struct Invitation {
    pub(crate) game: RoomHandle<Game>,
    pub(crate) colour: Colour,
}

/// What players' sessions and the room's timers send the room: its `Message`.
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
    /// The clock wound when `moves` moves had been made ran out.
    Clock {
        /// The moves made when it was wound: a move since makes it stale.
        moves: u32,
    },
    /// The time for both players to sit down ran out.
    SeatingDeadline,
}

/// How the server runs its games: no tick, two seats, restarted from the table if a
/// hook panics.
pub(crate) fn room_options(max_games: usize) -> RoomOptions {
    RoomOptions {
        tick: None,
        restart: Restart::FromSnapshot,
        max_members: 2,
        // A player's session waits for the verdict of each move: one or two queued.
        member_queue: 4,
        max_rooms: max_games,
        ..RoomOptions::default()
    }
}

impl Game {
    /// The colour of the player who sent a message.
    fn colour_of(&self, from: Origin) -> Option<Colour> {
        let Origin::Member(member) = from else {
            return None;
        };
        let mut seats = self.table.seats.iter().flatten();
        seats
            .find(|seat| seat.conn == member)
            .map(|seat| seat.colour)
    }

    /// Both players sit: tell each their colour and opponent; red moves first.
    fn start(&mut self, ctx: &mut RoomContext<'_, Self>) {
        self.table.phase = Phase::Playing;
        let [Some(red), Some(yellow)] = &self.table.seats else {
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
        self.wind_clock(ctx);
    }

    /// The players have `join_time` to sit down (a deadline that runs out once the
    /// game has started changes nothing).
    fn set_deadline(&mut self, ctx: &mut RoomContext<'_, Self>) {
        if let Err(e) = ctx.after(self.options.join_time, ToGame::SeatingDeadline) {
            warn!(game = ctx.name(), error = %e, "no deadline to sit down");
        }
    }

    /// The player to move has `turn_time` for it.
    fn wind_clock(&mut self, ctx: &mut RoomContext<'_, Self>) {
        if let Some(clock) = self.clock.take() {
            clock.cancel();
        }
        let moves = self.table.board.moves();
        match ctx.after(self.options.turn_time, ToGame::Clock { moves }) {
            Ok(clock) => self.clock = Some(clock),
            Err(e) => warn!(game = ctx.name(), error = %e, "no clock for this move"),
        }
    }

    /// A MOVE, checked: by a player of this game, under way, in turn, in a column with
    /// room.
    fn play(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        from: Origin,
        column: u8,
    ) -> Result<(), Failure> {
        let colour = self
            .colour_of(from)
            .ok_or_else(|| Failure::new(status::NOT_PLAYING, "not a player of this game"))?;
        match self.table.phase {
            Phase::Seating => Err(Failure::new(
                status::NOT_PLAYING,
                "the game has not started",
            )),
            Phase::Over => Err(Failure::new(status::NOT_PLAYING, "the game is over")),
            Phase::Playing => Ok(()),
        }?;
        let board = &mut self.table.board;
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
        let next = if end.is_some() {
            Colour::Nobody
        } else {
            board.to_move()
        };
        let moved = Moved {
            colour: colour as i32,
            column: u32::from(column),
            row: row as u32,
            board: board.to_bytes(),
            next: next as i32,
        };
        // Encoded once for both players.
        ctx.broadcast(routes::MOVED, moved.encode_to_vec());
        match end {
            Some((end, winner)) => self.finish(ctx, end, winner),
            None => self.wind_clock(ctx),
        }
        Ok(())
    }

    /// The player of `colour` leaves (RESIGN, or its connection ended): the game
    /// ends `end`, won by the opponent, or by nobody if it had not started.
    fn quit(&mut self, ctx: &mut RoomContext<'_, Self>, colour: Colour, end: End) {
        match self.table.phase {
            Phase::Over => {}
            Phase::Playing if end != End::Abandoned => self.finish(ctx, end, colour.other()),
            Phase::Seating | Phase::Playing => self.finish(ctx, End::Abandoned, Colour::Nobody),
        }
    }

    /// The game is over: count it in both records (which queues their saves), tell
    /// both players, close the room.
    fn finish(&mut self, ctx: &mut RoomContext<'_, Self>, end: End, winner: Colour) {
        self.table.phase = Phase::Over;
        if let Some(clock) = self.clock.take() {
            clock.cancel();
        }
        for seat in self.table.seats.iter().flatten() {
            let account = &seat.account;
            let record = match (end, winner) {
                (End::Abandoned, _) => account.record(),
                (_, Colour::Nobody) => account.count(|record| &mut record.draws),
                (_, winner) if winner == seat.colour => account.count(|record| &mut record.wins),
                _ => account.count(|record| &mut record.losses),
            };
            // Before the push: a client that reads GAME_OVER may queue again at once.
            seat.over.store(true, Ordering::Release);
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
    type Snapshot = Table;

    /// After a crash, from the last table: every member is then joined again, and
    /// takes its seat back.
    fn create(_name: &str, options: &Options, restored: Option<Table>) -> Self {
        Game {
            options: options.clone(),
            table: restored.unwrap_or_default(),
            clock: None,
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        _member: ConnId,
        entrant: &Entrant,
    ) -> Result<(), Refusal> {
        if self.table.phase == Phase::Over {
            return Err(Refusal::new(status::NOT_PLAYING, "the game is over"));
        }
        let index = match entrant.colour {
            Colour::Red => 0,
            Colour::Yellow => 1,
            Colour::Nobody => return Err(Refusal::new(Status::BAD_REQUEST, "no such seat")),
        };
        let seat = &mut self.table.seats[index];
        if seat
            .as_ref()
            .is_some_and(|seat| !Arc::ptr_eq(&seat.account, &entrant.account))
        {
            return Err(Refusal::new(status::BUSY, "that seat is taken"));
        }
        *seat = Some(entrant.clone());
        match self.table.phase {
            Phase::Seating if self.table.seats.iter().all(Option::is_some) => self.start(ctx),
            // Also after a restart, which stopped the deadline's timer.
            Phase::Seating => self.set_deadline(ctx),
            // Playing: back after a restart, which stopped the clock.
            _ => self.wind_clock(ctx),
        }
        Ok(())
    }

    /// A member left without quitting (its session ended some other way): as if its
    /// connection had ended.
    fn leave(&mut self, ctx: &mut RoomContext<'_, Self>, member: ConnId) {
        if let Some(colour) = self.colour_of(Origin::Member(member)) {
            self.quit(ctx, colour, End::Disconnected);
        }
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToGame) {
        match message {
            ToGame::Open => self.set_deadline(ctx),
            ToGame::Move { column, reply } => {
                let verdict = self.play(ctx, from, column);
                let _ = reply.send(verdict);
            }
            ToGame::Quit { end, done } => {
                if let Some(colour) = self.colour_of(from) {
                    self.quit(ctx, colour, end);
                }
                let _ = done.send(());
            }
            ToGame::Clock { moves } => {
                let board = &self.table.board;
                if self.table.phase == Phase::Playing && board.moves() == moves {
                    let late = board.to_move();
                    self.finish(ctx, End::OutOfTime, late.other());
                }
            }
            ToGame::SeatingDeadline => {
                if self.table.phase == Phase::Seating {
                    self.finish(ctx, End::Abandoned, Colour::Nobody);
                }
            }
        }
    }

    fn snapshot(&self) -> Option<Table> {
        Some(self.table.clone())
    }

    /// The server stops with the game under way: no result.
    fn stopped(&mut self, ctx: &mut RoomContext<'_, Self>, _reason: StopReason) {
        if self.table.phase != Phase::Over {
            self.finish(ctx, End::Abandoned, Colour::Nobody);
        }
    }
}
