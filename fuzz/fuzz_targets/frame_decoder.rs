//! `FrameDecoder` fed any bytes in any chunking: frames within the maximum, each
//! exactly what the stream holds, or a refusal from an oversized header alone
//! (`gatehouse_protocol::fuzzing::cut_frames` checks it all).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, Vec<u8>, Vec<u8>)| {
    let (max_body, chunks, wire) = input;
    let chunks: Vec<usize> = chunks.into_iter().map(usize::from).collect();
    gatehouse_protocol::fuzzing::cut_frames(usize::from(max_body), &wire, &chunks);
});
