//! The seam to the cluster (multi-node mode). Signaling asks a [`ClusterBus`] to admit joins
//! cluster-wide and hands it what must travel to other nodes ([`Outgoing`], in order); the
//! cluster hands back what other nodes sent ([`Inbound`]) through
//! [`crate::SignalHandle::inbound`]. This crate ships no implementation; `switchboard-cluster`
//! implements it on Redis and the server wires it when `[cluster] redis_url` is set.

use crate::hub::{ClusterView, RoomMode};
use crate::protocol::{ClientMessage, NodeRef, ServerMessage};
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

/// Why the cluster did not admit a join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterJoinError {
    #[error("the room is full")]
    RoomFull,
    #[error("the cluster store is unavailable: {0}")]
    Unavailable(String),
}

impl ClusterJoinError {
    pub fn code(&self) -> &'static str {
        match self {
            ClusterJoinError::RoomFull => "room_full",
            ClusterJoinError::Unavailable(_) => "cluster_unavailable",
        }
    }
}

/// A session of a node that died, as the cluster recorded it: what a resume on this node
/// continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub identity: String,
    pub room: String,
    pub session_id: String,
    /// Relay messages accepted from the client, as last recorded.
    pub received: u64,
    /// The client said it can use an SFU room (`join.sfu_capable`).
    pub sfu_capable: bool,
}

/// What signaling sends to the rest of the cluster, in the order it happened.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A relay message (or server push) for `to`, whose session is on `node`; `mid` is the
    /// message's id on this node when it may be sent again after a failover.
    Forward {
        node: String,
        room: String,
        to: String,
        msg: Arc<ServerMessage>,
        mid: Option<u64>,
    },
    /// A server push for `to`, whose session is on `node`, outside any room.
    Notify {
        node: String,
        to: String,
        msg: Value,
    },
    /// A session of this node left `room`.
    Leave { room: String, identity: String },
    /// A session of this node joined or resumed.
    Session {
        identity: String,
        room: String,
        session_id: String,
        resume_token: String,
        received: u64,
        sfu_capable: bool,
    },
    /// A session's relay count changed.
    Received { identity: String, received: u64 },
    /// A message from `peer` for the SFU of `room`, which runs on `node`.
    ToSfu {
        node: String,
        room: String,
        peer: String,
        msg: ClientMessage,
    },
    /// `peer` left the SFU room `room`, which runs on `node`.
    SfuLeave {
        node: String,
        room: String,
        peer: String,
    },
}

/// What other nodes sent, for this node's sessions.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// `identity` joined `room` on `node`, or resumed there: then `resumed_after` is the
    /// client's `last_seq`, and a node that held the session sends what came after it on.
    Joined {
        room: String,
        identity: String,
        node: String,
        resumed_after: Option<u64>,
    },
    Left {
        room: String,
        identity: String,
        node: String,
        reason: Option<String>,
    },
    /// A message for `to` in `room`; one the sending node may send again after a failover is
    /// a [`ServerMessage::Relayed`] (the client gets its `relay_id`).
    Message {
        room: String,
        to: String,
        msg: ServerMessage,
    },
    /// A server push for `to`.
    Notify { to: String, msg: Value },
    /// A message for this node's SFU from `peer`, whose session is on `from`.
    ToSfu {
        room: String,
        peer: String,
        from: String,
        msg: ClientMessage,
    },
    /// `peer` left this node's SFU room `room`.
    SfuLeave { room: String, peer: String },
    /// Announcements may have been missed (the cluster connection was lost and is back): the
    /// node registers its sessions again and learns their rooms' members.
    Resync,
    /// Sent a while after [`Inbound::Resync`], once every node had time to register again:
    /// members the cluster no longer lists have left.
    Reconcile,
    /// A join on `node` moved the mesh room `room` to the SFU of `home` (`auto` rooms).
    ModeChanged {
        room: String,
        mode: RoomMode,
        home: String,
    },
    /// `node` left the registry without saying goodbye (its heartbeat stopped).
    NodeLost { node: String },
    /// `node` is in the registry again.
    NodeBack { node: String },
}

/// A join (or resume, or re-registration) for [`ClusterBus::join`].
#[derive(Debug, Clone, Copy)]
pub struct JoinSpec<'a> {
    pub room: &'a str,
    pub identity: &'a str,
    /// The mode of a room this join creates.
    pub mode: RoomMode,
    /// The room size limit.
    pub max_peers: usize,
    /// Set when a session resumes here: the client's `last_seq`.
    pub resumed_after: Option<u64>,
    /// An SFU room this join creates goes to a node of this region when one is live.
    pub region: Option<&'a str>,
    /// An SFU room this join creates (again, after Redis lost it) is served by this node.
    pub home: Option<&'a str>,
    /// Whether the member can use an SFU room (`join.sfu_capable`); `None` keeps what the
    /// cluster recorded for it (a resume, a re-registration).
    pub sfu_capable: Option<bool>,
    /// `auto` rooms: a mesh room that already has this many members moves to the SFU on this
    /// join, when the joiner and every member can use one and a live node runs an SFU.
    pub auto_sfu_at: Option<usize>,
}

/// What signaling needs from the cluster.
pub trait ClusterBus: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The live nodes that take sessions, this node first (for `joined.nodes`).
    fn nodes(&self) -> Vec<NodeRef>;
    /// What makes this node's message ids unique in the cluster (ids are `<prefix>.<n>`).
    fn mid_prefix(&self) -> String;
    /// Admits a member cluster-wide: checks the room size atomically, records the member on
    /// this node, tells the nodes of the other members.
    fn join(&self, spec: JoinSpec<'_>)
        -> BoxFuture<'static, Result<ClusterView, ClusterJoinError>>;
    /// The recorded session a resume token belongs to, when the node that held it is gone.
    fn orphaned_session(&self, resume_token: &str) -> BoxFuture<'static, Option<SessionRecord>>;
    /// Moves the SFU room `room` off `dead` (its SFU's node, which died) to the least loaded
    /// live node with an SFU, unless another node did so first; the room's node now.
    fn rehome(&self, room: &str, dead: &str) -> BoxFuture<'static, Option<String>>;
    /// The members of `room` and their nodes, as the cluster lists them.
    fn members(&self, room: &str) -> BoxFuture<'static, Option<Vec<(String, String)>>>;
    /// The node holding `identity`'s session, if another node holds one.
    fn locate(&self, identity: &str) -> BoxFuture<'static, Option<String>>;
    /// Queues `out` for the cluster; delivery keeps the order of calls.
    fn send(&self, out: Outgoing);
}
