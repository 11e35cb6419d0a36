//! Any bytes as a signaling text frame: parsing must never panic, and a parsed message must
//! survive the same validation again (what the gRPC `json` escape hatch does).
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_signal::protocol::ClientMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientMessage::parse(text);
    }
});
