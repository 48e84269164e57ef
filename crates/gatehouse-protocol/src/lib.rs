//! gatehouse's wire protocol, without I/O: what goes over the socket between a
//! gatehouse server and its clients. `{packet, 4}` framing (a 4-byte big-endian length,
//! then the body), the envelope inside each frame (request, notify, response, push,
//! ping, pong, kick, and the session kinds of a resume: session, resume, resumed, ack),
//! the status and kick-reason codes, and the reserved routes.
//! Everything here is pure and deterministic (no tokio, no sockets, no clock), so the
//! server, the clients and the load generator share one definition, and every
//! malformed input becomes an error value, never a panic. `docs/PROTOCOL.md` is the
//! specification; its hex test vectors are checked against this crate in
//! `tests/vectors.rs`.
//!
//! Crate map:
//! - [`framing`]: frame header, maximum length, [`FrameDecoder`].
//! - [`envelope`]: [`Message`], its encoding and decoding, [`DecodeError`].
//! - [`codes`]: [`Status`] and [`KickReason`].
//! - [`routes`]: the framework's reserved routes and the bench service's.
//! - `fuzzing` (hidden; tests and the `fuzzing` feature): the decoders' invariants,
//!   checked against any input by the property tests and the fuzz targets in `fuzz/`.

pub mod codes;
pub mod envelope;
pub mod framing;
pub mod routes;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod properties;

pub use codes::{KickReason, Status};
pub use envelope::{DecodeError, Message, Token, TOKEN_LEN};
pub use framing::{FrameDecoder, FrameTooLarge, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_NONCE_LEN};
pub use routes::{
    RESERVED_ROUTES_START, ROUTE_ANNOUNCEMENT, ROUTE_END_SESSION, ROUTE_FAULT_CRASH_HUB,
    ROUTE_FAULT_PANIC_HANDLER, ROUTE_ROOM_RESTARTED,
};
