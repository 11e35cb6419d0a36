//! Fuzz entry points of the SFU and their stable replays: the stateful forwarding core
//! (fuzz/fuzz_targets/sfu_rooms.rs, `fuzzing::tests::replay_corpus_sfu_rooms`) and SRTP/SRTCP
//! unprotection of hostile bytes (fuzz/fuzz_targets/srtp_unprotect.rs,
//! `fuzzing::tests::replay_corpus_srtp_unprotect`), and the own egress's RTCP handling
//! (fuzz/fuzz_targets/egress_rtcp.rs, `fuzzing::tests::replay_corpus_egress_rtcp`).
//! Compiled only for this crate's tests and with the `fuzzing` feature (which fuzz/ enables).

use crate::core::{Action, CoreTuning, Layer, ParticipantId, Rooms, TrackKey, TrackKind};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What a [`exercise_rooms`] run reached, so the corpus replay can check that the harness still
/// gets to forwarding.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoomsReach {
    /// Media units forwarded to a subscriber.
    pub forwarded: usize,
    /// Keyframe requests the core asked for.
    pub keyframe_requests: usize,
    /// Most subscriptions alive at once.
    pub subscriptions: usize,
}

/// SRTP/SRTCP unprotection of arbitrary bytes with fixed keys. The first byte picks the
/// profile (low two bits `% 3`), RTP or RTCP (top bit) and, for RTP, the rollover counter (bits 2..7).
/// Unprotecting must never panic; a packet that authenticates must protect back to exactly
/// the input bytes. Returns whether the packet authenticated.
pub fn exercise_srtp(data: &[u8]) -> bool {
    use crate::srtp::{Context, Profile};
    let Some((&sel, wire)) = data.split_first() else {
        return false;
    };
    let profile = [
        Profile::Aes128CmSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ][usize::from(sel & 0x03) % 3];
    let ctx = Context::new(&fuzz_master_key(profile)).expect("fixed keys are valid");
    let mut buf = wire.to_vec();
    if sel & 0x80 == 0 {
        let roc = u32::from((sel >> 2) & 0x1f);
        if ctx.unprotect_rtp(&mut buf, roc).is_err() {
            return false;
        }
        ctx.protect_rtp(&mut buf, roc)
            .expect("an authenticated packet protects again");
    } else {
        let Ok(index) = ctx.unprotect_rtcp(&mut buf) else {
            return false;
        };
        // E = 0 (authenticated only) does not come back byte for byte: we always encrypt.
        // The E|index word sits before the tag with AES-CM, after it with GCM.
        let tag = profile.rtp_overhead();
        let word_at = match profile {
            Profile::Aes128CmSha1_80 => wire.len() - tag - 4,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => wire.len() - 4,
        };
        if wire[word_at] & 0x80 == 0 {
            return true;
        }
        ctx.protect_rtcp(&mut buf, index)
            .expect("an authenticated packet protects again");
    }
    assert_eq!(buf, wire, "unprotect then protect changed the packet");
    true
}

/// The own egress's RTCP handling on hostile plaintext (fuzz/fuzz_targets/egress_rtcp.rs): an
/// egress with one VP8 track that has sent a few frames gets `data` as a compound RTCP
/// packet, protected with the subscriber's key (so it authenticates and reaches the NACK
/// parser) and with ours (so it reaches the sender-report rewrite). Never panics; every
/// resend is a packet the track sent; returns the number of resends.
pub fn exercise_egress_rtcp(data: &[u8]) -> usize {
    use crate::egress::{OwnCodec, OwnTrack, SessionEgress};
    use crate::keys::{KeySlot, SessionKeys};
    use crate::srtp::{Context, Profile};
    let profile = Profile::AeadAes128Gcm;
    let mut theirs_key = fuzz_master_key(profile);
    theirs_key.key.reverse();
    let slot = KeySlot::default();
    slot.set(SessionKeys {
        profile,
        local: fuzz_master_key(profile),
        remote: theirs_key.clone(),
    });
    let mut e = SessionEgress::new(slot);
    assert!(e.ready());
    e.add_track(OwnTrack::new(
        0x0102_0304,
        96,
        OwnCodec::Vp8,
        90_000,
        65_500,
    ));
    // A second track whose resends go out as RTX (RFC 4588) on their own SSRC.
    e.add_track(
        OwnTrack::new(0x0102_0305, 98, OwnCodec::Vp8, 90_000, 65_500).with_rtx(0x0a0b_0c0d, 99),
    );
    let ours = Context::new(&fuzz_master_key(profile)).expect("fixed keys");
    let now = Instant::now();
    let mut sent = std::collections::HashSet::new();
    // Plaintext of the RTX track's packets by sequence number (its RTX packets must carry one).
    let mut plain = std::collections::HashMap::new();
    for f in 0..20u32 {
        e.write_frame(0x0102_0304, &[0x10; 2500], f * 3000, now, |d| {
            sent.insert(d.to_vec());
        })
        .expect("fixed keys protect");
        e.write_frame(0x0102_0305, &[0x20; 2500], f * 3000, now, |d| {
            let mut p = d.to_vec();
            let seq = u16::from_be_bytes([p[2], p[3]]);
            let roc = u32::from(seq < 65_500);
            ours.unprotect_rtp(&mut p, roc).expect("our own packet");
            plain.insert(seq, p);
        })
        .expect("fixed keys protect");
    }
    // An RTX packet is the kept packet's payload behind its original sequence number.
    let is_rtx_of_sent = |d: &[u8]| {
        let mut r = d.to_vec();
        // The RTX stream starts at 0xe8f9 and resends far fewer than 5,894 packets: no rollover.
        if ours.unprotect_rtp(&mut r, 0).is_err() || r.len() < 14 || r[8..12] != [10, 11, 12, 13] {
            return false;
        }
        let osn = u16::from_be_bytes([r[12], r[13]]);
        plain
            .get(&osn)
            .is_some_and(|o| r[1] & 0x7f == 99 && o[12..] == r[14..])
    };
    // The plaintext must look like RTCP for the packet to be taken as RTCP at all.
    let mut rtcp = data.to_vec();
    if rtcp.len() < 8 {
        rtcp.resize(8, 0);
    }
    rtcp[0] = 0x80 | (rtcp[0] & 0x3f);
    rtcp[1] = 192 + rtcp[1] % 32;
    let mut from_them = rtcp.clone();
    let _ = Context::new(&theirs_key)
        .expect("fixed keys")
        .protect_rtcp(&mut from_them, 7);
    let mut resends = 0;
    for t in [now, now + Duration::from_millis(25)] {
        e.on_incoming_rtcp(&from_them, t, |d| {
            assert!(
                sent.contains(d) || is_rtx_of_sent(d),
                "resent a packet the track never sent"
            );
            resends += 1;
        });
    }
    let mut to_them = rtcp;
    let _ = Context::new(&fuzz_master_key(profile))
        .expect("fixed keys")
        .protect_rtcp(&mut to_them, 9);
    let before = to_them.len();
    if e.patch_outgoing_rtcp(&mut to_them, now) {
        assert_eq!(to_them.len(), before, "a rewritten report changed length");
    }
    resends
}

/// The fixed master key the SRTP fuzz target and its seeds use.
pub fn fuzz_master_key(profile: crate::srtp::Profile) -> crate::srtp::MasterKey {
    crate::srtp::MasterKey {
        profile,
        key: (1..=profile.master_key_len() as u8).collect(),
        salt: (0..profile.master_salt_len() as u8)
            .map(|b| b ^ 0xa5)
            .collect(),
    }
}

const ROOMS: [&str; 2] = ["r1", "r2"];

/// The fuzz input, read front to back; past its end every read is zero.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

/// The driver's view: who is in which room, which tracks exist, which down-tracks (m-lines)
/// each subscriber has. Every action the core returns is checked against it.
#[derive(Default)]
struct Driver {
    room: HashMap<ParticipantId, &'static str>,
    tracks: HashMap<TrackKey, TrackKind>,
    down: HashSet<(ParticipantId, TrackKey)>,
    /// Down-tracks their subscriber paused.
    paused: HashSet<(ParticipantId, TrackKey)>,
    muted: HashSet<TrackKey>,
    reach: RoomsReach,
}

impl Driver {
    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::AddDownTrack {
                    subscriber,
                    track,
                    kind,
                } => {
                    assert_eq!(self.tracks.get(&track), Some(&kind), "{track:?}");
                    assert_ne!(subscriber, track.publisher, "own track sent back");
                    assert!(self.room.contains_key(&subscriber), "gone {subscriber:?}");
                    assert_eq!(self.room.get(&subscriber), self.room.get(&track.publisher));
                    assert!(self.down.insert((subscriber, track)), "second m-line");
                    self.paused.remove(&(subscriber, track));
                }
                Action::RemoveDownTrack { subscriber, track } => {
                    assert!(self.down.remove(&(subscriber, track)), "no such m-line");
                    self.paused.remove(&(subscriber, track));
                }
                Action::RequestKeyframe { track, layer } => {
                    assert_eq!(self.tracks.get(&track), Some(&TrackKind::Video));
                    assert!(layer.0 <= 2);
                    self.reach.keyframe_requests += 1;
                }
            }
        }
    }

    /// A participant picked by the input: mostly a live one, sometimes one that left.
    fn pick(&self, b: u8, next: u64) -> ParticipantId {
        let mut live: Vec<ParticipantId> = self.room.keys().copied().collect();
        live.sort();
        match live.get(usize::from(b) % (live.len() + 1)) {
            Some(p) => *p,
            None => ParticipantId(u64::from(b) % next.max(1)),
        }
    }

    fn track(&self, b: u8) -> TrackKey {
        let mut all: Vec<TrackKey> = self.tracks.keys().copied().collect();
        all.sort();
        all.get(usize::from(b) % all.len().max(1))
            .copied()
            .unwrap_or(TrackKey {
                publisher: ParticipantId(u64::from(b)),
                index: 0,
            })
    }

    fn left(&mut self, p: ParticipantId) {
        self.room.remove(&p);
        self.tracks.retain(|k, _| k.publisher != p);
        self.muted.retain(|k| k.publisher != p);
        self.paused.retain(|(s, k)| *s != p && k.publisher != p);
        // The driver drops the session and every m-line in it.
        self.down.retain(|(s, _)| *s != p);
    }
}

/// A stateful run of the forwarding core as the engine drives it: joins, leaves, publishing
/// and unpublishing, explicit subscriptions, down-tracks becoming ready, mute, pause, layer
/// caps, bandwidth estimates, keyframe requests, loss, media on any layer, time, and data
/// queues.
///
/// Every action must make sense to the driver: a down-track is added once, for a live
/// subscriber in the publisher's room, never for the publisher itself, and removed only if it
/// was added; keyframes are asked for video tracks only. Media goes only to subscribers that
/// have the track's down-track and have not paused it, and nothing of a muted track goes out.
/// At the end, once everyone has left, nothing may be left: no participant, room, track,
/// subscription or queued byte.
pub fn exercise_rooms(data: &[u8]) -> RoomsReach {
    let tuning = CoreTuning {
        data_queue_bytes: 4096,
        ..CoreTuning::default()
    };
    let mut rooms = Rooms::new(tuning);
    let mut d = Driver::default();
    let mut now = Instant::now();
    let mut next = 1u64;
    let mut c = Cursor(data);
    let mut out = Vec::new();
    let mut steps = 0;
    while !c.0.is_empty() && steps < 256 {
        steps += 1;
        let op = c.u8();
        let p = d.pick(c.u8(), next);
        let key = d.track(c.u8());
        let arg = c.u8();
        let actions = match op % 18 {
            0 => {
                let room = ROOMS[usize::from(arg) % ROOMS.len()];
                // Mostly a new participant; sometimes one that is in already joins again
                // (it leaves first: a fresh session as far as the driver is concerned).
                let id = if arg & 0x80 != 0 && d.room.contains_key(&p) {
                    d.left(p);
                    p
                } else {
                    next += 1;
                    ParticipantId(next - 1)
                };
                d.room.insert(id, room);
                rooms.join(room, id)
            }
            1 => {
                let a = rooms.leave(p);
                d.left(p);
                a
            }
            2 => {
                rooms.set_auto_subscribe(p, arg % 2 == 1);
                Vec::new()
            }
            3 => {
                let kind = if arg.is_multiple_of(2) {
                    TrackKind::Video
                } else {
                    TrackKind::Audio
                };
                let key = TrackKey {
                    publisher: p,
                    index: u32::from(arg / 2 % 4),
                };
                if d.room.contains_key(&p) {
                    d.tracks.entry(key).or_insert(kind);
                }
                rooms.publish(p, key.index, kind)
            }
            4 => {
                let a = rooms.unpublish(key);
                d.tracks.remove(&key);
                d.muted.remove(&key);
                a
            }
            5 => rooms.subscribe_to(p, key),
            6 => rooms.unsubscribe(p, key),
            7 => rooms.down_track_ready(p, key, now),
            8 => {
                let muted = arg % 2 == 1;
                if muted && d.tracks.contains_key(&key) {
                    d.muted.insert(key);
                } else {
                    d.muted.remove(&key);
                }
                rooms.set_muted(key, muted, now)
            }
            9 => {
                let paused = arg % 2 == 1;
                if paused && d.down.contains(&(p, key)) {
                    d.paused.insert((p, key));
                } else {
                    d.paused.remove(&(p, key));
                }
                rooms.set_paused(p, key, paused, now)
            }
            10 => rooms.set_max_layer(p, key, Layer(arg % 4), now),
            11 => rooms.set_bandwidth(p, u64::from(arg) * 20_000, now),
            12 => rooms.subscriber_keyframe_request(p, key, now),
            13 => rooms.publisher_loss(key, Layer(arg % 3), now),
            14 => {
                let layer = Layer(arg % 3);
                let keyframe = arg & 0x10 != 0;
                let bytes = usize::from(arg) * 16;
                let a = rooms.route_media(key, layer, keyframe, bytes, now, &mut out);
                assert!(
                    out.is_empty() || !d.muted.contains(&key),
                    "muted {key:?} forwarded"
                );
                for s in &out {
                    assert!(
                        d.down.contains(&(*s, key)),
                        "{s:?} has no m-line for {key:?}"
                    );
                    assert!(!d.paused.contains(&(*s, key)), "{s:?} paused {key:?}");
                    d.reach.forwarded += 1;
                }
                a
            }
            15 => {
                now += Duration::from_millis(u64::from(arg) * 20);
                rooms.tick(now)
            }
            16 => {
                let n = usize::from(arg) * 8;
                let _ = rooms.enqueue_data(p, arg.is_multiple_of(2), vec![0; n]);
                assert!(rooms.queued_bytes_of(p) <= 4096);
                Vec::new()
            }
            _ => {
                let mut budget = usize::from(arg) * 8;
                rooms.drain_data(p, |m| {
                    let ok = m.bytes.len() <= budget;
                    budget = budget.saturating_sub(m.bytes.len());
                    ok
                });
                Vec::new()
            }
        };
        d.apply(actions);
        d.reach.subscriptions = d.reach.subscriptions.max(rooms.subscription_count());
    }

    let mut everyone: Vec<ParticipantId> = d.room.keys().copied().collect();
    everyone.sort();
    for p in everyone {
        let a = rooms.leave(p);
        d.left(p);
        d.apply(a);
    }
    assert_eq!(rooms.participant_count(), 0);
    assert_eq!(rooms.room_count(), 0);
    assert_eq!(rooms.track_count(), 0);
    assert_eq!(rooms.subscription_count(), 0);
    assert_eq!(rooms.queued_bytes(), 0);
    d.reach
}

#[cfg(test)]
mod tests {
    /// The stateful corpus (fuzz/corpus/sfu_rooms) through the `sfu_rooms` target's entry
    /// point. Each run ends with the core checked empty; together the seeds must still reach
    /// subscriptions, forwarding and keyframe requests.
    #[test]
    fn replay_corpus_sfu_rooms() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sfu_rooms");
        let mut total = super::RoomsReach::default();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz/corpus/sfu_rooms exists") {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            let r = super::exercise_rooms(&data);
            total.forwarded += r.forwarded;
            total.keyframe_requests += r.keyframe_requests;
            total.subscriptions = total.subscriptions.max(r.subscriptions);
            n += 1;
        }
        assert!(n >= 3, "corpus has only {n} files");
        assert!(total.subscriptions >= 2, "{total:?}");
        assert!(total.forwarded >= 5, "{total:?}");
        assert!(total.keyframe_requests >= 1, "{total:?}");
    }

    /// The checked-in SRTP corpus (fuzz/corpus/srtp_unprotect) through the target's entry
    /// point; its seeds include packets that authenticate, for every profile and both kinds.
    #[test]
    fn replay_corpus_srtp_unprotect() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/srtp_unprotect");
        let mut authenticated = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz/corpus/srtp_unprotect exists") {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            authenticated += usize::from(super::exercise_srtp(&data));
        }
        assert!(
            authenticated >= 6,
            "only {authenticated} seeds authenticate"
        );
    }

    /// The checked-in egress RTCP corpus (fuzz/corpus/egress_rtcp): together its seeds must
    /// make the egress resend packets (a NACK for sent sequence numbers is among them).
    #[test]
    fn replay_corpus_egress_rtcp() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/egress_rtcp");
        let mut resends = 0;
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz/corpus/egress_rtcp exists") {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            resends += super::exercise_egress_rtcp(&data);
            n += 1;
        }
        assert!(n >= 3, "corpus has only {n} files");
        assert!(resends >= 2, "the seeds resend only {resends} packets");
    }

    /// The seed naming the RTX track's packets makes RTX resends, each one checked inside
    /// the harness against the packet it repairs.
    #[test]
    fn the_rtx_seed_resends_rtx_packets() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/egress_rtcp");
        let data = std::fs::read(dir.join("nack-rtx")).unwrap();
        // 65500, 65501 and 65502 (PID and BLP bits 0 and 1), both moments of the harness:
        // resent once, the second time 25 ms later.
        assert_eq!(super::exercise_egress_rtcp(&data), 6);
    }

    /// The authenticating seeds of fuzz/corpus/srtp_unprotect are what this generator makes
    /// (fixed keys and packets; AES-GCM and AES-CM are deterministic). With
    /// `SB_WRITE_SEEDS=1` it writes them instead:
    /// `SB_WRITE_SEEDS=1 cargo test -p switchboard-sfu --lib srtp_seeds`.
    #[test]
    fn srtp_seeds_are_current() {
        let write = std::env::var_os("SB_WRITE_SEEDS").is_some();
        use crate::srtp::{Context, Profile};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/srtp_unprotect");
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (i, profile) in [
            Profile::Aes128CmSha1_80,
            Profile::AeadAes128Gcm,
            Profile::AeadAes256Gcm,
        ]
        .into_iter()
        .enumerate()
        {
            let ctx = Context::new(&super::fuzz_master_key(profile)).unwrap();
            // RTP with one CSRC and a one-byte header extension, rollover counter 1.
            let mut rtp = vec![
                0x91, 0xe0, 0x12, 0x34, 0, 0, 0x0b, 0xb8, 0xca, 0xfe, 0xba, 0xbe,
            ];
            rtp.extend_from_slice(&[0, 0, 0, 7, 0xbe, 0xde, 0, 1, 0x10, 0x01, 0, 0]);
            rtp.extend_from_slice(b"vp8 payload bytes");
            ctx.protect_rtp(&mut rtp, 1).unwrap();
            let mut seed = vec![i as u8 | (1 << 2)];
            seed.extend_from_slice(&rtp);
            check_or_write(&dir.join(format!("rtp-{i}")), &seed, write);
            // A PLI.
            let mut rtcp = vec![0x81, 206, 0, 2, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
            ctx.protect_rtcp(&mut rtcp, 42).unwrap();
            let mut seed = vec![i as u8 | 0x80];
            seed.extend_from_slice(&rtcp);
            check_or_write(&dir.join(format!("rtcp-{i}")), &seed, write);
        }
    }

    fn check_or_write(path: &std::path::Path, seed: &[u8], write: bool) {
        if write {
            std::fs::write(path, seed).unwrap();
        } else {
            let on_disk = std::fs::read(path).unwrap_or_default();
            assert_eq!(
                on_disk,
                seed,
                "{} is stale: rerun with SB_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
}
