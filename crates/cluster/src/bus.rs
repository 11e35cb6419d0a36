//! Rooms that span nodes, on Redis: signaling's [`ClusterBus`].
//!
//! - **Membership** of a room is one hash, identity → node, changed only by Lua scripts that
//!   check the room size and announce the change to the nodes of the other members in the
//!   same atomic step (`PUBLISH` to each node's channel), so a node never misses a member
//!   that joined after it read the room.
//! - **Relays** to a member on another node are one `PUBLISH` to that node's channel. One task
//!   per node sends everything in the order signaling produced it, batched into pipelines, on
//!   one connection, so messages from one sender arrive in order.
//! - **Node loss**: a watcher compares the registry every heartbeat; a node gone from it is
//!   reported lost (its members wait out the resume grace), and once the grace has passed its
//!   memberships are removed with `reason: "node_lost"`.
//! - **Sessions** are recorded (identity → node, room, session id, resume token, relay count)
//!   so a client whose node died resumes on any other node.
//!
//! Keys (`<p>` is `[cluster] key_prefix`; `{h}` is a hash of the room name, so one room's keys
//! share a Redis Cluster slot): `<p>:room:{h}:<room>:m` members, `<p>:room:{h}:<room>:i` mode and
//! home node, `<p>:rooms:<node>` rooms a node has members in, `<p>:sess:<identity>` session
//! records, `<p>:tok:<resume token>` → identity. Channels: `<p>:to:<node>`.

use crate::registry::{NodeInfo, Registry};
use crate::shared::Shared;
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;
use prometheus_client::registry::Registry as Metrics;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_signal::cluster::{
    ClusterBus, ClusterJoinError, Inbound, JoinSpec, Outgoing, SessionRecord,
};
use switchboard_signal::hub::{ClusterView, RoomMode};
use switchboard_signal::protocol::NodeRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod metrics;
mod scripts;
mod wire;

use metrics::BusMetrics;
use scripts::{JOIN, LEAVE, REAP, REHOME};
use wire::{base36, lag_seconds, parse, start_ms};

/// Messages waiting for the sender task; past this the newest are refused and counted.
const QUEUE: usize = 65_536;
/// Most messages in one pipeline.
const BATCH: usize = 512;
/// How long session records outlive their last update.
const SESSION_TTL_SECS: u64 = 24 * 3600;

/// An outgoing message with the time it was queued.
type Queued = (Outgoing, Instant);

/// What the registry watcher knows.
#[derive(Default)]
struct Live {
    /// Live nodes (this one included) as they last described themselves.
    nodes: HashMap<String, NodeInfo>,
    /// Whether the registry has been read at least once.
    known: bool,
}

/// Signaling's cluster bus on Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    shared: Shared,
    registry: Registry,
    node: Arc<str>,
    tx: mpsc::Sender<Queued>,
    rx: Arc<Mutex<Option<mpsc::Receiver<Queued>>>>,
    live: Arc<Mutex<Live>>,
    metrics: BusMetrics,
    /// Makes message ids unique across nodes and restarts: `<node>~<start ms, base 36>`.
    mid_prefix: Arc<str>,
}

impl RedisBus {
    pub fn new(shared: Shared, registry: Registry, node: &str, metrics: &mut Metrics) -> RedisBus {
        let (tx, rx) = mpsc::channel(QUEUE);
        RedisBus {
            shared,
            registry,
            node: node.into(),
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            live: Arc::new(Mutex::new(Live::default())),
            metrics: BusMetrics::register(metrics),
            mid_prefix: format!("{node}~{}", base36(start_ms())).into(),
        }
    }

    fn room_keys(&self, room: &str) -> (String, String) {
        let h = Sha256::digest(room.as_bytes());
        let tag = format!("{{{}}}", hex::encode(&h[..8]));
        (
            self.shared.key(&["room", &tag, room, "m"]),
            self.shared.key(&["room", &tag, room, "i"]),
        )
    }

    fn channel_prefix(&self) -> String {
        self.shared.key(&["to", ""])
    }

    /// Starts the sender, the subscriber and the registry watcher. `inbound` receives what
    /// other nodes send; `grace` is signaling's resume grace (how long a dead node's members
    /// wait before they are removed); `every` is the registry's heartbeat.
    pub fn start(
        &self,
        inbound: Arc<dyn Fn(Inbound) + Send + Sync>,
        grace: Duration,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        if let Some(rx) = self.rx.lock().take() {
            tokio::spawn(self.clone().sender(rx, shutdown.clone()));
        }
        tokio::spawn(self.clone().subscriber(inbound.clone(), shutdown.clone()));
        tokio::spawn(self.clone().watcher(inbound, grace, every, shutdown));
    }

    /// Sends queued messages in order, as pipelines of up to [`BATCH`].
    async fn sender(self, mut rx: mpsc::Receiver<Queued>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let oldest = batch[0].1;
            let n = batch.len() as u64;
            let mut pipe = redis::pipe();
            for (out, _) in batch.drain(..) {
                self.add_to(&mut pipe, out);
            }
            match self.shared.call::<redis::Value>("publish", pipe).await {
                Ok(_) => self
                    .metrics
                    .publish_seconds
                    .observe(oldest.elapsed().as_secs_f64()),
                Err(e) => {
                    self.metrics.dropped.inc_by(n);
                    tracing::warn!(error = %e, messages = n, "messages for other nodes lost");
                }
            }
        }
    }

    fn add_to(&self, pipe: &mut redis::Pipeline, out: Outgoing) {
        let kind = match out {
            Outgoing::Forward {
                node,
                room,
                to,
                msg,
                mid,
            } => {
                let id = match mid {
                    Some(n) => format!(
                        r#","id":{}"#,
                        Value::String(format!("{}.{n}", self.mid_prefix))
                    ),
                    None => String::new(),
                };
                let frame = format!(
                    r#"{{"k":"m","ts":{},"r":{},"t":{}{id},"m":{}}}"#,
                    start_ms(),
                    Value::String(room),
                    Value::String(to),
                    msg.to_json(None)
                );
                pipe.cmd("PUBLISH")
                    .arg(self.shared.key(&["to", &node]))
                    .arg(frame)
                    .ignore();
                "message"
            }
            Outgoing::Notify { node, to, msg } => {
                let frame = json!({"k": "n", "t": to, "m": msg}).to_string();
                pipe.cmd("PUBLISH")
                    .arg(self.shared.key(&["to", &node]))
                    .arg(frame)
                    .ignore();
                "notify"
            }
            Outgoing::Leave { room, identity } => {
                let (m, i) = self.room_keys(&room);
                pipe.cmd("EVAL")
                    .arg(LEAVE)
                    .arg(2)
                    .arg(m)
                    .arg(i)
                    .arg(&identity)
                    .arg(&*self.node)
                    .arg(&room)
                    .arg(self.channel_prefix())
                    .arg("")
                    .ignore();
                pipe.cmd("DEL")
                    .arg(self.shared.key(&["sess", &identity]))
                    .ignore();
                "leave"
            }
            Outgoing::Session {
                identity,
                room,
                session_id,
                resume_token,
                received,
                sfu_capable,
            } => {
                let key = self.shared.key(&["sess", &identity]);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("node")
                    .arg(&*self.node)
                    .arg("room")
                    .arg(&room)
                    .arg("sid")
                    .arg(session_id)
                    .arg("tok")
                    .arg(&resume_token)
                    .arg("rcv")
                    .arg(received)
                    .arg("cap")
                    .arg(u8::from(sfu_capable))
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(SESSION_TTL_SECS)
                    .ignore()
                    .cmd("SET")
                    .arg(self.shared.key(&["tok", &resume_token]))
                    .arg(&identity)
                    .arg("EX")
                    .arg(SESSION_TTL_SECS)
                    .ignore()
                    .cmd("SADD")
                    .arg(self.shared.key(&["rooms", &self.node]))
                    .arg(&room)
                    .ignore();
                "session"
            }
            Outgoing::ToSfu {
                node,
                room,
                peer,
                msg,
            } => {
                let frame = json!({"k": "s", "r": room, "p": peer, "f": &*self.node, "m": msg});
                pipe.cmd("PUBLISH")
                    .arg(self.shared.key(&["to", &node]))
                    .arg(frame.to_string())
                    .ignore();
                "sfu"
            }
            Outgoing::SfuLeave { node, room, peer } => {
                let frame = json!({"k": "x", "r": room, "p": peer});
                pipe.cmd("PUBLISH")
                    .arg(self.shared.key(&["to", &node]))
                    .arg(frame.to_string())
                    .ignore();
                "sfu_leave"
            }
            Outgoing::Received { identity, received } => {
                pipe.cmd("HSET")
                    .arg(self.shared.key(&["sess", &identity]))
                    .arg("rcv")
                    .arg(received)
                    .ignore();
                "received"
            }
        };
        self.metrics.count_sent(kind);
    }

    /// Reads this node's channel; reconnects (and resubscribes) by itself.
    async fn subscriber(
        self,
        inbound: Arc<dyn Fn(Inbound) + Send + Sync>,
        stop: CancellationToken,
    ) {
        let channel = self.shared.key(&["to", &self.node]);
        let mut first = true;
        while !stop.is_cancelled() {
            let connected = tokio::time::timeout(Duration::from_secs(2), async {
                let mut ps = self.shared.client().get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            match connected {
                Ok(Ok(ps)) => {
                    if !first {
                        // What was announced while the subscription was down is lost, and
                        // Redis may have restarted empty: register and re-read.
                        tracing::info!("cluster subscription back; resynchronizing rooms");
                        inbound(Inbound::Resync);
                        // Members missing from the cluster's lists are gone only once every
                        // node had time to register its sessions again.
                        let (inbound, settle) = (inbound.clone(), self.settle());
                        tokio::spawn(async move {
                            tokio::time::sleep(settle).await;
                            inbound(Inbound::Reconcile);
                        });
                    }
                    first = false;
                    let mut stream = ps.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            m = stream.next() => m,
                            _ = stop.cancelled() => return,
                        };
                        let Some(msg) = msg else { break };
                        let bytes = msg.get_payload_bytes();
                        if let Some(lag) = lag_seconds(bytes) {
                            self.metrics.pubsub_lag_seconds.observe(lag);
                        }
                        if let Some(ev) = parse(bytes) {
                            let kind = match &ev {
                                Inbound::Joined { .. } => "join",
                                Inbound::Left { .. } => "leave",
                                Inbound::Notify { .. } => "notify",
                                Inbound::ToSfu { .. } | Inbound::SfuLeave { .. } => "sfu",
                                _ => "message",
                            };
                            self.metrics.count_received(kind);
                            inbound(ev);
                        }
                    }
                    tracing::warn!("cluster subscription lost; reconnecting");
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster subscription failed"),
                Err(_) => tracing::debug!("cluster subscription timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Every `every`: which nodes left the registry (lost), which came back, and which have
    /// been gone longer than `grace` (their memberships are removed).
    async fn watcher(
        self,
        inbound: Arc<dyn Fn(Inbound) + Send + Sync>,
        grace: Duration,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut lost: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            // Registry unreadable (Redis down): nobody is declared lost on that account.
            let Ok(nodes) = self.registry.nodes().await else {
                continue;
            };
            let now: HashMap<String, NodeInfo> =
                nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
            let before = {
                let mut live = self.live.lock();
                let before = std::mem::replace(&mut live.nodes, now.clone());
                let was_known = std::mem::replace(&mut live.known, true);
                if was_known {
                    before
                } else {
                    HashMap::new()
                }
            };
            for id in before.keys() {
                if !now.contains_key(id) && *id != *self.node && !lost.contains_key(id) {
                    tracing::warn!(node = %id, "node left the cluster without a goodbye");
                    self.metrics.failovers.inc();
                    lost.insert(id.clone(), Instant::now());
                    inbound(Inbound::NodeLost { node: id.clone() });
                }
            }
            for id in now.keys() {
                if lost.remove(id).is_some() {
                    inbound(Inbound::NodeBack { node: id.clone() });
                }
            }
            let expired: Vec<String> = lost
                .iter()
                .filter(|(_, t)| t.elapsed() >= grace)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                if self.reap(&id).await.is_ok() {
                    lost.remove(&id);
                }
            }
        }
    }

    /// Removes a dead node's memberships, announcing `peer_left{reason:"node_lost"}`.
    async fn reap(&self, dead: &str) -> Result<u64, crate::ClusterError> {
        let set = self.shared.key(&["rooms", dead]);
        let rooms: Vec<String> = self
            .shared
            .call("reap", redis::cmd("SMEMBERS").arg(&set).clone())
            .await?;
        let mut total = 0;
        for room in rooms {
            let (m, i) = self.room_keys(&room);
            let n: u64 = self
                .shared
                .call(
                    "reap",
                    redis::cmd("EVAL")
                        .arg(REAP)
                        .arg(2)
                        .arg(m)
                        .arg(i)
                        .arg(dead)
                        .arg(&room)
                        .arg(self.channel_prefix())
                        .clone(),
                )
                .await?;
            total += n;
        }
        self.shared
            .call::<()>("reap", redis::cmd("DEL").arg(&set).clone())
            .await?;
        tracing::info!(node = %dead, memberships = total, "removed a dead node's room memberships");
        Ok(total)
    }

    /// Where a new SFU room would be served: the live, not draining node with an SFU that has
    /// the fewest sessions (this node on a tie, or when no other is known); among the nodes of
    /// `region` when one of them qualifies.
    fn sfu_home(&self, region: Option<&str>) -> String {
        let live = self.live.lock();
        let able = |n: &&NodeInfo| n.sfu && !n.draining;
        let in_region = |n: &&NodeInfo| region.is_none_or(|r| n.region == r);
        let regional = live.nodes.values().filter(able).any(|n| in_region(&n));
        let mut best: Option<(&NodeInfo, bool)> = None;
        for n in live
            .nodes
            .values()
            .filter(able)
            .filter(|n| !regional || in_region(n))
        {
            let mine = n.id == *self.node;
            let better = match best {
                None => true,
                Some((b, b_mine)) => {
                    n.load.sessions < b.load.sessions
                        || (n.load.sessions == b.load.sessions && mine && !b_mine)
                }
            };
            if better {
                best = Some((n, mine));
            }
        }
        best.map_or_else(|| self.node.to_string(), |(n, _)| n.id.clone())
    }

    /// Whether a live, not draining node runs an SFU (an `auto` room can move to one).
    fn sfu_live(&self) -> bool {
        self.live
            .lock()
            .nodes
            .values()
            .any(|n| n.sfu && !n.draining)
    }

    /// How long after its subscription came back a node waits before it drops members the
    /// cluster no longer lists: every other node reconnects and registers its sessions again
    /// within a few heartbeats.
    fn settle(&self) -> Duration {
        self.registry.ttl() + Duration::from_millis(500)
    }

    /// Whether `node` is live as of the last registry read (unknown yet: assume it is).
    fn is_live(&self, node: &str) -> bool {
        let live = self.live.lock();
        !live.known || live.nodes.contains_key(node)
    }
}

impl ClusterBus for RedisBus {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn mid_prefix(&self) -> String {
        self.mid_prefix.to_string()
    }

    fn nodes(&self) -> Vec<NodeRef> {
        let live = self.live.lock();
        let node_ref = |(id, n): (&String, &NodeInfo)| NodeRef {
            id: id.clone(),
            url: n.url.clone(),
        };
        let mut nodes: Vec<NodeRef> = live
            .nodes
            .get_key_value(&*self.node)
            .map(node_ref)
            .into_iter()
            .collect();
        let mut others: Vec<NodeRef> = live
            .nodes
            .iter()
            .filter(|(id, n)| **id != *self.node && !n.draining)
            .map(node_ref)
            .collect();
        others.sort_by(|a, b| a.url.cmp(&b.url));
        nodes.extend(others);
        nodes
    }

    fn join(
        &self,
        spec: JoinSpec<'_>,
    ) -> BoxFuture<'static, Result<ClusterView, ClusterJoinError>> {
        let (m, i) = self.room_keys(spec.room);
        let me = self.clone();
        let home = match spec.home {
            Some(h) => h.to_string(),
            None => self.sfu_home(spec.region),
        };
        let mut join = redis::cmd("EVAL");
        join.arg(JOIN)
            .arg(2)
            .arg(m)
            .arg(i)
            .arg(spec.identity)
            .arg(&*self.node)
            .arg(spec.max_peers.min(i64::MAX as usize))
            .arg(spec.mode.as_str())
            .arg(spec.room)
            .arg(self.channel_prefix())
            .arg(
                spec.resumed_after
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .arg(home)
            .arg(match spec.sfu_capable {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            })
            .arg(match spec.auto_sfu_at {
                Some(n) if self.sfu_live() => n.to_string(),
                _ => String::new(),
            });
        Box::pin(async move {
            let out: Vec<String> = me
                .shared
                .call("join", join)
                .await
                .map_err(|e| ClusterJoinError::Unavailable(e.to_string()))?;
            match out.first().map(String::as_str) {
                Some("full") => Err(ClusterJoinError::RoomFull),
                Some("ok") if out.len() >= 3 => {
                    let mode = match out.get(1).map(String::as_str) {
                        Some("sfu") => RoomMode::Sfu,
                        _ => RoomMode::Mesh,
                    };
                    let home =
                        (mode == RoomMode::Sfu && out[2] != *me.node).then(|| out[2].clone());
                    // Members on this node are this node's own sessions (or being admitted
                    // here right now): never remote.
                    let members = out[3..]
                        .chunks_exact(2)
                        .filter(|p| p[1] != *me.node)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect();
                    Ok(ClusterView {
                        members,
                        mode: Some(mode),
                        home,
                    })
                }
                _ => Err(ClusterJoinError::Unavailable(
                    "unexpected answer from the join script".into(),
                )),
            }
        })
    }

    fn orphaned_session(&self, resume_token: &str) -> BoxFuture<'static, Option<SessionRecord>> {
        let me = self.clone();
        let tok = self.shared.key(&["tok", resume_token]);
        let token = resume_token.to_string();
        Box::pin(async move {
            let identity: Option<String> = me
                .shared
                .call("resume", redis::cmd("GET").arg(&tok).clone())
                .await
                .ok()?;
            let identity = identity?;
            let rec: HashMap<String, String> = me
                .shared
                .call(
                    "resume",
                    redis::cmd("HGETALL")
                        .arg(me.shared.key(&["sess", &identity]))
                        .clone(),
                )
                .await
                .ok()?;
            if rec.get("tok") != Some(&token)
                || rec.get("node").map(String::as_str) == Some(&me.node)
            {
                return None;
            }
            me.metrics.adopted.inc();
            Some(SessionRecord {
                identity,
                room: rec.get("room")?.clone(),
                session_id: rec.get("sid")?.clone(),
                received: rec.get("rcv").and_then(|r| r.parse().ok()).unwrap_or(0),
                sfu_capable: rec.get("cap").is_some_and(|c| c == "1"),
            })
        })
    }

    fn rehome(&self, room: &str, dead: &str) -> BoxFuture<'static, Option<String>> {
        let (_, info) = self.room_keys(room);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REHOME)
            .arg(1)
            .arg(info)
            .arg(dead)
            .arg(self.sfu_home(None));
        let me = self.clone();
        Box::pin(async move {
            let home: Option<String> = me.shared.call("rehome", cmd).await.ok()?;
            if home.is_some() {
                me.metrics.sfu_rooms_moved.inc();
            }
            home
        })
    }

    fn members(&self, room: &str) -> BoxFuture<'static, Option<Vec<(String, String)>>> {
        let (m, _) = self.room_keys(room);
        let me = self.clone();
        Box::pin(async move {
            let all: HashMap<String, String> = me
                .shared
                .call("members", redis::cmd("HGETALL").arg(m).clone())
                .await
                .ok()?;
            Some(all.into_iter().collect())
        })
    }

    fn locate(&self, identity: &str) -> BoxFuture<'static, Option<String>> {
        let me = self.clone();
        let key = self.shared.key(&["sess", identity]);
        Box::pin(async move {
            let node: Option<String> = me
                .shared
                .call("locate", redis::cmd("HGET").arg(key).arg("node").clone())
                .await
                .ok()?;
            node.filter(|n| *n != *me.node && me.is_live(n))
        })
    }

    fn send(&self, out: Outgoing) {
        if self.tx.try_send((out, Instant::now())).is_err() {
            self.metrics.dropped.inc();
        }
    }
}
