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
use std::time::Instant;

mod remote;
mod types;
use remote::Remote;
pub use remote::{Adopted, ClusterView, LocalSession};
pub use types::*;

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
    /// Identities in join order, this node's and other nodes' (cluster mode).
    members: Vec<String>,
    mode: RoomMode,
    /// Members whose sessions live on other nodes, by identity (cluster mode).
    remote: HashMap<String, Remote>,
    /// An SFU room served by another node's SFU: that node (cluster mode).
    home: Option<String>,
}

impl Room {
    /// Members with a session on this node.
    fn local_count(&self) -> usize {
        self.members.len() - self.remote.len()
    }

    /// The members with a session on this node, in join order.
    fn locals(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !self.remote.contains_key(*m))
            .cloned()
            .collect()
    }
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
    /// Cluster mode: sessions whose `received` changed since [`Hub::take_received`].
    received_dirty: std::collections::HashSet<String>,
    /// Cluster mode: rooms a session of this node is being admitted to, with a count.
    pending: HashMap<String, usize>,
    /// Cluster mode: messages from other nodes for sessions being admitted, by (room, identity).
    early: HashMap<(String, String), Vec<Arc<ServerMessage>>>,
    /// Cluster mode: id of the next message forwarded to another node.
    next_mid: u64,
    /// The time of the last [`Hub::tick`] (the hub has no clock of its own).
    clock: Option<Instant>,
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
            received_dirty: Default::default(),
            pending: HashMap::new(),
            early: HashMap::new(),
            next_mid: 1,
            clock: None,
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
        self.check_join(conn, identity, room_id, claimed_peer_id, token_room)?;
        self.join_checked(conn, identity, room_id, info, None)
    }

    /// The checks of a join that need no room state (done before the cluster admits it).
    pub fn check_join(
        &self,
        conn: ConnId,
        identity: &str,
        room_id: &str,
        claimed_peer_id: Option<&str>,
        token_room: Option<&str>,
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
        Ok(())
    }

    /// A join that passed [`Hub::check_join`]. In cluster mode `cluster` is what the cluster
    /// admitted it with: the room's members on other nodes and its mode; the room size was
    /// checked there, across the cluster.
    pub fn join_checked(
        &mut self,
        conn: ConnId,
        identity: &str,
        room_id: &str,
        info: JoinInfo,
        cluster: Option<ClusterView>,
    ) -> Result<(), JoinError> {
        if self.conns.contains_key(&conn) {
            return Err(JoinError::AlreadyJoined);
        }
        if let Some(view) = &cluster {
            self.merge_remote(room_id, view);
        }
        let existing = self.rooms.get(room_id);
        let count = existing.map_or(0, |r| r.members.len());
        let replacing_here = self
            .sessions
            .get(identity)
            .is_some_and(|s| s.room == room_id);
        if count >= self.cfg.max_room_peers && !replacing_here && cluster.is_none() {
            return Err(JoinError::RoomFull);
        }
        let forced = cluster.as_ref().and_then(|v| v.mode);
        let mode = match (existing, self.cfg.mode) {
            (Some(r), _) => r.mode,
            (None, _) if forced.is_some() => forced.unwrap_or(RoomMode::Mesh),
            (None, ModePolicy::Mesh) => RoomMode::Mesh,
            (None, ModePolicy::Sfu) => RoomMode::Sfu,
            (None, ModePolicy::Auto { .. }) => info.requested_mode.unwrap_or(RoomMode::Mesh),
        };
        let home = match (existing, &cluster) {
            (Some(r), _) => r.home.clone(),
            (None, Some(v)) => v.home.clone(),
            (None, None) => None,
        };
        if mode == RoomMode::Sfu && home.is_none() && !self.cfg.sfu_available {
            return Err(JoinError::SfuUnavailable);
        }
        // `auto`: the join that takes a mesh room past `mesh_max_peers` moves it to the SFU.
        // Members already in it hear `mode_changed` before `peer_joined`.
        let mode = match self.cfg.mode {
            // In a cluster the join script decides (its members may sit on several nodes, and
            // an SFU room lives on one): the view says so, see `Hub::room_mode`.
            ModePolicy::Auto { mesh_max_peers }
                if mode == RoomMode::Mesh
                    && cluster.is_none()
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
                remote: HashMap::new(),
                home,
            });
        // A member announced as remote is in fact this session (never expected: defensive).
        if room.remote.remove(identity).is_some() {
            room.members.retain(|m| m != identity);
        }
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
            nodes: info.nodes,
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
        self.announce_session(identity);
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
            nodes: info.nodes,
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
        self.announce_session(&identity);
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
            let home = self.rooms.get(&room_id).and_then(|r| r.home.clone());
            self.effects.push(Effect::ToSfu {
                room: room_id,
                peer: from,
                msg,
                home,
            });
            return;
        }
        if let Some(s) = self.sessions.get_mut(&from) {
            s.received += 1;
            if self.cfg.clustered && !self.received_dirty.contains(&from) {
                self.received_dirty.insert(from.clone());
            }
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
        let out = Arc::new(out);
        if in_room && self.forward(&room_id, &target, out.clone()) {
            return;
        }
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
        self.deliver(&target, out);
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
        self.expire_remote(now);
        self.prune_recent(now);
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
        let home = room.home.clone();
        if room.local_count() == 0 && !self.pending.contains_key(&s.room) {
            // No session of this node is left in it: other nodes stop telling this one about
            // the room, so its view of their members would go stale.
            self.rooms.remove(&s.room);
        }
        if self.cfg.clustered {
            self.effects.push(Effect::ClusterLeave {
                room: s.room.clone(),
                identity: identity.to_string(),
            });
        }
        if mode == RoomMode::Sfu {
            self.effects.push(Effect::SfuLeave {
                room: s.room.clone(),
                peer: identity.to_string(),
                home,
            });
        }
        let note = Arc::new(ServerMessage::PeerLeft {
            peer_id: identity.to_string(),
            reason: None,
        });
        for p in others {
            self.deliver(&p, note.clone());
        }
    }
}

#[cfg(test)]
mod tests;
