//! The I/O side: one UDP socket, one engine task that owns every `Rtc`, and the handles
//! signaling uses. The engine loop waits on (socket readable | command | ICE-TCP input |
//! earliest str0m timeout | shutdown), feeds str0m, polls it, runs the room logic in
//! [`crate::core`] on the events and executes its actions. Datagrams come in `recvmmsg`
//! batches and leave in batches of UDP GSO runs (`switchboard_udp`); only sessions with input
//! or a due timeout ([`crate::timers::TimerQueue`]) are polled (decision 0046).
//!
//! By concern:
//! - `handle`: [`Sfu`] (start, join, counts) and [`ParticipantHandle`], and the commands they
//!   send the engine.
//! - `engine`: the engine loop: waiting, timers, polling sessions until they settle, str0m
//!   events, carrying out the room logic's actions.
//! - `net`: the shared UDP socket (binding, batched reads and sends) and the ICE-TCP
//!   connection table.
//! - `demux`: which session a datagram or ICE-TCP frame belongs to.
//! - `session`: one participant's session, built on join and freed on close.
//! - `negotiation`: SDP offer/answer with str0m and the life of each down-track's m-line.
//! - `forward`: published tracks and the fan-out of media to subscribers, through str0m or the
//!   own egress.
//! - `data`: DataChannel relay and server pushes.

mod data;
mod demux;
mod engine;
mod forward;
mod handle;
mod negotiation;
mod net;
mod session;

pub use handle::{validate_config, ParticipantHandle, Sfu, SfuCounts, SfuEvent};

use crate::core::TrackKind;
use crate::metrics::SfuMetrics;
use session::Session;

fn kind_label(k: TrackKind) -> &'static str {
    match k {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

/// Counts a datagram dropped before it reached a session.
fn drop_reason(m: &SfuMetrics, reason: &'static str) {
    m.datagrams_dropped
        .get_or_create(&[("reason", reason)])
        .inc();
}
