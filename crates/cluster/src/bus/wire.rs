//! The frames nodes publish to each other's channel, and the ids of relayed messages.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use switchboard_signal::cluster::Inbound;
use switchboard_signal::hub::RoomMode;
use switchboard_signal::protocol::ServerMessage;

pub(super) fn start_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Time since a relayed message was published (its `ts`, the sender's clock), from the start of
/// the frame alone: `{"k":"m","ts":N,...`.
pub(super) fn lag_seconds(bytes: &[u8]) -> Option<f64> {
    let rest = bytes.strip_prefix(br#"{"k":"m","ts":"#)?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    let sent: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some(start_ms().saturating_sub(sent) as f64 / 1000.0)
}

/// A relayed message's frame (`k` = "m"), read without building a tree of the message.
#[derive(Deserialize)]
struct RelayFrame<'a> {
    r: String,
    t: String,
    id: Option<String>,
    #[serde(borrow)]
    m: &'a RawValue,
}

pub(super) fn parse(bytes: &[u8]) -> Option<Inbound> {
    if bytes.starts_with(br#"{"k":"m","#) {
        // The hot path: relays between nodes.
        let f: RelayFrame = serde_json::from_slice(bytes).ok()?;
        let msg = ServerMessage::from_relayed_json(f.m.get())?;
        // A message that already carries a `relay_id` keeps it: copies of one message must
        // keep one id whichever node sends them, or clients cannot drop the copies.
        let msg = match (f.id, msg) {
            (_, m @ ServerMessage::Relayed { .. }) => m,
            (_, ServerMessage::Raw(v)) if v.get("relay_id").is_some() => ServerMessage::Raw(v),
            (Some(relay_id), m) => ServerMessage::Relayed {
                relay_id,
                msg: Box::new(m),
            },
            (None, m) => m,
        };
        return Some(Inbound::Message {
            room: f.r,
            to: f.t,
            msg,
        });
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(match v.get("k")?.as_str()? {
        "n" => Inbound::Notify {
            to: s("t")?,
            msg: v.get("m")?.clone(),
        },
        "j" => Inbound::Joined {
            room: s("r")?,
            identity: s("i")?,
            node: s("n")?,
            resumed_after: v.get("after").and_then(Value::as_u64),
        },
        "s" => Inbound::ToSfu {
            room: s("r")?,
            peer: s("p")?,
            from: s("f")?,
            msg: serde_json::from_value(v.get("m")?.clone()).ok()?,
        },
        "x" => Inbound::SfuLeave {
            room: s("r")?,
            peer: s("p")?,
        },
        "o" => Inbound::ModeChanged {
            room: s("r")?,
            mode: match v.get("mode")?.as_str()? {
                "sfu" => RoomMode::Sfu,
                _ => RoomMode::Mesh,
            },
            home: s("h")?,
        },
        "l" => Inbound::Left {
            room: s("r")?,
            identity: s("i")?,
            node: s("n")?,
            reason: s("why"),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_to_the_sfu_is_read_and_malformed_frames_are_not() {
        let ev = parse(br#"{"k":"o","r":"room","mode":"sfu","h":"n2"}"#);
        assert!(
            matches!(&ev, Some(Inbound::ModeChanged { room, mode: RoomMode::Sfu, home })
                if room == "room" && home == "n2"),
            "{ev:?}"
        );
        for bad in [
            &br#"{"k":"o","r":"room","mode":"sfu"}"#[..],
            br#"{"k":"o","r":"room","h":"n2"}"#,
            br#"{"k":"o","r":7,"mode":"sfu","h":"n2"}"#,
            br#"{"k":"?"}"#,
            b"not json",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_relayed_frame_is_read_typed_with_its_relay_id() {
        let frame = br#"{"k":"m","ts":1,"r":"room","t":"bob","id":"n1~x.3","m":{"type":"answer","from":"alice","answer":{"type":"answer","sdp":"v=0"}}}"#;
        let Some(Inbound::Message { room, to, msg }) = parse(frame) else {
            panic!("not a message");
        };
        assert_eq!((room.as_str(), to.as_str()), ("room", "bob"));
        let ServerMessage::Relayed { relay_id, msg } = msg else {
            panic!("no relay id: {msg:?}");
        };
        assert_eq!(relay_id, "n1~x.3");
        assert!(matches!(*msg, ServerMessage::Answer { ref from, .. } if from == "alice"));
        // Without an id, as sent; a broken frame is dropped.
        let plain = br#"{"k":"m","ts":1,"r":"room","t":"bob","m":{"type":"bye","from":"alice"}}"#;
        assert!(matches!(
            parse(plain),
            Some(Inbound::Message {
                msg: ServerMessage::Bye { .. },
                ..
            })
        ));
        // A message that crossed nodes before keeps its first id, with or without a new one.
        for frame in [
            &br#"{"k":"m","ts":1,"r":"room","t":"bob","m":{"type":"bye","from":"alice","relay_id":"n1~x.3"}}"#[..],
            br#"{"k":"m","ts":1,"r":"room","t":"bob","id":"n2~y.9","m":{"type":"bye","from":"alice","relay_id":"n1~x.3"}}"#,
            br#"{"k":"m","ts":1,"r":"room","t":"bob","id":"n2~y.9","m":{"type":"stream_progress","relay_id":"n1~x.3"}}"#,
        ] {
            let Some(Inbound::Message { msg, .. }) = parse(frame) else {
                panic!("not a message");
            };
            let v: Value = serde_json::from_str(&msg.to_json(None)).unwrap();
            assert_eq!(v["relay_id"], "n1~x.3", "{v}");
        }
        assert!(parse(br#"{"k":"m","ts":1,"r":"room","m":{"type":"bye","from":"a"}}"#).is_none());
        assert!(parse(br#"{"k":"m","ts":1,"r":"room","t":"b","m":[1]}"#).is_none());
    }
}
