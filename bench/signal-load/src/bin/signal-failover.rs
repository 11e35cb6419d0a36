//! `signal-failover`: a cluster node killed under its signaling clients. Rooms of two: one
//! member on the first node (the one to kill), its peer on one of the other nodes (round
//! robin). The peers send to their partner at a steady total rate. After `--before` seconds the
//! first node's process gets SIGKILL, and each of its clients reconnects the way the JS SDK
//! does (`clients/js/src/connection.js`, `_reconnectLoop`): 200 ms after the drop it tries the
//! same node, and when a node cannot be reached the next one in the `joined.nodes` list 100 ms
//! later, resuming with its resume token and `last_seq`. Reports, per client, the time from
//! the SIGKILL to its `joined{resumed:true}` (p50/p95/p99/max), how many resumed and how many
//! failed (and why), where they resumed, what became of the messages sent to them, and
//! whether any peer heard a `peer_left`.
//!
//! ```text
//! signal-failover --url ws://127.0.0.1:7880/v1/signal --url ws://127.0.0.1:7890/v1/signal \
//!                 --url ws://127.0.0.1:7900/v1/signal --kill-pid PID --secret S --rooms 500
//! ```

use anyhow::Context;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use signal_load::{pct, with_ticket};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Signaling endpoints of the cluster's nodes, ws://host:port/v1/signal. The first is the
    /// node killed; the peers are spread over the others.
    #[arg(long, required = true, num_args = 1)]
    url: Vec<String>,
    /// Process id of the first node's server: it gets SIGKILL.
    #[arg(long)]
    kill_pid: i32,
    /// HS256 secret (kid "k1") of the cluster, to mint the tickets.
    #[arg(long)]
    secret: String,
    /// Rooms of two: as many clients on the first node, as many peers on the others.
    #[arg(long, default_value_t = 500)]
    rooms: usize,
    /// Messages per second from all peers together to their partners on the first node.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of traffic before the kill.
    #[arg(long, default_value_t = 3.0)]
    before: f64,
    /// Seconds of traffic after the kill.
    #[arg(long, default_value_t = 10.0)]
    after: f64,
    /// A client that has not resumed this many seconds after the kill gives up.
    #[arg(long, default_value_t = 20.0)]
    give_up: f64,
    /// Concurrent connection attempts while joining.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    #[arg(long, default_value = "failover")]
    label: String,
}

static START: OnceLock<Instant> = OnceLock::new();
fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}
/// When the SIGKILL was sent (microseconds on [`now_us`]'s clock); 0 before.
static KILLED_AT: AtomicU64 = AtomicU64::new(0);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Stream = futures::stream::SplitStream<Ws>;
type Sink = futures::stream::SplitSink<Ws, Message>;

/// What happened to one client of the killed node.
#[derive(Default)]
struct Victim {
    /// Highest `seq` received: the `last_seq` of a resume.
    last_seq: u64,
    /// Message numbers received from the peer (duplicates included).
    got: Vec<u64>,
    /// When the socket to the killed node was seen closed.
    closed_us: Option<u64>,
    /// When `joined{resumed:true}` arrived on the new node.
    resumed_us: Option<u64>,
    /// The signaling URL of the node it resumed on.
    resumed_on: Option<String>,
    /// Connection attempts until then.
    attempts: u32,
    /// The resuming attempt: microseconds to open the WebSocket (TCP and upgrade), then
    /// from the upgrade to `joined`.
    upgrade_us: u64,
    answer_us: u64,
    /// Why it did not resume (the server's error code, or "gave up").
    failed: Option<String>,
    /// Closed before the kill (should not happen).
    early_close: bool,
}

/// Joins `room` as `identity` on `url`; returns both halves and the `joined` message.
async fn join(
    url: &str,
    keyring: &switchboard_auth::KeyRing,
    identity: &str,
    room: &str,
) -> anyhow::Result<(Sink, Stream, Value)> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        with_ticket(url, Some(keyring), identity)?,
        None,
        true,
    )
    .await
    .context("connect")?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(
        json!({"type":"join","room_id":room}).to_string(),
    ))
    .await?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("join timeout")?
            .context("closed during join")??;
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str())?;
            match v["type"].as_str() {
                Some("joined") => return Ok((sink, stream, v)),
                Some("error") => anyhow::bail!("join refused: {v}"),
                _ => {}
            }
        }
    }
}

/// Records a message for a client of the killed node: its `seq`, and the peer's number.
fn note(state: &Mutex<Victim>, v: &Value) {
    let mut s = state.lock();
    if let Some(seq) = v["seq"].as_u64() {
        s.last_seq = s.last_seq.max(seq);
    }
    if v["type"] == "ice_candidate" {
        if let Some(n) = v["candidate"]["n"].as_u64() {
            s.got.push(n);
        }
    }
}

/// Reads until the socket closes. True when it closed, false when `stop` was set.
async fn read_all(stream: &mut Stream, state: &Mutex<Victim>, stop: &AtomicBool) -> bool {
    loop {
        let m = tokio::select! {
            m = stream.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.load(Ordering::Relaxed) { return false; }
                continue;
            }
        };
        match m {
            Some(Ok(Message::Text(t))) => {
                if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                    note(state, &v);
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
            Some(Ok(_)) => {}
        }
    }
}

/// A `url` (`http://host:port`) from `joined.nodes` as the signaling endpoint on that node.
fn signal_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/v1/signal")
}

enum Attempt {
    /// `joined{resumed:true}` arrived: the connection to keep.
    Resumed(Box<(Sink, Stream)>),
    /// The server answered and refused (the SDK then starts a new session).
    Refused(String),
    /// The node could not be reached (or did not upgrade).
    Unreachable,
}

async fn try_resume(url: &str, token: &str, last_seq: u64, state: &Mutex<Victim>) -> Attempt {
    let url = format!("{url}?resume_token={token}&last_seq={last_seq}");
    let t0 = now_us();
    let ws = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await;
    let Ok(Ok((ws, _))) = ws else {
        return Attempt::Unreachable;
    };
    let t1 = now_us();
    let (sink, mut stream) = ws.split();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        match m {
            Ok(Some(Ok(Message::Text(t)))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                match v["type"].as_str() {
                    Some("joined") if v["resumed"] == true => {
                        let t2 = now_us();
                        let mut s = state.lock();
                        s.resumed_us = Some(t2);
                        s.upgrade_us = t1 - t0;
                        s.answer_us = t2 - t1;
                        return Attempt::Resumed(Box::new((sink, stream)));
                    }
                    Some("error") => {
                        return Attempt::Refused(v["code"].as_str().unwrap_or("error").into())
                    }
                    _ => note(state, &v),
                }
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return Attempt::Refused(format!(
                    "closed {}",
                    c.map_or("without a code".into(), |c| u16::from(c.code).to_string())
                ))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Attempt::Refused(format!("socket error: {e}")),
            Ok(None) => return Attempt::Refused("closed".into()),
            Err(_) => return Attempt::Refused("no answer within 10 s".into()),
        }
    }
}

/// A client of the node to be killed: reads until its socket drops, then reconnects as the
/// SDK does and resumes, then reads until `stop`.
async fn victim(
    mut stream: Stream,
    urls: Vec<String>,
    token: String,
    state: Arc<Mutex<Victim>>,
    stop: Arc<AtomicBool>,
    give_up: Duration,
) {
    if !read_all(&mut stream, &state, &stop).await {
        return;
    }
    drop(stream);
    let closed = now_us();
    {
        let mut s = state.lock();
        s.closed_us = Some(closed);
        s.early_close = KILLED_AT.load(Ordering::SeqCst) == 0;
    }
    let deadline = Instant::now() + give_up;
    // The SDK's loop: wait, try the current URL; a node that cannot be reached moves on to the
    // next one 100 ms later; the backoff doubles (to 5 s) and halves when moving on.
    let (mut delay, mut wait) = (200u64, 200u64);
    let mut idx = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            state.lock().failed = Some("gave up".into());
            return;
        }
        delay = (delay * 2).min(5000);
        wait = delay;
        let last_seq = {
            let mut s = state.lock();
            s.attempts += 1;
            s.last_seq
        };
        match try_resume(&urls[idx], &token, last_seq, &state).await {
            Attempt::Resumed(conn) => {
                state.lock().resumed_on = Some(urls[idx].clone());
                let (_sink, mut stream) = *conn;
                read_all(&mut stream, &state, &stop).await;
                return;
            }
            Attempt::Refused(why) => {
                state.lock().failed = Some(why);
                return;
            }
            Attempt::Unreachable => {
                if urls.len() > 1 {
                    idx = (idx + 1) % urls.len();
                    if idx != 0 {
                        wait = 100;
                        delay = (delay / 2).max(200);
                    }
                }
            }
        }
    }
}

/// A peer on a surviving node: sends numbered candidates to its partner at `period`, and
/// counts the `peer_left` it hears. Returns the send time of every number (index n - 1).
async fn peer(
    mut sink: Sink,
    mut stream: Stream,
    target: String,
    period: Duration,
    offset: Duration,
    until: Instant,
    left: Arc<Mutex<BTreeMap<String, u64>>>,
) -> Vec<u64> {
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            let kind = match v["type"].as_str() {
                Some("peer_left") => format!(
                    "peer_left{}",
                    v["reason"]
                        .as_str()
                        .map_or(String::new(), |r| format!("({r})"))
                ),
                Some("error") => format!("error({})", v["code"].as_str().unwrap_or("?")),
                _ => continue,
            };
            *left.lock().entry(kind).or_default() += 1;
        }
    });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    loop {
        let at = tick.tick().await;
        if at.into_std() >= until {
            break;
        }
        let n = sent.len() as u64 + 1;
        let t = now_us();
        let m = json!({"type":"ice_candidate","target":target,"candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0","sdpMid":"0","sdpMLineIndex":0,"n":n}});
        if sink.send(Message::text(m.to_string())).await.is_err() {
            break;
        }
        sent.push(t);
    }
    // Keep the socket open until the reader is stopped (the partner may still be resuming).
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let _ = sink.close().await;
    sent
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    START.get_or_init(Instant::now);
    anyhow::ensure!(args.url.len() >= 2, "give at least two --url");
    let keyring = Arc::new(signal_load::keyring(&args.secret)?);
    let stop = Arc::new(AtomicBool::new(false));
    let left = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));

    // Join: first the clients of the node to kill, then their peers on the other nodes.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut tasks = Vec::new();
    for r in 0..args.rooms {
        let (url, keyring, sem) = (args.url[0].clone(), keyring.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            join(&url, &keyring, &format!("fa{r}"), &format!("fo-{r}")).await
        }));
    }
    let mut victims = Vec::new();
    for t in tasks {
        victims.push(t.await??);
    }
    let mut tasks = Vec::new();
    for r in 0..args.rooms {
        let url = args.url[1 + r % (args.url.len() - 1)].clone();
        let (keyring, sem) = (keyring.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            join(&url, &keyring, &format!("fb{r}"), &format!("fo-{r}")).await
        }));
    }
    let mut peers = Vec::new();
    for t in tasks {
        peers.push(t.await??);
    }
    println!(
        "[{}] joined {} rooms of two in {:.2} s: {} clients on {} (to be killed), their peers on {}",
        args.label,
        args.rooms,
        t0.elapsed().as_secs_f64(),
        args.rooms,
        args.url[0],
        args.url[1..].join(", ")
    );

    // Clients of the first node read (and later resume); peers send.
    let give_up = Duration::from_secs_f64(args.give_up);
    let mut states = Vec::new();
    let mut victim_tasks = Vec::new();
    for (_sink, stream, joined) in victims.drain(..) {
        let urls: Vec<String> = match joined["nodes"].as_array() {
            Some(nodes) if !nodes.is_empty() => nodes
                .iter()
                .filter_map(|n| n["url"].as_str())
                .map(signal_url)
                .collect(),
            _ => args.url.clone(),
        };
        let token = joined["resume_token"]
            .as_str()
            .context("joined without resume_token")?
            .to_string();
        let state = Arc::new(Mutex::new(Victim::default()));
        states.push(state.clone());
        // The sending half is not used; it stays alive inside the task so the socket stays open.
        let stop = stop.clone();
        victim_tasks.push(tokio::spawn(async move {
            let _sink = _sink;
            victim(stream, urls, token, state, stop, give_up).await
        }));
    }
    let period = Duration::from_secs_f64(args.rooms as f64 / args.rate.max(1) as f64);
    let until = Instant::now() + Duration::from_secs_f64(args.before + args.after);
    let mut peer_tasks = Vec::new();
    for (r, (sink, stream, _)) in peers.drain(..).enumerate() {
        let offset = period.mul_f64((r % 997) as f64 / 997.0);
        peer_tasks.push(tokio::spawn(peer(
            sink,
            stream,
            format!("fa{r}"),
            period,
            offset,
            until,
            left.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_secs_f64(args.before)).await;
    let kill_us = now_us();
    KILLED_AT.store(kill_us.max(1), Ordering::SeqCst);
    // SAFETY: kill(2) with a plain pid and signal has no memory effects on this process.
    let rc = unsafe { libc::kill(args.kill_pid, libc::SIGKILL) };
    anyhow::ensure!(
        rc == 0,
        "kill {}: {}",
        args.kill_pid,
        std::io::Error::last_os_error()
    );
    let mut sent = Vec::new();
    for t in peer_tasks {
        sent.push(t.await?);
    }
    stop.store(true, Ordering::Relaxed);
    for t in victim_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }

    // Resumes.
    let mut resumed: Vec<u32> = Vec::new();
    let mut closed: Vec<u32> = Vec::new();
    let (mut upgrade, mut answer): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut on: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut early = 0;
    for s in &states {
        let s = s.lock();
        early += s.early_close as u64;
        if let Some(c) = s.closed_us {
            closed.push(c.saturating_sub(kill_us) as u32);
        }
        match (s.resumed_us, &s.failed) {
            (Some(t), _) => {
                resumed.push(t.saturating_sub(kill_us) as u32);
                upgrade.push(s.upgrade_us as u32);
                answer.push(s.answer_us as u32);
                *on.entry(s.resumed_on.clone().unwrap_or_default())
                    .or_default() += 1;
                *attempts.entry(s.attempts).or_default() += 1;
            }
            (None, Some(why)) => *failed.entry(why.clone()).or_default() += 1,
            (None, None) => *failed.entry("never dropped".into()).or_default() += 1,
        }
    }
    for v in [&mut resumed, &mut closed, &mut upgrade, &mut answer] {
        v.sort_unstable();
    }
    println!(
        "[{}] resumed {}/{} (failed {}{}); SIGKILL to joined{{resumed:true}}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.label,
        resumed.len(),
        states.len(),
        states.len() - resumed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {failed:?}")
        },
        pct(&resumed, 0.5),
        pct(&resumed, 0.95),
        pct(&resumed, 0.99),
        pct(&resumed, 1.0),
    );
    println!(
        "[{}] drop seen {:.1} ms (p50) / {:.1} ms (max) after the SIGKILL{}; connection attempts until resumed: {}; resumed on: {}",
        args.label,
        pct(&closed, 0.5),
        pct(&closed, 1.0),
        if early > 0 {
            format!(" ({early} dropped before it)")
        } else {
            String::new()
        },
        attempts
            .iter()
            .map(|(a, n)| format!("{a}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        on.iter()
            .map(|(u, n)| format!("{u} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );

    println!(
        "[{}] the resuming attempt: WebSocket open (TCP + upgrade) p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; then joined{{resumed}} p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        args.label,
        pct(&upgrade, 0.5),
        pct(&upgrade, 0.95),
        pct(&upgrade, 1.0),
        pct(&answer, 0.5),
        pct(&answer, 0.95),
        pct(&answer, 1.0),
    );

    // Messages from the peers: delivered, by when they were sent.
    #[derive(Default)]
    struct Tally {
        sent: u64,
        delivered: u64,
    }
    let (mut before, mut between, mut after) =
        (Tally::default(), Tally::default(), Tally::default());
    let mut dupes = 0u64;
    for (state, times) in states.iter().zip(&sent) {
        let s = state.lock();
        let got: HashSet<u64> = s.got.iter().copied().collect();
        dupes += (s.got.len() - got.len()) as u64;
        let back = s.resumed_us.unwrap_or(u64::MAX);
        for (i, &t) in times.iter().enumerate() {
            let tally = if t < kill_us {
                &mut before
            } else if t < back {
                &mut between
            } else {
                &mut after
            };
            tally.sent += 1;
            tally.delivered += got.contains(&(i as u64 + 1)) as u64;
        }
    }
    let show = |t: &Tally| format!("{}/{}", t.delivered, t.sent);
    println!(
        "[{}] peers' messages delivered: sent before the kill {}, between the kill and the partner's resume {}, after the resume {}; duplicates {}",
        args.label,
        show(&before),
        show(&between),
        show(&after),
        dupes
    );
    let heard = left.lock();
    println!(
        "[{}] peers heard: {}",
        args.label,
        if heard.is_empty() {
            "no peer_left, no error".to_string()
        } else {
            heard
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(())
}
