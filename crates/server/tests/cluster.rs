//! Several Switchboard nodes (the real binary, as processes) on one real `redis-server`: rooms
//! span nodes (join, relay in order, leave), tickets are single-use across nodes, room sizes
//! hold cluster-wide, and a node killed with SIGKILL is survived: its clients resume on
//! another node with every message sent to them meanwhile, or their peers hear
//! `peer_left{reason:"node_lost"}`.

mod common;
#[path = "../../cluster/tests/support/mod.rs"]
mod redis_support;

use common::child::ServerProcess;
use common::ws::{next_json, send_json, signal_url, Ws};
use futures::StreamExt;
use redis_support::RedisServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A node of the cluster on `redis`, heartbeat 200 ms, gone from the registry 600 ms after its
/// last, resume grace `grace`.
fn node(redis: &RedisServer, id: &str, extra: &str) -> ServerProcess {
    ServerProcess::start(&format!(
        r#"[cluster]
redis_url = "{}"
node_id = "{id}"
heartbeat = "200ms"
node_ttl = "600ms"
{extra}"#,
        redis.url()
    ))
}

async fn connect(n: &ServerProcess, ticket: &str) -> Ws {
    tokio_tungstenite::connect_async(signal_url(n.http, ticket))
        .await
        .expect("websocket connects")
        .0
}

async fn recv(ws: &mut Ws) -> Value {
    next_json(ws, Duration::from_secs(5)).await
}

/// Reads until a message of `kind` arrives (others are skipped); panics after 5 s.
async fn until(ws: &mut Ws, kind: &str) -> Value {
    let t = Instant::now();
    loop {
        let left = Duration::from_secs(5).saturating_sub(t.elapsed());
        let m = next_json(ws, left.max(Duration::from_millis(1))).await;
        if m["type"] == kind {
            return m;
        }
    }
}

/// Like [`until`], skipping messages whose `relay_id` is in `seen` (sent again after a failover or
/// a drain, as the SDK drops them); records the `relay_id` of what it returns.
async fn until_new(ws: &mut Ws, kind: &str, seen: &mut std::collections::HashSet<String>) -> Value {
    loop {
        let m = until(ws, kind).await;
        match m["relay_id"].as_str() {
            Some(mid) if !seen.insert(mid.to_string()) => continue,
            _ => return m,
        }
    }
}

/// Joins `room` on `n` as `id`; returns the socket and its `room_peers`, `joined`.
async fn join(n: &ServerProcess, id: &str, room: &str) -> (Ws, Value, Value) {
    let mut ws = connect(n, &n.ticket(id)).await;
    send_json(&mut ws, json!({"type":"join","room_id":room})).await;
    let peers = recv(&mut ws).await;
    assert_eq!(peers["type"], "room_peers", "{peers}");
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, peers, joined)
}

fn offer(to: &str, n: usize) -> Value {
    json!({"type":"offer","target":to,"offer":{"type":"offer","sdp":format!("v=0 {n}")}})
}

/// Waits until every node lists all `n` nodes (they have heartbeated once).
async fn wait_for_nodes(redis: &RedisServer, n: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let t = Instant::now();
    loop {
        let count: usize = redis::cmd("ZCARD")
            .arg("switchboard:nodes")
            .query_async(&mut c)
            .await
            .unwrap();
        if count >= n {
            // One more heartbeat so every watcher has read the full registry.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{count} of {n} nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn peers_on_two_nodes_meet_relay_in_order_and_see_each_other_leave() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a", ""), node(&redis, "b", ""));
    wait_for_nodes(&redis, 2).await;
    // `switchboard nodes` lists both, from either node's configuration.
    let cfg = a.dir.path().join("switchboard.toml");
    let (code, out, err) =
        common::child::run_cli(&["nodes", "--config", cfg.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(ids, ["a", "b"], "{out}");
    let (mut alice, peers, joined) = join(&a, "alice", "r1").await;
    assert_eq!(peers["peers"], json!([]));
    // `joined` names the live nodes, its own first: where the SDK resumes if a dies.
    let nodes = json!([
        {"id": "a", "url": format!("http://{}", a.http)},
        {"id": "b", "url": format!("http://{}", b.http)},
    ]);
    assert_eq!(joined["nodes"], nodes, "{joined}");
    let (mut bob, peers, _) = join(&b, "bob", "r1").await;
    assert_eq!(peers["peers"], json!(["alice"]), "bob on b sees alice on a");
    let note = recv(&mut alice).await;
    assert_eq!(note["type"], "peer_joined");
    assert_eq!(note["peer_id"], "bob");

    // 200 offers from alice to bob, across nodes, arrive in order, from alice.
    for i in 0..200 {
        send_json(&mut alice, offer("bob", i)).await;
    }
    for i in 0..200 {
        let m = recv(&mut bob).await;
        assert_eq!(m["type"], "offer");
        assert_eq!(m["from"], "alice");
        assert_eq!(m["offer"]["sdp"], format!("v=0 {i}"), "in order");
        assert_eq!(m["seq"], i as u64 + 1, "numbered on bob's node");
    }
    // The crossing is counted on both sides.
    let sent = metric(
        &a,
        "switchboard_cluster_messages_sent_total{kind=\"message\"}",
    )
    .await;
    let lag = metric(&b, "switchboard_cluster_pubsub_lag_seconds_count").await;
    assert!(
        sent >= 200.0 && lag >= 200.0,
        "sent {sent}, lag samples {lag}"
    );
    assert_eq!(metric(&a, "switchboard_cluster_nodes").await, 2.0);
    send_json(
        &mut bob,
        json!({"type":"answer","target":"alice","answer":{"type":"answer","sdp":"x"}}),
    )
    .await;
    let m = recv(&mut alice).await;
    assert_eq!(
        (m["type"].clone(), m["from"].clone()),
        (json!("answer"), json!("bob"))
    );
    send_json(&mut bob, json!({"type":"bye","target":"alice"})).await;
    assert_eq!(recv(&mut alice).await["type"], "bye");

    // A third peer on a, then bob leaves from b: both on a hear it.
    let (mut carol, peers, _) = join(&a, "carol", "r1").await;
    let mut seen = peers["peers"].as_array().unwrap().clone();
    seen.sort_by_key(|v| v.to_string());
    assert_eq!(seen, [json!("alice"), json!("bob")]);
    assert_eq!(until(&mut bob, "peer_joined").await["peer_id"], "carol");
    send_json(&mut bob, json!({"type":"leave"})).await;
    for ws in [&mut alice, &mut carol] {
        let m = until(ws, "peer_left").await;
        assert_eq!(m["peer_id"], "bob");
        assert!(m.get("reason").is_none(), "a plain leave: {m}");
    }
}

#[tokio::test]
async fn a_ticket_used_on_one_node_is_refused_on_another_and_room_size_holds_cluster_wide() {
    let redis = RedisServer::start();
    let (a, b) = (
        node(&redis, "a", "[limits]\nsignal_max_room_peers = 2"),
        node(&redis, "b", "[limits]\nsignal_max_room_peers = 2"),
    );
    wait_for_nodes(&redis, 2).await;
    let ticket = a.ticket("alice");
    let _alice = connect(&a, &ticket).await;
    let replay = tokio_tungstenite::connect_async(signal_url(b.http, &ticket)).await;
    match replay {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("the replay on b must be refused: {:?}", other.map(|_| ())),
    }

    let (_x, _, _) = join(&a, "x", "small").await;
    let (_y, _, _) = join(&b, "y", "small").await;
    let mut z = connect(&a, &a.ticket("z")).await;
    send_json(&mut z, json!({"type":"join","room_id":"small"})).await;
    let m = recv(&mut z).await;
    assert_eq!(
        (m["type"].clone(), m["code"].clone()),
        (json!("error"), json!("room_full"))
    );
}

/// A field of `identity`'s session record in Redis, once it is there (within 2 s).
async fn session_field(redis: &RedisServer, identity: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let t = Instant::now();
    loop {
        let v: Option<String> = redis::cmd("HGET")
            .arg(format!("switchboard:sess:{identity}"))
            .arg(field)
            .query_async(&mut c)
            .await
            .unwrap();
        if v.is_some() || t.elapsed() > Duration::from_secs(2) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_killed_nodes_client_resumes_on_another_node_and_gets_what_was_sent_meanwhile() {
    let redis = RedisServer::start();
    let grace = "[limits]\nsignal_resume_grace = \"5s\"";
    let (mut a, b, c) = (
        node(&redis, "a", grace),
        node(&redis, "b", grace),
        node(&redis, "c", grace),
    );
    wait_for_nodes(&redis, 3).await;
    let (mut alice, _, joined) = join(&a, "alice", "call").await;
    let (mut bob, _, _) = join(&b, "bob", "call").await;
    until(&mut alice, "peer_joined").await;
    // The session record keeps whether the client can use an SFU room: a resume on another
    // node carries it on (for `auto` rooms).
    let mut carol = connect(&b, &b.ticket("carol")).await;
    send_json(
        &mut carol,
        json!({"type":"join","room_id":"other","sfu_capable":true}),
    )
    .await;
    until(&mut carol, "joined").await;
    assert_eq!(
        session_field(&redis, "alice", "cap").await.as_deref(),
        Some("0")
    );
    assert_eq!(
        session_field(&redis, "carol", "cap").await.as_deref(),
        Some("1")
    );
    send_json(&mut bob, offer("alice", 0)).await;
    let first = until(&mut alice, "offer").await;
    let last_seq = first["seq"].as_u64().unwrap();
    let token = joined["resume_token"].as_str().unwrap().to_string();
    // Let the relay count reach the session record (flushed every second).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let killed = Instant::now();
    a.child.kill().unwrap();
    drop(alice);
    // bob keeps sending: at once, while a is dead but not yet known dead (these reach a and
    // die with it), and a second later, once it is known dead (these are held on b).
    for i in 1..=3 {
        send_json(&mut bob, offer("alice", i)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 4..=5 {
        send_json(&mut bob, offer("alice", i)).await;
    }
    // alice's SDK reconnects to another node and resumes there.
    let url = format!(
        "ws://{}/v1/signal?resume_token={token}&last_seq={last_seq}",
        c.http
    );
    let mut alice = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let joined = recv(&mut alice).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["resumed"], true);
    let back = killed.elapsed();
    // Everything bob sent arrives, in order; what may have reached a before it died comes
    // again with the same `relay_id` (the SDK drops those), so count distinct ids.
    let mut got = Vec::new();
    let mut mids = std::collections::HashSet::new();
    while got.len() < 5 {
        let m = until(&mut alice, "offer").await;
        assert!(m["seq"].as_u64().unwrap() > last_seq);
        let mid = m["relay_id"]
            .as_str()
            .expect("forwarded messages carry a relay_id")
            .to_string();
        if mids.insert(mid) {
            got.push(m["offer"]["sdp"].as_str().unwrap().to_string());
        }
    }
    let sent: Vec<String> = (1..=5).map(|i| format!("v=0 {i}")).collect();
    assert_eq!(got, sent, "in order");
    // bob saw no leave, and reaches alice on c from now on.
    send_json(&mut bob, offer("alice", 6)).await;
    assert_eq!(until(&mut alice, "offer").await["offer"]["sdp"], "v=0 6");
    send_json(
        &mut alice,
        json!({"type":"answer","target":"bob","answer":{"sdp":"a"}}),
    )
    .await;
    let m = until(&mut bob, "answer").await;
    assert_eq!(m["from"], "alice");
    println!("alice back in her room {back:?} after her node was killed");
    drop(b);
    drop(c);
}

#[tokio::test]
async fn a_killed_nodes_client_not_back_within_the_grace_leaves_with_node_lost() {
    let redis = RedisServer::start();
    let grace = "[limits]\nsignal_resume_grace = \"2s\"";
    let (mut a, b) = (node(&redis, "a", grace), node(&redis, "b", grace));
    wait_for_nodes(&redis, 2).await;
    let (_alice, _, _) = join(&a, "alice", "call").await;
    let (mut bob, _, _) = join(&b, "bob", "call").await;
    let killed = Instant::now();
    a.child.kill().unwrap();
    let left = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match bob.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "peer_left" {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("bob's connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("peer_left within 8 s");
    assert_eq!(left["peer_id"], "alice");
    assert_eq!(left["reason"], "node_lost");
    let after = killed.elapsed();
    // TTL (0.6 s) + grace (2 s), and not before the grace.
    assert!(after >= Duration::from_secs(2), "{after:?}");
    // Once the dead node's memberships are removed, a newcomer on b does not see alice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_dave, peers, _) = join(&b, "dave", "call").await;
    assert_eq!(peers["peers"], json!(["bob"]), "{peers}");
}

/// A ticket with the `admin` scope for the child servers' key.
fn admin_ticket() -> String {
    let auth = switchboard_auth::AuthConfig {
        keys: vec![switchboard_auth::KeyConfig {
            kid: "k1".into(),
            secret: Some(common::child::CHILD_SECRET.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let ring = switchboard_auth::KeyRing::from_config(&auth).unwrap();
    let req = switchboard_auth::MintRequest::new("ops", [switchboard_auth::Scope::Admin]);
    ring.mint(&req, switchboard_auth::unix_now()).unwrap().0
}

/// A series' value on `n`'s `/metrics` (0 when absent).
async fn metric(n: &ServerProcess, series: &str) -> f64 {
    let (_, text) = get(n, "/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn get(n: &ServerProcess, path: &str, ticket: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{}{path}", n.http));
    if let Some(t) = ticket {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn nodes_are_listed_and_the_cluster_re_forms_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a", ""), node(&redis, "b", ""));
    wait_for_nodes(&redis, 2).await;
    let admin = admin_ticket();
    assert_eq!(get(&a, "/v1/nodes", None).await.0, 401);
    let (status, body) = get(&b, "/v1/nodes", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["self"], "b");
    let ids: Vec<_> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids, [json!("a"), json!("b")]);
    assert_eq!(get(&a, "/readyz", None).await.0, 200);

    // Two peers in a room, one per node; then Redis dies.
    let (mut alice, _, _) = join(&a, "alice", "r").await;
    let (_bob, _, _) = join(&b, "bob", "r").await;
    until(&mut alice, "peer_joined").await;
    redis.kill();
    let t = Instant::now();
    loop {
        let (status, body) = get(&a, "/readyz", None).await;
        if status == 503 {
            assert!(body.contains("degraded"), "{body}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "readyz still {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A session on a goes on meanwhile (pings are answered locally).
    send_json(&mut alice, json!({"type":"ping","ts":1})).await;
    assert_eq!(until(&mut alice, "pong").await["ts"], 1);
    // A join that needs the cluster is refused clearly.
    let mut carol = connect(&a, &a.ticket("carol")).await;
    send_json(&mut carol, json!({"type":"join","room_id":"r2"})).await;
    let m = recv(&mut carol).await;
    assert_eq!(m["code"], "cluster_unavailable", "{m}");

    // Redis comes back empty: the nodes re-form the cluster without a restart.
    redis.restart();
    wait_for_nodes(&redis, 2).await;
    let t = Instant::now();
    while get(&a, "/readyz", None).await.0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "readyz not back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rooms in progress are known again: a newcomer to alice and bob's room sees both, and
    // they see it.
    // (Each node re-registers its sessions once its subscription is back: on a loaded machine
    // that may take a moment after the registry is whole again.)
    let t = Instant::now();
    let mut frank = loop {
        let (mut frank, peers, _) = join(&b, "frank", "r").await;
        let mut seen = peers["peers"].as_array().unwrap().clone();
        seen.sort_by_key(|v| v.to_string());
        if seen == [json!("alice"), json!("bob")] {
            break frank;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{peers}");
        send_json(&mut frank, json!({"type":"leave"})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // alice heard frank arrive, and nothing about bob: the restart did not make him flap.
    loop {
        let m = recv(&mut alice).await;
        assert_ne!(m["peer_id"], "bob", "{m}");
        if m["type"] == "peer_joined" {
            assert_eq!(m["peer_id"], "frank");
            break;
        }
    }
    send_json(&mut frank, offer("alice", 9)).await;
    assert_eq!(until(&mut alice, "offer").await["from"], "frank");
    let (mut dave, _, _) = join(&a, "dave", "after").await;
    let (mut erin, peers, _) = join(&b, "erin", "after").await;
    assert_eq!(peers["peers"], json!(["dave"]));
    until(&mut dave, "peer_joined").await;
    send_json(&mut dave, offer("erin", 1)).await;
    assert_eq!(until(&mut erin, "offer").await["from"], "dave");
}

#[tokio::test]
async fn a_draining_node_moves_its_clients_to_another_node_and_exits_once_they_left() {
    let redis = RedisServer::start();
    let extra = "drain_timeout = \"20s\"";
    let (mut a, b) = (node(&redis, "a", extra), node(&redis, "b", extra));
    wait_for_nodes(&redis, 2).await;
    let (mut alice, _, joined) = join(&a, "alice", "call").await;
    let (mut bob, _, _) = join(&b, "bob", "call").await;
    until(&mut alice, "peer_joined").await;
    send_json(&mut bob, offer("alice", 0)).await;
    let mut seen = std::collections::HashSet::new();
    let last_seq = until_new(&mut alice, "offer", &mut seen).await["seq"]
        .as_u64()
        .unwrap();
    let token = joined["resume_token"].as_str().unwrap().to_string();

    // `switchboard drain` asks a to stop.
    let cfg = a.dir.path().join("switchboard.toml");
    let addr = a.http.to_string();
    let (code, out, err) = common::child::run_cli(
        &["drain", "--config", cfg.to_str().unwrap(), "--addr", &addr],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"clients_moved\":1"), "{out}");
    let told = until(&mut alice, "reconnect").await;
    assert_eq!(told["url"], format!("http://{}", b.http));
    assert_eq!(told["reason"], "drain");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match alice.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c))) => {
                    return c.map(|c| u16::from(c.code));
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1001));
    assert_eq!(
        get(&a, "/readyz", None).await.0,
        503,
        "a is not ready while draining"
    );
    // bob sends while alice moves; a still holds her session.
    send_json(&mut bob, offer("alice", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = format!(
        "ws://{}/v1/signal?resume_token={token}&last_seq={last_seq}",
        b.http
    );
    let mut alice = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let joined = recv(&mut alice).await;
    assert_eq!(
        (joined["type"].clone(), joined["resumed"].clone()),
        (json!("joined"), json!(true)),
        "{joined}"
    );
    assert_eq!(
        until_new(&mut alice, "offer", &mut seen).await["offer"]["sdp"],
        "v=0 1",
        "what came meanwhile follows her"
    );
    send_json(&mut bob, offer("alice", 2)).await;
    assert_eq!(
        until_new(&mut alice, "offer", &mut seen).await["offer"]["sdp"],
        "v=0 2"
    );
    // With its last session gone, a exits well before drain_timeout.
    let code = tokio::task::spawn_blocking(move || a.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "a exited after the drain");
}

/// Joins `n` rooms at once, peer `x{i}` on `first` and `y{i}` on `second`; then every peer must
/// know its partner (from `room_peers` or a `peer_joined`) and reach it.
async fn concurrent_pairs(
    first: &ServerProcess,
    second: &ServerProcess,
    n: usize,
) -> Vec<(Ws, Ws)> {
    let joins = (0..n).map(|i| async move {
        let room = format!("pair-{i}");
        let (x, y) = (format!("x{i}"), format!("y{i}"));
        let (a, b) = tokio::join!(join(first, &x, &room), join(second, &y, &room));
        (a, b, x, y)
    });
    let mut pairs = Vec::new();
    for (a, b, x, y) in futures::future::join_all(joins).await {
        let (mut wa, pa, _) = a;
        let (mut wb, pb, _) = b;
        for (ws, peers, other) in [(&mut wa, &pa, &y), (&mut wb, &pb, &x)] {
            if peers["peers"] != json!([other]) {
                let m = until(ws, "peer_joined").await;
                assert_eq!(&m["peer_id"], other, "{peers} then {m}");
            }
        }
        send_json(&mut wa, offer(&y, 1)).await;
        assert_eq!(until(&mut wb, "offer").await["from"], json!(x));
        send_json(&mut wb, offer(&x, 2)).await;
        assert_eq!(until(&mut wa, "offer").await["from"], json!(y));
        pairs.push((wa, wb));
    }
    pairs
}

#[tokio::test]
async fn concurrent_joins_on_two_nodes_all_meet_and_same_node_relays_stay_off_redis() {
    let redis = RedisServer::start();
    // All test clients share one address: lift the per-address join rate.
    let extra = "[limits]\nsignal_joins_per_second_per_ip = 10000";
    let (a, b) = (node(&redis, "a", extra), node(&redis, "b", extra));
    wait_for_nodes(&redis, 2).await;
    let _across = concurrent_pairs(&a, &b, 40).await;
    // Pairs on one node: their relays never go through Redis.
    let before = metric(
        &a,
        "switchboard_cluster_messages_sent_total{kind=\"message\"}",
    )
    .await;
    let _local = concurrent_pairs(&a, &a, 40).await;
    let after = metric(
        &a,
        "switchboard_cluster_messages_sent_total{kind=\"message\"}",
    )
    .await;
    assert_eq!(
        after, before,
        "relays between peers on one node were published"
    );
}
