//! Property tests of the framing and the envelope: generated inputs (random bytes,
//! well-formed frames of every kind, any chunking) run through the checks of
//! [`crate::fuzzing`]. The case counts are fixed so that `cargo test` stays fast;
//! `PROPTEST_CASES=100000 cargo test -p gatehouse-protocol properties` runs more.
//! Failures are not persisted to files: proptest prints the smallest failing input,
//! which becomes a named unit test beside the code it breaks.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::envelope::TOKEN_LEN;
use crate::framing::{HEADER_LEN, MAX_NONCE_LEN};
use crate::fuzzing::{cut_frames, decode_envelope, round_trip};
use crate::{KickReason, Message, Status};

/// `cases` per property, or `PROPTEST_CASES` when set; no failure files.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    }
}

fn payload(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Any message of any kind, nonces within the protocol's limit.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Empty),
        (any::<u32>(), any::<u16>(), payload(300))
            .prop_map(|(id, route, payload)| Message::Request { id, route, payload }),
        (any::<u16>(), payload(300))
            .prop_map(|(route, payload)| Message::Notify { route, payload }),
        (any::<u32>(), any::<u16>(), payload(300)).prop_map(|(id, status, payload)| {
            Message::Response {
                id,
                status: Status(status),
                payload,
            }
        }),
        (any::<u16>(), payload(300)).prop_map(|(route, payload)| Message::Push { route, payload }),
        payload(MAX_NONCE_LEN).prop_map(Message::Ping),
        payload(MAX_NONCE_LEN).prop_map(Message::Pong),
        (any::<u16>(), any::<String>()).prop_map(|(reason, text)| Message::Kick {
            reason: KickReason(reason),
            text,
        }),
        (any::<u64>(), any::<u32>(), any::<[u8; TOKEN_LEN]>()).prop_map(
            |(id, window_ms, token)| Message::Session {
                id,
                window_ms,
                token
            }
        ),
        (any::<u64>(), any::<u64>(), any::<[u8; TOKEN_LEN]>()).prop_map(|(id, received, token)| {
            Message::Resume {
                id,
                received,
                token,
            }
        }),
        any::<u64>().prop_map(|received| Message::Resumed { received }),
        any::<u64>().prop_map(|count| Message::Ack { count }),
    ]
}

/// Chunk lengths a transport might read in.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..64, 1..8)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_bytes_in_any_chunking_are_cut_into_frames_or_refused(
        max in 0usize..300,
        wire in vec(any::<u8>(), 0..700),
        chunks in chunks(),
    ) {
        cut_frames(max, &wire, &chunks);
    }

    #[test]
    fn encoded_messages_are_cut_back_exactly_whatever_the_chunking(
        messages in vec(message(), 0..12),
        slack in 0usize..3,
        chunks in chunks(),
    ) {
        let frames: Vec<Bytes> = messages.iter().map(Message::to_frame).collect();
        let largest = messages.iter().map(Message::body_len).max().unwrap_or(0);
        // The largest body is the maximum itself (slack 0), or within it.
        let cut = cut_frames(largest + slack, &frames.concat(), &chunks);
        prop_assert!(cut.refused.is_none());
        prop_assert_eq!(cut.left, 0);
        prop_assert_eq!(cut.bodies.len(), messages.len());
        for (body, message) in cut.bodies.into_iter().zip(&messages) {
            prop_assert_eq!(&Message::decode(body), &Ok(message.clone()));
        }
    }

    #[test]
    fn a_header_over_the_maximum_is_refused_before_any_body_arrives(
        max in 0usize..100_000,
        over in 1u32..=u32::MAX,
        earlier in vec(message(), 0..3),
    ) {
        let announced = u32::try_from(max).unwrap_or(u32::MAX).saturating_add(over);
        prop_assume!(announced as usize > max);
        let mut wire: Vec<u8> = earlier.iter().flat_map(|m| m.to_frame()).collect();
        let earlier_bytes = wire.len();
        prop_assume!(earlier.iter().all(|m| m.body_len() <= max));
        wire.extend_from_slice(&announced.to_be_bytes());
        // Byte by byte: the refusal comes with the header's last byte, no body sent.
        let cut = cut_frames(max, &wire, &[1]);
        prop_assert_eq!(cut.bodies.len(), earlier.len());
        prop_assert_eq!(cut.refused.map(|r| r.announced), Some(announced));
        prop_assert_eq!(cut.left, wire.len() - earlier_bytes);
        prop_assert_eq!(cut.left, HEADER_LEN);
    }

    #[test]
    fn any_body_decodes_to_a_message_or_the_error_the_spec_names(
        kind in 0u8..10,
        rest in vec(any::<u8>(), 0..80),
        raw in proptest::bool::ANY,
    ) {
        // Mostly a known kind byte first, so that every kind's fields are reached.
        let body: Vec<u8> = if raw { rest } else { std::iter::once(kind).chain(rest).collect() };
        let _ = decode_envelope(&body);
    }

    #[test]
    fn every_kind_round_trips(message in message()) {
        round_trip(&message);
        let body = message.to_frame().slice(HEADER_LEN..);
        prop_assert_eq!(decode_envelope(&body), Ok(message));
    }

    #[test]
    fn a_nonce_over_the_limit_encodes_but_is_refused(nonce in payload(200)) {
        round_trip(&Message::Ping(nonce.clone()));
        round_trip(&Message::Pong(nonce));
    }
}
