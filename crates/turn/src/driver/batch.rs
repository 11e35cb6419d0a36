//! Batched datagram I/O lives in `switchboard-udp` (shared with the SFU).

pub use switchboard_udp::{send_datagrams, RecvBatch, Run, SendBatch, SendOutcome, BATCH, GSO};
