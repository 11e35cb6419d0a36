//! gRPC framing, gRPC-Web text, grpc-timeout, grpc-message and PredictRequest decoding, as the
//! stream gateway parses them from the network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard_stream::wire::fuzz_one(data);
});
