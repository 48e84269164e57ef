//! The generator's side of the wire: a frame reader over one reusable buffer, the
//! few frames it writes (request, ping) encoded in place, and a borrowed view of the
//! frames it reads. Nothing here allocates per frame.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Envelope kinds (`docs/PROTOCOL.md`).
pub(crate) use gatehouse_protocol::envelope::kind;

/// The header: a big-endian `u32` body length.
pub(crate) const HEADER: usize = gatehouse_protocol::HEADER_LEN;

/// Largest body accepted from a server (its default `max_frame_bytes`).
pub(crate) const MAX_BODY: usize = gatehouse_protocol::DEFAULT_MAX_FRAME_LEN;

/// Bytes of a request frame with `payload` bytes of payload: header, kind, id, route.
pub(crate) const fn request_len(payload: usize) -> usize {
    HEADER + 7 + payload
}

/// Appends a request frame whose payload is `payload`.
pub(crate) fn put_request(out: &mut Vec<u8>, id: u32, route: u16, payload: &[u8]) {
    let body = 7 + payload.len();
    // Invariant: payloads are checked against MAX_BODY by every scenario's options.
    let body = u32::try_from(body).unwrap_or(u32::MAX);
    out.extend_from_slice(&body.to_be_bytes());
    out.push(kind::REQUEST);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&route.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A ping frame with a one-byte nonce (empty nonces are legal too; a nonce lets the
/// generator tell its pings apart).
pub(crate) fn ping(nonce: u8) -> [u8; 6] {
    [0, 0, 0, 2, kind::PING, nonce]
}

/// One frame from the server, borrowed from the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A zero-length frame.
    Empty,
    /// The answer to a request.
    Response {
        id: u32,
        status: u16,
        payload: &'a [u8],
    },
    /// An unsolicited push.
    Push { route: u16, payload: &'a [u8] },
    /// The server pings (the generator answers).
    Ping(&'a [u8]),
    /// The answer to a ping.
    Pong(&'a [u8]),
    /// The server is closing this connection.
    Kick { reason: u16 },
    /// A resumable session's offer: its id and token.
    Session { id: u64, token: &'a [u8] },
    /// A resume took.
    Resumed,
    /// The server acknowledged the generator's requests.
    Ack,
    /// Anything else (a kind a server does not send, a truncated envelope).
    Unexpected,
}

/// Reads one frame body.
pub(crate) fn parse(body: &[u8]) -> Incoming<'_> {
    let Some((&kind, rest)) = body.split_first() else {
        return Incoming::Empty;
    };
    let u16_at = |i: usize| u16::from_be_bytes([rest[i], rest[i + 1]]);
    match kind {
        kind::RESPONSE if rest.len() >= 6 => Incoming::Response {
            id: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            status: u16_at(4),
            payload: &rest[6..],
        },
        kind::PUSH if rest.len() >= 2 => Incoming::Push {
            route: u16_at(0),
            payload: &rest[2..],
        },
        kind::PING => Incoming::Ping(rest),
        kind::PONG => Incoming::Pong(rest),
        kind::KICK if rest.len() >= 2 => Incoming::Kick { reason: u16_at(0) },
        kind::SESSION if rest.len() == 44 => Incoming::Session {
            id: u64::from_be_bytes(rest[..8].try_into().unwrap_or_default()),
            token: &rest[12..],
        },
        kind::RESUMED if rest.len() == 8 => Incoming::Resumed,
        kind::ACK if rest.len() == 8 => Incoming::Ack,
        _ => Incoming::Unexpected,
    }
}

/// A frame body longer than [`MAX_BODY`] was announced.
#[derive(Debug)]
pub(crate) struct FrameTooLarge;

/// Cuts frames out of a stream through one buffer that grows only to the largest
/// frame seen.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    start: usize,
    /// End of the bytes read.
    end: usize,
}

impl FrameReader {
    /// A reader with `capacity` bytes of buffer (grown when a frame needs more).
    pub(crate) fn new(capacity: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
        }
    }

    /// Grows the buffer to at least `capacity` bytes (fewer reads for large batches).
    pub(crate) fn ensure_capacity(&mut self, capacity: usize) {
        if self.buf.len() < capacity {
            self.buf.resize(capacity, 0);
        }
    }

    /// Room to read into, making some if needed (moving unconsumed bytes to the
    /// front, or growing the buffer for a frame that does not fit).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2)
                    .min(HEADER + MAX_BODY)
                    .max(self.end + 1);
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Counts `n` bytes written into [`FrameReader::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Reads once from `stream`; `Ok(0)` at end of stream.
    pub(crate) async fn read_from(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> io::Result<usize> {
        let n = stream.read(self.spare()).await?;
        self.filled(n);
        Ok(n)
    }

    /// The next complete frame body, if the buffer holds one.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLarge> {
        let available = &self.buf[self.start..self.end];
        if available.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([available[0], available[1], available[2], available[3]]);
        let len = usize::try_from(len).map_err(|_| FrameTooLarge)?;
        if len > MAX_BODY {
            return Err(FrameTooLarge);
        }
        if available.len() < HEADER + len {
            return Ok(None);
        }
        let body = self.start + HEADER..self.start + HEADER + len;
        self.start += HEADER + len;
        Ok(Some(&self.buf[body]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_protocol_vectors() {
        let mut out = Vec::new();
        put_request(&mut out, 7, 1, b"hi");
        assert_eq!(out, [0, 0, 0, 9, 1, 0, 0, 0, 7, 0, 1, b'h', b'i']);
        assert_eq!(out.len(), request_len(2));
        assert_eq!(ping(9), [0, 0, 0, 2, 5, 9]);
    }

    #[test]
    fn parses_what_servers_send() {
        let response = [3, 0, 0, 0, 7, 0, 0, b'h', b'i'];
        assert_eq!(
            parse(&response),
            Incoming::Response {
                id: 7,
                status: 0,
                payload: b"hi"
            }
        );
        assert_eq!(
            parse(&[4, 0, 2, 1]),
            Incoming::Push {
                route: 2,
                payload: &[1]
            }
        );
        assert_eq!(parse(&[]), Incoming::Empty);
        assert_eq!(parse(&[6, 1]), Incoming::Pong(&[1]));
        assert_eq!(parse(&[7, 0, 4, b'x']), Incoming::Kick { reason: 4 });
        let mut session = vec![8u8];
        session.extend_from_slice(&[0; 44]);
        assert_eq!(
            parse(&session),
            Incoming::Session {
                id: 0,
                token: &[0; 32]
            }
        );
        assert_eq!(parse(&[11, 0, 0, 0, 0, 0, 0, 0, 3]), Incoming::Ack);
        assert_eq!(parse(&[3, 0]), Incoming::Unexpected);
        assert_eq!(parse(&[1, 0, 0, 0, 0, 0, 0]), Incoming::Unexpected);
    }

    #[test]
    fn the_reader_cuts_frames_across_reads_and_grows_for_large_ones() {
        let mut reader = FrameReader::new(8);
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0, 0, 0, 2, 6, 1]);
        stream.extend_from_slice(&[0, 0, 0, 0]);
        stream.extend_from_slice(&[0, 0, 0, 20]);
        stream.extend_from_slice(&[9; 20]);
        let mut bodies = Vec::new();
        let mut fed = 0;
        while fed < stream.len() {
            let spare = reader.spare();
            let n = spare.len().min(3).min(stream.len() - fed);
            spare[..n].copy_from_slice(&stream[fed..fed + n]);
            reader.filled(n);
            fed += n;
            while let Some(body) = reader.next_frame().expect("within bounds") {
                bodies.push(body.to_vec());
            }
        }
        assert_eq!(bodies, vec![vec![6, 1], vec![], vec![9; 20]]);

        let mut reader = FrameReader::new(8);
        reader.spare()[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        reader.filled(4);
        assert!(reader.next_frame().is_err());
    }
}
