//! Any bytes as a signaling text frame: parsing must never panic, and the one-pass read of
//! relay messages must agree with the general path (`switchboard_signal::fuzzing::check_message`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        switchboard_signal::fuzzing::check_message(text);
    }
});
