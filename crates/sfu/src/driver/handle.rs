//! The SFU's public face: [`Sfu`] starts the engine and admits participants, a
//! [`ParticipantHandle`] is one participant's end (offer/answer/candidates in, [`SfuEvent`]s
//! out). Both talk to the engine task only through [`Command`]s on one bounded channel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::net::{self, default_route_ip};
use crate::core::ParticipantId;
use crate::metrics::SfuMetrics;
use crate::{SfuConfig, SfuError};

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

/// What the handles ask of the engine task. Requests carry the channel for the engine's reply.
pub(super) enum Command {
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
    VideoPreference {
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
    /// Binds `[sfu] bind_ip:udp_port` (and the ICE-TCP listener) and starts the engine task on
    /// the caller's runtime; it counts into `metrics` (see [`SfuMetrics::registered`]). The
    /// engine stops when `shutdown` is cancelled; every session then gets
    /// [`SfuEvent::Closed`].
    pub async fn start(
        cfg: SfuConfig,
        metrics: SfuMetrics,
        shutdown: CancellationToken,
    ) -> Result<Sfu, SfuError> {
        let (bind_ip, public_ip) = check_config(&cfg, default_route_ip)?;
        let bound = net::bind(bind_ip, public_ip, &cfg, &shutdown).await?;
        let (tx, rx) = mpsc::channel(1024);
        let event_queue = cfg.event_queue;
        let engine = Engine::new(cfg, metrics.clone(), bound.net);
        let task = tokio::spawn(engine.run(rx, bound.tcp_rx, shutdown));
        Ok(Sfu {
            cmd: tx,
            local: bound.udp,
            local_tcp: bound.tcp,
            tcp_live: bound.tcp_live,
            next_id: AtomicU64::new(1),
            event_queue,
            metrics,
            task: parking_lot::Mutex::new(Some(task)),
        })
    }

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
        self.send(Command::VideoPreference {
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

/// Checks `[sfu]` as [`Sfu::start`] would, without binding anything.
pub fn validate_config(cfg: &SfuConfig) -> Result<(), SfuError> {
    check_config(cfg, || None).map(|_| ())
}

/// Checks `[sfu]` and resolves the addresses to bind and to advertise: `(bind_ip, public_ip)`.
/// `public_ip` defaults to `bind_ip` when that is a specific address, else to the address of
/// the default route (`default_route`), else to 127.0.0.1.
fn check_config(
    cfg: &SfuConfig,
    default_route: impl FnOnce() -> Option<IpAddr>,
) -> Result<(IpAddr, IpAddr), SfuError> {
    let bind_ip: IpAddr = cfg
        .bind_ip
        .parse()
        .map_err(|_| SfuError::Config(format!("bind_ip {:?}", cfg.bind_ip)))?;
    let public_ip: IpAddr = match &cfg.public_ip {
        Some(p) => p
            .parse()
            .map_err(|_| SfuError::Config(format!("public_ip {p:?}")))?,
        None if !bind_ip.is_unspecified() => bind_ip,
        None => default_route().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    if cfg.egress == crate::Egress::Own && cfg.bwe_initial_kbps != 0 {
        return Err(SfuError::Config(
            "egress = \"own\" sends without transport-wide sequence numbers; it needs bwe_initial_kbps = 0".into(),
        ));
    }
    if cfg.max_sessions == 0 || cfg.event_queue == 0 {
        return Err(SfuError::Config(
            "max_sessions and event_queue must be > 0".into(),
        ));
    }
    Ok((bind_ip, public_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(f: impl FnOnce(&mut SfuConfig)) -> SfuConfig {
        let mut c = SfuConfig::default();
        f(&mut c);
        c
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_advertised_address_is_public_ip_then_bind_ip_then_the_default_route() {
        let no_route = || None;
        let route = || Some(ip("192.0.2.5"));
        let c = cfg(|c| c.public_ip = Some("203.0.113.9".into()));
        assert_eq!(
            check_config(&c, no_route).unwrap(),
            (ip("0.0.0.0"), ip("203.0.113.9"))
        );
        let c = cfg(|c| c.bind_ip = "10.1.2.3".into());
        assert_eq!(
            check_config(&c, || panic!("not asked")).unwrap(),
            (ip("10.1.2.3"), ip("10.1.2.3"))
        );
        let c = SfuConfig::default();
        assert_eq!(check_config(&c, route).unwrap().1, ip("192.0.2.5"));
        assert_eq!(check_config(&c, no_route).unwrap().1, ip("127.0.0.1"));
        let c = cfg(|c| c.bind_ip = "::".into());
        assert_eq!(
            check_config(&c, route).unwrap(),
            (ip("::"), ip("192.0.2.5"))
        );
    }

    #[test]
    fn unusable_configs_are_refused() {
        let bad = [
            cfg(|c| c.bind_ip = "example.org".into()),
            cfg(|c| c.public_ip = Some("nope".into())),
            cfg(|c| {
                c.egress = crate::Egress::Own;
                c.bwe_initial_kbps = 1000;
            }),
            cfg(|c| c.max_sessions = 0),
            cfg(|c| c.event_queue = 0),
        ];
        for c in bad {
            assert!(
                matches!(check_config(&c, || None), Err(SfuError::Config(_))),
                "{c:?}"
            );
        }
        for egress in ["auto", "own", "str0m"] {
            let c = cfg(|c| c.egress = egress.parse().unwrap());
            assert!(check_config(&c, || None).is_ok(), "{egress}");
        }
        assert!("fast".parse::<crate::Egress>().is_err());
        // With estimation on, "auto" and "str0m" are fine; only "own" is refused.
        let c = cfg(|c| c.bwe_initial_kbps = 10_000);
        assert!(check_config(&c, || None).is_ok());
    }
}
