//! What travels between client and server: the route numbers, the game's statuses,
//! and the payloads, as protobuf messages written by hand with prost's derive (no
//! `.proto` file, no build script). The crate documentation lists which route carries
//! which message.
//!
//! The same [`Record`] message is what the store keeps for a player.

/// Route numbers: requests from the client (1 to 6), pushes from the server (100 up).
pub mod routes {
    /// Request [`Login`](super::Login) → [`Record`](super::Record): be this player.
    pub const LOGIN: u16 = 1;
    /// Request [`StatsRequest`](super::StatsRequest) → [`Record`](super::Record).
    pub const STATS: u16 = 2;
    /// Request (empty) → [`Queued`](super::Queued): wait for an opponent.
    pub const QUEUE: u16 = 3;
    /// Request (empty) → empty: stop waiting.
    pub const LEAVE_QUEUE: u16 = 4;
    /// Request: one byte, the column (0 to 6) → empty. Raw bytes, not protobuf.
    pub const MOVE: u16 = 5;
    /// Request (empty) → empty: give up the game in progress.
    pub const RESIGN: u16 = 6;
    /// Push [`Matched`](super::Matched): a game starts; your colour and opponent.
    pub const MATCHED: u16 = 100;
    /// Push [`Moved`](super::Moved): a move was made (to both players).
    pub const MOVED: u16 = 101;
    /// Push [`GameOver`](super::GameOver): how the game ended, your new record.
    pub const GAME_OVER: u16 = 102;
}

/// The game's own statuses (gatehouse leaves 1000 and up to games). A malformed
/// payload is the framework's `BAD_REQUEST` (400); "try again later" is its
/// `UNAVAILABLE` (503).
pub mod status {
    use gatehouse::Status;
    /// The request needs a logged-in player.
    pub const NOT_LOGGED_IN: Status = Status(1001);
    /// This connection already has a player.
    pub const ALREADY_LOGGED_IN: Status = Status(1002);
    /// Names are 1 to 16 letters, digits, `_` or `-`.
    pub const BAD_NAME: Status = Status(1003);
    /// A player of that name is online.
    pub const NAME_TAKEN: Status = Status(1004);
    /// Already waiting, or in a game.
    pub const BUSY: Status = Status(1005);
    /// Not waiting (never was, or was just matched).
    pub const NOT_QUEUED: Status = Status(1006);
    /// Not in a game, or the game has not started or is over.
    pub const NOT_PLAYING: Status = Status(1007);
    /// It is the opponent's move.
    pub const NOT_YOUR_TURN: Status = Status(1008);
    /// Columns are 0 to 6.
    pub const BAD_COLUMN: Status = Status(1009);
    /// That column has six pieces.
    pub const COLUMN_FULL: Status = Status(1010);
    /// No player of that name has a record.
    pub const NO_SUCH_PLAYER: Status = Status(1011);
}

/// A colour, a board cell, or nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Colour {
    /// An empty cell; no winner; nobody to move.
    Nobody = 0,
    /// Moves first.
    Red = 1,
    /// Moves second.
    Yellow = 2,
}

impl Colour {
    /// The opponent's colour.
    pub fn other(self) -> Colour {
        match self {
            Colour::Red => Colour::Yellow,
            Colour::Yellow => Colour::Red,
            Colour::Nobody => Colour::Nobody,
        }
    }
}

/// How a game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum End {
    /// Not set (never sent).
    Unspecified = 0,
    /// The winner made four in a row.
    FourInARow = 1,
    /// All 42 cells are full: a draw.
    BoardFull = 2,
    /// The loser resigned.
    Resigned = 3,
    /// The loser disconnected.
    Disconnected = 4,
    /// No result: the opponent never arrived, or the server stopped.
    Abandoned = 6,
}

/// LOGIN's request. No password: a name is all it takes (this is an example).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Login {
    /// 1 to 16 letters, digits, `_` or `-`.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// A player's record: LOGIN's and STATS's reply, part of GAME_OVER, and what the store
/// keeps under the player's name.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Record {
    /// Games won.
    #[prost(uint32, tag = "1")]
    pub wins: u32,
    /// Games lost.
    #[prost(uint32, tag = "2")]
    pub losses: u32,
    /// Games drawn.
    #[prost(uint32, tag = "3")]
    pub draws: u32,
}

/// STATS's request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRequest {
    /// Whose record; empty for your own.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// QUEUE's reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Queued {
    /// True: an opponent was waiting and a game is being set up (MATCHED follows);
    /// false: you wait for the next player to queue.
    #[prost(bool, tag = "1")]
    pub matched: bool,
}

/// MATCHED's payload: sent to each player once both have taken their seats.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Matched {
    /// The game's name.
    #[prost(string, tag = "1")]
    pub game: String,
    /// Your colour (red moves first).
    #[prost(enumeration = "Colour", tag = "2")]
    pub colour: i32,
    /// Your opponent's name.
    #[prost(string, tag = "3")]
    pub opponent: String,
}

/// MOVED's payload: the move and the board after it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Moved {
    /// Who moved.
    #[prost(enumeration = "Colour", tag = "1")]
    pub colour: i32,
    /// Where: the column (0 to 6) …
    #[prost(uint32, tag = "2")]
    pub column: u32,
    /// … and the row the piece landed in (0 is the bottom).
    #[prost(uint32, tag = "3")]
    pub row: u32,
    /// 42 cells, bottom row first, left to right: 0 empty, 1 red, 2 yellow.
    #[prost(bytes = "vec", tag = "4")]
    pub board: Vec<u8>,
    /// Who moves next (`Nobody` once the game is over).
    #[prost(enumeration = "Colour", tag = "5")]
    pub next: i32,
}

/// GAME_OVER's payload, one per player.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GameOver {
    /// How it ended.
    #[prost(enumeration = "End", tag = "1")]
    pub end: i32,
    /// The winner (`Nobody` for a draw or an abandoned game).
    #[prost(enumeration = "Colour", tag = "2")]
    pub winner: i32,
    /// Your record with this game counted (as saved).
    #[prost(message, optional, tag = "3")]
    pub record: Option<Record>,
}
