//! The signaling hub driven as its drivers would, with resumes and SFU rooms:
//! `cargo +nightly fuzz run signal_hub fuzz/corpus/signal_hub`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_signal::fuzzing::exercise_hub(data);
});
