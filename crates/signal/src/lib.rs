//! Switchboard's signaling: the JSON dialect of the reference Python signaling server and its
//! WebRTCClient (`join`, `offer`, `answer`, `ice_candidate`, ...) over WebSocket
//! (`GET /v1/signal`) and the same messages over gRPC (`switchboard.signal.v1.Signal/Connect`),
//! sharing one set of rooms.
//!
//! Data flow: a transport ([`ws`], [`grpc`]) authenticates the ticket at the edge
//! (`TicketGate::open_session`, scope `webrtc`, `jti` consumed once), parses frames into
//! [`protocol::ClientMessage`]s and feeds them, with the time, to the sans-IO [`hub::Hub`]
//! behind one mutex. The hub answers with [`hub::Effect`]s; [`Signaling`] turns them into
//! entries on bounded per-connection send queues (a full queue closes that connection alone,
//! `slow_consumer`) or closes. Each transport's writer drains its queue to its socket.
//!
//! Limits (frame size, messages/s per connection, connections per IP, joins/s per IP, room
//! size, send queue, resume buffer) come from [`SignalSettings`], filled from `[limits]` and
//! `[sfu]` by the server.

pub mod cluster;
/// Harnesses for the fuzz targets (`fuzz/`) and their corpus replay; not in release builds.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod grpc;
pub mod hub;
pub mod metrics;
pub mod protocol;
mod ring;
pub mod sfu;
pub mod ws;

use cluster::{ClusterBus, Inbound, JoinSpec, Outgoing};
use hub::{ConnId, Disconnect, Effect, Hub, HubConfig, JoinError, JoinInfo, ModePolicy};
use metrics::SignalMetrics;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use protocol::{ClientMessage, ServerMessage};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::{KeyedRateLimiter, TicketGate};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use hub::RoomMode;

/// Close reason of connections a draining node moves to another node ([`Signaling::drain`]).
pub const DRAINING: &str = "draining: resume on another node";
pub use sfu::{NoSfu, SfuBridge};

/// Builds the `joined` message's ICE servers for an identity: the same document as
/// `GET /v1/ice-servers` (`{"iceServers":[...],"ttl":N}`), supplied by the server.
/// The second argument is the host the client used to reach the server (its HTTP `Host`),
/// when the transport knows it.
pub type IceServersProvider = Arc<dyn Fn(&str, Option<&str>) -> Value + Send + Sync>;

/// Every bound signaling enforces. The server fills it from `[limits]` and `[sfu]`.
#[derive(Debug, Clone)]
pub struct SignalSettings {
    /// Largest WebSocket frame/message (and gRPC message) accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Sustained client messages per second per connection (burst: twice this).
    pub messages_per_second: u32,
    /// Open signaling connections per client IP.
    pub connections_per_ip: usize,
    /// Open signaling connections on this node, all clients together.
    pub max_connections: usize,
    /// Joins per second per client IP (burst: twice this).
    pub joins_per_second_per_ip: u32,
    /// Messages queued for one connection before it is closed as a slow consumer.
    pub send_queue: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub send_queue_bytes: usize,
    /// Peers per room.
    pub max_room_peers: usize,
    /// Server ping interval (WebSocket ping frames).
    pub ping_interval: Duration,
    /// A connection silent for this long is dead (its session then waits `resume_grace`).
    pub idle_timeout: Duration,
    /// How long a lost session stays in its room waiting for a resume.
    pub resume_grace: Duration,
    /// Messages kept per session for resume.
    pub resume_buffer: usize,
    /// Bytes kept per session for resume.
    pub resume_buffer_bytes: usize,
    /// Bytes kept for resume by all sessions of the node together.
    pub resume_total_bytes: usize,
    /// How rooms pick their mode (`[sfu] mode` and `mesh_max_peers`).
    pub mode: ModePolicy,
    /// Cluster mode: how long messages forwarded to other nodes are kept to be sent again should
    /// that node turn out dead (at least the time the cluster takes to notice a death).
    pub forward_retention: Duration,
}

impl Default for SignalSettings {
    fn default() -> Self {
        SignalSettings {
            max_frame_bytes: 64 * 1024,
            messages_per_second: 100,
            connections_per_ip: 200,
            max_connections: 20_000,
            joins_per_second_per_ip: 20,
            send_queue: 256,
            send_queue_bytes: 2 * 1024 * 1024,
            max_room_peers: 50,
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            resume_grace: Duration::from_secs(15),
            resume_buffer: 256,
            resume_buffer_bytes: 1024 * 1024,
            resume_total_bytes: 256 * 1024 * 1024,
            mode: ModePolicy::Auto { mesh_max_peers: 4 },
            forward_retention: Duration::ZERO,
        }
    }
}

/// An entry on a connection's send queue. Its bytes count against the queue's byte bound
/// until the writer has sent it and drops it.
pub(crate) struct Outbound {
    pub msg: Arc<ServerMessage>,
    pub seq: Option<u64>,
    _queued: QueuedBytes,
}

/// Bytes of one queued message, taken off the connection's count when dropped.
struct QueuedBytes {
    count: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        self.count.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The driver's side of one connection.
struct ConnLink {
    tx: mpsc::Sender<Outbound>,
    /// Bytes on `tx` not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    kill: CancellationToken,
    close: Arc<Mutex<Option<(u16, &'static str)>>>,
}

impl ConnLink {
    /// Queues `msg` unless that would take the queue past `max_bytes` (one message alone may
    /// exceed it) or its message count is full.
    fn offer(
        &self,
        msg: Arc<ServerMessage>,
        seq: Option<u64>,
        max_bytes: usize,
    ) -> Result<(), mpsc::error::TrySendError<()>> {
        let bytes = msg.approx_bytes();
        let queued = self.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + bytes > max_bytes {
            return Err(mpsc::error::TrySendError::Full(()));
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        let entry = Outbound {
            msg,
            seq,
            _queued: QueuedBytes {
                count: self.queued.clone(),
                bytes,
            },
        };
        self.tx.try_send(entry).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
            mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
        })
    }
}

struct Core {
    hub: Hub,
    conns: HashMap<ConnId, ConnLink>,
    /// The hub's eviction counters as last exported to metrics.
    exported: (hub::Trims, u64),
}

pub(crate) struct Inner {
    core: Mutex<Core>,
    pub(crate) settings: SignalSettings,
    pub(crate) gate: Arc<TicketGate>,
    ice: IceServersProvider,
    pub(crate) metrics: SignalMetrics,
    pub(crate) shutdown: CancellationToken,
    joins_per_ip: KeyedRateLimiter<IpAddr>,
    open_conns: Mutex<OpenConns>,
    next_conn: AtomicU64,
    sfu: Arc<dyn SfuBridge>,
    /// Multi-node mode: the rest of the cluster.
    cluster: Option<Arc<dyn ClusterBus>>,
    /// Cluster mode: participants of this node's SFU whose sessions are on other nodes, by
    /// (room, identity): the node their SFU messages go back to.
    sfu_peers: Mutex<HashMap<(String, String), String>>,
}

/// Participants of this node's SFU from other nodes that are remembered at once (the SFU's own
/// `max_sessions` bounds how many take part).
const MAX_REMOTE_SFU_PEERS: usize = 100_000;

/// What a client is told when [`Inner::open`] refuses it with `code`.
pub(crate) fn open_refusal_message(code: &str) -> &'static str {
    if code == "server_full" {
        "this server has reached its signaling connection limit; try again later"
    } else {
        "too many signaling connections from your address"
    }
}

/// Open connections, per client IP and in all.
#[derive(Default)]
struct OpenConns {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Signaling for one node: owns the rooms; mount [`Signaling::router`].
#[derive(Clone)]
pub struct Signaling {
    inner: Arc<Inner>,
}

/// A cheap handle for other components to push messages to signaling sessions.
#[derive(Clone)]
pub struct SignalHandle {
    inner: Arc<Inner>,
}

impl SignalHandle {
    /// Pushes a server message (a JSON object with a string `type`, e.g.
    /// `{"type":"stream_progress",...}`) to `identity`'s live session. Returns how many
    /// sessions it reached (0 or 1; one session per identity).
    ///
    /// In a cluster, an identity whose session is on another node is reached there; that
    /// delivery happens after this call returns, which then counts 0.
    pub fn notify(&self, identity: &str, message: Value) -> usize {
        let (n, message) = match &self.inner.cluster {
            None => return self.inner.with_hub(|h| h.notify(identity, message)),
            Some(_) => self
                .inner
                .with_hub(|h| (h.notify(identity, message.clone()), message)),
        };
        if n == 0 && message.get("type").is_some_and(Value::is_string) {
            if let Some(bus) = self.inner.cluster.clone() {
                let to = identity.to_string();
                let located = bus.locate(identity);
                tokio::spawn(async move {
                    if let Some(node) = located.await {
                        bus.send(Outgoing::Notify {
                            node,
                            to,
                            msg: message,
                        });
                    }
                });
            }
        }
        n
    }

    /// Registers every session of this node with the cluster again and reconciles its view of
    /// their rooms (after the cluster connection was lost: Redis may have restarted empty, and
    /// announcements sent meanwhile were missed).
    async fn resync(&self, bus: Arc<dyn ClusterBus>) {
        let sessions = self.inner.with_hub(|h| {
            h.announce_all();
            h.local_sessions()
        });
        let me = bus.node_id().to_string();
        for (identity, room, mode, home) in sessions {
            let home = home.unwrap_or_else(|| me.clone());
            let spec = JoinSpec {
                room: &room,
                identity: &identity,
                mode,
                max_peers: usize::MAX,
                resumed_after: None,
                region: None,
                home: Some(&home),
            };
            if let Ok(view) = bus.join(spec).await {
                self.inner.with_hub(|h| h.sync_room(&room, view));
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
            Inbound::Message {
                room,
                to,
                mut msg,
                id,
            } => {
                if let (Some(id), Some(obj)) = (id, msg.as_object_mut()) {
                    obj.insert("mid".into(), Value::String(id));
                }
                let delivered = self
                    .inner
                    .with_hub(|h| h.remote_message(&room, &to, ServerMessage::Raw(msg)));
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
        }
    }

    /// For the SFU: sends `msg` (e.g. an offer or candidate from the SFU) to `peer` in `room`.
    /// In a cluster, a peer whose session is on another node is reached there.
    pub fn send_to_peer(&self, room: &str, peer: &str, msg: Value) -> bool {
        let key = (room.to_string(), peer.to_string());
        let remote = self.inner.sfu_peers.lock().get(&key).cloned();
        match (remote, &self.inner.cluster) {
            (Some(node), Some(bus)) => {
                self.inner.metrics.cluster_forwarded.inc();
                bus.send(Outgoing::Forward {
                    node,
                    room: key.0,
                    to: key.1,
                    msg: Arc::new(ServerMessage::Raw(msg)),
                    mid: None,
                });
                true
            }
            _ => self
                .inner
                .with_hub(|h| h.send_to_peer(room, peer, ServerMessage::Raw(msg))),
        }
    }

    /// Rooms and sessions on this node now.
    pub fn stats(&self) -> hub::HubStats {
        self.inner.with_hub(|h| h.stats())
    }

    /// Current number of joined sessions.
    pub fn sessions(&self) -> usize {
        self.inner.with_hub(|h| h.stats().sessions)
    }
}

impl Signaling {
    /// Builds signaling and registers its metrics. Spawns a 1 s housekeeping task (resume
    /// expiry, gauges) that stops when `shutdown` is cancelled; call from a tokio runtime.
    pub fn new(
        settings: SignalSettings,
        gate: Arc<TicketGate>,
        ice: IceServersProvider,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Signaling {
        Self::with_sfu(settings, gate, ice, registry, shutdown, Arc::new(NoSfu))
    }

    /// Like [`Signaling::new`], with an SFU for SFU-mode rooms.
    pub fn with_sfu(
        settings: SignalSettings,
        gate: Arc<TicketGate>,
        ice: IceServersProvider,
        registry: &mut Registry,
        shutdown: CancellationToken,
        sfu: Arc<dyn SfuBridge>,
    ) -> Signaling {
        Self::with_parts(settings, gate, ice, registry, shutdown, sfu, None)
    }

    /// Like [`Signaling::with_sfu`]; with `cluster`, rooms span the nodes of the cluster.
    pub fn with_parts(
        settings: SignalSettings,
        gate: Arc<TicketGate>,
        ice: IceServersProvider,
        registry: &mut Registry,
        shutdown: CancellationToken,
        sfu: Arc<dyn SfuBridge>,
        cluster: Option<Arc<dyn ClusterBus>>,
    ) -> Signaling {
        let metrics = SignalMetrics::register(registry);
        let hub = Hub::new(HubConfig {
            max_room_peers: settings.max_room_peers.max(1),
            resume_grace: settings.resume_grace,
            resume_buffer: settings.resume_buffer.max(1),
            resume_buffer_bytes: settings.resume_buffer_bytes,
            resume_total_bytes: settings.resume_total_bytes,
            mode: settings.mode,
            sfu_available: sfu.available(),
            clustered: cluster.is_some(),
            forward_retention: settings.forward_retention,
            mid_prefix: cluster.as_ref().map(|c| c.mid_prefix()).unwrap_or_default(),
        });
        let jps = settings.joins_per_second_per_ip.max(1);
        let inner = Arc::new(Inner {
            core: Mutex::new(Core {
                hub,
                conns: HashMap::new(),
                exported: Default::default(),
            }),
            joins_per_ip: KeyedRateLimiter::new(jps * 2, Duration::from_secs(2), 100_000),
            settings,
            gate,
            ice,
            metrics,
            shutdown: shutdown.clone(),
            open_conns: Mutex::new(OpenConns::default()),
            next_conn: AtomicU64::new(1),
            sfu,
            cluster,
            sfu_peers: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        // Housekeeping every second; in a cluster, sessions' relay counts are recorded every
        // 100 ms, so a session resumed on another node after its node died re-sends at most
        // the last 100 ms of relay messages (which its peers may then get twice).
        let clustered = inner.cluster.is_some();
        tokio::spawn(async move {
            let step = if clustered { 100 } else { 1000 };
            let mut every = tokio::time::interval(Duration::from_millis(step));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = every.tick() => {},
                    _ = shutdown.cancelled() => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                let housekeeping = n.is_multiple_of(1000 / step);
                n += 1;
                let received = inner.with_hub(|h| {
                    if housekeeping {
                        h.tick(Instant::now());
                    }
                    h.take_received()
                });
                if let Some(bus) = &inner.cluster {
                    for (identity, _, received) in received {
                        bus.send(Outgoing::Received { identity, received });
                    }
                }
            }
        });
        Signaling { inner }
    }

    /// Signaling connections open now (WebSocket and gRPC).
    pub fn open_connections(&self) -> usize {
        self.inner.open_conns.lock().total
    }

    /// Cluster mode, before the node stops: tells every joined client to move
    /// (`{"type":"reconnect","url":...,"reason":"draining"}`, the other live nodes in turn) and
    /// closes its connection with 1001, keeping its session for a resume; the client resumes on
    /// the named node, which takes the session over (and what it had not received). Returns how
    /// many clients were told; 0 without a cluster or another live node.
    pub fn drain(&self) -> usize {
        let Some(bus) = &self.inner.cluster else {
            return 0;
        };
        let others: Vec<String> = bus.node_urls().into_iter().skip(1).collect();
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
                "reason": "draining",
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

    pub fn handle(&self) -> SignalHandle {
        SignalHandle {
            inner: self.inner.clone(),
        }
    }

    /// `GET /v1/signal` (WebSocket) and `/switchboard.signal.v1.Signal/*` (gRPC).
    pub fn router(&self) -> axum::Router {
        ws::routes(self.inner.clone()).merge(grpc::routes(self.inner.clone()))
    }
}

/// A transport's view of its connection.
pub(crate) struct Conn {
    pub id: ConnId,
    pub kill: CancellationToken,
    pub close: Arc<Mutex<Option<(u16, &'static str)>>>,
    ip: IpAddr,
    transport: &'static str,
    /// This connection's own send queue, to see when it backs up.
    own: mpsc::WeakSender<Outbound>,
}

impl Conn {
    /// True when this connection's send queue is more than half full. Its reader then lets
    /// the writer run before handling more input: both may share one thread (the server's
    /// connection threads), and a burst of requests that each get a reply (errors, acks)
    /// must not overflow the queue — and close the connection as a slow consumer — only
    /// because the writer had no turn yet.
    pub fn backed_up(&self) -> bool {
        self.own
            .upgrade()
            .is_some_and(|tx| tx.capacity() * 2 < tx.max_capacity())
    }
}

/// Who opened a connection: from the verified ticket, or from a resume token.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub identity: Option<String>,
    pub room: Option<String>,
    /// The ticket's `region`: where SFU rooms this caller creates should be served.
    pub region: Option<String>,
    /// The host the client used to reach the server (HTTP `Host`), if known.
    pub host: Option<String>,
}

/// Per-connection state the transports keep outside the hub.
pub(crate) struct ConnState {
    pub caller: Caller,
    bucket: f64,
    last: Instant,
    pub violations: u32,
}

/// What a transport should do after handling one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Continue,
    Close(u16, &'static str),
}

impl Inner {
    fn with_hub<T>(&self, f: impl FnOnce(&mut Hub) -> T) -> T {
        let mut core = self.core.lock();
        let r = f(&mut core.hub);
        self.apply(&mut core);
        r
    }

    /// Turns the hub's effects into queue entries and closes. A full queue closes that
    /// connection alone; its session leaves, which may produce more effects.
    fn apply(&self, core: &mut Core) {
        loop {
            let effects = core.hub.drain();
            if effects.is_empty() {
                break;
            }
            for e in effects {
                match e {
                    Effect::Deliver { conn, msg, seq } => {
                        if let ServerMessage::Error { code, .. } = &*msg {
                            if let Some(c) = metrics::ERROR_CODES.iter().find(|c| **c == code) {
                                self.metrics.error(c);
                            }
                        }
                        let Some(link) = core.conns.get(&conn) else {
                            continue;
                        };
                        match link.offer(msg, seq, self.settings.send_queue_bytes) {
                            Ok(()) => {}
                            // The writer already ended (socket write failed) but the reader
                            // has not seen the end yet: the connection is lost, not slow;
                            // its session stays resumable (the message is in its ring).
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                self.kill(core, conn, 0, "dead");
                                core.hub.disconnect(conn, Disconnect::Lost, Instant::now());
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                self.metrics.close("slow_consumer");
                                self.kill(
                                    core,
                                    conn,
                                    hub::close::SLOW_CONSUMER,
                                    "slow consumer: send queue overflow",
                                );
                                core.hub.disconnect(conn, Disconnect::Fatal, Instant::now());
                            }
                        }
                    }
                    Effect::Close { conn, code, reason } => {
                        self.metrics.close(match code {
                            hub::close::REPLACED => "replaced",
                            _ => "resumed_elsewhere",
                        });
                        self.kill(core, conn, code, reason);
                    }
                    Effect::ToSfu {
                        room,
                        peer,
                        msg,
                        home: None,
                    } => self.sfu.handle(&room, &peer, msg),
                    Effect::SfuLeave {
                        room,
                        peer,
                        home: None,
                    } => self.sfu.leave(&room, &peer),
                    // The room's SFU runs on another node of the cluster.
                    Effect::ToSfu {
                        room,
                        peer,
                        msg,
                        home: Some(node),
                    } => {
                        if let Some(bus) = &self.cluster {
                            bus.send(Outgoing::ToSfu {
                                node,
                                room,
                                peer,
                                msg,
                            });
                        }
                    }
                    Effect::SfuLeave {
                        room,
                        peer,
                        home: Some(node),
                    } => {
                        if let Some(bus) = &self.cluster {
                            bus.send(Outgoing::SfuLeave { node, room, peer });
                        }
                    }
                    Effect::Forward {
                        node,
                        room,
                        to,
                        msg,
                        mid,
                    } => {
                        if let Some(bus) = &self.cluster {
                            self.metrics.cluster_forwarded.inc();
                            bus.send(Outgoing::Forward {
                                node,
                                room,
                                to,
                                msg,
                                mid,
                            });
                        }
                    }
                    Effect::ClusterLeave { room, identity } => {
                        if let Some(bus) = &self.cluster {
                            bus.send(Outgoing::Leave { room, identity });
                        }
                    }
                    Effect::ClusterSession {
                        identity,
                        room,
                        session_id,
                        resume_token,
                        received,
                    } => {
                        if let Some(bus) = &self.cluster {
                            bus.send(Outgoing::Session {
                                identity,
                                room,
                                session_id,
                                resume_token,
                                received,
                            });
                        }
                    }
                }
            }
        }
        let s = core.hub.stats();
        self.metrics.sessions.set(s.sessions as i64);
        self.metrics.detached.set(s.detached as i64);
        self.metrics.rooms.set(s.rooms as i64);
        self.metrics.resume_bytes.set(s.resume_bytes as i64);
        let now = (core.hub.trims, core.hub.overflowed_while_detached);
        if now != core.exported {
            let (was, was_overflows) = core.exported;
            for (bound, n) in [
                ("count", now.0.count - was.count),
                ("session_bytes", now.0.session_bytes - was.session_bytes),
                ("total_bytes", now.0.total_bytes - was.total_bytes),
            ] {
                if n > 0 {
                    self.metrics
                        .resume_evictions
                        .get_or_create(&[("bound", bound)])
                        .inc_by(n);
                }
            }
            self.metrics.resume_overflows.inc_by(now.1 - was_overflows);
            core.exported = now;
        }
    }

    fn kill(&self, core: &mut Core, conn: ConnId, code: u16, reason: &'static str) {
        if let Some(link) = core.conns.remove(&conn) {
            *link.close.lock() = Some((code, reason));
            link.kill.cancel();
        }
    }

    /// Admits a new connection from `ip` (connections-per-IP bound).
    pub(crate) fn open(
        &self,
        ip: IpAddr,
        transport: &'static str,
    ) -> Result<(Conn, mpsc::Receiver<Outbound>), &'static str> {
        {
            let mut open = self.open_conns.lock();
            if open.total >= self.settings.max_connections {
                self.metrics.error("server_full");
                return Err("server_full");
            }
            let n = open.per_ip.entry(ip).or_insert(0);
            if *n >= self.settings.connections_per_ip {
                self.metrics.error("too_many_connections");
                return Err("too_many_connections");
            }
            *n += 1;
            open.total += 1;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.settings.send_queue.max(1));
        let own = tx.downgrade();
        let kill = self.shutdown.child_token();
        let close = Arc::new(Mutex::new(None));
        self.core.lock().conns.insert(
            id,
            ConnLink {
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
                kill: kill.clone(),
                close: close.clone(),
            },
        );
        self.metrics
            .connections
            .get_or_create(&[("transport", transport)])
            .inc();
        Ok((
            Conn {
                id,
                kill,
                close,
                ip,
                transport,
                own,
            },
            rx,
        ))
    }

    /// The transport ended. `how` decides between leaving and waiting for a resume.
    pub(crate) fn closed(&self, conn: &Conn, how: Disconnect) {
        {
            let mut core = self.core.lock();
            core.conns.remove(&conn.id);
            core.hub.disconnect(conn.id, how, Instant::now());
            self.apply(&mut core);
        }
        let mut open = self.open_conns.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&conn.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_ip.remove(&conn.ip);
            }
        }
        self.metrics
            .connections
            .get_or_create(&[("transport", conn.transport)])
            .dec();
    }

    pub(crate) fn new_state(&self, caller: Caller) -> ConnState {
        ConnState {
            caller,
            bucket: f64::from(self.settings.messages_per_second.max(1)) * 2.0,
            last: Instant::now(),
            violations: 0,
        }
    }

    /// Queues an error for `conn` directly (outside the hub) and counts it.
    pub(crate) fn send_error(&self, conn: ConnId, code: &'static str, message: String) {
        self.metrics.error(code);
        let core = self.core.lock();
        if let Some(link) = core.conns.get(&conn) {
            let _ = link.offer(
                Arc::new(ServerMessage::error(code, message)),
                None,
                self.settings.send_queue_bytes,
            );
        }
    }

    fn ice_info(&self, identity: &str, host: Option<&str>) -> JoinInfo {
        let doc = (self.ice)(identity, host);
        JoinInfo {
            ice_servers: doc
                .get("iceServers")
                .cloned()
                .unwrap_or(Value::Array(vec![])),
            ice_ttl: doc.get("ttl").and_then(Value::as_u64).unwrap_or(0),
            requested_mode: None,
            sfu_capable: false,
            nodes: self
                .cluster
                .as_ref()
                .map(|c| c.node_urls())
                .unwrap_or_default(),
        }
    }

    /// Re-attaches a session with a resume token (the credential for a resumed connection).
    pub(crate) async fn resume(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        token: &str,
        last_seq: u64,
    ) -> bool {
        // ICE credentials are for the session's identity; look it up first.
        let info = match self.with_hub(|h| h.resume_identity(token)) {
            Some(id) => self.ice_info(&id, st.caller.host.as_deref()),
            None => {
                if let Some(bus) = self.cluster.clone() {
                    if let Some(rec) = bus.orphaned_session(token).await {
                        return self.adopt(conn, st, bus, rec, last_seq).await;
                    }
                }
                JoinInfo::default()
            }
        };
        let mut core = self.core.lock();
        let r = core.hub.resume(conn.id, token, last_seq, info);
        match r {
            Ok(identity) => {
                self.metrics
                    .resumes
                    .get_or_create(&[("result", "ok")])
                    .inc();
                st.caller.identity = Some(identity);
                self.apply(&mut core);
                true
            }
            Err(e) => {
                self.metrics
                    .resumes
                    .get_or_create(&[("result", e.code())])
                    .inc();
                self.apply(&mut core);
                drop(core);
                self.send_error(conn.id, e.code(), e.to_string());
                false
            }
        }
    }

    /// Resumes on this node a session whose node died: the cluster moves its membership here
    /// (the other nodes forward to it from now on), then the hub continues it.
    async fn adopt(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        bus: Arc<dyn ClusterBus>,
        rec: cluster::SessionRecord,
        last_seq: u64,
    ) -> bool {
        let info = self.ice_info(&rec.identity, st.caller.host.as_deref());
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
            })
            .await;
        let mut core = self.core.lock();
        core.hub.admitted(&rec.room);
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
    async fn join_clustered(
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
        let mode = match self.settings.mode {
            ModePolicy::Mesh => RoomMode::Mesh,
            ModePolicy::Sfu => RoomMode::Sfu,
            ModePolicy::Auto { .. } => info.requested_mode.unwrap_or(RoomMode::Mesh),
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
            })
            .await;
        let mut core = self.core.lock();
        core.hub.admitted(room_id);
        let r = match admitted {
            Ok(view) if core.conns.contains_key(&conn.id) => core
                .hub
                .join_checked(conn.id, identity, room_id, info, Some(view))
                .map_err(|e| (e.code(), e.to_string())),
            Ok(_) => Err(("closed", String::new())),
            Err(e) => Err((e.code(), e.to_string())),
        };
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

    /// Handles one parsed client message. Rate limits apply here, for every transport.
    pub(crate) async fn handle(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        msg: ClientMessage,
    ) -> Verdict {
        let now = Instant::now();
        let rate = f64::from(self.settings.messages_per_second.max(1));
        st.bucket = (st.bucket + now.duration_since(st.last).as_secs_f64() * rate).min(rate * 2.0);
        st.last = now;
        if st.bucket < 1.0 {
            st.violations += 1;
            if st.violations > 50 {
                self.metrics.close("rate_limited");
                return Verdict::Close(
                    hub::close::RATE_LIMITED,
                    "message rate limit exceeded repeatedly",
                );
            }
            self.send_error(
                conn.id,
                "rate_limited",
                format!(
                    "more than {} messages per second; message dropped",
                    rate as u32
                ),
            );
            return Verdict::Continue;
        }
        st.bucket -= 1.0;
        self.metrics
            .messages
            .get_or_create(&[("type", msg.kind())])
            .inc();
        match msg {
            ClientMessage::Join {
                room_id,
                peer_id,
                mode,
                sfu_capable,
            } => {
                let Some(identity) = st.caller.identity.clone() else {
                    self.send_error(
                        conn.id,
                        "not_joined",
                        "resumed connections cannot join".into(),
                    );
                    return Verdict::Continue;
                };
                if self.joins_per_ip.check(&conn.ip, now).is_err() {
                    self.send_error(
                        conn.id,
                        "join_rate_limited",
                        "too many joins from your address; retry shortly".into(),
                    );
                    return Verdict::Continue;
                }
                let mut info = self.ice_info(&identity, st.caller.host.as_deref());
                info.requested_mode = match mode.as_deref() {
                    Some("sfu") => Some(RoomMode::Sfu),
                    Some("mesh") => Some(RoomMode::Mesh),
                    _ => None,
                };
                info.sfu_capable = sfu_capable || info.requested_mode == Some(RoomMode::Sfu);
                if self.cluster.is_some() {
                    self.join_clustered(
                        conn,
                        &identity,
                        &room_id,
                        peer_id.as_deref(),
                        &st.caller.clone(),
                        info,
                    )
                    .await;
                    return Verdict::Continue;
                }
                let r = {
                    let mut core = self.core.lock();
                    let r = core.hub.join(
                        conn.id,
                        &identity,
                        &room_id,
                        peer_id.as_deref(),
                        st.caller.room.as_deref(),
                        info,
                    );
                    self.apply(&mut core);
                    r
                };
                if let Err(e) = r {
                    self.send_join_error(conn.id, e);
                }
            }
            ClientMessage::RttReport { rtt_ms } => {
                for ms in rtt_ms {
                    if ms.is_finite() && (0.0..=60_000.0).contains(&ms) {
                        self.metrics.client_rtt.observe(ms / 1000.0);
                    }
                }
            }
            other => self.with_hub(|h| h.message(conn.id, other)),
        }
        Verdict::Continue
    }

    fn send_join_error(&self, conn: ConnId, e: JoinError) {
        self.send_error(conn, e.code(), e.to_string());
    }
}
