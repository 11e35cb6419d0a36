use super::*;

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

fn t0() -> Instant {
    Instant::now()
}

fn ms(t: Instant, n: u64) -> Instant {
    t + Duration::from_millis(n)
}

fn video(publisher: ParticipantId) -> TrackKey {
    TrackKey {
        publisher,
        index: 0,
    }
}

/// Room "r" with A and B in it; A publishes a video track, so B is subscribed to it (its
/// down-track not ready yet).
fn a_publishes_to_b() -> Rooms {
    let mut r = Rooms::default();
    r.join("r", A);
    r.join("r", B);
    r.publish(A, 0, TrackKind::Video);
    r
}

/// [`a_publishes_to_b`] with B's down-track ready at `now` and A's first keyframe forwarded to B.
fn b_receives_video(now: Instant) -> Rooms {
    let mut r = a_publishes_to_b();
    r.down_track_ready(B, video(A), now);
    let mut out = Vec::new();
    r.route_media(video(A), Layer(0), true, 10, now, &mut out);
    assert_eq!(out, vec![B]);
    r
}

/// [`a_publishes_to_b`] with B's down-track ready at `start`, then two seconds of A's three
/// simulcast layers ([`feed_layers`]); returns the rooms and the time of the last frame.
fn b_receives_simulcast(start: Instant) -> (Rooms, Instant) {
    let mut r = a_publishes_to_b();
    r.down_track_ready(B, video(A), start);
    let now = feed_layers(&mut r, video(A), start, 2);
    (r, now)
}

/// The action that asks the publisher of `track` for a keyframe on `layer`.
fn keyframe_request(track: TrackKey, layer: u8) -> Action {
    Action::RequestKeyframe {
        track,
        layer: Layer(layer),
    }
}

/// What the rooms still hold: participants, tracks, subscriptions, rooms and queued data
/// bytes; all zero once everyone has left.
fn held(r: &Rooms) -> [usize; 5] {
    [
        r.participant_count(),
        r.track_count(),
        r.subscription_count(),
        r.room_count(),
        r.queued_bytes(),
    ]
}

/// Feeds `secs` seconds of three simulcast layers at 150k/500k/1.5M bit/s, 30 fps, starting at `t`.
fn feed_layers(rooms: &mut Rooms, key: TrackKey, t: Instant, secs: u64) -> Instant {
    let mut out = Vec::new();
    let mut now = t;
    for frame in 0..secs * 30 {
        now = t + Duration::from_micros(frame * 33_333);
        for (l, bps) in [(0u8, 150_000u64), (1, 500_000), (2, 1_500_000)] {
            let bytes = (bps / 8 / 30) as usize;
            rooms.route_media(key, Layer(l), frame % 30 == 0, bytes, now, &mut out);
        }
    }
    now
}

#[test]
fn auto_subscription_on_publish_and_join() {
    let mut r = Rooms::default();
    assert!(r.join("r", A).is_empty());
    assert!(r.join("r", B).is_empty());
    let acts = r.publish(A, 0, TrackKind::Video);
    assert_eq!(
        acts,
        vec![Action::AddDownTrack {
            subscriber: B,
            track: video(A),
            kind: TrackKind::Video
        }]
    );
    // Late joiner gets the existing track; other rooms do not.
    let acts = r.join("r", C);
    assert_eq!(acts.len(), 1);
    assert!(r.join("other", ParticipantId(9)).is_empty());
    assert_eq!(r.subscription_count(), 2);
}

#[test]
fn video_waits_for_keyframe_then_forwards() {
    let now = t0();
    let mut r = a_publishes_to_b();
    let acts = r.down_track_ready(B, video(A), now);
    assert_eq!(acts, vec![keyframe_request(video(A), 0)]);
    let mut out = Vec::new();
    r.route_media(video(A), Layer(0), false, 1000, ms(now, 10), &mut out);
    assert!(
        out.is_empty(),
        "delta frame before keyframe must not be forwarded"
    );
    assert_eq!(r.stats().dropped_waiting_keyframe, 1);
    r.route_media(video(A), Layer(0), true, 1000, ms(now, 20), &mut out);
    assert_eq!(out, vec![B]);
    r.route_media(video(A), Layer(0), false, 1000, ms(now, 30), &mut out);
    assert_eq!(out, vec![B]);
    // The publisher never receives its own media.
    assert!(!out.contains(&A));
}

#[test]
fn audio_forwards_immediately_and_never_asks_keyframes() {
    let now = t0();
    let mut r = Rooms::default();
    r.join("r", A);
    r.join("r", B);
    let key = TrackKey {
        publisher: A,
        index: 1,
    };
    r.publish(A, 1, TrackKind::Audio);
    let mut out = Vec::new();
    r.route_media(key, Layer(0), false, 100, now, &mut out);
    assert!(out.is_empty(), "not ready yet");
    assert!(r.down_track_ready(B, key, now).is_empty());
    r.route_media(key, Layer(0), false, 100, now, &mut out);
    assert_eq!(out, vec![B]);
}

#[test]
fn keyframe_requests_are_throttled_and_retried() {
    let now = t0();
    let mut r = a_publishes_to_b();
    r.join("r", C);
    assert_eq!(r.down_track_ready(B, video(A), now).len(), 1);
    // Second subscriber within the throttle window: no second PLI.
    assert!(r.down_track_ready(C, video(A), ms(now, 100)).is_empty());
    assert!(r.tick(ms(now, 200)).is_empty());
    // Still waiting after the retry interval: one request for the layer.
    let acts = r.tick(ms(now, 600));
    assert_eq!(acts.len(), 1);
    let mut out = Vec::new();
    r.route_media(video(A), Layer(0), true, 10, ms(now, 610), &mut out);
    assert_eq!(out.len(), 2);
    assert!(r.tick(ms(now, 2000)).is_empty(), "nobody waits any more");
    assert_eq!(r.stats().keyframe_waits, 2);
}

#[test]
fn subscriber_loss_asks_publisher_for_keyframe() {
    let now = t0();
    let mut r = b_receives_video(now);
    let acts = r.subscriber_keyframe_request(B, video(A), ms(now, 1000));
    assert_eq!(acts, vec![keyframe_request(video(A), 0)]);
    assert!(r
        .publisher_loss(video(A), Layer(0), ms(now, 1100))
        .is_empty());
    assert_eq!(r.publisher_loss(video(A), Layer(0), ms(now, 1400)).len(), 1);
}

#[test]
fn simulcast_layer_follows_bandwidth_with_hysteresis() {
    let (mut r, now) = b_receives_simulcast(t0());
    let key = video(A);
    // No estimate: lowest layer.
    assert_eq!(r.current_layer(B, key), Some(Layer(0)));
    // Plenty of bandwidth: the upgrade waits for the hold time.
    let acts = r.set_bandwidth(B, 5_000_000, now);
    assert!(acts.is_empty());
    assert_eq!(r.target_layer(B, key), Some(Layer(0)));
    let later = now + Duration::from_millis(2100);
    let acts = r.set_bandwidth(B, 5_000_000, later);
    assert_eq!(acts, vec![keyframe_request(key, 2)]);
    assert_eq!(r.target_layer(B, key), Some(Layer(2)));
    // Until a high-layer keyframe arrives, the low layer keeps flowing.
    let mut out = Vec::new();
    r.route_media(key, Layer(2), false, 100, later, &mut out);
    assert!(out.is_empty());
    r.route_media(key, Layer(0), false, 100, later, &mut out);
    assert_eq!(out, vec![B]);
    r.route_media(key, Layer(2), true, 100, later, &mut out);
    assert_eq!(out, vec![B]);
    assert_eq!(r.current_layer(B, key), Some(Layer(2)));
    r.route_media(key, Layer(0), false, 100, later, &mut out);
    assert!(out.is_empty(), "old layer no longer forwarded");
    // Bandwidth collapses: downgrade at once (to the layer that fits: 500k*1 <= 0.9*700k).
    let t2 = feed_layers(&mut r, key, later, 2) + Duration::from_millis(1);
    assert_eq!(r.current_layer(B, key), Some(Layer(2)));
    let acts = r.set_bandwidth(B, 700_000, t2);
    assert_eq!(acts, vec![keyframe_request(key, 1)]);
    // A brief recovery does not upgrade immediately (hysteresis).
    let t3 = t2 + Duration::from_millis(500);
    assert!(r.set_bandwidth(B, 5_000_000, t3).is_empty());
    assert_eq!(r.target_layer(B, key), Some(Layer(1)));
    r.set_bandwidth(B, 700_000, t3 + Duration::from_millis(100));
    assert!(r
        .set_bandwidth(B, 5_000_000, t3 + Duration::from_millis(2200))
        .is_empty());
    assert_eq!(r.layer_histogram(), [0, 0, 1]);
}

#[test]
fn requested_size_caps_the_layer() {
    let (mut r, now) = b_receives_simulcast(t0());
    let key = video(A);
    r.set_max_layer(B, key, Layer(1), now);
    r.set_bandwidth(B, 50_000_000, now);
    r.set_bandwidth(B, 50_000_000, now + Duration::from_secs(3));
    assert_eq!(r.target_layer(B, key), Some(Layer(1)));
}

#[test]
fn mute_stops_forwarding_and_unmute_requests_keyframe() {
    let now = t0();
    let mut r = b_receives_video(now);
    let mut out = Vec::new();
    assert!(r.set_muted(video(A), true, ms(now, 10)).is_empty());
    r.route_media(video(A), Layer(0), true, 10, ms(now, 20), &mut out);
    assert!(out.is_empty());
    let acts = r.set_muted(video(A), false, ms(now, 1000));
    assert_eq!(acts.len(), 1);
    r.route_media(video(A), Layer(0), false, 10, ms(now, 1010), &mut out);
    assert!(out.is_empty(), "after unmute wait for keyframe");
    r.route_media(video(A), Layer(0), true, 10, ms(now, 1020), &mut out);
    assert_eq!(out, vec![B]);
}

#[test]
fn pause_and_unsubscribe() {
    let now = t0();
    let mut r = b_receives_video(now);
    let mut out = Vec::new();
    r.set_paused(B, video(A), true, now);
    r.route_media(video(A), Layer(0), true, 10, now, &mut out);
    assert!(out.is_empty());
    assert_eq!(r.set_paused(B, video(A), false, ms(now, 500)).len(), 1);
    assert_eq!(
        r.unsubscribe(B, video(A)),
        vec![Action::RemoveDownTrack {
            subscriber: B,
            track: video(A)
        }]
    );
    r.route_media(video(A), Layer(0), true, 10, now, &mut out);
    assert!(out.is_empty());
    // Explicit subscription with auto-subscribe off.
    r.set_auto_subscribe(C, false);
    r.join("r", C);
    assert_eq!(r.subscribe_to(B, video(A)).len(), 1);
}

#[test]
fn leave_removes_tracks_and_subscriptions() {
    let mut r = Rooms::default();
    for i in 0..50u64 {
        let p = ParticipantId(i);
        r.join("r", p);
        r.publish(p, 0, TrackKind::Video);
        r.publish(p, 1, TrackKind::Audio);
    }
    assert_eq!(r.track_count(), 100);
    assert_eq!(r.subscription_count(), 50 * 49 * 2);
    let acts = r.leave(ParticipantId(0));
    assert_eq!(acts.len(), 49 * 2);
    assert!(acts
        .iter()
        .all(|a| matches!(a, Action::RemoveDownTrack { .. })));
    for i in 1..50u64 {
        r.enqueue_data(ParticipantId(i), true, vec![0; 10]).ok();
        r.leave(ParticipantId(i));
    }
    assert_eq!(held(&r), [0; 5]);
}

#[test]
fn data_queue_is_bounded_and_ordered() {
    let mut r = Rooms::new(CoreTuning {
        data_queue_bytes: 100,
        ..CoreTuning::default()
    });
    r.join("r", A);
    assert_eq!(
        r.enqueue_data(B, true, vec![1]),
        Err(DataDrop::UnknownTarget)
    );
    for i in 0..10u8 {
        assert_eq!(r.enqueue_data(A, i % 2 == 0, vec![i; 10]), Ok(()));
    }
    assert_eq!(
        r.enqueue_data(A, true, vec![0; 1]),
        Err(DataDrop::QueueFull)
    );
    assert_eq!(r.stats().data_dropped_queue_full, 1);
    let mut got = Vec::new();
    r.drain_data(A, |m| {
        if got.len() < 3 {
            got.push(m.bytes[0]);
            true
        } else {
            false
        }
    });
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(r.queued_bytes_of(A), 70);
    r.drain_data(A, |_| true);
    assert_eq!(r.queued_bytes_of(A), 0);
}

#[test]
fn layer_from_rid() {
    assert_eq!(Layer::from_rid(None), Layer(0));
    assert_eq!(Layer::from_rid(Some("q")), Layer(0));
    assert_eq!(Layer::from_rid(Some("h")), Layer(1));
    assert_eq!(Layer::from_rid(Some("f")), Layer(2));
    assert_eq!(Layer(2).label(), "high");
}

#[test]
fn bitrate_targets_follow_layers_and_caps() {
    let (mut r, now) = b_receives_simulcast(t0());
    let key = video(A);
    let (min, desired) = r.bitrate_targets(B, now);
    // On the low layer (~150k), wanting the high one (~1.5M).
    assert!((100_000..250_000).contains(&min), "min {min}");
    assert!(
        (1_200_000..1_800_000).contains(&desired),
        "desired {desired}"
    );
    r.set_max_layer(B, key, Layer(1), now);
    let (_, desired) = r.bitrate_targets(B, now);
    assert!(
        (400_000..600_000).contains(&desired),
        "capped desired {desired}"
    );
    r.set_paused(B, key, true, now);
    assert_eq!(r.bitrate_targets(B, now), (0, 0));
}

#[test]
fn without_estimate_the_cap_decides() {
    let start = t0();
    let mut r = a_publishes_to_b();
    r.join("r", C);
    let key = video(A);
    r.down_track_ready(B, key, start);
    r.down_track_ready(C, key, start);
    r.set_max_layer(C, key, Layer(0), start);
    let now = feed_layers(&mut r, key, start, 2);
    assert_eq!(
        r.current_layer(B, key),
        Some(Layer(0)),
        "first frame from what exists"
    );
    let acts = r.tick(now);
    assert!(acts.contains(&keyframe_request(key, 2)));
    assert_eq!(r.target_layer(B, key), Some(Layer(2)));
    assert_eq!(r.target_layer(C, key), Some(Layer(0)));
    let mut out = Vec::new();
    r.route_media(key, Layer(2), true, 100, now, &mut out);
    assert_eq!(out, vec![B]);
    assert_eq!(r.layer_histogram(), [1, 0, 1]);
}

#[test]
fn a_layer_that_stops_is_left_for_one_that_still_flows() {
    // Found by the browser e2e (60-sfu-browser): a publisher shares its 1280 px screen (three
    // layers), then goes back to its 640 px camera, for which Chrome sends two; the subscriber
    // stayed on the top layer, whose last measured rate never decayed, and received nothing.
    let (mut r, now) = b_receives_simulcast(t0());
    let key = video(A);
    r.tick(now);
    let mut out = Vec::new();
    r.route_media(key, Layer(2), true, 100, now, &mut out);
    assert_eq!(r.current_layer(B, key), Some(Layer(2)));
    // From now on only layers 0 and 1 arrive (30 fps, a keyframe every second), with ticks.
    let mut asked = false;
    let mut now = now;
    for frame in 1..=90u64 {
        now += Duration::from_micros(33_333);
        for l in [0u8, 1] {
            r.route_media(key, Layer(l), frame % 30 == 0, 2000, now, &mut out);
        }
        if frame % 3 == 0 {
            asked |= r.tick(now).contains(&keyframe_request(key, 1));
        }
    }
    assert!(
        asked,
        "a keyframe is requested on the layer that still flows"
    );
    assert_eq!(r.target_layer(B, key), Some(Layer(1)));
    assert_eq!(r.current_layer(B, key), Some(Layer(1)));
    r.route_media(key, Layer(1), false, 2000, now, &mut out);
    assert_eq!(out, vec![B]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8, u8),
        Leave(u8),
        Publish(u8, u8, bool),
        Unpublish(u8, u8),
        Ready(u8, u8, u8),
        Media(u8, u8, u8, bool),
        Bandwidth(u8, u32),
        Cap(u8, u8, u8, u8),
        Mute(u8, u8, bool),
        Pause(u8, u8, u8, bool),
        Data(u8, u16),
        Drain(u8, u8),
        Tick,
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8, 0..2u8).prop_map(|(p, r)| Op::Join(p, r)),
            (0..6u8).prop_map(Op::Leave),
            (0..6u8, 0..3u8, any::<bool>()).prop_map(|(p, i, v)| Op::Publish(p, i, v)),
            (0..6u8, 0..3u8).prop_map(|(p, i)| Op::Unpublish(p, i)),
            (0..6u8, 0..6u8, 0..3u8).prop_map(|(s, p, i)| Op::Ready(s, p, i)),
            (0..6u8, 0..3u8, 0..4u8, any::<bool>()).prop_map(|(p, i, l, k)| Op::Media(p, i, l, k)),
            (0..6u8, any::<u32>()).prop_map(|(p, b)| Op::Bandwidth(p, b)),
            (0..6u8, 0..6u8, 0..3u8, 0..4u8).prop_map(|(s, p, i, l)| Op::Cap(s, p, i, l)),
            (0..6u8, 0..3u8, any::<bool>()).prop_map(|(p, i, m)| Op::Mute(p, i, m)),
            (0..6u8, 0..6u8, 0..3u8, any::<bool>()).prop_map(|(s, p, i, x)| Op::Pause(s, p, i, x)),
            (0..6u8, 0..5000u16).prop_map(|(p, n)| Op::Data(p, n)),
            (0..6u8, 0..4u8).prop_map(|(p, n)| Op::Drain(p, n)),
            Just(Op::Tick),
            (0..3000u16).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Any sequence of room operations keeps the model consistent, never panics, keeps
        /// queues within bounds, never forwards to the publisher or across rooms, and leaving
        /// everyone frees everything.
        #[test]
        fn random_operations_keep_invariants(ops in proptest::collection::vec(op(), 1..200)) {
            let limit = 10_000;
            let mut r = Rooms::new(CoreTuning { data_queue_bytes: limit, ..CoreTuning::default() });
            let mut now = Instant::now();
            let mut out = Vec::new();
            let key = |p: u8, i: u8| TrackKey { publisher: ParticipantId(u64::from(p)), index: u32::from(i) };
            for op in ops {
                match op {
                    Op::Join(p, room) => {
                        let id = ParticipantId(u64::from(p));
                        if r.room_of(id).is_none() {
                            r.join(&format!("room{room}"), id);
                        }
                    }
                    Op::Leave(p) => { r.leave(ParticipantId(u64::from(p))); }
                    Op::Publish(p, i, v) => {
                        let kind = if v { TrackKind::Video } else { TrackKind::Audio };
                        r.publish(ParticipantId(u64::from(p)), u32::from(i), kind);
                    }
                    Op::Unpublish(p, i) => { r.unpublish(key(p, i)); }
                    Op::Ready(s, p, i) => { r.down_track_ready(ParticipantId(u64::from(s)), key(p, i), now); }
                    Op::Media(p, i, l, k) => {
                        r.route_media(key(p, i), Layer(l), k, 1000, now, &mut out);
                        let publisher = ParticipantId(u64::from(p));
                        prop_assert!(!out.contains(&publisher));
                        for o in &out {
                            prop_assert_eq!(r.room_of(*o), r.room_of(publisher));
                        }
                    }
                    Op::Bandwidth(p, b) => { r.set_bandwidth(ParticipantId(u64::from(p)), u64::from(b), now); }
                    Op::Cap(s, p, i, l) => { r.set_max_layer(ParticipantId(u64::from(s)), key(p, i), Layer(l), now); }
                    Op::Mute(p, i, m) => { r.set_muted(key(p, i), m, now); }
                    Op::Pause(s, p, i, x) => { r.set_paused(ParticipantId(u64::from(s)), key(p, i), x, now); }
                    Op::Data(p, n) => { let _ = r.enqueue_data(ParticipantId(u64::from(p)), n % 2 == 0, vec![0; usize::from(n)]); }
                    Op::Drain(p, n) => {
                        let mut left = n;
                        r.drain_data(ParticipantId(u64::from(p)), |_| { if left == 0 { false } else { left -= 1; true } });
                    }
                    Op::Tick => { r.tick(now); }
                    Op::Advance(ms) => { now += Duration::from_millis(u64::from(ms)); }
                }
                for p in 0..6u64 {
                    prop_assert!(r.queued_bytes_of(ParticipantId(p)) <= limit);
                }
                let h = r.layer_histogram();
                prop_assert!(h.iter().sum::<u64>() as usize <= r.subscription_count());
            }
            for p in 0..6u64 {
                r.leave(ParticipantId(p));
            }
            prop_assert_eq!(held(&r), [0; 5]);
        }
    }
}

#[test]
fn keyframe_before_the_down_track_is_ready_does_not_leave_a_wait_forever() {
    // Found by the browser e2e (60-sfu-browser): a publisher's keyframe reached route_media
    // while B's down-track was still being negotiated, so `current` was set; down_track_ready
    // then marked B waiting without clearing `current`, and the wait never ended: the publisher
    // got a PLI on every tick (about 3 keyframes a second) for the rest of the session.
    let now = t0();
    let mut r = a_publishes_to_b();
    let mut out = Vec::new();
    r.route_media(video(A), Layer(0), true, 1000, ms(now, 5), &mut out);
    assert_eq!(r.down_track_ready(B, video(A), ms(now, 10)).len(), 1);
    // Nothing reached B before its track was ready, so it must wait for a fresh keyframe.
    r.route_media(video(A), Layer(0), false, 1000, ms(now, 20), &mut out);
    assert!(out.is_empty(), "delta frame before B's first keyframe");
    r.route_media(video(A), Layer(0), true, 1000, ms(now, 30), &mut out);
    assert_eq!(out, vec![B]);
    assert!(r.tick(ms(now, 2000)).is_empty(), "B no longer waits");
}

#[test]
fn joining_again_replaces_the_old_membership() {
    let mut r = a_publishes_to_b();
    // A joins again (here: another room) without leaving: its old track ends for B and it is
    // listed once, in the new room only.
    let acts = r.join("s", A);
    assert_eq!(
        acts,
        vec![Action::RemoveDownTrack {
            subscriber: B,
            track: video(A),
        }]
    );
    assert_eq!(r.members("r"), &[B]);
    assert_eq!(r.members("s"), &[A]);
    assert_eq!(r.track_count(), 0);
    assert_eq!(r.subscription_count(), 0);
    r.leave(A);
    r.leave(B);
    assert_eq!(held(&r), [0; 5]);
}
