//! `Message::decode` on any body: a message that encodes back to the same bytes, or
//! the error the specification names (`gatehouse_protocol::fuzzing::decode_envelope`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = gatehouse_protocol::fuzzing::decode_envelope(body);
});
