//! The cluster side of the hub, scripted: members on other nodes, forwards, node loss, moves.

use super::*;
use serde_json::json;
use std::time::Duration;

fn hub() -> Hub {
    Hub::new(HubConfig {
        clustered: true,
        resume_buffer: 3,
        resume_grace: Duration::from_secs(5),
        ..Default::default()
    })
}

fn view(members: &[(&str, &str)]) -> ClusterView {
    ClusterView {
        members: members
            .iter()
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .collect(),
        mode: Some(RoomMode::Mesh),
        home: None,
    }
}

/// Deliveries as JSON, forwards as `(node, to, json)`, and leaves, in order.
#[derive(Debug, Default, PartialEq)]
struct Out {
    delivered: Vec<(ConnId, Value)>,
    forwarded: Vec<(String, String, Value)>,
    left: Vec<String>,
}

fn out(h: &mut Hub) -> Out {
    out_of(h.drain())
}

fn out_of(effects: Vec<Effect>) -> Out {
    let mut o = Out::default();
    for e in effects {
        match e {
            Effect::Deliver { conn, msg, seq } => o
                .delivered
                .push((conn, serde_json::from_str(&msg.to_json(seq)).unwrap())),
            Effect::Forward { node, to, msg, .. } => {
                o.forwarded
                    .push((node, to, serde_json::from_str(&msg.to_json(None)).unwrap()))
            }
            Effect::ClusterLeave { identity, .. } => o.left.push(identity),
            _ => {}
        }
    }
    o
}

fn offer(to: &str, n: u64) -> ClientMessage {
    ClientMessage::Offer {
        target: to.into(),
        offer: json!({"sdp": n.to_string()}).into(),
    }
}

fn join(h: &mut Hub, conn: ConnId, id: &str, others: &[(&str, &str)]) -> Out {
    h.join_checked(conn, id, "r", JoinInfo::default(), Some(view(others)))
        .unwrap();
    out(h)
}

#[test]
fn members_on_other_nodes_are_peers_and_relays_to_them_are_forwarded_in_order() {
    let mut h = hub();
    let o = join(&mut h, 1, "a", &[("b", "n2")]);
    assert_eq!(o.delivered[0].1, json!({"type":"room_peers","peers":["b"]}));
    for n in 0..3 {
        h.message(1, offer("b", n));
    }
    let o = out(&mut h);
    let sdps: Vec<_> = o
        .forwarded
        .iter()
        .map(|(node, to, m)| (node.as_str(), to.as_str(), m["offer"]["sdp"].clone()))
        .collect();
    assert_eq!(
        sdps,
        [
            ("n2", "b", json!("0")),
            ("n2", "b", json!("1")),
            ("n2", "b", json!("2"))
        ]
    );
    assert_eq!(o.forwarded[0].2["from"], "a");
    // b answers from its node: delivered to a, numbered for resume.
    let answer = json!({"type":"answer","answer":{"sdp":"x"},"from":"b"});
    assert!(h.remote_message("r", "a", ServerMessage::Raw(answer)));
    assert!(!h.remote_message("r", "nobody", ServerMessage::Raw(json!({"type":"x"}))));
    assert_eq!(out(&mut h).delivered[0].1["seq"], 1);
    // b leaves on its node.
    h.remote_left("r", "b", "n1", None);
    assert!(
        out(&mut h).delivered.is_empty(),
        "a leave from a node b is not on is ignored"
    );
    h.remote_left("r", "b", "n2", None);
    assert_eq!(
        out(&mut h).delivered[0].1,
        json!({"type":"peer_left","peer_id":"b","seq":2})
    );
    h.message(1, ClientMessage::Leave);
    assert_eq!(out(&mut h).left, ["a"]);
    assert_eq!(h.stats().rooms, 0);
}

#[test]
fn a_member_joining_elsewhere_is_announced_once() {
    let mut h = hub();
    join(&mut h, 1, "a", &[]);
    h.remote_joined("r", "b", "n2", None);
    h.remote_joined("r", "b", "n2", None);
    let o = out(&mut h);
    assert_eq!(
        o.delivered,
        [(1, json!({"type":"peer_joined","peer_id":"b","seq":1}))]
    );
    // A room with no session here is not this node's business.
    h.remote_joined("other", "c", "n2", None);
    assert_eq!(h.stats().rooms, 1);
}

#[test]
fn announcements_during_admission_are_kept_for_the_joiner() {
    let mut h = hub();
    h.admitting("r");
    h.remote_joined("r", "b", "n2", None);
    let o = join(&mut h, 1, "a", &[]);
    h.admitted("r");
    assert_eq!(o.delivered[0].1, json!({"type":"room_peers","peers":["b"]}));
}

#[test]
fn a_room_first_heard_of_during_admission_takes_the_clusters_mode_and_home() {
    // The other node's first join is announced before this node's own admission returns;
    // the room the announcement created here must not keep a guessed mode.
    let mut h = hub();
    h.admitting("r");
    h.remote_joined("r", "b", "n2", None);
    let v = ClusterView {
        mode: Some(RoomMode::Sfu),
        home: Some("n2".into()),
        ..view(&[("b", "n2")])
    };
    h.join_checked(1, "a", "r", JoinInfo::default(), Some(v))
        .unwrap();
    h.admitted("r");
    let o = out(&mut h);
    let joined = o
        .delivered
        .iter()
        .find(|(_, m)| m["type"] == "joined")
        .unwrap();
    assert_eq!(joined.1["mode"], "sfu");
    assert_eq!(h.rooms["r"].home.as_deref(), Some("n2"));
}

#[test]
fn an_auto_room_the_cluster_moves_to_the_sfu_tells_its_members_here_first() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    // A join on this node that the cluster admitted as the one moving the room to n2's SFU:
    // a hears mode_changed, then c joining; c joins an SFU room served by n2.
    let v = ClusterView {
        mode: Some(RoomMode::Sfu),
        home: Some("n2".into()),
        ..view(&[("b", "n2")])
    };
    h.join_checked(2, "c", "r", JoinInfo::default(), Some(v))
        .unwrap();
    let o = out(&mut h);
    let to_a: Vec<&Value> = o
        .delivered
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(to_a[0]["type"], "mode_changed", "{to_a:?}");
    assert_eq!(to_a[0]["mode"], "sfu");
    assert_eq!(to_a[1]["type"], "peer_joined");
    let joined = o
        .delivered
        .iter()
        .find(|(c, m)| *c == 2 && m["type"] == "joined")
        .unwrap();
    assert_eq!(joined.1["mode"], "sfu");
    assert_eq!(h.rooms["r"].home.as_deref(), Some("n2"));

    // A move decided by a join on another node arrives as the room's new mode: told once.
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.room_mode("r", RoomMode::Sfu, None);
    h.room_mode("r", RoomMode::Sfu, None);
    h.room_mode("r", RoomMode::Mesh, None);
    let o = out(&mut h);
    let kinds: Vec<&Value> = o.delivered.iter().map(|(_, m)| &m["type"]).collect();
    assert_eq!(kinds, [&json!("mode_changed")]);
    assert_eq!(h.rooms["r"].mode, RoomMode::Sfu);
    assert_eq!(h.rooms["r"].home, None, "served by this node's SFU");
}

#[test]
fn messages_to_a_lost_node_are_held_and_follow_the_member_where_it_resumes() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.node_lost("n2", Instant::now());
    h.message(1, offer("b", 7));
    h.message(1, offer("b", 8));
    assert!(out(&mut h).forwarded.is_empty());
    // b resumes on n3: what was held goes there, in order; a sees no leave or join.
    h.remote_joined("r", "b", "n3", None);
    let o = out(&mut h);
    assert!(o.delivered.is_empty());
    let to: Vec<_> = o
        .forwarded
        .iter()
        .map(|(n, _, m)| (n.as_str(), m["offer"]["sdp"].clone()))
        .collect();
    assert_eq!(to, [("n3", json!("7")), ("n3", json!("8"))]);
    h.message(1, offer("b", 9));
    assert_eq!(out(&mut h).forwarded[0].0, "n3");
}

#[test]
fn messages_forwarded_just_before_a_node_died_go_again_with_their_ids() {
    let mut h = Hub::new(HubConfig {
        clustered: true,
        forward_retention: Duration::from_secs(8),
        ..Default::default()
    });
    let t0 = Instant::now();
    h.tick(t0);
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.message(1, offer("b", 1));
    h.tick(t0 + Duration::from_secs(5));
    h.message(1, offer("b", 2));
    h.tick(t0 + Duration::from_secs(10)); // offer 1 is older than the retention
    let first: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Forward { mid, .. } => mid,
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 2);
    // n2 dies unnoticed; offer 3 goes to it too, then the death is noticed: offer 4 is held.
    h.message(1, offer("b", 3));
    h.node_lost("n2", t0 + Duration::from_secs(11));
    h.message(1, offer("b", 4));
    out(&mut h);
    h.remote_joined("r", "b", "n3", Some(7));
    let again: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Forward { node, msg, mid, .. } => {
                let v: Value = serde_json::from_str(&msg.to_json(None)).unwrap();
                Some((node, v["offer"]["sdp"].clone(), mid))
            }
            _ => None,
        })
        .collect();
    let sdps: Vec<_> = again
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.clone()))
        .collect();
    assert_eq!(
        sdps,
        [("n3", json!("2")), ("n3", json!("3")), ("n3", json!("4"))]
    );
    assert_eq!(again[0].2, Some(first[1]), "sent again with the same id");

    // A node that was only late gets what was held, not the retained messages again.
    let mut h = Hub::new(HubConfig {
        clustered: true,
        forward_retention: Duration::from_secs(8),
        ..Default::default()
    });
    h.tick(t0);
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.message(1, offer("b", 1));
    h.node_lost("n2", t0);
    h.message(1, offer("b", 2));
    out(&mut h);
    h.node_back("n2");
    assert_eq!(out(&mut h).forwarded.len(), 1);
}

#[test]
fn a_resync_reconciles_the_members_on_other_nodes() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2"), ("c", "n3")]);
    // The cluster now says: c is gone, d joined meanwhile, b is where it was.
    h.sync_room("r", view(&[("b", "n2"), ("d", "n4")]));
    // Right after a resync nobody is dropped: the other nodes may not have registered again.
    assert_eq!(h.members("r"), ["b", "c", "a", "d"]);
    let members = view(&[("b", "n2"), ("d", "n4")]).members;
    h.drop_missing("r", &members);
    let o = out(&mut h);
    let seen: Vec<_> = o
        .delivered
        .iter()
        .map(|(_, v)| {
            (
                v["type"].as_str().unwrap().to_string(),
                v["peer_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("peer_joined".into(), json!("d")),
            ("peer_left".into(), json!("c"))
        ]
    );
    assert_eq!(h.members("r"), ["b", "a", "d"]);
    assert_eq!(h.local_sessions().len(), 1);
}

#[test]
fn an_sfu_room_found_moved_after_a_lost_lease_is_handed_over() {
    let mut h = Hub::new(HubConfig {
        clustered: true,
        sfu_available: true,
        mode: ModePolicy::Sfu,
        ..Default::default()
    });
    let sfu = |home: Option<&str>, members: &[(&str, &str)]| ClusterView {
        mode: Some(RoomMode::Sfu),
        home: home.map(Into::into),
        ..view(members)
    };
    h.join_checked(
        1,
        "a",
        "r",
        JoinInfo::default(),
        Some(sfu(None, &[("b", "n2")])),
    )
    .unwrap();
    h.drain();
    // While this node was cut off, the room moved to n3's SFU.
    h.sync_room("r", sfu(Some("n3"), &[("b", "n2")]));
    let eff = h.drain();
    let left: Vec<_> = eff
        .iter()
        .filter_map(|e| match e {
            Effect::SfuLeave {
                peer, home: None, ..
            } => Some(peer.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(left, ["b", "a"], "this node's SFU stops serving the room");
    let told = crate::hub::tests::sent(&eff);
    assert_eq!(
        told,
        [(
            1,
            json!({"type":"sfu_closed","from":"$sfu","reason":"node_lost","seq":1})
        )]
    );
    // From now on a's SFU messages go to n3.
    h.message(
        1,
        ClientMessage::Bye {
            target: "$sfu".into(),
        },
    );
    assert!(h
        .drain()
        .iter()
        .any(|e| matches!(e, Effect::ToSfu { home: Some(n), .. } if n == "n3")));
}

#[test]
fn a_lost_member_not_back_within_the_grace_leaves_with_node_lost() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2"), ("c", "n3")]);
    let t0 = Instant::now();
    h.node_lost("n2", t0);
    h.tick(t0 + Duration::from_secs(4));
    assert!(out(&mut h).delivered.is_empty());
    h.tick(t0 + Duration::from_secs(5));
    assert_eq!(
        out(&mut h).delivered,
        [(
            1,
            json!({"type":"peer_left","peer_id":"b","reason":"node_lost","seq":1})
        )]
    );
    assert_eq!(h.members("r"), ["c", "a"]);
}

#[test]
fn holding_past_the_resume_buffer_ends_the_member_for_its_senders() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.node_lost("n2", Instant::now());
    for n in 0..4 {
        h.message(1, offer("b", n));
    }
    let o = out(&mut h);
    assert_eq!(o.delivered[0].1["type"], "peer_left");
    assert_eq!(o.delivered[0].1["reason"], "node_lost");
    // A node that was only late gets what was held.
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    h.node_lost("n2", Instant::now());
    h.message(1, offer("b", 1));
    h.node_back("n2");
    assert_eq!(out(&mut h).forwarded.len(), 1);
}

#[test]
fn an_adopted_session_continues_its_sequence_and_its_room_sees_no_change() {
    let mut h = hub();
    join(&mut h, 1, "a", &[("b", "n2")]);
    let session = Adopted {
        identity: "b".into(),
        room: "r".into(),
        session_id: "s1".into(),
    };
    // What the cluster recorded of the session (its SFU capability) goes on with it.
    let info = JoinInfo {
        sfu_capable: true,
        ..Default::default()
    };
    h.adopt(2, session, 41, 5, info, view(&[("a", "n9")]))
        .unwrap();
    let effects = h.drain();
    let recorded = effects.iter().find_map(|e| match e {
        Effect::ClusterSession {
            identity,
            sfu_capable,
            ..
        } if identity == "b" => Some(*sfu_capable),
        _ => None,
    });
    assert_eq!(recorded, Some(true));
    let b = h.local_sessions().into_iter().find(|s| s.identity == "b");
    assert!(b.is_some_and(|s| s.sfu_capable));
    let o = out_of(effects);
    assert_eq!(o.delivered.len(), 1, "only b's joined: {o:?}");
    let joined = &o.delivered[0].1;
    assert_eq!(
        (joined["resumed"].clone(), joined["received"].clone()),
        (json!(true), json!(5))
    );
    assert_eq!(joined["session_id"], "s1");
    h.message(1, offer("b", 1));
    assert_eq!(
        out(&mut h).delivered[0],
        (
            2,
            json!({"type":"offer","offer":{"sdp":"1"},"from":"a","seq":42})
        )
    );
    // The session moves on again (resumed on yet another node): it ends here quietly.
    h.remote_joined("r", "b", "n4", None);
    let o = out(&mut h);
    assert!(o.delivered.is_empty() && o.left.is_empty(), "{o:?}");
    assert_eq!(h.members("r"), ["b", "a"]);
}

#[test]
fn messages_for_a_session_still_being_adopted_wait_for_it() {
    let mut h = hub();
    h.admitting("r");
    // The other node learned of the move first and already forwards.
    let offer = json!({"type":"offer","offer":{"sdp":"early"},"from":"a","relay_id":"n1~x.1"});
    assert!(h.remote_message("r", "b", ServerMessage::Raw(offer)));
    let session = Adopted {
        identity: "b".into(),
        room: "r".into(),
        session_id: "s1".into(),
    };
    h.adopt(2, session, 9, 0, JoinInfo::default(), view(&[("a", "n1")]))
        .unwrap();
    h.admitted("r");
    let o = out(&mut h);
    let kinds: Vec<_> = o.delivered.iter().map(|(_, v)| v["type"].clone()).collect();
    assert_eq!(kinds, [json!("joined"), json!("offer")]);
    assert_eq!(o.delivered[1].1["seq"], 10);
    // Nobody being admitted: no keeping.
    assert!(!h.remote_message("r2", "z", ServerMessage::Raw(json!({"type":"x"}))));
}
