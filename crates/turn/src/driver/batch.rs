//! Batched datagram I/O now lives in `switchboard-udp` (shared with the SFU).

pub use switchboard_udp::{RecvBatch, SendBatch, BATCH};
