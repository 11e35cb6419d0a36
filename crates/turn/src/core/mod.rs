//! The sans-IO half: STUN codec, credentials, peer policy and the allocation state machine.
//! Packets and time in; reply bytes, relay instructions and metrics out. No sockets, no tasks.

pub mod allocation;
pub mod auth;
pub mod policy;
pub mod stun;

pub use allocation::{
    ClientId, CoreConfig, Family, Output, Parity, RelayAllocator, RelayError, Transport, TurnCore,
};
