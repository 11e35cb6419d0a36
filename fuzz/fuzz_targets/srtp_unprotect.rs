//! SRTP/SRTCP unprotection (the SFU's egress path, decision 0047): arbitrary bytes never
//! panic, and whatever authenticates protects back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_sfu::fuzzing::exercise_srtp(data);
});
