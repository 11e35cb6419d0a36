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
mod multinode;
pub mod protocol;
mod ring;
mod session;
pub mod sfu;
pub mod ws;

use cluster::{ClusterBus, Outgoing};
use hub::{ConnId, Disconnect, Effect, Hub, HubConfig, ModePolicy};
use metrics::SignalMetrics;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use protocol::ServerMessage;
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
                        sfu_capable,
                    } => {
                        if let Some(bus) = &self.cluster {
                            bus.send(Outgoing::Session {
                                identity,
                                room,
                                session_id,
                                resume_token,
                                received,
                                sfu_capable,
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
}
