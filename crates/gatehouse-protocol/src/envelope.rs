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
}
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
