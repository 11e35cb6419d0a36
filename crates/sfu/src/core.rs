//! Sans-IO room logic: who is in a room, which tracks they publish, who receives what, which
//! simulcast layer each subscriber gets, when to ask a publisher for a keyframe, and the bounded
//! per-participant data queues.
//!
//! Nothing here touches sockets, str0m or the clock: the driver feeds in events with an `Instant`
//! and executes the returned [`Action`]s. Tests script packets and instants directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A participant inside one SFU instance (unique across rooms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// One published track: the publisher and its per-publisher track number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Publisher-local number (the driver maps it to an m-line).
    pub index: u32,
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// Audio: never simulcast, no keyframes.
    Audio,
    /// Video: may be simulcast; subscribers wait for a keyframe.
    Video,
}

/// Simulcast layer, 0 = lowest. A non-simulcast track only has layer 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer(pub u8);

impl Layer {
    /// Layer number for a RID. Chromium and Firefox use `q`/`h`/`f`; `l`/`m`/`h` is also common.
    /// Unknown RIDs and no RID map to layer 0.
    pub fn from_rid(rid: Option<&str>) -> Layer {
        match rid {
            Some("f") | Some("hi") | Some("high") | Some("2") => Layer(2),
            Some("h") | Some("m") | Some("mid") | Some("1") => Layer(1),
            _ => Layer(0),
        }
    }

    /// Label used in metrics.
    pub fn label(self) -> &'static str {
        match self.0 {
            0 => "low",
            1 => "mid",
            _ => "high",
        }
    }
}

/// Tuning for layer selection and keyframe handling.
#[derive(Clone, Debug)]
pub struct CoreTuning {
    /// Fraction of the bandwidth estimate a subscriber may fill with one video track.
    pub headroom: f64,
    /// An upgrade needs the estimate to cover the higher layer times this factor ...
    pub upgrade_margin: f64,
    /// ... continuously for this long (hysteresis against flapping).
    pub upgrade_hold: Duration,
    /// Minimum time between two keyframe requests to the same publisher layer.
    pub keyframe_throttle: Duration,
    /// A subscriber still waiting for a keyframe after this long triggers another request.
    pub keyframe_retry: Duration,
    /// Window over which per-layer bitrates are measured.
    pub rate_window: Duration,
    /// Bound of each participant's queued outgoing data (bytes).
    pub data_queue_bytes: usize,
}

impl Default for CoreTuning {
    fn default() -> Self {
        CoreTuning {
            headroom: 0.9,
            upgrade_margin: 1.15,
            upgrade_hold: Duration::from_secs(2),
            keyframe_throttle: Duration::from_millis(300),
            keyframe_retry: Duration::from_millis(500),
            rate_window: Duration::from_secs(1),
            data_queue_bytes: 1 << 20,
        }
    }
}

/// What the driver must do after feeding the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add a send-only m-line for `track` to `subscriber`'s session (renegotiation).
    AddDownTrack {
        /// Receiver.
        subscriber: ParticipantId,
        /// Track to send.
        track: TrackKey,
        /// Its kind.
        kind: TrackKind,
    },
    /// Stop the m-line carrying `track` in `subscriber`'s session (renegotiation).
    RemoveDownTrack {
        /// Receiver.
        subscriber: ParticipantId,
        /// Track that ended.
        track: TrackKey,
    },
    /// Ask the publisher for a keyframe (PLI) on this layer.
    RequestKeyframe {
        /// Track.
        track: TrackKey,
        /// Layer.
        layer: Layer,
    },
}

/// Why a data message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDrop {
    /// The receiver's queue is full.
    QueueFull,
    /// No such participant.
    UnknownTarget,
}

/// One data message waiting to be written into a participant's DataChannel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedData {
    /// true: the reliable channel; false: the lossy channel.
    pub reliable: bool,
    /// Encoded envelope.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct LayerRate {
    window_start: Instant,
    bytes_in_window: u64,
    bps: u64,
}

#[derive(Debug)]
struct Track {
    kind: TrackKind,
    muted: bool,
    rates: BTreeMap<Layer, LayerRate>,
    last_keyframe_request: HashMap<Layer, Instant>,
}

#[derive(Debug)]
struct Subscription {
    /// Layer currently forwarded (None until the first keyframe arrives for video).
    current: Option<Layer>,
    /// Layer we want; forwarding switches on its next keyframe.
    target: Layer,
    /// Since when we have been waiting for a keyframe on `target` (None: not waiting).
    waiting_since: Option<Instant>,
    /// Since when an upgrade has looked affordable.
    upgrade_candidate_since: Option<Instant>,
    /// Highest layer the subscriber asked for (from its rendered size).
    max_layer: Layer,
    /// The subscriber paused this track.
    paused: bool,
}

#[derive(Debug)]
struct Participant {
    room: String,
    auto_subscribe: bool,
    bandwidth_bps: Option<u64>,
    subscriptions: HashMap<TrackKey, Subscription>,
    published: Vec<u32>,
    queue: VecDeque<QueuedData>,
    queued_bytes: usize,
}

/// Counters the core keeps; the driver exports them as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Keyframe requests emitted.
    pub keyframe_requests: u64,
    /// Times a subscriber started waiting for a keyframe.
    pub keyframe_waits: u64,
    /// Media units dropped because the subscriber waits for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Data messages dropped because a queue was full.
    pub data_dropped_queue_full: u64,
}

/// All rooms of one SFU. Participants in different rooms never see each other.
#[derive(Debug, Default)]
pub struct Rooms {
    tuning: CoreTuning,
    participants: HashMap<ParticipantId, Participant>,
    tracks: HashMap<TrackKey, Track>,
    members: HashMap<String, Vec<ParticipantId>>,
    stats: CoreStats,
}

impl Rooms {
    /// Empty state with the given tuning.
    pub fn new(tuning: CoreTuning) -> Rooms {
        Rooms {
            tuning,
            ..Rooms::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Participants across all rooms.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Published tracks across all rooms.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Subscriptions across all participants.
    pub fn subscription_count(&self) -> usize {
        self.participants
            .values()
            .map(|p| p.subscriptions.len())
            .sum()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.members.len()
    }

    /// Queued data bytes across all participants.
    pub fn queued_bytes(&self) -> usize {
        self.participants.values().map(|p| p.queued_bytes).sum()
    }

    /// Members of `room`.
    pub fn members(&self, room: &str) -> &[ParticipantId] {
        self.members.get(room).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Room of `p`.
    pub fn room_of(&self, p: ParticipantId) -> Option<&str> {
        self.participants.get(&p).map(|x| x.room.as_str())
    }

    /// Adds a participant; returns the down-tracks it must get for already published tracks
    /// (automatic subscription). A participant that is already in leaves first (its tracks
    /// end for the others), so it is never listed twice or leaves tracks behind.
    pub fn join(&mut self, room: &str, p: ParticipantId) -> Vec<Action> {
        let mut actions = self.leave(p);
        self.participants.insert(
            p,
            Participant {
                room: room.to_owned(),
                auto_subscribe: true,
                bandwidth_bps: None,
                subscriptions: HashMap::new(),
                published: Vec::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
            },
        );
        self.members.entry(room.to_owned()).or_default().push(p);
        let existing: Vec<TrackKey> = self
            .tracks
            .keys()
            .filter(|k| k.publisher != p && self.room_of(k.publisher) == Some(room))
            .copied()
            .collect();
        for key in existing {
            self.subscribe(p, key, &mut actions);
        }
        actions
    }

    /// Turns automatic subscription to new tracks on or off for `p`.
    pub fn set_auto_subscribe(&mut self, p: ParticipantId, on: bool) {
        if let Some(part) = self.participants.get_mut(&p) {
            part.auto_subscribe = on;
        }
    }

    /// Removes `p`, its tracks and its subscriptions; returns the down-tracks to remove from others.
    pub fn leave(&mut self, p: ParticipantId) -> Vec<Action> {
        let Some(part) = self.participants.remove(&p) else {
            return Vec::new();
        };
        if let Some(m) = self.members.get_mut(&part.room) {
            m.retain(|x| *x != p);
            if m.is_empty() {
                self.members.remove(&part.room);
            }
        }
        let mut actions = Vec::new();
        for index in part.published {
            self.unpublish_inner(
                TrackKey {
                    publisher: p,
                    index,
                },
                &mut actions,
            );
        }
        actions
    }

    /// `publisher` started sending a track; everyone else in the room with automatic
    /// subscription gets a down-track.
    pub fn publish(
        &mut self,
        publisher: ParticipantId,
        index: u32,
        kind: TrackKind,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(part) = self.participants.get_mut(&publisher) else {
            return actions;
        };
        let key = TrackKey { publisher, index };
        if self.tracks.contains_key(&key) {
            return actions;
        }
        part.published.push(index);
        let room = part.room.clone();
        self.tracks.insert(
            key,
            Track {
                kind,
                muted: false,
                rates: BTreeMap::new(),
                last_keyframe_request: HashMap::new(),
            },
        );
        let others: Vec<ParticipantId> = self
            .members(&room)
            .iter()
            .copied()
            .filter(|o| *o != publisher)
            .collect();
        for o in others {
            if self.participants.get(&o).is_some_and(|x| x.auto_subscribe) {
                self.subscribe(o, key, &mut actions);
            }
        }
        actions
    }

    /// The publisher stopped a track.
    pub fn unpublish(&mut self, key: TrackKey) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(part) = self.participants.get_mut(&key.publisher) {
            part.published.retain(|i| *i != key.index);
        }
        self.unpublish_inner(key, &mut actions);
        actions
    }

    fn unpublish_inner(&mut self, key: TrackKey, actions: &mut Vec<Action>) {
        if self.tracks.remove(&key).is_none() {
            return;
        }
        let mut subs: Vec<ParticipantId> = self
            .participants
            .iter_mut()
            .filter_map(|(id, part)| part.subscriptions.remove(&key).map(|_| *id))
            .collect();
        subs.sort();
        for subscriber in subs {
            actions.push(Action::RemoveDownTrack {
                subscriber,
                track: key,
            });
        }
    }

    /// Subscribes `subscriber` to `key` (explicit subscription over signaling).
    pub fn subscribe_to(&mut self, subscriber: ParticipantId, key: TrackKey) -> Vec<Action> {
        let mut actions = Vec::new();
        let same_room = self.room_of(subscriber).is_some()
            && self.room_of(subscriber) == self.room_of(key.publisher);
        if same_room && subscriber != key.publisher {
            self.subscribe(subscriber, key, &mut actions);
        }
        actions
    }

    /// Drops the subscription.
    pub fn unsubscribe(&mut self, subscriber: ParticipantId, key: TrackKey) -> Vec<Action> {
        let removed = self
            .participants
            .get_mut(&subscriber)
            .and_then(|p| p.subscriptions.remove(&key))
            .is_some();
        if removed {
            vec![Action::RemoveDownTrack {
                subscriber,
                track: key,
            }]
        } else {
            Vec::new()
        }
    }

    fn subscribe(&mut self, subscriber: ParticipantId, key: TrackKey, actions: &mut Vec<Action>) {
        let Some(track) = self.tracks.get(&key) else {
            return;
        };
        let kind = track.kind;
        let Some(part) = self.participants.get_mut(&subscriber) else {
            return;
        };
        if part.subscriptions.contains_key(&key) {
            return;
        }
        part.subscriptions.insert(
            key,
            Subscription {
                current: None,
                target: Layer(0),
                waiting_since: None,
                upgrade_candidate_since: None,
                max_layer: Layer(2),
                paused: false,
            },
        );
        actions.push(Action::AddDownTrack {
            subscriber,
            track: key,
            kind,
        });
    }

    /// The subscriber's down-track is negotiated and ready: start forwarding. For video this
    /// picks a starting layer and asks for a keyframe right away (fast first frame).
    pub fn down_track_ready(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(track) = self.tracks.get(&key) else {
            return actions;
        };
        let kind = track.kind;
        let target = self.pick_layer(subscriber, key, now);
        let Some(sub) = self
            .participants
            .get_mut(&subscriber)
            .and_then(|p| p.subscriptions.get_mut(&key))
        else {
            return actions;
        };
        sub.target = target;
        if kind == TrackKind::Audio {
            sub.current = Some(Layer(0));
            return actions;
        }
        // Whatever was routed before the track was ready never reached the subscriber: it
        // starts at a keyframe (else `current` stays set, the wait never ends and the
        // publisher is asked for a keyframe on every tick).
        sub.current = None;
        sub.waiting_since = Some(now);
        self.stats.keyframe_waits += 1;
        self.request_keyframe(key, target, now, &mut actions);
        actions
    }

    /// Muting stops forwarding the track to everyone; unmuting asks for a keyframe.
    pub fn set_muted(&mut self, key: TrackKey, muted: bool, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(track) = self.tracks.get_mut(&key) else {
            return actions;
        };
        let was = track.muted;
        track.muted = muted;
        if was && !muted && track.kind == TrackKind::Video {
            self.resync(key, now, &mut actions);
        }
        actions
    }

    /// A subscriber pauses/resumes one track (e.g. it is off-screen).
    pub fn set_paused(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        paused: bool,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let is_video = self
            .tracks
            .get(&key)
            .is_some_and(|t| t.kind == TrackKind::Video);
        let Some(sub) = self
            .participants
            .get_mut(&subscriber)
            .and_then(|p| p.subscriptions.get_mut(&key))
        else {
            return actions;
        };
        let resume = sub.paused && !paused;
        sub.paused = paused;
        if resume && is_video {
            sub.current = None;
            sub.waiting_since = Some(now);
            let target = sub.target;
            self.stats.keyframe_waits += 1;
            self.request_keyframe(key, target, now, &mut actions);
        }
        actions
    }

    fn resync(&mut self, key: TrackKey, now: Instant, actions: &mut Vec<Action>) {
        let mut layers = Vec::new();
        for part in self.participants.values_mut() {
            if let Some(sub) = part.subscriptions.get_mut(&key) {
                sub.current = None;
                sub.waiting_since = Some(now);
                self.stats.keyframe_waits += 1;
                if !layers.contains(&sub.target) {
                    layers.push(sub.target);
                }
            }
        }
        layers.sort();
        for l in layers {
            self.request_keyframe(key, l, now, actions);
        }
    }

    /// Largest size the subscriber renders this track at, as a layer cap.
    pub fn set_max_layer(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        max: Layer,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(sub) = self
            .participants
            .get_mut(&subscriber)
            .and_then(|p| p.subscriptions.get_mut(&key))
        {
            sub.max_layer = max;
        }
        self.reselect(subscriber, now)
    }

    /// New bandwidth estimate (from TWCC/REMB) for the path to `subscriber`.
    pub fn set_bandwidth(
        &mut self,
        subscriber: ParticipantId,
        bps: u64,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.bandwidth_bps = Some(bps);
        }
        self.reselect(subscriber, now)
    }

    /// Re-runs layer selection for every video subscription of `subscriber`.
    pub fn reselect(&mut self, subscriber: ParticipantId, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let keys: Vec<TrackKey> = match self.participants.get(&subscriber) {
            Some(p) => p.subscriptions.keys().copied().collect(),
            None => return actions,
        };
        for key in keys {
            let is_video = self
                .tracks
                .get(&key)
                .is_some_and(|t| t.kind == TrackKind::Video);
            if !is_video {
                continue;
            }
            let want = self.pick_layer(subscriber, key, now);
            let Some(sub) = self
                .participants
                .get_mut(&subscriber)
                .and_then(|p| p.subscriptions.get_mut(&key))
            else {
                continue;
            };
            if want != sub.target {
                sub.target = want;
                if sub.current != Some(want) {
                    if sub.waiting_since.is_none() {
                        self.stats.keyframe_waits += 1;
                    }
                    sub.waiting_since = Some(now);
                    self.request_keyframe(key, want, now, &mut actions);
                } else {
                    sub.waiting_since = None;
                }
            }
        }
        actions
    }

    /// Layer selection with hysteresis: the highest layer whose measured bitrate fits the
    /// estimate (times `headroom`) and the subscriber's cap. Downgrades apply at once; an upgrade
    /// must stay affordable with `upgrade_margin` for `upgrade_hold`.
    fn pick_layer(&mut self, subscriber: ParticipantId, key: TrackKey, now: Instant) -> Layer {
        let tuning = self.tuning.clone();
        let Some(track) = self.tracks.get(&key) else {
            return Layer(0);
        };
        // A layer the publisher stopped sending (e.g. its resolution dropped, so the encoder
        // sends fewer layers) keeps its last measured rate: leave it out once it has been
        // silent for 1.5 rate windows, unless nothing flows at all.
        let flowing =
            |r: &LayerRate| now.duration_since(r.window_start) < tuning.rate_window * 3 / 2;
        let any_flowing = track.rates.values().any(flowing);
        let layers: Vec<(Layer, u64)> = track
            .rates
            .iter()
            .filter(|(_, r)| !any_flowing || flowing(r))
            .map(|(l, r)| (*l, effective_bps(r, now, tuning.rate_window)))
            .collect();
        let Some(part) = self.participants.get_mut(&subscriber) else {
            return Layer(0);
        };
        let budget = part.bandwidth_bps;
        let Some(sub) = part.subscriptions.get_mut(&key) else {
            return Layer(0);
        };
        if layers.is_empty() {
            return sub.target.min(sub.max_layer);
        }
        let lowest = layers[0].0;
        let allowed: Vec<(Layer, u64)> = layers
            .iter()
            .copied()
            .filter(|(l, _)| *l <= sub.max_layer)
            .collect();
        if allowed.is_empty() {
            return lowest;
        }
        let Some(budget) = budget else {
            // No estimate (estimation off): the subscriber's cap decides.
            sub.upgrade_candidate_since = None;
            return allowed[allowed.len() - 1].0;
        };
        let budget = budget as f64 * tuning.headroom;
        let fits = |bps: u64, margin: f64| bps as f64 * margin <= budget;
        let best = allowed
            .iter()
            .rev()
            .find(|(_, bps)| fits(*bps, 1.0))
            .map(|x| x.0)
            .unwrap_or(allowed[0].0);
        let current = sub.target;
        if best <= current || !allowed.iter().any(|(l, _)| *l == current) {
            sub.upgrade_candidate_since = None;
            return best;
        }
        // Upgrade: the higher layer must fit with margin, continuously for `upgrade_hold`.
        let next_ok = allowed
            .iter()
            .rev()
            .find(|(l, bps)| *l > current && fits(*bps, tuning.upgrade_margin))
            .map(|x| x.0);
        match next_ok {
            Some(up) => match sub.upgrade_candidate_since {
                Some(since) if now.duration_since(since) >= tuning.upgrade_hold => {
                    sub.upgrade_candidate_since = None;
                    up
                }
                Some(_) => current,
                None => {
                    sub.upgrade_candidate_since = Some(now);
                    current
                }
            },
            None => {
                sub.upgrade_candidate_since = None;
                current
            }
        }
    }

    fn request_keyframe(
        &mut self,
        key: TrackKey,
        layer: Layer,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let throttle = self.tuning.keyframe_throttle;
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        if track.kind != TrackKind::Video {
            return;
        }
        if let Some(last) = track.last_keyframe_request.get(&layer) {
            if now.duration_since(*last) < throttle {
                return;
            }
        }
        track.last_keyframe_request.insert(layer, now);
        self.stats.keyframe_requests += 1;
        out.push(Action::RequestKeyframe { track: key, layer });
    }

    /// A subscriber reported loss/asked for a keyframe (PLI/FIR on its down-track).
    pub fn subscriber_keyframe_request(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let layer = self
            .participants
            .get(&subscriber)
            .and_then(|p| p.subscriptions.get(&key))
            .and_then(|s| s.current.or(Some(s.target)));
        if let Some(layer) = layer {
            self.request_keyframe(key, layer, now, &mut actions);
        }
        actions
    }

    /// The publisher's stream had a gap (lost packets not recovered): ask for a keyframe.
    pub fn publisher_loss(&mut self, key: TrackKey, layer: Layer, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.request_keyframe(key, layer, now, &mut actions);
        actions
    }

    /// A media unit (audio packet or video frame) arrived from a publisher. Fills `out` with the
    /// subscribers that must receive it, and returns any keyframe requests.
    pub fn route_media(
        &mut self,
        key: TrackKey,
        layer: Layer,
        keyframe: bool,
        bytes: usize,
        now: Instant,
        out: &mut Vec<ParticipantId>,
    ) -> Vec<Action> {
        out.clear();
        let window = self.tuning.rate_window;
        let Some(track) = self.tracks.get_mut(&key) else {
            return Vec::new();
        };
        let rate = track.rates.entry(layer).or_insert(LayerRate {
            window_start: now,
            bytes_in_window: 0,
            bps: 0,
        });
        if now.duration_since(rate.window_start) >= window {
            let secs = now
                .duration_since(rate.window_start)
                .as_secs_f64()
                .max(1e-3);
            rate.bps = (rate.bytes_in_window as f64 * 8.0 / secs) as u64;
            rate.bytes_in_window = 0;
            rate.window_start = now;
        }
        rate.bytes_in_window += bytes as u64;
        if track.muted {
            return Vec::new();
        }
        let kind = track.kind;
        let room = match self.participants.get(&key.publisher) {
            Some(p) => p.room.clone(),
            None => return Vec::new(),
        };
        let mut dropped = 0;
        for id in self.members.get(&room).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(sub) = self
                .participants
                .get_mut(id)
                .and_then(|p| p.subscriptions.get_mut(&key))
            else {
                continue;
            };
            if sub.paused {
                continue;
            }
            if kind == TrackKind::Audio {
                if sub.current.is_some() {
                    out.push(*id);
                }
                continue;
            }
            if layer == sub.target && sub.current != Some(layer) {
                if keyframe {
                    sub.current = Some(layer);
                    sub.waiting_since = None;
                } else {
                    // Keep forwarding the old layer until the new one has a keyframe.
                    if sub.current.is_none() {
                        dropped += 1;
                    }
                    continue;
                }
            }
            if sub.current == Some(layer) {
                out.push(*id);
            }
        }
        self.stats.dropped_waiting_keyframe += dropped;
        Vec::new()
    }

    /// Periodic work: re-runs layer selection (layers appear as a publisher starts sending them)
    /// and re-requests keyframes for subscribers that waited too long.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            actions.extend(self.reselect(id, now));
        }
        let retry = self.tuning.keyframe_retry;
        let mut want: Vec<(TrackKey, Layer)> = Vec::new();
        for part in self.participants.values() {
            for (key, sub) in &part.subscriptions {
                if let Some(since) = sub.waiting_since {
                    if now.duration_since(since) >= retry && !want.contains(&(*key, sub.target)) {
                        want.push((*key, sub.target));
                    }
                }
            }
        }
        want.sort();
        for (key, layer) in want {
            self.request_keyframe(key, layer, now, &mut actions);
        }
        actions
    }

    /// Layer currently forwarded to `subscriber` for `key`.
    pub fn current_layer(&self, subscriber: ParticipantId, key: TrackKey) -> Option<Layer> {
        self.participants
            .get(&subscriber)?
            .subscriptions
            .get(&key)?
            .current
    }

    /// Layer `subscriber` is switching to (or already on).
    pub fn target_layer(&self, subscriber: ParticipantId, key: TrackKey) -> Option<Layer> {
        Some(
            self.participants
                .get(&subscriber)?
                .subscriptions
                .get(&key)?
                .target,
        )
    }

    /// Bitrates the path to `subscriber` should sustain: `(minimum, desired)` in bit/s. The
    /// minimum is what the layers forwarded now need; the desired rate is what the best layers
    /// the subscriber may get (its caps) would need. The driver hands both to the bandwidth
    /// estimator so it probes towards upgrades.
    pub fn bitrate_targets(&self, subscriber: ParticipantId, now: Instant) -> (u64, u64) {
        let window = self.tuning.rate_window;
        let Some(part) = self.participants.get(&subscriber) else {
            return (0, 0);
        };
        let (mut min, mut desired) = (0u64, 0u64);
        for (key, sub) in &part.subscriptions {
            let Some(track) = self.tracks.get(key) else {
                continue;
            };
            if sub.paused || track.muted {
                continue;
            }
            let rate = |l: Layer| {
                track
                    .rates
                    .get(&l)
                    .map_or(0, |r| effective_bps(r, now, window))
            };
            let cur = sub.current.unwrap_or(sub.target);
            min += rate(cur);
            let best = track
                .rates
                .keys()
                .rev()
                .find(|l| **l <= sub.max_layer)
                .copied()
                .unwrap_or(cur);
            desired += rate(best).max(rate(cur));
        }
        (min, desired)
    }

    /// Count of subscriptions per forwarded layer (for the layer gauge).
    pub fn layer_histogram(&self) -> [u64; 3] {
        let mut h = [0u64; 3];
        for p in self.participants.values() {
            for (k, s) in &p.subscriptions {
                let video = self
                    .tracks
                    .get(k)
                    .is_some_and(|t| t.kind == TrackKind::Video);
                if let (true, Some(l)) = (video, s.current) {
                    h[usize::from(l.0.min(2))] += 1;
                }
            }
        }
        h
    }

    /// Queues `bytes` for `to`. Lossy messages are dropped when the queue is full; reliable ones
    /// are refused so the sender sees backpressure.
    pub fn enqueue_data(
        &mut self,
        to: ParticipantId,
        reliable: bool,
        bytes: Vec<u8>,
    ) -> Result<(), DataDrop> {
        let limit = self.tuning.data_queue_bytes;
        let Some(p) = self.participants.get_mut(&to) else {
            return Err(DataDrop::UnknownTarget);
        };
        if p.queued_bytes + bytes.len() > limit {
            self.stats.data_dropped_queue_full += 1;
            return Err(DataDrop::QueueFull);
        }
        p.queued_bytes += bytes.len();
        p.queue.push_back(QueuedData { reliable, bytes });
        Ok(())
    }

    /// Takes queued messages for `p` while `can_send` accepts them (the driver checks the
    /// DataChannel's buffered amount); stops at the first refusal, keeping order.
    pub fn drain_data(&mut self, p: ParticipantId, mut can_send: impl FnMut(&QueuedData) -> bool) {
        let Some(part) = self.participants.get_mut(&p) else {
            return;
        };
        while let Some(front) = part.queue.front() {
            if !can_send(front) {
                break;
            }
            if let Some(m) = part.queue.pop_front() {
                part.queued_bytes -= m.bytes.len();
            }
        }
    }

    /// Bytes queued for `p`.
    pub fn queued_bytes_of(&self, p: ParticipantId) -> usize {
        self.participants.get(&p).map_or(0, |x| x.queued_bytes)
    }
}

fn effective_bps(r: &LayerRate, now: Instant, window: Duration) -> u64 {
    // Before the first full window, extrapolate from what we have.
    if r.bps == 0 {
        let secs = now.duration_since(r.window_start).as_secs_f64();
        if secs >= window.as_secs_f64() / 4.0 {
            return (r.bytes_in_window as f64 * 8.0 / secs) as u64;
        }
    }
    r.bps
}

#[cfg(test)]
mod tests;
