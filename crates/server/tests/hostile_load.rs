//! Hostile or merely numerous clients against the real binary on loopback: every bound holds
//! (memory, connections, CPU), and what is refused is refused clearly. Memory and CPU are read
//! from the server process's `/proc/<pid>/status` and `/proc/<pid>/stat`.

mod common;

use common::{scrape, series_value};

use common::child::ServerProcess;
use common::ws::{connect_ws, send_json, Ws};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn ws(server: &ServerProcess, identity: &str) -> Ws {
    connect_ws(server.http, &server.ticket(identity)).await
}

/// Next JSON text message, within 10 s.
async fn next_json(w: &mut Ws) -> Value {
    common::ws::next_json(w, Duration::from_secs(10)).await
}

async fn join(w: &mut Ws, room: &str) {
    send_json(w, json!({"type":"join","room_id":room})).await;
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
    series_value(&scrape(server.http).await, series).unwrap_or(0.0)
}

/// Sixty receivers get 60 KB offers, as many as the per-message resume buffer (256) used to
/// keep for each of them. Resume buffers are bounded in bytes per session and per node, so the
/// server's memory stays within a budget, and it is given back once everyone has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_offers_to_sixty_receivers_keep_memory_bounded_and_return_it() {
    const RECEIVERS: usize = 60;
    const OFFERS_EACH: usize = 48;
    const SDP_BYTES: usize = 60_000;
    // Resume buffers: 512 KiB per signaling session, 16 MiB per node (under 60 x 512 KiB, so
    // the node bound acts too).
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

/// Raises this test process's open-files limit (it opens hundreds of client sockets).
fn raise_own_nofile() {
    switchboard::accept::raise_nofile_limit();
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = c.get(format!("http://{addr}{path}")).send().await.ok()?;
    Some(r.status().as_u16())
}

/// Idle and half-open connections cost no CPU: hundreds of clients that send two bytes (not
/// enough to tell HTTP/1.1 from HTTP/2) and then nothing. The server waits on socket
/// readiness, not on a timer per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cost_no_cpu() {
    raise_own_nofile();
    let server = ServerProcess::start("");
    let mut held = Vec::new();
    for i in 0..600 {
        let mut c = TcpStream::connect(server.http).await.unwrap();
        if i % 2 == 0 {
            tokio::io::AsyncWriteExt::write_all(&mut c, b"PR")
                .await
                .unwrap();
        }
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = server.cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = server.cpu_time() - cpu0;
    let share = used.as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!(
        "600 half-open connections: {:.1} % of a core",
        share * 100.0
    );
    // Polling each connection every millisecond cost about half of this 2-core machine for
    // 1,000 connections. Waiting on readiness costs nothing measurable; 5 % of one core leaves
    // room for the housekeeping tasks and a loaded CI machine.
    assert!(share < 0.05, "{:.1} % of a core", share * 100.0);
    assert_eq!(http_status(server.http, "/healthz").await, Some(200));
    drop(held);
}

/// Past `[http] max_connections`, health checks and metrics still answer (a reserve of 32
/// connections serves them only); past the reserve, new connections are closed at once and
/// counted; once clients leave, everything is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_keeps_a_reserve_for_health_checks() {
    let server = ServerProcess::start("[http]\nmax_connections = 20\n");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A reserve connection: health answers, anything else is told the server is busy.
    assert_eq!(http_status(server.http, "/healthz").await, Some(200));
    assert_eq!(http_status(server.http, "/readyz").await, Some(200));
    assert_eq!(http_status(server.http, "/v1/ice-servers").await, Some(503));
    // Fill the reserve (and a few more, in case the three requests above are still counted).
    for _ in 0..36 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the reserve: closed as soon as accepted.
    assert_eq!(http_status(server.http, "/healthz").await, None);
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http_status(server.http, "/v1/ice-servers").await, Some(401));
    let limited = metric(
        &server,
        "switchboard_http_connections_refused_total{reason=\"limit\"}",
    )
    .await;
    let busy = metric(
        &server,
        "switchboard_http_connections_refused_total{reason=\"busy\"}",
    )
    .await;
    assert!(
        limited >= 1.0 && busy >= 1.0,
        "limit {limited}, busy {busy}"
    );
}

/// SIGTERM: idle, silent and half-sent connections do not hold the exit (the grace is 10 s; it
/// takes well under 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_by_idle_or_half_sent_connections() {
    let mut server = ServerProcess::start("[http]\nshutdown_grace = \"10s\"\n");
    let silent = TcpStream::connect(server.http).await.unwrap();
    let mut half = TcpStream::connect(server.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // A keep-alive connection that finished a request.
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("http://{}/healthz", server.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut ws = ws(&server, "alice").await;
    join(&mut ws, "r").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || {
        let code = server.wait_exit(Duration::from_secs(8));
        (code, server)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(code, Some(0), "exited cleanly");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // The signaling session was told why it ended.
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
        if let Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(1001));
    drop((silent, half));
}

/// While a request is still in flight after SIGTERM, the server keeps accepting connections
/// for health checks: `/readyz` answers 503 `draining` (instead of connection refused), other
/// requests on new connections get 503, and the server exits when the grace is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_draining() {
    let mut server = ServerProcess::start("[http]\nshutdown_grace = \"3s\"\n");
    // A request whose body is only half sent: in flight until the grace ends.
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"room\":",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!("http://{}/readyz", server.http))
        .await
        .expect("readyz answers while draining");
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "draining\n");
    assert_eq!(http_status(server.http, "/healthz").await, Some(200));
    assert_eq!(http_status(server.http, "/v1/ice-servers").await, Some(503));
    let code = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(8)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "the in-flight request held the drain until the 3 s grace: {took:?}"
    );
    drop(slow);
}

/// A client that floods messages is closed with 4029 and reads that close code: the server
/// drains the client's input after its close frame instead of resetting the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_reads_close_code_4029() {
    let server = ServerProcess::start("[limits]\nsignal_messages_per_second = 10\n");
    let mut w = ws(&server, "flood").await;
    join(&mut w, "r").await;
    let ping = Message::text(r#"{"type":"ping","ts":1}"#);
    for _ in 0..2000 {
        if w.send(ping.clone()).await.is_err() {
            break;
        }
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(4029));
}

/// The disk fills while the server runs (the process's file-size limit stands in for a full
/// disk: writes past it fail with EFBIG, as they would with ENOSPC): a login that must write
/// its session answers 503 `storage_unavailable`, the failure is logged with the database
/// path, and `/readyz` answers 503 `degraded` naming it. The database files are 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_logged_with_its_path_and_degrades_readyz() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("users.db");
    common::child::add_user(&db, "alice", "correct horse");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "database file mode {mode:o}");

    // Room for the database as it is and SQLite's 32 KiB shared-memory file; the write-ahead
    // log fills within a few logins.
    let limit = std::fs::metadata(&db).unwrap().len().max(32 * 1024);
    let log = data.path().join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let server = ServerProcess::start_with(
        &format!(
            "[auth]\ndatabase = \"{}\"\nlogin_attempts_per_second = 1000\n[log]\nlevel = \"info\"\n",
            db.display()
        ),
        move |cmd| {
            cmd.stderr(log_file);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    assert_eq!(http_status(server.http, "/readyz").await, Some(200));
    let c = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..30 {
        let r = c
            .post(format!("http://{}/v1/login", server.http))
            .json(&json!({"username": "alice", "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            refused = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
    }
    let (status, body) = refused.expect("a login fails once the disk is full");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage_unavailable"), "{body}");
    let r = reqwest::get(format!("http://{}/readyz", server.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let why = r.text().await.unwrap();
    assert!(
        why.starts_with("degraded: auth.database ") && why.contains(db.to_str().unwrap()),
        "{why}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("user store failed") && logged.contains(db.to_str().unwrap()),
        "{logged}"
    );
    for f in ["users.db-wal", "users.db-shm"] {
        if let Ok(m) = std::fs::metadata(data.path().join(f)) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
}
