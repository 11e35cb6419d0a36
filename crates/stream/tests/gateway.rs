//! The gateway over real sockets: tonic clients, tonic mock upstreams, gRPC-Web over HTTP/1.1.

mod support;

use base64::Engine;
use prost::Message;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;
use switchboard_auth::Scope;
use switchboard_proto::inference::inference_client::InferenceClient;
use switchboard_proto::inference::{PredictChunk, PredictRequest};
use switchboard_stream::backend::digest_part;
use switchboard_stream::wire;
use switchboard_stream::{ProgressState, RouteConfig, StreamConfig, UpstreamConfig};
use tokio_util::sync::CancellationToken;
use tonic::Code;

type Client = InferenceClient<tonic::transport::Channel>;

fn upstream_cfg(urls: Vec<String>) -> StreamConfig {
    StreamConfig {
        upstreams: vec![UpstreamConfig {
            name: "ml".into(),
            url: urls[0].clone(),
            urls: urls[1..].to_vec(),
            health_check_interval: Duration::ZERO,
            ..Default::default()
        }],
        routes: vec![
            RouteConfig {
                task_prefix: "local-".into(),
                backend: "local:digest".into(),
                ..Default::default()
            },
            RouteConfig {
                task_prefix: "".into(),
                backend: "ml".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// A gateway whose `ml` upstream is one default mock (with `tune` applied to [`upstream_cfg`]
/// first), and a client with a ticket for `identity`: (the mock's stop token, the mock, the
/// gateway, the ticket, the client). Tests cancel the stop token at their end.
async fn proxied(
    identity: &str,
    tune: impl FnOnce(&mut StreamConfig),
) -> (CancellationToken, Mock, Harness, String, Client) {
    let stop = CancellationToken::new();
    let mock = Mock::default();
    let url = start_mock(mock.clone(), stop.clone()).await;
    let mut cfg = upstream_cfg(vec![url]);
    tune(&mut cfg);
    let h = Harness::start(cfg).await;
    let (t, c) = h.grpc_client(identity).await;
    (stop, mock, h, t, c)
}

/// Opens `n` streams for task `ok:<chunks>` one after another; each must end cleanly with
/// `chunks + 1` messages.
async fn expect_ok_streams(h: &Harness, chunks: usize, n: usize) {
    let (t, mut c) = h.grpc_client("kim").await;
    for _ in 0..n {
        let (got, err) = call(&mut c, request(Some(&t), &format!("ok:{chunks}"), "")).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.len(), chunks + 1);
    }
}

/// A stream the gateway accepted.
async fn open(c: &mut Client, r: tonic::Request<PredictRequest>) -> tonic::Streaming<PredictChunk> {
    c.stream_predict(r).await.unwrap().into_inner()
}

/// The status of a stream the gateway refused before sending anything.
async fn refused(c: &mut Client, r: tonic::Request<PredictRequest>) -> tonic::Status {
    c.stream_predict(r).await.unwrap_err()
}

/// Opens an accepted stream and reads it to its end: its chunks, and the error it ended with.
async fn call(
    c: &mut Client,
    r: tonic::Request<PredictRequest>,
) -> (Vec<PredictChunk>, Option<tonic::Status>) {
    collect(open(c, r).await).await
}

async fn collect(
    mut s: tonic::Streaming<PredictChunk>,
) -> (Vec<PredictChunk>, Option<tonic::Status>) {
    let mut v = Vec::new();
    loop {
        match s.message().await {
            Ok(Some(c)) => v.push(c),
            Ok(None) => return (v, None),
            Err(e) => return (v, Some(e)),
        }
    }
}

#[tokio::test]
async fn local_worker_streams_digest_chunks_with_progress() {
    let h = Harness::start(StreamConfig::default()).await;
    let (t, mut c) = h.grpc_client("alice").await;
    let (chunks, err) = call(
        &mut c,
        request(
            Some(&t),
            "job-1",
            r#"{"chunks":5,"chunk_bytes":100,"seed":"x"}"#,
        ),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks.len(), 6);
    for (i, ch) in chunks[..5].iter().enumerate() {
        assert_eq!(ch.index, i as i32);
        assert_eq!(ch.partial, digest_part(b"x", i as u64, 100));
    }
    assert!(chunks[5].done);
    let ev = h.sink.events.lock().clone();
    let last = &ev.last().unwrap().1;
    assert_eq!(ev.last().unwrap().0, "alice");
    assert_eq!(
        (last.state, last.chunks, last.task_id.as_str(), last.code),
        (ProgressState::Done, 6, "job-1", Some("ok"))
    );
    assert!(ev.iter().any(|(_, e)| e.state == ProgressState::Running));
    let m = h.metrics_text();
    assert!(m.contains("switchboard_stream_chunks_total 6"), "{m}");
    assert!(m.contains("switchboard_stream_finished_total{code=\"ok\"} 1"));
}

#[tokio::test]
async fn progress_is_rate_limited() {
    let h = Harness::start(StreamConfig::default()).await;
    let (t, mut c) = h.grpc_client("bob").await;
    // 30 chunks, 10 ms apart: ≥ 290 ms, so a few running events at 100 ms, never one per chunk.
    let t0 = Instant::now();
    let (chunks, err) = call(
        &mut c,
        request(Some(&t), "j", r#"{"chunks":30,"delay_ms":10}"#),
    )
    .await;
    let elapsed_ms = t0.elapsed().as_millis() as usize;
    assert!(err.is_none());
    assert_eq!(chunks.len(), 31);
    let ev = h.sink.events.lock().clone();
    let running = ev
        .iter()
        .filter(|(_, e)| e.state == ProgressState::Running)
        .count();
    assert!(
        (2..=elapsed_ms / 100 + 1).contains(&running),
        "{running} running events in {elapsed_ms} ms"
    );
    assert_eq!(ev.last().unwrap().1.state, ProgressState::Done);
}

#[tokio::test]
async fn auth_failures_are_grpc_statuses() {
    let h = Harness::start(StreamConfig::default()).await;
    let mut c = h.client().await;
    let e = refused(&mut c, request(None, "j", "")).await;
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = refused(&mut c, request(Some("not.a.jwt"), "j", "")).await;
    assert_eq!(e.code(), Code::Unauthenticated);
    let webrtc_only = h.token("carol", &[Scope::Webrtc]);
    let e = refused(&mut c, request(Some(&webrtc_only), "j", "")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    let m = h.metrics_text();
    assert!(
        m.contains("switchboard_auth_failures_total{reason=\"missing_scope\"} 1"),
        "{m}"
    );
    assert!(m.contains("switchboard_auth_failures_total{reason=\"missing_token\"} 1"));
}

#[tokio::test]
async fn invalid_arguments_and_payload_limit() {
    let h = Harness::start(StreamConfig {
        max_request_bytes: 1024,
        ..Default::default()
    })
    .await;
    let (t, mut c) = h.grpc_client("dave").await;
    let e = refused(&mut c, request(Some(&t), "j", "not json")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let long = "x".repeat(300);
    let e = refused(&mut c, request(Some(&t), &long, "")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let big = format!("{{\"seed\":\"{}\"}}", "y".repeat(2000));
    let e = refused(&mut c, request(Some(&t), "j", &big)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(h
        .metrics_text()
        .contains("switchboard_stream_limited_total{reason=\"request_too_large\"} 1"));
}

#[tokio::test]
async fn per_identity_stream_limit() {
    let h = Harness::start(StreamConfig {
        max_streams_per_identity: 2,
        ..Default::default()
    })
    .await;
    let (t, mut c) = h.grpc_client("erin").await;
    let slow = r#"{"chunks":1000,"delay_ms":50}"#;
    let mut a = open(&mut c, request(Some(&t), "a", slow)).await;
    let b = open(&mut c, request(Some(&t), "b", slow)).await;
    a.message().await.unwrap().unwrap();
    let e = refused(&mut c, request(Some(&t), "c", slow)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Someone else is not affected.
    let other = h.token("frank", &[Scope::Grpc]);
    let mut o = open(&mut c, request(Some(&other), "o", r#"{"chunks":1}"#)).await;
    assert!(o.message().await.unwrap().is_some());
    // Dropping one frees a slot.
    drop(b);
    wait_until("slot freed", || h.gateway.active_streams() <= 1).await;
    open(&mut c, request(Some(&t), "d", r#"{"chunks":1}"#)).await;
}

#[tokio::test]
async fn deadline_ends_local_stream() {
    let h = Harness::start(StreamConfig::default()).await;
    let (t, mut c) = h.grpc_client("gina").await;
    let mut r = request(Some(&t), "j", r#"{"chunks":100,"delay_ms":50}"#);
    r.set_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    let res = c.stream_predict(r).await;
    let (chunks, err) = match res {
        Ok(s) => collect(s.into_inner()).await,
        Err(e) => (Vec::new(), Some(e)),
    };
    assert_eq!(err.unwrap().code(), Code::DeadlineExceeded);
    assert!(chunks.len() < 10);
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The server also ends it itself with max_deadline, whatever the client asks.
    let h2 = Harness::start(StreamConfig {
        max_deadline: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let (t2, mut c2) = h2.grpc_client("gina").await;
    let (chunks, err) = call(
        &mut c2,
        request(Some(&t2), "j", r#"{"chunks":100,"delay_ms":50}"#),
    )
    .await;
    assert_eq!(err.unwrap().code(), Code::DeadlineExceeded);
    assert!(!chunks.is_empty() && chunks.len() < 10);
}

#[tokio::test]
async fn upstream_proxy_passes_chunks_identity_and_deadline() {
    let (stop, mock, _h, t, mut c) = proxied("hank", |_| {}).await;
    let mut r = request(Some(&t), "ok:5", "");
    r.set_timeout(Duration::from_secs(30));
    let (chunks, err) = call(&mut c, r).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks[3].partial, vec![3u8; 100]);
    assert_eq!(mock.stats.last_identity.lock().as_deref(), Some("hank"));
    let to = mock
        .stats
        .last_timeout
        .lock()
        .clone()
        .expect("grpc-timeout forwarded");
    let d = wire::parse_grpc_timeout(&to).unwrap();
    assert!(
        d <= Duration::from_secs(30) && d > Duration::from_secs(25),
        "{to}"
    );
    // Application errors pass through unchanged and are not retried.
    let e = refused(&mut c, request(Some(&t), "invalid", "")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    // Local routes still work next to the upstream.
    let (chunks, _) = call(&mut c, request(Some(&t), "local-1", r#"{"chunks":2}"#)).await;
    assert_eq!(chunks.len(), 3);
    stop.cancel();
}

#[tokio::test]
async fn upstream_deadline_is_deadline_exceeded_and_counted() {
    let (stop, mock, h, t, mut c) = proxied("ivy", |_| {}).await;
    let mut r = request(Some(&t), "slow:100", "");
    r.set_timeout(Duration::from_millis(350));
    let (chunks, err) = call(&mut c, r).await;
    assert_eq!(err.unwrap().code(), Code::DeadlineExceeded);
    assert!((1..=4).contains(&chunks.len()), "{}", chunks.len());
    wait_until("upstream sees the cancel", || {
        mock.stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(h
        .metrics_text()
        .contains("switchboard_stream_upstream_timeouts_total{backend=\"ml\"} 1"));
    stop.cancel();
}

/// A client that gives up at its own deadline resets the stream a moment before the gateway's
/// timer fires (the client's clock started first). Found flaky in the Python ML servicer e2e
/// suite (e2e/suites/30-stream-python.sh): it must count as an upstream timeout, not as a
/// client reset.
#[tokio::test]
async fn client_reset_at_its_deadline_counts_as_a_timeout() {
    let (stop, _mock, h, t, mut c) = proxied("kim", |_| {}).await;
    let mut r = request(Some(&t), "slow:50", "");
    r.set_timeout(Duration::from_millis(400));
    let t0 = Instant::now();
    let mut s = open(&mut c, r).await;
    s.message().await.unwrap().unwrap();
    // Give up 40 ms before the deadline the gateway was told, as a client whose own timer
    // started earlier does.
    tokio::time::sleep_until((t0 + Duration::from_millis(360)).into()).await;
    drop(s);
    wait_until("no active stream", || h.gateway.active_streams() == 0).await;
    let m = h.metrics_text();
    assert!(
        m.contains("switchboard_stream_upstream_timeouts_total{backend=\"ml\"} 1"),
        "{m}"
    );
    assert!(m.contains("switchboard_stream_resets_total 0"), "{m}");
    stop.cancel();
}

#[tokio::test]
async fn client_cancel_reaches_upstream_promptly() {
    let (stop, mock, h, t, mut c) = proxied("jack", |_| {}).await;
    let mut s = open(&mut c, request(Some(&t), "slow:20", "")).await;
    s.message().await.unwrap().unwrap();
    s.message().await.unwrap().unwrap();
    let t0 = Instant::now();
    drop(s);
    wait_until("upstream cancelled", || {
        mock.stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    wait_until("no active stream", || h.gateway.active_streams() == 0).await;
    let m = h.metrics_text();
    assert!(m.contains("switchboard_stream_resets_total 1"), "{m}");
    let last = h.sink.events.lock().last().unwrap().1.clone();
    assert_eq!(
        (last.state, last.code),
        (ProgressState::Failed, Some("cancelled"))
    );
    stop.cancel();
}

#[tokio::test]
async fn failover_before_first_chunk() {
    let stop = CancellationToken::new();
    let up = Mock::default();
    // An endpoint that refuses connections, and a good one.
    let dead = dead_url().await;
    let url_up = start_mock(up.clone(), stop.clone()).await;
    let mut cfg = upstream_cfg(vec![dead, url_up.clone()]);
    cfg.upstreams[0].max_attempts = 2;
    let h = Harness::start(cfg).await;
    expect_ok_streams(&h, 2, 4).await;
    assert_eq!(up.stats.calls.load(Ordering::SeqCst), 4);
    let m = h.metrics_text();
    assert!(m.contains("kind=\"connect\""), "{m}");

    // UNAVAILABLE from the first endpoint before any chunk: retried on the second.
    let down = Mock {
        always_unavailable: true,
        ..Default::default()
    };
    let url_down = start_mock(down.clone(), stop.clone()).await;
    let up2 = Mock::default();
    let url_up2 = start_mock(up2.clone(), stop.clone()).await;
    let mut cfg = upstream_cfg(vec![url_down, url_up2]);
    cfg.upstreams[0].max_attempts = 2;
    cfg.upstreams[0].circuit_failure_threshold = 0;
    let h2 = Harness::start(cfg).await;
    expect_ok_streams(&h2, 2, 4).await;
    // Round robin: half of the calls started on the refusing endpoint and were retried.
    assert_eq!(down.stats.calls.load(Ordering::SeqCst), 2);
    assert_eq!(up2.stats.calls.load(Ordering::SeqCst), 4);
    assert!(h2
        .metrics_text()
        .contains("switchboard_stream_upstream_retries_total 2"));
    // With a single attempt allowed, UNAVAILABLE reaches the client.
    let mut cfg = upstream_cfg(vec![url_up.clone()]);
    cfg.upstreams[0].max_attempts = 1;
    let h3 = Harness::start(cfg).await;
    let (t3, mut c3) = h3.grpc_client("kim").await;
    let e = refused(&mut c3, request(Some(&t3), "unavailable", "")).await;
    assert_eq!(e.code(), Code::Unavailable);
    stop.cancel();
}

#[tokio::test]
async fn no_retry_after_first_chunk() {
    let stop = CancellationToken::new();
    let a = Mock::default();
    let b = Mock::default();
    let ua = start_mock(a.clone(), stop.clone()).await;
    let ub = start_mock(b.clone(), stop.clone()).await;
    let mut cfg = upstream_cfg(vec![ua, ub]);
    cfg.upstreams[0].max_attempts = 2;
    let h = Harness::start(cfg).await;
    let (t, mut c) = h.grpc_client("lee").await;
    let (chunks, err) = call(&mut c, request(Some(&t), "fail-after-1", "")).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(err.unwrap().code(), Code::Unavailable);
    let calls = a.stats.calls.load(Ordering::SeqCst) + b.stats.calls.load(Ordering::SeqCst);
    assert_eq!(
        calls, 1,
        "a stream that already sent a chunk must not be retried"
    );
    assert!(h
        .metrics_text()
        .contains("switchboard_stream_upstream_retries_total 0"));
    stop.cancel();
}

/// A pool of a refusing endpoint followed by a good mock: (dead url, good url, config).
async fn dead_then_good(stop: &CancellationToken) -> (String, String, StreamConfig) {
    let dead = dead_url().await;
    let url = start_mock(Mock::default(), stop.clone()).await;
    let cfg = upstream_cfg(vec![dead.clone(), url.clone()]);
    (dead, url, cfg)
}

// The breaker and the health checks are tested apart: with both on, a probe that runs before
// the first stream (the first probe fires at start) takes the dead endpoint out before any
// stream tries it, and the breaker rightly never opens (seen on a loaded machine).
#[tokio::test]
async fn circuit_breaker_takes_a_dead_endpoint_out() {
    let stop = CancellationToken::new();
    let (dead, _url, mut cfg) = dead_then_good(&stop).await;
    cfg.upstreams[0].circuit_failure_threshold = 1;
    cfg.upstreams[0].max_attempts = 2;
    cfg.upstreams[0].health_check_interval = Duration::ZERO;
    let h = Harness::start(cfg).await;
    expect_ok_streams(&h, 1, 3).await;
    let m = h.metrics_text();
    assert!(
        m.contains(&format!(
            "switchboard_stream_circuit_opened_total{{upstream=\"ml\",endpoint=\"{dead}\"}} 1"
        )),
        "{m}"
    );
    // Open breaker: later streams went to the good endpoint without a retry each.
    assert!(
        m.contains("switchboard_stream_upstream_retries_total 1"),
        "{m}"
    );
    stop.cancel();
}

#[tokio::test]
async fn health_checks_take_a_dead_endpoint_out() {
    let stop = CancellationToken::new();
    let (dead, url, mut cfg) = dead_then_good(&stop).await;
    cfg.upstreams[0].circuit_failure_threshold = 0;
    cfg.upstreams[0].max_attempts = 1;
    cfg.upstreams[0].health_check_interval = Duration::from_millis(50);
    cfg.upstreams[0].unhealthy_threshold = 1;
    let h = Harness::start(cfg).await;
    let healthy_dead =
        format!("switchboard_stream_upstream_healthy{{upstream=\"ml\",endpoint=\"{dead}\"}} 0");
    let healthy_good =
        format!("switchboard_stream_upstream_healthy{{upstream=\"ml\",endpoint=\"{url}\"}} 1");
    wait_until("health check marks the dead endpoint", || {
        let m = h.metrics_text();
        m.contains(&healthy_dead) && m.contains(&healthy_good)
    })
    .await;
    // Out of rotation: with one attempt per stream and no breaker, every stream still works.
    expect_ok_streams(&h, 1, 4).await;
    stop.cancel();
}

#[tokio::test]
async fn slow_client_keeps_upstream_and_memory_bounded() {
    let (stop, mock, _h, t, mut c) = proxied("nia", |_| {}).await;
    // 2000 × 64 KiB = 125 MiB on offer; the client reads 3 chunks and then stalls.
    let mut s = open(&mut c, request(Some(&t), "big:2000", "")).await;
    for _ in 0..3 {
        s.message().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let produced = mock.stats.produced.load(Ordering::SeqCst);
    eprintln!("upstream produced {produced} of 2000 chunks while the client stalled");
    // Windows on the way (client, gateway→upstream stream window 256 KiB, kernel buffers)
    // hold a few MiB at most (39 chunks measured); without backpressure all 2000 would be
    // gone by now.
    assert!(
        produced < 160,
        "upstream produced {produced} chunks for a stalled client"
    );
    // Reading on resumes the flow.
    let mut n = 3;
    while let Some(_c) = s.message().await.unwrap() {
        n += 1;
        if n == 400 {
            break;
        }
    }
    assert_eq!(n, 400);
    drop(s);
    wait_until("cancel", || {
        mock.stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    stop.cancel();
}

fn web_body(req: &PredictRequest) -> Vec<u8> {
    wire::encode_frame(0, &req.encode_to_vec()).to_vec()
}

/// Splits a gRPC-Web response into messages and the trailer block.
fn parse_web(body: &[u8]) -> (Vec<PredictChunk>, String) {
    let frames = wire::decode_all(body, 1 << 20).unwrap();
    let mut msgs = Vec::new();
    let mut trailer = String::new();
    for f in frames {
        if f.flags & wire::TRAILER_FLAG != 0 {
            trailer = String::from_utf8(f.payload.to_vec()).unwrap();
        } else {
            msgs.push(PredictChunk::decode(f.payload).unwrap());
        }
    }
    (msgs, trailer)
}

#[tokio::test]
async fn grpc_web_binary_and_text_over_http1_with_cors() {
    let h = Harness::start(StreamConfig::default()).await;
    let t = h.token("olga", &[Scope::Grpc]);
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let url = format!("{}/inference.Inference/StreamPredict", h.url());
    let req = PredictRequest {
        task_id: "w".into(),
        payload: br#"{"chunks":3,"chunk_bytes":50,"seed":"w"}"#.to_vec(),
    };
    // Preflight from an allowed and a foreign origin.
    let pre = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://allowed.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "http://allowed.example"
    );
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let bad = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    // Same origin (a page served by this server) needs no configuration.
    let same = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("origin", h.url())
        .header("authorization", format!("Bearer {t}"))
        .body(web_body(&req))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(
        parse_web(&same.bytes().await.unwrap()).1,
        "grpc-status:0\r\n"
    );

    let r = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://allowed.example")
        .header("authorization", format!("Bearer {t}"))
        .body(web_body(&req))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("grpc-status"));
    let (msgs, trailer) = parse_web(&r.bytes().await.unwrap());
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[2].partial, digest_part(b"w", 2, 50));
    assert_eq!(trailer, "grpc-status:0\r\n");

    let b64 = base64::engine::general_purpose::STANDARD;
    let r = http
        .post(&url)
        .header("content-type", "application/grpc-web-text")
        .header("authorization", format!("Bearer {t}"))
        .body(b64.encode(web_body(&req)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    let text = r.bytes().await.unwrap();
    let raw = wire::decode_web_text(&text).unwrap();
    let (msgs, trailer) = parse_web(&raw);
    assert_eq!(msgs.len(), 4);
    assert_eq!(trailer, "grpc-status:0\r\n");

    // Errors before the first chunk come as a trailers-only response.
    let r = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .body(web_body(&req))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["grpc-status"], "16");
    // Not gRPC at all.
    let r = http.post(&url).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 415);
    // Garbage framing.
    let r = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("authorization", format!("Bearer {t}"))
        .body(vec![0u8, 0, 0, 0, 9, 1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["grpc-status"], "3");
}

#[tokio::test]
async fn full_upstream_is_resource_exhausted() {
    let (stop, _, h, t, mut c) =
        proxied("pia", |cfg| cfg.upstreams[0].max_concurrent_streams = 1).await;
    let mut s = open(&mut c, request(Some(&t), "slow:20", "")).await;
    s.message().await.unwrap().unwrap();
    let e = refused(&mut c, request(Some(&t), "ok:1", "")).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    drop(s);
    wait_until("slot freed", || h.gateway.active_streams() == 0).await;
    let (chunks, err) = call(&mut c, request(Some(&t), "ok:1", "")).await;
    assert!(err.is_none() && chunks.len() == 2);
    stop.cancel();
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let h = Harness::start(StreamConfig::default()).await;
    let (t, mut c) = h.grpc_client("quinn").await;
    let mut s = open(
        &mut c,
        request(Some(&t), "j", r#"{"chunks":1000,"delay_ms":20}"#),
    )
    .await;
    s.message().await.unwrap().unwrap();
    h.shutdown.cancel();
    let t0 = Instant::now();
    let err = loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended with OK"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::Unavailable);
    assert!(t0.elapsed() < Duration::from_millis(500));
}
