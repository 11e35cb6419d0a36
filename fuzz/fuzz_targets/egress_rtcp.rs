//! The SFU's own egress (decision 0047) reading subscribers' RTCP and rewriting str0m's sender
//! reports: any authenticated plaintext never panics and only resends packets it sent.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_sfu::fuzzing::exercise_egress_rtcp(data);
});
