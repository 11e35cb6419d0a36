//! Routing parser of the SFU's shared UDP socket: arbitrary datagrams must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchboard_sfu::wire::classify(data);
    if let Some(ufrag) = switchboard_sfu::wire::stun_local_ufrag(data) {
        assert!(!ufrag.is_empty() && !ufrag.contains(':'));
    }
});
