//! One connection, without I/O: the state machine every transport drives.
//!
//! - [`core`]: [`ConnectionCore`], bytes and time in; events, bytes out, one
//!   deadline and a close decision back. Every per-connection limit lives there.
//! - [`outbound`]: the queue of encoded frames waiting for the transport.
//! - [`budget`]: the unsent-byte budget the core shares with the mailbox.
//! - [`meter`]: what crossed the connection, counted by its own task.
//! - [`reason`]: [`DisconnectReason`], with its kick code, text and log level.
//! - [`resume`]: a resumable session's replay of unacknowledged frames and its
//!   acknowledgements owed.
//! - [`staged`]: what a handler that waits does to its connection, kept for the core.
//! - `scenario` (tests and the `fuzzing` feature): the core driven by an arbitrary
//!   script with its invariants checked; `properties` runs it under proptest, the
//!   `connection_core` fuzz target under libFuzzer.
//!
//! Nothing here touches a socket, a runtime or a clock (a test checks that no file
//! of this module names tokio): the driver (`crate::driver`) does.

pub(crate) mod budget;
pub(crate) mod core;
pub(crate) mod meter;
pub(crate) mod outbound;
#[cfg(test)]
mod properties;
pub(crate) mod reason;
pub(crate) mod resume;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod scenario;
pub(crate) mod staged;

use std::fmt;

pub(crate) use self::budget::OutboundBudget;
#[cfg(feature = "websocket")]
pub(crate) use self::core::cut_at_char;
pub(crate) use self::core::{
    Close, ConnectionCore, CoreConfig, Event, FirstFrame, Lost, NoRoom, ResumeRequest,
};
pub(crate) use self::meter::Meter;
pub use self::meter::TrafficCounts;
pub use self::reason::{DisconnectReason, Severity};
pub(crate) use self::staged::Staged;

/// A connection's id: unique for the life of the server process, across hub restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
