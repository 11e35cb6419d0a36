//! The I/O side: one UDP socket, one engine task that owns every `Rtc`, and the handles
//! signaling uses. The engine loop waits on (socket readable | command | earliest str0m timeout |
//! shutdown), feeds str0m, polls it, runs the room logic in [`crate::core`] on the events and
//! executes its actions. Datagrams come in `recvmmsg` batches and leave in `sendmmsg` batches
//! with UDP GSO runs (`switchboard_udp`); only sessions with input or a due timeout
//! ([`crate::timers::TimerQueue`]) are polled (decision 0046).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use switchboard_udp::{RecvBatch, SendBatch, BATCH};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::{Action, CoreTuning, Layer, ParticipantId, Rooms, TrackKey, TrackKind};
use crate::egress::{OwnCodec, OwnTrack, SessionEgress};
use crate::metrics::{KindLabel, LayerLabel, ReasonLabel, SfuMetrics};
use crate::tcp::TcpIn;
use crate::timers::TimerQueue;
use crate::wire::{self, DatagramKind};
use crate::{SfuConfig, SfuError};

/// Largest datagram we accept; anything this long or longer is treated as oversized.
const RECV_BUF: usize = 2048;
/// Receive batches (of up to [`switchboard_udp::BATCH`] datagrams) per wakeup before commands
/// and timers get a turn.
const RECV_BATCHES: usize = 8;
/// Queued outbound datagrams that force a flush in the middle of an engine turn (bounds memory
/// and the delay of the first datagram of a big fan-out).
const SEND_FLUSH_AT: usize = 64;
/// Due str0m timeouts handled inline per poll before the rest waits for the timer.
const DUE_ROUNDS: usize = 4;
/// Above this many bytes buffered in a DataChannel, queued messages wait in the core's bounded
/// queue instead (backpressure towards senders).
const CHANNEL_HIGH_WATER: usize = 256 * 1024;
const CHANNEL_LOW_WATER: usize = 64 * 1024;
/// Source addresses remembered per session (ICE candidate pairs); bounds what a flood of
/// STUN messages carrying a known ufrag can make us store.
const MAX_ADDRS: usize = 8;
/// How often the room logic's timers (keyframe retries, layer gauges) run.
const TICK: Duration = Duration::from_millis(100);

/// What a participant's signaling connection receives from the SFU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SfuEvent {
    /// Server-originated offer (tracks came or went); answer with
    /// [`ParticipantHandle::accept_answer`].
    Offer(String),
    /// ICE + DTLS are up.
    Connected,
    /// A down-track for `publisher`'s track is now in the session (m-line `mid`).
    TrackAdded {
        /// Publisher identity (also the MSID stream id in the SDP).
        publisher: String,
        /// Track id (also the MSID track id).
        track: String,
        /// m-line in this participant's session.
        mid: String,
        /// "audio" / "video".
        kind: &'static str,
    },
    /// The down-track on m-line `mid` ended (publisher left or stopped it).
    TrackEnded {
        /// Publisher identity.
        publisher: String,
        /// Track id.
        track: String,
        /// m-line in this participant's session.
        mid: String,
    },
    /// A DataChannel message the participant addressed to the server (`"to": "$server"`).
    Data {
        /// The sender (this participant).
        from: String,
        /// Its JSON payload, verbatim.
        data: String,
    },
    /// The session ended (ICE failure, error, shutdown); the handle is dead.
    Closed {
        /// Why.
        reason: &'static str,
    },
}

/// Resource counts, for tests and the leave/cleanup proof.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SfuCounts {
    /// Live sessions (= live `Rtc`s = armed str0m timers).
    pub sessions: usize,
    /// Rooms with members.
    pub rooms: usize,
    /// Published tracks.
    pub tracks: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// ufrag routes.
    pub ufrag_routes: usize,
    /// Source-address routes.
    pub addr_routes: usize,
    /// Identity index entries.
    pub identities: usize,
    /// Queued data bytes across participants.
    pub queued_bytes: usize,
    /// ICE-TCP connections the engine tracks.
    pub tcp_conns: usize,
}

enum Command {
    Join {
        id: ParticipantId,
        room: String,
        identity: String,
        events: mpsc::Sender<SfuEvent>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        id: ParticipantId,
        candidate: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Push {
        id: ParticipantId,
        topic: String,
        data: String,
        reliable: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Cap {
        id: ParticipantId,
        publisher: String,
        max_layer: u8,
        paused: bool,
    },
    Leave {
        id: ParticipantId,
    },
    Counts {
        reply: oneshot::Sender<SfuCounts>,
    },
}

/// A running SFU. Cheap to share behind an `Arc`; dropping it does not stop the engine
/// (cancel the token given to [`Sfu::start`]).
pub struct Sfu {
    cmd: mpsc::Sender<Command>,
    local: SocketAddr,
    local_tcp: Option<SocketAddr>,
    tcp_live: Arc<AtomicUsize>,
    next_id: AtomicU64,
    event_queue: usize,
    metrics: SfuMetrics,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Sfu {
    /// [`Sfu::start`], with the engine on its own OS thread (`sfu-engine`) running a
    /// single-threaded runtime: forwarding is not delayed by other work on the caller's
    /// runtime (HTTP, signaling), and the engine's wakeups stay on one thread. ICE-TCP
    /// connections are served on that thread too. The thread ends when `shutdown` is
    /// cancelled and the engine has closed every session.
    pub async fn start_on_thread(
        cfg: SfuConfig,
        metrics: SfuMetrics,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Sfu>, std::thread::JoinHandle<()>), SfuError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sfu-engine".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(SfuError::Config(format!("engine runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Sfu::start(cfg, metrics, shutdown).await {
                        Ok(sfu) => {
                            let sfu = Arc::new(sfu);
                            let task = sfu.task.lock().take();
                            if tx.send(Ok(sfu)).is_ok() {
                                if let Some(task) = task {
                                    let _ = task.await;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| SfuError::Config(format!("engine thread: {e}")))?;
        match rx.await {
            Ok(Ok(sfu)) => Ok((sfu, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SfuError::Stopped)
            }
        }
    }

    /// Binds `[sfu] bind_ip:udp_port` (and the ICE-TCP listener) and starts the engine task on
    /// the caller's runtime; it counts into `metrics` (see [`SfuMetrics::registered`]). The
    /// engine stops when `shutdown` is cancelled; every session then gets
    /// [`SfuEvent::Closed`].
    pub async fn start(
        cfg: SfuConfig,
        metrics: SfuMetrics,
        shutdown: CancellationToken,
    ) -> Result<Sfu, SfuError> {
        let bind_ip: IpAddr = cfg
            .bind_ip
            .parse()
            .map_err(|_| SfuError::Config(format!("bind_ip {:?}", cfg.bind_ip)))?;
        let public_ip: IpAddr = match &cfg.public_ip {
            Some(p) => p
                .parse()
                .map_err(|_| SfuError::Config(format!("public_ip {p:?}")))?,
            None if !bind_ip.is_unspecified() => bind_ip,
            None => default_route_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        match cfg.egress.as_str() {
            "str0m" | "auto" => {}
            "own" if cfg.bwe_initial_kbps == 0 => {}
            "own" => {
                return Err(SfuError::Config(
                    "egress = \"own\" sends without transport-wide sequence numbers; it needs bwe_initial_kbps = 0".into(),
                ))
            }
            e => {
                return Err(SfuError::Config(format!(
                    "egress {e:?}: expected \"auto\", \"own\" or \"str0m\""
                )))
            }
        }
        if cfg.max_sessions == 0 || cfg.event_queue == 0 {
            return Err(SfuError::Config(
                "max_sessions and event_queue must be > 0".into(),
            ));
        }
        let addr = SocketAddr::new(bind_ip, cfg.udp_port);
        let socket = bind_udp(addr).map_err(|source| SfuError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let bound = socket.local_addr().map_err(|source| SfuError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let local = SocketAddr::new(public_ip, bound.port());
        let (tcp_tx, tcp_rx) = mpsc::channel(1024);
        let tcp_live = Arc::new(AtomicUsize::new(0));
        let mut local_tcp = None;
        let mut bound_tcp = None;
        if cfg.ice_tcp {
            let taddr = SocketAddr::new(bind_ip, cfg.tcp_port);
            let listener = tokio::net::TcpListener::bind(taddr)
                .await
                .map_err(|source| SfuError::Bind {
                    addr: taddr.to_string(),
                    source,
                })?;
            let b = listener.local_addr().map_err(|source| SfuError::Bind {
                addr: taddr.to_string(),
                source,
            })?;
            bound_tcp = Some(b);
            local_tcp = Some(SocketAddr::new(public_ip, b.port()));
            tokio::spawn(crate::tcp::accept_loop(
                listener,
                tcp_tx.clone(),
                shutdown.clone(),
                cfg.max_sessions.saturating_mul(2),
                tcp_live.clone(),
            ));
        }
        drop(tcp_tx);
        let (tx, rx) = mpsc::channel(1024);
        let out = SendBatch::default();
        let gso = switchboard_udp::GSO.init(true);
        tracing::debug!(gso, "sfu udp send path");
        let engine = Engine {
            out,
            socket,
            local,
            local_tcp,
            tcp_conns: HashMap::new(),
            tcp_by_remote: HashMap::new(),
            cfg: cfg.clone(),
            rooms: Rooms::new(CoreTuning {
                data_queue_bytes: cfg.data_queue_bytes,
                ..CoreTuning::default()
            }),
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            by_identity: HashMap::new(),
            metrics: metrics.clone(),
            dirty: Vec::new(),
            renegotiate: HashSet::new(),
            route_buf: Vec::new(),
            events_buf: Vec::new(),
            timers: TimerQueue::new(),
            due_buf: Vec::new(),
            fwd_sent: Vec::new(),
            last_tick: Instant::now(),
            last_stats: crate::core::CoreStats::default(),
        };
        let task = tokio::spawn(engine.run(rx, tcp_rx, shutdown));
        Ok(Sfu {
            cmd: tx,
            local: bound,
            local_tcp: bound_tcp,
            tcp_live,
            next_id: AtomicU64::new(1),
            event_queue: cfg.event_queue,
            metrics,
            task: parking_lot::Mutex::new(Some(task)),
        })
    }

    /// The bound UDP address (for the `sfu_udp=` part of the listening line).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The bound ICE-TCP address (for the `sfu_tcp=` part of the listening line), if enabled.
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp
    }

    /// Open ICE-TCP connections (for tests and the cleanup proof).
    pub fn tcp_connections(&self) -> usize {
        self.tcp_live.load(Ordering::Relaxed)
    }

    /// Metrics handles (same objects as registered).
    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    /// Adds `identity` to `room`. A second join with the same identity in the same room replaces
    /// the first session (reconnect).
    pub async fn join(&self, room: &str, identity: &str) -> Result<ParticipantHandle, SfuError> {
        let id = ParticipantId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (etx, erx) = mpsc::channel(self.event_queue);
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Join {
                id,
                room: room.to_owned(),
                identity: identity.to_owned(),
                events: etx,
                reply,
            })
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)??;
        Ok(ParticipantHandle {
            id,
            cmd: self.cmd.clone(),
            events: Some(erx),
            left: false,
        })
    }

    /// Current resource counts.
    pub async fn counts(&self) -> Result<SfuCounts, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Counts { reply })
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)
    }

    /// Waits for the engine task to finish (after the shutdown token was cancelled).
    pub async fn stopped(&self) {
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// One participant's end of the SFU, held by its signaling connection. Dropping it leaves.
pub struct ParticipantHandle {
    id: ParticipantId,
    cmd: mpsc::Sender<Command>,
    events: Option<mpsc::Receiver<SfuEvent>>,
    left: bool,
}

impl ParticipantHandle {
    /// Applies the browser's offer (initial, renegotiation or ICE restart) and returns the answer
    /// SDP. If a server offer was outstanding, the server yields (it is the polite side) and
    /// re-offers its changes afterwards.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, SfuError> {
        self.request(|reply| Command::Offer {
            id: self.id,
            sdp: sdp.to_owned(),
            reply,
        })
        .await
    }

    /// Applies the browser's answer to the last [`SfuEvent::Offer`].
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), SfuError> {
        self.request(|reply| Command::Answer {
            id: self.id,
            sdp: sdp.to_owned(),
            reply,
        })
        .await
    }

    /// Adds a trickled remote candidate: either the SDP attribute value (`candidate:...`) or the
    /// browser's `RTCIceCandidateInit` JSON (`{"candidate": "candidate:...", ...}`). An empty
    /// candidate (end of candidates) is accepted and ignored.
    pub async fn add_remote_candidate(&self, candidate: &str) -> Result<(), SfuError> {
        self.request(|reply| Command::Candidate {
            id: self.id,
            candidate: candidate.to_owned(),
            reply,
        })
        .await
    }

    /// Pushes a server message to this participant's DataChannel as
    /// `{"from":"$server","topic":topic,"data":data}`. `data` must be JSON text. Fails with
    /// [`SfuError::Backpressure`] when the participant's bounded queue is full.
    pub async fn send_data(&self, topic: &str, data: &str, reliable: bool) -> Result<(), SfuError> {
        self.request(|reply| Command::Push {
            id: self.id,
            topic: topic.to_owned(),
            data: data.to_owned(),
            reliable,
            reply,
        })
        .await
    }

    /// Limits the simulcast layer this participant receives from `publisher`'s video tracks
    /// (0 = lowest; derive it from the rendered size) and pauses/resumes them (off-screen).
    pub async fn set_video_preference(
        &self,
        publisher: &str,
        max_layer: u8,
        paused: bool,
    ) -> Result<(), SfuError> {
        self.send(Command::Cap {
            id: self.id,
            publisher: publisher.to_owned(),
            max_layer,
            paused,
        })
        .await
    }

    /// Next event; `None` once the session is gone (or the stream was taken).
    pub async fn next_event(&mut self) -> Option<SfuEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Non-blocking variant of [`ParticipantHandle::next_event`].
    pub fn try_next_event(&mut self) -> Option<SfuEvent> {
        self.events.as_mut()?.try_recv().ok()
    }

    /// Takes the event stream so a separate task can forward it (e.g. to the signaling socket)
    /// while the handle stays with the room; later `next_event` calls return `None`.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<SfuEvent>> {
        self.events.take()
    }

    /// Leaves the room and frees the session, its tracks, subscriptions and queues.
    pub async fn leave(mut self) {
        self.left = true;
        let _ = self.cmd.send(Command::Leave { id: self.id }).await;
    }

    async fn send(&self, c: Command) -> Result<(), SfuError> {
        self.cmd.send(c).await.map_err(|_| SfuError::Stopped)
    }

    /// Sends the command built around a reply channel and waits for the engine's answer.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }
}

impl Drop for ParticipantHandle {
    fn drop(&mut self) {
        if !self.left {
            // Best effort: if the command queue is full the engine is overloaded; the session
            // still dies on its ICE timeout.
            let _ = self.cmd.try_send(Command::Leave { id: self.id });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownState {
    ToAdd,
    Offered,
    Open,
    ToRemove,
    RemoveOffered,
}

#[derive(Debug)]
struct DownTrack {
    kind: TrackKind,
    publisher: String,
    track_id: String,
    mid: Option<Mid>,
    state: DownState,
    /// Keeps the media time continuous across simulcast layer switches.
    retimer: crate::retime::Retimer,
    /// Which egress sends this down-track, decided at its first frame.
    path: Path,
}

/// Who sends a down-track's media (decision 0047).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Undecided,
    Str0m,
    /// Our own egress, on this SSRC.
    Own(u32),
}

#[derive(Debug)]
struct UpTrack {
    index: u32,
    kind: TrackKind,
    published: bool,
    rids: [Option<Rid>; 3],
}

struct Session {
    identity: String,
    room: String,
    rtc: Rtc,
    ufrag: String,
    old_ufrag: Option<String>,
    events: mpsc::Sender<SfuEvent>,
    addrs: Vec<SocketAddr>,
    up: HashMap<Mid, UpTrack>,
    next_up_index: u32,
    down: HashMap<TrackKey, DownTrack>,
    down_by_mid: HashMap<Mid, TrackKey>,
    pending: Option<SdpPendingOffer>,
    negotiated: bool,
    reliable_ch: Option<ChannelId>,
    lossy_ch: Option<ChannelId>,
    channels: HashMap<ChannelId, bool>,
    nacks_seen: HashMap<(Mid, Option<Rid>), u64>,
    dirty: bool,
    connected: bool,
    /// Media written into this session's `Rtc` and not yet polled out: earliest arrival, units.
    fwd_since: Option<(Instant, u32)>,
    /// Our own egress (`[sfu] egress = "own"`).
    egress: Option<SessionEgress>,
    /// Where str0m last sent this session's datagrams: the own egress sends there too.
    dest: Option<(Protocol, SocketAddr)>,
}

struct TcpConn {
    remote: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
    session: Option<ParticipantId>,
    opened: Instant,
}

/// A TCP connection that has not carried a valid check for a session by then is closed.
const TCP_UNBOUND_TIMEOUT: Duration = Duration::from_secs(10);

struct Engine {
    /// Outbound datagrams of the current engine turn, flushed with `sendmmsg` (+ GSO).
    out: SendBatch,
    socket: UdpSocket,
    local: SocketAddr,
    local_tcp: Option<SocketAddr>,
    tcp_conns: HashMap<u64, TcpConn>,
    tcp_by_remote: HashMap<SocketAddr, u64>,
    cfg: SfuConfig,
    rooms: Rooms,
    sessions: HashMap<ParticipantId, Session>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    by_identity: HashMap<(String, String), ParticipantId>,
    metrics: SfuMetrics,
    dirty: Vec<ParticipantId>,
    renegotiate: HashSet<ParticipantId>,
    route_buf: Vec<ParticipantId>,
    /// Reused between polls (no allocation per session poll).
    events_buf: Vec<Event>,
    /// Each session's next str0m timeout.
    timers: TimerQueue<ParticipantId>,
    due_buf: Vec<ParticipantId>,
    /// Per polled subscriber: earliest arrival of the media it was handed and how many units,
    /// observed as forwarding latency at the next send.
    fwd_sent: Vec<(Instant, u32)>,
    last_tick: Instant,
    last_stats: crate::core::CoreStats,
}

/// Binds the shared media socket with large kernel buffers: every session's media crosses it,
/// and bursts (keyframes fanned out to many subscribers) must not overflow the default ~200 kB.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    // Kernel receive times: the forwarding latency counts from there (see `drain_socket`).
    if !switchboard_udp::enable_rx_timestamps(&sock) {
        tracing::debug!("SO_TIMESTAMPNS refused; forwarding latency counts from the read");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// One `recvmmsg` through tokio's readiness. A batch shorter than [`BATCH`] means the socket
/// queue was empty when the kernel returned, so readiness is cleared at once (as if the next read
/// had returned `WouldBlock`), saving an empty `recvmmsg` per wakeup; tokio keeps readiness if a
/// new event arrived meanwhile, so no datagram is stranded. Returns the count received.
fn recv_batch(sock: &UdpSocket, rx: &mut RecvBatch) -> std::io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, || {
        got = rx.recv(sock)?;
        if got < BATCH {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(got),
        Err(e) => Err(e),
    }
}

fn default_route_ip() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only asks the kernel for the source address.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn kind_label(k: TrackKind) -> &'static str {
    match k {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

fn drop_reason(m: &SfuMetrics, reason: &'static str) {
    m.datagrams_dropped
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

impl Engine {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut tcp_rx: mpsc::Receiver<TcpIn>,
        shutdown: CancellationToken,
    ) {
        let mut rx_batch = RecvBatch::with_timestamps();
        let mut tcp_open = self.local_tcp.is_some();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = self.socket.readable() => {
                    if r.is_err() {
                        break;
                    }
                    self.drain_socket(&mut rx_batch);
                }
                c = rx.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                t = tcp_rx.recv(), if tcp_open => match t {
                    Some(t) => self.tcp_input(t),
                    None => tcp_open = false,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.timeouts(Instant::now());
            self.settle();
            self.flush_out();
        }
        let ids: Vec<ParticipantId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(id, "shutdown");
        }
        self.flush_out();
        for (_, c) in self.tcp_conns.drain() {
            c.cancel.cancel();
        }
    }

    fn tcp_input(&mut self, t: TcpIn) {
        match t {
            TcpIn::Open {
                conn,
                remote,
                tx,
                cancel,
            } => {
                self.tcp_by_remote.insert(remote, conn);
                self.tcp_conns.insert(
                    conn,
                    TcpConn {
                        remote,
                        tx,
                        cancel,
                        session: None,
                        opened: Instant::now(),
                    },
                );
            }
            TcpIn::Closed { conn } => {
                if let Some(c) = self.tcp_conns.remove(&conn) {
                    if self.tcp_by_remote.get(&c.remote) == Some(&conn) {
                        self.tcp_by_remote.remove(&c.remote);
                    }
                }
            }
            TcpIn::Frame { conn, data } => self.tcp_frame(conn, &data),
        }
    }

    fn tcp_frame(&mut self, conn: u64, data: &[u8]) {
        let Some(local) = self.local_tcp else {
            return;
        };
        let Some(c) = self.tcp_conns.get_mut(&conn) else {
            return;
        };
        let kind = wire::classify(data);
        let id = match (kind, c.session) {
            (DatagramKind::Unknown, _) => {
                drop_reason(&self.metrics, "unknown_kind");
                return;
            }
            (DatagramKind::Stun, bound) => {
                let Some(id) = wire::stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u))
                else {
                    drop_reason(&self.metrics, "unknown_ufrag");
                    return;
                };
                if bound.is_some_and(|b| b != *id) {
                    drop_reason(&self.metrics, "tcp_session_mismatch");
                    return;
                }
                *id
            }
            (_, Some(id)) => id,
            (_, None) => {
                drop_reason(&self.metrics, "unknown_source");
                return;
            }
        };
        let remote = c.remote;
        let Ok(recv) = Receive::new(Protocol::Tcp, remote, local, data) else {
            drop_reason(&self.metrics, "malformed");
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let input = Input::Receive(Instant::now(), recv);
        if !s.rtc.accepts(&input) {
            drop_reason(&self.metrics, "not_accepted");
            return;
        }
        if s.rtc.handle_input(input).is_err() {
            drop_reason(&self.metrics, "rtc_error");
        }
        if kind == DatagramKind::Rtp {
            let tx = &c.tx;
            egress_nacks(s, data, Instant::now(), &self.metrics, |b| {
                let _ = tx.try_send(b.to_vec());
            });
        }
        c.session = Some(id);
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    fn next_deadline(&mut self) -> Instant {
        let tick = self.last_tick + TICK;
        if !self.dirty.is_empty() || !self.renegotiate.is_empty() {
            // The last turn stopped at its round limit: continue right away.
            return self.last_tick.min(Instant::now());
        }
        self.timers.next_deadline().map_or(tick, |t| t.min(tick))
    }

    /// Reads what the socket holds, in `recvmmsg` batches, and feeds every datagram to its
    /// session before anything is polled: one wakeup handles many packets, and sessions are
    /// polled once per batch instead of once per datagram. Bounded so commands and timers are
    /// not starved under flood.
    fn drain_socket(&mut self, rx: &mut RecvBatch) {
        for _ in 0..RECV_BATCHES {
            let n = match recv_batch(&self.socket, rx) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    // ICMP errors surface as recv errors on some platforms; keep going.
                    drop_reason(&self.metrics, "recv_error");
                    break;
                }
            };
            self.metrics.datagrams_received.inc_by(n as u64);
            let now = Instant::now();
            let wall = switchboard_udp::wall_clock();
            for i in 0..n {
                let (data, src, truncated) = rx.get(i);
                let Some(src) = src else {
                    drop_reason(&self.metrics, "unknown_source");
                    continue;
                };
                // str0m gets the kernel's receive time, so a frame's `network_time` (where the
                // forwarding latency starts) includes the time it waited in the socket queue.
                let stamp = rx.timestamp(i);
                let at = switchboard_udp::arrival(now, wall, stamp);
                if stamp.is_some() {
                    let queued = now.saturating_duration_since(at);
                    self.metrics.receive_queue.observe(queued.as_secs_f64());
                }
                self.datagram(at, src, data, truncated || data.len() >= RECV_BUF);
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Sends the datagrams queued during this turn.
    fn flush_out(&mut self) {
        let queued = self.out.len();
        if queued == 0 {
            return;
        }
        let dropped = self.out.flush(&self.socket).dropped;
        // Forwarding latency per (media unit, subscriber): arrival of the unit's first datagram
        // (the kernel's receive time, UDP) to this send of the subscriber's packets.
        if !self.fwd_sent.is_empty() {
            let now = Instant::now();
            for (t, units) in self.fwd_sent.drain(..) {
                let secs = now.duration_since(t).as_secs_f64();
                for _ in 0..units {
                    self.metrics.forwarding_latency.observe(secs);
                }
            }
        }
        self.metrics
            .datagrams_sent
            .inc_by((queued - dropped) as u64);
        for _ in 0..dropped {
            drop_reason(&self.metrics, "send_failed");
        }
    }

    fn datagram(&mut self, now: Instant, src: SocketAddr, data: &[u8], truncated: bool) {
        if truncated {
            drop_reason(&self.metrics, "oversized");
            return;
        }
        let kind = wire::classify(data);
        let id = match kind {
            DatagramKind::Unknown => {
                drop_reason(&self.metrics, "unknown_kind");
                return;
            }
            DatagramKind::Stun => {
                let Some(ufrag) = wire::stun_local_ufrag(data) else {
                    drop_reason(&self.metrics, "stun_without_username");
                    return;
                };
                let Some(id) = self.by_ufrag.get(ufrag).copied() else {
                    drop_reason(&self.metrics, "unknown_ufrag");
                    return;
                };
                id
            }
            DatagramKind::Dtls | DatagramKind::Rtp => match self.by_addr.get(&src) {
                Some(id) => *id,
                None => {
                    drop_reason(&self.metrics, "unknown_source");
                    return;
                }
            },
        };
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.local, data) else {
            drop_reason(&self.metrics, "malformed");
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let input = Input::Receive(now, recv);
        if !s.rtc.accepts(&input) {
            drop_reason(&self.metrics, "not_accepted");
            return;
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(error = %e, "sfu input rejected");
            drop_reason(&self.metrics, "rtc_error");
        }
        if kind == DatagramKind::Rtp {
            let out = &mut self.out;
            egress_nacks(s, data, now, &self.metrics, |b| out.push(b, src));
        }
        // Learn the source address from STUN carrying this session's ufrag that str0m accepted.
        // An address owned by another session is never taken over, and a session keeps at most
        // MAX_ADDRS addresses, so spoofed checks cannot grow the table or steal routes.
        if kind == DatagramKind::Stun
            && !self.by_addr.contains_key(&src)
            && s.addrs.len() < MAX_ADDRS
        {
            self.by_addr.insert(src, id);
            s.addrs.push(src);
        }
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    fn mark(&mut self, id: ParticipantId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn timeouts(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due_buf);
        self.timers.pop_due(now, &mut due);
        for id in due.drain(..) {
            if let Some(s) = self.sessions.get_mut(&id) {
                if s.rtc.handle_input(Input::Timeout(now)).is_err() {
                    s.rtc.disconnect();
                }
            }
            self.mark(id);
        }
        self.due_buf = due;
        if now.duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            for c in self.tcp_conns.values() {
                if c.session.is_none() && now.duration_since(c.opened) >= TCP_UNBOUND_TIMEOUT {
                    c.cancel.cancel();
                }
            }
            let actions = self.rooms.tick(now);
            self.apply(actions, now);
            self.sync_gauges();
            if self.cfg.bwe_initial_kbps > 0 {
                let floor = self.cfg.bwe_initial_kbps * 1000 / 4;
                for (id, s) in self.sessions.iter_mut() {
                    if !s.connected || s.down.is_empty() {
                        continue;
                    }
                    let (min, desired) = self.rooms.bitrate_targets(*id, now);
                    s.rtc.bwe().set_bitrate(
                        str0m::bwe::Bitrate::bps(min.max(floor)),
                        str0m::bwe::Bitrate::bps(desired.max(min).max(floor)),
                    );
                }
            }
        }
    }

    /// Polls dirty sessions until none has output left, handling events as they come.
    fn settle(&mut self) {
        let mut rounds = 0;
        while !self.dirty.is_empty() || !self.renegotiate.is_empty() {
            rounds += 1;
            if rounds > 64 {
                // Events keep re-dirtying sessions; the rest is picked up next loop turn.
                break;
            }
            let mut ids = std::mem::take(&mut self.dirty);
            let mut events = std::mem::take(&mut self.events_buf);
            for id in ids.drain(..) {
                self.poll(id, &mut events);
                audio_first(&mut events);
                for ev in events.drain(..) {
                    self.event(id, ev);
                }
                if self.out.len() >= SEND_FLUSH_AT {
                    self.flush_out();
                }
            }
            self.events_buf = events;
            // Each round's datagrams leave at once: the first subscribers of a fan-out do not
            // wait for the rest of the turn.
            self.flush_out();
            if self.dirty.is_empty() {
                // Keep the allocation for the next turn.
                self.dirty = ids;
            }
            let ids: Vec<ParticipantId> = self.renegotiate.drain().collect();
            for id in ids {
                self.negotiate(id);
            }
        }
        let dead: Vec<ParticipantId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.rtc.is_alive())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.close(id, "disconnected");
        }
    }

    /// Drains `id`'s output: datagrams go to the send batch, events to `events`. A timeout that
    /// is already due (str0m asks for one right after a write, to packetize it) is handled on
    /// the spot, so the packets leave in this turn's batch instead of after a timer wakeup.
    fn poll(&mut self, id: ParticipantId, events: &mut Vec<Event>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.dirty = false;
        if let Some(f) = s.fwd_since.take() {
            // Everything written so far is packetized by the polling below.
            self.fwd_sent.push(f);
        }
        let mut due_rounds = 0;
        loop {
            match s.rtc.poll_output() {
                Ok(Output::Transmit(t)) if t.proto == Protocol::Tcp => {
                    let mut data = t.contents.to_vec();
                    egress_saw_transmit(s, Protocol::Tcp, t.destination, &mut data, &self.metrics);
                    let sent = self
                        .tcp_by_remote
                        .get(&t.destination)
                        .and_then(|c| self.tcp_conns.get(c))
                        .is_some_and(|c| c.tx.try_send(data).is_ok());
                    if !sent {
                        drop_reason(&self.metrics, "tcp_send_failed");
                    }
                }
                Ok(Output::Transmit(t)) => {
                    let mut data: Vec<u8> = t.contents.into();
                    egress_saw_transmit(s, Protocol::Udp, t.destination, &mut data, &self.metrics);
                    self.out.push_owned(data, t.destination);
                }
                Ok(Output::Timeout(t)) => {
                    if due_rounds < DUE_ROUNDS {
                        let now = Instant::now();
                        if t <= now {
                            due_rounds += 1;
                            if s.rtc.handle_input(Input::Timeout(now)).is_err() {
                                s.rtc.disconnect();
                            }
                            continue;
                        }
                    }
                    self.timers.schedule(id, t);
                    break;
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    tracing::debug!(error = %e, "sfu session failed");
                    self.metrics
                        .session_errors
                        .get_or_create(&ReasonLabel { reason: "rtc" })
                        .inc();
                    s.rtc.disconnect();
                    break;
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Join {
                id,
                room,
                identity,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(id, room, identity, events, now));
            }
            Command::Offer { id, sdp, reply } => {
                let _ = reply.send(self.accept_offer(id, &sdp));
            }
            Command::Answer { id, sdp, reply } => {
                let _ = reply.send(self.accept_answer(id, &sdp, now));
            }
            Command::Candidate {
                id,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.add_candidate(id, &candidate));
            }
            Command::Push {
                id,
                topic,
                data,
                reliable,
                reply,
            } => {
                let r = match wire::encode_envelope(wire::SERVER_ID, Some(&topic), &data) {
                    None => Err(SfuError::BadData),
                    Some(bytes) if !self.sessions.contains_key(&id) => {
                        drop(bytes);
                        Err(SfuError::UnknownParticipant)
                    }
                    Some(bytes) => match self.rooms.enqueue_data(id, reliable, bytes) {
                        Ok(()) => {
                            self.flush_data(id);
                            Ok(())
                        }
                        Err(_) => {
                            self.metrics
                                .data_dropped
                                .get_or_create(&ReasonLabel {
                                    reason: "queue_full",
                                })
                                .inc();
                            Err(SfuError::Backpressure)
                        }
                    },
                };
                let _ = reply.send(r);
            }
            Command::Cap {
                id,
                publisher,
                max_layer,
                paused,
            } => {
                let Some(room) = self.sessions.get(&id).map(|s| s.room.clone()) else {
                    return;
                };
                let Some(pubid) = self.by_identity.get(&(room, publisher)).copied() else {
                    return;
                };
                let keys: Vec<TrackKey> = self
                    .sessions
                    .get(&pubid)
                    .map(|p| {
                        p.up.values()
                            .filter(|u| u.kind == TrackKind::Video)
                            .map(|u| TrackKey {
                                publisher: pubid,
                                index: u.index,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for key in keys {
                    let mut actions =
                        self.rooms
                            .set_max_layer(id, key, Layer(max_layer.min(2)), now);
                    actions.extend(self.rooms.set_paused(id, key, paused, now));
                    self.apply(actions, now);
                }
            }
            Command::Leave { id } => self.close(id, "left"),
            Command::Counts { reply } => {
                let _ = reply.send(SfuCounts {
                    sessions: self.sessions.len(),
                    rooms: self.rooms.room_count(),
                    tracks: self.rooms.track_count(),
                    subscriptions: self.rooms.subscription_count(),
                    ufrag_routes: self.by_ufrag.len(),
                    addr_routes: self.by_addr.len(),
                    identities: self.by_identity.len(),
                    queued_bytes: self.rooms.queued_bytes(),
                    tcp_conns: self.tcp_conns.len(),
                });
            }
        }
    }

    fn join(
        &mut self,
        id: ParticipantId,
        room: String,
        identity: String,
        events: mpsc::Sender<SfuEvent>,
        now: Instant,
    ) -> Result<(), SfuError> {
        if let Some(old) = self
            .by_identity
            .get(&(room.clone(), identity.clone()))
            .copied()
        {
            self.close(old, "replaced");
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(SfuError::Full(self.cfg.max_sessions));
        }
        let bwe = (self.cfg.bwe_initial_kbps > 0)
            .then(|| str0m::bwe::Bitrate::kbps(self.cfg.bwe_initial_kbps));
        let config = Rtc::builder()
            .set_ice_lite(true)
            .enable_bwe(bwe)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_sctp_max_message_size(
                u32::try_from(self.cfg.max_data_message_bytes)
                    .unwrap_or(u32::MAX)
                    .max(1024),
            );
        let (mut rtc, egress) = if self.cfg.own_egress() {
            let (rtc, keys) = crate::keys::build(config, now);
            (rtc, Some(SessionEgress::new(keys)))
        } else {
            (config.build(now), None)
        };
        let cand = Candidate::host(self.local, "udp")
            .map_err(|e| SfuError::Config(format!("host candidate {}: {e}", self.local)))?;
        rtc.add_local_candidate(cand);
        if let Some(tcp) = self.local_tcp {
            let cand = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| SfuError::Config(format!("tcp candidate {tcp}: {e}")))?;
            rtc.add_local_candidate(cand);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.by_identity
            .insert((room.clone(), identity.clone()), id);
        self.sessions.insert(
            id,
            Session {
                identity,
                room: room.clone(),
                rtc,
                ufrag,
                old_ufrag: None,
                events,
                addrs: Vec::new(),
                up: HashMap::new(),
                next_up_index: 0,
                down: HashMap::new(),
                down_by_mid: HashMap::new(),
                pending: None,
                negotiated: false,
                reliable_ch: None,
                lossy_ch: None,
                channels: HashMap::new(),
                nacks_seen: HashMap::new(),
                dirty: false,
                connected: false,
                fwd_since: None,
                egress,
                dest: None,
            },
        );
        self.timers.schedule(id, now);
        self.metrics.sessions.set(self.sessions.len() as i64);
        let actions = self.rooms.join(&room, id);
        self.apply(actions, now);
        Ok(())
    }

    fn accept_offer(&mut self, id: ParticipantId, sdp: &str) -> Result<String, SfuError> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        if s.pending.take().is_some() {
            // Glare: the browser's offer wins; our changes are re-offered after this answer.
            rollback_offered(s);
        }
        let answer = s
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        s.negotiated = true;
        // An ICE restart in the offer gives us new local credentials: route the new ufrag and
        // keep the previous one until the next restart (checks in flight still carry it).
        let ufrag = s.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != s.ufrag {
            let previous = std::mem::replace(&mut s.ufrag, ufrag.clone());
            if let Some(older) = s.old_ufrag.replace(previous) {
                self.by_ufrag.remove(&older);
            }
            self.by_ufrag.insert(ufrag, id);
        }
        self.renegotiate.insert(id);
        self.mark(id);
        Ok(answer.to_sdp_string())
    }

    fn accept_answer(
        &mut self,
        id: ParticipantId,
        sdp: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let pending = s.pending.take().ok_or(SfuError::NoPendingOffer)?;
        if let Err(e) = s.rtc.sdp_api().accept_answer(pending, answer) {
            // The offer is void; queue its changes again and offer afresh.
            rollback_offered(s);
            self.renegotiate.insert(id);
            return Err(SfuError::Sdp(e.to_string()));
        }
        let mut ready = Vec::new();
        let mut ended = Vec::new();
        for (key, d) in s.down.iter_mut() {
            match d.state {
                DownState::Offered => {
                    d.state = DownState::Open;
                    ready.push(*key);
                }
                DownState::RemoveOffered => ended.push(*key),
                _ => {}
            }
        }
        for key in &ready {
            if let Some(d) = s.down.get(key) {
                let _ = s.events.try_send(SfuEvent::TrackAdded {
                    publisher: d.publisher.clone(),
                    track: d.track_id.clone(),
                    mid: d.mid.map(|m| m.to_string()).unwrap_or_default(),
                    kind: kind_label(d.kind),
                });
            }
        }
        for key in ended {
            if let Some(d) = s.down.remove(&key) {
                if let Some(mid) = d.mid {
                    s.down_by_mid.remove(&mid);
                }
                if let (Path::Own(ssrc), Some(e)) = (d.path, s.egress.as_mut()) {
                    e.remove_track(ssrc);
                }
                let _ = s.events.try_send(SfuEvent::TrackEnded {
                    publisher: d.publisher,
                    track: d.track_id,
                    mid: d.mid.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
        }
        let more = s
            .down
            .values()
            .any(|d| matches!(d.state, DownState::ToAdd | DownState::ToRemove));
        if more {
            self.renegotiate.insert(id);
        }
        self.mark(id);
        for key in ready {
            let actions = self.rooms.down_track_ready(id, key, now);
            self.apply(actions, now);
        }
        Ok(())
    }

    fn add_candidate(&mut self, id: ParticipantId, candidate: &str) -> Result<(), SfuError> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let line = if candidate.trim_start().starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(candidate).map_err(|e| SfuError::Candidate(e.to_string()))?;
            v.get("candidate")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_owned()
        } else {
            candidate.to_owned()
        };
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let line = line.strip_prefix("a=").unwrap_or(line);
        let c = Candidate::from_sdp_string(line).map_err(|e| SfuError::Candidate(e.to_string()))?;
        s.rtc.add_remote_candidate(c);
        self.mark(id);
        Ok(())
    }

    /// Emits a server offer for queued down-track changes, unless one is outstanding.
    fn negotiate(&mut self, id: ParticipantId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.negotiated || s.pending.is_some() {
            return;
        }
        let mut api = s.rtc.sdp_api();
        let mut drop_now = Vec::new();
        for (key, d) in s.down.iter_mut() {
            match d.state {
                DownState::ToAdd => {
                    let kind = match d.kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    let mid = api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(d.publisher.clone()),
                        Some(d.track_id.clone()),
                        None,
                    );
                    d.mid = Some(mid);
                    d.state = DownState::Offered;
                    s.down_by_mid.insert(mid, *key);
                }
                DownState::ToRemove => match d.mid {
                    Some(mid) => {
                        api.stop_media(mid);
                        d.state = DownState::RemoveOffered;
                    }
                    None => drop_now.push(*key),
                },
                _ => {}
            }
        }
        let applied = if api.has_changes() { api.apply() } else { None };
        for key in drop_now {
            s.down.remove(&key);
        }
        if let Some((offer, pending)) = applied {
            s.pending = Some(pending);
            if s.events
                .try_send(SfuEvent::Offer(offer.to_sdp_string()))
                .is_err()
            {
                self.metrics
                    .session_errors
                    .get_or_create(&ReasonLabel {
                        reason: "event_queue_full",
                    })
                    .inc();
                s.rtc.disconnect();
            }
        }
        self.mark(id);
    }

    fn event(&mut self, id: ParticipantId, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Connected => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.connected = true;
                    let _ = s.events.try_send(SfuEvent::Connected);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.rtc.disconnect();
                }
            }
            Event::MediaAdded(m) => {
                let receiving = matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                if s.down_by_mid.contains_key(&m.mid) || s.up.contains_key(&m.mid) {
                    return;
                }
                let kind = match m.kind {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                let index = s.next_up_index;
                s.next_up_index += 1;
                s.up.insert(
                    m.mid,
                    UpTrack {
                        index,
                        kind,
                        published: receiving,
                        rids: [None, None, None],
                    },
                );
                if receiving {
                    let actions = self.rooms.publish(id, index, kind);
                    self.sync_gauges();
                    self.apply(actions, now);
                }
            }
            Event::MediaChanged(m) => {
                let receiving = matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let Some(up) = s.up.get_mut(&m.mid) else {
                    return;
                };
                let key = TrackKey {
                    publisher: id,
                    index: up.index,
                };
                let actions = if receiving && !up.published {
                    up.published = true;
                    let kind = up.kind;
                    self.rooms.publish(id, key.index, kind)
                } else if !receiving && up.published {
                    up.published = false;
                    self.rooms.unpublish(key)
                } else {
                    Vec::new()
                };
                self.sync_gauges();
                self.apply(actions, now);
            }
            Event::MediaData(d) => self.media(id, d, now),
            Event::KeyframeRequest(r) => {
                let key = self
                    .sessions
                    .get(&id)
                    .and_then(|s| s.down_by_mid.get(&r.mid).copied());
                if let Some(key) = key {
                    let actions = self.rooms.subscriber_keyframe_request(id, key, now);
                    self.apply(actions, now);
                }
            }
            Event::EgressBitrateEstimate(b) => {
                let bps = match b {
                    BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. } => {
                        estimate.as_u64()
                    }
                    _ => return,
                };
                let actions = self.rooms.set_bandwidth(id, bps, now);
                self.apply(actions, now);
            }
            Event::MediaEgressStats(st) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let seen = s.nacks_seen.entry((st.mid, st.rid)).or_insert(0);
                    if st.nacks > *seen {
                        self.metrics.nacks.inc_by(st.nacks - *seen);
                        *seen = st.nacks;
                    }
                }
            }
            Event::ChannelOpen(cid, label) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let lossy = label == "updates" || label.contains("lossy");
                s.channels.insert(cid, !lossy);
                if lossy {
                    s.lossy_ch.get_or_insert(cid);
                } else {
                    s.reliable_ch.get_or_insert(cid);
                }
                if let Some(mut ch) = s.rtc.channel(cid) {
                    ch.set_buffered_amount_low_threshold(CHANNEL_LOW_WATER);
                }
                self.flush_data(id);
            }
            Event::ChannelClose(cid) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.channels.remove(&cid);
                    if s.reliable_ch == Some(cid) {
                        s.reliable_ch = None;
                    }
                    if s.lossy_ch == Some(cid) {
                        s.lossy_ch = None;
                    }
                }
            }
            Event::ChannelBufferedAmountLow(_) => self.flush_data(id),
            Event::ChannelData(d) => self.channel_data(id, d),
            _ => {}
        }
    }

    fn media(&mut self, id: ParticipantId, d: MediaData, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(up) = s.up.get_mut(&d.mid) else {
            return;
        };
        let key = TrackKey {
            publisher: id,
            index: up.index,
        };
        let kind = up.kind;
        let layer = Layer::from_rid(d.rid.as_deref());
        up.rids[usize::from(layer.0.min(2))] = d.rid;
        let keyframe = kind == TrackKind::Video && d.is_keyframe();
        let mut actions = Vec::new();
        if !d.contiguous && kind == TrackKind::Video {
            actions = self.rooms.publisher_loss(key, layer, now);
        }
        let mut out = std::mem::take(&mut self.route_buf);
        let more = self
            .rooms
            .route_media(key, layer, keyframe, d.data.len(), now, &mut out);
        actions.extend(more);
        let packets = (**d.seq_range.end()).wrapping_sub(**d.seq_range.start()) + 1;
        let label = KindLabel {
            kind: kind_label(kind),
        };
        let mut forwarded = 0u64;
        for sub in &out {
            let Some(s2) = self.sessions.get_mut(sub) else {
                continue;
            };
            let Some(down) = s2.down.get_mut(&key).filter(|t| t.state == DownState::Open) else {
                continue;
            };
            let Some(mid) = down.mid else {
                continue;
            };
            // Each simulcast layer has its own timestamp base (see `retime`).
            let time = if kind == TrackKind::Video {
                let hz = d.time.frequency();
                let t = down
                    .retimer
                    .map(layer, d.time.numer(), d.time.denom(), d.network_time);
                MediaTime::new(t, hz)
            } else {
                d.time
            };
            if let Some(egress) = s2.egress.as_mut() {
                if down.path == Path::Undecided {
                    if s2.dest.is_none() || !egress.ready() {
                        // Not connected yet (no SRTP keys or no route): str0m could not send
                        // this frame either. Decide at the first frame after the handshake.
                        continue;
                    }
                    down.path = own_path(&mut s2.rtc, egress, mid, &d);
                }
                if let Path::Own(ssrc) = down.path {
                    let (tcp_by_remote, tcp_conns, out) =
                        (&self.tcp_by_remote, &self.tcp_conns, &mut self.out);
                    let dest = s2.dest;
                    let sent =
                        egress.write_frame(
                            ssrc,
                            &d.data,
                            time.numer() as u32,
                            now,
                            |b| match dest {
                                Some((Protocol::Udp, to)) => out.push(b, to),
                                Some((_, to)) => {
                                    let _ = tcp_by_remote
                                        .get(&to)
                                        .and_then(|c| tcp_conns.get(c))
                                        .map(|c| c.tx.try_send(b.to_vec()));
                                }
                                None => {}
                            },
                        );
                    match sent {
                        Ok(sent) => {
                            self.metrics.egress_packets.inc_by(sent.datagrams as u64);
                            forwarded += 1;
                            // Observed when the batch leaves (see `flush_out`).
                            self.fwd_sent.push((d.network_time, 1));
                        }
                        Err(e) => tracing::debug!(error = %e, "own egress could not protect"),
                    }
                    // A large fan-out leaves in batches: the first subscribers do not wait
                    // for the packets of the last ones to be built.
                    if self.out.len() >= SEND_FLUSH_AT {
                        self.flush_out();
                    }
                    continue;
                }
            }
            let Some(w) = s2.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = w.match_params(d.params) else {
                continue;
            };
            if w.write(pt, d.network_time, time, d.data.clone()).is_ok() {
                forwarded += 1;
                // Observed when the packets leave (see `flush_out`).
                let f = s2.fwd_since.get_or_insert((d.network_time, 0));
                f.1 += 1;
                if !s2.dirty {
                    s2.dirty = true;
                    self.dirty.push(*sub);
                }
            }
        }
        self.route_buf = out;
        if forwarded > 0 {
            self.metrics
                .packets_forwarded
                .get_or_create(&label)
                .inc_by(forwarded * packets.min(1024));
            self.metrics
                .bytes_forwarded
                .get_or_create(&label)
                .inc_by(forwarded * d.data.len() as u64);
        }
        self.apply(actions, now);
    }

    fn channel_data(&mut self, id: ParticipantId, d: str0m::channel::ChannelData) {
        let max = self.cfg.max_data_message_bytes;
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let reliable = s.channels.get(&d.id).copied().unwrap_or(true);
        let msg = match wire::parse_envelope(&d.data, d.binary, max) {
            Ok(m) => m,
            Err(e) => {
                self.metrics
                    .data_dropped
                    .get_or_create(&ReasonLabel { reason: e.reason() })
                    .inc();
                return;
            }
        };
        let from = s.identity.clone();
        let room = s.room.clone();
        let targets: Vec<ParticipantId> = match msg.to {
            Some(wire::SERVER_ID) => {
                let ev = SfuEvent::Data {
                    from,
                    data: msg.data.to_owned(),
                };
                if s.events.try_send(ev).is_err() {
                    self.metrics
                        .data_dropped
                        .get_or_create(&ReasonLabel {
                            reason: "event_queue_full",
                        })
                        .inc();
                }
                return;
            }
            Some(to) => match self.by_identity.get(&(room.clone(), to.to_owned())) {
                Some(t) => vec![*t],
                None => {
                    self.metrics
                        .data_dropped
                        .get_or_create(&ReasonLabel {
                            reason: "unknown_target",
                        })
                        .inc();
                    return;
                }
            },
            None => self
                .rooms
                .members(&room)
                .iter()
                .copied()
                .filter(|p| *p != id)
                .collect(),
        };
        let Some(bytes) = wire::encode_envelope(&from, None, msg.data) else {
            return;
        };
        for t in targets {
            match self.rooms.enqueue_data(t, reliable, bytes.clone()) {
                Ok(()) => {
                    self.metrics.data_relayed.inc();
                    self.flush_data(t);
                }
                Err(_) => {
                    self.metrics
                        .data_dropped
                        .get_or_create(&ReasonLabel {
                            reason: "queue_full",
                        })
                        .inc();
                }
            }
        }
    }

    fn flush_data(&mut self, id: ParticipantId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut wrote = false;
        let reliable_ch = s.reliable_ch;
        let lossy_ch = s.lossy_ch;
        let rtc = &mut s.rtc;
        self.rooms.drain_data(id, |m| {
            let cid = if m.reliable {
                reliable_ch.or(lossy_ch)
            } else {
                lossy_ch.or(reliable_ch)
            };
            let Some(mut ch) = cid.and_then(|c| rtc.channel(c)) else {
                return false;
            };
            if ch.buffered_amount() > CHANNEL_HIGH_WATER {
                return false;
            }
            match ch.write(false, &m.bytes) {
                Ok(true) => {
                    wrote = true;
                    true
                }
                Ok(false) => false,
                // The channel cannot take it (closed, too large): drop it rather than wedge
                // the queue.
                Err(_) => true,
            }
        });
        if wrote {
            self.mark(id);
        }
    }

    fn apply(&mut self, actions: Vec<Action>, now: Instant) {
        for a in actions {
            match a {
                Action::AddDownTrack {
                    subscriber,
                    track,
                    kind,
                } => {
                    let Some(publisher) = self
                        .sessions
                        .get(&track.publisher)
                        .map(|p| p.identity.clone())
                    else {
                        continue;
                    };
                    let Some(s) = self.sessions.get_mut(&subscriber) else {
                        continue;
                    };
                    s.down.insert(
                        track,
                        DownTrack {
                            kind,
                            track_id: format!("{publisher}-{}", track.index),
                            publisher,
                            mid: None,
                            state: DownState::ToAdd,
                            retimer: Default::default(),
                            path: Path::Undecided,
                        },
                    );
                    self.renegotiate.insert(subscriber);
                }
                Action::RemoveDownTrack { subscriber, track } => {
                    let Some(s) = self.sessions.get_mut(&subscriber) else {
                        continue;
                    };
                    if let Some(d) = s.down.get_mut(&track) {
                        d.state = DownState::ToRemove;
                        self.renegotiate.insert(subscriber);
                    }
                }
                Action::RequestKeyframe { track, layer } => {
                    let Some(s) = self.sessions.get_mut(&track.publisher) else {
                        continue;
                    };
                    let Some((mid, up)) = s.up.iter().find(|(_, u)| u.index == track.index) else {
                        continue;
                    };
                    let rid = up.rids[usize::from(layer.0.min(2))];
                    let mid = *mid;
                    if let Some(mut w) = s.rtc.writer(mid) {
                        if w.request_keyframe(rid, KeyframeRequestKind::Pli).is_ok() {
                            self.metrics.plis.inc();
                        }
                    }
                    self.mark(track.publisher);
                }
            }
        }
        let _ = now;
        let st = self.rooms.stats();
        if st.keyframe_waits > self.last_stats.keyframe_waits {
            self.metrics
                .keyframe_waits
                .inc_by(st.keyframe_waits - self.last_stats.keyframe_waits);
        }
        self.last_stats = st;
    }

    fn sync_gauges(&self) {
        self.metrics.sessions.set(self.sessions.len() as i64);
        self.metrics.tracks.set(self.rooms.track_count() as i64);
        self.metrics
            .subscriptions
            .set(self.rooms.subscription_count() as i64);
        let h = self.rooms.layer_histogram();
        for (i, n) in h.iter().enumerate() {
            self.metrics
                .subscriber_layers
                .get_or_create(&LayerLabel {
                    layer: Layer(i as u8).label(),
                })
                .set(*n as i64);
        }
    }

    /// Frees everything that belongs to `id` and tells its handle why.
    fn close(&mut self, id: ParticipantId, reason: &'static str) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.remove(id);
        s.rtc.disconnect();
        // Flush what disconnect produced (DTLS close) so the peer learns quickly.
        while let Ok(out) = s.rtc.poll_output() {
            match out {
                Output::Transmit(t) => {
                    self.out.push_owned(t.contents.into(), t.destination);
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        self.by_ufrag.remove(&s.ufrag);
        if let Some(old) = &s.old_ufrag {
            self.by_ufrag.remove(old);
        }
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        let ik = (s.room.clone(), s.identity.clone());
        if self.by_identity.get(&ik) == Some(&id) {
            self.by_identity.remove(&ik);
        }
        if reason != "left" {
            let _ = s.events.try_send(SfuEvent::Closed { reason });
        }
        self.dirty.retain(|d| *d != id);
        self.renegotiate.remove(&id);
        let conns: Vec<u64> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| c.session == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for k in conns {
            if let Some(c) = self.tcp_conns.remove(&k) {
                c.cancel.cancel();
                if self.tcp_by_remote.get(&c.remote) == Some(&k) {
                    self.tcp_by_remote.remove(&c.remote);
                }
            }
        }
        let actions = self.rooms.leave(id);
        self.apply(actions, Instant::now());
        self.sync_gauges();
    }
}

/// The own egress's look at a datagram str0m sends to the session: it remembers the route
/// (own-path packets follow it) and rewrites str0m's sender reports for own-path streams.
fn egress_saw_transmit(
    s: &mut Session,
    proto: Protocol,
    to: SocketAddr,
    data: &mut Vec<u8>,
    metrics: &SfuMetrics,
) {
    if let Some(e) = &s.egress {
        s.dest = Some((proto, to));
        if e.patch_outgoing_rtcp(data, Instant::now()) {
            metrics.egress_reports.inc();
        }
    }
}

/// A subscriber's NACKs (in an RTP-range datagram it sent, UDP or ICE-TCP) for packets the own
/// egress sent: the packets go to `emit` again, from the track's history.
fn egress_nacks(
    s: &mut Session,
    data: &[u8],
    now: Instant,
    metrics: &SfuMetrics,
    emit: impl FnMut(&[u8]),
) {
    if let Some(e) = s.egress.as_mut().filter(|e| e.track_count() > 0) {
        let sent = e.on_incoming_rtcp(data, now, emit);
        metrics.egress_retransmissions.inc_by(sent.datagrams as u64);
    }
}

/// Decides, at a down-track's first frame once the session is connected (SRTP keys and a
/// route known), whether the own egress sends it: VP8 or Opus, and the SSRC str0m negotiated
/// for `mid`. Otherwise str0m keeps it for good (the two paths cannot share one SSRC's
/// sequence numbers).
fn own_path(rtc: &mut Rtc, egress: &mut SessionEgress, mid: Mid, d: &MediaData) -> Path {
    let codec = match d.params.spec().codec {
        Codec::Vp8 => OwnCodec::Vp8,
        Codec::Opus => OwnCodec::Opus,
        _ => return Path::Str0m,
    };
    let Some(pt) = rtc.writer(mid).and_then(|w| w.match_params(d.params)) else {
        return Path::Str0m;
    };
    // The RTX payload type the subscriber's answer paired with `pt`, if any.
    let rtx_pt = rtc.writer(mid).and_then(|w| {
        w.payload_params()
            .find(|p| p.pt() == pt)
            .and_then(|p| p.resend())
    });
    let Some((ssrc, rtx_ssrc)) = rtc
        .direct_api()
        .stream_tx_by_mid(mid, None)
        .map(|t| (*t.ssrc(), t.rtx().map(|r| *r)))
    else {
        return Path::Str0m;
    };
    // Any start will do; vary it per track like any RTP sender (RFC 3550 §5.1).
    let first_seq = (ssrc as u16) ^ (d.network_time.elapsed().subsec_nanos() as u16) ^ 0x5a5a;
    let mut track = OwnTrack::new(
        ssrc,
        *pt,
        codec,
        d.params.spec().clock_rate.get(),
        first_seq,
    );
    if let (Some(rtx_ssrc), Some(rtx_pt)) = (rtx_ssrc, rtx_pt) {
        track = track.with_rtx(rtx_ssrc, *rtx_pt);
    }
    egress.add_track(track);
    Path::Own(ssrc)
}

/// Within each run of consecutive media events of one session, audio goes before video: an Opus
/// packet to every subscriber is a few microseconds of work, a video frame's fan-out can be a
/// millisecond (a keyframe to 20 subscribers), and audio polled in the same turn should not wait
/// behind it. Other events keep their place, so nothing moves across a track being added or
/// removed.
fn audio_first(events: &mut [Event]) {
    first_within_runs(
        events,
        |e| matches!(e, Event::MediaData(_)),
        |e| matches!(e, Event::MediaData(d) if d.params.spec().codec.is_audio()),
    );
}

/// Stable: in each maximal run of items where `in_run` holds, those where `first` holds move to
/// the front of the run, keeping their order; everything else keeps its order and place.
fn first_within_runs<T>(items: &mut [T], in_run: impl Fn(&T) -> bool, first: impl Fn(&T) -> bool) {
    let mut i = 0;
    while i < items.len() {
        if !in_run(&items[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < items.len() && in_run(&items[i]) {
            i += 1;
        }
        items[start..i].sort_by_key(|x| !first(x));
    }
}

/// Puts offered-but-unanswered down-track changes back in the queue.
fn rollback_offered(s: &mut Session) {
    for d in s.down.values_mut() {
        match d.state {
            DownState::Offered => {
                if let Some(mid) = d.mid.take() {
                    s.down_by_mid.remove(&mid);
                }
                d.state = DownState::ToAdd;
            }
            DownState::RemoveOffered => d.state = DownState::ToRemove,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_within_runs;

    #[test]
    fn first_within_runs_moves_only_inside_each_run() {
        // Runs are the numbers; odd numbers go first; 'x' and 'y' stay where they are.
        #[derive(Debug, PartialEq, Clone, Copy)]
        enum E {
            N(u32),
            X,
            Y,
        }
        use E::*;
        let mut v = vec![N(2), N(4), N(1), X, N(6), N(3), N(5), N(8), Y, N(7)];
        first_within_runs(
            &mut v,
            |e| matches!(e, N(_)),
            |e| matches!(e, N(n) if n % 2 == 1),
        );
        assert_eq!(
            v,
            vec![N(1), N(2), N(4), X, N(3), N(5), N(6), N(8), Y, N(7)]
        );
        let mut empty: Vec<E> = Vec::new();
        first_within_runs(&mut empty, |_| true, |_| true);
    }
}
