//! Property tests of the connection core: generated scripts (see `scenario`) of
//! client bytes and frames, reads and writes of any size, handler answers, pushes,
//! broadcasts, kicks, time, lost connections and resumes, each run with every
//! invariant checked. The case count is fixed so that `cargo test` stays fast;
//! `PROPTEST_CASES=20000 cargo test -p gatehouse --lib properties` runs more. Failures are not persisted to files:
//! proptest prints the smallest failing script, which becomes a named unit test.

#![cfg(test)]

use proptest::collection::vec;
use proptest::prelude::*;

use super::scenario::{ClientFrame, Script, Settings, Step};
use crate::fuzzing::{connection_core, proptest_config};

/// Limits from tight to roomy; a twentieth of the scripts get frames past the free
/// share of memory.
fn settings() -> impl Strategy<Value = Settings> {
    (
        (any::<u32>(), prop::bool::weighted(0.05), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
        any::<u32>(),
        prop::array::uniform5(any::<u32>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (max_frame, large_frames, outbound_extra),
                (bytes_per_sec, bytes_burst_extra, frames_per_sec, frames_burst),
                memory_extra,
                timeouts_ms,
                (login_required, messages),
            )| Settings {
                max_frame,
                large_frames,
                outbound_extra,
                bytes_per_sec,
                bytes_burst_extra,
                frames_per_sec,
                frames_burst,
                memory_extra,
                timeouts_ms,
                login_required,
                messages,
            },
        )
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        4 => (any::<u32>(), any::<u16>(), 0u16..600)
            .prop_map(|(id, route, size)| ClientFrame::Request { id, route, size }),
        2 => (any::<u16>(), 0u16..600).prop_map(|(route, size)| ClientFrame::Notify { route, size }),
        2 => any::<u8>().prop_map(ClientFrame::Ping),
        1 => any::<u8>().prop_map(ClientFrame::Pong),
        1 => Just(ClientFrame::Empty),
        1 => any::<u8>().prop_map(ClientFrame::ServerOnly),
        1 => any::<u16>().prop_map(ClientFrame::TooLarge),
        1 => prop_oneof![0u64..40, any::<u64>()].prop_map(ClientFrame::Ack),
        1 => prop_oneof![0u64..40, any::<u64>()].prop_map(ClientFrame::Resume),
    ]
}

/// Well-formed frames mostly; junk, time, handlers and the hub around them.
fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => client_frame().prop_map(Step::Send),
        1 => vec(any::<u8>(), 0..40).prop_map(Step::SendRaw),
        8 => any::<u32>().prop_map(|n| Step::Read(n % 3000)),
        3 => prop_oneof![0u32..100, 0u32..130_000].prop_map(Step::Wait),
        1 => Just(Step::EarlyTimer),
        4 => (any::<u16>(), any::<u32>()).prop_map(|(status, size)| Step::Respond { status, size }),
        2 => (any::<u16>(), any::<u32>(), any::<bool>())
            .prop_map(|(route, size, waiting)| Step::Push { route, size, waiting }),
        2 => any::<u32>().prop_map(|size| Step::Broadcast { size }),
        6 => any::<u32>().prop_map(|n| Step::Write(n % 5000)),
        1 => (any::<u16>(), any::<u32>(), any::<bool>())
            .prop_map(|(reason, text_len, wide)| Step::Kick { reason, text_len, wide }),
        1 => Just(Step::MarkDirty),
        1 => Just(Step::LogIn),
        1 => Just(Step::Shed),
        1 => (any::<u32>(), any::<bool>())
            .prop_map(|(bytes, give_back)| Step::OtherConnections { bytes, give_back }),
        1 => Just(Step::PeerClosed),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(held, buffer)| Step::OfferSession { held, buffer }),
        1 => Just(Step::Lose),
        1 => Just(Step::Leave),
        2 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(back, beyond)| Step::Resume { back, beyond }),
    ]
}

/// A session offered at once, then mostly what it sends, written or not, lost
/// connections and resumes: so that resumes come after frames the client has.
fn resuming_script() -> impl Strategy<Value = Script> {
    let request = Step::Send(ClientFrame::Request {
        id: 1,
        route: 1,
        size: 8,
    });
    let start = [
        request,
        Step::Read(3000),
        Step::OfferSession {
            held: 0,
            buffer: u16::MAX,
        },
    ];
    let step = prop_oneof![
        3 => (any::<u16>(), 0u32..300).prop_map(|(status, size)| Step::Respond { status, size }),
        3 => (any::<u16>(), 0u32..300, any::<bool>())
            .prop_map(|(route, size, waiting)| Step::Push { route, size, waiting }),
        1 => (0u32..300).prop_map(|size| Step::Broadcast { size }),
        4 => (0u32..400).prop_map(Step::Write),
        2 => (0u16..40).prop_map(|size| Step::Send(ClientFrame::Request { id: 2, route: 1, size })),
        1 => (0u64..20).prop_map(|count| Step::Send(ClientFrame::Ack(count))),
        2 => (0u32..3000).prop_map(Step::Read),
        1 => (0u32..2000).prop_map(Step::Wait),
        2 => Just(Step::Lose),
        3 => (any::<u8>(), prop::bool::weighted(0.1)).prop_map(|(back, beyond)| Step::Resume { back, beyond }),
    ];
    (settings(), vec(step, 0..60)).prop_map(move |(settings, steps)| Script {
        settings,
        steps: start.iter().cloned().chain(steps).collect(),
    })
}

fn script() -> impl Strategy<Value = Script> {
    (settings(), vec(step(), 0..60)).prop_map(|(settings, steps)| Script { settings, steps })
}

proptest! {
    #![proptest_config(proptest_config(1000))]

    #[test]
    fn any_script_keeps_every_invariant_of_the_connection_core(script in script()) {
        connection_core(&script);
    }

    #[test]
    fn a_lost_session_resumes_with_exactly_the_frames_its_client_lacks(script in resuming_script()) {
        connection_core(&script);
    }
}
