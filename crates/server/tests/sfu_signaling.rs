//! SFU rooms end to end over loopback: WebSocket signaling (docs/sfu-protocol.md) drives the
//! server's SFU, and in-process str0m peers play the browsers on real UDP sockets. In a
//! cluster (a real `redis-server`), an SFU room is served by one node's SFU for peers on every
//! node.

mod common;
#[path = "../../cluster/tests/support/mod.rs"]
mod redis_support;

use switchboard_sfu::SfuMode;

use common::ws::{connect_ws, send_json, Ws};
use common::*;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use switchboard::RunningServer;
use switchboard_auth::Scope;
use switchboard_sfu::peer::Peer;
use tokio_tungstenite::tungstenite::Message;

fn sfu_config(mode: SfuMode) -> switchboard::Config {
    let mut c = test_config();
    c.sfu.mode = mode;
    c
}

/// A browser stand-in: a signaling socket plus a str0m peer.
struct Client {
    name: String,
    ws: Ws,
    peer: Peer,
    /// Every signaling message received, in order.
    got: Vec<Value>,
}

impl Client {
    /// A client signed in as `name`, not in a room yet.
    async fn open(s: &RunningServer, name: &str) -> Client {
        Client {
            name: name.into(),
            ws: connect_ws(s.http_addr, &mint(s, name, &[Scope::Webrtc])).await,
            peer: Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap(),
            got: Vec::new(),
        }
    }

    /// A client signed in with `ticket`, not in a room yet.
    async fn open_with(s: &RunningServer, name: &str, ticket: &str) -> Client {
        Client {
            name: name.into(),
            ws: connect_ws(s.http_addr, ticket).await,
            peer: Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap(),
            got: Vec::new(),
        }
    }

    /// A client in `room` as an SFU-capable peer, and its `joined` message.
    async fn connect(s: &RunningServer, name: &str, room: &str) -> (Client, Value) {
        let mut c = Client::open(s, name).await;
        c.send(json!({"type":"join","room_id":room,"sfu_capable":true}))
            .await;
        let joined = c.wait_for("joined").await;
        (c, joined)
    }

    async fn send(&mut self, v: Value) {
        send_json(&mut self.ws, v).await
    }

    /// Next signaling message of type `t` (others are kept in `got`), within 5 s.
    async fn wait_for(&mut self, t: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no {t} within 5 s; got {:?}", self.name, self.got))
                .expect("socket open")
                .expect("frame");
            if let Message::Text(txt) = m {
                let v: Value = serde_json::from_str(&txt).unwrap();
                self.got.push(v.clone());
                if v["type"] == t {
                    return v;
                }
            }
        }
    }

    /// Offers the peer's media (video publisher or receive-only) and applies the SFU's answer.
    async fn offer(&mut self, video: bool) {
        let sdp = self.peer.offer(video, false);
        self.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":sdp}}))
            .await;
        let answer = self.wait_for("answer").await;
        assert_eq!(answer["from"], "$sfu");
        self.peer
            .accept_answer(answer["answer"]["sdp"].as_str().unwrap())
            .unwrap();
    }

    /// Handles queued signaling without waiting: answers server offers.
    async fn service(&mut self) {
        while let Some(Some(Ok(m))) = self.ws.next().now_or_never() {
            let Message::Text(txt) = m else { continue };
            let v: Value = serde_json::from_str(&txt).unwrap();
            if v["type"] == "offer" && v["from"] == "$sfu" {
                let answer = self
                    .peer
                    .accept_offer(v["offer"]["sdp"].as_str().unwrap())
                    .unwrap();
                self.send(
                    json!({"type":"answer","target":"$sfu","answer":{"type":"answer","sdp":answer}}),
                )
                .await;
            }
            self.got.push(v);
        }
    }

    fn saw(&self, f: impl Fn(&Value) -> bool) -> bool {
        self.got.iter().any(f)
    }

    fn data_matching(&self, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.peer
            .data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| f(v))
            .collect()
    }
}

/// Drives every client's media and signaling for `dur`; clients flagged in `publish` send a
/// small VP8 frame every 20 ms (a keyframe each second).
async fn pump(clients: &mut [&mut Client], publish: &[bool], dur: Duration) {
    let end = Instant::now() + dur;
    let mut n = 0u64;
    while Instant::now() < end {
        for (i, c) in clients.iter_mut().enumerate() {
            if publish.get(i).copied().unwrap_or(false) && c.peer.connected {
                c.peer.send_video(n.is_multiple_of(50), 1200);
            }
            c.service().await;
        }
        n += 1;
        let mut runs = Vec::new();
        for c in clients.iter_mut() {
            runs.push(c.peer.run_for(Duration::from_millis(20)));
        }
        futures::future::join_all(runs).await;
    }
}

async fn pump_until(
    clients: &mut [&mut Client],
    publish: &[bool],
    what: &str,
    mut done: impl FnMut(&[&mut Client]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(clients) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        pump(clients, publish, Duration::from_millis(100)).await;
    }
}

/// Pumps until `viewer` has decoded `frames` video frames (from `publisher`, the only one
/// sending).
async fn video_reaches(publisher: &mut Client, viewer: &mut Client, frames: u64, what: &str) {
    pump_until(&mut [publisher, viewer], &[true, false], what, |c| {
        c[1].peer.video_frames() >= frames
    })
    .await;
}

async fn metric(s: &RunningServer, name: &str) -> f64 {
    metric_in(&scrape(s.http_addr).await, name)
}

#[tokio::test]
async fn sfu_room_forwards_media_data_pings_and_progress_over_signaling() {
    let s = start(sfu_config(SfuMode::Sfu)).await;
    let (mut alice, joined) = Client::connect(&s, "alice", "studio").await;
    assert_eq!(joined["mode"], "sfu");
    alice.offer(true).await;
    let (mut bob, _) = Client::connect(&s, "bob", "studio").await;
    bob.offer(false).await;

    // Bob is renegotiated to receive alice's video and decodes frames.
    video_reaches(&mut alice, &mut bob, 20, "bob's video").await;
    assert!(bob.saw(|v| v["type"] == "track_added" && v["publisher"] == "alice"));
    assert!(alice.saw(|v| v["type"] == "sfu_connected"));

    // DataChannel relay (targeted), the SDK's RTT ping to $server.
    assert!(alice
        .peer
        .send_text(false, r#"{"to":"bob","data":{"m":"hello bob"}}"#));
    assert!(alice
        .peer
        .send_text(true, r#"{"to":"$server","data":{"p":1234.5}}"#));
    pump_until(
        &mut [&mut alice, &mut bob],
        &[true, false],
        "relay + pong",
        |c| {
            !c[1]
                .data_matching(|v| v["from"] == "alice" && v["data"]["m"] == "hello bob")
                .is_empty()
                && !c[0]
                    .data_matching(|v| v["topic"] == "pong" && v["data"]["q"] == 1234.5)
                    .is_empty()
        },
    )
    .await;

    // The stream gateway's progress events for alice also arrive on her DataChannel.
    let mut grpc =
        switchboard_proto::inference::inference_client::InferenceClient::new(channel(&s).await);
    let ticket = mint(&s, "alice", &[Scope::Grpc]);
    let req = predict_request("job-sfu", br#"{"chunks":4,"chunk_bytes":64}"#, &ticket);
    let mut st = grpc.stream_predict(req).await.unwrap().into_inner();
    while st.message().await.unwrap().is_some() {}
    pump_until(
        &mut [&mut alice, &mut bob],
        &[false, false],
        "progress",
        |c| {
            !c[0]
                .data_matching(|v| {
                    v["from"] == "$server"
                        && v["topic"] == "stream_progress"
                        && v["data"]["task_id"] == "job-sfu"
                        && v["data"]["state"] == "done"
                })
                .is_empty()
        },
    )
    .await;
    assert!(
        bob.data_matching(|v| v["topic"] == "stream_progress")
            .is_empty(),
        "another identity gets none of alice's progress"
    );

    // subscribe: bob pauses alice's video, then resumes it.
    bob.send(json!({"type":"subscribe","publisher":"alice","video":false}))
        .await;
    pump(
        &mut [&mut alice, &mut bob],
        &[true, false],
        Duration::from_millis(600),
    )
    .await;
    let paused_at = bob.peer.video_frames();
    pump(
        &mut [&mut alice, &mut bob],
        &[true, false],
        Duration::from_millis(800),
    )
    .await;
    assert!(
        bob.peer.video_frames() <= paused_at + 2,
        "paused video keeps flowing: {paused_at} -> {}",
        bob.peer.video_frames()
    );
    bob.send(json!({"type":"subscribe","publisher":"alice","video":true,"max_layer":2}))
        .await;
    video_reaches(&mut alice, &mut bob, paused_at + 10, "resumed video").await;

    // Alice leaves: bob sees her track end and her leave; her SFU session is gone.
    assert_eq!(metric(&s, "switchboard_sfu_sessions").await, 2.0);
    alice.send(json!({"type":"leave"})).await;
    pump_until(&mut [&mut bob], &[false], "track_ended", |c| {
        c[0].saw(|v| v["type"] == "track_ended" && v["publisher"] == "alice")
            && c[0].saw(|v| v["type"] == "peer_left" && v["peer_id"] == "alice")
    })
    .await;
    let bridge = s.state.sfu.clone().expect("sfu runs");
    bob.send(json!({"type":"leave"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = bridge.counts().await.unwrap();
        if c.sessions == 0 && bridge.participants() == 0 {
            assert_eq!((c.rooms, c.tracks, c.subscriptions), (0, 0, 0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SFU not empty after leaves: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&s, "switchboard_sfu_sessions").await, 0.0);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_sfu_requests_get_clear_errors_and_are_counted() {
    let s = start(sfu_config(SfuMode::Sfu)).await;
    let (mut eve, _) = Client::connect(&s, "eve", "r").await;
    eve.send(json!({"type":"answer","target":"$sfu","answer":{"type":"answer","sdp":"v=0"}}))
        .await;
    assert_eq!(
        eve.wait_for("error").await["code"],
        "sfu_unknown_participant"
    );
    eve.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":"garbage"}}))
        .await;
    assert_eq!(eve.wait_for("error").await["code"], "sfu_bad_sdp");
    eve.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer"}}))
        .await;
    assert_eq!(eve.wait_for("error").await["code"], "sfu_bad_sdp");
    eve.offer(false).await;
    // Well-formed SDP, but the server has no offer out.
    let sdp = Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap()
        .offer(false, false);
    eve.send(json!({"type":"answer","target":"$sfu","answer":{"type":"answer","sdp":sdp}}))
        .await;
    assert_eq!(eve.wait_for("error").await["code"], "sfu_no_pending_offer");
    eve.send(json!({"type":"ice_candidate","target":"$sfu","candidate":{"candidate":"candidate:nonsense"}}))
        .await;
    assert_eq!(eve.wait_for("error").await["code"], "sfu_bad_candidate");
    assert!(
        metric(
            &s,
            "switchboard_sfu_signal_errors_total{reason=\"bad_sdp\"}"
        )
        .await
            >= 2.0
    );
    // bye ends the SFU session but not the room membership; a new offer starts over.
    eve.send(json!({"type":"bye","target":"$sfu"})).await;
    assert_eq!(eve.wait_for("sfu_closed").await["reason"], "bye");
    eve.peer = Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap();
    eve.offer(false).await;
    s.shutdown().await;
}

#[tokio::test]
async fn auto_rooms_switch_to_the_sfu_and_mesh_rooms_refuse_subscribe() {
    let mut cfg = sfu_config(SfuMode::Auto);
    cfg.sfu.mesh_max_peers = 1;
    let s = start(cfg).await;
    let (mut a, joined) = Client::connect(&s, "a", "grow").await;
    assert_eq!(joined["mode"], "mesh");
    a.send(json!({"type":"subscribe","publisher":"b"})).await;
    assert_eq!(a.wait_for("error").await["code"], "sfu_not_sfu_room");
    let (mut b, joined) = Client::connect(&s, "b", "grow").await;
    assert_eq!(joined["mode"], "sfu");
    assert_eq!(a.wait_for("mode_changed").await["mode"], "sfu");
    a.wait_for("peer_joined").await;
    // Both now reach each other through the SFU.
    a.offer(true).await;
    b.offer(false).await;
    video_reaches(&mut a, &mut b, 5, "video via SFU").await;
    // A room created with an explicit wish is SFU from the start.
    let mut c = Client::open(&s, "c").await;
    c.send(json!({"type":"join","room_id":"big","mode":"sfu"}))
        .await;
    assert_eq!(c.wait_for("joined").await["mode"], "sfu");
    s.shutdown().await;
}

#[tokio::test]
async fn joining_and_leaving_many_times_frees_every_sfu_resource() {
    let mut cfg = sfu_config(SfuMode::Sfu);
    cfg.limits.signal_resume_grace = Duration::from_secs(1);
    let s = start(cfg).await;
    let (mut host, _) = Client::connect(&s, "host", "loop").await;
    host.offer(true).await;
    for i in 0..12 {
        let (mut g, _) = Client::connect(&s, &format!("guest{i}"), "loop").await;
        g.offer(i % 2 == 0).await;
        video_reaches(&mut host, &mut g, 2, "guest video").await;
        if i % 3 == 0 {
            g.send(json!({"type":"leave"})).await;
        } else {
            drop(g); // socket closed without a word: the session ends after the resume grace
        }
    }
    host.send(json!({"type":"leave"})).await;
    let bridge = s.state.sfu.clone().expect("sfu runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = bridge.counts().await.unwrap();
        let empty = c.sessions == 0
            && c.rooms == 0
            && c.tracks == 0
            && c.subscriptions == 0
            && c.ufrag_routes == 0
            && c.addr_routes == 0
            && c.identities == 0
            && c.queued_bytes == 0;
        if empty && bridge.participants() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "resources left: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

/// Three nodes of one cluster, each with an SFU.
async fn sfu_cluster(redis: &redis_support::RedisServer) -> Vec<RunningServer> {
    sfu_cluster_in(redis, ["", "", ""]).await
}

/// Three nodes of one cluster, each with an SFU, in `regions`.
async fn sfu_cluster_in(
    redis: &redis_support::RedisServer,
    regions: [&str; 3],
) -> Vec<RunningServer> {
    cluster_of(
        redis,
        regions.map(|r| {
            let mut c = sfu_config(SfuMode::Sfu);
            c.cluster.region = r.into();
            c
        }),
    )
    .await
}

/// Three nodes "a", "b", "c" of one cluster with these configurations.
async fn cluster_of(
    redis: &redis_support::RedisServer,
    configs: [switchboard::Config; 3],
) -> Vec<RunningServer> {
    let mut nodes = Vec::new();
    for (id, mut c) in ["a", "b", "c"].into_iter().zip(configs) {
        c.cluster.redis_url = Some(redis.url());
        c.cluster.node_id = Some(id.into());
        c.cluster.heartbeat = Duration::from_millis(200);
        c.cluster.node_ttl = Duration::from_millis(600);
        nodes.push(start(c).await);
    }
    // Every node has read the registry with all three (and their SFUs) in it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    nodes
}

/// The UDP port of the host candidate in an SDP.
fn candidate_port(sdp: &str) -> u16 {
    sdp.lines()
        .find(|l| l.starts_with("a=candidate:") && (l.contains(" udp ") || l.contains(" UDP ")))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no UDP candidate in {sdp}"))
}

#[tokio::test]
async fn an_sfu_room_is_served_by_one_node_for_peers_on_every_node() {
    let redis = redis_support::RedisServer::start();
    let nodes = sfu_cluster(&redis).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut alice, joined) = Client::connect(a, "alice", "stage").await;
    assert_eq!(joined["mode"], "sfu");
    alice.offer(true).await;
    let (mut bob, joined) = Client::connect(b, "bob", "stage").await;
    assert_eq!(joined["mode"], "sfu");
    let (mut carol, _) = Client::connect(c, "carol", "stage").await;

    // bob and carol, on other nodes, offer to "$sfu": the room's SFU on a answers, with a's
    // media address.
    let a_port = a.state.bound.sfu_udp.unwrap().port();
    for viewer in [&mut bob, &mut carol] {
        let sdp = viewer.peer.offer(false, false);
        viewer
            .send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":sdp}}))
            .await;
        let answer = viewer.wait_for("answer").await;
        assert_eq!(answer["from"], "$sfu");
        let sdp = answer["answer"]["sdp"].as_str().unwrap();
        assert_eq!(candidate_port(sdp), a_port, "the SFU of a answers: {sdp}");
        viewer.peer.accept_answer(sdp).unwrap();
    }
    video_reaches(&mut alice, &mut bob, 20, "bob's video from a's SFU").await;
    video_reaches(&mut alice, &mut carol, 20, "carol's video from a's SFU").await;
    assert!(bob.saw(|v| v["type"] == "track_added" && v["publisher"] == "alice"));

    // carol leaves on c: a's SFU drops her session.
    carol.send(json!({"type":"leave"})).await;
    let t = Instant::now();
    while metric(a, "switchboard_sfu_sessions").await != 2.0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "carol's SFU session not closed"
        );
        pump(
            &mut [&mut alice, &mut bob],
            &[true, false],
            Duration::from_millis(100),
        )
        .await;
    }
    for n in [b, c] {
        assert_eq!(
            metric(n, "switchboard_sfu_sessions").await,
            0.0,
            "no SFU session elsewhere"
        );
    }
}

#[tokio::test]
async fn concurrent_first_joins_on_two_nodes_place_one_sfu_room_once() {
    let redis = redis_support::RedisServer::start();
    let nodes = sfu_cluster(&redis).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        let room = format!("race-{round}");
        let (xn, yn) = (format!("x{round}"), format!("y{round}"));
        let ((mut x, _), (mut y, _)) = tokio::join!(
            Client::connect(a, &xn, &room),
            Client::connect(b, &yn, &room)
        );
        let mut ports = Vec::new();
        for p in [&mut x, &mut y] {
            let sdp = p.peer.offer(true, false);
            p.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":sdp}}))
                .await;
            let answer = p.wait_for("answer").await;
            ports.push(candidate_port(answer["answer"]["sdp"].as_str().unwrap()));
        }
        assert_eq!(ports[0], ports[1], "one SFU serves {room}");
    }
}

#[tokio::test]
async fn an_auto_room_spanning_nodes_moves_to_one_sfu_when_it_outgrows_mesh() {
    let redis = redis_support::RedisServer::start();
    let auto = || {
        let mut c = sfu_config(SfuMode::Auto);
        c.sfu.mesh_max_peers = 2;
        c
    };
    let nodes = cluster_of(&redis, [auto(), auto(), auto()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut alice, joined) = Client::connect(a, "alice", "grow").await;
    assert_eq!(joined["mode"], "mesh");
    let (mut bob, joined) = Client::connect(b, "bob", "grow").await;
    assert_eq!(joined["mode"], "mesh", "two members fit the mesh");
    alice.wait_for("peer_joined").await;
    // The third member, on a third node, takes the room past mesh_max_peers: every member,
    // wherever it is, hears mode_changed before that join.
    let (mut carol, joined) = Client::connect(c, "carol", "grow").await;
    assert_eq!(joined["mode"], "sfu", "{joined}");
    for p in [&mut alice, &mut bob] {
        let changed = p.wait_for("mode_changed").await;
        assert_eq!(changed["mode"], "sfu");
        assert_eq!(p.wait_for("peer_joined").await["peer_id"], "carol");
    }
    // One SFU serves the room for all three; video goes through it across nodes.
    alice.offer(true).await;
    bob.offer(false).await;
    carol.offer(false).await;
    video_reaches(
        &mut alice,
        &mut carol,
        5,
        "alice's video to carol via the SFU",
    )
    .await;
    let ports: Vec<u16> = [&alice, &bob, &carol]
        .iter()
        .map(|p| {
            let answer = p.got.iter().rev().find(|m| m["type"] == "answer").unwrap();
            candidate_port(answer["answer"]["sdp"].as_str().unwrap())
        })
        .collect();
    assert!(ports.windows(2).all(|w| w[0] == w[1]), "one SFU: {ports:?}");

    // A member that cannot use an SFU (no sfu_capable, like the reference WebRTCClient)
    // keeps its room mesh, whichever node it is on.
    let mut old = Client::open(b, "old").await;
    old.send(json!({"type":"join","room_id":"keep"})).await;
    old.wait_for("joined").await;
    let (_d, _) = Client::connect(a, "dave", "keep").await;
    let (_e, joined) = Client::connect(c, "erin", "keep").await;
    assert_eq!(joined["mode"], "mesh", "{joined}");
    old.wait_for("peer_joined").await;
    old.wait_for("peer_joined").await;
    assert!(!old.got.iter().any(|m| m["type"] == "mode_changed"));
}

#[tokio::test]
async fn a_new_sfu_room_goes_to_the_least_loaded_node() {
    let redis = redis_support::RedisServer::start();
    let nodes = sfu_cluster(&redis).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // a carries two sessions; the registry learns it with the next heartbeats.
    let (_p, _) = Client::connect(a, "p", "busy").await;
    let (_q, _) = Client::connect(a, "q", "busy").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (mut r, _) = Client::connect(a, "r", "fresh").await;
    let sdp = r.peer.offer(true, false);
    r.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":sdp}}))
        .await;
    let answer = r.wait_for("answer").await;
    let port = candidate_port(answer["answer"]["sdp"].as_str().unwrap());
    let idle = [b, c].map(|n| n.state.bound.sfu_udp.unwrap().port());
    assert!(
        idle.contains(&port),
        "placed on an idle node ({idle:?}), not a: {port}"
    );
}

#[tokio::test]
async fn an_sfu_room_whose_node_stops_moves_to_another_node_and_media_comes_back() {
    let redis = redis_support::RedisServer::start();
    let mut nodes = sfu_cluster(&redis).await;
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    // The room is created on a (a's SFU serves it); alice publishes from b, bob watches from c.
    let (_host, _) = Client::connect(&a, "host", "show").await;
    let (mut alice, _) = Client::connect(&b, "alice", "show").await;
    alice.offer(true).await;
    let (mut bob, _) = Client::connect(&c, "bob", "show").await;
    bob.offer(false).await;
    video_reaches(&mut alice, &mut bob, 10, "bob's video through a's SFU").await;

    // a goes away. b and c notice, move the room to one of them, and tell their clients to
    // start a new SFU session, which they do (as the SDK does) with new peers.
    let stopped = Instant::now();
    // (Its drain waits for the host to move, which this test's host never does.)
    let stopping = tokio::spawn(a.shutdown());
    for p in [&mut alice, &mut bob] {
        // a's SFU may say `shutdown` first; the move is `node_lost`.
        while p.wait_for("sfu_closed").await["reason"] != "node_lost" {}
    }
    let noticed = stopped.elapsed();
    alice.peer = Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap();
    bob.peer = Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap();
    alice.offer(true).await;
    bob.offer(false).await;
    video_reaches(&mut alice, &mut bob, 10, "bob's video after the move").await;
    let back = stopped.elapsed();
    println!("SFU room moved: clients told after {noticed:?}, video back after {back:?}");
    assert!(back < Duration::from_secs(5), "SFU media back in {back:?}");
    let total =
        metric(&b, "switchboard_sfu_sessions").await + metric(&c, "switchboard_sfu_sessions").await;
    assert_eq!(total, 2.0, "one SFU, on b or c, serves alice and bob");
    stopping.abort();
}

#[tokio::test]
async fn a_ticket_naming_a_region_gets_its_sfu_room_served_there() {
    let redis = redis_support::RedisServer::start();
    let nodes = sfu_cluster_in(&redis, ["eu", "us", "eu"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut req = switchboard_auth::MintRequest::new("dana", [Scope::Webrtc]);
    req.region = Some("us".into());
    let ticket = a
        .state
        .gate
        .keyring
        .mint(&req, switchboard_auth::unix_now())
        .unwrap()
        .0;
    // dana connects to a (eu) and creates the room: it is served in us, by b.
    let mut dana = Client::open_with(a, "dana", &ticket).await;
    dana.send(json!({"type":"join","room_id":"us-room","sfu_capable":true}))
        .await;
    dana.wait_for("joined").await;
    let sdp = dana.peer.offer(true, false);
    dana.send(json!({"type":"offer","target":"$sfu","offer":{"type":"offer","sdp":sdp}}))
        .await;
    let answer = dana.wait_for("answer").await;
    let port = candidate_port(answer["answer"]["sdp"].as_str().unwrap());
    assert_eq!(
        port,
        b.state.bound.sfu_udp.unwrap().port(),
        "served by b, in us"
    );
}
