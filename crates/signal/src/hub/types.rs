//! The hub's vocabulary: what it is configured with, what it is told (joins, disconnects),
//! what it refuses, and the effects it asks its driver to carry out.

use crate::protocol::{ClientMessage, ServerMessage};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A transport connection (WebSocket or gRPC stream), numbered by the driver.
pub type ConnId = u64;

/// WebSocket close codes used by signaling (gRPC maps them to a status).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const REPLACED: u16 = 4001;
    pub const RESUMED_ELSEWHERE: u16 = 4002;
    pub const SLOW_CONSUMER: u16 = 4003;
    pub const RATE_LIMITED: u16 = 4029;
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue `msg` on `conn`; `seq` is set for messages kept for resume.
    Deliver {
        conn: ConnId,
        msg: Arc<ServerMessage>,
        seq: Option<u64>,
    },
    /// Close `conn` after what is already queued.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// A peer in an SFU-mode room sent something the SFU must handle; `home` is the node whose
    /// SFU serves the room when it is not this one (cluster mode).
    ToSfu {
        room: String,
        peer: String,
        msg: ClientMessage,
        home: Option<String>,
    },
    /// A peer left an SFU-mode room (served by `home`, when not this node).
    SfuLeave {
        room: String,
        peer: String,
        home: Option<String>,
    },
    /// Cluster mode: carry `msg` to `to`, a member of `room` whose session is on `node`.
    /// `mid` identifies a relay message on this node (sent again after a failover; the client
    /// drops duplicates by it).
    Forward {
        node: String,
        room: String,
        to: String,
        msg: Arc<ServerMessage>,
        mid: Option<u64>,
    },
    /// Cluster mode: a session of this node left `room`; its membership ends cluster-wide.
    ClusterLeave { room: String, identity: String },
    /// Cluster mode: a session of this node joined or resumed; the cluster records it so the
    /// session can resume on another node should this one die.
    ClusterSession {
        identity: String,
        room: String,
        session_id: String,
        resume_token: String,
        received: u64,
        sfu_capable: bool,
    },
}

/// How a room carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    Mesh,
    Sfu,
}

impl RoomMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Mesh => "mesh",
            RoomMode::Sfu => "sfu",
        }
    }
}

/// How the hub picks a room's mode (`[sfu] mode`, `mesh_max_peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModePolicy {
    /// Always mesh.
    Mesh,
    /// Always SFU (refused with `sfu_unavailable` when no SFU is wired).
    Sfu,
    /// Mesh; a room created when an SFU is available switches to SFU for joins beyond
    /// `mesh_max_peers`. Without an SFU, rooms stay mesh up to `max_room_peers`.
    Auto { mesh_max_peers: usize },
}

/// The hub's bounds.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub max_room_peers: usize,
    pub resume_grace: Duration,
    /// Messages kept per session for resume.
    pub resume_buffer: usize,
    /// Bytes kept per session for resume (the newest message always stays).
    pub resume_buffer_bytes: usize,
    /// Bytes kept for resume by all sessions of the node together.
    pub resume_total_bytes: usize,
    pub mode: ModePolicy,
    pub sfu_available: bool,
    /// Cluster mode: rooms may have members on other nodes.
    pub clustered: bool,
    /// Cluster mode: how long messages forwarded to another node are kept to be sent again if
    /// that node turns out dead (its death is noticed this long after it happens at most).
    pub forward_retention: Duration,
    /// Cluster mode: what makes this node's message ids (`mid`) unique in the cluster.
    pub mid_prefix: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_room_peers: 50,
            resume_grace: Duration::from_secs(15),
            resume_buffer: 256,
            resume_buffer_bytes: 1024 * 1024,
            resume_total_bytes: 256 * 1024 * 1024,
            mode: ModePolicy::Auto { mesh_max_peers: 4 },
            sfu_available: false,
            clustered: false,
            forward_retention: Duration::ZERO,
            mid_prefix: String::new(),
        }
    }
}

/// How a connection ended, which decides between leaving and waiting for a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed (close frame, `leave`, end of gRPC stream): leave now.
    Clean,
    /// The socket died without a goodbye (reset, EOF, missed pings): keep the session for the
    /// resume grace period.
    Lost,
    /// The server closed it for cause (slow consumer, limits, shutdown): leave now.
    Fatal,
}

/// A join or resume refusal: sent to the client as an `error`; the connection stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("this connection has already joined a room")]
    AlreadyJoined,
    #[error("peer_id must be your token's identity")]
    ForbiddenPeerId,
    #[error("your token is not valid for this room")]
    ForbiddenRoom,
    #[error("the room is full")]
    RoomFull,
    #[error("this room needs an SFU and none is available")]
    SfuUnavailable,
    #[error("unknown or expired resume token")]
    UnknownResumeToken,
    #[error("messages after last_seq are no longer buffered; join again")]
    ResumeGap,
}

impl JoinError {
    pub fn code(&self) -> &'static str {
        match self {
            JoinError::AlreadyJoined => "already_joined",
            JoinError::ForbiddenPeerId => "forbidden_peer_id",
            JoinError::ForbiddenRoom => "forbidden_room",
            JoinError::RoomFull => "room_full",
            JoinError::SfuUnavailable => "sfu_unavailable",
            JoinError::UnknownResumeToken => "unknown_resume_token",
            JoinError::ResumeGap => "resume_gap",
        }
    }
}

/// What the joiner is told besides `room_peers`.
#[derive(Debug, Clone, Default)]
pub struct JoinInfo {
    pub ice_servers: Value,
    pub ice_ttl: u64,
    /// The joiner's wish for a room it creates (`join.mode`); honoured under `auto` only.
    pub requested_mode: Option<RoomMode>,
    /// The client can use an SFU room (`join.sfu_capable`, sent by the SDK). An `auto` room
    /// moves to the SFU only when every member can, so mesh-only clients (such as the reference
    /// WebRTCClient) keep working.
    pub sfu_capable: bool,
    /// Cluster mode: the live nodes for `joined.nodes`.
    pub nodes: Vec<crate::protocol::NodeRef>,
}
