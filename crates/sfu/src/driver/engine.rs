//! The engine task: one loop that owns every session. Each turn waits for the first of
//! (shutdown | socket readable | command | ICE-TCP input | earliest deadline), handles it, runs
//! the due str0m timeouts and the room logic's tick, polls the sessions that have input until
//! they have no output left ([`Engine::settle`]), and sends the turn's datagrams.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use str0m::{Event, IceConnectionState, Input, Output};
use switchboard_udp::RecvBatch;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::forward::{audio_first, egress_saw_transmit};
use super::handle::{Command, SfuCounts};
use super::net::Net;
use super::{drop_reason, Session};
use crate::core::{Action, CoreStats, CoreTuning, Layer, ParticipantId, Rooms};
use crate::metrics::SfuMetrics;
use crate::tcp::TcpIn;
use crate::timers::TimerQueue;
use crate::SfuConfig;

/// Due str0m timeouts handled inline per poll before the rest waits for the timer.
const DUE_ROUNDS: usize = 4;
/// How often the room logic's timers (keyframe retries, layer gauges) run.
const TICK: Duration = Duration::from_millis(100);
/// Polling rounds per turn; events that keep re-dirtying sessions wait for the next turn.
const SETTLE_ROUNDS: usize = 64;

/// Everything the engine task owns.
pub(super) struct Engine {
    pub(super) cfg: SfuConfig,
    pub(super) metrics: SfuMetrics,
    /// The room logic: who receives what.
    pub(super) rooms: Rooms,
    /// The room logic's counters as last exported (metrics get the increase).
    last_stats: CoreStats,
    pub(super) sessions: HashMap<ParticipantId, Session>,
    /// (room, identity) → session, for reconnects, targeted data and video preferences.
    pub(super) by_identity: HashMap<(String, String), ParticipantId>,
    /// Which session a datagram or TCP frame belongs to.
    pub(super) demux: super::demux::Demux,
    /// Sockets, the send batch and ICE-TCP connections.
    pub(super) net: Net,
    /// Sessions to poll or renegotiate, and their deadlines.
    pub(super) work: Work,
    /// Subscribers of the media unit being forwarded (reused between units).
    pub(super) route_buf: Vec<ParticipantId>,
}

/// The engine's to-do list: which sessions need polling or a server offer in this turn, and
/// when each needs str0m's attention next.
pub(super) struct Work {
    /// Sessions with input or output pending, each listed once (see [`Work::mark`]).
    dirty: Vec<ParticipantId>,
    /// Sessions whose down-tracks changed: offer once polling settles.
    pub(super) renegotiate: HashSet<ParticipantId>,
    /// Each session's next str0m timeout.
    pub(super) timers: TimerQueue<ParticipantId>,
    /// Reused by [`Engine::timeouts`] (no allocation per turn).
    due_buf: Vec<ParticipantId>,
    /// Reused between polls (no allocation per session poll).
    events_buf: Vec<Event>,
    /// When the room logic last ticked.
    last_tick: Instant,
}

impl Work {
    fn new(now: Instant) -> Work {
        Work {
            dirty: Vec::new(),
            renegotiate: HashSet::new(),
            timers: TimerQueue::new(),
            due_buf: Vec::new(),
            events_buf: Vec::new(),
            last_tick: now,
        }
    }

    /// Queues session `id` (which is `s`) for polling in this turn, once.
    pub(super) fn mark(&mut self, id: ParticipantId, s: &mut Session) {
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Drops `id` from this turn's work (its session is gone).
    pub(super) fn forget(&mut self, id: ParticipantId) {
        self.dirty.retain(|d| *d != id);
        self.renegotiate.remove(&id);
    }

    fn busy(&self) -> bool {
        !self.dirty.is_empty() || !self.renegotiate.is_empty()
    }

    /// When the loop must wake at the latest: at once if the last turn stopped at its round
    /// limit, else at the earliest session deadline or the next tick.
    fn next_deadline(&mut self) -> Instant {
        let tick = self.last_tick + TICK;
        if self.busy() {
            // The last turn stopped at its round limit: continue right away.
            return self.last_tick.min(Instant::now());
        }
        self.timers.next_deadline().map_or(tick, |t| t.min(tick))
    }
}

/// The `(minimum, desired)` bitrates for str0m's estimator of a subscriber whose forwarded
/// layers need `min` and whose best allowed layers need `desired` (bit/s): never below a
/// quarter of the starting estimate, and desired never below minimum.
fn bwe_targets(min: u64, desired: u64, bwe_initial_kbps: u64) -> (u64, u64) {
    let floor = bwe_initial_kbps * 1000 / 4;
    (min.max(floor), desired.max(min).max(floor))
}

impl Engine {
    pub(super) fn new(cfg: SfuConfig, metrics: SfuMetrics, net: Net) -> Engine {
        let rooms = Rooms::new(CoreTuning {
            data_queue_bytes: cfg.data_queue_bytes,
            ..CoreTuning::default()
        });
        Engine {
            cfg,
            metrics,
            rooms,
            last_stats: CoreStats::default(),
            sessions: HashMap::new(),
            by_identity: HashMap::new(),
            demux: Default::default(),
            net,
            work: Work::new(Instant::now()),
            route_buf: Vec::new(),
        }
    }

    /// The engine task: runs until `shutdown` (or every [`super::Sfu`] handle is gone), then
    /// closes every session.
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut tcp_rx: mpsc::Receiver<TcpIn>,
        shutdown: CancellationToken,
    ) {
        let mut rx_batch = RecvBatch::with_timestamps();
        let mut tcp_open = self.net.local_tcp.is_some();
        loop {
            let deadline = self.work.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = self.net.socket.readable() => {
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
            self.net.flush(&self.metrics);
        }
        let ids: Vec<ParticipantId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(id, "shutdown");
        }
        self.net.flush(&self.metrics);
        self.net.tcp.close_all();
    }

    /// Queues session `id` for polling in this turn.
    pub(super) fn mark(&mut self, id: ParticipantId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            self.work.mark(id, s);
        }
    }

    /// Hands due str0m timeouts to their sessions and, every [`TICK`], runs the room logic's
    /// timers, closes idle ICE-TCP connections and updates the estimator's targets.
    fn timeouts(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.work.due_buf);
        self.work.timers.pop_due(now, &mut due);
        for id in due.drain(..) {
            if let Some(s) = self.sessions.get_mut(&id) {
                if s.rtc.handle_input(Input::Timeout(now)).is_err() {
                    s.rtc.disconnect();
                }
            }
            self.mark(id);
        }
        self.work.due_buf = due;
        if now.duration_since(self.work.last_tick) >= TICK {
            self.work.last_tick = now;
            self.net.tcp.close_unbound(now);
            let actions = self.rooms.tick(now);
            self.apply(actions);
            self.sync_gauges();
            if self.cfg.bwe_initial_kbps > 0 {
                for (id, s) in self.sessions.iter_mut() {
                    if !s.connected || s.down.is_empty() {
                        continue;
                    }
                    let (min, desired) = self.rooms.bitrate_targets(*id, now);
                    let (min, desired) = bwe_targets(min, desired, self.cfg.bwe_initial_kbps);
                    s.rtc.bwe().set_bitrate(
                        str0m::bwe::Bitrate::bps(min),
                        str0m::bwe::Bitrate::bps(desired),
                    );
                }
            }
        }
    }

    /// Polls dirty sessions until none has output left, handling events as they come, then
    /// closes sessions str0m gave up on.
    fn settle(&mut self) {
        let mut rounds = 0;
        while self.work.busy() {
            rounds += 1;
            if rounds > SETTLE_ROUNDS {
                // Events keep re-dirtying sessions; the rest is picked up next loop turn.
                break;
            }
            let mut ids = std::mem::take(&mut self.work.dirty);
            let mut events = std::mem::take(&mut self.work.events_buf);
            for id in ids.drain(..) {
                self.poll(id, &mut events);
                audio_first(&mut events);
                for ev in events.drain(..) {
                    self.event(id, ev);
                }
                if self.net.should_flush() {
                    self.net.flush(&self.metrics);
                }
            }
            self.work.events_buf = events;
            // Each round's datagrams leave at once: the first subscribers of a fan-out do not
            // wait for the rest of the turn.
            self.net.flush(&self.metrics);
            if self.work.dirty.is_empty() {
                // Keep the allocation for the next turn.
                self.work.dirty = ids;
            }
            let ids: Vec<ParticipantId> = self.work.renegotiate.drain().collect();
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
            self.net.fwd_sent.push(f);
        }
        let mut due_rounds = 0;
        loop {
            match s.rtc.poll_output() {
                Ok(Output::Transmit(t)) if t.proto == str0m::net::Protocol::Tcp => {
                    let mut data = t.contents.to_vec();
                    egress_saw_transmit(
                        s,
                        str0m::net::Protocol::Tcp,
                        t.destination,
                        &mut data,
                        &self.metrics,
                    );
                    if !self.net.tcp.send_to(t.destination, data) {
                        drop_reason(&self.metrics, "tcp_send_failed");
                    }
                }
                Ok(Output::Transmit(t)) => {
                    let mut data: Vec<u8> = t.contents.into();
                    egress_saw_transmit(
                        s,
                        str0m::net::Protocol::Udp,
                        t.destination,
                        &mut data,
                        &self.metrics,
                    );
                    self.net.out.push_owned(data, t.destination);
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
                    self.work.timers.schedule(id, t);
                    break;
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    tracing::debug!(error = %e, "sfu session failed");
                    self.metrics
                        .session_errors
                        .get_or_create(&[("reason", "rtc")])
                        .inc();
                    s.rtc.disconnect();
                    break;
                }
            }
        }
    }

    /// One command from a [`super::Sfu`] or [`super::ParticipantHandle`].
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
                let _ = reply.send(self.push_data(id, &topic, &data, reliable));
            }
            Command::VideoPreference {
                id,
                publisher,
                max_layer,
                paused,
            } => self.video_preference(id, publisher, max_layer, paused, now),
            Command::Leave { id } => self.close(id, "left"),
            Command::Counts { reply } => {
                let _ = reply.send(self.counts());
            }
        }
    }

    fn counts(&self) -> SfuCounts {
        SfuCounts {
            sessions: self.sessions.len(),
            rooms: self.rooms.room_count(),
            tracks: self.rooms.track_count(),
            subscriptions: self.rooms.subscription_count(),
            ufrag_routes: self.demux.ufrag_routes(),
            addr_routes: self.demux.addr_routes(),
            identities: self.by_identity.len(),
            queued_bytes: self.rooms.queued_bytes(),
            tcp_conns: self.net.tcp.len(),
        }
    }

    /// One str0m event of session `id`.
    fn event(&mut self, id: ParticipantId, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Connected => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.connected = true;
                    let _ = s.events.try_send(super::SfuEvent::Connected);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.rtc.disconnect();
                }
            }
            Event::MediaAdded(m) => self.media_added(id, m),
            Event::MediaChanged(m) => self.media_changed(id, m),
            Event::MediaData(d) => self.media(id, d, now),
            Event::KeyframeRequest(r) => self.keyframe_request(id, r.mid, now),
            Event::EgressBitrateEstimate(b) => self.bitrate_estimate(id, b, now),
            Event::MediaEgressStats(st) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let seen = s.nacks_seen.entry((st.mid, st.rid)).or_insert(0);
                    if st.nacks > *seen {
                        self.metrics.nacks.inc_by(st.nacks - *seen);
                        *seen = st.nacks;
                    }
                }
            }
            Event::ChannelOpen(cid, label) => self.channel_open(id, cid, &label),
            Event::ChannelClose(cid) => self.channel_close(id, cid),
            Event::ChannelBufferedAmountLow(_) => self.flush_data(id),
            Event::ChannelData(d) => self.channel_data(id, d),
            _ => {}
        }
    }

    /// Carries out what the room logic decided: down-tracks to add or remove (renegotiation)
    /// and keyframes to ask publishers for.
    pub(super) fn apply(&mut self, actions: Vec<Action>) {
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
                    s.down.add(track, kind, publisher);
                    self.work.renegotiate.insert(subscriber);
                }
                Action::RemoveDownTrack { subscriber, track } => {
                    let Some(s) = self.sessions.get_mut(&subscriber) else {
                        continue;
                    };
                    if s.down.remove(track) {
                        self.work.renegotiate.insert(subscriber);
                    }
                }
                Action::RequestKeyframe { track, layer } => {
                    let Some(s) = self.sessions.get_mut(&track.publisher) else {
                        continue;
                    };
                    let Some((mid, rid)) = s.up.keyframe_target(track.index, layer) else {
                        continue;
                    };
                    if let Some(mut w) = s.rtc.writer(mid) {
                        if w.request_keyframe(rid, str0m::media::KeyframeRequestKind::Pli)
                            .is_ok()
                        {
                            self.metrics.plis.inc();
                        }
                    }
                    self.work.mark(track.publisher, s);
                }
            }
        }
        let st = self.rooms.stats();
        if st.keyframe_waits > self.last_stats.keyframe_waits {
            self.metrics
                .keyframe_waits
                .inc_by(st.keyframe_waits - self.last_stats.keyframe_waits);
        }
        self.last_stats = st;
    }

    /// Sets the session, track, subscription and layer gauges.
    pub(super) fn sync_gauges(&self) {
        self.metrics.sessions.set(self.sessions.len() as i64);
        self.metrics.tracks.set(self.rooms.track_count() as i64);
        self.metrics
            .subscriptions
            .set(self.rooms.subscription_count() as i64);
        let h = self.rooms.layer_histogram();
        for (i, n) in h.iter().enumerate() {
            self.metrics
                .subscriber_layers
                .get_or_create(&[("layer", Layer(i as u8).label())])
                .set(*n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_engine_wakes_for_the_earlier_of_a_deadline_and_the_tick() {
        let t0 = Instant::now();
        let mut w = Work::new(t0);
        assert_eq!(w.next_deadline(), t0 + TICK, "no session: the tick");
        w.timers
            .schedule(ParticipantId(1), t0 + Duration::from_millis(30));
        assert_eq!(w.next_deadline(), t0 + Duration::from_millis(30));
        w.timers
            .schedule(ParticipantId(1), t0 + Duration::from_secs(5));
        assert_eq!(
            w.next_deadline(),
            t0 + TICK,
            "a later deadline waits for the tick"
        );
    }

    #[test]
    fn leftover_work_makes_the_next_turn_start_at_once() {
        let t0 = Instant::now();
        let mut w = Work::new(t0);
        w.timers
            .schedule(ParticipantId(1), t0 + Duration::from_secs(5));
        w.renegotiate.insert(ParticipantId(2));
        assert!(w.next_deadline() <= t0, "due already");
        w.forget(ParticipantId(2));
        assert!(!w.busy());
        w.dirty.push(ParticipantId(3));
        assert!(w.next_deadline() <= t0);
        w.forget(ParticipantId(3));
        assert_eq!(w.next_deadline(), t0 + TICK);
    }

    #[test]
    fn estimator_targets_have_a_floor_and_desired_covers_minimum() {
        // A quarter of the 10 Mbit/s start is the floor.
        assert_eq!(bwe_targets(0, 0, 10_000), (2_500_000, 2_500_000));
        assert_eq!(
            bwe_targets(3_000_000, 6_000_000, 10_000),
            (3_000_000, 6_000_000)
        );
        assert_eq!(
            bwe_targets(4_000_000, 1_000_000, 10_000),
            (4_000_000, 4_000_000),
            "desired is raised to the minimum"
        );
    }
}
