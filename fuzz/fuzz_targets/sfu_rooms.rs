//! The SFU's forwarding core driven as the engine would:
//! `cargo +nightly fuzz run sfu_rooms fuzz/corpus/sfu_rooms`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_sfu::fuzzing::exercise_rooms(data);
});
