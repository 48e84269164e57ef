//! Framing: Erlang's `{packet, 4}`, without I/O.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of body. A length of
//! 0 is legal. A length above the receiver's maximum is fatal to the connection and
//! is decided from the header alone, before any of the body is buffered: that is
//! what keeps a peer from making the receiver hold more than one maximum frame.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes in the frame header: a big-endian `u32` body length, as Erlang's `{packet, 4}`.
pub const HEADER_LEN: usize = 4;

/// The default and recommended maximum body length, Erlang's `{packet_size, 256 * 1024}`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;

/// Longest ping/pong nonce accepted, so that a ping cannot make the server echo a
/// quarter megabyte.
pub const MAX_NONCE_LEN: usize = 64;

/// A header announced a body over the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame header announces {announced} bytes, over the maximum of {max}")]
pub struct FrameTooLarge {
    /// The length in the header.
    pub announced: u32,
    /// The receiver's maximum body length.
    pub max: usize,
}

/// Cuts frames off the front of a byte buffer that a transport fills.
///
/// Stateless apart from its limit: whatever has been received but not yet cut stays
/// in the caller's buffer, so reading and decoding can be interleaved freely.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_body: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_body` bytes.
    pub fn new(max_body: usize) -> FrameDecoder {
        FrameDecoder { max_body }
    }

    /// The largest body accepted.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Takes the next whole frame's body off the front of `buf`; `Ok(None)` when the
    /// buffer holds no whole frame yet. An oversized header is an error as soon as its
    /// four bytes are there, and is left in the buffer.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameTooLarge> {
        let Some(len) = self.announced(buf)? else {
            return Ok(None);
        };
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Bytes still missing from the frame at the front of `buf` (at least 1 when
    /// incomplete, 0 when a whole frame is there); lets a transport size its reads.
    pub fn missing(&self, buf: &[u8]) -> Result<usize, FrameTooLarge> {
        match self.announced(buf)? {
            None => Ok(HEADER_LEN - buf.len()),
            Some(len) => Ok((HEADER_LEN + len).saturating_sub(buf.len())),
        }
    }

    /// The body length announced by the header at the front of `buf`, once checked.
    fn announced(&self, buf: &[u8]) -> Result<Option<usize>, FrameTooLarge> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes(*header);
        match usize::try_from(announced) {
            Ok(len) if len <= self.max_body => Ok(Some(len)),
            _ => Err(FrameTooLarge {
                announced,
                max: self.max_body,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn a_frame_split_anywhere_is_cut_once_whole() {
        let decoder = FrameDecoder::new(16);
        let wire = [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        for split in 0..wire.len() {
            let mut b = buf(&wire[..split]);
            let first = decoder.decode(&mut b).unwrap();
            assert_eq!(first.is_some(), split >= 7, "split at {split}");
            if first.is_none() {
                assert_eq!(b.len(), split, "nothing is consumed from a partial frame");
                assert!(decoder.missing(&b).unwrap() > 0);
            }
        }
        let mut b = buf(&wire);
        assert_eq!(decoder.decode(&mut b).unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(decoder.decode(&mut b).unwrap().unwrap(), &b""[..]);
        assert_eq!(decoder.decode(&mut b).unwrap(), None);
        assert!(b.is_empty());
    }

    #[test]
    fn the_maximum_passes_and_one_more_is_refused_from_the_header_alone() {
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let max = u32::try_from(DEFAULT_MAX_FRAME_LEN).unwrap();
        let mut b = buf(&max.to_be_bytes());
        assert_eq!(decoder.decode(&mut b), Ok(None));
        assert_eq!(decoder.missing(&b), Ok(DEFAULT_MAX_FRAME_LEN));
        let mut b = buf(&(max + 1).to_be_bytes());
        let refused = FrameTooLarge {
            announced: max + 1,
            max: DEFAULT_MAX_FRAME_LEN,
        };
        assert_eq!(decoder.decode(&mut b), Err(refused));
        assert_eq!(
            b.len(),
            HEADER_LEN,
            "the header stays for the caller to log"
        );
        let mut b = buf(&u32::MAX.to_be_bytes());
        assert!(decoder.decode(&mut b).is_err());
    }

    #[test]
    fn missing_counts_header_then_body() {
        let decoder = FrameDecoder::new(100);
        assert_eq!(decoder.missing(&[]), Ok(4));
        assert_eq!(decoder.missing(&[0, 0]), Ok(2));
        assert_eq!(decoder.missing(&[0, 0, 0, 10]), Ok(10));
        assert_eq!(decoder.missing(&[0, 0, 0, 10, 1, 2, 3]), Ok(7));
        assert_eq!(decoder.missing(&[0, 0, 0, 0]), Ok(0));
    }
}
