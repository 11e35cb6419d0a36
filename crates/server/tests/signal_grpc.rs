//! Signaling over gRPC (`switchboard.signal.v1.Signal/Connect`) sharing rooms with WebSocket
//! peers, on loopback, with a tonic client over h2c.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
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

async fn grpc(
    s: &RunningServer,
    tok: &str,
) -> Result<
    (
        mpsc::Sender<SignalRequest>,
        tonic::Streaming<SignalResponse>,
    ),
    tonic::Status,
> {
    connect_with(s, &[("authorization", format!("Bearer {tok}"))]).await
}

/// Opens `Signal/Connect` with the given metadata.
async fn connect_with(
    s: &RunningServer,
    metadata: &[(&'static str, String)],
) -> Result<
    (
        mpsc::Sender<SignalRequest>,
        tonic::Streaming<SignalResponse>,
    ),
    tonic::Status,
> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", s.http_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SignalClient::new(ch);
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m: Message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    }
}

fn req(m: Req) -> SignalRequest {
    SignalRequest { msg: Some(m) }
}

#[tokio::test]
async fn grpc_and_websocket_peers_exchange_offers_in_one_room() {
    let s = start(test_config()).await;
    let (gtx, mut grx) = grpc(&s, &token(&s, "gina")).await.unwrap();
    gtx.send(req(Req::Join(Join {
        room_id: "mixed".into(),
        ..Default::default()
    })))
    .await
    .unwrap();
    assert!(matches!(next(&mut grx).await, Resp::RoomPeers(p) if p.peers.is_empty()));
    match next(&mut grx).await {
        Resp::Joined(j) => {
            assert_eq!(j.peer_id, "gina");
            assert_eq!(j.mode, "mesh");
        }
        other => panic!("{other:?}"),
    }

    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/signal?access_token={}",
        s.http_addr,
        token(&s, "wes")
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type":"join","room_id":"mixed"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv(&mut ws).await["peers"], json!(["gina"]));
    assert_eq!(recv(&mut ws).await["type"], "joined");
    assert!(matches!(next(&mut grx).await, Resp::PeerJoined(p) if p.peer_id == "wes"));

    // WebSocket → gRPC: offer and candidate.
    ws.send(Message::text(
        json!({"type":"offer","target":"gina","offer":{"type":"offer","sdp":"v=0 ws"}}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type":"ice_candidate","target":"gina","candidate":{"candidate":"c1","sdpMid":"0"}})
            .to_string(),
    ))
    .await
    .unwrap();
    match next(&mut grx).await {
        Resp::Offer(o) => {
            assert_eq!(o.from, "wes");
            let d = o.offer.unwrap();
            assert_eq!((d.r#type.as_str(), d.sdp.as_str()), ("offer", "v=0 ws"));
        }
        other => panic!("{other:?}"),
    }
    match next(&mut grx).await {
        Resp::IceCandidate(c) => {
            let v: Value = serde_json::from_str(&c.candidate_json).unwrap();
            assert_eq!(v, json!({"candidate":"c1","sdpMid":"0"}));
        }
        other => panic!("{other:?}"),
    }
    // gRPC → WebSocket: offer, answer, candidate.
    gtx.send(req(Req::Offer(Offer {
        target: "wes".into(),
        offer: Some(SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0 grpc".into(),
        }),
    })))
    .await
    .unwrap();
    gtx.send(req(Req::Answer(Answer {
        target: "wes".into(),
        answer: Some(SessionDescription {
            r#type: "answer".into(),
            sdp: "v=0 ans".into(),
        }),
    })))
    .await
    .unwrap();
    gtx.send(req(Req::IceCandidate(IceCandidate {
        target: "wes".into(),
        candidate_json: r#"{"candidate":"c2","sdpMLineIndex":0}"#.into(),
    })))
    .await
    .unwrap();
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
    gtx.send(req(Req::IceCandidate(IceCandidate {
        target: "wes".into(),
        candidate_json: "{nope".into(),
    })))
    .await
    .unwrap();
    assert!(matches!(next(&mut grx).await, Resp::Error(e) if e.code == "bad_message"));
    gtx.send(req(Req::Json(r#"{"type":"warp"}"#.into())))
        .await
        .unwrap();
    assert!(matches!(next(&mut grx).await, Resp::Error(e) if e.code == "unknown_type"));
    gtx.send(req(Req::Ping(Ping { ts: 9 }))).await.unwrap();
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
) -> Result<
    (
        mpsc::Sender<SignalRequest>,
        tonic::Streaming<SignalResponse>,
    ),
    tonic::Status,
> {
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
    gtx.send(req(Req::Join(Join {
        room_id: "lossy".into(),
        ..Default::default()
    })))
    .await
    .unwrap();
    assert!(matches!(next(&mut grx).await, Resp::RoomPeers(_)));
    let resume_token = match next(&mut grx).await {
        Resp::Joined(j) => {
            assert!(!j.resumed);
            assert!(j.resume_grace > 0);
            j.resume_token
        }
        other => panic!("{other:?}"),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/signal?access_token={}",
        s.http_addr,
        token(&s, "wes")
    ))
    .await
    .unwrap();
    ws.send(Message::text(r#"{"type":"join","room_id":"lossy"}"#))
        .await
        .unwrap();
    recv(&mut ws).await;
    recv(&mut ws).await;
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
        ws.send(Message::text(
            json!({"type":"offer","target":"gina","offer":{"type":"offer","sdp":format!("v=0 #{i}")}})
                .to_string(),
        ))
        .await
        .unwrap();
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
