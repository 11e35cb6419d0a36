//! The signaling core, sans-IO: rooms, sessions, relay, resume buffers. Transports feed it
//! inputs (join, message, disconnect, tick) with the current time, and drain [`Effect`]s
//! (deliver this message to that connection, close that connection). No sockets, no tasks,
//! no clocks inside, so tests script every case deterministically.
//!
//! Policies decided here (see docs/decisions/0021-signal-sessions.md):
//! - Identity is the token's `sub`; one live session per identity. A second join by the same
//!   identity *replaces* the first: the old connection gets `error{code:"replaced"}` and is
//!   closed (4001), the room sees `peer_left` then `peer_joined`.
//! - Every message delivered to a joined session gets a per-session `seq` and is kept in a
//!   bounded ring, so a client that lost its socket can resume with `last_seq` and receive
//!   exactly the messages after it, in order, none duplicated. A session whose socket dropped
//!   without a close frame stays in its room for `resume_grace`; if its ring overflows while
//!   detached, resuming would lose messages, so the session ends at once (`peer_left`).
//! - Rings are bounded by count and by bytes, per session (`resume_buffer`,
//!   `resume_buffer_bytes`) and across the node (`resume_total_bytes`): past the node's bound the
//!   receiving session gives up its oldest messages first while it holds more than its fair
//!   share, then the session holding the most does. Every eviction is counted ([`Trims`]).

use crate::protocol::{ClientMessage, ServerMessage};
use crate::ring::Ring;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A peer in an SFU-mode room sent something the SFU must handle.
    ToSfu {
        room: String,
        peer: String,
        msg: ClientMessage,
    },
    /// A peer left an SFU-mode room.
    SfuLeave { room: String, peer: String },
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

impl ModePolicy {
    pub fn parse(mode: &str, mesh_max_peers: usize) -> ModePolicy {
        match mode {
            "mesh" => ModePolicy::Mesh,
            "sfu" => ModePolicy::Sfu,
            _ => ModePolicy::Auto { mesh_max_peers },
        }
    }
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
}

struct Session {
    session_id: String,
    room: String,
    conn: Option<ConnId>,
    next_seq: u64,
    ring: Ring,
    lost_since: Option<Instant>,
    resume_token: String,
    /// Relay messages (offer/answer/ice_candidate/bye) accepted from this session, so a
    /// resuming client knows which of its own sends never arrived and must be re-sent.
    received: u64,
    /// See [`JoinInfo::sfu_capable`].
    sfu_capable: bool,
}

struct Room {
    /// Identities in join order.
    members: Vec<String>,
    mode: RoomMode,
}

/// Counters the driver exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    pub rooms: usize,
    pub sessions: usize,
    pub detached: usize,
    /// Bytes held in resume buffers, all sessions together.
    pub resume_bytes: usize,
}

/// Messages evicted from resume buffers, by the bound that evicted them (monotonic counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trims {
    /// `resume_buffer`: the session's message count.
    pub count: u64,
    /// `resume_buffer_bytes`: the session's bytes.
    pub session_bytes: u64,
    /// `resume_total_bytes`: the node's bytes.
    pub total_bytes: u64,
}

/// All rooms and sessions of one node.
pub struct Hub {
    cfg: HubConfig,
    rooms: HashMap<String, Room>,
    sessions: HashMap<String, Session>,
    conns: HashMap<ConnId, String>,
    resume_tokens: HashMap<String, String>,
    effects: Vec<Effect>,
    /// Bytes in every session's ring.
    ring_bytes: usize,
    /// Messages evicted from rings, by bound.
    pub trims: Trims,
    /// Sessions ended because their ring overflowed while detached.
    pub overflowed_while_detached: u64,
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        out.push_str(&format!("{:02x}", rand::random::<u8>()));
    }
    out
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            cfg,
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            conns: HashMap::new(),
            resume_tokens: HashMap::new(),
            effects: Vec::new(),
            ring_bytes: 0,
            trims: Trims::default(),
            overflowed_while_detached: 0,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Takes the effects produced so far, in order.
    pub fn drain(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// O(1): called after every message. Every attached session has exactly one entry in
    /// `conns`, so the detached ones are the difference.
    pub fn stats(&self) -> HubStats {
        #[cfg(test)]
        assert_eq!(
            self.sessions.len() - self.conns.len(),
            self.sessions.values().filter(|s| s.conn.is_none()).count(),
            "conns and attached sessions disagree"
        );
        #[cfg(test)]
        assert_eq!(
            self.ring_bytes,
            self.sessions
                .values()
                .map(|s| s.ring.bytes())
                .sum::<usize>(),
            "ring byte total drifted"
        );
        HubStats {
            rooms: self.rooms.len(),
            sessions: self.sessions.len(),
            detached: self.sessions.len().saturating_sub(self.conns.len()),
            resume_bytes: self.ring_bytes,
        }
    }

    /// The identity joined on `conn`, if any.
    pub fn identity_of(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(String::as_str)
    }

    /// The identity a resume token belongs to.
    pub fn resume_identity(&self, token: &str) -> Option<String> {
        self.resume_tokens.get(token).cloned()
    }

    /// Members of `room` in join order (for tests and admin views).
    pub fn members(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    fn reply(&mut self, conn: ConnId, msg: ServerMessage) {
        self.effects.push(Effect::Deliver {
            conn,
            msg: Arc::new(msg),
            seq: None,
        });
    }

    /// Sends `msg` to `identity`'s session: numbered, kept for resume, delivered if attached.
    fn deliver(&mut self, identity: &str, msg: Arc<ServerMessage>) -> bool {
        let (max_len, max_bytes) = (self.cfg.resume_buffer.max(1), self.cfg.resume_buffer_bytes);
        let Some(s) = self.sessions.get_mut(identity) else {
            return false;
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        self.ring_bytes += s.ring.push(seq, msg.clone());
        let over_count = s.ring.len().saturating_sub(max_len.max(1));
        let (evicted, freed) = s.ring.trim(max_len, max_bytes);
        self.ring_bytes -= freed;
        let by_count = evicted.min(over_count) as u64;
        self.trims.count += by_count;
        self.trims.session_bytes += evicted as u64 - by_count;
        let overflow_detached = evicted > 0 && s.conn.is_none();
        if let Some(conn) = s.conn {
            self.effects.push(Effect::Deliver {
                conn,
                msg,
                seq: Some(seq),
            });
        }
        if overflow_detached {
            self.overflowed_while_detached += 1;
            self.end_session(identity);
        }
        self.enforce_total(identity);
        true
    }

    /// Keeps the node's resume bytes within `resume_total_bytes`: the session that just
    /// received gives up its oldest messages while it holds more than its fair share, then
    /// the largest ring does. A detached session that loses messages can no longer resume
    /// without a gap, so it ends.
    fn enforce_total(&mut self, receiver: &str) {
        let cap = self.cfg.resume_total_bytes;
        while self.ring_bytes > cap {
            let fair = cap / self.sessions.len().max(1);
            let victim = match self.sessions.get(receiver) {
                Some(s) if s.ring.bytes() > fair => receiver.to_string(),
                // Under the receiver's fair share: someone else holds too much. One scan, then
                // that session gives up messages down to its fair share.
                _ => match self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.ring.len() > 0)
                    .max_by_key(|(_, s)| s.ring.bytes())
                {
                    Some((id, _)) => id.clone(),
                    None => return,
                },
            };
            let Some(s) = self.sessions.get_mut(&victim) else {
                return;
            };
            let mut evicted = false;
            while self.ring_bytes > cap && s.ring.len() > 0 && (s.ring.bytes() > fair || !evicted) {
                self.ring_bytes -= s.ring.pop_front();
                self.trims.total_bytes += 1;
                evicted = true;
            }
            if s.conn.is_none() {
                self.overflowed_while_detached += 1;
                self.end_session(&victim);
            }
        }
    }

    /// `join` on `conn` as `identity` (the token's `sub`); `token_room` is the token's
    /// `room` claim. On success the joiner gets `room_peers` then `joined`; others `peer_joined`.
    pub fn join(
        &mut self,
        conn: ConnId,
        identity: &str,
        room_id: &str,
        claimed_peer_id: Option<&str>,
        token_room: Option<&str>,
        info: JoinInfo,
    ) -> Result<(), JoinError> {
        if self.conns.contains_key(&conn) {
            return Err(JoinError::AlreadyJoined);
        }
        if claimed_peer_id.is_some_and(|p| p != identity) {
            return Err(JoinError::ForbiddenPeerId);
        }
        if token_room.is_some_and(|r| r != room_id) {
            return Err(JoinError::ForbiddenRoom);
        }
        let existing = self.rooms.get(room_id);
        let count = existing.map_or(0, |r| r.members.len());
        let replacing_here = self
            .sessions
            .get(identity)
            .is_some_and(|s| s.room == room_id);
        if count >= self.cfg.max_room_peers && !replacing_here {
            return Err(JoinError::RoomFull);
        }
        let mode = match (existing, self.cfg.mode) {
            (Some(r), _) => r.mode,
            (None, ModePolicy::Mesh) => RoomMode::Mesh,
            (None, ModePolicy::Sfu) => RoomMode::Sfu,
            (None, ModePolicy::Auto { .. }) => info.requested_mode.unwrap_or(RoomMode::Mesh),
        };
        if mode == RoomMode::Sfu && !self.cfg.sfu_available {
            return Err(JoinError::SfuUnavailable);
        }
        // `auto`: the join that takes a mesh room past `mesh_max_peers` moves it to the SFU.
        // Members already in it hear `mode_changed` before `peer_joined`.
        let mode = match self.cfg.mode {
            ModePolicy::Auto { mesh_max_peers }
                if mode == RoomMode::Mesh
                    && self.cfg.sfu_available
                    && !replacing_here
                    && count >= mesh_max_peers
                    && info.sfu_capable
                    && existing.is_some_and(|r| {
                        r.members
                            .iter()
                            .all(|m| self.sessions.get(m).is_some_and(|s| s.sfu_capable))
                    }) =>
            {
                let note = Arc::new(ServerMessage::ModeChanged { mode: "sfu".into() });
                if let Some(r) = self.rooms.get_mut(room_id) {
                    r.mode = RoomMode::Sfu;
                    for m in r.members.clone() {
                        self.deliver(&m, note.clone());
                    }
                }
                RoomMode::Sfu
            }
            _ => mode,
        };
        // Same identity already live: the newer connection wins.
        if let Some(old) = self.sessions.get(identity).and_then(|s| s.conn) {
            self.reply(
                old,
                ServerMessage::error("replaced", "a newer connection joined as this identity"),
            );
            self.effects.push(Effect::Close {
                conn: old,
                code: close::REPLACED,
                reason: "replaced by a newer connection",
            });
            self.conns.remove(&old);
        }
        if self.sessions.contains_key(identity) {
            self.end_session(identity);
        }

        let room = self
            .rooms
            .entry(room_id.to_string())
            .or_insert_with(|| Room {
                members: Vec::new(),
                mode,
            });
        let peers = room.members.clone();
        room.members.push(identity.to_string());
        let session = Session {
            session_id: random_hex(8),
            room: room_id.to_string(),
            conn: Some(conn),
            next_seq: 1,
            ring: Ring::default(),
            lost_since: None,
            resume_token: random_hex(16),
            received: 0,
            sfu_capable: info.sfu_capable,
        };
        let joined = ServerMessage::Joined {
            peer_id: identity.to_string(),
            room_id: room_id.to_string(),
            session_id: session.session_id.clone(),
            resume_token: session.resume_token.clone(),
            ice_servers: info.ice_servers,
            ice_ttl: info.ice_ttl,
            mode: mode.as_str().into(),
            resumed: false,
            resume_grace: self.cfg.resume_grace.as_secs(),
            received: 0,
        };
        self.resume_tokens
            .insert(session.resume_token.clone(), identity.to_string());
        self.sessions.insert(identity.to_string(), session);
        self.conns.insert(conn, identity.to_string());
        // The joiner's handshake first: anything that happens while the others are told
        // (e.g. a detached peer's ring overflowing into `peer_left`) then reaches the joiner
        // after `room_peers`, so its view stays consistent.
        self.reply(
            conn,
            ServerMessage::RoomPeers {
                peers: peers.clone(),
            },
        );
        self.reply(conn, joined);
        let note = Arc::new(ServerMessage::PeerJoined {
            peer_id: identity.to_string(),
        });
        for p in &peers {
            self.deliver(p, note.clone());
        }
        Ok(())
    }

    /// Re-attaches a lost session to `conn`: `joined{resumed:true}`, then every buffered
    /// message with `seq > last_seq`, in order. No `peer_left`/`peer_joined` for the room.
    pub fn resume(
        &mut self,
        conn: ConnId,
        resume_token: &str,
        last_seq: u64,
        info: JoinInfo,
    ) -> Result<String, JoinError> {
        if self.conns.contains_key(&conn) {
            return Err(JoinError::AlreadyJoined);
        }
        let identity = self
            .resume_tokens
            .get(resume_token)
            .cloned()
            .ok_or(JoinError::UnknownResumeToken)?;
        let Some(s) = self.sessions.get(&identity) else {
            return Err(JoinError::UnknownResumeToken);
        };
        if last_seq >= s.next_seq {
            return Err(JoinError::ResumeGap);
        }
        let oldest = s.ring.oldest_seq().unwrap_or(s.next_seq);
        if last_seq + 1 < oldest {
            // Something the client never saw was evicted: resuming would lose it.
            self.end_session(&identity);
            return Err(JoinError::ResumeGap);
        }
        // The old socket may not be known dead yet: it loses the session, quietly.
        if let Some(old) = s.conn {
            self.effects.push(Effect::Close {
                conn: old,
                code: close::RESUMED_ELSEWHERE,
                reason: "session resumed on another connection",
            });
            self.conns.remove(&old);
        }
        let new_token = random_hex(16);
        self.resume_tokens.remove(resume_token);
        self.resume_tokens
            .insert(new_token.clone(), identity.clone());
        let grace = self.cfg.resume_grace.as_secs();
        let Some(s) = self.sessions.get_mut(&identity) else {
            return Err(JoinError::UnknownResumeToken);
        };
        s.conn = Some(conn);
        s.lost_since = None;
        s.resume_token = new_token.clone();
        self.ring_bytes -= s.ring.ack(last_seq);
        let mode = self
            .rooms
            .get(&s.room)
            .map_or(RoomMode::Mesh, |r| r.mode)
            .as_str();
        let joined = ServerMessage::Joined {
            peer_id: identity.clone(),
            room_id: s.room.clone(),
            session_id: s.session_id.clone(),
            resume_token: new_token,
            ice_servers: info.ice_servers,
            ice_ttl: info.ice_ttl,
            mode: mode.into(),
            resumed: true,
            resume_grace: grace,
            received: s.received,
        };
        let replay: Vec<_> = s.ring.iter().map(|e| (e.seq, e.msg.clone())).collect();
        self.conns.insert(conn, identity.clone());
        self.reply(conn, joined);
        for (seq, msg) in replay {
            self.effects.push(Effect::Deliver {
                conn,
                msg,
                seq: Some(seq),
            });
        }
        Ok(identity)
    }

    /// A message from `conn` after its handshake (anything but `join`).
    pub fn message(&mut self, conn: ConnId, msg: ClientMessage) {
        if let ClientMessage::Ping { ts } = msg {
            self.reply(conn, ServerMessage::Pong { ts });
            return;
        }
        let Some(from) = self.conns.get(&conn).cloned() else {
            self.reply(
                conn,
                ServerMessage::error("not_joined", "send join before other messages"),
            );
            return;
        };
        let room_id = match self.sessions.get(&from) {
            Some(s) => s.room.clone(),
            None => return,
        };
        let mode = self.rooms.get(&room_id).map_or(RoomMode::Mesh, |r| r.mode);
        if let ClientMessage::Leave = msg {
            self.conns.remove(&conn);
            self.end_session(&from);
            return;
        }
        if mode == RoomMode::Mesh && matches!(msg, ClientMessage::Subscribe { .. }) {
            self.reply(
                conn,
                ServerMessage::error("sfu_not_sfu_room", "subscribe applies to SFU rooms only"),
            );
            return;
        }
        if mode == RoomMode::Sfu {
            self.effects.push(Effect::ToSfu {
                room: room_id,
                peer: from,
                msg,
            });
            return;
        }
        if let Some(s) = self.sessions.get_mut(&from) {
            s.received += 1;
        }
        let (target, out) = match msg {
            ClientMessage::Offer { target, offer } => (
                target,
                ServerMessage::Offer {
                    offer,
                    from: from.clone(),
                },
            ),
            ClientMessage::Answer { target, answer } => (
                target,
                ServerMessage::Answer {
                    answer,
                    from: from.clone(),
                },
            ),
            ClientMessage::IceCandidate { target, candidate } => (
                target,
                ServerMessage::IceCandidate {
                    candidate,
                    from: from.clone(),
                },
            ),
            ClientMessage::Bye { target } => (target, ServerMessage::Bye { from: from.clone() }),
            // Handled by the driver (join, rtt_report) or above.
            _ => return,
        };
        let in_room = target != from
            && self
                .rooms
                .get(&room_id)
                .is_some_and(|r| r.members.contains(&target));
        if !in_room {
            self.reply(
                conn,
                ServerMessage::error(
                    "unknown_target",
                    format!(
                        "no peer {:?} in your room",
                        target.chars().take(64).collect::<String>()
                    ),
                ),
            );
            return;
        }
        self.deliver(&target, Arc::new(out));
    }

    /// `conn` is gone (its transport already ended).
    pub fn disconnect(&mut self, conn: ConnId, how: Disconnect, now: Instant) {
        let Some(identity) = self.conns.remove(&conn) else {
            return;
        };
        match how {
            Disconnect::Lost => {
                if let Some(s) = self.sessions.get_mut(&identity) {
                    s.conn = None;
                    s.lost_since = Some(now);
                }
            }
            Disconnect::Clean | Disconnect::Fatal => self.end_session(&identity),
        }
    }

    /// Ends sessions whose resume grace has passed.
    pub fn tick(&mut self, now: Instant) {
        let grace = self.cfg.resume_grace;
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.lost_since.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_session(&id);
        }
    }

    /// Pushes a server-originated message to `identity`'s session (kept for resume).
    /// Returns how many sessions it reached (0 or 1).
    pub fn notify(&mut self, identity: &str, message: Value) -> usize {
        if !message.get("type").is_some_and(Value::is_string) {
            return 0;
        }
        usize::from(self.deliver(identity, Arc::new(ServerMessage::Raw(message))))
    }

    /// Sends a server-originated message (from the SFU) to a peer of a room.
    pub fn send_to_peer(&mut self, room: &str, peer: &str, msg: ServerMessage) -> bool {
        if self.sessions.get(peer).is_none_or(|s| s.room != room) {
            return false;
        }
        self.deliver(peer, Arc::new(msg))
    }

    fn end_session(&mut self, identity: &str) {
        let Some(s) = self.sessions.remove(identity) else {
            return;
        };
        self.ring_bytes -= s.ring.bytes();
        self.resume_tokens.remove(&s.resume_token);
        if let Some(c) = s.conn {
            self.conns.remove(&c);
        }
        let Some(room) = self.rooms.get_mut(&s.room) else {
            return;
        };
        room.members.retain(|m| m != identity);
        let others = room.members.clone();
        let mode = room.mode;
        if others.is_empty() {
            self.rooms.remove(&s.room);
        }
        if mode == RoomMode::Sfu {
            self.effects.push(Effect::SfuLeave {
                room: s.room.clone(),
                peer: identity.to_string(),
            });
        }
        let note = Arc::new(ServerMessage::PeerLeft {
            peer_id: identity.to_string(),
        });
        for p in others {
            self.deliver(&p, note.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub() -> Hub {
        Hub::new(HubConfig {
            max_room_peers: 3,
            resume_buffer: 4,
            ..Default::default()
        })
    }

    /// (conn, json) of every delivery, for assertions.
    fn sent(effects: &[Effect]) -> Vec<(ConnId, Value)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Deliver { conn, msg, seq } => {
                    Some((*conn, serde_json::from_str(&msg.to_json(*seq)).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn join(h: &mut Hub, conn: ConnId, id: &str, room: &str) -> Vec<(ConnId, Value)> {
        h.join(conn, id, room, None, None, JoinInfo::default())
            .unwrap();
        sent(&h.drain())
    }

    fn offer(to: &str, n: u64) -> ClientMessage {
        ClientMessage::Offer {
            target: to.into(),
            offer: json!({"type":"offer","sdp":n.to_string()}).into(),
        }
    }

    #[test]
    fn join_relay_leave() {
        let mut h = hub();
        let out = join(&mut h, 1, "a", "r");
        assert_eq!(out[0], (1, json!({"type":"room_peers","peers":[]})));
        assert_eq!(out[1].1["type"], "joined");
        assert_eq!(out[1].1["peer_id"], "a");
        let out = join(&mut h, 2, "b", "r");
        assert_eq!(out[0], (2, json!({"type":"room_peers","peers":["a"]})));
        assert_eq!(
            out[2],
            (1, json!({"type":"peer_joined","peer_id":"b","seq":1}))
        );
        h.message(2, offer("a", 1));
        let out = sent(&h.drain());
        assert_eq!(
            out,
            vec![(
                1,
                json!({"type":"offer","offer":{"type":"offer","sdp":"1"},"from":"b","seq":2})
            )]
        );
        h.message(1, ClientMessage::Leave);
        let out = sent(&h.drain());
        assert_eq!(
            out,
            vec![(2, json!({"type":"peer_left","peer_id":"a","seq":1}))]
        );
        h.disconnect(2, Disconnect::Clean, Instant::now());
        assert_eq!(h.stats().rooms, 0, "empty rooms are dropped");
    }

    #[test]
    fn refusals() {
        let mut h = hub();
        let i = JoinInfo::default();
        assert_eq!(
            h.join(1, "a", "r", Some("b"), None, i.clone()),
            Err(JoinError::ForbiddenPeerId)
        );
        assert_eq!(
            h.join(1, "a", "r", None, Some("other"), i.clone()),
            Err(JoinError::ForbiddenRoom)
        );
        join(&mut h, 1, "a", "r");
        assert_eq!(
            h.join(1, "a2", "r", None, None, i.clone()),
            Err(JoinError::AlreadyJoined)
        );
        join(&mut h, 2, "b", "r");
        join(&mut h, 3, "c", "r");
        assert_eq!(
            h.join(4, "d", "r", None, None, i.clone()),
            Err(JoinError::RoomFull)
        );
        h.message(1, offer("zz", 1));
        assert_eq!(sent(&h.drain())[0].1["code"], "unknown_target");
        h.message(1, offer("a", 1));
        assert_eq!(sent(&h.drain())[0].1["code"], "unknown_target", "self");
        h.message(9, offer("a", 1));
        assert_eq!(sent(&h.drain())[0].1["code"], "not_joined");
        join(&mut h, 5, "x", "elsewhere");
        h.message(5, offer("a", 1));
        assert_eq!(
            sent(&h.drain())[0].1["code"],
            "unknown_target",
            "other rooms are invisible"
        );
    }

    #[test]
    fn sfu_rooms_without_sfu_are_refused() {
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Sfu,
            ..Default::default()
        });
        assert_eq!(
            h.join(1, "a", "r", None, None, JoinInfo::default()),
            Err(JoinError::SfuUnavailable)
        );
    }

    #[test]
    fn auto_rooms_move_to_the_sfu_past_mesh_max_peers() {
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Auto { mesh_max_peers: 2 },
            sfu_available: true,
            ..Default::default()
        });
        let cap = |h: &mut Hub, conn, id| {
            let info = JoinInfo {
                sfu_capable: true,
                ..JoinInfo::default()
            };
            h.join(conn, id, "r", None, None, info).unwrap();
            sent(&h.drain())
        };
        assert_eq!(cap(&mut h, 1, "a")[1].1["mode"], "mesh");
        assert_eq!(cap(&mut h, 2, "b")[1].1["mode"], "mesh");
        h.message(
            1,
            ClientMessage::Subscribe {
                publisher: "b".into(),
                video: Some(false),
                max_layer: None,
            },
        );
        assert_eq!(sent(&h.drain())[0].1["code"], "sfu_not_sfu_room");
        let out = cap(&mut h, 3, "c");
        // The members hear mode_changed before peer_joined; the joiner is told in `joined`.
        let to_a: Vec<_> = out.iter().filter(|(c, _)| *c == 1).collect();
        assert_eq!(to_a[0].1["type"], "mode_changed");
        assert_eq!(to_a[0].1["mode"], "sfu");
        assert_eq!(to_a[1].1["type"], "peer_joined");
        let joined = out.iter().find(|(c, m)| *c == 3 && m["type"] == "joined");
        assert_eq!(joined.unwrap().1["mode"], "sfu");
        // From now on everything goes to the SFU, subscribe included.
        h.message(1, offer("$sfu", 1));
        h.message(
            2,
            ClientMessage::Subscribe {
                publisher: "a".into(),
                video: Some(false),
                max_layer: Some(0),
            },
        );
        let eff = h.drain();
        assert_eq!(
            eff.iter()
                .filter(|e| matches!(e, Effect::ToSfu { .. }))
                .count(),
            2
        );
        // A room never goes back to mesh while it has members.
        h.message(3, ClientMessage::Leave);
        h.message(2, ClientMessage::Leave);
        let eff = h.drain();
        assert!(eff.contains(&Effect::SfuLeave {
            room: "r".into(),
            peer: "c".into()
        }));
        assert_eq!(join(&mut h, 4, "d", "r")[1].1["mode"], "sfu");
    }

    #[test]
    fn auto_rooms_stay_mesh_while_a_member_cannot_use_the_sfu() {
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Auto { mesh_max_peers: 1 },
            sfu_available: true,
            ..Default::default()
        });
        let sdk = JoinInfo {
            sfu_capable: true,
            ..JoinInfo::default()
        };
        // The reference WebRTCClient does not announce `sfu_capable`: the room must stay mesh.
        h.join(1, "reference", "r", None, None, JoinInfo::default())
            .unwrap();
        h.drain();
        h.join(2, "sdk", "r", None, None, sdk.clone()).unwrap();
        let out = sent(&h.drain());
        assert!(out.iter().all(|(_, m)| m["type"] != "mode_changed"));
        assert_eq!(
            out.iter()
                .find(|(c, m)| *c == 2 && m["type"] == "joined")
                .unwrap()
                .1["mode"],
            "mesh"
        );
        // Once every member can, the next join switches.
        h.message(1, ClientMessage::Leave);
        h.drain();
        h.join(3, "sdk2", "r", None, None, sdk).unwrap();
        let out = sent(&h.drain());
        assert!(out
            .iter()
            .any(|(c, m)| *c == 2 && m["type"] == "mode_changed"));
    }

    #[test]
    fn a_creator_may_ask_for_sfu_under_auto_only() {
        let sfu = JoinInfo {
            requested_mode: Some(RoomMode::Sfu),
            ..JoinInfo::default()
        };
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Auto { mesh_max_peers: 4 },
            sfu_available: true,
            ..Default::default()
        });
        h.join(1, "a", "r", None, None, sfu.clone()).unwrap();
        assert_eq!(sent(&h.drain())[1].1["mode"], "sfu");
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Mesh,
            sfu_available: true,
            ..Default::default()
        });
        h.join(1, "a", "r", None, None, sfu.clone()).unwrap();
        assert_eq!(sent(&h.drain())[1].1["mode"], "mesh");
        let mut h = Hub::new(HubConfig {
            mode: ModePolicy::Auto { mesh_max_peers: 4 },
            ..Default::default()
        });
        assert_eq!(
            h.join(1, "a", "r", None, None, sfu),
            Err(JoinError::SfuUnavailable)
        );
    }

    #[test]
    fn same_identity_replaces() {
        let mut h = hub();
        join(&mut h, 1, "a", "r");
        join(&mut h, 2, "b", "r");
        h.join(3, "a", "r", None, None, JoinInfo::default())
            .unwrap();
        let eff = h.drain();
        assert!(eff.contains(&Effect::Close {
            conn: 1,
            code: close::REPLACED,
            reason: "replaced by a newer connection"
        }));
        let out = sent(&eff);
        assert_eq!(out[0].1["code"], "replaced");
        assert_eq!(
            out[1],
            (2, json!({"type":"peer_left","peer_id":"a","seq":1}))
        );
        assert_eq!(out[2].1["type"], "room_peers");
        assert_eq!(out[3].1["type"], "joined");
        assert_eq!(
            out[4],
            (2, json!({"type":"peer_joined","peer_id":"a","seq":2}))
        );
        assert_eq!(h.members("r"), vec!["b", "a"]);
    }

    fn token_of(out: &[(ConnId, Value)]) -> String {
        out.iter().find(|(_, v)| v["type"] == "joined").unwrap().1["resume_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn resume_replays_in_order_without_loss_or_duplicates() {
        let mut h = hub();
        let t0 = Instant::now();
        let tok = token_of(&join(&mut h, 1, "a", "r"));
        join(&mut h, 2, "b", "r");
        h.message(2, offer("a", 1)); // seq 2, seen by the client
        h.drain();
        h.message(2, offer("a", 2)); // seq 3, lost in flight
        h.drain();
        h.disconnect(1, Disconnect::Lost, t0);
        h.message(2, offer("a", 3)); // seq 4, buffered while detached
        assert!(sent(&h.drain()).is_empty());
        h.tick(t0 + Duration::from_secs(5));
        assert!(h.drain().is_empty(), "no peer_left within the grace period");
        let id = h.resume(7, &tok, 2, JoinInfo::default()).unwrap();
        assert_eq!(id, "a");
        let out = sent(&h.drain());
        assert_eq!(out[0].1["type"], "joined");
        assert_eq!(out[0].1["resumed"], true);
        let sdps: Vec<_> = out[1..]
            .iter()
            .map(|(c, v)| (*c, v["seq"].as_u64().unwrap(), v["offer"]["sdp"].clone()))
            .collect();
        assert_eq!(sdps, vec![(7, 3, json!("2")), (7, 4, json!("3"))]);
        assert!(
            h.resume(8, &tok, 2, JoinInfo::default()).is_err(),
            "resume tokens rotate"
        );
        h.message(7, offer("b", 9));
        assert_eq!(sent(&h.drain())[0].0, 2, "resumed peer can send");
    }

    #[test]
    fn lost_session_expires_with_peer_left() {
        let mut h = hub();
        let t0 = Instant::now();
        join(&mut h, 1, "a", "r");
        join(&mut h, 2, "b", "r");
        h.disconnect(1, Disconnect::Lost, t0);
        h.tick(t0 + Duration::from_secs(14));
        assert!(h.drain().is_empty());
        h.tick(t0 + Duration::from_secs(15));
        assert_eq!(
            sent(&h.drain()),
            vec![(2, json!({"type":"peer_left","peer_id":"a","seq":1}))]
        );
    }

    #[test]
    fn ring_overflow_while_detached_ends_the_session() {
        let mut h = hub();
        let tok = token_of(&join(&mut h, 1, "a", "r"));
        join(&mut h, 2, "b", "r");
        h.disconnect(1, Disconnect::Lost, Instant::now());
        for n in 0..5 {
            h.message(2, offer("a", n));
        }
        let out = sent(&h.drain());
        assert!(out.contains(&(2, json!({"type":"peer_left","peer_id":"a","seq":1}))));
        assert_eq!(h.overflowed_while_detached, 1);
        assert_eq!(
            h.resume(3, &tok, 0, JoinInfo::default()),
            Err(JoinError::UnknownResumeToken)
        );
    }

    #[test]
    fn resume_gap_is_refused() {
        let mut h = hub();
        let tok = token_of(&join(&mut h, 1, "a", "r"));
        join(&mut h, 2, "b", "r");
        for n in 0..6 {
            h.message(2, offer("a", n)); // attached: ring keeps the last 4
        }
        h.drain();
        h.disconnect(1, Disconnect::Lost, Instant::now());
        assert_eq!(
            h.resume(3, &tok, 1, JoinInfo::default()),
            Err(JoinError::ResumeGap)
        );
    }

    #[test]
    fn notify_reaches_live_sessions_only() {
        let mut h = hub();
        join(&mut h, 1, "a", "r");
        assert_eq!(h.notify("a", json!({"type":"stream_progress","i":1})), 1);
        assert_eq!(h.notify("nobody", json!({"type":"x"})), 0);
        assert_eq!(h.notify("a", json!([1])), 0, "must be a typed object");
        let out = sent(&h.drain());
        assert_eq!(
            out,
            vec![(1, json!({"type":"stream_progress","i":1,"seq":1}))]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Join(u8, u8, u8),
            Offer(u8, u8),
            Leave(u8),
            Lost(u8),
            Resume(u8),
            Tick(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..6u8, 0..4u8, 0..2u8).prop_map(|(c, i, r)| Op::Join(c, i, r)),
                (0..6u8, 0..4u8).prop_map(|(c, t)| Op::Offer(c, t)),
                (0..6u8).prop_map(Op::Leave),
                (0..6u8).prop_map(Op::Lost),
                (0..4u8).prop_map(Op::Resume),
                (0..20u8).prop_map(Op::Tick),
            ]
        }

        proptest! {
            /// Any sequence of inputs: no panic, every connection sees strictly increasing
            /// seqs, and rooms never list a peer twice.
            #[test]
            fn hub_invariants(ops in proptest::collection::vec(op(), 1..80)) {
                let mut h = Hub::new(HubConfig { resume_buffer: 3, max_room_peers: 3, ..Default::default() });
                let t0 = Instant::now();
                let mut now = t0;
                let mut tokens: HashMap<u8, String> = HashMap::new();
                let mut last: HashMap<ConnId, u64> = HashMap::new();
                let mut next_conn = 100u64;
                for o in ops {
                    match o {
                        Op::Join(c, i, r) => {
                            let _ = h.join(c as u64, &format!("id{i}"), &format!("r{r}"), None, None, JoinInfo::default());
                        }
                        Op::Offer(c, t) => h.message(c as u64, ClientMessage::Offer { target: format!("id{t}"), offer: Value::Null.into() }),
                        Op::Leave(c) => h.message(c as u64, ClientMessage::Leave),
                        Op::Lost(c) => h.disconnect(c as u64, Disconnect::Lost, now),
                        Op::Resume(i) => {
                            if let Some(tok) = tokens.get(&i).cloned() {
                                next_conn += 1;
                                let _ = h.resume(next_conn, &tok, 0, JoinInfo::default());
                            }
                        }
                        Op::Tick(s) => {
                            now += Duration::from_secs(s as u64);
                            h.tick(now);
                        }
                    }
                    let _ = h.stats(); // asserts the O(1) detached count in tests
                    for e in h.drain() {
                        if let Effect::Deliver { conn, msg, seq } = e {
                            if let ServerMessage::Joined { peer_id, resume_token, .. } = &*msg {
                                let i: u8 = peer_id[2..].parse().unwrap();
                                tokens.insert(i, resume_token.clone());
                                last.remove(&conn);
                            }
                            if let Some(q) = seq {
                                let prev = last.insert(conn, q).unwrap_or(0);
                                prop_assert!(q > prev, "seq went from {prev} to {q} on {conn}");
                            }
                        }
                    }
                    for r in ["r0", "r1"] {
                        let m = h.members(r);
                        let mut d = m.clone();
                        d.sort();
                        d.dedup();
                        prop_assert_eq!(d.len(), m.len());
                    }
                }
            }
        }
    }
}
