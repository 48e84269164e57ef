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
//! [`Options::join_time`](crate::Options) for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::room::{
    Origin, Refusal, Restart, Room, RoomContext, RoomHandle, RoomOptions, StopReason,
};
use gatehouse::timer::Timer;
use gatehouse::typed::Failure;
use gatehouse::{ConnId, Status};
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::account::{Account, Score};
use crate::board::{Board, MoveError};
use crate::wire::{routes, status, Colour, End, GameOver, Matched, Moved};

/// One game: the room type the server runs (registered with `Server::with_rooms`).
pub struct Game {
    options: GameOptions,
    table: Table,
    /// Runs out when the player to move has taken too long.
    clock: Option<Timer>,
    /// Runs out when the players have taken too long to sit down.
    deadline: Option<Timer>,
}

/// What every game is made with: the room type's `Config`.
#[derive(Debug, Clone)]
pub struct GameOptions {
    pub(crate) turn_time: Duration,
    pub(crate) join_time: Duration,
}

/// The seats and the board: what a game that crashed restarts from (its snapshot).
#[derive(Clone, Default)]
pub struct Table {
    board: Board,
    /// Red's seat, then yellow's.
    seats: [Option<Seat>; 2],
    phase: Phase,
}

#[derive(Clone)]
struct Seat {
    player: Entrant,
    /// `None` while the player is not in the room (after a restart, until it is
    /// joined again).
    conn: Option<ConnId>,
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
    colour: Colour,
    account: Arc<Account>,
    /// Set by the room once the game is over, before it says so: the session reads it
    /// to know the player is free to queue again.
    over: Arc<AtomicBool>,
}

impl Entrant {
    pub(crate) fn new(colour: Colour, account: Arc<Account>, over: Arc<AtomicBool>) -> Self {
        Entrant {
            colour,
            account,
            over,
        }
    }
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
    /// The player leaves the game; `done` says the room has settled it.
    Quit {
        /// Why.
        why: Quit,
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

/// Why a player leaves a game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// RESIGN: the opponent wins.
    Resigned,
    /// The connection ended: the opponent wins.
    Disconnected,
    /// The server stops (or the connection ended by the server's fault): no result.
    ServerStopping,
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
    fn seat_of(&self, member: ConnId) -> Option<&Seat> {
        self.table
            .seats
            .iter()
            .flatten()
            .find(|seat| seat.conn == Some(member))
    }

    fn colour_of(&self, from: Origin) -> Option<Colour> {
        match from {
            Origin::Member(member) => self.seat_of(member).map(|seat| seat.player.colour),
            Origin::Timer | Origin::Server => None,
        }
    }

    /// Both players sit: tell each their colour and opponent; red moves first.
    fn start(&mut self, ctx: &mut RoomContext<'_, Self>) {
        self.table.phase = Phase::Playing;
        if let Some(deadline) = self.deadline.take() {
            deadline.cancel();
        }
        let [Some(red), Some(yellow)] = &self.table.seats else {
            return;
        };
        for (seat, opponent) in [(red, yellow), (yellow, red)] {
            let matched = Matched {
                game: ctx.name().to_owned(),
                colour: seat.player.colour as i32,
                opponent: opponent.player.account.name().to_owned(),
            };
            if let Some(conn) = seat.conn {
                ctx.push(conn, routes::MATCHED, matched.encode_to_vec());
            }
        }
        info!(
            game = ctx.name(),
            red = red.player.account.name(),
            yellow = yellow.player.account.name(),
            "game started"
        );
        self.wind_clock(ctx);
    }

    /// The players have `join_time` to sit down (from the first call; later ones
    /// change nothing while it runs).
    fn set_deadline(&mut self, ctx: &mut RoomContext<'_, Self>) {
        if self.deadline.is_some() {
            return;
        }
        match ctx.after(self.options.join_time, ToGame::SeatingDeadline) {
            Ok(deadline) => self.deadline = Some(deadline),
            Err(e) => warn!(game = ctx.name(), error = %e, "no deadline to sit down"),
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
        let not_now = match self.table.phase {
            Phase::Seating => Some("the game has not started"),
            Phase::Over => Some("the game is over"),
            Phase::Playing => None,
        };
        if let Some(why) = not_now {
            return Err(Failure::new(status::NOT_PLAYING, why));
        }
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
        let next = match end {
            Some(_) => Colour::Nobody,
            None => board.to_move(),
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

    /// A player leaves (RESIGN, or its connection ended).
    fn quit(&mut self, ctx: &mut RoomContext<'_, Self>, colour: Colour, why: Quit) {
        match (self.table.phase, why) {
            (Phase::Over, _) => {}
            (Phase::Seating, _) | (_, Quit::ServerStopping) => {
                self.finish(ctx, End::Abandoned, Colour::Nobody)
            }
            (Phase::Playing, Quit::Resigned) => self.finish(ctx, End::Resigned, colour.other()),
            (Phase::Playing, Quit::Disconnected) => {
                self.finish(ctx, End::Disconnected, colour.other())
            }
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
            let (player, account) = (&seat.player, &seat.player.account);
            let record = match (end, winner) {
                (End::Abandoned, _) => account.record(),
                (_, Colour::Nobody) => account.count(Score::Draw),
                (_, winner) if winner == player.colour => account.count(Score::Win),
                _ => account.count(Score::Loss),
            };
            // Before the push: a client that reads GAME_OVER may queue again at once.
            player.over.store(true, Ordering::Release);
            let over = GameOver {
                end: end as i32,
                winner: winner as i32,
                record: Some(record),
            };
            if let Some(conn) = seat.conn {
                ctx.push(conn, routes::GAME_OVER, over.encode_to_vec());
            }
        }
        info!(game = ctx.name(), ?end, ?winner, "game over");
        ctx.close();
    }
}

impl Room for Game {
    type Config = GameOptions;
    type Join = Entrant;
    type Message = ToGame;
    type Snapshot = Table;

    fn create(_name: &str, options: &GameOptions, restored: Option<Table>) -> Self {
        let mut table = restored.unwrap_or_default();
        // After a crash every member is joined again, and takes its seat back.
        for seat in table.seats.iter_mut().flatten() {
            seat.conn = None;
        }
        Game {
            options: options.clone(),
            table,
            clock: None,
            deadline: None,
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        member: ConnId,
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
        match &mut self.table.seats[index] {
            Some(seat) if !Arc::ptr_eq(&seat.player.account, &entrant.account) => {
                return Err(Refusal::new(status::BUSY, "that seat is taken"));
            }
            Some(seat) => seat.conn = Some(member),
            empty => {
                *empty = Some(Seat {
                    player: entrant.clone(),
                    conn: Some(member),
                })
            }
        }
        let seats = self.table.seats.iter().flatten();
        let present = seats.filter(|seat| seat.conn.is_some()).count();
        match (self.table.phase, present) {
            // After a restart, which stopped the deadline's timer.
            (Phase::Seating, 1) => self.set_deadline(ctx),
            (Phase::Seating, _) => self.start(ctx),
            // Both back after a restart, which stopped the clock.
            (Phase::Playing, 2) => self.wind_clock(ctx),
            _ => {}
        }
        Ok(())
    }

    /// A member left without quitting (its session ended some other way): as if its
    /// connection had ended.
    fn leave(&mut self, ctx: &mut RoomContext<'_, Self>, member: ConnId) {
        let Some(colour) = self.seat_of(member).map(|seat| seat.player.colour) else {
            return;
        };
        for seat in self.table.seats.iter_mut().flatten() {
            if seat.conn == Some(member) {
                seat.conn = None;
            }
        }
        self.quit(ctx, colour, Quit::Disconnected);
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToGame) {
        match message {
            ToGame::Open => self.set_deadline(ctx),
            ToGame::Move { column, reply } => {
                let verdict = self.play(ctx, from, column);
                let _ = reply.send(verdict);
            }
            ToGame::Quit { why, done } => {
                if let Some(colour) = self.colour_of(from) {
                    self.quit(ctx, colour, why);
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
