//! DataChannel envelope parser: arbitrary bytes never panic, and whatever parses re-encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = switchboard_sfu::wire::parse_envelope(data, false, 64 * 1024) {
        assert!(switchboard_sfu::wire::encode_envelope("p", Some("t"), m.data).is_some());
    }
});
