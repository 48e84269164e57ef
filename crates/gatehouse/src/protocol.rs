//! The wire protocol, without I/O: the envelope inside each `{packet, 4}` frame.
//!
//! Everything here is pure and deterministic (the quinn-proto habit): encoding builds
//! one buffer per frame, length prefix included, so a broadcast encodes once and
//! shares the bytes; decoding slices the frame without copying payloads and turns
//! every malformed input into a [`DecodeError`], never a panic. `docs/PROTOCOL.md`
//! is the specification; its hex vectors are tested in `tests/protocol_vectors.rs`.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in the frame header: a big-endian `u32` body length, as Erlang's `{packet, 4}`.
pub const HEADER_LEN: usize = 4;

/// The default and recommended maximum body length, Erlang's `{packet_size, 256 * 1024}`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;

/// Routes at or above this value belong to the framework, not to the game.
pub const RESERVED_ROUTES_START: u16 = 0xFF00;

/// Framework route (request): crash the hub. Honoured only with fault injection enabled.
pub const ROUTE_FAULT_CRASH_HUB: u16 = 0xFFF0;

/// Framework route (request): panic inside the caller's handler. Fault injection only.
pub const ROUTE_FAULT_PANIC_HANDLER: u16 = 0xFFF1;

/// The envelope kinds: the first byte of every non-empty frame.
mod kind {
    pub(super) const REQUEST: u8 = 1;
    pub(super) const NOTIFY: u8 = 2;
    pub(super) const RESPONSE: u8 = 3;
    pub(super) const PUSH: u8 = 4;
    pub(super) const PING: u8 = 5;
    pub(super) const PONG: u8 = 6;
    pub(super) const KICK: u8 = 7;
}

/// Longest ping/pong nonce accepted, so that a ping cannot make the server echo a
/// quarter megabyte.
pub const MAX_NONCE_LEN: usize = 64;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A zero-length frame: legal (as in Erlang), a keepalive that resets the idle timer
    /// and gets no answer.
    Empty,
    /// Client → server; answered by exactly one [`Message::Response`] with the same id.
    Request {
        /// Chosen by the client to match the response; need not be unique.
        id: u32,
        /// The game's message id.
        route: u16,
        /// Opaque to the framework.
        payload: Bytes,
    },
    /// Client → server, no answer.
    Notify {
        /// The game's message id.
        route: u16,
        /// Opaque to the framework.
        payload: Bytes,
    },
    /// Server → client, the answer to a request.
    Response {
        /// The id of the request this answers.
        id: u32,
        /// [`Status::OK`] or an error code.
        status: Status,
        /// Opaque to the framework (for framework errors: a UTF-8 explanation).
        payload: Bytes,
    },
    /// Server → client, unsolicited.
    Push {
        /// The game's message id.
        route: u16,
        /// Opaque to the framework.
        payload: Bytes,
    },
    /// Either direction; answered by a pong carrying the same nonce.
    Ping(Bytes),
    /// The answer to a ping.
    Pong(Bytes),
    /// Server → client, sent just before the server closes the connection.
    Kick {
        /// Why, as a code the client can act on.
        reason: KickReason,
        /// A human-readable explanation (UTF-8).
        text: String,
    },
}

/// Why a frame could not be decoded. Each one closes the connection with
/// [`KickReason::PROTOCOL_ERROR`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte is not a known kind.
    #[error("unknown envelope kind {0}")]
    UnknownKind(u8),
    /// The body ends before the kind's fixed fields do.
    #[error("{kind} envelope truncated: needs {needed} bytes, has {actual}")]
    Truncated {
        /// The envelope kind's name.
        kind: &'static str,
        /// Bytes the fixed fields need.
        needed: usize,
        /// Bytes the body has.
        actual: usize,
    },
    /// A ping or pong nonce longer than [`MAX_NONCE_LEN`].
    #[error("nonce of {0} bytes exceeds {MAX_NONCE_LEN}")]
    NonceTooLong(usize),
    /// A kick whose text is not UTF-8.
    #[error("kick text is not valid UTF-8")]
    KickTextNotUtf8,
}

impl Message {
    /// Decodes one frame body (the bytes after the 4-byte length).
    pub fn decode(mut body: Bytes) -> Result<Message, DecodeError> {
        let Some(&kind) = body.first() else {
            return Ok(Message::Empty);
        };
        body.advance(1);
        let need = |name: &'static str, needed: usize, body: &Bytes| {
            if body.len() < needed {
                Err(DecodeError::Truncated {
                    kind: name,
                    needed: needed + 1,
                    actual: body.len() + 1,
                })
            } else {
                Ok(())
            }
        };
        match kind {
            kind::REQUEST => {
                need("request", 6, &body)?;
                let id = body.get_u32();
                let route = body.get_u16();
                Ok(Message::Request {
                    id,
                    route,
                    payload: body,
                })
            }
            kind::NOTIFY => {
                need("notify", 2, &body)?;
                let route = body.get_u16();
                Ok(Message::Notify {
                    route,
                    payload: body,
                })
            }
            kind::RESPONSE => {
                need("response", 6, &body)?;
                let id = body.get_u32();
                let status = Status(body.get_u16());
                Ok(Message::Response {
                    id,
                    status,
                    payload: body,
                })
            }
            kind::PUSH => {
                need("push", 2, &body)?;
                let route = body.get_u16();
                Ok(Message::Push {
                    route,
                    payload: body,
                })
            }
            kind::PING | kind::PONG => {
                if body.len() > MAX_NONCE_LEN {
                    return Err(DecodeError::NonceTooLong(body.len()));
                }
                Ok(if kind == kind::PING {
                    Message::Ping(body)
                } else {
                    Message::Pong(body)
                })
            }
            kind::KICK => {
                need("kick", 2, &body)?;
                let reason = KickReason(body.get_u16());
                let text =
                    String::from_utf8(body.to_vec()).map_err(|_| DecodeError::KickTextNotUtf8)?;
                Ok(Message::Kick { reason, text })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }

    /// Length of the encoded body (without the 4-byte header).
    pub fn body_len(&self) -> usize {
        match self {
            Message::Empty => 0,
            Message::Request { payload, .. } | Message::Response { payload, .. } => {
                7 + payload.len()
            }
            Message::Notify { payload, .. } | Message::Push { payload, .. } => 3 + payload.len(),
            Message::Ping(nonce) | Message::Pong(nonce) => 1 + nonce.len(),
            Message::Kick { text, .. } => 3 + text.len(),
        }
    }

    /// Appends the body (without the header) to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) {
        dst.reserve(self.body_len());
        match self {
            Message::Empty => {}
            Message::Request { id, route, payload } => {
                dst.put_u8(kind::REQUEST);
                dst.put_u32(*id);
                dst.put_u16(*route);
                dst.put_slice(payload);
            }
            Message::Notify { route, payload } => {
                dst.put_u8(kind::NOTIFY);
                dst.put_u16(*route);
                dst.put_slice(payload);
            }
            Message::Response {
                id,
                status,
                payload,
            } => {
                dst.put_u8(kind::RESPONSE);
                dst.put_u32(*id);
                dst.put_u16(status.0);
                dst.put_slice(payload);
            }
            Message::Push { route, payload } => {
                dst.put_u8(kind::PUSH);
                dst.put_u16(*route);
                dst.put_slice(payload);
            }
            Message::Ping(nonce) => {
                dst.put_u8(kind::PING);
                dst.put_slice(nonce);
            }
            Message::Pong(nonce) => {
                dst.put_u8(kind::PONG);
                dst.put_slice(nonce);
            }
            Message::Kick { reason, text } => {
                dst.put_u8(kind::KICK);
                dst.put_u16(reason.0);
                dst.put_slice(text.as_bytes());
            }
        }
    }

    /// Encodes the whole frame, header included, into one shared buffer.
    ///
    /// The caller keeps bodies within the peer's maximum frame length; the length is
    /// written as `u32`, so a body over 4 GiB would be truncated (never produced here:
    /// payloads come from frames that were themselves bounded).
    pub fn to_frame(&self) -> Bytes {
        let len = self.body_len();
        let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        self.encode_body(&mut buf);
        buf.freeze()
    }

    /// The kind's name, for logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Empty => "empty",
            Message::Request { .. } => "request",
            Message::Notify { .. } => "notify",
            Message::Response { .. } => "response",
            Message::Push { .. } => "push",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Kick { .. } => "kick",
        }
    }
}

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
            _ => return None,
        })
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

    fn roundtrip(msg: Message) {
        let frame = msg.to_frame();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - HEADER_LEN);
        assert_eq!(len, msg.body_len());
        assert_eq!(Message::decode(frame.slice(HEADER_LEN..)).unwrap(), msg);
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(Message::Empty);
        roundtrip(Message::Request {
            id: 7,
            route: 300,
            payload: Bytes::from_static(b"hi"),
        });
        roundtrip(Message::Notify {
            route: 1,
            payload: Bytes::new(),
        });
        roundtrip(Message::Response {
            id: u32::MAX,
            status: Status::UNKNOWN_ROUTE,
            payload: Bytes::from_static(b"x"),
        });
        roundtrip(Message::Push {
            route: u16::MAX,
            payload: Bytes::from_static(&[0; 100]),
        });
        roundtrip(Message::Ping(Bytes::from_static(b"12345678")));
        roundtrip(Message::Pong(Bytes::new()));
        roundtrip(Message::Kick {
            reason: KickReason::SLOW_CONSUMER,
            text: "read your socket".into(),
        });
    }

    #[test]
    fn truncated_and_unknown_bodies_are_errors_not_panics() {
        for body in [
            &[1u8][..],
            &[1, 0, 0, 0, 1, 0],
            &[2, 0],
            &[3, 0, 0],
            &[4],
            &[7, 0],
            &[0],
            &[8, 1, 2],
            &[255],
        ] {
            assert!(
                Message::decode(Bytes::copy_from_slice(body)).is_err(),
                "{body:?} decoded"
            );
        }
        assert_eq!(
            Message::decode(Bytes::from_static(&[7, 0, 1, 0xff])),
            Err(DecodeError::KickTextNotUtf8)
        );
        let long_ping = [vec![5u8], vec![0; MAX_NONCE_LEN + 1]].concat();
        assert_eq!(
            Message::decode(long_ping.into()),
            Err(DecodeError::NonceTooLong(MAX_NONCE_LEN + 1))
        );
    }

    #[test]
    fn every_single_byte_prefix_of_every_kind_decodes_without_panicking() {
        for kind in 0..=255u8 {
            for len in 0..12 {
                let body: Vec<u8> = std::iter::once(kind).chain(0..len).collect();
                let _ = Message::decode(body.into());
            }
        }
    }
}
