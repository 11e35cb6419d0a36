//! Simulcast layers: each layer's bitrate measured as its media arrives, and the choice of the
//! layer each video subscriber gets from those rates, its bandwidth estimate and its cap, with
//! hysteresis against flapping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    subscription_mut, Action, CoreTuning, ParticipantId, Rooms, Subscription, TrackKey, TrackKind,
};

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

/// One layer's bitrate, measured over windows of `rate_window`.
#[derive(Debug)]
pub(super) struct LayerRate {
    window_start: Instant,
    bytes_in_window: u64,
    /// The rate of the last full window (0 until one closed).
    bps: u64,
}

impl LayerRate {
    pub(super) fn new(now: Instant) -> LayerRate {
        LayerRate {
            window_start: now,
            bytes_in_window: 0,
            bps: 0,
        }
    }

    /// Counts `bytes` that arrived at `now`; a window that is over is closed first.
    pub(super) fn record(&mut self, bytes: usize, now: Instant, window: Duration) {
        if now.duration_since(self.window_start) >= window {
            let secs = now
                .duration_since(self.window_start)
                .as_secs_f64()
                .max(1e-3);
            self.bps = (self.bytes_in_window as f64 * 8.0 / secs) as u64;
            self.bytes_in_window = 0;
            self.window_start = now;
        }
        self.bytes_in_window += bytes as u64;
    }

    /// The rate (bit/s): the last full window's, or before the first full window, extrapolated
    /// from what arrived once a quarter window has passed.
    pub(super) fn effective_bps(&self, now: Instant, window: Duration) -> u64 {
        if self.bps == 0 {
            let secs = now.duration_since(self.window_start).as_secs_f64();
            if secs >= window.as_secs_f64() / 4.0 {
                return (self.bytes_in_window as f64 * 8.0 / secs) as u64;
            }
        }
        self.bps
    }
}

/// A track's layers to choose from, lowest first, with their rates. A layer the publisher
/// stopped sending (e.g. its resolution dropped, so the encoder sends fewer layers) keeps its
/// last measured rate: leave it out once it has been silent for 1.5 rate windows, unless
/// nothing flows at all.
fn track_layers(
    rates: &BTreeMap<Layer, LayerRate>,
    now: Instant,
    window: Duration,
) -> Vec<(Layer, u64)> {
    let flowing = |r: &LayerRate| now.duration_since(r.window_start) < window * 3 / 2;
    let any_flowing = rates.values().any(flowing);
    rates
        .iter()
        .filter(|(_, r)| !any_flowing || flowing(r))
        .map(|(l, r)| (*l, r.effective_bps(now, window)))
        .collect()
}

impl Rooms {
    /// Largest size the subscriber renders this track at, as a layer cap.
    pub fn set_max_layer(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        max: Layer,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(sub) = subscription_mut(&mut self.participants, subscriber, key) {
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
            let Some(sub) = subscription_mut(&mut self.participants, subscriber, key) else {
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

    /// The layer `subscriber` should get of `key` now ([`select_layer`]); layer 0 for an
    /// unknown track or subscription.
    pub(super) fn pick_layer(
        &mut self,
        subscriber: ParticipantId,
        key: TrackKey,
        now: Instant,
    ) -> Layer {
        let Some(track) = self.tracks.get(&key) else {
            return Layer(0);
        };
        let layers = track_layers(&track.rates, now, self.tuning.rate_window);
        let Some(part) = self.participants.get_mut(&subscriber) else {
            return Layer(0);
        };
        let budget = part.bandwidth_bps;
        let Some(sub) = part.subscriptions.get_mut(&key) else {
            return Layer(0);
        };
        select_layer(&layers, budget, sub, &self.tuning, now)
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
                    .map_or(0, |r| r.effective_bps(now, window))
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
}

/// Layer selection with hysteresis: the highest layer whose measured bitrate fits the
/// estimate (`budget` times `headroom`) and the subscriber's cap. Downgrades apply at once; an
/// upgrade must stay affordable with `upgrade_margin` for `upgrade_hold`. `layers` are the
/// track's layers with their rates, lowest first ([`track_layers`]); without an estimate the
/// cap alone decides.
fn select_layer(
    layers: &[(Layer, u64)],
    budget: Option<u64>,
    sub: &mut Subscription,
    tuning: &CoreTuning,
    now: Instant,
) -> Layer {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    const WINDOW: Duration = Duration::from_secs(1);

    fn sub(target: u8, max_layer: u8) -> Subscription {
        Subscription {
            current: Some(Layer(target)),
            target: Layer(target),
            waiting_since: None,
            upgrade_candidate_since: None,
            max_layer: Layer(max_layer),
            paused: false,
        }
    }

    #[test]
    fn a_layer_rate_is_extrapolated_until_its_first_window_closes() {
        let t0 = Instant::now();
        let mut r = LayerRate::new(t0);
        r.record(10_000, t0, WINDOW);
        assert_eq!(r.effective_bps(ms(t0, 100), WINDOW), 0, "too early to tell");
        // 10 kB in 250 ms: 320 kbit/s.
        assert_eq!(r.effective_bps(ms(t0, 250), WINDOW), 320_000);
        r.record(15_000, ms(t0, 500), WINDOW);
        // The window closes at the first unit after it: 25 kB over 1 s.
        r.record(1_000, ms(t0, 1_000), WINDOW);
        assert_eq!(r.effective_bps(ms(t0, 1_100), WINDOW), 200_000);
    }

    #[test]
    fn a_silent_layer_is_left_out_while_another_flows() {
        let t0 = Instant::now();
        let mut rates = BTreeMap::new();
        let mut low = LayerRate::new(t0);
        low.record(1_000, t0, WINDOW);
        rates.insert(Layer(0), low);
        let mut high = LayerRate::new(ms(t0, 1_000));
        high.record(1_000, ms(t0, 1_000), WINDOW);
        rates.insert(Layer(2), high);
        let layers = |at| -> Vec<Layer> {
            track_layers(&rates, at, WINDOW)
                .into_iter()
                .map(|(l, _)| l)
                .collect()
        };
        assert_eq!(layers(ms(t0, 1_400)), vec![Layer(0), Layer(2)]);
        assert_eq!(
            layers(ms(t0, 1_500)),
            vec![Layer(2)],
            "layer 0 silent 1.5 s"
        );
        assert_eq!(
            layers(ms(t0, 10_000)),
            vec![Layer(0), Layer(2)],
            "nothing flows: every layer stays"
        );
    }

    #[test]
    fn without_an_estimate_the_cap_decides_and_with_one_upgrades_wait() {
        let t0 = Instant::now();
        let tuning = CoreTuning::default();
        let layers = [
            (Layer(0), 150_000),
            (Layer(1), 500_000),
            (Layer(2), 1_500_000),
        ];
        let mut s = sub(0, 1);
        assert_eq!(select_layer(&layers, None, &mut s, &tuning, t0), Layer(1));
        assert_eq!(select_layer(&[], None, &mut s, &tuning, t0), Layer(0));
        let mut capped = sub(0, 0);
        assert_eq!(
            select_layer(&layers[1..], None, &mut capped, &tuning, t0),
            Layer(1),
            "only layers above the cap flow: the lowest of them"
        );

        // 2 Mbit/s fits layer 2 with margin (1.5 * 1.15 <= 2 * 0.9), but only after the hold.
        let mut s = sub(0, 2);
        let budget = Some(2_000_000);
        assert_eq!(select_layer(&layers, budget, &mut s, &tuning, t0), Layer(0));
        assert_eq!(s.upgrade_candidate_since, Some(t0));
        let held = t0 + tuning.upgrade_hold;
        assert_eq!(
            select_layer(&layers, budget, &mut s, &tuning, held),
            Layer(2)
        );
        // A downgrade applies at once.
        s.target = Layer(2);
        let low = Some(300_000);
        assert_eq!(select_layer(&layers, low, &mut s, &tuning, held), Layer(0));
        assert_eq!(s.upgrade_candidate_since, None);
    }
}
