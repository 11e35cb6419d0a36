//! Signaling's side of multi-node mode: what other nodes send ([`SignalHandle::inbound`]), joins
//! and resumes the cluster must admit first, moving sessions off a draining node, and
//! re-registering with the cluster after its connection comes back.

use crate::cluster::{self, ClusterBus, Inbound, JoinSpec, Outgoing};
use crate::hub::{self, JoinError, JoinInfo, ModePolicy, RoomMode};
use crate::protocol::ServerMessage;
use crate::{Caller, Conn, ConnId, ConnState, Inner, SignalHandle, Signaling, DRAINING};
use std::sync::Arc;
use std::time::Instant;

/// Participants of this node's SFU from other nodes that are remembered at once (the SFU's own
/// `max_sessions` bounds how many take part).
const MAX_REMOTE_SFU_PEERS: usize = 100_000;

impl SignalHandle {
    /// Registers every session of this node with the cluster again and reconciles its view of
    /// their rooms (after the cluster connection was lost: Redis may have restarted empty, and
    /// announcements sent meanwhile were missed).
    pub(crate) async fn resync(&self, bus: Arc<dyn ClusterBus>) {
        let sessions = self.inner.with_hub(|h| {
            h.announce_all();
            h.local_sessions()
        });
        let me = bus.node_id().to_string();
        for s in sessions {
            let (room, identity) = (&s.room, &s.identity);
            let home = s.home.unwrap_or_else(|| me.clone());
            let spec = JoinSpec {
                room,
                identity,
                mode: s.mode,
                max_peers: usize::MAX,
                resumed_after: None,
                region: None,
                home: Some(&home),
                sfu_capable: Some(s.sfu_capable),
                auto_sfu_at: None,
            };
            if let Ok(view) = bus.join(spec).await {
                self.inner.with_hub(|h| h.sync_room(room, view));
            }
        }
    }

    /// What other nodes of the cluster sent this one.
    pub fn inbound(&self, ev: Inbound) {
        match ev {
            Inbound::Joined {
                room,
                identity,
                node,
                resumed_after,
            } => self
                .inner
                .with_hub(|h| h.remote_joined(&room, &identity, &node, resumed_after)),
            Inbound::Left {
                room,
                identity,
                node,
                reason,
            } => self
                .inner
                .with_hub(|h| h.remote_left(&room, &identity, &node, reason.as_deref())),
            Inbound::Message { room, to, msg } => {
                let delivered = self.inner.with_hub(|h| h.remote_message(&room, &to, msg));
                if !delivered {
                    self.inner.metrics.cluster_undeliverable.inc();
                }
            }
            Inbound::Notify { to, msg } => {
                self.inner.with_hub(|h| h.notify(&to, msg));
            }
            Inbound::ToSfu {
                room,
                peer,
                from,
                msg,
            } => {
                if !self.inner.sfu.available() {
                    return;
                }
                let key = (room, peer);
                {
                    let mut peers = self.inner.sfu_peers.lock();
                    if peers.len() >= MAX_REMOTE_SFU_PEERS && !peers.contains_key(&key) {
                        return;
                    }
                    peers.insert(key.clone(), from);
                }
                self.inner.sfu.handle(&key.0, &key.1, msg);
            }
            Inbound::Reconcile => {
                let Some(bus) = self.inner.cluster.clone() else {
                    return;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let mut rooms: Vec<String> = me
                        .inner
                        .with_hub(|h| h.local_sessions())
                        .into_iter()
                        .map(|s| s.room)
                        .collect();
                    rooms.sort();
                    rooms.dedup();
                    for room in rooms {
                        if let Some(members) = bus.members(&room).await {
                            me.inner.with_hub(|h| h.drop_missing(&room, &members));
                        }
                    }
                });
            }
            Inbound::Resync => {
                let Some(bus) = self.inner.cluster.clone() else {
                    return;
                };
                let me = self.clone();
                tokio::spawn(async move { me.resync(bus).await });
            }
            Inbound::SfuLeave { room, peer } => {
                let key = (room, peer);
                self.inner.sfu_peers.lock().remove(&key);
                self.inner.sfu.leave(&key.0, &key.1);
            }
            Inbound::NodeLost { node } => {
                let rooms = self.inner.with_hub(|h| {
                    h.node_lost(&node, Instant::now());
                    h.rooms_served_by(&node)
                });
                // SFU rooms served by the dead node move to another node's SFU.
                if let (Some(bus), false) = (self.inner.cluster.clone(), rooms.is_empty()) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        for room in rooms {
                            let Some(home) = bus.rehome(&room, &node).await else {
                                continue;
                            };
                            let home = (home != bus.node_id()).then_some(home);
                            me.inner.with_hub(|h| h.rehomed(&room, home));
                        }
                    });
                }
            }
            Inbound::NodeBack { node } => self.inner.with_hub(|h| h.node_back(&node)),
            Inbound::ModeChanged { room, mode, home } => {
                let mine = self
                    .inner
                    .cluster
                    .as_ref()
                    .is_some_and(|b| b.node_id() == home);
                let home = (!mine).then_some(home);
                self.inner.with_hub(|h| h.room_mode(&room, mode, home));
            }
        }
    }
}

impl Signaling {
    /// Cluster mode, before the node stops: tells every joined client to move
    /// (`{"type":"reconnect","url":...,"reason":"drain"}`, the other live nodes in turn) and
    /// closes its connection with 1001, keeping its session for a resume; the client resumes on
    /// the named node, which takes the session over (and what it had not received). Returns how
    /// many clients were told; 0 without a cluster or another live node.
    pub fn drain(&self) -> usize {
        let Some(bus) = &self.inner.cluster else {
            return 0;
        };
        let others: Vec<String> = bus.nodes().into_iter().skip(1).map(|n| n.url).collect();
        if others.is_empty() {
            return 0;
        }
        let mut core = self.inner.core.lock();
        let joined: Vec<ConnId> = core
            .conns
            .keys()
            .copied()
            .filter(|c| core.hub.identity_of(*c).is_some())
            .collect();
        for (i, conn) in joined.iter().enumerate() {
            let url = &others[i % others.len()];
            let msg = ServerMessage::Raw(serde_json::json!({
                "type": "reconnect",
                "url": url,
                "reason": "drain",
            }));
            if let Some(link) = core.conns.get(conn) {
                let _ = link.offer(Arc::new(msg), None, usize::MAX);
            }
            self.inner.metrics.close("draining");
            self.inner
                .kill(&mut core, *conn, hub::close::GOING_AWAY, DRAINING);
        }
        joined.len()
    }
}

impl Inner {
    /// Resumes on this node a session whose node died: the cluster moves its membership here
    /// (the other nodes forward to it from now on), then the hub continues it.
    pub(crate) async fn adopt(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        bus: Arc<dyn ClusterBus>,
        rec: cluster::SessionRecord,
        last_seq: u64,
    ) -> bool {
        let mut info = self.ice_info(&rec.identity, st.caller.host.as_deref());
        info.sfu_capable = rec.sfu_capable;
        self.with_hub(|h| h.admitting(&rec.room));
        let admitted = bus
            .join(JoinSpec {
                room: &rec.room,
                identity: &rec.identity,
                mode: RoomMode::Mesh,
                max_peers: self.settings.max_room_peers,
                resumed_after: Some(last_seq),
                region: None,
                home: None,
                sfu_capable: None,
                auto_sfu_at: None,
            })
            .await;
        let mut core = self.core.lock();
        let r = match admitted {
            Ok(view) if core.conns.contains_key(&conn.id) => {
                let session = hub::Adopted {
                    identity: rec.identity.clone(),
                    room: rec.room.clone(),
                    session_id: rec.session_id.clone(),
                };
                core.hub
                    .adopt(conn.id, session, last_seq, rec.received, info, view)
                    .map_err(|e| (e.code(), e.to_string()))
            }
            Ok(_) => Err(("closed", String::new())),
            Err(e) => Err((e.code(), e.to_string())),
        };
        core.hub.admitted(&rec.room);
        self.metrics
            .resumes
            .get_or_create(&[("result", if r.is_ok() { "adopted" } else { "adopt_failed" })])
            .inc();
        match r {
            Ok(()) => {
                st.caller.identity = Some(rec.identity);
                self.apply(&mut core);
                true
            }
            Err((code, message)) => {
                self.apply(&mut core);
                drop(core);
                if code == "closed" {
                    bus.send(Outgoing::Leave {
                        room: rec.room,
                        identity: rec.identity,
                    });
                } else {
                    self.send_error(conn.id, code, message);
                }
                false
            }
        }
    }

    /// A join in cluster mode: the cluster admits it (room size, cluster-wide), then the hub
    /// joins it with the room's members on other nodes.
    pub(crate) async fn join_clustered(
        &self,
        conn: &Conn,
        identity: &str,
        room_id: &str,
        claimed: Option<&str>,
        caller: &Caller,
        info: JoinInfo,
    ) {
        let token_room = caller.room.as_deref();
        let region = caller.region.as_deref();
        let Some(bus) = self.cluster.clone() else {
            return;
        };
        let checked = self.with_hub(|h| {
            h.check_join(conn.id, identity, room_id, claimed, token_room)?;
            h.admitting(room_id);
            Ok::<_, JoinError>(())
        });
        if let Err(e) = checked {
            return self.send_join_error(conn.id, e);
        }
        let (mode, auto_sfu_at) = match self.settings.mode {
            ModePolicy::Mesh => (RoomMode::Mesh, None),
            ModePolicy::Sfu => (RoomMode::Sfu, None),
            ModePolicy::Auto { mesh_max_peers } => (
                info.requested_mode.unwrap_or(RoomMode::Mesh),
                Some(mesh_max_peers),
            ),
        };
        let admitted = bus
            .join(JoinSpec {
                room: room_id,
                identity,
                mode,
                max_peers: self.settings.max_room_peers,
                resumed_after: None,
                region,
                home: None,
                sfu_capable: Some(info.sfu_capable),
                auto_sfu_at,
            })
            .await;
        let mut core = self.core.lock();
        let r = match admitted {
            Ok(view) if core.conns.contains_key(&conn.id) => core
                .hub
                .join_checked(conn.id, identity, room_id, info, Some(view))
                .map_err(|e| (e.code(), e.to_string())),
            Ok(_) => Err(("closed", String::new())),
            Err(e) => Err((e.code(), e.to_string())),
        };
        // Only now: until the session is in the room, announcements for the room are kept
        // (the room would otherwise be dropped as having no session here).
        core.hub.admitted(room_id);
        self.apply(&mut core);
        drop(core);
        match r {
            Ok(()) => {}
            // Admitted, but the connection ended meanwhile (or the hub refused): the
            // membership the cluster recorded ends too.
            Err((code, message)) => {
                if code != "room_full" && code != "cluster_unavailable" {
                    bus.send(Outgoing::Leave {
                        room: room_id.to_string(),
                        identity: identity.to_string(),
                    });
                }
                if code != "closed" {
                    self.send_error(conn.id, code, message);
                }
            }
        }
    }
}
