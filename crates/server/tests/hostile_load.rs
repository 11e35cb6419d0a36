//! Hostile or merely numerous clients against the real binary on loopback: every bound holds
//! (memory, connections, CPU), and what is refused is refused clearly. Memory and CPU are read
//! from the server process's `/proc/<pid>/status` and `/proc/<pid>/stat`.

mod common;

use common::child::ServerProcess;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(server: &ServerProcess, identity: &str) -> Ws {
    let url = format!(
        "ws://{}/v1/signal?access_token={}",
        server.http,
        server.ticket(identity)
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next JSON text message, within 10 s.
async fn next_json(w: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn join(w: &mut Ws, room: &str) {
    w.send(Message::text(
        json!({"type":"join","room_id":room}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = next_json(w).await;
        assert_ne!(m["type"], "error", "join refused: {m}");
        if m["type"] == "joined" {
            return;
        }
    }
}

/// A metric's value from `/metrics` (0 when absent).
async fn metric(server: &ServerProcess, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sixty receivers get 60 KB offers, as many as the per-message resume buffer (256) used to
/// keep for each of them. Resume buffers are bounded in bytes per session and per node, so the
/// server's memory stays within a budget, and it is given back once everyone has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_offers_to_sixty_receivers_keep_memory_bounded_and_return_it() {
    const RECEIVERS: usize = 60;
    const OFFERS_EACH: usize = 48;
    const SDP_BYTES: usize = 60_000;
    // Per session 512 KiB; per node 16 MiB (under 60 x 512 KiB, so the node bound acts too).
    let server = ServerProcess::start(
        "[limits]\nsignal_messages_per_second = 100000\nsignal_joins_per_second_per_ip = 1000\n\
         signal_resume_grace = \"2s\"\n\
         signal_resume_buffer_bytes = 524288\nsignal_resume_total_bytes = 16777216\n",
    );
    let baseline = server.rss_mib();

    // Six rooms of one sender and ten receivers; receivers read (and drop) what they get.
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for room in 0..RECEIVERS / 10 {
        let room_id = format!("big-{room}");
        let mut s = ws(&server, &format!("sender-{room}")).await;
        join(&mut s, &room_id).await;
        let mut targets = Vec::new();
        for i in 0..10 {
            let id = format!("recv-{room}-{i}");
            let mut r = ws(&server, &id).await;
            join(&mut r, &room_id).await;
            targets.push(id);
            readers.push(tokio::spawn(async move {
                let mut offers = 0;
                while offers < OFFERS_EACH {
                    if next_json(&mut r).await["type"] == "offer" {
                        offers += 1;
                    }
                }
                r
            }));
        }
        senders.push((s, targets));
    }
    let sdp = "a".repeat(SDP_BYTES);
    let mut peak = 0f64;
    for round in 0..OFFERS_EACH {
        for (s, targets) in &mut senders {
            for t in targets.iter() {
                let offer = json!({"type":"offer","target":t,"offer":{"type":"offer","sdp":sdp}});
                s.send(Message::text(offer.to_string())).await.unwrap();
            }
        }
        if round % 8 == 7 {
            peak = peak.max(server.rss_mib());
        }
    }
    let mut receivers = Vec::new();
    for r in readers {
        receivers.push(
            tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    peak = peak.max(server.rss_mib());
    let held = metric(&server, "switchboard_signal_resume_bytes").await;
    let evicted = metric(
        &server,
        "switchboard_signal_resume_evictions_total{bound=\"total_bytes\"}",
    )
    .await
        + metric(
            &server,
            "switchboard_signal_resume_evictions_total{bound=\"session_bytes\"}",
        )
        .await;
    // Without byte bounds the rings alone would hold 60 x 48 x 60 KB = 165 MiB.
    // With them: the node's 16 MiB of rings, the messages in flight (each reader has at most
    // a few queued), tungstenite's buffers and the allocator's slack: 96 MiB of growth is
    // ample and far below the unbounded figure.
    eprintln!(
        "baseline {baseline:.1} MiB, peak {peak:.1} MiB, resume bytes {held}, evictions {evicted}"
    );
    assert!(held <= 16.0 * 1024.0 * 1024.0, "node bound: {held}");
    assert!(evicted > 0.0, "the byte bounds evicted messages");
    assert!(
        peak - baseline < 96.0,
        "RSS grew {:.1} MiB (baseline {baseline:.1}, peak {peak:.1})",
        peak - baseline
    );

    // Everyone leaves: the memory comes back (within 24 MiB of the baseline: the allocator
    // keeps some free pages and thread caches).
    for (mut s, _) in senders {
        let _ = s.close(None).await;
    }
    for mut r in receivers {
        let _ = r.close(None).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = server.rss_mib();
    let mut left = metric(&server, "switchboard_signal_resume_bytes").await;
    while (after - baseline > 24.0 || left > 0.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = server.rss_mib();
        left = metric(&server, "switchboard_signal_resume_bytes").await;
        eprintln!(
            "after leaving: {after:.1} MiB, resume bytes {left}, sessions {}",
            metric(&server, "switchboard_signal_sessions").await
        );
    }
    assert_eq!(left, 0.0, "resume bytes left after everyone left");
    assert!(
        after - baseline <= 24.0,
        "RSS stayed {:.1} MiB above the baseline after everyone left",
        after - baseline
    );
}
