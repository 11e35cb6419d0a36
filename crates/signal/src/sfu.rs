//! The seam to the SFU: a room in SFU mode hands its peers' offers, answers, candidates and
//! departures to an [`SfuBridge`], and the SFU sends its own offers/candidates back to a peer
//! through [`crate::SignalHandle::send_to_peer`]. This crate ships only [`NoSfu`]; the SFU
//! crate implements the trait and the server wires it.

use crate::protocol::ClientMessage;

/// What signaling needs from an SFU.
pub trait SfuBridge: Send + Sync + 'static {
    /// False when no SFU runs: SFU-mode rooms are refused with `sfu_unavailable`.
    fn available(&self) -> bool;
    /// A peer of an SFU-mode room sent `msg` (offer, answer, ice_candidate, bye); the target
    /// is the SFU itself. Replies go out through `SignalHandle::send_to_peer`.
    fn handle(&self, room: &str, peer: &str, msg: ClientMessage);
    /// The peer left the room (leave, close, or resume grace expired).
    fn leave(&self, room: &str, peer: &str);
}

/// No SFU in this build or config: every room is mesh.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSfu;

impl SfuBridge for NoSfu {
    fn available(&self) -> bool {
        false
    }
    fn handle(&self, _room: &str, _peer: &str, _msg: ClientMessage) {}
    fn leave(&self, _room: &str, _peer: &str) {}
}
