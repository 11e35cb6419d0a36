//! The TURN core driven as an authenticated user would, with the RFC 6062 driver callbacks:
//! `cargo +nightly fuzz run turn_session fuzz/corpus/turn_session`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_turn::fuzzing::exercise_session(data);
});
