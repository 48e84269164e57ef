//! `docs/PROTOCOL.md` states the runtime's default timers to client authors; they
//! must agree with [`LimitsConfig::default`]. (The protocol's own constants and hex
//! vectors are checked in the gatehouse-protocol crate.)

#![allow(clippy::unwrap_used)]

use gatehouse::config::LimitsConfig;

#[test]
fn protocol_md_states_the_default_first_frame_and_idle_timeouts() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROTOCOL.md"
    ))
    .unwrap();
    let limits = LimitsConfig::default();
    for stated in [
        format!("**{} s**", limits.first_frame_timeout.as_secs()),
        format!("**{} s**", limits.idle_timeout.as_secs()),
    ] {
        assert!(
            doc.contains(&stated),
            "PROTOCOL.md no longer states {stated}; update it with the code"
        );
    }
}
