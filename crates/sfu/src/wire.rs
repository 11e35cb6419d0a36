//! Parsers for bytes that arrive from the network before str0m sees them: the STUN USERNAME
//! that routes a UDP datagram to its session, and the JSON envelope of relayed DataChannel
//! messages. Both are hostile input: bounded, never panic, property-tested and fuzzed.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// What kind of datagram this is (RFC 7983 demultiplexing on the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (ICE connectivity checks).
    Stun,
    /// DTLS records.
    Dtls,
    /// SRTP/SRTCP.
    Rtp,
    /// Anything else: dropped.
    Unknown,
}

/// Classifies a datagram by its first byte.
pub fn classify(buf: &[u8]) -> DatagramKind {
    match buf.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Unknown,
    }
}

/// The receiver's (our) ufrag from a STUN message's USERNAME (`ours:theirs`), if `buf` is a
/// well-formed STUN message that carries one.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < 20 || buf[0] & 0xC0 != 0 || buf[4..8] != STUN_MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len % 4 != 0 || 20 + len > buf.len() {
        return None;
    }
    let mut attrs = &buf[20..20 + len];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let padded = alen.checked_add(3)? & !3;
        let value = attrs.get(4..4 + alen)?;
        if typ == ATTR_USERNAME {
            let s = std::str::from_utf8(value).ok()?;
            let (ours, _theirs) = s.split_once(':')?;
            return (!ours.is_empty()).then_some(ours);
        }
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

/// Recipient id meaning "the server itself" in a client envelope.
pub const SERVER_ID: &str = "$server";

/// A message a participant sent on a DataChannel, after parsing.
#[derive(Debug, PartialEq, Eq)]
pub struct Inbound<'a> {
    /// Target identity; `None` broadcasts to the room.
    pub to: Option<&'a str>,
    /// The opaque JSON payload, exactly as sent.
    pub data: &'a str,
}

#[derive(Deserialize)]
struct InboundWire<'a> {
    #[serde(borrow, default)]
    to: Option<&'a str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Why an inbound DataChannel message was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Larger than the configured limit.
    TooLarge,
    /// Binary message (only UTF-8 JSON envelopes are relayed).
    Binary,
    /// Not `{"to"?: string, "data": <json>}`.
    Malformed,
}

impl EnvelopeError {
    /// Label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            EnvelopeError::TooLarge => "too_large",
            EnvelopeError::Binary => "binary",
            EnvelopeError::Malformed => "malformed",
        }
    }
}

/// Parses a client envelope `{"to": "<identity>", "data": <any JSON>}` (`to` optional).
pub fn parse_envelope(buf: &[u8], binary: bool, max: usize) -> Result<Inbound<'_>, EnvelopeError> {
    if buf.len() > max {
        return Err(EnvelopeError::TooLarge);
    }
    if binary {
        return Err(EnvelopeError::Binary);
    }
    let text = std::str::from_utf8(buf).map_err(|_| EnvelopeError::Malformed)?;
    let w: InboundWire<'_> = serde_json::from_str(text).map_err(|_| EnvelopeError::Malformed)?;
    Ok(Inbound {
        to: w.to,
        data: w.data.get(),
    })
}

#[derive(Serialize)]
struct OutboundWire<'a> {
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    data: &'a RawValue,
}

/// Encodes what a participant receives: `{"from": "<identity>", "topic"?: "...", "data": <json>}`.
/// `data` must be valid JSON text (it always is: it came from [`parse_envelope`] or from
/// `serde_json`).
pub fn encode_envelope(from: &str, topic: Option<&str>, data: &str) -> Option<Vec<u8>> {
    let raw: &RawValue = serde_json::from_str(data).ok()?;
    serde_json::to_vec(&OutboundWire {
        from,
        topic,
        data: raw,
    })
    .ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A STUN binding request carrying the USERNAME attribute `user` (the demux tests route
    /// these too).
    pub(crate) fn stun_with_username(user: &[u8]) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn username_routes() {
        let m = stun_with_username(b"srv1:cli2");
        assert_eq!(stun_local_ufrag(&m), Some("srv1"));
        assert_eq!(classify(&m), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&stun_with_username(b"nocolon")), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(b":x")), None);
        let mut bad = m.clone();
        bad[4] = 0;
        assert_eq!(stun_local_ufrag(&bad), None);
        assert_eq!(stun_local_ufrag(&m[..m.len() - 4]), None);
        assert_eq!(classify(&[0x80, 0]), DatagramKind::Rtp);
        assert_eq!(classify(&[22]), DatagramKind::Dtls);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
    }

    #[test]
    fn envelope_roundtrip() {
        let m = parse_envelope(br#"{"to":"bob","data":{"x":[1,2]}}"#, false, 100).unwrap();
        assert_eq!(m.to, Some("bob"));
        assert_eq!(m.data, r#"{"x":[1,2]}"#);
        let b = parse_envelope(br#"{"data":"hi"}"#, false, 100).unwrap();
        assert_eq!(b.to, None);
        let out = encode_envelope("alice", None, b.data).unwrap();
        assert_eq!(out, br#"{"from":"alice","data":"hi"}"#);
        let out = encode_envelope("$server", Some("progress"), "3").unwrap();
        assert_eq!(out, br#"{"from":"$server","topic":"progress","data":3}"#);
        assert_eq!(
            parse_envelope(b"{}", false, 100),
            Err(EnvelopeError::Malformed)
        );
        assert_eq!(parse_envelope(b"{}", true, 100), Err(EnvelopeError::Binary));
        assert_eq!(
            parse_envelope(&[b' '; 101], false, 100),
            Err(EnvelopeError::TooLarge)
        );
        assert_eq!(
            parse_envelope(&[0xff, 0xfe], false, 100),
            Err(EnvelopeError::Malformed)
        );
    }

    #[test]
    fn replay_corpus() {
        for target in ["stun_username", "data_envelope"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fuzz/corpus")
                .join(target);
            let entries = std::fs::read_dir(&dir).expect("corpus dir exists");
            let mut n = 0;
            for e in entries {
                let bytes = std::fs::read(e.expect("entry").path()).expect("read corpus file");
                let _ = stun_local_ufrag(&bytes);
                let _ = classify(&bytes);
                if let Ok(m) = parse_envelope(&bytes, false, 65536) {
                    assert!(encode_envelope("x", None, m.data).is_some());
                }
                n += 1;
            }
            assert!(n > 0, "corpus {target} is empty");
        }
    }

    proptest! {
        #[test]
        fn stun_parser_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = stun_local_ufrag(&buf);
        }

        #[test]
        fn stun_username_found(ours in "[a-zA-Z0-9+/]{1,32}", theirs in "[a-zA-Z0-9+/]{0,32}") {
            let m = stun_with_username(format!("{ours}:{theirs}").as_bytes());
            prop_assert_eq!(stun_local_ufrag(&m), Some(ours.as_str()));
            // Any truncation is rejected, never a panic.
            for cut in 0..m.len() {
                let _ = stun_local_ufrag(&m[..cut]);
            }
        }

        #[test]
        fn envelope_parser_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = parse_envelope(&buf, false, 1000) {
                prop_assert!(encode_envelope("p", None, m.data).is_some());
            }
        }

        #[test]
        fn envelope_data_survives(s in ".{0,40}", to in proptest::option::of("[a-z]{1,8}")) {
            let data = serde_json::to_string(&s).unwrap();
            let msg = match &to {
                Some(t) => format!(r#"{{"to":"{t}","data":{data}}}"#),
                None => format!(r#"{{"data":{data}}}"#),
            };
            let m = parse_envelope(msg.as_bytes(), false, 10_000).unwrap();
            prop_assert_eq!(m.to, to.as_deref());
            let out = encode_envelope("a", None, m.data).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(v["data"].as_str(), Some(s.as_str()));
        }
    }
}
