//! Connects signaling to the SFU (docs/sfu-protocol.md): the [`SfuBridge`] that SFU-mode rooms
//! hand their peers' messages to.
//!
//! Each participant gets one task that owns its [`ParticipantHandle`] and handles, in order,
//! the peer's signaling messages (offer, answer, candidates, `subscribe`, `bye`) and the SFU's
//! events (server offers, tracks added/ended, connected/closed, data for `$server`). Signaling
//! calls the bridge while holding its hub lock, so [`SfuBridge::handle`] and
//! [`SfuBridge::leave`] only enqueue (bounded; overflow is refused and counted), and replies go
//! back through [`SignalHandle::send_to_peer`] from the participant's task.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::metrics::Label;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use switchboard_sfu::{ParticipantHandle, Sfu, SfuError, SfuEvent};
use switchboard_signal::protocol::ClientMessage;
use switchboard_signal::{SfuBridge, SignalHandle};
use tokio::sync::mpsc;

/// Name of the SFU as a peer in signaling messages.
pub const SFU_PEER: &str = "$sfu";
/// Signaling messages queued per participant before new ones are refused.
const QUEUE: usize = 256;

enum Cmd {
    Signal(ClientMessage),
    Push { topic: &'static str, data: String },
}

struct Entry {
    tx: mpsc::Sender<Cmd>,
}

struct Inner {
    sfu: Arc<Sfu>,
    signal: OnceLock<SignalHandle>,
    /// Live participant tasks by (room, identity).
    parts: Mutex<HashMap<(String, String), Entry>>,
    errors: Family<Label, Counter>,
}

/// The server's [`SfuBridge`]: SFU-mode rooms of signaling, served by the SFU engine.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

impl Bridge {
    /// A bridge over a running SFU; registers `switchboard_sfu_signal_errors_total{reason}`.
    pub fn new(sfu: Arc<Sfu>, registry: &mut Registry) -> Bridge {
        let errors = Family::<Label, Counter>::default();
        registry.register(
            "sfu_signal_errors",
            "SFU requests over signaling that failed, by reason",
            errors.clone(),
        );
        Bridge {
            inner: Arc::new(Inner {
                sfu,
                signal: OnceLock::new(),
                parts: Mutex::new(HashMap::new()),
                errors,
            }),
        }
    }

    /// Gives the bridge its way back to the peers (signaling exists only after the bridge).
    pub fn attach(&self, signal: SignalHandle) {
        let _ = self.inner.signal.set(signal);
    }

    /// Pushes `data` (JSON) to `identity`'s SFU DataChannel under `topic`, if it has an SFU
    /// session. Returns whether it was queued.
    pub fn push(&self, identity: &str, topic: &'static str, data: &Value) -> bool {
        let parts = self.inner.parts.lock();
        let mut queued = false;
        for ((_, peer), e) in parts.iter() {
            if peer == identity {
                let cmd = Cmd::Push {
                    topic,
                    data: data.to_string(),
                };
                match e.tx.try_send(cmd) {
                    Ok(()) => queued = true,
                    Err(_) => self.inner.count("push_queue_full"),
                }
            }
        }
        queued
    }

    /// Live participant tasks (for tests and the leave proof).
    pub fn participants(&self) -> usize {
        self.inner.parts.lock().len()
    }

    /// The SFU engine's resource counts.
    pub async fn counts(&self) -> Result<switchboard_sfu::SfuCounts, SfuError> {
        self.inner.sfu.counts().await
    }
}

impl Inner {
    fn count(&self, reason: &'static str) {
        self.errors.get_or_create(&[("reason", reason)]).inc();
    }

    fn send(&self, room: &str, peer: &str, msg: Value) {
        if let Some(s) = self.signal.get() {
            s.send_to_peer(room, peer, msg);
        }
    }

    fn fail(&self, room: &str, peer: &str, e: &SfuError) {
        let reason = e.reason();
        self.count(reason);
        self.send(
            room,
            peer,
            json!({"type":"error","code":format!("sfu_{reason}"),"message":e.to_string()}),
        );
    }
}

impl SfuBridge for Bridge {
    fn available(&self) -> bool {
        true
    }

    fn handle(&self, room: &str, peer: &str, msg: ClientMessage) {
        let mut parts = self.inner.parts.lock();
        let key = (room.to_string(), peer.to_string());
        let entry = parts.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let inner = self.inner.clone();
            let (room, peer) = (room.to_string(), peer.to_string());
            tokio::spawn(participant(inner, room, peer, rx));
            Entry { tx }
        });
        if entry.tx.try_send(Cmd::Signal(msg)).is_err() {
            self.inner.count("queue_full");
            let inner = self.inner.clone();
            let (room, peer) = (room.to_string(), peer.to_string());
            // Not under the hub lock: signaling is locked while it calls us.
            tokio::spawn(async move {
                inner.send(
                    &room,
                    &peer,
                    json!({"type":"error","code":"sfu_queue_full",
                           "message":"too many SFU requests in flight; message dropped"}),
                );
            });
        }
    }

    fn leave(&self, room: &str, peer: &str) {
        // Dropping the sender ends the participant's task, which leaves the SFU.
        self.inner
            .parts
            .lock()
            .remove(&(room.to_string(), peer.to_string()));
    }
}

/// What a participant's task holds while it has an SFU session.
struct Session {
    handle: ParticipantHandle,
    events: mpsc::Receiver<SfuEvent>,
}

async fn participant(inner: Arc<Inner>, room: String, peer: String, mut rx: mpsc::Receiver<Cmd>) {
    let mut session: Option<Session> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Signal(msg)) => on_signal(&inner, &room, &peer, &mut session, msg).await,
                Some(Cmd::Push { topic, data }) => {
                    if let Some(s) = &session {
                        if let Err(e) = s.handle.send_data(topic, &data, true).await {
                            inner.count(e.reason());
                        }
                    }
                }
            },
            ev = next_event(&mut session) => match ev {
                Some(ev) => on_event(&inner, &room, &peer, &mut session, ev).await,
                None => {
                    session = None;
                    inner.send(&room, &peer, json!({"type":"sfu_closed","from":SFU_PEER,"reason":"gone"}));
                }
            },
        }
    }
    if let Some(s) = session {
        s.handle.leave().await;
    }
}

async fn next_event(session: &mut Option<Session>) -> Option<SfuEvent> {
    match session {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

/// The SDP text of an `RTCSessionDescriptionInit` (or a bare string).
fn sdp_of(v: &Value) -> Option<&str> {
    v.get("sdp").and_then(Value::as_str).or_else(|| v.as_str())
}

async fn on_signal(
    inner: &Inner,
    room: &str,
    peer: &str,
    session: &mut Option<Session>,
    msg: ClientMessage,
) {
    match msg {
        ClientMessage::Offer { offer, .. } => {
            let offer = offer.to_value();
            let Some(sdp) = sdp_of(&offer) else {
                return inner.fail(room, peer, &SfuError::Sdp("offer has no sdp".into()));
            };
            if session.is_none() {
                match inner.sfu.join(room, peer).await {
                    Ok(mut handle) => match handle.take_events() {
                        Some(events) => *session = Some(Session { handle, events }),
                        None => return inner.fail(room, peer, &SfuError::Stopped),
                    },
                    Err(e) => return inner.fail(room, peer, &e),
                }
            }
            let Some(s) = session.as_ref() else { return };
            match s.handle.accept_offer(sdp).await {
                Ok(answer) => inner.send(
                    room,
                    peer,
                    json!({"type":"answer","from":SFU_PEER,"answer":{"type":"answer","sdp":answer}}),
                ),
                Err(e) => inner.fail(room, peer, &e),
            }
        }
        ClientMessage::Answer { answer, .. } => {
            let answer = answer.to_value();
            let r = match (session.as_ref(), sdp_of(&answer)) {
                (None, _) => Err(SfuError::UnknownParticipant),
                (_, None) => Err(SfuError::Sdp("answer has no sdp".into())),
                (Some(s), Some(sdp)) => s.handle.accept_answer(sdp).await,
            };
            if let Err(e) = r {
                inner.fail(room, peer, &e);
            }
        }
        ClientMessage::IceCandidate { candidate, .. } => {
            // Before the first offer there is no session to trickle into; the SFU is ICE-lite
            // and learns the client's addresses from its connectivity checks anyway.
            if let Some(s) = session.as_ref() {
                let text = match candidate.to_value() {
                    Value::String(c) => c,
                    other => other.to_string(),
                };
                if let Err(e) = s.handle.add_remote_candidate(&text).await {
                    inner.fail(room, peer, &e);
                }
            }
        }
        ClientMessage::Subscribe {
            publisher,
            video,
            max_layer,
        } => {
            let Some(s) = session.as_ref() else {
                return inner.fail(room, peer, &SfuError::UnknownParticipant);
            };
            let r = s
                .handle
                .set_video_preference(&publisher, max_layer.unwrap_or(2), !video.unwrap_or(true))
                .await;
            if let Err(e) = r {
                inner.fail(room, peer, &e);
            }
        }
        ClientMessage::Bye { .. } => {
            if let Some(s) = session.take() {
                s.handle.leave().await;
                inner.send(
                    room,
                    peer,
                    json!({"type":"sfu_closed","from":SFU_PEER,"reason":"bye"}),
                );
            }
        }
        // join/leave/ping/rtt_report never reach the bridge (signaling handles them).
        _ => {}
    }
}

async fn on_event(
    inner: &Inner,
    room: &str,
    peer: &str,
    session: &mut Option<Session>,
    ev: SfuEvent,
) {
    let msg = match ev {
        SfuEvent::Offer(sdp) => {
            json!({"type":"offer","from":SFU_PEER,"offer":{"type":"offer","sdp":sdp}})
        }
        SfuEvent::Connected => json!({"type":"sfu_connected","from":SFU_PEER}),
        SfuEvent::TrackAdded {
            publisher,
            track,
            mid,
            kind,
        } => json!({"type":"track_added","from":SFU_PEER,"publisher":publisher,
                    "track":track,"mid":mid,"kind":kind}),
        SfuEvent::TrackEnded {
            publisher,
            track,
            mid,
        } => json!({"type":"track_ended","from":SFU_PEER,"publisher":publisher,
                    "track":track,"mid":mid}),
        SfuEvent::Data { data, .. } => {
            // `{"p": ts}` to `$server` is the SDK's RTT ping; anything else is not understood.
            let ping = serde_json::from_str::<Value>(&data)
                .ok()
                .and_then(|v| v.get("p").cloned())
                .filter(Value::is_number);
            match (ping, session.as_ref()) {
                (Some(ts), Some(s)) => {
                    let pong = json!({ "q": ts }).to_string();
                    if let Err(e) = s.handle.send_data("pong", &pong, false).await {
                        inner.count(e.reason());
                    }
                }
                _ => inner.count("unknown_server_data"),
            }
            return;
        }
        SfuEvent::Closed { reason } => {
            *session = None;
            json!({"type":"sfu_closed","from":SFU_PEER,"reason":reason})
        }
    };
    inner.send(room, peer, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_is_taken_from_the_description_or_a_string() {
        assert_eq!(sdp_of(&json!({"type":"offer","sdp":"v=0"})), Some("v=0"));
        assert_eq!(sdp_of(&json!("v=0")), Some("v=0"));
        assert_eq!(sdp_of(&json!({"type":"offer"})), None);
        assert_eq!(sdp_of(&json!(7)), None);
    }
}
