//! The wire dialect: the seed's JSON messages (`seeds/001`), plus Switchboard's additions
//! (`joined`, `rtt_report`, `seq` on delivered messages). Parsing never panics; every failure
//! is a [`ProtocolError`] with a stable code that goes back to the client as `{"type":"error"}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest identity, room id or peer id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most RTT samples accepted in one `rtt_report`.
pub const MAX_RTT_SAMPLES: usize = 256;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        /// The client can take part in an SFU room (the SDK sends `true`; the seed's client
        /// does not, which keeps `auto` rooms with such members in mesh mode).
        #[serde(default)]
        sfu_capable: bool,
    },
    Offer {
        target: String,
        offer: Value,
    },
    Answer {
        target: String,
        answer: Value,
    },
    IceCandidate {
        target: String,
        candidate: Value,
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
    pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
        Self::from_value(v)
    }

    /// Validates an already-parsed JSON value (the gRPC transport's `json` escape hatch).
    pub fn from_value(v: Value) -> Result<ClientMessage, ProtocolError> {
        let kind = match v.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(ProtocolError::MissingType),
        };
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            let mut k = kind;
            k.truncate(64);
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

/// A message the server sends. Serialized with `"type"` as the tag, exactly the seed's shapes.
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
    },
    Offer {
        offer: Value,
        from: String,
    },
    Answer {
        answer: Value,
        from: String,
    },
    IceCandidate {
        candidate: Value,
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
    },
    /// An `auto` room outgrew mesh: members connect to the SFU from now on.
    ModeChanged {
        mode: String,
    },
    /// Any other server-originated message (e.g. `stream_progress` pushed via `notify`); must be
    /// a JSON object with a string `type`.
    #[serde(untagged)]
    Raw(Value),
}

impl ServerMessage {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// JSON text, with `"seq":N` appended when the message belongs to a resumable session.
    pub fn to_json(&self, seq: Option<u64>) -> String {
        let mut s = match self {
            ServerMessage::Raw(v) => v.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn seed_shapes_parse() {
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
            offer: json!({"type":"offer","sdp":"v=0"}),
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
            }
            .to_json(Some(7)),
        )
        .unwrap();
        assert_eq!(v, json!({"type":"peer_left","peer_id":"p","seq":7}));
        let raw = ServerMessage::Raw(json!({"type":"stream_progress","n":1}));
        let v: Value = serde_json::from_str(&raw.to_json(Some(2))).unwrap();
        assert_eq!(v, json!({"type":"stream_progress","n":1,"seq":2}));
    }

    proptest! {
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
                let _ = ClientMessage::parse(s);
            }
            n += 1;
        }
        assert!(n > 0, "empty corpus");
    }
}
