//! The codes a client acts on: response [`Status`]es and [`KickReason`]s.
//!
//! Both are open `u16` newtypes rather than enums: the framework defines the codes
//! below 1000, games add their own from 1000 up, and a client must survive codes it
//! does not know.

use std::fmt;

use bytes::Bytes;

use crate::envelope::Message;

/// A response status. `0` is success; framework errors borrow HTTP's numbers; games
/// use 1000 and up for their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    /// Success.
    pub const OK: Status = Status(0);
    /// The payload could not be understood by the handler.
    pub const BAD_REQUEST: Status = Status(400);
    /// The request is not allowed (for example fault injection while it is disabled).
    pub const FORBIDDEN: Status = Status(403);
    /// No handler for this route.
    pub const UNKNOWN_ROUTE: Status = Status(404);
    /// The handler failed.
    pub const INTERNAL_ERROR: Status = Status(500);
    /// The server cannot serve it now (for example while the hub restarts).
    pub const UNAVAILABLE: Status = Status(503);

    /// Whether this is [`Status::OK`].
    pub fn is_ok(self) -> bool {
        self == Status::OK
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Status::OK => "ok",
            Status::BAD_REQUEST => "bad_request",
            Status::FORBIDDEN => "forbidden",
            Status::UNKNOWN_ROUTE => "unknown_route",
            Status::INTERNAL_ERROR => "internal_error",
            Status::UNAVAILABLE => "unavailable",
            _ => return write!(f, "status {}", self.0),
        };
        f.write_str(name)
    }
}

/// Why the server closes a connection: a code the client can act on (reconnect now,
/// back off, give up, fix a bug). Codes below 1000 are the framework's; games may
/// kick with their own codes from 1000 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KickReason(pub u16);

impl KickReason {
    /// No frame arrived within the idle timeout.
    pub const IDLE: KickReason = KickReason(1);
    /// Over the per-connection byte or frame rate.
    pub const DOS: KickReason = KickReason(2);
    /// The server is at `max_connections`.
    pub const SERVER_FULL: KickReason = KickReason(3);
    /// The server is shutting down.
    pub const SHUTDOWN: KickReason = KickReason(4);
    /// The hub crashed and is restarting; reconnecting at once is fine.
    pub const SERVER_RESTART: KickReason = KickReason(5);
    /// The same player logged in elsewhere.
    pub const DUPLICATE_LOGIN: KickReason = KickReason(6);
    /// A malformed envelope or a kind a client may not send.
    pub const PROTOCOL_ERROR: KickReason = KickReason(7);
    /// The client does not read: its outbound queue is full.
    pub const SLOW_CONSUMER: KickReason = KickReason(8);
    /// A frame header announced more than the maximum frame length.
    pub const FRAME_TOO_LARGE: KickReason = KickReason(9);
    /// No first frame within the first-frame (login) timeout.
    pub const LOGIN_TIMEOUT: KickReason = KickReason(10);
    /// Too many concurrent connections from this IP address.
    pub const TOO_MANY_FROM_IP: KickReason = KickReason(11);
    /// The server failed while handling this connection (a handler panicked).
    pub const INTERNAL_ERROR: KickReason = KickReason(12);
    /// Kicked by the game or an operator without a more specific reason.
    pub const KICKED: KickReason = KickReason(13);
    /// The room this connection was in crashed more often than its restart intensity
    /// allows and was closed; the game decides where the player goes next.
    pub const ROOM_CLOSED: KickReason = KickReason(14);
    /// A resume could not take its session over; the text starts with why
    /// (`unknown`, `expired`, `gap`, `moved`, `busy`). Log in again.
    pub const RESUME_FAILED: KickReason = KickReason(15);

    /// The reason's snake_case name, as used in logs and docs; `None` for codes the
    /// framework does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            KickReason::IDLE => "idle",
            KickReason::DOS => "dos",
            KickReason::SERVER_FULL => "server_full",
            KickReason::SHUTDOWN => "shutdown",
            KickReason::SERVER_RESTART => "server_restart",
            KickReason::DUPLICATE_LOGIN => "duplicate_login",
            KickReason::PROTOCOL_ERROR => "protocol_error",
            KickReason::SLOW_CONSUMER => "slow_consumer",
            KickReason::FRAME_TOO_LARGE => "frame_too_large",
            KickReason::LOGIN_TIMEOUT => "login_timeout",
            KickReason::TOO_MANY_FROM_IP => "too_many_from_ip",
            KickReason::INTERNAL_ERROR => "internal_error",
            KickReason::KICKED => "kicked",
            KickReason::ROOM_CLOSED => "room_closed",
            KickReason::RESUME_FAILED => "resume_failed",
            _ => return None,
        })
    }

    /// The framework's reason of that name (`"idle"` → [`KickReason::IDLE`]).
    pub fn from_name(name: &str) -> Option<KickReason> {
        (1..=KickReason::RESUME_FAILED.0)
            .map(KickReason)
            .find(|reason| reason.name() == Some(name))
    }

    /// The WebSocket close code sent after this kick: 4000 + the code for the
    /// framework's reasons (below 999), 4999 for a game's own (1000 and up: the
    /// code is in the kick envelope). Codes 4000-4999 are for applications (RFC 6455).
    pub fn websocket_close_code(self) -> u16 {
        if self.0 < 999 {
            4000 + self.0
        } else {
            4999
        }
    }

    /// What a WebSocket close code says of a kick when its envelope did not arrive:
    /// 4000-4998 are the framework's reasons, 4999 a game's own (then `kicked`); any
    /// other code is no kick.
    pub fn from_websocket_close_code(code: u16) -> Option<KickReason> {
        match code {
            4000..=4998 => Some(KickReason(code - 4000)),
            4999 => Some(KickReason::KICKED),
            _ => None,
        }
    }

    /// The kick frame for this reason.
    pub fn frame(self, text: &str) -> Bytes {
        Message::Kick {
            reason: self,
            text: text.to_owned(),
        }
        .to_frame()
    }
}

impl fmt::Display for KickReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "kick {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_reason_is_found_by_its_name_and_nothing_else_is() {
        for code in 1..=KickReason::RESUME_FAILED.0 {
            let reason = KickReason(code);
            let name = reason.name().unwrap_or_default();
            assert_eq!(KickReason::from_name(name), Some(reason), "{name}");
        }
        assert_eq!(KickReason::from_name("game"), None);
        assert_eq!(KickReason::from_name(""), None);
    }
}
