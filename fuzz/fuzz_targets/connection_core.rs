//! The connection core driven by an arbitrary script: client bytes and frames in any
//! chunking, reads and writes of any size, handler answers, pushes, hub deliveries,
//! kicks and time. `gatehouse::fuzzing::connection_core` checks every invariant
//! (`crates/gatehouse/src/connection/scenario.rs` lists them).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: gatehouse::fuzzing::Script| {
    gatehouse::fuzzing::connection_core(&script);
});
