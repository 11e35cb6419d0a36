//! Forwarding: the tracks a session publishes ([`UpTracks`]), and the fan-out of each media unit
//! (an audio packet or a video frame) to the subscribers the room logic picks.
//!
//! A down-track is sent by one of two egresses (decision 0047), chosen at its first frame after
//! the handshake ([`Path`]): str0m (the frame is written into the subscriber's `Rtc`, which
//! packetizes, protects, paces and sends it when the session is polled) or the SFU's own egress
//! (VP8 and Opus packetized and SRTP-protected here, straight into the send batch). The own
//! egress also watches what str0m sends to the subscriber (route and sender reports) and answers
//! the subscriber's NACKs from its history.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::format::Codec;
use str0m::media::{
    Direction, MediaAdded, MediaChanged, MediaData, MediaKind, MediaTime, Mid, Rid,
};
use str0m::net::Protocol;
use str0m::{Event, Rtc};

use super::engine::Engine;
use super::{kind_label, Session};
use crate::core::{Layer, ParticipantId, TrackKey, TrackKind};
use crate::egress::{OwnCodec, OwnTrack, SessionEgress};
use crate::metrics::SfuMetrics;

/// Who sends a down-track's media (decision 0047).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    Undecided,
    Str0m,
    /// Our own egress, on this SSRC.
    Own(u32),
}

/// A session's own egress (`[sfu] egress = "own"`) and where it sends.
pub(super) struct OwnEgress {
    pub(super) egress: SessionEgress,
    /// Where str0m last sent this session's datagrams: the own egress sends there too.
    pub(super) dest: Option<(Protocol, SocketAddr)>,
}

/// A track the session publishes (an m-line the browser sends on).
#[derive(Debug)]
struct UpTrack {
    /// Publisher-local track number in the room logic.
    index: u32,
    kind: TrackKind,
    /// The browser is sending it (its direction includes receiving on our side).
    published: bool,
    /// The RID last seen on each simulcast layer, for keyframe requests.
    rids: [Option<Rid>; 3],
}

/// What an m-line's direction change means for the room logic.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Publication {
    /// The track started: publish it.
    Start(u32, TrackKind),
    /// The track stopped: unpublish it.
    Stop(u32),
    /// Nothing changed.
    Same,
}

/// A session's published tracks, by m-line.
#[derive(Debug, Default)]
pub(super) struct UpTracks {
    by_mid: HashMap<Mid, UpTrack>,
    next_index: u32,
}

impl UpTracks {
    /// A new m-line `mid` from the browser gets the next track number; returns it if the track
    /// is published now (`receiving`).
    pub(super) fn added(&mut self, mid: Mid, kind: TrackKind, receiving: bool) -> Option<u32> {
        let index = self.next_index;
        self.next_index += 1;
        self.by_mid.insert(
            mid,
            UpTrack {
                index,
                kind,
                published: receiving,
                rids: [None, None, None],
            },
        );
        receiving.then_some(index)
    }

    /// Whether `mid` is one of the session's published m-lines.
    pub(super) fn contains(&self, mid: &Mid) -> bool {
        self.by_mid.contains_key(mid)
    }

    /// The m-line `mid` changed direction; `None` if it is not a published m-line.
    pub(super) fn changed(&mut self, mid: &Mid, receiving: bool) -> Option<Publication> {
        let up = self.by_mid.get_mut(mid)?;
        Some(if receiving && !up.published {
            up.published = true;
            Publication::Start(up.index, up.kind)
        } else if !receiving && up.published {
            up.published = false;
            Publication::Stop(up.index)
        } else {
            Publication::Same
        })
    }

    /// A media unit arrived on `mid` with `rid`: its track number, kind and simulcast layer.
    /// Remembers the RID of the layer for keyframe requests.
    pub(super) fn media(&mut self, mid: &Mid, rid: Option<Rid>) -> Option<(u32, TrackKind, Layer)> {
        let up = self.by_mid.get_mut(mid)?;
        let layer = Layer::from_rid(rid.as_deref());
        up.rids[usize::from(layer.0.min(2))] = rid;
        Some((up.index, up.kind, layer))
    }

    /// The m-line of track `index` and the RID its `layer` was last seen with.
    pub(super) fn keyframe_target(&self, index: u32, layer: Layer) -> Option<(Mid, Option<Rid>)> {
        let (mid, up) = self.by_mid.iter().find(|(_, u)| u.index == index)?;
        Some((*mid, up.rids[usize::from(layer.0.min(2))]))
    }

    /// Track numbers of the video tracks.
    pub(super) fn video_indices(&self) -> Vec<u32> {
        self.by_mid
            .values()
            .filter(|u| u.kind == TrackKind::Video)
            .map(|u| u.index)
            .collect()
    }
}

/// RTP packets one media unit counts for in `packets_forwarded`: its sequence number range,
/// bounded so a bogus range cannot inflate the counter.
fn counted_packets(first_seq: u64, last_seq: u64) -> u64 {
    (last_seq.wrapping_sub(first_seq) + 1).min(1024)
}

/// The codec the own egress packetizes for `codec`, if it does.
fn own_codec(codec: Codec) -> Option<OwnCodec> {
    match codec {
        Codec::Vp8 => Some(OwnCodec::Vp8),
        Codec::Opus => Some(OwnCodec::Opus),
        _ => None,
    }
}

fn track_kind(kind: MediaKind) -> TrackKind {
    match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}

fn receiving(direction: Direction) -> bool {
    matches!(direction, Direction::RecvOnly | Direction::SendRecv)
}

impl Engine {
    /// The browser added an m-line: a track it publishes if it sends on it.
    pub(super) fn media_added(&mut self, id: ParticipantId, m: MediaAdded) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.down.key_of(&m.mid).is_some() || s.up.contains(&m.mid) {
            return;
        }
        let kind = track_kind(m.kind);
        if let Some(index) = s.up.added(m.mid, kind, receiving(m.direction)) {
            let actions = self.rooms.publish(id, index, kind);
            self.sync_gauges();
            self.apply(actions);
        }
    }

    /// The browser changed an m-line's direction: it starts or stops publishing on it.
    pub(super) fn media_changed(&mut self, id: ParticipantId, m: MediaChanged) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(change) = s.up.changed(&m.mid, receiving(m.direction)) else {
            return;
        };
        let actions = match change {
            Publication::Start(index, kind) => self.rooms.publish(id, index, kind),
            Publication::Stop(index) => self.rooms.unpublish(TrackKey {
                publisher: id,
                index,
            }),
            Publication::Same => Vec::new(),
        };
        self.sync_gauges();
        self.apply(actions);
    }

    /// A media unit from publisher `id`: the room logic picks the subscribers, each gets it
    /// through its down-track's egress.
    pub(super) fn media(&mut self, id: ParticipantId, d: MediaData, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some((index, kind, layer)) = s.up.media(&d.mid, d.rid) else {
            return;
        };
        let key = TrackKey {
            publisher: id,
            index,
        };
        let keyframe = kind == TrackKind::Video && d.is_keyframe();
        let mut actions = Vec::new();
        if !d.contiguous && kind == TrackKind::Video {
            actions = self.rooms.publisher_loss(key, layer, now);
        }
        let mut subscribers = std::mem::take(&mut self.route_buf);
        let more =
            self.rooms
                .route_media(key, layer, keyframe, d.data.len(), now, &mut subscribers);
        actions.extend(more);
        let mut forwarded = 0u64;
        for sub in &subscribers {
            if self.forward_to(*sub, key, kind, layer, &d, now) {
                forwarded += 1;
            }
        }
        self.route_buf = subscribers;
        if forwarded > 0 {
            let label = [("kind", kind_label(kind))];
            let packets = counted_packets(**d.seq_range.start(), **d.seq_range.end());
            self.metrics
                .packets_forwarded
                .get_or_create(&label)
                .inc_by(forwarded * packets);
            self.metrics
                .bytes_forwarded
                .get_or_create(&label)
                .inc_by(forwarded * d.data.len() as u64);
        }
        self.apply(actions);
    }

    /// Hands the media unit `d` of `key` (a `kind` track, from `layer`) to subscriber `sub`'s
    /// down-track; whether it was taken.
    fn forward_to(
        &mut self,
        sub: ParticipantId,
        key: TrackKey,
        kind: TrackKind,
        layer: Layer,
        d: &MediaData,
        now: Instant,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sub) else {
            return false;
        };
        let Some(down) = s.down.open_mut(&key) else {
            return false;
        };
        let Some(mid) = down.mid else {
            return false;
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
        if let Some(own) = s.own.as_mut() {
            if down.path == Path::Undecided {
                if own.dest.is_none() || !own.egress.ready() {
                    // Not connected yet (no SRTP keys or no route): str0m could not send
                    // this frame either. Decide at the first frame after the handshake.
                    return false;
                }
                down.path = own_path(&mut s.rtc, &mut own.egress, mid, d);
            }
            if let Path::Own(ssrc) = down.path {
                let (tcp, out) = (&self.net.tcp, &mut self.net.out);
                let dest = own.dest;
                let sent = own
                    .egress
                    .write_frame(ssrc, &d.data, time.numer() as u32, now, |b| match dest {
                        Some((Protocol::Udp, to)) => out.push(b, to),
                        Some((_, to)) => {
                            let _ = tcp.send_to(to, b.to_vec());
                        }
                        None => {}
                    });
                let taken = match sent {
                    Ok(sent) => {
                        self.metrics.egress_packets.inc_by(sent.datagrams as u64);
                        // Observed when the batch leaves (see `Net::flush`).
                        self.net.fwd_sent.push((d.network_time, 1));
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "own egress could not protect");
                        false
                    }
                };
                // A large fan-out leaves in batches: the first subscribers do not wait
                // for the packets of the last ones to be built.
                if self.net.should_flush() {
                    self.net.flush(&self.metrics);
                }
                return taken;
            }
        }
        let Some(w) = s.rtc.writer(mid) else {
            return false;
        };
        let Some(pt) = w.match_params(d.params) else {
            return false;
        };
        if w.write(pt, d.network_time, time, d.data.clone()).is_err() {
            return false;
        }
        // Observed when the packets leave (see `Net::flush`).
        let f = s.fwd_since.get_or_insert((d.network_time, 0));
        f.1 += 1;
        self.work.mark(sub, s);
        true
    }

    /// A subscriber asked for a keyframe on the down-track `mid` (PLI/FIR).
    pub(super) fn keyframe_request(&mut self, id: ParticipantId, mid: Mid, now: Instant) {
        let key = self.sessions.get(&id).and_then(|s| s.down.key_of(&mid));
        if let Some(key) = key {
            let actions = self.rooms.subscriber_keyframe_request(id, key, now);
            self.apply(actions);
        }
    }

    /// str0m's bandwidth estimate for the path to subscriber `id`.
    pub(super) fn bitrate_estimate(&mut self, id: ParticipantId, b: BweKind, now: Instant) {
        let bps = match b {
            BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. } => estimate.as_u64(),
            _ => return,
        };
        let actions = self.rooms.set_bandwidth(id, bps, now);
        self.apply(actions);
    }

    /// Caps the layer subscriber `id` gets from `publisher`'s video tracks and pauses or
    /// resumes them.
    pub(super) fn video_preference(
        &mut self,
        id: ParticipantId,
        publisher: String,
        max_layer: u8,
        paused: bool,
        now: Instant,
    ) {
        let Some(room) = self.sessions.get(&id).map(|s| s.room.clone()) else {
            return;
        };
        let Some(pubid) = self.by_identity.get(&(room, publisher)).copied() else {
            return;
        };
        let indices = self
            .sessions
            .get(&pubid)
            .map(|p| p.up.video_indices())
            .unwrap_or_default();
        for index in indices {
            let key = TrackKey {
                publisher: pubid,
                index,
            };
            let mut actions = self
                .rooms
                .set_max_layer(id, key, Layer(max_layer.min(2)), now);
            actions.extend(self.rooms.set_paused(id, key, paused, now));
            self.apply(actions);
        }
    }
}

/// The own egress's look at a datagram str0m sends to the session: it remembers the route
/// (own-path packets follow it) and rewrites str0m's sender reports for own-path streams.
pub(super) fn egress_saw_transmit(
    s: &mut Session,
    proto: Protocol,
    to: SocketAddr,
    data: &mut Vec<u8>,
    metrics: &SfuMetrics,
) {
    if let Some(own) = &mut s.own {
        own.dest = Some((proto, to));
        if own.egress.patch_outgoing_rtcp(data, Instant::now()) {
            metrics.egress_reports.inc();
        }
    }
}

/// A subscriber's NACKs (in an RTP-range datagram it sent, UDP or ICE-TCP) for packets the own
/// egress sent: the packets go to `emit` again, from the track's history.
pub(super) fn egress_nacks(
    s: &mut Session,
    data: &[u8],
    now: Instant,
    metrics: &SfuMetrics,
    emit: impl FnMut(&[u8]),
) {
    if let Some(own) = s.own.as_mut().filter(|o| o.egress.track_count() > 0) {
        let sent = own.egress.on_incoming_rtcp(data, now, emit);
        metrics.egress_retransmissions.inc_by(sent.datagrams as u64);
    }
}

/// Decides, at a down-track's first frame once the session is connected (SRTP keys and a
/// route known), whether the own egress sends it: VP8 or Opus, and the SSRC str0m negotiated
/// for `mid`. Otherwise str0m keeps it for good (the two paths cannot share one SSRC's
/// sequence numbers).
fn own_path(rtc: &mut Rtc, egress: &mut SessionEgress, mid: Mid, d: &MediaData) -> Path {
    let Some(codec) = own_codec(d.params.spec().codec) else {
        return Path::Str0m;
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
pub(super) fn audio_first(events: &mut [Event]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn up_tracks_are_numbered_in_order_and_published_while_the_browser_sends() {
        let mut up = UpTracks::default();
        let (m0, m1, m2) = (Mid::from("0"), Mid::from("1"), Mid::from("2"));
        assert_eq!(up.added(m0, TrackKind::Audio, true), Some(0));
        assert_eq!(
            up.added(m1, TrackKind::Video, false),
            None,
            "recvonly m-line"
        );
        assert_eq!(up.added(m2, TrackKind::Video, true), Some(2));
        assert!(up.contains(&m1));
        assert_eq!(
            up.changed(&m1, true),
            Some(Publication::Start(1, TrackKind::Video))
        );
        assert_eq!(up.changed(&m1, true), Some(Publication::Same));
        assert_eq!(up.changed(&m0, false), Some(Publication::Stop(0)));
        assert_eq!(up.changed(&m0, false), Some(Publication::Same));
        assert_eq!(up.changed(&Mid::from("9"), true), None);
        let mut video = up.video_indices();
        video.sort();
        assert_eq!(video, vec![1, 2]);
    }

    #[test]
    fn media_maps_rids_to_layers_and_keyframe_requests_reuse_them() {
        let mut up = UpTracks::default();
        let m = Mid::from("v");
        up.added(m, TrackKind::Video, true);
        assert_eq!(up.keyframe_target(0, Layer(2)), Some((m, None)));
        let (q, f) = (Rid::from("q"), Rid::from("f"));
        assert_eq!(up.media(&m, Some(q)), Some((0, TrackKind::Video, Layer(0))));
        assert_eq!(up.media(&m, Some(f)), Some((0, TrackKind::Video, Layer(2))));
        assert_eq!(up.keyframe_target(0, Layer(0)), Some((m, Some(q))));
        assert_eq!(up.keyframe_target(0, Layer(2)), Some((m, Some(f))));
        assert_eq!(up.keyframe_target(0, Layer(1)), Some((m, None)));
        assert_eq!(up.keyframe_target(1, Layer(0)), None, "no such track");
        assert_eq!(up.media(&Mid::from("x"), None), None);
        // Without simulcast there is no RID: layer 0.
        assert_eq!(up.media(&m, None), Some((0, TrackKind::Video, Layer(0))));
        assert_eq!(up.keyframe_target(0, Layer(0)), Some((m, None)));
    }

    #[test]
    fn packets_counted_per_unit() {
        assert_eq!(counted_packets(7, 7), 1);
        assert_eq!(counted_packets(10, 12), 3);
        assert_eq!(counted_packets(0, 5000), 1024, "bounded");
    }

    #[test]
    fn own_egress_takes_vp8_and_opus_only() {
        assert_eq!(own_codec(Codec::Vp8), Some(OwnCodec::Vp8));
        assert_eq!(own_codec(Codec::Opus), Some(OwnCodec::Opus));
        for other in [Codec::H264, Codec::Vp9, Codec::Av1, Codec::PCMU] {
            assert_eq!(own_codec(other), None, "{other:?}");
        }
    }
}
