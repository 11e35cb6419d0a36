//! The fuzz entry points of signaling: the stateful hub harness
//! (fuzz/fuzz_targets/signal_hub.rs, replayed by `hub::tests::replay_corpus_signal_hub`) and
//! the message check (fuzz/fuzz_targets/signal_message.rs, replayed by
//! `protocol::tests::replay_corpus`).

use crate::hub::{Disconnect, Effect, Hub, HubConfig, JoinInfo, ModePolicy, RoomMode};
use crate::protocol::{ClientMessage, ProtocolError, ServerMessage};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Parses `text` as a client frame, both ways, and panics where they disagree. The one-pass
/// read of relay messages must give what the general path (a `Value` first) gives. There are
/// two known differences:
/// - a relayed payload is compared with one parse of the frame, not with the general path's
///   payload, which went through a second parse after serializing (that can move a float's
///   last digit; the relayed text keeps the client's digits);
/// - inside a payload, a number a `Value` cannot hold (`1e400`) and a lone UTF-16 surrogate
///   escape (`"\\udd00"`, valid JSON grammar that `serde_json` refuses as a string) are relayed
///   as text rather than refused, as the reference Python signaling server relays them; or the
///   frame is refused for another reason first, such as an empty target.
pub fn check_message(text: &str) {
    use ClientMessage::{Answer, IceCandidate, Offer};
    let fast = ClientMessage::parse(text);
    let general = ClientMessage::parse_general(text);
    let (field, t, p, u, q) = match (&fast, &general) {
        (
            Ok(Offer { target, offer }),
            Ok(Offer {
                target: u,
                offer: q,
            }),
        ) => ("offer", target, offer, u, q),
        (
            Ok(Answer { target, answer }),
            Ok(Answer {
                target: u,
                answer: q,
            }),
        ) => ("answer", target, answer, u, q),
        (
            Ok(IceCandidate { target, candidate }),
            Ok(IceCandidate {
                target: u,
                candidate: q,
            }),
        ) => ("candidate", target, candidate, u, q),
        (_, Err(ProtocolError::MalformedJson(e)))
            if e.contains("number out of range") || e.contains("surrogate") =>
        {
            return
        }
        _ => return assert_eq!(fast, general, "{text:?}"),
    };
    assert_eq!(t, u, "{text:?}");
    // Either the one pass read it (the payload is the frame's own text) or it fell back to
    // the general path (the very same payload).
    let frame: Value = serde_json::from_str(text).expect("the general path parsed it");
    assert!(
        p == q || p.to_value() == frame[field],
        "{text:?}: {p:?} vs {q:?}"
    );
}

/// What a [`exercise_hub`] run reached, so the corpus replay can check that the harness still
/// gets into rooms, relays and resumes.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubReach {
    /// Most sessions alive at once.
    pub sessions: usize,
    /// Messages delivered to a connection with a resume sequence number.
    pub relayed: usize,
    /// Successful resumes.
    pub resumed: usize,
    /// Effects for the SFU (SFU-mode rooms).
    pub to_sfu: usize,
}

const IDENTITIES: [&str; 4] = ["ann", "bob", "cat", "dan"];
const ROOMS: [&str; 2] = ["r1", "r2"];
const CONNS: u64 = 6;

/// The fuzz input, read front to back; past its end every read is zero.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// The harness's view of the connections: which are open, the last sequence number each got,
/// the resume tokens handed out.
#[derive(Default)]
struct Conns {
    closed: HashSet<u64>,
    last_seq: HashMap<u64, u64>,
    tokens: Vec<String>,
    reach: HubReach,
}

impl Conns {
    /// Applies the hub's effects as the driver would, checking them on the way.
    fn apply(&mut self, hub: &mut Hub) {
        loop {
            let effects = hub.drain();
            if effects.is_empty() {
                return;
            }
            for e in effects {
                match e {
                    Effect::Deliver { conn, msg, seq } => {
                        assert!(
                            !self.closed.contains(&conn),
                            "delivery to closed conn {conn}"
                        );
                        if let Some(seq) = seq {
                            if let Some(last) = self.last_seq.insert(conn, seq) {
                                assert!(seq > last, "conn {conn}: seq {seq} after {last}");
                            }
                            self.reach.relayed += 1;
                        }
                        if let ServerMessage::Joined { resume_token, .. } = &*msg {
                            if self.tokens.len() >= 8 {
                                self.tokens.remove(0);
                            }
                            self.tokens.push(resume_token.clone());
                        }
                        let text = msg.to_json(seq);
                        let v: Value = serde_json::from_str(&text).expect("deliveries are JSON");
                        assert!(v.get("type").is_some_and(Value::is_string), "{text}");
                    }
                    Effect::Close { conn, .. } => {
                        // The driver kills the transport; its task then reports the end.
                        self.closed.insert(conn);
                        hub.disconnect(conn, Disconnect::Fatal, Instant::now());
                    }
                    Effect::ToSfu { .. } | Effect::SfuLeave { .. } => self.reach.to_sfu += 1,
                    Effect::Forward { .. }
                    | Effect::ClusterLeave { .. }
                    | Effect::ClusterSession { .. } => {
                        panic!("cluster effects from a single-node hub: {e:?}")
                    }
                }
            }
        }
    }
}

fn client_message(c: &mut Cursor<'_>) -> ClientMessage {
    let target = match c.u8() % 5 {
        4 => "nobody".to_string(),
        i => IDENTITIES[usize::from(i)].to_string(),
    };
    let payload = json!({"sdp": "v=0", "n": c.u8()}).into();
    match c.u8() % 7 {
        0 => ClientMessage::Offer {
            target,
            offer: payload,
        },
        1 => ClientMessage::Answer {
            target,
            answer: payload,
        },
        2 => ClientMessage::IceCandidate {
            target,
            candidate: payload,
        },
        3 => ClientMessage::Bye { target },
        4 => ClientMessage::Leave,
        5 => ClientMessage::Ping { ts: json!(c.u8()) },
        _ => ClientMessage::Subscribe {
            publisher: target,
            video: Some(c.u8().is_multiple_of(2)),
            max_layer: Some(c.u8() % 4),
        },
    }
}

/// A stateful run of the hub as the WebSocket and gRPC drivers drive it: joins (identities,
/// rooms, peer ids, token rooms and mode wishes chosen by the input), relayed and other
/// messages, messages parsed from raw text, disconnects of each kind, resumes with learned or
/// bogus tokens, time passing, and server pushes.
///
/// Every delivery must go to an open connection, as JSON with a type, and numbered deliveries
/// to one connection must come in increasing order. At the end, once every connection is
/// lost and the resume grace has passed, nothing may be left: no room, no session, no resume
/// token.
pub fn exercise_hub(data: &[u8]) -> HubReach {
    let cfg = HubConfig {
        max_room_peers: 3,
        resume_grace: Duration::from_secs(15),
        resume_buffer: 6,
        // Small enough that inputs reach both byte bounds.
        resume_buffer_bytes: 1500,
        resume_total_bytes: 4000,
        mode: ModePolicy::Auto { mesh_max_peers: 2 },
        sfu_available: true,
        clustered: false,
        forward_retention: Duration::ZERO,
        mid_prefix: String::new(),
    };
    let mut hub = Hub::new(cfg);
    let mut now = Instant::now();
    let mut conns = Conns::default();
    // Connections are numbered; a closed one is replaced by a fresh number.
    let mut slots: Vec<u64> = (1..=CONNS).collect();
    let mut next_conn = CONNS + 1;
    let mut c = Cursor(data);
    let mut steps = 0;
    while !c.0.is_empty() && steps < 128 {
        steps += 1;
        let slot = usize::from(c.u8()) % slots.len();
        let conn = slots[slot];
        match c.u8() % 7 {
            0 => {
                let identity = c.pick(&IDENTITIES);
                let room = c.pick(&ROOMS);
                let peer_id = match c.u8() % 3 {
                    0 => None,
                    1 => Some(identity),
                    _ => Some(c.pick(&IDENTITIES)),
                };
                let token_room = match c.u8() % 3 {
                    0 => None,
                    _ => Some(c.pick(&ROOMS)),
                };
                let wish = c.u8();
                let info = JoinInfo {
                    requested_mode: match wish % 3 {
                        0 => None,
                        1 => Some(RoomMode::Mesh),
                        _ => Some(RoomMode::Sfu),
                    },
                    sfu_capable: wish & 4 != 0,
                    ..JoinInfo::default()
                };
                if hub
                    .join(conn, identity, room, peer_id, token_room, info)
                    .is_ok()
                {
                    // A new session numbers its messages from the start.
                    conns.last_seq.remove(&conn);
                }
            }
            1 => {
                let m = client_message(&mut c);
                hub.message(conn, m);
            }
            2 => {
                let n = usize::from(c.u8());
                if let Ok(text) = std::str::from_utf8(c.take(n)) {
                    match ClientMessage::parse(text) {
                        Ok(ClientMessage::Join { .. } | ClientMessage::RttReport { .. }) => {}
                        Ok(m) => hub.message(conn, m),
                        Err(_) => {}
                    }
                }
            }
            3 => {
                let how = c.pick(&[Disconnect::Clean, Disconnect::Lost, Disconnect::Fatal]);
                hub.disconnect(conn, how, now);
                conns.closed.insert(conn);
            }
            4 => {
                let pick = usize::from(c.u8());
                let token = match conns.tokens.get(pick % conns.tokens.len().max(1)) {
                    Some(t) if pick % 4 != 3 => t.clone(),
                    _ => "bogus".to_string(),
                };
                let last_seq = u64::from(c.u8() % 12);
                if hub
                    .resume(conn, &token, last_seq, JoinInfo::default())
                    .is_ok()
                {
                    conns.reach.resumed += 1;
                    // Replays start over from `last_seq` on this connection.
                    conns.last_seq.remove(&conn);
                }
            }
            5 => {
                now += Duration::from_secs(u64::from(c.u8() % 32));
                hub.tick(now);
            }
            _ => {
                let identity = c.pick(&IDENTITIES);
                if c.u8().is_multiple_of(2) {
                    hub.notify(identity, json!({"type": "progress", "n": 1}));
                } else {
                    let room = c.pick(&ROOMS);
                    hub.send_to_peer(room, identity, ServerMessage::error("sfu", "pushed"));
                }
            }
        }
        conns.apply(&mut hub);
        // A connection the hub had closed sends nothing more; its slot gets a new one.
        for s in slots.iter_mut() {
            if conns.closed.contains(s) {
                *s = next_conn;
                next_conn += 1;
            }
        }
        let st = hub.stats();
        assert!(st.detached <= st.sessions);
        // The node's byte bound holds after every step.
        assert!(st.resume_bytes <= 4000, "{st:?}");
        conns.reach.sessions = conns.reach.sessions.max(st.sessions);
    }

    // Every connection drops; after the grace nothing may be left.
    for conn in slots {
        hub.disconnect(conn, Disconnect::Lost, now);
    }
    conns.apply(&mut hub);
    hub.tick(now + Duration::from_secs(16));
    conns.apply(&mut hub);
    let st = hub.stats();
    assert_eq!(
        (st.rooms, st.sessions, st.detached, st.resume_bytes),
        (0, 0, 0, 0),
        "{st:?}"
    );
    for t in &conns.tokens {
        assert!(
            hub.resume_identity(t).is_none(),
            "resume token outlived its session"
        );
    }
    conns.reach
}

#[cfg(test)]
mod tests {
    /// The stateful corpus (fuzz/corpus/signal_hub) through the `signal_hub` target's entry
    /// point. Each run ends with the hub checked empty; together the seeds must still reach
    /// sessions, relayed messages, a resume and an SFU room, or the harness has stopped
    /// testing them.
    #[test]
    fn replay_corpus_signal_hub() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/signal_hub");
        let mut total = super::HubReach::default();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz/corpus/signal_hub exists") {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            let r = super::exercise_hub(&data);
            total.sessions = total.sessions.max(r.sessions);
            total.relayed += r.relayed;
            total.resumed += r.resumed;
            total.to_sfu += r.to_sfu;
            n += 1;
        }
        assert!(n >= 5, "corpus has only {n} files");
        assert!(total.sessions >= 3, "{total:?}");
        assert!(total.relayed >= 5, "{total:?}");
        assert!(total.resumed >= 1, "{total:?}");
        assert!(total.to_sfu >= 1, "{total:?}");
    }
}
