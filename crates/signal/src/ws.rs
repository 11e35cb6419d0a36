//! `GET /v1/signal`: the WebSocket transport. Authentication happens before the upgrade
//! (401/403 with a JSON reason, so nothing is allocated for a bad ticket); then one reader
//! loop parses text frames into the hub and one writer task drains the bounded send queue,
//! pings every `ping_interval`, and declares the connection dead after `idle_timeout` of silence.
//!
//! Credentials: `?access_token=` or `Authorization: Bearer` (scope `webrtc`, `jti` consumed),
//! or, to resume a lost session, `?resume_token=T&last_seq=N` (the resume token is the
//! credential: it was handed out only over an authenticated session, rotates on every resume,
//! and dies with the session).

use crate::hub::{close, Disconnect};
use crate::protocol::{ClientMessage, ProtocolError};
use crate::{Caller, Conn, Inner, Outbound, Verdict};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::{unix_now, Scope};
use tokio::sync::mpsc;

pub(crate) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/signal", get(upgrade))
        .with_state(inner)
}

/// What a signaling URL carries: a ticket, or a resume token and the last `seq` received.
#[derive(Default)]
struct SignalQuery {
    resume_token: Option<String>,
    last_seq: Option<u64>,
}

impl SignalQuery {
    fn parse(query: &str) -> SignalQuery {
        use switchboard_auth::presented::query_value;
        SignalQuery {
            resume_token: query_value(query, "resume_token"),
            last_seq: query_value(query, "last_seq").and_then(|v| v.parse().ok()),
        }
    }
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": code, "message": message}).to_string(),
    )
        .into_response()
}

async fn upgrade(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let q = parts
        .uri
        .query()
        .map(SignalQuery::parse)
        .unwrap_or_default();
    // Verify first, consume the jti last: a refused upgrade (not a WebSocket request, too many
    // connections) must not burn the caller's single-use ticket.
    let now = unix_now();
    let claims = if let Some(tok) = q.resume_token.as_deref() {
        if tok.is_empty() || tok.len() > 128 {
            inner.metrics.error("unknown_resume_token");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unknown_resume_token",
                "bad resume token",
            );
        }
        None
    } else {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = switchboard_auth::presented::ticket(authorization, parts.uri.query())
            .unwrap_or_default();
        match inner.gate.check(&token, Scope::Webrtc, now) {
            Ok(c) => Some(c),
            Err(e) => {
                inner.metrics.error("unauthorized");
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
                return refuse(status, e.reason(), &e.to_string());
            }
        }
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let (conn, rx) = match inner.open(ip, "websocket") {
        Ok(x) => x,
        Err(code) => {
            let status = if code == "server_full" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            return refuse(status, code, crate::open_refusal_message(code));
        }
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.len() <= 255)
        .map(str::to_string);
    let caller = match claims {
        None => Caller {
            identity: None,
            room: None,
            region: None,
            host,
        },
        Some(c) => {
            if let Err(e) = inner.gate.consume(&c, now).await {
                inner.metrics.error("unauthorized");
                inner.closed(&conn, Disconnect::Fatal);
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
                return refuse(status, e.reason(), &e.to_string());
            }
            Caller {
                identity: Some(c.sub),
                room: c.room,
                region: c.region,
                host,
            }
        }
    };
    let limit = inner.settings.max_frame_bytes;
    let resume = q.resume_token.map(|t| (t, q.last_seq.unwrap_or(0)));
    // Small buffers: tungstenite's default 128 KiB read buffer per connection would dominate
    // the memory of an idle joined connection (target: <= 16 KiB); each send flushes anyway.
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limit * 4)
        .on_failed_upgrade({
            let inner = inner.clone();
            let conn = Conn {
                id: conn.id,
                kill: conn.kill.clone(),
                close: conn.close.clone(),
                ip: conn.ip,
                transport: conn.transport,
                own: conn.own.clone(),
            };
            move |_| inner.closed(&conn, Disconnect::Fatal)
        })
        .on_upgrade(move |socket| run(inner, conn, rx, caller, resume, socket))
}

async fn run(
    inner: Arc<Inner>,
    conn: Conn,
    rx: mpsc::Receiver<Outbound>,
    caller: Caller,
    resume: Option<(String, u64)>,
    socket: WebSocket,
) {
    let (sink, mut stream) = socket.split();
    let start = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(writer(
        sink,
        rx,
        conn.kill.clone(),
        conn.close.clone(),
        inner.settings.ping_interval,
        inner.settings.idle_timeout,
        last_seen.clone(),
        start,
        inner.shutdown.clone(),
    ));
    let mut st = inner.new_state(caller);
    if let Some((tok, last_seq)) = resume {
        if !inner.resume(&conn, &mut st, &tok, last_seq).await {
            *conn.close.lock() = Some((close::POLICY, "resume failed; join again"));
            conn.kill.cancel();
        }
    }
    let how = loop {
        let frame = tokio::select! {
            _ = conn.kill.cancelled() => {
                let reason = *conn.close.lock();
                break match reason {
                    // Dead, or moved off a draining node: the session waits for its resume.
                    Some((_, "dead" | crate::DRAINING)) => Disconnect::Lost,
                    _ => Disconnect::Fatal,
                };
            }
            f = stream.next() => f,
        };
        last_seen.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        let text = match frame {
            None => break Disconnect::Lost,
            Some(Err(e)) => {
                let s = e.to_string();
                if s.contains("too long") || s.contains("Space limit") || s.contains("too big") {
                    inner.send_error(
                        conn.id,
                        "frame_too_large",
                        format!(
                            "frames are limited to {} bytes",
                            inner.settings.max_frame_bytes
                        ),
                    );
                    inner.metrics.close("frame_too_large");
                    *conn.close.lock() = Some((close::TOO_BIG, "frame too large"));
                    conn.kill.cancel();
                    break Disconnect::Fatal;
                }
                break Disconnect::Lost;
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = ProtocolError::BinaryFrame;
                inner.send_error(conn.id, e.code(), e.to_string());
                continue;
            }
            Some(Ok(Message::Close(_))) => break Disconnect::Clean,
            Some(Ok(_)) => continue, // ping/pong: liveness only
        };
        let verdict = match ClientMessage::parse(text.as_str()) {
            Ok(m) => inner.handle(&conn, &mut st, m).await,
            Err(e) => {
                inner.send_error(conn.id, e.code(), e.to_string());
                Verdict::Continue
            }
        };
        if let Verdict::Close(code, reason) = verdict {
            *conn.close.lock() = Some((code, reason));
            conn.kill.cancel();
            break Disconnect::Fatal;
        }
        if conn.backed_up() {
            tokio::task::yield_now().await;
        }
    };
    if matches!(*conn.close.lock(), Some((0, "dead"))) {
        inner.metrics.close("dead");
    }
    if how == Disconnect::Lost && conn.close.lock().is_none() {
        *conn.close.lock() = Some((0, "lost"));
    }
    conn.kill.cancel();
    let _ = writer.await;
    let closed_by_us = matches!(*conn.close.lock(), Some((code, _)) if code != 0);
    if how == Disconnect::Fatal && closed_by_us {
        // The writer sent our close frame. Read what the client still sends until its own
        // close frame (or a second passes): closing a socket with unread input makes the
        // kernel send a reset, and the client would lose our close code (it would see 1006).
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    inner.closed(&conn, how);
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    kill: tokio_util::sync::CancellationToken,
    close: Arc<parking_lot::Mutex<Option<(u16, &'static str)>>>,
    ping_every: Duration,
    idle: Duration,
    last_seen: Arc<AtomicU64>,
    start: Instant,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(ping_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stuck = false;
    loop {
        tokio::select! {
            biased;
            _ = kill.cancelled() => break,
            m = rx.recv() => {
                let Some(Outbound { msg, seq, .. }) = m else { break };
                let text = msg.to_json(seq);
                tokio::select! {
                    r = sink.send(Message::Text(text.into())) => if r.is_err() { stuck = true; break },
                    _ = kill.cancelled() => { stuck = true; break },
                }
            }
            _ = tick.tick() => {
                let seen = Duration::from_millis(last_seen.load(Ordering::Relaxed));
                if start.elapsed().saturating_sub(seen) > idle {
                    *close.lock() = Some((0, "dead"));
                    kill.cancel();
                    stuck = true;
                    break;
                }
                tokio::select! {
                    r = sink.send(Message::Ping(Vec::new().into())) => if r.is_err() { stuck = true; break },
                    _ = kill.cancelled() => { stuck = true; break },
                }
            }
        }
    }
    let reason = *close.lock();
    let (code, why) = match reason {
        Some((0, _)) => return, // lost or dead: nobody to say goodbye to
        Some(r) => r,
        None if shutdown.is_cancelled() => (close::GOING_AWAY, "server shutting down"),
        None => return, // the client closed
    };
    if stuck {
        let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(Outbound { msg, seq, .. }) = rx.try_recv() {
            if sink
                .send(Message::Text(msg.to_json(seq).into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: why.into(),
            })))
            .await;
        let _ = sink.close().await;
    })
    .await;
}
