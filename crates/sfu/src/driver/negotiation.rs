//! SDP offer/answer with str0m, and the life of each down-track's m-line.
//!
//! The browser offers first ([`Engine::accept_offer`]); afterwards the SFU offers whenever the
//! room logic adds or removes down-tracks ([`Engine::negotiate`]), one offer at a time. In
//! glare the browser's offer wins: the SFU is the polite side, puts its offered changes back in
//! the queue and offers them again after answering. A down-track goes
//! `ToAdd → Offered → Open` and `ToRemove → RemoveOffered → gone` ([`DownTracks`]); media is
//! forwarded on it only while it is `Open`.

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Candidate;

use super::engine::Engine;
use super::forward::Path;
use super::{kind_label, SfuEvent};
use crate::core::{ParticipantId, TrackKey, TrackKind};
use crate::retime::Retimer;
use crate::SfuError;

/// Where a down-track's m-line is in the offer/answer cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownState {
    /// To be added in the next server offer.
    ToAdd,
    /// Added in the outstanding server offer.
    Offered,
    /// Answered: media flows.
    Open,
    /// To be stopped in the next server offer.
    ToRemove,
    /// Stopped in the outstanding server offer.
    RemoveOffered,
}

/// An m-line in a subscriber's session that sends another participant's track.
#[derive(Debug)]
pub(super) struct DownTrack {
    pub(super) kind: TrackKind,
    pub(super) publisher: String,
    pub(super) track_id: String,
    pub(super) mid: Option<Mid>,
    state: DownState,
    /// Keeps the media time continuous across simulcast layer switches.
    pub(super) retimer: Retimer,
    /// Which egress sends this down-track, decided at its first frame.
    pub(super) path: Path,
}

/// What an SDP offer under construction must do for [`DownTracks::offer`]: str0m's [`SdpApi`]
/// in the engine, a recording fake in tests.
pub(super) trait OfferChanges {
    /// Adds a send-only m-line for `publisher`'s track `track_id`; returns its mid.
    fn add_send_only(&mut self, kind: TrackKind, publisher: &str, track_id: &str) -> Mid;
    /// Stops the m-line `mid`.
    fn stop(&mut self, mid: Mid);
}

impl OfferChanges for SdpApi<'_> {
    fn add_send_only(&mut self, kind: TrackKind, publisher: &str, track_id: &str) -> Mid {
        let kind = match kind {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        };
        self.add_media(
            kind,
            Direction::SendOnly,
            Some(publisher.to_owned()),
            Some(track_id.to_owned()),
            None,
        )
    }

    fn stop(&mut self, mid: Mid) {
        self.stop_media(mid);
    }
}

/// What an answer to the server's offer settled.
pub(super) struct Answered {
    /// Down-tracks now open, to announce and start forwarding on.
    pub(super) ready: Vec<TrackKey>,
    /// Down-tracks whose m-line is now stopped, removed from the session.
    pub(super) ended: Vec<DownTrack>,
    /// Changes queued meanwhile, for the next offer.
    pub(super) more: bool,
}

/// A session's down-tracks, by track and by m-line.
#[derive(Debug, Default)]
pub(super) struct DownTracks {
    by_key: HashMap<TrackKey, DownTrack>,
    by_mid: HashMap<Mid, TrackKey>,
}

impl DownTracks {
    /// Queues a new down-track for `publisher`'s track `key` (replacing any entry for `key`).
    pub(super) fn add(&mut self, key: TrackKey, kind: TrackKind, publisher: String) {
        self.by_key.insert(
            key,
            DownTrack {
                kind,
                track_id: format!("{publisher}-{}", key.index),
                publisher,
                mid: None,
                state: DownState::ToAdd,
                retimer: Retimer::default(),
                path: Path::Undecided,
            },
        );
    }

    /// Queues the removal of `key`'s down-track; false if there is none.
    pub(super) fn remove(&mut self, key: TrackKey) -> bool {
        match self.by_key.get_mut(&key) {
            Some(d) => {
                d.state = DownState::ToRemove;
                true
            }
            None => false,
        }
    }

    /// `key`'s down-track, if media may flow on it.
    pub(super) fn open_mut(&mut self, key: &TrackKey) -> Option<&mut DownTrack> {
        self.by_key
            .get_mut(key)
            .filter(|t| t.state == DownState::Open)
    }

    /// The track the m-line `mid` sends.
    pub(super) fn key_of(&self, mid: &Mid) -> Option<TrackKey> {
        self.by_mid.get(mid).copied()
    }

    /// Whether the session has no down-track.
    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Puts the queued changes into an offer: additions get an m-line, removals of offered
    /// m-lines stop them, and removals of tracks never offered are dropped at once.
    pub(super) fn offer(&mut self, api: &mut impl OfferChanges) {
        let mut drop_now = Vec::new();
        for (key, d) in self.by_key.iter_mut() {
            match d.state {
                DownState::ToAdd => {
                    let mid = api.add_send_only(d.kind, &d.publisher, &d.track_id);
                    d.mid = Some(mid);
                    d.state = DownState::Offered;
                    self.by_mid.insert(mid, *key);
                }
                DownState::ToRemove => match d.mid {
                    Some(mid) => {
                        api.stop(mid);
                        d.state = DownState::RemoveOffered;
                    }
                    None => drop_now.push(*key),
                },
                _ => {}
            }
        }
        for key in drop_now {
            self.by_key.remove(&key);
        }
    }

    /// The browser answered the server's offer: offered additions open, offered removals end.
    pub(super) fn answered(&mut self) -> Answered {
        let mut ready = Vec::new();
        let mut ended_keys = Vec::new();
        for (key, d) in self.by_key.iter_mut() {
            match d.state {
                DownState::Offered => {
                    d.state = DownState::Open;
                    ready.push(*key);
                }
                DownState::RemoveOffered => ended_keys.push(*key),
                _ => {}
            }
        }
        let mut ended = Vec::with_capacity(ended_keys.len());
        for key in ended_keys {
            if let Some(d) = self.by_key.remove(&key) {
                if let Some(mid) = d.mid {
                    self.by_mid.remove(&mid);
                }
                ended.push(d);
            }
        }
        let more = self
            .by_key
            .values()
            .any(|d| matches!(d.state, DownState::ToAdd | DownState::ToRemove));
        Answered { ready, ended, more }
    }

    /// The server's offer is void (glare, or its answer failed): its changes go back in the
    /// queue.
    pub(super) fn rollback(&mut self) {
        for d in self.by_key.values_mut() {
            match d.state {
                DownState::Offered => {
                    if let Some(mid) = d.mid.take() {
                        self.by_mid.remove(&mid);
                    }
                    d.state = DownState::ToAdd;
                }
                DownState::RemoveOffered => d.state = DownState::ToRemove,
                _ => {}
            }
        }
    }

    /// `key`'s down-track.
    pub(super) fn get(&self, key: &TrackKey) -> Option<&DownTrack> {
        self.by_key.get(key)
    }
}

/// A session's side of the offer/answer exchange.
#[derive(Default)]
pub(super) struct OfferState {
    /// The server's offer awaiting the browser's answer.
    pending: Option<SdpPendingOffer>,
    /// The browser's first offer was applied: the server may offer from now on.
    negotiated: bool,
}

/// The candidate line in what the browser trickled: the SDP attribute value
/// (`candidate:...`, with or without `a=`) or the `candidate` of an `RTCIceCandidateInit`
/// JSON object. `None` for an empty candidate (end of candidates).
fn candidate_line(candidate: &str) -> Result<Option<String>, SfuError> {
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
        return Ok(None);
    }
    Ok(Some(line.strip_prefix("a=").unwrap_or(line).to_owned()))
}

impl Engine {
    /// Applies the browser's offer (initial, renegotiation or ICE restart); returns the answer.
    pub(super) fn accept_offer(
        &mut self,
        id: ParticipantId,
        sdp: &str,
    ) -> Result<String, SfuError> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        if s.offer.pending.take().is_some() {
            // Glare: the browser's offer wins; our changes are re-offered after this answer.
            s.down.rollback();
        }
        let answer = s
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        s.offer.negotiated = true;
        // An ICE restart in the offer gives us new local credentials: route the new ufrag and
        // keep the previous one until the next restart (checks in flight still carry it).
        let ufrag = s.rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.set_ufrag(&mut s.routes, id, ufrag);
        self.work.renegotiate.insert(id);
        self.work.mark(id, s);
        Ok(answer.to_sdp_string())
    }

    /// Applies the browser's answer to the outstanding server offer.
    pub(super) fn accept_answer(
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
        let pending = s.offer.pending.take().ok_or(SfuError::NoPendingOffer)?;
        if let Err(e) = s.rtc.sdp_api().accept_answer(pending, answer) {
            // The offer is void; queue its changes again and offer afresh.
            s.down.rollback();
            self.work.renegotiate.insert(id);
            return Err(SfuError::Sdp(e.to_string()));
        }
        let Answered { ready, ended, more } = s.down.answered();
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
        for d in ended {
            if let (Path::Own(ssrc), Some(own)) = (d.path, s.own.as_mut()) {
                own.egress.remove_track(ssrc);
            }
            let _ = s.events.try_send(SfuEvent::TrackEnded {
                publisher: d.publisher,
                track: d.track_id,
                mid: d.mid.map(|m| m.to_string()).unwrap_or_default(),
            });
        }
        if more {
            self.work.renegotiate.insert(id);
        }
        self.work.mark(id, s);
        for key in ready {
            let actions = self.rooms.down_track_ready(id, key, now);
            self.apply(actions);
        }
        Ok(())
    }

    /// Adds a trickled remote candidate (see [`candidate_line`]).
    pub(super) fn add_candidate(
        &mut self,
        id: ParticipantId,
        candidate: &str,
    ) -> Result<(), SfuError> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let Some(line) = candidate_line(candidate)? else {
            return Ok(());
        };
        let c =
            Candidate::from_sdp_string(&line).map_err(|e| SfuError::Candidate(e.to_string()))?;
        s.rtc.add_remote_candidate(c);
        self.work.mark(id, s);
        Ok(())
    }

    /// Emits a server offer for queued down-track changes, unless one is outstanding or the
    /// browser has not offered yet.
    pub(super) fn negotiate(&mut self, id: ParticipantId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.offer.negotiated || s.offer.pending.is_some() {
            return;
        }
        let mut api = s.rtc.sdp_api();
        s.down.offer(&mut api);
        let applied = if api.has_changes() { api.apply() } else { None };
        if let Some((offer, pending)) = applied {
            s.offer.pending = Some(pending);
            if s.events
                .try_send(SfuEvent::Offer(offer.to_sdp_string()))
                .is_err()
            {
                self.metrics
                    .session_errors
                    .get_or_create(&[("reason", "event_queue_full")])
                    .inc();
                s.rtc.disconnect();
            }
        }
        self.work.mark(id, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what an offer would contain; mids are handed out in order.
    #[derive(Default)]
    struct Recorder {
        added: Vec<String>,
        stopped: Vec<Mid>,
    }

    impl OfferChanges for Recorder {
        fn add_send_only(&mut self, _: TrackKind, _: &str, track_id: &str) -> Mid {
            self.added.push(track_id.to_owned());
            Mid::from(format!("m{}", self.added.len()).as_str())
        }

        fn stop(&mut self, mid: Mid) {
            self.stopped.push(mid);
        }
    }

    fn key(publisher: u64, index: u32) -> TrackKey {
        TrackKey {
            publisher: ParticipantId(publisher),
            index,
        }
    }

    fn state(d: &DownTracks, k: TrackKey) -> Option<DownState> {
        d.get(&k).map(|t| t.state)
    }

    #[test]
    fn a_down_track_opens_after_the_answer_and_ends_after_the_next() {
        let mut d = DownTracks::default();
        let k = key(1, 0);
        d.add(k, TrackKind::Video, "alice".into());
        assert_eq!(d.get(&k).map(|t| t.track_id.as_str()), Some("alice-0"));
        assert!(d.open_mut(&k).is_none(), "no media before the answer");
        let mut api = Recorder::default();
        d.offer(&mut api);
        assert_eq!(api.added, vec!["alice-0".to_string()]);
        let mid = d.get(&k).and_then(|t| t.mid).expect("offered with a mid");
        assert_eq!(d.key_of(&mid), Some(k));
        assert!(d.open_mut(&k).is_none(), "no media before the answer");

        let a = d.answered();
        assert_eq!(a.ready, vec![k]);
        assert!(a.ended.is_empty() && !a.more);
        assert!(d.open_mut(&k).is_some());

        assert!(d.remove(k));
        assert!(d.open_mut(&k).is_none(), "no media once removal is queued");
        let mut api = Recorder::default();
        d.offer(&mut api);
        assert_eq!(api.stopped, vec![mid]);
        assert_eq!(state(&d, k), Some(DownState::RemoveOffered));
        let a = d.answered();
        assert!(a.ready.is_empty());
        assert_eq!(a.ended.len(), 1);
        assert_eq!(a.ended[0].publisher, "alice");
        assert!(d.is_empty());
        assert_eq!(d.key_of(&mid), None);
        assert!(!d.remove(k), "nothing left to remove");
    }

    #[test]
    fn a_track_removed_before_it_was_offered_is_dropped_without_an_m_line() {
        let mut d = DownTracks::default();
        let k = key(1, 0);
        d.add(k, TrackKind::Audio, "bob".into());
        assert!(d.remove(k));
        let mut api = Recorder::default();
        d.offer(&mut api);
        assert!(api.added.is_empty() && api.stopped.is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn rollback_requeues_offered_changes_and_the_answer_reports_more_work() {
        let mut d = DownTracks::default();
        let (k1, k2) = (key(1, 0), key(2, 0));
        d.add(k1, TrackKind::Video, "a".into());
        d.offer(&mut Recorder::default());
        d.answered();
        d.add(k2, TrackKind::Video, "b".into());
        assert!(d.remove(k1));
        d.offer(&mut Recorder::default());
        let mid2 = d.get(&k2).and_then(|t| t.mid).expect("offered");
        // Glare: the browser's offer wins over ours.
        d.rollback();
        assert_eq!(state(&d, k1), Some(DownState::ToRemove));
        assert_eq!(state(&d, k2), Some(DownState::ToAdd));
        assert_eq!(d.get(&k2).and_then(|t| t.mid), None);
        assert_eq!(d.key_of(&mid2), None);
        // An answer that settles nothing of ours still says the queue is not empty.
        let a = d.answered();
        assert!(a.ready.is_empty() && a.ended.is_empty());
        assert!(a.more);
    }

    #[test]
    fn candidate_lines_from_sdp_and_json() {
        let c = "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host";
        assert_eq!(candidate_line(c).unwrap().as_deref(), Some(c));
        assert_eq!(
            candidate_line(&format!("  a={c}\r\n")).unwrap().as_deref(),
            Some(c)
        );
        let json = format!(r#"{{"candidate":"{c}","sdpMid":"0","sdpMLineIndex":0}}"#);
        assert_eq!(candidate_line(&json).unwrap().as_deref(), Some(c));
        // End of candidates, in every form.
        assert_eq!(candidate_line("").unwrap(), None);
        assert_eq!(candidate_line("  ").unwrap(), None);
        assert_eq!(candidate_line(r#"{"candidate":""}"#).unwrap(), None);
        assert_eq!(candidate_line(r#"{"sdpMid":"0"}"#).unwrap(), None);
        assert!(matches!(
            candidate_line("{not json"),
            Err(SfuError::Candidate(_))
        ));
    }
}
