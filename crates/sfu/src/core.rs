//! Sans-IO room logic: who is in a room, which tracks they publish, who receives what, which
//! simulcast layer each subscriber gets, when to ask a publisher for a keyframe, and the bounded
//! per-participant data queues.
//!
//! Nothing here touches sockets, str0m or the clock: the driver feeds in events with an `Instant`
//! and executes the returned [`Action`]s. Tests script packets and instants directly.
//!
//! This file holds membership, publishing, subscriptions, keyframe handling and routing; the
//! measurement and choice of simulcast layers are in `layers`, the data queues in `data`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod data;
mod layers;

pub use data::{DataDrop, QueuedData};
pub use layers::Layer;

use data::DataQueue;
use layers::LayerRate;

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

impl Subscription {
    /// Stops forwarding until a keyframe of the target layer arrives: nothing sent so far can
    /// be continued (a new down-track, a resumed or unmuted track).
    fn restart_at_keyframe(&mut self, now: Instant, stats: &mut CoreStats) {
        self.current = None;
        self.waiting_since = Some(now);
        stats.keyframe_waits += 1;
    }
}

#[derive(Debug)]
struct Participant {
    room: String,
    auto_subscribe: bool,
    bandwidth_bps: Option<u64>,
    subscriptions: HashMap<TrackKey, Subscription>,
    published: Vec<u32>,
    /// Outgoing DataChannel messages waiting for room in the channel.
    data: DataQueue,
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

/// `subscriber`'s subscription to `key`, if both exist. Takes the participant map rather than
/// `&mut Rooms` so the caller can still update the other fields (stats, tracks) while it holds
/// the subscription.
#[inline]
fn subscription_mut(
    participants: &mut HashMap<ParticipantId, Participant>,
    subscriber: ParticipantId,
    key: TrackKey,
) -> Option<&mut Subscription> {
    participants
        .get_mut(&subscriber)?
        .subscriptions
        .get_mut(&key)
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
        self.participants.values().map(|p| p.data.bytes()).sum()
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
                data: DataQueue::default(),
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
        let Some(sub) = subscription_mut(&mut self.participants, subscriber, key) else {
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
        sub.restart_at_keyframe(now, &mut self.stats);
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
        let Some(sub) = subscription_mut(&mut self.participants, subscriber, key) else {
            return actions;
        };
        let resume = sub.paused && !paused;
        sub.paused = paused;
        if resume && is_video {
            sub.restart_at_keyframe(now, &mut self.stats);
            let target = sub.target;
            self.request_keyframe(key, target, now, &mut actions);
        }
        actions
    }

    fn resync(&mut self, key: TrackKey, now: Instant, actions: &mut Vec<Action>) {
        let mut layers = Vec::new();
        for part in self.participants.values_mut() {
            if let Some(sub) = part.subscriptions.get_mut(&key) {
                sub.restart_at_keyframe(now, &mut self.stats);
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
        track
            .rates
            .entry(layer)
            .or_insert_with(|| LayerRate::new(now))
            .record(bytes, now, window);
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
            let Some(sub) = subscription_mut(&mut self.participants, *id, key) else {
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
}

#[cfg(test)]
mod tests;
