//! Signaling over WebSocket on loopback: join/leave/relay/ordering, resume, limits, liveness,
//! and every bad input (bad/replayed/expired tokens, posing as another peer, malformed JSON,
//! binary frames, unknown types, oversized frames, slow consumers, dead connections).

mod common;

use common::ws::{connect_ws, next_json, send_json, Ws};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use switchboard::RunningServer;
use switchboard_auth::{unix_now, MintRequest, Scope};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn token_at(s: &RunningServer, id: &str, room: Option<&str>, scopes: &[Scope], now: u64) -> String {
    let req = MintRequest {
        identity: id.into(),
        room: room.map(Into::into),
        scope: scopes.iter().copied().collect(),
        ttl: None,
        region: None,
    };
    s.state.gate.keyring.mint(&req, now).unwrap().0
}

fn token(s: &RunningServer, id: &str) -> String {
    token_at(s, id, None, &[Scope::Webrtc], unix_now())
}

fn url(s: &RunningServer, q: &str) -> String {
    format!("ws://{}/v1/signal?{q}", s.http_addr)
}

async fn connect(s: &RunningServer, tok: &str) -> Ws {
    connect_ws(s.http_addr, tok).await
}

/// HTTP status of a refused upgrade.
async fn refused(u: String) -> (u16, String) {
    match tokio_tungstenite::connect_async(u).await {
        Err(WsError::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade should have been refused"),
    }
}

async fn send(ws: &mut Ws, v: Value) {
    send_json(ws, v).await
}

/// Next JSON text message, within 5 s.
async fn recv(ws: &mut Ws) -> Value {
    next_json(ws, Duration::from_secs(5)).await
}

/// Reads until the server closes; returns the close code.
async fn closed_with(ws: &mut Ws) -> (Option<u16>, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed within 10 s")
        {
            None | Some(Err(_)) => return (None, seen),
            Some(Ok(Message::Close(c))) => return (c.map(|c| u16::from(c.code)), seen),
            Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(_)) => {}
        }
    }
}

/// Whether an upgrade with `tok` succeeds within a second (tried every 20 ms).
async fn connects_soon(s: &RunningServer, tok: &str) -> bool {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio_tungstenite::connect_async(url(s, &format!("access_token={tok}")))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

async fn join(ws: &mut Ws, room: &str) -> (Value, Value) {
    send(ws, json!({"type":"join","room_id":room})).await;
    let peers = recv(ws).await;
    assert_eq!(peers["type"], "room_peers", "{peers}");
    let joined = recv(ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (peers, joined)
}

/// A connection for `id` (on a fresh ticket) that has joined `room`.
async fn joined_peer(s: &RunningServer, id: &str, room: &str) -> Ws {
    let mut ws = connect(s, &token(s, id)).await;
    join(&mut ws, room).await;
    ws
}

fn cfg() -> switchboard::config::Config {
    let mut c = test_config();
    c.turn.uris = vec![
        "stun:127.0.0.1:3478".into(),
        "turn:127.0.0.1:3478?transport=udp".into(),
    ];
    c
}

async fn metrics(s: &RunningServer) -> String {
    scrape(s.http_addr).await
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    metric_in(text, line_prefix)
}

#[tokio::test]
async fn join_relay_in_order_and_leave() {
    let s = start(cfg()).await;
    let mut a = connect(&s, &token(&s, "alice")).await;
    let (peers, joined) = join(&mut a, "r1").await;
    assert_eq!(peers["peers"], json!([]));
    assert_eq!(joined["peer_id"], "alice");
    assert_eq!(joined["room_id"], "r1");
    assert_eq!(joined["mode"], "mesh");
    let ice = joined["ice_servers"].as_array().unwrap();
    assert_eq!(ice[0]["urls"], json!(["stun:127.0.0.1:3478"]));
    assert!(ice[1]["username"].as_str().unwrap().ends_with(":alice"));
    assert!(!joined["resume_token"].as_str().unwrap().is_empty());

    // The reference WebRTCClient's join shape, with peer_id equal to the token's identity.
    let mut b = connect(&s, &token(&s, "bob")).await;
    send(
        &mut b,
        json!({"type":"join","peer_id":"bob","room_id":"r1"}),
    )
    .await;
    assert_eq!(recv(&mut b).await["peers"], json!(["alice"]));
    assert_eq!(recv(&mut b).await["type"], "joined");
    let pj = recv(&mut a).await;
    assert_eq!(
        (pj["type"].as_str(), pj["peer_id"].as_str()),
        (Some("peer_joined"), Some("bob"))
    );

    for i in 0..150 {
        send(&mut b, json!({"type":"offer","target":"alice","offer":{"type":"offer","sdp":format!("sdp-{i}")}})).await;
    }
    let mut last = 0;
    for i in 0..150 {
        let m = recv(&mut a).await;
        assert_eq!(m["type"], "offer");
        assert_eq!(m["from"], "bob");
        assert_eq!(m["offer"]["sdp"], format!("sdp-{i}"), "in order");
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > last);
        last = seq;
    }
    send(
        &mut a,
        json!({"type":"answer","target":"bob","answer":{"type":"answer","sdp":"x"}}),
    )
    .await;
    send(&mut a, json!({"type":"ice_candidate","target":"bob","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}})).await;
    send(&mut a, json!({"type":"bye","target":"bob"})).await;
    let m = recv(&mut b).await;
    assert_eq!(
        (
            m["type"].as_str(),
            m["from"].as_str(),
            m["answer"]["sdp"].as_str()
        ),
        (Some("answer"), Some("alice"), Some("x"))
    );
    let m = recv(&mut b).await;
    assert_eq!(m["candidate"]["sdpMid"], "0");
    assert_eq!(recv(&mut b).await["type"], "bye");
    send(&mut b, json!({"type":"ping","ts":42})).await;
    assert_eq!(recv(&mut b).await, json!({"type":"pong","ts":42}));

    send(&mut a, json!({"type":"leave"})).await;
    let m = recv(&mut b).await;
    assert_eq!(
        (m["type"].as_str(), m["peer_id"].as_str()),
        (Some("peer_left"), Some("alice"))
    );
    // Closing the socket cleanly leaves at once too.
    b.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.state.signaling.handle().sessions(), 0);
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "switchboard_signal_rooms "), 0.0);
    assert!(metric(&m, "switchboard_signal_messages_total{type=\"offer\"}") >= 150.0);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_inputs_get_errors_and_the_connection_stays() {
    let s = start(cfg()).await;
    let mut a = connect(&s, &token(&s, "alice")).await;
    // Before join.
    send(&mut a, json!({"type":"offer","target":"x","offer":{}})).await;
    assert_eq!(recv(&mut a).await["code"], "not_joined");
    // Posing as someone else.
    send(
        &mut a,
        json!({"type":"join","room_id":"r","peer_id":"mallory"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["code"], "forbidden_peer_id");
    join(&mut a, "r").await;
    send(&mut a, json!({"type":"join","room_id":"r2"})).await;
    assert_eq!(recv(&mut a).await["code"], "already_joined");
    a.send(Message::text("{not json")).await.unwrap();
    assert_eq!(recv(&mut a).await["code"], "malformed_json");
    send(&mut a, json!({"type":"teleport"})).await;
    assert_eq!(recv(&mut a).await["code"], "unknown_type");
    send(&mut a, json!({"no":"type"})).await;
    assert_eq!(recv(&mut a).await["code"], "missing_type");
    send(&mut a, json!({"type":"offer","target":"bob"})).await;
    assert_eq!(recv(&mut a).await["code"], "bad_message");
    a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut a).await["code"], "binary_frame");
    send(
        &mut a,
        json!({"type":"offer","target":"nobody","offer":{"type":"offer","sdp":""}}),
    )
    .await;
    assert_eq!(recv(&mut a).await["code"], "unknown_target");
    send(&mut a, json!({"type":"ping","ts":1})).await;
    assert_eq!(recv(&mut a).await["type"], "pong", "still connected");

    // Oversized frame: error, then close 1009.
    let big = format!(r#"{{"type":"ping","ts":"{}"}}"#, "x".repeat(70 * 1024));
    a.send(Message::text(big)).await.unwrap();
    let (code, seen) = closed_with(&mut a).await;
    assert_eq!(code, Some(1009), "{seen:?}");
    assert!(
        seen.iter().any(|m| m["code"] == "frame_too_large"),
        "{seen:?}"
    );

    let m = metrics(&s).await;
    for code in [
        "malformed_json",
        "unknown_type",
        "binary_frame",
        "forbidden_peer_id",
        "unknown_target",
        "frame_too_large",
        "not_joined",
    ] {
        assert!(
            metric(
                &m,
                &format!("switchboard_signal_errors_total{{code=\"{code}\"}}")
            ) >= 1.0,
            "{code}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn tickets_are_checked_at_the_upgrade() {
    let s = start(cfg()).await;
    assert_eq!(refused(url(&s, "")).await.0, 401);
    assert_eq!(refused(url(&s, "access_token=garbage")).await.0, 401);
    // Expired.
    let old = token_at(&s, "alice", None, &[Scope::Webrtc], unix_now() - 3600);
    let (st, body) = refused(url(&s, &format!("access_token={old}"))).await;
    assert_eq!(st, 401);
    assert!(body.contains("expired"), "{body}");
    // Wrong scope.
    let grpc_only = token_at(&s, "alice", None, &[Scope::Grpc], unix_now());
    assert_eq!(
        refused(url(&s, &format!("access_token={grpc_only}")))
            .await
            .0,
        403
    );
    // A jti opens one session only.
    let t = token(&s, "alice");
    let _first = connect(&s, &t).await;
    let (st, body) = refused(url(&s, &format!("access_token={t}"))).await;
    assert_eq!(st, 401);
    assert!(body.contains("replayed"), "{body}");
    // Authorization: Bearer works as well.
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url(&s, ""))
            .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&s, "carol")).parse().unwrap(),
    );
    let (mut c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    join(&mut c, "any").await;
    // A room claim restricts the join.
    let roomed = token_at(&s, "dave", Some("r1"), &[Scope::Webrtc], unix_now());
    let mut d = connect(&s, &roomed).await;
    send(&mut d, json!({"type":"join","room_id":"r2"})).await;
    assert_eq!(recv(&mut d).await["code"], "forbidden_room");
    join(&mut d, "r1").await;
    let m = metrics(&s).await;
    assert!(metric(&m, "switchboard_auth_failures_total{reason=\"replayed\"}") >= 1.0);
    assert!(metric(&m, "switchboard_auth_failures_total{reason=\"expired\"}") >= 1.0);
    s.shutdown().await;
}

#[tokio::test]
async fn same_identity_twice_replaces_the_old_connection() {
    let s = start(cfg()).await;
    let mut a1 = joined_peer(&s, "alice", "r").await;
    let mut b = joined_peer(&s, "bob", "r").await;
    recv(&mut a1).await; // peer_joined bob
    let mut a2 = connect(&s, &token(&s, "alice")).await;
    let (peers, _) = join(&mut a2, "r").await;
    assert_eq!(peers["peers"], json!(["bob"]));
    let (code, seen) = closed_with(&mut a1).await;
    assert_eq!(code, Some(4001));
    assert!(seen.iter().any(|m| m["code"] == "replaced"), "{seen:?}");
    let m = recv(&mut b).await;
    assert_eq!(
        (m["type"].as_str(), m["peer_id"].as_str()),
        (Some("peer_left"), Some("alice"))
    );
    let m = recv(&mut b).await;
    assert_eq!(
        (m["type"].as_str(), m["peer_id"].as_str()),
        (Some("peer_joined"), Some("alice"))
    );
    send(
        &mut b,
        json!({"type":"offer","target":"alice","offer":{"type":"offer","sdp":"s"}}),
    )
    .await;
    assert_eq!(
        recv(&mut a2).await["from"],
        "bob",
        "relay goes to the new connection"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_alone_and_counted() {
    let mut c = cfg();
    c.limits.signal_send_queue = 8;
    c.limits.signal_messages_per_second = 100_000;
    let s = start(c).await;
    let slow = joined_peer(&s, "slow", "r").await;
    let mut fast = joined_peer(&s, "fast", "r").await;
    let mut other = joined_peer(&s, "other", "r").await;
    // `slow` never reads again. `fast` floods it with 32 KiB offers until the room hears
    // that it left.
    let sdp = "x".repeat(32 * 1024);
    let mut left = false;
    for i in 0..4000 {
        send(
            &mut fast,
            json!({"type":"offer","target":"slow","offer":{"type":"offer","sdp":sdp}}),
        )
        .await;
        if i % 4 == 3 {
            // Drain what `fast` got (peer_left...); `fast` must keep reading or it would be a
            // slow consumer itself (its queue is small too).
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(2), fast.next()).await
            {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "peer_left" && v["peer_id"] == "slow" {
                        left = true;
                    }
                }
            }
            if left {
                break;
            }
        }
    }
    assert!(left, "the slow consumer was dropped");
    // The others are unaffected.
    send(
        &mut other,
        json!({"type":"offer","target":"fast","offer":{"type":"offer","sdp":"hi"}}),
    )
    .await;
    loop {
        let m = recv(&mut fast).await;
        if m["type"] == "offer" {
            assert_eq!(m["from"], "other");
            break;
        }
    }
    let m = metrics(&s).await;
    assert!(
        metric(
            &m,
            "switchboard_signal_closes_total{code=\"slow_consumer\"}"
        ) >= 1.0
    );
    drop(slow);
    s.shutdown().await;
}

#[tokio::test]
async fn dead_connection_is_cleaned_up_with_peer_left() {
    let mut c = cfg();
    c.limits.signal_ping_interval = Duration::from_millis(200);
    c.limits.signal_idle_timeout = Duration::from_millis(800);
    c.limits.signal_resume_grace = Duration::from_millis(500);
    let s = start(c).await;
    let dead = joined_peer(&s, "dead", "r").await;
    let mut b = joined_peer(&s, "bob", "r").await;
    // `dead` stops reading: no pongs, no frames. Within idle + grace + housekeeping it is gone.
    let t0 = std::time::Instant::now();
    loop {
        let m = recv(&mut b).await; // b keeps reading, so b answers pings and stays alive
        if m["type"] == "peer_left" {
            assert_eq!(m["peer_id"], "dead");
            break;
        }
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    let m = metrics(&s).await;
    assert!(metric(&m, "switchboard_signal_sessions ") == 1.0);
    assert!(metric(&m, "switchboard_signal_closes_total{code=\"dead\"}") >= 1.0);
    drop(dead);
    s.shutdown().await;
}

#[tokio::test]
async fn resume_after_a_cut_loses_nothing_and_duplicates_nothing() {
    let s = start(cfg()).await;
    let mut a = connect(&s, &token(&s, "alice")).await;
    let (_, joined) = join(&mut a, "r").await;
    let rt = joined["resume_token"].as_str().unwrap().to_string();
    let mut b = joined_peer(&s, "bob", "r").await;
    let pj = recv(&mut a).await;
    let mut last_seq = pj["seq"].as_u64().unwrap();
    let offer = |n: u32| json!({"type":"offer","target":"alice","offer":{"type":"offer","sdp":n.to_string()}});
    for n in 0..3 {
        send(&mut b, offer(n)).await;
    }
    let m = recv(&mut a).await; // only the first is "seen"; 1 and 2 are in flight
    assert_eq!(m["offer"]["sdp"], "0");
    last_seq = last_seq.max(m["seq"].as_u64().unwrap());
    // Cut the socket without a close frame.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 3..6 {
        send(&mut b, offer(n)).await;
    }
    let (mut a2, _) = tokio_tungstenite::connect_async(url(
        &s,
        &format!("resume_token={rt}&last_seq={last_seq}"),
    ))
    .await
    .unwrap();
    let j = recv(&mut a2).await;
    assert_eq!(j["type"], "joined", "{j}");
    assert_eq!(j["resumed"], true);
    assert_eq!(j["peer_id"], "alice");
    assert!(j["ice_servers"].as_array().is_some_and(|a| !a.is_empty()));
    for n in 1..6u64 {
        let m = recv(&mut a2).await;
        assert_eq!(m["offer"]["sdp"], n.to_string());
        assert_eq!(
            m["seq"].as_u64().unwrap(),
            last_seq + n,
            "contiguous, no dup"
        );
    }
    // No flap for bob: the next thing bob sees is alice's new message, not peer_left/joined.
    send(
        &mut a2,
        json!({"type":"answer","target":"bob","answer":{"type":"answer","sdp":"ok"}}),
    )
    .await;
    let m = recv(&mut b).await;
    assert_eq!(
        (m["type"].as_str(), m["from"].as_str()),
        (Some("answer"), Some("alice"))
    );
    // The old resume token is spent.
    let (st, _) = refused_or_error(&s, &rt).await;
    assert!(st, "old resume token must not work again");
    let m = metrics(&s).await;
    assert!(metric(&m, "switchboard_signal_resumes_total{result=\"ok\"}") >= 1.0);
    s.shutdown().await;
}

/// True when a resume with `rt` fails (error + close).
async fn refused_or_error(s: &RunningServer, rt: &str) -> (bool, ()) {
    match tokio_tungstenite::connect_async(url(s, &format!("resume_token={rt}&last_seq=0"))).await {
        Err(_) => (true, ()),
        Ok((mut ws, _)) => {
            let (code, seen) = closed_with(&mut ws).await;
            (
                code == Some(1008) && seen.iter().any(|m| m["code"] == "unknown_resume_token"),
                (),
            )
        }
    }
}

#[tokio::test]
async fn limits_per_ip_and_per_connection() {
    let mut c = cfg();
    c.limits.signal_connections_per_ip = 3;
    c.limits.signal_joins_per_second_per_ip = 1; // burst 2
    c.limits.signal_messages_per_second = 5; // burst 10
    let s = start(c).await;
    let mut w1 = connect(&s, &token(&s, "a")).await;
    let mut w2 = connect(&s, &token(&s, "b")).await;
    let mut w3 = connect(&s, &token(&s, "c")).await;
    let tok_d = token(&s, "d");
    let (st, body) = refused(url(&s, &format!("access_token={tok_d}"))).await;
    assert_eq!(st, 429, "{body}");
    join(&mut w1, "r").await;
    join(&mut w2, "r").await;
    send(&mut w3, json!({"type":"join","room_id":"r"})).await;
    assert_eq!(recv(&mut w3).await["code"], "join_rate_limited");
    // Message rate per connection.
    for i in 0..20 {
        send(&mut w3, json!({"type":"ping","ts":i})).await;
    }
    let mut limited = 0;
    for _ in 0..20 {
        if recv(&mut w3).await["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 8, "{limited}");
    // The refused upgrade did not burn d's single-use ticket.
    w1.close(None).await.unwrap();
    assert!(
        connects_soon(&s, &tok_d).await,
        "a ticket refused with 429 stays usable"
    );
    let m = metrics(&s).await;
    assert!(
        metric(
            &m,
            "switchboard_signal_errors_total{code=\"too_many_connections\"}"
        ) >= 1.0
    );
    assert!(metric(&m, "switchboard_signal_errors_total{code=\"rate_limited\"}") >= 8.0);
    assert!(
        metric(
            &m,
            "switchboard_signal_errors_total{code=\"join_rate_limited\"}"
        ) >= 1.0
    );
    s.shutdown().await;
}

/// The node's total bound on signaling connections holds whatever the addresses: past it,
/// 503 `server_full`, counted; a connection closing makes room again.
#[tokio::test]
async fn total_connection_bound_refuses_with_server_full() {
    let mut c = cfg();
    c.limits.signal_max_connections = 2;
    let s = start(c).await;
    let mut a = connect(&s, &token(&s, "a")).await;
    let _b = connect(&s, &token(&s, "b")).await;
    let (st, body) = refused(url(&s, &format!("access_token={}", token(&s, "c")))).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("server_full"), "{body}");
    a.close(None).await.unwrap();
    let tok = token(&s, "c");
    assert!(
        connects_soon(&s, &tok).await,
        "room again once a connection closed"
    );
    let m = metrics(&s).await;
    assert!(metric(&m, "switchboard_signal_errors_total{code=\"server_full\"}") >= 1.0);
    s.shutdown().await;
}

#[tokio::test]
async fn notify_pushes_to_live_sessions_and_rtt_reports_reach_metrics() {
    let s = start(cfg()).await;
    let h = s.state.signaling.handle();
    assert_eq!(
        h.notify("alice", json!({"type":"stream_progress","i":0})),
        0
    );
    let mut a = joined_peer(&s, "alice", "r").await;
    assert_eq!(
        h.notify("alice", json!({"type":"stream_progress","task":"t","i":1})),
        1
    );
    let m = recv(&mut a).await;
    assert_eq!(
        (m["type"].as_str(), m["i"].as_u64()),
        (Some("stream_progress"), Some(1))
    );
    send(
        &mut a,
        json!({"type":"rtt_report","rtt_ms":[0.4, 1.5, 3.0]}),
    )
    .await;
    send(&mut a, json!({"type":"ping","ts":0})).await;
    recv(&mut a).await;
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "switchboard_client_rtt_seconds_count"), 3.0);
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let s = start(cfg()).await;
    let mut a = joined_peer(&s, "alice", "r").await;
    let stop = tokio::spawn(s.shutdown());
    let (code, _) = closed_with(&mut a).await;
    assert_eq!(code, Some(1001));
    stop.await.unwrap();
    let _ = CloseCode::Away;
}
