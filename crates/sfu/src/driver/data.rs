//! DataChannels: participants' envelopes relayed to one identity or the whole room, messages to
//! the server handed to signaling, and server pushes. Everything a participant receives waits
//! in the room logic's bounded queue ([`crate::core::Rooms::enqueue_data`]) until its channel
//! has room below [`CHANNEL_HIGH_WATER`].

use std::collections::HashMap;
use std::hash::Hash;

use str0m::channel::{ChannelData, ChannelId};

use super::engine::Engine;
use super::SfuEvent;
use crate::core::ParticipantId;
use crate::metrics::SfuMetrics;
use crate::wire;
use crate::SfuError;

/// Above this many bytes buffered in a DataChannel, queued messages wait in the core's bounded
/// queue instead (backpressure towards senders).
const CHANNEL_HIGH_WATER: usize = 256 * 1024;
/// str0m reports `ChannelBufferedAmountLow` below this; the queue is drained again then.
const CHANNEL_LOW_WATER: usize = 64 * 1024;

/// A session's open DataChannels. What arrives on a channel is relayed with that channel's
/// reliability; what the SFU sends goes on the first reliable or the first lossy channel the
/// browser opened, or on the other kind when only that one is open.
#[derive(Debug)]
pub(super) struct Channels<C = ChannelId> {
    reliable: Option<C>,
    lossy: Option<C>,
    /// Open channels and whether each is reliable.
    open: HashMap<C, bool>,
}

impl<C> Default for Channels<C> {
    fn default() -> Self {
        Channels {
            reliable: None,
            lossy: None,
            open: HashMap::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> Channels<C> {
    /// The browser opened channel `id` labelled `label`; "updates" and labels containing
    /// "lossy" are the lossy kind.
    pub(super) fn opened(&mut self, id: C, label: &str) {
        let lossy = label == "updates" || label.contains("lossy");
        self.open.insert(id, !lossy);
        if lossy {
            self.lossy.get_or_insert(id);
        } else {
            self.reliable.get_or_insert(id);
        }
    }

    /// Channel `id` closed.
    pub(super) fn closed(&mut self, id: C) {
        self.open.remove(&id);
        if self.reliable == Some(id) {
            self.reliable = None;
        }
        if self.lossy == Some(id) {
            self.lossy = None;
        }
    }

    /// Whether what arrives on `id` is relayed as reliable (unknown channels are).
    pub(super) fn is_reliable(&self, id: C) -> bool {
        self.open.get(&id).copied().unwrap_or(true)
    }

    /// The channel a message of this reliability goes out on.
    pub(super) fn for_message(&self, reliable: bool) -> Option<C> {
        if reliable {
            self.reliable.or(self.lossy)
        } else {
            self.lossy.or(self.reliable)
        }
    }
}

fn data_dropped(metrics: &SfuMetrics, reason: &'static str) {
    metrics
        .data_dropped
        .get_or_create(&[("reason", reason)])
        .inc();
}

impl Engine {
    /// A server message for `id`'s DataChannel: `{"from":"$server","topic":topic,"data":data}`.
    pub(super) fn push_data(
        &mut self,
        id: ParticipantId,
        topic: &str,
        data: &str,
        reliable: bool,
    ) -> Result<(), SfuError> {
        let Some(bytes) = wire::encode_envelope(wire::SERVER_ID, Some(topic), data) else {
            return Err(SfuError::BadData);
        };
        if !self.sessions.contains_key(&id) {
            return Err(SfuError::UnknownParticipant);
        }
        match self.rooms.enqueue_data(id, reliable, bytes) {
            Ok(()) => {
                self.flush_data(id);
                Ok(())
            }
            Err(_) => {
                data_dropped(&self.metrics, "queue_full");
                Err(SfuError::Backpressure)
            }
        }
    }

    /// The browser opened a DataChannel: what is queued for it may go now.
    pub(super) fn channel_open(&mut self, id: ParticipantId, cid: ChannelId, label: &str) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.channels.opened(cid, label);
        if let Some(mut ch) = s.rtc.channel(cid) {
            ch.set_buffered_amount_low_threshold(CHANNEL_LOW_WATER);
        }
        self.flush_data(id);
    }

    /// A DataChannel closed.
    pub(super) fn channel_close(&mut self, id: ParticipantId, cid: ChannelId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.channels.closed(cid);
        }
    }

    /// A message from `id`: to the server (an event for signaling), to one identity in the
    /// room, or to everyone else in the room.
    pub(super) fn channel_data(&mut self, id: ParticipantId, d: ChannelData) {
        let max = self.cfg.max_data_message_bytes;
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let reliable = s.channels.is_reliable(d.id);
        let msg = match wire::parse_envelope(&d.data, d.binary, max) {
            Ok(m) => m,
            Err(e) => {
                data_dropped(&self.metrics, e.reason());
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
                    data_dropped(&self.metrics, "event_queue_full");
                }
                return;
            }
            Some(to) => match self.by_identity.get(&(room.clone(), to.to_owned())) {
                Some(t) => vec![*t],
                None => {
                    data_dropped(&self.metrics, "unknown_target");
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
                Err(_) => data_dropped(&self.metrics, "queue_full"),
            }
        }
    }

    /// Writes `id`'s queued messages into its channels while they have room.
    pub(super) fn flush_data(&mut self, id: ParticipantId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut wrote = false;
        let channels = &s.channels;
        let rtc = &mut s.rtc;
        self.rooms.drain_data(id, |m| {
            let Some(mut ch) = channels
                .for_message(m.reliable)
                .and_then(|c| rtc.channel(c))
            else {
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
            self.work.mark(id, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_channels_are_known_by_their_label() {
        let mut c = Channels::<u32>::default();
        c.opened(1, "updates");
        c.opened(2, "chat-lossy");
        c.opened(3, "chat");
        assert!(!c.is_reliable(1));
        assert!(!c.is_reliable(2));
        assert!(c.is_reliable(3));
        assert!(c.is_reliable(99), "an unknown channel counts as reliable");
    }

    #[test]
    fn messages_go_on_the_first_channel_of_their_kind_else_the_other() {
        let mut c = Channels::<u32>::default();
        assert_eq!(c.for_message(true), None);
        c.opened(1, "updates");
        assert_eq!(c.for_message(true), Some(1), "only a lossy channel is open");
        assert_eq!(c.for_message(false), Some(1));
        c.opened(2, "reliable");
        c.opened(3, "second reliable");
        assert_eq!(c.for_message(true), Some(2), "the first reliable one");
        assert_eq!(c.for_message(false), Some(1));
        c.closed(1);
        assert_eq!(c.for_message(false), Some(2));
        c.closed(2);
        // The second reliable channel is open but not used: only the first of a kind is.
        assert_eq!(c.for_message(true), None);
        assert!(c.is_reliable(3));
    }
}
