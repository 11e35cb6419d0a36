//! `switchboard.signal.v1.Signal/Connect`: the same messages as the WebSocket dialect, as
//! protobuf oneofs, on a bidirectional stream. The Bearer ticket travels in the
//! `authorization` metadata (scope `webrtc`, `jti` consumed). Sessions live in the same hub,
//! so gRPC and WebSocket peers share rooms. Liveness comes from HTTP/2 keepalive pings
//! (configured on the server's listener). A stream that fails (reset, connection lost) leaves
//! its session detached for the resume grace, like a lost WebSocket: the client reconnects
//! with `resume-token` and `last-seq` metadata and gets every buffered message after
//! `last-seq`, each response carrying its `seq`. A stream the client half-closes is a clean
//! leave.

use crate::hub::Disconnect;
use crate::protocol::{ClientMessage, ProtocolError, ServerMessage};
use crate::{Caller, Inner, Verdict};
use axum::extract::ConnectInfo;
use axum::Router;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use switchboard_auth::{unix_now, Scope};
use switchboard_proto::signal::signal_request::Msg as Req;
use switchboard_proto::signal::signal_response::Msg as Resp;
use switchboard_proto::signal::signal_server::{Signal, SignalServer};
use switchboard_proto::signal::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

pub(crate) fn routes(inner: Arc<Inner>) -> Router {
    let limit = inner.settings.max_frame_bytes;
    let svc = SignalServer::new(SignalService { inner })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(16 * 1024 * 1024);
    Router::new().route_service("/switchboard.signal.v1.Signal/{*rest}", svc)
}

struct SignalService {
    inner: Arc<Inner>,
}

fn desc(d: Option<SessionDescription>) -> Value {
    match d {
        Some(d) => json!({"type": d.r#type, "sdp": d.sdp}),
        None => Value::Null,
    }
}

fn bad(kind: &str, detail: &str) -> ProtocolError {
    ProtocolError::BadMessage {
        kind: kind.into(),
        detail: detail.into(),
    }
}

/// A gRPC request as a dialect message; the JSON checks (lengths, types) are the same.
fn to_client(req: SignalRequest) -> Result<(ClientMessage, Option<String>), ProtocolError> {
    let v = match req.msg {
        None => return Err(ProtocolError::MissingType),
        Some(Req::Join(j)) => {
            let mut v = json!({"type":"join","room_id": j.room_id});
            if !j.peer_id.is_empty() {
                v["peer_id"] = json!(j.peer_id);
            }
            if let Some(m) = j.mode {
                v["mode"] = json!(m);
            }
            if j.sfu_capable {
                v["sfu_capable"] = json!(true);
            }
            let m = ClientMessage::from_value(v)?;
            let resume = (!j.resume_token.is_empty()).then_some(j.resume_token);
            return Ok((m, resume));
        }
        Some(Req::Offer(o)) => {
            if o.offer.is_none() {
                return Err(bad("offer", "missing offer"));
            }
            json!({"type":"offer","target":o.target,"offer":desc(o.offer)})
        }
        Some(Req::Answer(a)) => {
            if a.answer.is_none() {
                return Err(bad("answer", "missing answer"));
            }
            json!({"type":"answer","target":a.target,"answer":desc(a.answer)})
        }
        Some(Req::IceCandidate(c)) => {
            let cand: Value = serde_json::from_str(&c.candidate_json)
                .map_err(|e| bad("ice_candidate", &format!("candidate_json: {e}")))?;
            json!({"type":"ice_candidate","target":c.target,"candidate":cand})
        }
        Some(Req::Bye(b)) => json!({"type":"bye","target":b.target}),
        Some(Req::Leave(_)) => json!({"type":"leave"}),
        Some(Req::Ping(p)) => json!({"type":"ping","ts":p.ts}),
        Some(Req::Json(text)) => {
            serde_json::from_str(&text).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?
        }
    };
    Ok((ClientMessage::from_value(v)?, None))
}

fn sdp(v: &Value) -> SessionDescription {
    SessionDescription {
        r#type: v["type"].as_str().unwrap_or_default().to_string(),
        sdp: v["sdp"].as_str().unwrap_or_default().to_string(),
    }
}

/// A server message as a gRPC response.
pub fn to_response(m: &ServerMessage, seq: Option<u64>) -> SignalResponse {
    // gRPC has no field for a relayed message's id: the message itself goes.
    if let ServerMessage::Relayed { msg, .. } = m {
        return to_response(msg, seq);
    }
    let msg = match m {
        ServerMessage::RoomPeers { peers } => Resp::RoomPeers(RoomPeers {
            peers: peers.clone(),
        }),
        ServerMessage::PeerJoined { peer_id } => Resp::PeerJoined(PeerJoined {
            peer_id: peer_id.clone(),
        }),
        ServerMessage::PeerLeft { peer_id, reason } => Resp::PeerLeft(PeerLeft {
            peer_id: peer_id.clone(),
            reason: reason.unwrap_or_default().into(),
        }),
        ServerMessage::Offer { offer, from } => Resp::Offer(OfferFrom {
            from: from.clone(),
            offer: Some(sdp(&offer.to_value())),
        }),
        ServerMessage::Answer { answer, from } => Resp::Answer(AnswerFrom {
            from: from.clone(),
            answer: Some(sdp(&answer.to_value())),
        }),
        ServerMessage::IceCandidate { candidate, from } => Resp::IceCandidate(IceCandidateFrom {
            from: from.clone(),
            candidate_json: candidate.json().to_string(),
        }),
        ServerMessage::Bye { from } => Resp::Bye(ByeFrom { from: from.clone() }),
        ServerMessage::Pong { ts } => Resp::Pong(Pong {
            ts: ts.as_i64().unwrap_or(0),
        }),
        ServerMessage::Error { code, message } => Resp::Error(Error {
            code: code.clone(),
            message: message.clone(),
        }),
        ServerMessage::Joined {
            peer_id,
            room_id,
            session_id,
            resume_token,
            ice_servers,
            mode,
            resumed,
            resume_grace,
            received,
            nodes,
            ..
        } => Resp::Joined(Joined {
            nodes: nodes
                .iter()
                .map(|n| Node {
                    id: n.id.clone(),
                    url: n.url.clone(),
                })
                .collect(),
            peer_id: peer_id.clone(),
            room_id: room_id.clone(),
            session_id: session_id.clone(),
            resume_token: resume_token.clone(),
            ice_servers_json: ice_servers.to_string(),
            mode: mode.clone(),
            resumed: *resumed,
            resume_grace: *resume_grace,
            received: *received,
        }),
        ServerMessage::Raw(v) => Resp::Json(v.to_string()),
        m @ ServerMessage::ModeChanged { .. } => Resp::Json(m.to_json(None)),
        ServerMessage::Relayed { msg, .. } => return to_response(msg, seq),
    };
    SignalResponse {
        msg: Some(msg),
        seq: seq.unwrap_or(0),
    }
}

type RespStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SignalResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Signal for SignalService {
    type ConnectStream = RespStream;

    async fn connect(
        &self,
        request: Request<Streaming<SignalRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let inner = self.inner.clone();
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .or_else(|| request.remote_addr().map(|a| a.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let meta = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // A resume is authorised by its resume token (the session's ticket was single-use).
        let resume = match meta("resume-token") {
            Some(t) if t.is_empty() || t.len() > 128 => {
                inner.metrics.error("unknown_resume_token");
                return Err(Status::unauthenticated(
                    "unknown_resume_token: bad resume token",
                ));
            }
            Some(t) => {
                let last_seq = match meta("last-seq").map(|s| s.parse::<u64>()) {
                    None => 0,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => {
                        return Err(Status::invalid_argument("last-seq must be an integer"))
                    }
                };
                Some((t, last_seq))
            }
            None => None,
        };
        let caller = if resume.is_some() {
            Caller {
                identity: None,
                room: None,
                region: None,
                host: None,
            }
        } else {
            let token = meta("authorization")
                .as_deref()
                .and_then(switchboard_auth::presented::bearer)
                .map(str::to_string)
                .unwrap_or_default();
            match inner
                .gate
                .open_session(&token, Scope::Webrtc, unix_now())
                .await
            {
                Ok(c) => Caller {
                    identity: Some(c.sub),
                    room: c.room,
                    region: c.region,
                    host: None,
                },
                Err(e) => {
                    inner.metrics.error("unauthorized");
                    let msg = format!("{}: {e}", e.reason());
                    return Err(if e.http_status() == 403 {
                        Status::permission_denied(msg)
                    } else {
                        Status::unauthenticated(msg)
                    });
                }
            }
        };
        let (conn, mut rx) = inner
            .open(ip, "grpc")
            .map_err(|code| Status::resource_exhausted(crate::open_refusal_message(code)))?;
        let mut incoming = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<SignalResponse, Status>>(16);
        // Writer: the hub's bounded queue → the response stream.
        let kill = conn.kill.clone();
        let close = conn.close.clone();
        let wtx = out_tx.clone();
        let writer = tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    biased;
                    _ = kill.cancelled() => break,
                    m = rx.recv() => m,
                };
                let Some(crate::Outbound { msg, seq, .. }) = m else {
                    break;
                };
                tokio::select! {
                    r = wtx.send(Ok(to_response(&msg, seq))) => if r.is_err() { return },
                    _ = kill.cancelled() => break,
                }
            }
            while let Ok(crate::Outbound { msg, seq, .. }) = rx.try_recv() {
                if wtx.try_send(Ok(to_response(&msg, seq))).is_err() {
                    break;
                }
            }
            let reason = *close.lock();
            if let Some((code, why)) = reason {
                if code != 0 {
                    let _ = wtx
                        .send(Err(Status::aborted(format!("{code}: {why}"))))
                        .await;
                }
            }
        });
        tokio::spawn(async move {
            let mut st = inner.new_state(caller);
            if let Some((tok, last_seq)) = resume {
                if !inner.resume(&conn, &mut st, &tok, last_seq).await {
                    *conn.close.lock() =
                        Some((crate::hub::close::POLICY, "resume failed; join again"));
                    conn.kill.cancel();
                }
            }
            let how = loop {
                let item = tokio::select! {
                    _ = conn.kill.cancelled() => {
                        // Moved off a draining node: the session waits for its resume.
                        let moved = matches!(*conn.close.lock(), Some((_, crate::DRAINING)));
                        break if moved { Disconnect::Lost } else { Disconnect::Fatal };
                    }
                    i = incoming.next() => i,
                };
                let req = match item {
                    None => break Disconnect::Clean,
                    Some(Err(_)) => break Disconnect::Lost,
                    Some(Ok(r)) => r,
                };
                let verdict = match to_client(req) {
                    Ok((m, None)) => inner.handle(&conn, &mut st, m).await,
                    Ok((_, Some(_))) => {
                        inner.send_error(
                            conn.id,
                            "bad_message",
                            "resume with `resume-token` and `last-seq` metadata on Connect".into(),
                        );
                        Verdict::Continue
                    }
                    Err(e) => {
                        inner.send_error(conn.id, e.code(), e.to_string());
                        Verdict::Continue
                    }
                };
                if let Verdict::Close(code, reason) = verdict {
                    *conn.close.lock() = Some((code, reason));
                    break Disconnect::Fatal;
                }
                if conn.backed_up() {
                    tokio::task::yield_now().await;
                }
            };
            conn.kill.cancel();
            let _ = writer.await;
            drop(out_tx);
            inner.closed(&conn, how);
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(out_rx)) as RespStream
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NodeRef;

    #[test]
    fn joined_names_the_live_nodes_with_their_ids_and_urls() {
        let m = ServerMessage::Joined {
            peer_id: "p".into(),
            room_id: "r".into(),
            session_id: "s".into(),
            resume_token: "t".into(),
            ice_servers: json!([]),
            ice_ttl: 0,
            mode: "mesh".into(),
            resumed: false,
            resume_grace: 15,
            received: 0,
            nodes: vec![NodeRef {
                id: "a".into(),
                url: "http://a:7880".into(),
            }],
        };
        let Some(Resp::Joined(j)) = to_response(&m, None).msg else {
            panic!("not joined");
        };
        assert_eq!(
            j.nodes,
            [Node {
                id: "a".into(),
                url: "http://a:7880".into()
            }]
        );
        let ws: Value = serde_json::from_str(&m.to_json(None)).unwrap();
        assert_eq!(ws["nodes"], json!([{"id": "a", "url": "http://a:7880"}]));
    }

    #[test]
    fn a_message_relayed_by_another_node_reaches_grpc_clients_typed() {
        let m = ServerMessage::Relayed {
            relay_id: "n1.1".into(),
            msg: Box::new(ServerMessage::Bye { from: "bob".into() }),
        };
        let r = to_response(&m, Some(4));
        assert_eq!(r.seq, 4);
        assert!(matches!(r.msg, Some(Resp::Bye(ByeFrom { from })) if from == "bob"));
    }
}
