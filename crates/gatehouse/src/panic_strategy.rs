//! gatehouse refuses to be built with `panic = "abort"`.
//!
//! Its fault isolation catches panics (`catch_unwind`): a panicking handler ends only
//! its own connection (kick `internal_error`, its disconnect hook still runs), and a
//! panicking room restarts alone. Built with `panic = "abort"`, the same panic would
//! end the whole process, every connection and unsaved session with it. That is
//! decided at build time rather than at startup: an embedder learns it at the first
//! build, not from a server that refuses to start (or, unchecked, one that dies with
//! all its players at the first bug). Builds by cargo-fuzz (`cfg(fuzzing)`) pass:
//! there a panic must abort, since it is the finding.
//!
//! This file holds nothing else, so that `tests/panic_strategy.rs` can compile it
//! alone both ways.

#[cfg(all(panic = "abort", not(fuzzing)))]
compile_error!(
    "gatehouse needs panics to unwind, and this build aborts on panic (panic = \"abort\"). \
     gatehouse isolates faults with catch_unwind: a panicking handler ends only its own \
     connection and a panicking room only restarts; with panic = \"abort\" one panic would \
     end the whole server and every connection on it. Remove `panic = \"abort\"` from the \
     Cargo profile that builds this (and `-C panic=abort` from RUSTFLAGS)."
);
