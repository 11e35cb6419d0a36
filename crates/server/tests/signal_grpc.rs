//! Signaling over gRPC (`switchboard.signal.v1.Signal/Connect`) sharing rooms with WebSocket
//! peers, on loopback, with a tonic client over h2c.

mod common;
#[path = "../../cluster/tests/support/mod.rs"]
mod redis_support;

use common::ws::{connect_ws, next_json, send_json, Ws};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use switchboard::RunningServer;
use switchboard_auth::Scope;
use switchboard_proto::signal::signal_client::SignalClient;
use switchboard_proto::signal::signal_request::Msg as Req;
use switchboard_proto::signal::signal_response::Msg as Resp;
use switchboard_proto::signal::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;

fn token(s: &RunningServer, id: &str) -> String {
    mint(s, id, &[Scope::Webrtc])
}

/// An open `Signal/Connect` call: the request side and the response stream.
type Call = (
    mpsc::Sender<SignalRequest>,
    tonic::Streaming<SignalResponse>,
);

async fn grpc(s: &RunningServer, tok: &str) -> Result<Call, tonic::Status> {
    connect_with(s, &[("authorization", format!("Bearer {tok}"))]).await
}

/// Opens `Signal/Connect` with the given metadata.
async fn connect_with(
    s: &RunningServer,
    metadata: &[(&'static str, String)],
) -> Result<Call, tonic::Status> {
    let mut client = SignalClient::new(channel(s).await);
    let (tx, rx) = mpsc::channel(64);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let resp = client.connect(req).await?;
    Ok((tx, resp.into_inner()))
}

async fn next(st: &mut tonic::Streaming<SignalResponse>) -> Resp {
    tokio::time::timeout(Duration::from_secs(5), st.message())
        .await
        .expect("a response within 5 s")
        .expect("stream ok")
        .expect("stream open")
        .msg
        .expect("oneof set")
}

async fn recv(ws: &mut Ws) -> Value {
    next_json(ws, Duration::from_secs(5)).await
}

/// Sends `m` on the call's request side.
async fn send(tx: &mpsc::Sender<SignalRequest>, m: Req) {
    tx.send(SignalRequest { msg: Some(m) }).await.unwrap();
}

/// Joins `room` over gRPC.
async fn join(tx: &mpsc::Sender<SignalRequest>, room: &str) {
    let join = Join {
        room_id: room.into(),
        ..Default::default()
    };
    send(tx, Req::Join(join)).await;
}

fn description(kind: &str, sdp: &str) -> Option<SessionDescription> {
    Some(SessionDescription {
        r#type: kind.into(),
        sdp: sdp.into(),
    })
}

/// A WebSocket peer `id` in `room`, past its `room_peers` and `joined`.
async fn ws_peer(s: &RunningServer, id: &str, room: &str) -> (Ws, Value, Value) {
    let mut ws = connect_ws(s.http_addr, &token(s, id)).await;
    send_json(&mut ws, json!({"type":"join","room_id":room})).await;
    let peers = recv(&mut ws).await;
    let joined = recv(&mut ws).await;
    (ws, peers, joined)
}

/// WebSocket peer "wes" sends an offer and an ICE candidate to gRPC peer "gina": they arrive
/// typed, in order.
async fn offer_and_candidate_reach_grpc(ws: &mut Ws, grx: &mut tonic::Streaming<SignalResponse>) {
    send_json(
        ws,
        json!({"type":"offer","target":"gina","offer":{"type":"offer","sdp":"v=0 ws"}}),
    )
    .await;
    send_json(
        ws,
        json!({"type":"ice_candidate","target":"gina","candidate":{"candidate":"c1","sdpMid":"0"}}),
    )
    .await;
    match next(grx).await {
        Resp::Offer(o) => {
            assert_eq!(o.from, "wes");
            let d = o.offer.unwrap();
            assert_eq!((d.r#type.as_str(), d.sdp.as_str()), ("offer", "v=0 ws"));
        }
        other => panic!("{other:?}"),
    }
    match next(grx).await {
        Resp::IceCandidate(c) => {
            assert_eq!(c.from, "wes");
            let v: Value = serde_json::from_str(&c.candidate_json).unwrap();
            assert_eq!(v, json!({"candidate":"c1","sdpMid":"0"}));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn grpc_and_websocket_peers_exchange_offers_in_one_room() {
    let s = start(test_config()).await;
    let (gtx, mut grx) = grpc(&s, &token(&s, "gina")).await.unwrap();
    join(&gtx, "mixed").await;
    assert!(matches!(next(&mut grx).await, Resp::RoomPeers(p) if p.peers.is_empty()));
    match next(&mut grx).await {
        Resp::Joined(j) => {
            assert_eq!(j.peer_id, "gina");
            assert_eq!(j.mode, "mesh");
        }
        other => panic!("{other:?}"),
    }

    let (mut ws, peers, joined) = ws_peer(&s, "wes", "mixed").await;
    assert_eq!(peers["peers"], json!(["gina"]));
    assert_eq!(joined["type"], "joined");
    assert!(matches!(next(&mut grx).await, Resp::PeerJoined(p) if p.peer_id == "wes"));

    // WebSocket → gRPC: offer and candidate.
    offer_and_candidate_reach_grpc(&mut ws, &mut grx).await;
    // gRPC → WebSocket: offer, answer, candidate.
    let target = || "wes".to_string();
    let offer = description("offer", "v=0 grpc");
    send(
        &gtx,
        Req::Offer(Offer {
            target: target(),
            offer,
        }),
    )
    .await;
    let answer = description("answer", "v=0 ans");
    send(
        &gtx,
        Req::Answer(Answer {
            target: target(),
            answer,
        }),
    )
    .await;
    let candidate_json = r#"{"candidate":"c2","sdpMLineIndex":0}"#.into();
    let candidate = IceCandidate {
        target: target(),
        candidate_json,
    };
    send(&gtx, Req::IceCandidate(candidate)).await;
    let m = recv(&mut ws).await;
    assert_eq!(m["type"], "offer");
    assert_eq!(m["from"], "gina");
    assert_eq!(m["offer"], json!({"type":"offer","sdp":"v=0 grpc"}));
    assert_eq!(recv(&mut ws).await["answer"]["sdp"], "v=0 ans");
    assert_eq!(
        recv(&mut ws).await["candidate"],
        json!({"candidate":"c2","sdpMLineIndex":0})
    );
    // Bad input over gRPC: an error message, the stream stays.
    let candidate_json = "{nope".into();
    let candidate = IceCandidate {
        target: target(),
        candidate_json,
    };
    send(&gtx, Req::IceCandidate(candidate)).await;
    assert!(matches!(next(&mut grx).await, Resp::Error(e) if e.code == "bad_message"));
    send(&gtx, Req::Json(r#"{"type":"warp"}"#.into())).await;
    assert!(matches!(next(&mut grx).await, Resp::Error(e) if e.code == "unknown_type"));
    send(&gtx, Req::Ping(Ping { ts: 9 })).await;
    assert!(matches!(next(&mut grx).await, Resp::Pong(p) if p.ts == 9));
    // Ending the gRPC stream leaves the room.
    drop(gtx);
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["peer_id"].as_str()),
        (Some("peer_left"), Some("gina"))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_grpc_peer_and_a_websocket_peer_on_two_nodes_exchange_typed_messages() {
    let redis = redis_support::RedisServer::start();
    let node = |id: &str| {
        let mut c = test_config();
        c.cluster.redis_url = Some(redis.url());
        c.cluster.node_id = Some(id.into());
        c.cluster.heartbeat = Duration::from_millis(200);
        c.cluster.node_ttl = Duration::from_millis(600);
        c
    };
    let (a, b) = (start(node("a")).await, start(node("b")).await);
    // Both nodes have read the registry with both in it.
    tokio::time::sleep(Duration::from_millis(900)).await;

    let (gtx, mut grx) = grpc(&b, &token(&b, "gina")).await.unwrap();
    join(&gtx, "span").await;
    assert!(matches!(next(&mut grx).await, Resp::RoomPeers(p) if p.peers.is_empty()));
    match next(&mut grx).await {
        Resp::Joined(j) => {
            let ids: Vec<&str> = j.nodes.iter().map(|n| n.id.as_str()).collect();
            assert_eq!(ids, ["b", "a"], "this node first: {:?}", j.nodes);
            assert!(j.nodes.iter().all(|n| n.url.starts_with("http://")));
        }
        other => panic!("{other:?}"),
    }
    let (mut ws, peers, _) = ws_peer(&a, "wes", "span").await;
    assert_eq!(peers["peers"], json!(["gina"]), "wes on a sees gina on b");
    assert!(matches!(next(&mut grx).await, Resp::PeerJoined(p) if p.peer_id == "wes"));

    // WebSocket on a → gRPC on b: the relayed messages arrive typed, as on one node.
    offer_and_candidate_reach_grpc(&mut ws, &mut grx).await;
    send_json(&mut ws, json!({"type":"bye","target":"gina"})).await;
    assert!(matches!(next(&mut grx).await, Resp::Bye(b) if b.from == "wes"));

    // gRPC on b → WebSocket on a: the answer arrives with the id it was relayed under.
    let answer = description("answer", "v=0 ans");
    let target = "wes".to_string();
    send(&gtx, Req::Answer(Answer { target, answer })).await;
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["from"].as_str()),
        (Some("answer"), Some("gina"))
    );
    assert_eq!(m["answer"], json!({"type":"answer","sdp":"v=0 ans"}));
    assert!(
        m["relay_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("b~")),
        "{m}"
    );
    assert!(m["seq"].as_u64().is_some(), "{m}");
    // (No shutdown: in a cluster it would first wait for wes to move to another node.)
}

#[tokio::test]
async fn grpc_refuses_bad_and_replayed_tickets() {
    let s = start(test_config()).await;
    let e = grpc(&s, "garbage").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let t = token(&s, "gina");
    let (_tx, _rx) = grpc(&s, &t).await.unwrap();
    let e = grpc(&s, &t).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("replayed"), "{}", e.message());
    s.shutdown().await;
}

/// Connect with resume metadata instead of a ticket.
async fn grpc_resume(
    s: &RunningServer,
    resume_token: &str,
    last_seq: u64,
) -> Result<Call, tonic::Status> {
    connect_with(
        s,
        &[
            ("resume-token", resume_token.to_string()),
            ("last-seq", last_seq.to_string()),
        ],
    )
    .await
}

#[tokio::test]
async fn grpc_sessions_resume_after_a_lost_stream_without_losing_messages() {
    let s = start(test_config()).await;
    let (gtx, mut grx) = grpc(&s, &token(&s, "gina")).await.unwrap();
    join(&gtx, "lossy").await;
    assert!(matches!(next(&mut grx).await, Resp::RoomPeers(_)));
    let resume_token = match next(&mut grx).await {
        Resp::Joined(j) => {
            assert!(!j.resumed);
            assert!(j.resume_grace > 0);
            j.resume_token
        }
        other => panic!("{other:?}"),
    };
    let (mut ws, _, _) = ws_peer(&s, "wes", "lossy").await;
    // Messages kept for resume carry their seq.
    let m = tokio::time::timeout(Duration::from_secs(5), grx.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(m.msg, Some(Resp::PeerJoined(_))));
    let last_seq = m.seq;
    assert!(last_seq > 0, "peer_joined is resumable, so it has a seq");

    // The stream is lost (reset by the client, not half-closed): the session waits for a
    // resume. `gtx` stays alive so the request side never sends END_STREAM.
    drop(grx);
    for i in 0..5 {
        send_json(
            &mut ws,
            json!({"type":"offer","target":"gina","offer":{"type":"offer","sdp":format!("v=0 #{i}")}}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_gtx2, mut grx2) = grpc_resume(&s, &resume_token, last_seq).await.unwrap();
    match next(&mut grx2).await {
        Resp::Joined(j) => {
            assert!(j.resumed);
            assert_eq!(j.peer_id, "gina");
        }
        other => panic!("{other:?}"),
    }
    let mut seqs = Vec::new();
    for i in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), grx2.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match m.msg {
            Some(Resp::Offer(o)) => {
                assert_eq!(o.from, "wes");
                assert_eq!(
                    o.offer.unwrap().sdp,
                    format!("v=0 #{i}"),
                    "in order, none lost"
                );
            }
            other => panic!("{other:?}"),
        }
        seqs.push(m.seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == last_seq + 1,
        "contiguous seqs after last_seq {last_seq}: {seqs:?}"
    );
    // Wes never saw gina leave.
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
        assert!(
            !matches!(m, Message::Text(_)),
            "no peer_left/peer_joined flap: {m:?}"
        );
    }

    // A bad resume token is refused.
    let e = grpc_resume(&s, "nope", 0).await;
    match e {
        Err(st) => assert_eq!(st.code(), tonic::Code::Unauthenticated),
        Ok((_t, mut r)) => {
            let m = tokio::time::timeout(Duration::from_secs(5), r.message())
                .await
                .unwrap();
            match m {
                Ok(Some(SignalResponse {
                    msg: Some(Resp::Error(e)),
                    ..
                })) => assert_eq!(e.code, "unknown_resume_token"),
                other => panic!("bad resume accepted: {other:?}"),
            }
        }
    }
    drop(gtx);
    s.shutdown().await;
}
