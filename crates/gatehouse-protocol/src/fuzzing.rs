//! The decoders checked against any input: what must hold whatever a peer sends,
//! written once for the property tests (`properties.rs`, inside `cargo test`) and
//! the fuzz targets in `fuzz/` (long runs). Each function runs a decoder and asserts
//! its invariants; a broken one is a panic, which is what a fuzzer reports. Not part
//! of the protocol's API: hidden, and compiled only for tests and with the `fuzzing`
//! feature.

use bytes::{Bytes, BytesMut};

use crate::envelope::kind;
use crate::framing::{FrameDecoder, FrameTooLarge, HEADER_LEN, MAX_NONCE_LEN};
use crate::{DecodeError, Message};

/// What [`cut_frames`] cut from a byte stream.
#[derive(Debug, Default)]
pub struct Cut {
    /// The frame bodies, in order.
    pub bodies: Vec<Bytes>,
    /// The oversized header that ended the stream, if one did.
    pub refused: Option<FrameTooLarge>,
    /// Bytes received but not cut (a partial frame, or the refused header and what
    /// followed it).
    pub left: usize,
}

/// Feeds `wire` to a [`FrameDecoder`] of maximum `max_body` in chunks of the given
/// lengths (repeated as needed; a length of 0 counts as 1), cutting every whole frame
/// after each chunk, as a transport does. Checks that each frame is exactly the
/// header and body the stream holds at that point and within the maximum, that a
/// partial frame consumes nothing, that an oversized header is refused as soon as its
/// four bytes are there (no body is ever waited for) and stays in the buffer, and
/// that [`FrameDecoder::missing`] agrees with every decision.
pub fn cut_frames(max_body: usize, wire: &[u8], chunks: &[usize]) -> Cut {
    let decoder = FrameDecoder::new(max_body);
    let mut buf = BytesMut::new();
    let mut cut = Cut::default();
    // `wire[start..fed]` is what the buffer must hold.
    let (mut start, mut fed) = (0, 0);
    let mut lengths = chunks.iter().copied().cycle();
    while fed < wire.len() {
        let chunk = lengths.next().unwrap_or(wire.len()).max(1);
        let end = wire.len().min(fed.saturating_add(chunk));
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            assert_eq!(
                &buf[..],
                &wire[start..fed],
                "the buffer lost or gained bytes"
            );
            let missing = decoder.missing(&buf);
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert_eq!(missing, Ok(0), "a whole frame is missing nothing");
                    assert!(body.len() <= max_body, "a frame over the maximum was cut");
                    let header = u32::try_from(body.len()).map(u32::to_be_bytes);
                    assert_eq!(
                        Ok(&wire[start..start + HEADER_LEN]),
                        header.as_ref().map(|h| &h[..])
                    );
                    assert_eq!(&wire[start + HEADER_LEN..][..body.len()], &body[..]);
                    start += HEADER_LEN + body.len();
                    cut.bodies.push(body);
                }
                Ok(None) => {
                    let missing = missing
                        .unwrap_or_else(|e| panic!("missing refused ({e}) what decode waits for"));
                    assert!(missing >= 1, "an incomplete frame misses at least a byte");
                    assert!(
                        buf.len() + missing <= HEADER_LEN + max_body,
                        "waiting for more than one largest frame"
                    );
                    if let Some(header) = buf.first_chunk::<HEADER_LEN>() {
                        let announced = u32::from_be_bytes(*header) as usize;
                        assert!(
                            announced <= max_body,
                            "an oversized header waits for its body"
                        );
                    }
                    break;
                }
                Err(refused) => {
                    assert_eq!(missing, Err(refused), "missing and decode disagree");
                    assert_eq!(&buf[..], &wire[start..fed], "a refusal consumes nothing");
                    let header = buf
                        .first_chunk::<HEADER_LEN>()
                        .map(|h| u32::from_be_bytes(*h));
                    assert_eq!(
                        header,
                        Some(refused.announced),
                        "refused a header not there"
                    );
                    assert!(refused.announced as usize > max_body && refused.max == max_body);
                    cut.refused = Some(refused);
                    cut.left = buf.len();
                    return cut;
                }
            }
        }
    }
    cut.left = buf.len();
    cut
}

/// Decodes `body` as an envelope and checks the decision against the specification
/// (`docs/PROTOCOL.md`), written out again here independently: an unknown kind, a
/// body shorter than its kind's fixed fields, a session kind's body longer than its
/// fields, a nonce over [`MAX_NONCE_LEN`] and a kick text that is not UTF-8 are the
/// only errors. A decoded message encodes back to
/// exactly `body`, and [`round_trip`] holds for it.
pub fn decode_envelope(body: &[u8]) -> Result<Message, DecodeError> {
    let decoded = Message::decode(Bytes::copy_from_slice(body));
    let expected = match body.split_first() {
        None => Ok(()),
        Some((&kind, rest)) => match kind {
            kind::REQUEST | kind::RESPONSE if rest.len() < 6 => Err("truncated"),
            kind::NOTIFY | kind::PUSH | kind::KICK if rest.len() < 2 => Err("truncated"),
            kind::PING | kind::PONG if rest.len() > MAX_NONCE_LEN => Err("nonce"),
            kind::KICK if std::str::from_utf8(&rest[2..]).is_err() => Err("utf8"),
            kind::REQUEST..=kind::KICK => Ok(()),
            kind::SESSION..=kind::ACK => {
                let fields = match kind {
                    kind::SESSION => 44,
                    kind::RESUME => 48,
                    _ => 8,
                };
                match rest.len().cmp(&fields) {
                    std::cmp::Ordering::Less => Err("truncated"),
                    std::cmp::Ordering::Greater => Err("trailing"),
                    std::cmp::Ordering::Equal => Ok(()),
                }
            }
            _ => Err("kind"),
        },
    };
    match (&decoded, expected) {
        (Ok(message), Ok(())) => {
            let mut encoded = BytesMut::new();
            message.encode_body(&mut encoded);
            assert_eq!(
                &encoded[..],
                body,
                "decoding then encoding changed the body"
            );
            assert_eq!(message.body_len(), body.len());
            round_trip(message);
        }
        (Err(DecodeError::Truncated { needed, actual, .. }), Err("truncated")) => {
            assert_eq!(*actual, body.len());
            assert!(needed > actual);
        }
        (Err(DecodeError::NonceTooLong(len)), Err("nonce")) => assert_eq!(*len, body.len() - 1),
        (Err(DecodeError::KickTextNotUtf8), Err("utf8")) => {}
        (
            Err(DecodeError::TrailingBytes {
                expected, actual, ..
            }),
            Err("trailing"),
        ) => {
            assert_eq!(*actual, body.len());
            assert!(expected < actual);
        }
        (Err(DecodeError::UnknownKind(kind)), Err("kind")) => assert_eq!(Some(kind), body.first()),
        (decoded, expected) => panic!("{body:?} decoded as {decoded:?}, expected {expected:?}"),
    }
    decoded
}

/// Encodes `message` both ways (a frame of its own, and appended to a buffer that
/// already holds bytes) and decodes it back: the header states the body's length,
/// and the message comes back equal, if the protocol allows it (a nonce within
/// [`MAX_NONCE_LEN`]).
pub fn round_trip(message: &Message) {
    let frame = message.to_frame();
    let mut appended = BytesMut::from(&b"earlier"[..]);
    message.encode_frame_into(&mut appended);
    assert_eq!(
        &appended[b"earlier".len()..],
        &frame[..],
        "the two encodings differ"
    );
    let body_len = frame.len() - HEADER_LEN;
    assert_eq!(body_len, message.body_len());
    assert_eq!(
        frame.get(..HEADER_LEN),
        Some(&(body_len as u32).to_be_bytes()[..])
    );
    let decoder = FrameDecoder::new(body_len);
    let mut wire = BytesMut::from(&frame[..]);
    let body = decoder.decode(&mut wire);
    assert_eq!(
        body,
        Ok(Some(frame.slice(HEADER_LEN..))),
        "the maximum itself must pass"
    );
    assert!(wire.is_empty());
    let decoded = Message::decode(frame.slice(HEADER_LEN..));
    match message {
        Message::Ping(nonce) | Message::Pong(nonce) if nonce.len() > MAX_NONCE_LEN => {
            assert_eq!(decoded, Err(DecodeError::NonceTooLong(nonce.len())));
        }
        _ => assert_eq!(
            decoded.as_ref(),
            Ok(message),
            "the message did not come back"
        ),
    }
}
