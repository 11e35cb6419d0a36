//! The hub scripted: whole conversations, with time passed in.

use super::*;
use serde_json::json;
use std::time::Duration;

fn hub() -> Hub {
    Hub::new(HubConfig {
        max_room_peers: 3,
        resume_buffer: 4,
        ..Default::default()
    })
}

/// (conn, json) of every delivery, for assertions.
pub(super) fn sent(effects: &[Effect]) -> Vec<(ConnId, Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { conn, msg, seq } => {
                Some((*conn, serde_json::from_str(&msg.to_json(*seq)).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn join(h: &mut Hub, conn: ConnId, id: &str, room: &str) -> Vec<(ConnId, Value)> {
    h.join(conn, id, room, None, None, JoinInfo::default())
        .unwrap();
    sent(&h.drain())
}

fn offer(to: &str, n: u64) -> ClientMessage {
    ClientMessage::Offer {
        target: to.into(),
        offer: json!({"type":"offer","sdp":n.to_string()}).into(),
    }
}

#[test]
fn join_relay_leave() {
    let mut h = hub();
    let out = join(&mut h, 1, "a", "r");
    assert_eq!(out[0], (1, json!({"type":"room_peers","peers":[]})));
    assert_eq!(out[1].1["type"], "joined");
    assert_eq!(out[1].1["peer_id"], "a");
    let out = join(&mut h, 2, "b", "r");
    assert_eq!(out[0], (2, json!({"type":"room_peers","peers":["a"]})));
    assert_eq!(
        out[2],
        (1, json!({"type":"peer_joined","peer_id":"b","seq":1}))
    );
    h.message(2, offer("a", 1));
    let out = sent(&h.drain());
    assert_eq!(
        out,
        vec![(
            1,
            json!({"type":"offer","offer":{"type":"offer","sdp":"1"},"from":"b","seq":2})
        )]
    );
    h.message(1, ClientMessage::Leave);
    let out = sent(&h.drain());
    assert_eq!(
        out,
        vec![(2, json!({"type":"peer_left","peer_id":"a","seq":1}))]
    );
    h.disconnect(2, Disconnect::Clean, Instant::now());
    assert_eq!(h.stats().rooms, 0, "empty rooms are dropped");
}

#[test]
fn refusals() {
    let mut h = hub();
    let i = JoinInfo::default();
    assert_eq!(
        h.join(1, "a", "r", Some("b"), None, i.clone()),
        Err(JoinError::ForbiddenPeerId)
    );
    assert_eq!(
        h.join(1, "a", "r", None, Some("other"), i.clone()),
        Err(JoinError::ForbiddenRoom)
    );
    join(&mut h, 1, "a", "r");
    assert_eq!(
        h.join(1, "a2", "r", None, None, i.clone()),
        Err(JoinError::AlreadyJoined)
    );
    join(&mut h, 2, "b", "r");
    join(&mut h, 3, "c", "r");
    assert_eq!(
        h.join(4, "d", "r", None, None, i.clone()),
        Err(JoinError::RoomFull)
    );
    h.message(1, offer("zz", 1));
    assert_eq!(sent(&h.drain())[0].1["code"], "unknown_target");
    h.message(1, offer("a", 1));
    assert_eq!(sent(&h.drain())[0].1["code"], "unknown_target", "self");
    h.message(9, offer("a", 1));
    assert_eq!(sent(&h.drain())[0].1["code"], "not_joined");
    join(&mut h, 5, "x", "elsewhere");
    h.message(5, offer("a", 1));
    assert_eq!(
        sent(&h.drain())[0].1["code"],
        "unknown_target",
        "other rooms are invisible"
    );
}

#[test]
fn sfu_rooms_without_sfu_are_refused() {
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Sfu,
        ..Default::default()
    });
    assert_eq!(
        h.join(1, "a", "r", None, None, JoinInfo::default()),
        Err(JoinError::SfuUnavailable)
    );
}

#[test]
fn auto_rooms_move_to_the_sfu_past_mesh_max_peers() {
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Auto { mesh_max_peers: 2 },
        sfu_available: true,
        ..Default::default()
    });
    let cap = |h: &mut Hub, conn, id| {
        let info = JoinInfo {
            sfu_capable: true,
            ..JoinInfo::default()
        };
        h.join(conn, id, "r", None, None, info).unwrap();
        sent(&h.drain())
    };
    assert_eq!(cap(&mut h, 1, "a")[1].1["mode"], "mesh");
    assert_eq!(cap(&mut h, 2, "b")[1].1["mode"], "mesh");
    h.message(
        1,
        ClientMessage::Subscribe {
            publisher: "b".into(),
            video: Some(false),
            max_layer: None,
        },
    );
    assert_eq!(sent(&h.drain())[0].1["code"], "sfu_not_sfu_room");
    let out = cap(&mut h, 3, "c");
    // The members hear mode_changed before peer_joined; the joiner is told in `joined`.
    let to_a: Vec<_> = out.iter().filter(|(c, _)| *c == 1).collect();
    assert_eq!(to_a[0].1["type"], "mode_changed");
    assert_eq!(to_a[0].1["mode"], "sfu");
    assert_eq!(to_a[1].1["type"], "peer_joined");
    let joined = out.iter().find(|(c, m)| *c == 3 && m["type"] == "joined");
    assert_eq!(joined.unwrap().1["mode"], "sfu");
    // From now on everything goes to the SFU, subscribe included.
    h.message(1, offer("$sfu", 1));
    h.message(
        2,
        ClientMessage::Subscribe {
            publisher: "a".into(),
            video: Some(false),
            max_layer: Some(0),
        },
    );
    let eff = h.drain();
    assert_eq!(
        eff.iter()
            .filter(|e| matches!(e, Effect::ToSfu { .. }))
            .count(),
        2
    );
    // A room never goes back to mesh while it has members.
    h.message(3, ClientMessage::Leave);
    h.message(2, ClientMessage::Leave);
    let eff = h.drain();
    assert!(eff.contains(&Effect::SfuLeave {
        room: "r".into(),
        peer: "c".into(),
        home: None,
    }));
    assert_eq!(join(&mut h, 4, "d", "r")[1].1["mode"], "sfu");
}

#[test]
fn auto_rooms_stay_mesh_while_a_member_cannot_use_the_sfu() {
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Auto { mesh_max_peers: 1 },
        sfu_available: true,
        ..Default::default()
    });
    let sdk = JoinInfo {
        sfu_capable: true,
        ..JoinInfo::default()
    };
    // The reference WebRTCClient does not announce `sfu_capable`: the room must stay mesh.
    h.join(1, "reference", "r", None, None, JoinInfo::default())
        .unwrap();
    h.drain();
    h.join(2, "sdk", "r", None, None, sdk.clone()).unwrap();
    let out = sent(&h.drain());
    assert!(out.iter().all(|(_, m)| m["type"] != "mode_changed"));
    assert_eq!(
        out.iter()
            .find(|(c, m)| *c == 2 && m["type"] == "joined")
            .unwrap()
            .1["mode"],
        "mesh"
    );
    // Once every member can, the next join switches.
    h.message(1, ClientMessage::Leave);
    h.drain();
    h.join(3, "sdk2", "r", None, None, sdk).unwrap();
    let out = sent(&h.drain());
    assert!(out
        .iter()
        .any(|(c, m)| *c == 2 && m["type"] == "mode_changed"));
}

#[test]
fn a_creator_may_ask_for_sfu_under_auto_only() {
    let sfu = JoinInfo {
        requested_mode: Some(RoomMode::Sfu),
        ..JoinInfo::default()
    };
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Auto { mesh_max_peers: 4 },
        sfu_available: true,
        ..Default::default()
    });
    h.join(1, "a", "r", None, None, sfu.clone()).unwrap();
    assert_eq!(sent(&h.drain())[1].1["mode"], "sfu");
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Mesh,
        sfu_available: true,
        ..Default::default()
    });
    h.join(1, "a", "r", None, None, sfu.clone()).unwrap();
    assert_eq!(sent(&h.drain())[1].1["mode"], "mesh");
    let mut h = Hub::new(HubConfig {
        mode: ModePolicy::Auto { mesh_max_peers: 4 },
        ..Default::default()
    });
    assert_eq!(
        h.join(1, "a", "r", None, None, sfu),
        Err(JoinError::SfuUnavailable)
    );
}

#[test]
fn same_identity_replaces() {
    let mut h = hub();
    join(&mut h, 1, "a", "r");
    join(&mut h, 2, "b", "r");
    h.join(3, "a", "r", None, None, JoinInfo::default())
        .unwrap();
    let eff = h.drain();
    assert!(eff.contains(&Effect::Close {
        conn: 1,
        code: close::REPLACED,
        reason: "replaced by a newer connection"
    }));
    let out = sent(&eff);
    assert_eq!(out[0].1["code"], "replaced");
    assert_eq!(
        out[1],
        (2, json!({"type":"peer_left","peer_id":"a","seq":1}))
    );
    assert_eq!(out[2].1["type"], "room_peers");
    assert_eq!(out[3].1["type"], "joined");
    assert_eq!(
        out[4],
        (2, json!({"type":"peer_joined","peer_id":"a","seq":2}))
    );
    assert_eq!(h.members("r"), vec!["b", "a"]);
}

fn token_of(out: &[(ConnId, Value)]) -> String {
    out.iter().find(|(_, v)| v["type"] == "joined").unwrap().1["resume_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Peers `a` (connection 1) and `b` (connection 2) in room `r`; returns a's resume token.
fn a_and_b_joined(h: &mut Hub) -> String {
    let tok = token_of(&join(h, 1, "a", "r"));
    join(h, 2, "b", "r");
    tok
}

#[test]
fn resume_replays_in_order_without_loss_or_duplicates() {
    let mut h = hub();
    let t0 = Instant::now();
    let tok = a_and_b_joined(&mut h);
    h.message(2, offer("a", 1)); // seq 2, seen by the client
    h.drain();
    h.message(2, offer("a", 2)); // seq 3, lost in flight
    h.drain();
    h.disconnect(1, Disconnect::Lost, t0);
    h.message(2, offer("a", 3)); // seq 4, buffered while detached
    assert!(sent(&h.drain()).is_empty());
    h.tick(t0 + Duration::from_secs(5));
    assert!(h.drain().is_empty(), "no peer_left within the grace period");
    let id = h.resume(7, &tok, 2, JoinInfo::default()).unwrap();
    assert_eq!(id, "a");
    let out = sent(&h.drain());
    assert_eq!(out[0].1["type"], "joined");
    assert_eq!(out[0].1["resumed"], true);
    let sdps: Vec<_> = out[1..]
        .iter()
        .map(|(c, v)| (*c, v["seq"].as_u64().unwrap(), v["offer"]["sdp"].clone()))
        .collect();
    assert_eq!(sdps, vec![(7, 3, json!("2")), (7, 4, json!("3"))]);
    assert!(
        h.resume(8, &tok, 2, JoinInfo::default()).is_err(),
        "resume tokens rotate"
    );
    h.message(7, offer("b", 9));
    assert_eq!(sent(&h.drain())[0].0, 2, "resumed peer can send");
}

#[test]
fn lost_session_expires_with_peer_left() {
    let mut h = hub();
    let t0 = Instant::now();
    join(&mut h, 1, "a", "r");
    join(&mut h, 2, "b", "r");
    h.disconnect(1, Disconnect::Lost, t0);
    h.tick(t0 + Duration::from_secs(14));
    assert!(h.drain().is_empty());
    h.tick(t0 + Duration::from_secs(15));
    assert_eq!(
        sent(&h.drain()),
        vec![(2, json!({"type":"peer_left","peer_id":"a","seq":1}))]
    );
}

#[test]
fn ring_overflow_while_detached_ends_the_session() {
    let mut h = hub();
    let tok = a_and_b_joined(&mut h);
    h.disconnect(1, Disconnect::Lost, Instant::now());
    for n in 0..5 {
        h.message(2, offer("a", n));
    }
    let out = sent(&h.drain());
    assert!(out.contains(&(2, json!({"type":"peer_left","peer_id":"a","seq":1}))));
    assert_eq!(h.overflowed_while_detached, 1);
    assert_eq!(
        h.resume(3, &tok, 0, JoinInfo::default()),
        Err(JoinError::UnknownResumeToken)
    );
}

#[test]
fn resume_gap_is_refused() {
    let mut h = hub();
    let tok = a_and_b_joined(&mut h);
    for n in 0..6 {
        h.message(2, offer("a", n)); // attached: ring keeps the last 4
    }
    h.drain();
    h.disconnect(1, Disconnect::Lost, Instant::now());
    assert_eq!(
        h.resume(3, &tok, 1, JoinInfo::default()),
        Err(JoinError::ResumeGap)
    );
}

#[test]
fn notify_reaches_live_sessions_only() {
    let mut h = hub();
    join(&mut h, 1, "a", "r");
    assert_eq!(h.notify("a", json!({"type":"stream_progress","i":1})), 1);
    assert_eq!(h.notify("nobody", json!({"type":"x"})), 0);
    assert_eq!(h.notify("a", json!([1])), 0, "must be a typed object");
    let out = sent(&h.drain());
    assert_eq!(
        out,
        vec![(1, json!({"type":"stream_progress","i":1,"seq":1}))]
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8, u8, u8),
        Offer(u8, u8),
        Leave(u8),
        Lost(u8),
        Resume(u8),
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8, 0..4u8, 0..2u8).prop_map(|(c, i, r)| Op::Join(c, i, r)),
            (0..6u8, 0..4u8).prop_map(|(c, t)| Op::Offer(c, t)),
            (0..6u8).prop_map(Op::Leave),
            (0..6u8).prop_map(Op::Lost),
            (0..4u8).prop_map(Op::Resume),
            (0..20u8).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Any sequence of inputs: no panic, every connection sees strictly increasing
        /// seqs, and rooms never list a peer twice.
        #[test]
        fn hub_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut h = Hub::new(HubConfig { resume_buffer: 3, max_room_peers: 3, ..Default::default() });
            let t0 = Instant::now();
            let mut now = t0;
            let mut tokens: HashMap<u8, String> = HashMap::new();
            let mut last: HashMap<ConnId, u64> = HashMap::new();
            let mut next_conn = 100u64;
            for o in ops {
                match o {
                    Op::Join(c, i, r) => {
                        let _ = h.join(c as u64, &format!("id{i}"), &format!("r{r}"), None, None, JoinInfo::default());
                    }
                    Op::Offer(c, t) => h.message(c as u64, ClientMessage::Offer { target: format!("id{t}"), offer: Value::Null.into() }),
                    Op::Leave(c) => h.message(c as u64, ClientMessage::Leave),
                    Op::Lost(c) => h.disconnect(c as u64, Disconnect::Lost, now),
                    Op::Resume(i) => {
                        if let Some(tok) = tokens.get(&i).cloned() {
                            next_conn += 1;
                            let _ = h.resume(next_conn, &tok, 0, JoinInfo::default());
                        }
                    }
                    Op::Tick(s) => {
                        now += Duration::from_secs(s as u64);
                        h.tick(now);
                    }
                }
                let _ = h.stats(); // asserts the O(1) detached count in tests
                for e in h.drain() {
                    if let Effect::Deliver { conn, msg, seq } = e {
                        if let ServerMessage::Joined { peer_id, resume_token, .. } = &*msg {
                            let i: u8 = peer_id[2..].parse().unwrap();
                            tokens.insert(i, resume_token.clone());
                            last.remove(&conn);
                        }
                        if let Some(q) = seq {
                            let prev = last.insert(conn, q).unwrap_or(0);
                            prop_assert!(q > prev, "seq went from {prev} to {q} on {conn}");
                        }
                    }
                }
                for r in ["r0", "r1"] {
                    let m = h.members(r);
                    let mut d = m.clone();
                    d.sort();
                    d.dedup();
                    prop_assert_eq!(d.len(), m.len());
                }
            }
        }
    }
}
