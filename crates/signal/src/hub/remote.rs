//! Cluster mode: room members whose sessions live on other nodes.
//!
//! The cluster (Redis) is the source of truth for who is in a room and on which node; this
//! node keeps a view of the other nodes' members of the rooms it has sessions in, learned when
//! one of its sessions joins ([`ClusterView`]) and kept current by the cluster's join/leave
//! announcements. Relay messages to such a member become [`Effect::Forward`]s to its node.
//!
//! When a node dies its members are not dropped at once: they are *lost* for the resume grace,
//! messages to them are held here (bounded like a resume buffer), and if the member resumes on
//! another node the held messages follow it there, in order. Not back within the grace, it
//! leaves its rooms with `peer_left{reason:"node_lost"}`.
//!
//! Messages forwarded in the last `forward_retention` before a node is found dead may have died
//! with it. Each forwarded message carries an id (`relay_id`, unique per sending node) and is kept
//! that long; when the member resumes elsewhere they are sent again, and the client drops the
//! ones it already has by `relay_id` (the SDK does).

use super::*;
use std::collections::VecDeque;

/// What the cluster answered when it admitted a join.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The room's members on other nodes: `(identity, node id)`.
    pub members: Vec<(String, String)>,
    /// The room's mode as the cluster holds it (set by the join that created the room).
    pub mode: Option<RoomMode>,
    /// An SFU room served by another node: that node's id (`None`: this node's SFU).
    pub home: Option<String>,
}

/// A member of a room whose session is on another node.
pub(super) struct Remote {
    node: String,
    /// Set while its node is missing from the registry.
    lost_since: Option<Instant>,
    /// Messages for it while lost, in order, with their ids.
    held: VecDeque<(u64, Arc<ServerMessage>)>,
    held_bytes: usize,
    /// Messages forwarded within `forward_retention` (stamped with the hub's last tick), sent
    /// again should its node turn out dead.
    recent: VecDeque<(Instant, u64, Arc<ServerMessage>)>,
    recent_bytes: usize,
}

impl Remote {
    fn on(node: &str) -> Remote {
        Remote {
            node: node.to_string(),
            lost_since: None,
            held: VecDeque::new(),
            held_bytes: 0,
            recent: VecDeque::new(),
            recent_bytes: 0,
        }
    }

    /// Everything to send after a move: what was forwarded recently (it may have died with the
    /// old node), then what was held.
    fn take_all(&mut self) -> Vec<(u64, Arc<ServerMessage>)> {
        let mut out: Vec<_> = self.recent.drain(..).map(|(_, id, m)| (id, m)).collect();
        out.extend(self.held.drain(..));
        self.recent_bytes = 0;
        self.held_bytes = 0;
        out
    }
}

/// A session that another node now holds: what it hands over with it.
/// A session of this node as the cluster records it again after its connection came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    pub identity: String,
    pub room: String,
    pub mode: RoomMode,
    /// The node serving the room's SFU; `None`: this one (or a mesh room).
    pub home: Option<String>,
    pub sfu_capable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub identity: String,
    pub room: String,
    pub session_id: String,
}

impl Hub {
    /// A session of this node is being admitted to `room_id` by the cluster: until
    /// [`Hub::admitted`], announcements for the room are kept even with no session here yet.
    pub fn admitting(&mut self, room_id: &str) {
        *self.pending.entry(room_id.to_string()).or_insert(0) += 1;
    }

    /// The admission started by [`Hub::admitting`] is over (joined or refused).
    pub fn admitted(&mut self, room_id: &str) {
        // Messages that arrived for sessions admitted meanwhile: theirs now, in order.
        let arrived: Vec<(String, String)> = self
            .early
            .keys()
            .filter(|(r, to)| r == room_id && self.sessions.get(to).is_some_and(|s| s.room == *r))
            .cloned()
            .collect();
        for key in arrived {
            for msg in self.early.remove(&key).unwrap_or_default() {
                self.deliver(&key.1, msg);
            }
        }
        if let Some(n) = self.pending.get_mut(room_id) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(room_id);
                self.early.retain(|(r, _), _| r != room_id);
                if self
                    .rooms
                    .get(room_id)
                    .is_some_and(|r| r.local_count() == 0)
                {
                    self.rooms.remove(room_id);
                }
            }
        }
    }

    /// Adds the members the cluster reported for `room_id` to this node's view of it.
    pub(super) fn merge_remote(&mut self, room_id: &str, view: &ClusterView) {
        if let Some(mode) = view.mode {
            self.room_mode(room_id, mode, view.home.clone());
        }
        if view.members.is_empty() {
            return;
        }
        let sessions = &self.sessions;
        let room = self
            .rooms
            .entry(room_id.to_string())
            .or_insert_with(|| Room {
                members: Vec::new(),
                mode: view.mode.unwrap_or(RoomMode::Mesh),
                remote: HashMap::new(),
                home: view.home.clone(),
            });
        for (id, node) in &view.members {
            if sessions.get(id).is_some_and(|s| s.room == room_id) {
                continue;
            }
            match room.remote.get_mut(id) {
                Some(r) => r.node.clone_from(node),
                None => {
                    if !room.members.contains(id) {
                        room.members.push(id.clone());
                    }
                    room.remote.insert(id.clone(), Remote::on(node));
                }
            }
        }
    }

    /// Sends `msg` towards `to` when it is a member on another node (or holds it while that
    /// node is lost). False when `to` is not a remote member.
    pub(super) fn forward(&mut self, room_id: &str, to: &str, msg: Arc<ServerMessage>) -> bool {
        let (max_len, max_bytes) = (self.cfg.resume_buffer.max(1), self.cfg.resume_buffer_bytes);
        let Some(r) = self
            .rooms
            .get_mut(room_id)
            .and_then(|r| r.remote.get_mut(to))
        else {
            return false;
        };
        let mid = self.next_mid;
        self.next_mid += 1;
        let bytes = msg.approx_bytes();
        if r.lost_since.is_none() {
            if !self.cfg.forward_retention.is_zero() {
                if let Some(now) = self.clock {
                    r.recent_bytes += bytes;
                    r.recent.push_back((now, mid, msg.clone()));
                    while r.recent.len() > max_len || r.recent_bytes > max_bytes {
                        match r.recent.pop_front() {
                            Some((_, _, m)) => r.recent_bytes -= m.approx_bytes(),
                            None => break,
                        }
                    }
                }
            }
            self.effects.push(Effect::Forward {
                node: r.node.clone(),
                room: room_id.to_string(),
                to: to.to_string(),
                msg,
                mid: Some(mid),
            });
            return true;
        }
        if r.held.len() >= max_len || (r.held_bytes > 0 && r.held_bytes + bytes > max_bytes) {
            // Holding more would lose messages: for this room the peer is gone, and its
            // senders are told so rather than losing messages in silence.
            self.remote_gone(room_id, to, Some("node_lost"));
            return true;
        }
        r.held_bytes += bytes;
        r.held.push_back((mid, msg));
        true
    }

    /// Drops retained messages older than `forward_retention`; `now` is the hub's clock from
    /// here on (messages are stamped with it).
    pub(super) fn prune_recent(&mut self, now: Instant) {
        self.clock = Some(now);
        let keep = self.cfg.forward_retention;
        for room in self.rooms.values_mut() {
            for r in room.remote.values_mut() {
                if r.lost_since.is_some() {
                    continue;
                }
                while r
                    .recent
                    .front()
                    .is_some_and(|(t, _, _)| now.duration_since(*t) > keep)
                {
                    if let Some((_, _, m)) = r.recent.pop_front() {
                        r.recent_bytes -= m.approx_bytes();
                    }
                }
            }
        }
    }

    /// The cluster announced that `identity` joined `room_id` on `node`, or resumed there
    /// with `last_seq` = `resumed_after`.
    pub fn remote_joined(
        &mut self,
        room_id: &str,
        identity: &str,
        node: &str,
        resumed_after: Option<u64>,
    ) {
        // One session per identity across the cluster: the newer one, elsewhere, wins.
        if let Some(s) = self.sessions.get(identity) {
            if s.room == room_id {
                self.hand_off(identity, node, resumed_after);
            } else {
                self.replace_quietly(identity);
            }
        }
        if !self.rooms.contains_key(room_id) && self.pending.contains_key(room_id) {
            // A session here is being admitted to this room: keep what it must learn.
            self.rooms.insert(
                room_id.to_string(),
                Room {
                    members: Vec::new(),
                    mode: RoomMode::Mesh,
                    remote: HashMap::new(),
                    home: None,
                },
            );
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if let Some(r) = room.remote.get_mut(identity) {
            // It moved (resumed on another node) or was announced again. Moved: what was sent
            // to the old node recently may have died with it and goes again (the client drops
            // what it has by `relay_id`), then what was held.
            let moved = r.node != node;
            r.node = node.to_string();
            r.lost_since = None;
            let out = if moved {
                r.take_all()
            } else {
                r.held_bytes = 0;
                r.held.drain(..).collect()
            };
            for (mid, msg) in out {
                self.effects.push(Effect::Forward {
                    node: node.to_string(),
                    room: room_id.to_string(),
                    to: identity.to_string(),
                    msg,
                    mid: Some(mid),
                });
            }
            return;
        }
        room.remote.insert(identity.to_string(), Remote::on(node));
        if room.members.iter().any(|m| m == identity) {
            // Its session here was just handed off: the room saw no leave, so no join either.
            if room.local_count() == 0 && !self.pending.contains_key(room_id) {
                self.rooms.remove(room_id);
            }
            return;
        }
        room.members.push(identity.to_string());
        let locals = room.locals();
        let note = Arc::new(ServerMessage::PeerJoined {
            peer_id: identity.to_string(),
        });
        for m in locals {
            self.deliver(&m, note.clone());
        }
    }

    /// The cluster announced that `identity`, a member on `node`, left `room_id`.
    pub fn remote_left(&mut self, room_id: &str, identity: &str, node: &str, reason: Option<&str>) {
        let ours = self
            .rooms
            .get(room_id)
            .and_then(|r| r.remote.get(identity))
            .is_some_and(|r| r.node == node);
        if ours {
            let reason = reason.filter(|r| *r == "node_lost").map(|_| "node_lost");
            self.remote_gone(room_id, identity, reason);
        }
    }

    /// A message another node relays to `to`, a session of this node in `room_id`. False when
    /// no such session is here (it left, or moved on).
    ///
    /// A message for a session still being admitted here (a resume moving it from a dead node:
    /// the other nodes may forward to it as soon as the cluster records the move) is kept until
    /// the admission ends, bounded like a resume buffer.
    pub fn remote_message(&mut self, room_id: &str, to: &str, msg: ServerMessage) -> bool {
        if self.sessions.get(to).is_none_or(|s| s.room != room_id) {
            if !self.pending.contains_key(room_id) {
                return false;
            }
            let early = self
                .early
                .entry((room_id.to_string(), to.to_string()))
                .or_default();
            if early.len() >= self.cfg.resume_buffer.max(1) {
                return false;
            }
            early.push(Arc::new(msg));
            return true;
        }
        self.deliver(to, Arc::new(msg))
    }

    /// `node` is missing from the registry: its members are lost for the resume grace.
    pub fn node_lost(&mut self, node: &str, now: Instant) {
        for room in self.rooms.values_mut() {
            for r in room.remote.values_mut() {
                if r.node == node && r.lost_since.is_none() {
                    r.lost_since = Some(now);
                }
            }
        }
    }

    /// `node` is in the registry again (it was only late): what was held goes to it.
    pub fn node_back(&mut self, node: &str) {
        let mut out = Vec::new();
        for (room_id, room) in &mut self.rooms {
            for (id, r) in &mut room.remote {
                if r.node == node && r.lost_since.take().is_some() {
                    r.held_bytes = 0;
                    out.extend(
                        r.held
                            .drain(..)
                            .map(|(mid, msg)| (room_id.clone(), id.clone(), mid, msg)),
                    );
                }
            }
        }
        for (room, to, mid, msg) in out {
            self.effects.push(Effect::Forward {
                node: node.to_string(),
                room,
                to,
                msg,
                mid: Some(mid),
            });
        }
    }

    /// Remote members lost for longer than the resume grace leave their rooms.
    pub(super) fn expire_remote(&mut self, now: Instant) {
        let grace = self.cfg.resume_grace;
        let gone: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(room_id, room)| {
                room.remote
                    .iter()
                    .filter(|(_, r)| r.lost_since.is_some_and(|t| now.duration_since(t) >= grace))
                    .map(|(id, _)| (room_id.clone(), id.clone()))
            })
            .collect();
        for (room, id) in gone {
            self.remote_gone(&room, &id, Some("node_lost"));
        }
    }

    /// Removes a remote member from `room_id` and tells the room's sessions here.
    fn remote_gone(&mut self, room_id: &str, identity: &str, reason: Option<&'static str>) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.remote.remove(identity).is_none() {
            return;
        }
        room.members.retain(|m| m != identity);
        let locals = room.locals();
        if locals.is_empty() && !self.pending.contains_key(room_id) {
            self.rooms.remove(room_id);
        }
        let note = Arc::new(ServerMessage::PeerLeft {
            peer_id: identity.to_string(),
            reason,
        });
        for m in locals {
            self.deliver(&m, note.clone());
        }
    }

    /// `identity`'s session continues on `node`: it ends here without its room hearing of a
    /// leave (the member stays, now remote). A socket still open gets 4002. When it resumed
    /// there, what it had not received (after `resumed_after`) follows it, in order.
    fn hand_off(&mut self, identity: &str, node: &str, resumed_after: Option<u64>) {
        let Some(s) = self.sessions.remove(identity) else {
            return;
        };
        if let Some(last) = resumed_after {
            for e in s.ring.iter().filter(|e| e.seq > last) {
                self.effects.push(Effect::Forward {
                    node: node.to_string(),
                    room: s.room.clone(),
                    to: identity.to_string(),
                    msg: e.msg.clone(),
                    mid: None,
                });
            }
        }
        self.ring_bytes -= s.ring.bytes();
        self.resume_tokens.remove(&s.resume_token);
        if let Some(conn) = s.conn {
            self.conns.remove(&conn);
            self.effects.push(Effect::Close {
                conn,
                code: close::RESUMED_ELSEWHERE,
                reason: "session resumed on another node",
            });
        }
    }

    /// `identity` joined another room on another node: its session here ends as a replaced
    /// one does (its room hears `peer_left`).
    fn replace_quietly(&mut self, identity: &str) {
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
        self.end_session(identity);
    }

    /// Resumes on this node a session whose node died (cluster mode): the client's `last_seq`
    /// continues, `received` is what the cluster last recorded for it. The room hears nothing
    /// from here; the cluster's announcement of the move tells the other nodes.
    pub fn adopt(
        &mut self,
        conn: ConnId,
        session: Adopted,
        last_seq: u64,
        received: u64,
        info: JoinInfo,
        view: ClusterView,
    ) -> Result<(), JoinError> {
        if self.conns.contains_key(&conn) {
            return Err(JoinError::AlreadyJoined);
        }
        let Adopted {
            identity,
            room: room_id,
            session_id,
        } = session;
        if self.sessions.contains_key(&identity) {
            self.replace_quietly(&identity);
        }
        self.merge_remote(&room_id, &view);
        let mode = view.mode.unwrap_or(RoomMode::Mesh);
        let room = self.rooms.entry(room_id.clone()).or_insert_with(|| Room {
            members: Vec::new(),
            mode,
            remote: HashMap::new(),
            home: view.home.clone(),
        });
        // Messages this node forwarded or held for the member while it was elsewhere are now
        // its own to deliver (the ones it may have had already carry their `relay_id`).
        let was_remote = room.remote.remove(&identity);
        let known = was_remote.is_some() || room.members.contains(&identity);
        let pending = was_remote.map(|mut r| r.take_all()).unwrap_or_default();
        if !room.members.contains(&identity) {
            room.members.push(identity.clone());
        }
        let mode = room.mode;
        let locals: Vec<String> = room
            .members
            .iter()
            .filter(|m| !room.remote.contains_key(*m) && **m != identity)
            .cloned()
            .collect();
        let resume_token = random_hex(16);
        let joined = ServerMessage::Joined {
            peer_id: identity.clone(),
            room_id: room_id.clone(),
            session_id: session_id.clone(),
            resume_token: resume_token.clone(),
            ice_servers: info.ice_servers,
            ice_ttl: info.ice_ttl,
            mode: mode.as_str().into(),
            resumed: true,
            resume_grace: self.cfg.resume_grace.as_secs(),
            received,
            nodes: info.nodes,
        };
        self.sessions.insert(
            identity.clone(),
            Session {
                session_id,
                room: room_id.clone(),
                conn: Some(conn),
                next_seq: last_seq + 1,
                ring: Ring::default(),
                lost_since: None,
                resume_token: resume_token.clone(),
                received,
                sfu_capable: info.sfu_capable,
            },
        );
        self.resume_tokens.insert(resume_token, identity.clone());
        self.conns.insert(conn, identity.clone());
        self.reply(conn, joined);
        for (mid, msg) in pending {
            let msg = self.with_mid(&msg, mid);
            self.deliver(&identity, msg);
        }
        if !known {
            let note = Arc::new(ServerMessage::PeerJoined {
                peer_id: identity.clone(),
            });
            for m in locals {
                self.deliver(&m, note.clone());
            }
        }
        self.announce_session(&identity);
        Ok(())
    }

    /// `msg` as the client receives it from another node: with `"relay_id":"<prefix>.<mid>"`.
    fn with_mid(&self, msg: &ServerMessage, mid: u64) -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Relayed {
            relay_id: format!("{}.{mid}", self.cfg.mid_prefix),
            msg: Box::new(msg.clone()),
        })
    }

    /// Cluster mode: asks the driver to record `identity`'s session (for a resume on another
    /// node should this one die).
    pub(super) fn announce_session(&mut self, identity: &str) {
        if !self.cfg.clustered {
            return;
        }
        if let Some(s) = self.sessions.get(identity) {
            self.effects.push(Effect::ClusterSession {
                identity: identity.to_string(),
                room: s.room.clone(),
                session_id: s.session_id.clone(),
                resume_token: s.resume_token.clone(),
                received: s.received,
                sfu_capable: s.sfu_capable,
            });
        }
    }

    /// This node's sessions, with their rooms' mode and SFU node.
    pub fn local_sessions(&self) -> Vec<LocalSession> {
        self.sessions
            .iter()
            .map(|(id, s)| {
                let room = self.rooms.get(&s.room);
                LocalSession {
                    identity: id.clone(),
                    room: s.room.clone(),
                    mode: room.map_or(RoomMode::Mesh, |r| r.mode),
                    home: room.and_then(|r| r.home.clone()),
                    sfu_capable: s.sfu_capable,
                }
            })
            .collect()
    }

    /// Asks the driver to record every session of this node again.
    pub fn announce_all(&mut self) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.announce_session(&id);
        }
    }

    /// Adds to this node's view of `room_id` the members on other nodes it did not know
    /// (`peer_joined`) and their current nodes. (Members it knows that the cluster does not
    /// list are left to [`Hub::drop_missing`]: right after Redis restarted empty, the other
    /// nodes have not registered their sessions again yet.)
    ///
    /// An SFU room the cluster now has served by another node (it moved while this node could
    /// not reach the cluster: this node's lease on it, its registry entry, had expired) is
    /// handed over: [`Hub::rehomed`].
    pub fn sync_room(&mut self, room_id: &str, view: ClusterView) {
        if !self.rooms.contains_key(room_id) {
            return;
        }
        if let Some(mode) = view.mode {
            self.room_mode(room_id, mode, view.home.clone());
        }
        for (id, node) in &view.members {
            if self.sessions.get(id).is_some_and(|s| s.room == room_id) {
                continue;
            }
            self.remote_joined(room_id, id, node, None);
        }
    }

    /// Members on other nodes of `room_id` that the cluster no longer lists (`members`, read
    /// once every node had time to register its sessions again) left while this node was not
    /// listening: `peer_left`.
    pub fn drop_missing(&mut self, room_id: &str, members: &[(String, String)]) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let gone: Vec<String> = room
            .remote
            .keys()
            .filter(|id| !members.iter().any(|(m, _)| m == *id))
            .cloned()
            .collect();
        for id in gone {
            self.remote_gone(room_id, &id, None);
        }
    }

    /// SFU rooms with sessions here whose SFU runs on `node`.
    pub fn rooms_served_by(&self, node: &str) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.home.as_deref() == Some(node))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The cluster's mode for `room_id` and, for an SFU room, the node whose SFU serves it
    /// (`None`: this one). The cluster decides both: a room this node first heard of from
    /// another node's announcement only guessed them, and an `auto` room moves to the SFU on
    /// the join (on any node) that takes it past `mesh_max_peers`; its members here then hear
    /// `mode_changed` (before that joiner's `peer_joined`). A room never moves back to mesh.
    pub fn room_mode(&mut self, room_id: &str, mode: RoomMode, home: Option<String>) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        match (room.mode, mode) {
            (RoomMode::Mesh, RoomMode::Sfu) => {
                room.mode = RoomMode::Sfu;
                room.home = home;
                let note = Arc::new(ServerMessage::ModeChanged { mode: "sfu".into() });
                for m in room.locals() {
                    self.deliver(&m, note.clone());
                }
            }
            (RoomMode::Sfu, RoomMode::Sfu) if room.home != home => self.rehomed(room_id, home),
            _ => {}
        }
    }

    /// The SFU room `room_id` is served by another node's SFU now (`home`; `None`: this
    /// node's): its sessions here lost their SFU session and are told to start a new one
    /// (`sfu_closed`, reason `node_lost`), which the SDK does at once, republishing its tracks.
    /// When the room moves away from this node's SFU, that SFU stops serving it: every
    /// participant's session there ends.
    pub fn rehomed(&mut self, room_id: &str, home: Option<String>) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.home.is_none() && home.is_some() && room.mode == RoomMode::Sfu {
            for m in &room.members {
                self.effects.push(Effect::SfuLeave {
                    room: room_id.to_string(),
                    peer: m.clone(),
                    home: None,
                });
            }
        }
        room.home = home;
        let locals = room.locals();
        let note = Arc::new(ServerMessage::Raw(serde_json::json!({
            "type": "sfu_closed",
            "from": "$sfu",
            "reason": "node_lost",
        })));
        for m in locals {
            self.deliver(&m, note.clone());
        }
    }

    /// Sessions whose relay count (`received`) changed since the last call, for the
    /// cluster's session records: `(identity, resume token, received)`.
    pub fn take_received(&mut self) -> Vec<(String, String, u64)> {
        let dirty = std::mem::take(&mut self.received_dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                let s = self.sessions.get(&id)?;
                Some((id, s.resume_token.clone(), s.received))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
