//! Route numbers the protocol itself reserves, and those of the built-in `bench`
//! service (which the load generator and the benchmark anchors also speak).

/// Routes at or above this value belong to the framework, not to the game.
pub const RESERVED_ROUTES_START: u16 = 0xFF00;

/// Framework route (push): the room this connection is in crashed and was restarted
/// (it was re-joined); the payload is the room's name, UTF-8.
pub const ROUTE_ROOM_RESTARTED: u16 = 0xFF01;

/// Framework route (push): an announcement from the server's operators (the admin
/// API's broadcast); the payload is its text, UTF-8. Clients show it to the player.
pub const ROUTE_ANNOUNCEMENT: u16 = 0xFF02;

/// Framework route (request): end the session on purpose. The client is leaving (a
/// logout, a quit): when this connection closes, its session ends with it instead of
/// waiting for a resume. Answered with status 0 and an empty payload, with or without
/// a session.
pub const ROUTE_END_SESSION: u16 = 0xFF10;

/// Framework route (request): crash the hub. Honoured only with fault injection enabled.
pub const ROUTE_FAULT_CRASH_HUB: u16 = 0xFFF0;

/// Framework route (request): panic inside the caller's handler. Fault injection only.
pub const ROUTE_FAULT_PANIC_HANDLER: u16 = 0xFFF1;

/// The `bench` service's routes (`docs/PROTOCOL.md`, "The bench service").
pub mod bench {
    /// Echo: a request's response carries its payload back; a notify's payload is
    /// pushed back on this route.
    pub const ECHO: u16 = 1;
    /// Broadcast: the payload is pushed on this route to every connection.
    pub const BROADCAST: u16 = 2;
    /// Count: the response carries the number of live connections, `u32` big-endian.
    pub const COUNT: u16 = 3;
    /// Login: the connection logs in as the payload (a name); the response carries
    /// its connection id, `u64` big-endian, after a `session` frame.
    pub const LOGIN: u16 = 4;
    /// Increment: adds one to the connection's counter; the response carries it,
    /// `u64` big-endian.
    pub const INCREMENT: u16 = 5;
    /// Push numbers: payload a `u32` count n; 0..n are pushed on this route.
    pub const PUSH_NUMBERS: u16 = 6;
}
