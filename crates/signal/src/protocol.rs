//! The wire dialect: the JSON messages of the reference Python signaling server and its
//! WebRTCClient/DataChannelClient (bench/reference_signaling_server.py,
//! e2e/browser/reference_client.js), plus Switchboard's additions
//! (`joined`, `rtt_report`, `seq` on delivered messages). Parsing never panics; every failure
//! is a [`ProtocolError`] with a stable code that goes back to the client as `{"type":"error"}`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Largest identity, room id or peer id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most RTT samples accepted in one `rtt_report`.
pub const MAX_RTT_SAMPLES: usize = 256;

/// A relayed payload (an offer, answer or ICE candidate): the client's JSON text, checked to
/// be valid JSON and forwarded as it came (same key order, same escapes), never built into a
/// tree. Relaying is the hot path; building and re-serializing a `Value` for every SDP was
/// most of the server's own CPU per message (bench/RESULTS.md, "## Signaling", "Relay payloads
/// as text").
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The payload as a tree, for the few places that look inside (the SFU, gRPC).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl From<&Value> for Payload {
    fn from(v: &Value) -> Payload {
        // A `Value` always serializes (its map keys are strings); `null` is the fallback.
        Payload(
            serde_json::value::to_raw_value(v)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON")),
        )
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Payload {
        Payload::from(&v)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.json() == other.json()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// Through a `Value`: inside the internally tagged [`ClientMessage`] serde hands fields
    /// over as buffered content, which a `RawValue` cannot be read from. [`ClientMessage::parse`]
    /// reads relay messages without this detour.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        Value::deserialize(d).map(Payload::from)
    }
}

/// The fields of a relay message, read straight from the text (see [`ClientMessage::parse`]).
#[derive(Deserialize)]
struct RelayProbe<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    target: Option<String>,
    offer: Option<Box<RawValue>>,
    answer: Option<Box<RawValue>>,
    candidate: Option<Box<RawValue>>,
}

/// A message from a client. Serialized as it was received (to carry it to another node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `{"type":"join","room_id":R}`; `peer_id`, if sent, must equal the token's `sub`.
    Join {
        room_id: String,
        #[serde(default)]
        peer_id: Option<String>,
        /// `"sfu"` or `"mesh"`: the mode wished for a room this join creates (honoured under
        /// `[sfu] mode = "auto"` only).
        #[serde(default)]
        mode: Option<String>,
        /// The client can take part in an SFU room (the SDK sends `true`; the reference
        /// WebRTCClient does not, which keeps `auto` rooms with such members in mesh mode).
        #[serde(default)]
        sfu_capable: bool,
    },
    Offer {
        target: String,
        offer: Payload,
    },
    Answer {
        target: String,
        answer: Payload,
    },
    IceCandidate {
        target: String,
        candidate: Payload,
    },
    Bye {
        target: String,
    },
    Leave,
    Ping {
        #[serde(default)]
        ts: Value,
    },
    /// RTT samples measured by the SDK over DataChannels, in milliseconds.
    RttReport {
        rtt_ms: Vec<f64>,
    },
    /// SFU rooms: what this client receives of `publisher`'s video (`video: false` pauses
    /// it; `max_layer` caps the simulcast layer, 0 = lowest).
    Subscribe {
        publisher: String,
        #[serde(default)]
        video: Option<bool>,
        #[serde(default)]
        max_layer: Option<u8>,
    },
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "ice_candidate",
    "bye",
    "leave",
    "ping",
    "rtt_report",
    "subscribe",
];

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("message must be a JSON object with a string \"type\"")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} message: {detail}")]
    BadMessage { kind: String, detail: String },
    #[error("binary frames are not accepted; send JSON text")]
    BinaryFrame,
}

impl ProtocolError {
    /// Stable `code` for the `error` message and the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::MalformedJson(_) => "malformed_json",
            ProtocolError::MissingType => "missing_type",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::BadMessage { .. } => "bad_message",
            ProtocolError::BinaryFrame => "binary_frame",
        }
    }
}

fn check_id(kind: &str, field: &str, v: &str) -> Result<(), ProtocolError> {
    if v.is_empty() || v.len() > MAX_ID_BYTES {
        return Err(ProtocolError::BadMessage {
            kind: kind.into(),
            detail: format!("{field} must be 1 to {MAX_ID_BYTES} bytes"),
        });
    }
    Ok(())
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// Offers, answers and candidates are read in one pass, their payload kept as text. Anything
    /// that pass does not settle (other types, a missing or `null` payload, a duplicate key,
    /// malformed JSON) goes through the general path, so results and error messages are the
    /// same either way.
    pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
        if let Some(m) = Self::parse_relay(text) {
            return m;
        }
        Self::parse_general(text)
    }

    /// [`parse`](Self::parse) without the one-pass read of relay messages: a `Value` first,
    /// for every type. Public for the tests and the fuzz target that compare the two.
    #[doc(hidden)]
    pub fn parse_general(text: &str) -> Result<ClientMessage, ProtocolError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
        Self::from_value(v)
    }

    /// The one-pass read of a relay message; `None` when the general path has to decide.
    fn parse_relay(text: &str) -> Option<Result<ClientMessage, ProtocolError>> {
        let p: RelayProbe = serde_json::from_str(text).ok()?;
        let target = p.target?;
        let m = match &*p.kind {
            "offer" => ClientMessage::Offer {
                target,
                offer: Payload(p.offer?),
            },
            "answer" => ClientMessage::Answer {
                target,
                answer: Payload(p.answer?),
            },
            "ice_candidate" => ClientMessage::IceCandidate {
                target,
                candidate: Payload(p.candidate?),
            },
            _ => return None,
        };
        Some(m.validate(m.kind()).map(|()| m))
    }

    /// Validates an already-parsed JSON value (the gRPC transport's `json` escape hatch).
    pub fn from_value(v: Value) -> Result<ClientMessage, ProtocolError> {
        let kind = match v.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(ProtocolError::MissingType),
        };
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            let mut k = kind;
            let mut cut = k.len().min(64);
            while !k.is_char_boundary(cut) {
                cut -= 1;
            }
            k.truncate(cut);
            return Err(ProtocolError::UnknownType(k));
        }
        let m: ClientMessage =
            serde_json::from_value(v).map_err(|e| ProtocolError::BadMessage {
                kind: kind.clone(),
                detail: e.to_string(),
            })?;
        m.validate(&kind)?;
        Ok(m)
    }

    fn validate(&self, kind: &str) -> Result<(), ProtocolError> {
        match self {
            ClientMessage::Join {
                room_id,
                peer_id,
                mode,
                ..
            } => {
                check_id(kind, "room_id", room_id)?;
                if let Some(p) = peer_id {
                    check_id(kind, "peer_id", p)?;
                }
                if mode.as_deref().is_some_and(|m| m != "sfu" && m != "mesh") {
                    return Err(ProtocolError::BadMessage {
                        kind: kind.into(),
                        detail: "mode must be \"sfu\" or \"mesh\"".into(),
                    });
                }
            }
            ClientMessage::Subscribe { publisher, .. } => check_id(kind, "publisher", publisher)?,
            ClientMessage::Offer { target, .. }
            | ClientMessage::Answer { target, .. }
            | ClientMessage::IceCandidate { target, .. }
            | ClientMessage::Bye { target } => check_id(kind, "target", target)?,
            ClientMessage::RttReport { rtt_ms } => {
                if rtt_ms.len() > MAX_RTT_SAMPLES {
                    return Err(ProtocolError::BadMessage {
                        kind: kind.into(),
                        detail: format!("at most {MAX_RTT_SAMPLES} samples per report"),
                    });
                }
            }
            ClientMessage::Leave | ClientMessage::Ping { .. } => {}
        }
        Ok(())
    }

    /// The `type` label, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::IceCandidate { .. } => "ice_candidate",
            ClientMessage::Bye { .. } => "bye",
            ClientMessage::Leave => "leave",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::RttReport { .. } => "rtt_report",
            ClientMessage::Subscribe { .. } => "subscribe",
        }
    }
}

/// A live node of the cluster as `joined.nodes` names it: its id and public base URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRef {
    pub id: String,
    pub url: String,
}

/// A message the server sends. Serialized with `"type"` as the tag, in exactly the reference
/// server's shapes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    RoomPeers {
        peers: Vec<String>,
    },
    PeerJoined {
        peer_id: String,
    },
    PeerLeft {
        peer_id: String,
        /// Why, when it was not the peer's own doing: `"node_lost"` when the node that held
        /// its session died and it did not resume elsewhere within the grace.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    Offer {
        offer: Payload,
        from: String,
    },
    Answer {
        answer: Payload,
        from: String,
    },
    IceCandidate {
        candidate: Payload,
        from: String,
    },
    Bye {
        from: String,
    },
    Pong {
        ts: Value,
    },
    Error {
        code: String,
        message: String,
    },
    /// Sent to the joiner right after `room_peers` (and after a resume).
    Joined {
        peer_id: String,
        room_id: String,
        session_id: String,
        resume_token: String,
        /// `RTCIceServer[]`, ready for `new RTCPeerConnection({iceServers})`.
        ice_servers: Value,
        /// Seconds the TURN credentials in `ice_servers` stay valid.
        ice_ttl: u64,
        /// "mesh" or "sfu".
        mode: String,
        /// True when this session was resumed with a resume token.
        resumed: bool,
        /// Seconds a lost connection may take to resume.
        resume_grace: u64,
        /// Relay messages (offer/answer/ice_candidate/bye) the server has accepted from this
        /// session; after a resume the client re-sends the ones beyond this count.
        received: u64,
        /// Cluster mode: the live nodes, this one first; a client whose connection drops may
        /// resume on any of them.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<NodeRef>,
    },
    /// An `auto` room outgrew mesh: members connect to the SFU from now on.
    ModeChanged {
        mode: String,
    },
    /// A message relayed from another node of the cluster, sent to the client with
    /// `"relay_id"` (unique per sending node, the same when sent again after a failover).
    #[serde(skip)]
    Relayed {
        relay_id: String,
        msg: Box<ServerMessage>,
    },
    /// Any other server-originated message (e.g. `stream_progress` pushed via `notify`); must be
    /// a JSON object with a string `type`.
    #[serde(untagged)]
    Raw(Value),
}

/// The relay messages' fields, read from another node's frame without building a tree (their
/// payloads stay text, as on a single node).
#[derive(Deserialize)]
struct RelayedBody {
    #[serde(rename = "type")]
    kind: String,
    from: Option<String>,
    offer: Option<Box<RawValue>>,
    answer: Option<Box<RawValue>>,
    candidate: Option<Box<RawValue>>,
    relay_id: Option<String>,
}

impl ServerMessage {
    /// A message another node relayed (its JSON text, as that node would send it to a client):
    /// `offer`, `answer`, `ice_candidate` and `bye` become the typed messages (cheap: their
    /// payloads stay text; gRPC clients get them typed), anything else a [`ServerMessage::Raw`].
    /// A `relay_id` it carries (it had crossed nodes before, and a node hands it on with the
    /// session it was held for) stays with it. `None` when the text is not a JSON object with a
    /// string `type`.
    pub fn from_relayed_json(text: &str) -> Option<ServerMessage> {
        if let Ok(b) = serde_json::from_str::<RelayedBody>(text) {
            let typed = match (b.kind.as_str(), b.from) {
                ("offer", Some(from)) => b.offer.map(|p| ServerMessage::Offer {
                    offer: Payload(p),
                    from,
                }),
                ("answer", Some(from)) => b.answer.map(|p| ServerMessage::Answer {
                    answer: Payload(p),
                    from,
                }),
                ("ice_candidate", Some(from)) => b.candidate.map(|p| ServerMessage::IceCandidate {
                    candidate: Payload(p),
                    from,
                }),
                ("bye", Some(from)) => Some(ServerMessage::Bye { from }),
                _ => None,
            };
            if let Some(m) = typed {
                return Some(match b.relay_id {
                    Some(relay_id) => ServerMessage::Relayed {
                        relay_id,
                        msg: Box::new(m),
                    },
                    None => m,
                });
            }
        }
        let v: Value = serde_json::from_str(text).ok()?;
        v.get("type")?.as_str()?;
        Some(ServerMessage::Raw(v))
    }

    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Bytes this message holds in memory, close to its JSON size: what resume buffers and
    /// send queues count against their byte bounds. Cheap for the relayed messages (their
    /// payload is already text); server pushes (`Raw`) are measured by serializing them.
    pub fn approx_bytes(&self) -> usize {
        /// The enum, the `Arc` around it and the ring or queue slot that holds it.
        const OVERHEAD: usize = 96;
        OVERHEAD
            + match self {
                ServerMessage::RoomPeers { peers } => peers.iter().map(|p| p.len() + 24).sum(),
                ServerMessage::PeerJoined { peer_id } | ServerMessage::PeerLeft { peer_id, .. } => {
                    peer_id.len()
                }
                ServerMessage::Offer { offer: p, from }
                | ServerMessage::Answer { answer: p, from }
                | ServerMessage::IceCandidate { candidate: p, from } => p.json().len() + from.len(),
                ServerMessage::Bye { from } => from.len(),
                ServerMessage::Pong { ts } => json_len(ts),
                ServerMessage::Error { code, message } => code.len() + message.len(),
                ServerMessage::Joined {
                    peer_id,
                    room_id,
                    session_id,
                    resume_token,
                    ice_servers,
                    mode,
                    ..
                } => {
                    peer_id.len()
                        + room_id.len()
                        + session_id.len()
                        + resume_token.len()
                        + json_len(ice_servers)
                        + mode.len()
                }
                ServerMessage::ModeChanged { mode } => mode.len(),
                ServerMessage::Raw(v) => json_len(v),
                ServerMessage::Relayed { relay_id, msg } => relay_id.len() + msg.approx_bytes(),
            }
    }

    /// JSON text, with `"seq":N` appended when the message belongs to a resumable session.
    pub fn to_json(&self, seq: Option<u64>) -> String {
        let mut s = match self {
            ServerMessage::Raw(v) => v.to_string(),
            ServerMessage::Relayed { relay_id, msg } => {
                let mut s = msg.to_json(None);
                if s.ends_with('}') && s.len() > 2 {
                    s.pop();
                    s.push_str(",\"relay_id\":");
                    s.push_str(&Value::String(relay_id.clone()).to_string());
                    s.push('}');
                }
                s
            }
            other => serde_json::to_string(other).unwrap_or_else(|_| {
                r#"{"type":"error","code":"internal","message":"unserializable"}"#.into()
            }),
        };
        if let Some(n) = seq {
            if s.ends_with('}') && s.len() > 2 {
                s.pop();
                s.push_str(&format!(",\"seq\":{n}}}"));
            }
        }
        s
    }
}

/// The length of `v` as JSON text (a `Value`'s in-memory size is of the same order).
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::check_message;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn approx_bytes_follows_the_payload() {
        let sdp = "v=0 ".repeat(16 * 1024);
        let offer = ServerMessage::Offer {
            offer: Payload::from(json!({"type": "offer", "sdp": sdp})),
            from: "alice".into(),
        };
        let n = offer.approx_bytes();
        assert!((64 * 1024..64 * 1024 + 256).contains(&n), "{n}");
        let small = ServerMessage::PeerJoined {
            peer_id: "bob".into(),
        };
        assert!(small.approx_bytes() < 128);
        let raw = ServerMessage::Raw(json!({"type": "stream_progress", "blob": "x".repeat(5000)}));
        assert!(raw.approx_bytes() > 5000);
    }

    #[test]
    fn reference_shapes_parse() {
        let m = ClientMessage::parse(r#"{"type":"join","peer_id":"a","room_id":"r"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Join {
                room_id: "r".into(),
                peer_id: Some("a".into()),
                mode: None,
                sfu_capable: false,
            }
        );
        let m = ClientMessage::parse(
            r#"{"type":"ice_candidate","target":"b","candidate":{"candidate":"c","sdpMid":"0"}}"#,
        )
        .unwrap();
        assert_eq!(m.kind(), "ice_candidate");
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        ));
    }

    #[test]
    fn bad_inputs_have_codes() {
        let code = |t: &str| ClientMessage::parse(t).unwrap_err().code();
        assert_eq!(code("{nope"), "malformed_json");
        assert_eq!(code("[1,2]"), "missing_type");
        assert_eq!(code(r#"{"type":7}"#), "missing_type");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"offer","target":"x"}"#), "bad_message");
        assert_eq!(code(r#"{"type":"join","room_id":""}"#), "bad_message");
        assert_eq!(
            code(r#"{"type":"join","room_id":"r","mode":"p2p"}"#),
            "bad_message"
        );
        assert_eq!(
            code(r#"{"type":"subscribe","publisher":""}"#),
            "bad_message"
        );
        assert_eq!(
            code(r#"{"type":"subscribe","publisher":"a","max_layer":300}"#),
            "bad_message"
        );
        let long = "x".repeat(300);
        assert_eq!(
            code(&format!(r#"{{"type":"bye","target":"{long}"}}"#)),
            "bad_message"
        );
    }

    #[test]
    fn server_shapes_match_the_seed() {
        let m = ServerMessage::Offer {
            offer: json!({"type":"offer","sdp":"v=0"}).into(),
            from: "a".into(),
        };
        let v: Value = serde_json::from_str(&m.to_json(None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0"},"from":"a"})
        );
        let v: Value = serde_json::from_str(
            &ServerMessage::PeerLeft {
                peer_id: "p".into(),
                reason: None,
            }
            .to_json(Some(7)),
        )
        .unwrap();
        assert_eq!(v, json!({"type":"peer_left","peer_id":"p","seq":7}));
        let raw = ServerMessage::Raw(json!({"type":"stream_progress","n":1}));
        let v: Value = serde_json::from_str(&raw.to_json(Some(2))).unwrap();
        assert_eq!(v, json!({"type":"stream_progress","n":1,"seq":2}));
    }

    #[test]
    fn the_one_pass_relay_read_agrees_with_the_general_path() {
        for text in [
            r#"{"type":"offer","target":"b","offer":{"type":"offer","sdp":"v=0\r\n"}}"#,
            r#" { "offer" : { "sdp" : "x" } , "target" : "b" , "type" : "offer" } "#,
            r#"{"type":"answer","target":"b","answer":{"type":"answer","sdp":"\u00e9"}}"#,
            r#"{"type":"ice_candidate","target":"b","candidate":"candidate:1 1 udp 1 h 9 typ host"}"#,
            r#"{"type":"ice_candidate","target":"b","candidate":{"candidate":"c","sdpMid":"0"},"x":[1]}"#,
            r#"{"type":"offer","target":"b","offer":null}"#,
            r#"{"type":"offer","target":"b"}"#,
            r#"{"type":"offer","offer":{}}"#,
            r#"{"type":"offer","target":7,"offer":{}}"#,
            r#"{"type":"offer","target":"","offer":{}}"#,
            r#"{"type":"offer","target":"a","target":"b","offer":{}}"#,
            r#"{"type":"offer","type":"answer","target":"b","answer":{}}"#,
            r#"{"type":"answer","target":"b","offer":{}}"#,
            r#"{"type":"offer","target":"b","offer":{}} trailing"#,
            r#"{"type":"offer","target":"b","offer":{"sdp":"unterminated}"#,
            r#"{"type":"of\u0066er","target":"b","offer":{"sdp":"x"}}"#,
            r#"{"type":"bye","target":"b"}"#,
            r#"{"type":"join","room_id":"r"}"#,
            r#"{"type":"offer","target":"b","offer":{"x":15e202}}"#,
            r#"{"type":"offer","target":"b","offer":{"x":1e400}}"#,
        ] {
            check_message(text);
        }
        let long = "x".repeat(300);
        let text = format!(r#"{{"type":"offer","target":"{long}","offer":{{}}}}"#);
        assert_eq!(
            ClientMessage::parse(&text).unwrap_err().code(),
            "bad_message"
        );
    }

    #[test]
    fn a_long_unknown_type_is_cut_on_a_char_boundary() {
        // 63 ASCII bytes, then a 3-byte character across byte 64 (found by the fuzzer: the
        // cut at byte 64 panicked).
        let kind = format!("{}\u{ffff}tail", "x".repeat(63));
        let text = serde_json::json!({ "type": kind }).to_string();
        match ClientMessage::parse(&text) {
            Err(ProtocolError::UnknownType(k)) => assert_eq!(k, "x".repeat(63)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_relayed_payload_leaves_as_it_came() {
        let text = r#"{"type":"offer","target":"b","offer":{"type":"offer","sdp":"v=0\r\na=x"}}"#;
        let ClientMessage::Offer { offer, .. } = ClientMessage::parse(text).unwrap() else {
            panic!("not an offer");
        };
        assert_eq!(offer.json(), r#"{"type":"offer","sdp":"v=0\r\na=x"}"#);
        let out = ServerMessage::Offer {
            offer,
            from: "a".into(),
        }
        .to_json(Some(3));
        assert_eq!(
            out,
            r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\na=x"},"from":"a","seq":3}"#
        );
    }

    proptest! {
        #[test]
        fn relay_reads_agree(kind in "(offer|answer|ice_candidate)", field in "(offer|answer|candidate|sdp)",
                             target in "(\"[a-z]{0,4}\"|null|1)", v in "(\"[a-z]{0,8}\"|[0-9]{1,5}|null|\\[\\]|\\{\\}|\\{\"sdp\":\"v\"\\})") {
            let text = format!(r#"{{"type":"{kind}","target":{target},"{field}":{v}}}"#);
            check_message(&text);
        }

        #[test]
        fn parse_never_panics(s in ".{0,512}") {
            let _ = ClientMessage::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_jsonish(t in "(join|offer|answer|ice_candidate|bye|leave|ping|rtt_report|x)",
                                         f in "[a-z_]{1,12}", v in "(\"[a-z]{0,8}\"|[0-9]{1,5}|null|\\[\\]|\\{\\})") {
            let s = format!(r#"{{"type":"{t}","{f}":{v},"target":{v},"room_id":{v}}}"#);
            let _ = ClientMessage::parse(&s);
        }
    }

    #[test]
    fn replay_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/signal_message");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("corpus missing at {}", dir.display());
        };
        let mut n = 0;
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            if let Ok(s) = std::str::from_utf8(&bytes) {
                check_message(s);
            }
            n += 1;
        }
        assert!(n > 0, "empty corpus");
    }

    #[test]
    fn messages_relayed_by_another_node_are_read_typed_and_sent_with_their_relay_id() {
        let offer = ServerMessage::Offer {
            offer: json!({"type": "offer", "sdp": "v=0\r\n"}).into(),
            from: "alice".into(),
        };
        let cases = [
            offer.clone(),
            ServerMessage::Answer {
                answer: json!({"type": "answer", "sdp": "v=0"}).into(),
                from: "bob".into(),
            },
            ServerMessage::IceCandidate {
                candidate: json!({"candidate": "c", "sdpMid": "0"}).into(),
                from: "bob".into(),
            },
            ServerMessage::Bye { from: "bob".into() },
        ];
        for m in cases {
            assert_eq!(ServerMessage::from_relayed_json(&m.to_json(None)), Some(m));
        }
        // Anything else stays a tree; what is not a typed object is refused.
        let push = json!({"type": "stream_progress", "n": 1});
        assert_eq!(
            ServerMessage::from_relayed_json(&push.to_string()),
            Some(ServerMessage::Raw(push))
        );
        assert_eq!(
            ServerMessage::from_relayed_json(r#"{"type":"offer","from":"x"}"#),
            Some(ServerMessage::Raw(json!({"type": "offer", "from": "x"})))
        );
        for bad in ["[1]", "{}", r#"{"type":7}"#, "nope", ""] {
            assert_eq!(ServerMessage::from_relayed_json(bad), None, "{bad}");
        }

        let relayed = ServerMessage::Relayed {
            relay_id: "n1~k2.7".into(),
            msg: Box::new(offer),
        };
        let v: Value = serde_json::from_str(&relayed.to_json(Some(9))).unwrap();
        assert_eq!(
            v,
            json!({"type": "offer", "from": "alice", "offer": {"type": "offer", "sdp": "v=0\r\n"},
                   "relay_id": "n1~k2.7", "seq": 9})
        );
        assert!(relayed.approx_bytes() > "n1~k2.7".len() + "alice".len());
        // Handed on again (a node passing a held message to where its session moved): the
        // message keeps its id.
        assert_eq!(
            ServerMessage::from_relayed_json(&relayed.to_json(None)),
            Some(relayed)
        );
    }
}
