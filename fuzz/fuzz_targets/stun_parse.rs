//! STUN/TURN parser and core: `cargo +nightly fuzz run stun_parse fuzz/corpus/stun_parse`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_turn::fuzzing::exercise(data);
});
