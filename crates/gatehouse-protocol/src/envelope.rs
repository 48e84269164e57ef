//! The envelope inside each frame: what a frame means.
//!
//! Encoding writes the length prefix and the body into one buffer, so a broadcast is
//! encoded once and its bytes shared; [`Message::encode_frame_into`] appends to a
//! buffer the caller reuses (a connection's output), so a response costs no
//! allocation. Decoding slices the body without copying payloads and turns every
//! malformed input into a [`DecodeError`], never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codes::{KickReason, Status};
use crate::framing::{HEADER_LEN, MAX_NONCE_LEN};

/// The envelope kinds: the first byte of every non-empty frame (for encoders that
/// write frames in place, as the load generator does).
pub mod kind {
    /// [`Message::Request`](super::Message::Request).
    pub const REQUEST: u8 = 1;
    /// [`Message::Notify`](super::Message::Notify).
    pub const NOTIFY: u8 = 2;
    /// [`Message::Response`](super::Message::Response).
    pub const RESPONSE: u8 = 3;
    /// [`Message::Push`](super::Message::Push).
    pub const PUSH: u8 = 4;
    /// [`Message::Ping`](super::Message::Ping).
    pub const PING: u8 = 5;
    /// [`Message::Pong`](super::Message::Pong).
    pub const PONG: u8 = 6;
    /// [`Message::Kick`](super::Message::Kick).
    pub const KICK: u8 = 7;
    /// [`Message::Session`](super::Message::Session).
    pub const SESSION: u8 = 8;
    /// [`Message::Resume`](super::Message::Resume).
    pub const RESUME: u8 = 9;
    /// [`Message::Resumed`](super::Message::Resumed).
    pub const RESUMED: u8 = 10;
    /// [`Message::Ack`](super::Message::Ack).
    pub const ACK: u8 = 11;
}

/// Bytes of a session's resume token.
pub const TOKEN_LEN: usize = 32;

/// A session's resume token: 32 random bytes the server chose, shown only to the
/// session's own client.
pub type Token = [u8; TOKEN_LEN];

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
    /// Server → client: this session can be resumed on a new connection for
    /// `window_ms` after this one is lost, with `id` and `token` (after a login and
    /// after each resume).
    Session {
        /// The session's id.
        id: u64,
        /// How long the server keeps the session after its connection is lost.
        window_ms: u32,
        /// The secret a resume must present.
        token: Token,
    },
    /// Client → server, only as the first frame of a connection: take over the
    /// session `id`, whose frames up to `received` (counted from the session's start)
    /// this client has.
    Resume {
        /// The session's id, from its [`Message::Session`].
        id: u64,
        /// Responses and pushes this client received in the session.
        received: u64,
        /// The session's token.
        token: Token,
    },
    /// Server → client, the answer to a [`Message::Resume`] that took the session
    /// over: the server has the client's first `received` requests and notifies (the
    /// client sends the rest again); the responses and pushes the client lacks follow.
    Resumed {
        /// Requests and notifies the server received in the session.
        received: u64,
    },
    /// Either direction: the sender has the first `count` numbered frames the other
    /// side sent in the session (responses and pushes from the server, requests and
    /// notifies from the client), which need not be kept for a resume any longer.
    Ack {
        /// Numbered frames received, from the session's start.
        count: u64,
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
    /// A session, resume, resumed or ack envelope longer than its fields.
    #[error("{kind} envelope of {actual} bytes, not {expected}")]
    TrailingBytes {
        /// The envelope kind's name.
        kind: &'static str,
        /// Bytes its fields take.
        expected: usize,
        /// Bytes the body has.
        actual: usize,
    },
}

/// Checks that a fixed-size kind's fields (`len` bytes after the kind byte) are the
/// whole body: these kinds have no payload, so extra bytes are an error, not data.
fn exactly(kind: &'static str, len: usize, body: &Bytes) -> Result<(), DecodeError> {
    match body.len() {
        n if n < len => Err(DecodeError::Truncated {
            kind,
            needed: len + 1,
            actual: n + 1,
        }),
        n if n > len => Err(DecodeError::TrailingBytes {
            kind,
            expected: len + 1,
            actual: n + 1,
        }),
        _ => Ok(()),
    }
}

/// The token at the front of `body` (whose length was checked).
fn token(body: &mut Bytes) -> Token {
    let mut token = [0; TOKEN_LEN];
    body.copy_to_slice(&mut token);
    token
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
            kind::SESSION => {
                exactly("session", 8 + 4 + TOKEN_LEN, &body)?;
                Ok(Message::Session {
                    id: body.get_u64(),
                    window_ms: body.get_u32(),
                    token: token(&mut body),
                })
            }
            kind::RESUME => {
                exactly("resume", 8 + 8 + TOKEN_LEN, &body)?;
                Ok(Message::Resume {
                    id: body.get_u64(),
                    received: body.get_u64(),
                    token: token(&mut body),
                })
            }
            kind::RESUMED => {
                exactly("resumed", 8, &body)?;
                Ok(Message::Resumed {
                    received: body.get_u64(),
                })
            }
            kind::ACK => {
                exactly("ack", 8, &body)?;
                Ok(Message::Ack {
                    count: body.get_u64(),
                })
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
            Message::Session { .. } => 1 + 8 + 4 + TOKEN_LEN,
            Message::Resume { .. } => 1 + 8 + 8 + TOKEN_LEN,
            Message::Resumed { .. } | Message::Ack { .. } => 1 + 8,
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
            Message::Session {
                id,
                window_ms,
                token,
            } => {
                dst.put_u8(kind::SESSION);
                dst.put_u64(*id);
                dst.put_u32(*window_ms);
                dst.put_slice(token);
            }
            Message::Resume {
                id,
                received,
                token,
            } => {
                dst.put_u8(kind::RESUME);
                dst.put_u64(*id);
                dst.put_u64(*received);
                dst.put_slice(token);
            }
            Message::Resumed { received } => {
                dst.put_u8(kind::RESUMED);
                dst.put_u64(*received);
            }
            Message::Ack { count } => {
                dst.put_u8(kind::ACK);
                dst.put_u64(*count);
            }
        }
    }

    /// Encodes the whole frame, header included, into one new buffer (to be shared,
    /// as a broadcast is).
    ///
    /// The caller keeps bodies within the peer's maximum frame length (a server checks
    /// with [`Message::body_len`] first); the length is written as `u32`, so a body
    /// over 4 GiB would be truncated.
    pub fn to_frame(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + self.body_len());
        self.encode_frame_into(&mut buf);
        buf.freeze()
    }

    /// Appends the whole frame, header included, to `dst`.
    pub fn encode_frame_into(&self, dst: &mut BytesMut) {
        let len = self.body_len();
        dst.reserve(HEADER_LEN + len);
        dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        self.encode_body(dst);
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
            Message::Session { .. } => "session",
            Message::Resume { .. } => "resume",
            Message::Resumed { .. } => "resumed",
            Message::Ack { .. } => "ack",
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
        roundtrip(Message::Session {
            id: u64::MAX,
            window_ms: 30_000,
            token: [7; TOKEN_LEN],
        });
        roundtrip(Message::Resume {
            id: 1,
            received: 200,
            token: [0xff; TOKEN_LEN],
        });
        roundtrip(Message::Resumed { received: 50 });
        roundtrip(Message::Ack { count: 0 });
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
            &[9; 48],
            &[9; 50],
            &[10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[11, 0, 0, 0, 0, 0, 0, 0],
            &[12],
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
