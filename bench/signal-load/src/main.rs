//! `signal-load`: N WebSocket clients in rooms of K, joining with the JSON signaling dialect
//! that Switchboard shares with the reference Python signaling server, then relaying offers
//! and ICE candidates to their room neighbour at a given total rate. Reports joins/s, server
//! memory per idle joined connection, relay latency p50/p99, throughput, loss and server CPU
//! per relayed message (from /proc/<server-pid>).
//!
//! ```text
//! signal-load --url ws://127.0.0.1:7880/v1/signal --secret S --server-pid PID \
//!             --clients 1000 --room-size 4 --rate 20000 --duration 10
//! ```
//! Without `--secret` no token is sent (the reference Python signaling server,
//! bench/reference_signaling_server.py, takes none).

use anyhow::Context;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Signaling endpoint, e.g. ws://127.0.0.1:7880/v1/signal or ws://127.0.0.1:8765
    #[arg(long)]
    url: String,
    /// HS256 secret (kid "k1") to mint a ticket per client; omit for servers without auth.
    #[arg(long)]
    secret: Option<String>,
    /// Server process id, for CPU and memory figures.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Total relayed messages per second across all clients (0 = only join and idle).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of relaying.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connection attempts during the join phase.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Label printed in the summary line.
    #[arg(long, default_value = "server")]
    label: String,
}

static START: OnceLock<Instant> = OnceLock::new();
fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

struct Joined {
    sink: Sink,
    reader: tokio::task::JoinHandle<()>,
}

static LATENCIES: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

async fn join_one(
    args: &Args,
    keyring: Option<&switchboard_auth::KeyRing>,
    i: usize,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Joined> {
    let id = format!("p{i}");
    let room = format!("room-{}", i / args.room_size);
    let url = match keyring {
        Some(k) => {
            let req =
                switchboard_auth::MintRequest::new(id.clone(), [switchboard_auth::Scope::Webrtc]);
            let (tok, _) = k
                .mint(&req, switchboard_auth::unix_now())
                .map_err(anyhow::Error::msg)?;
            format!("{}?access_token={tok}", args.url)
        }
        None => args.url.clone(),
    };
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("connect")?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(
        json!({"type":"join","peer_id":id,"room_id":room}).to_string(),
    ))
    .await?;
    // Wait for room_peers (both servers send it).
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("join timeout")?
            .context("closed during join")??;
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "room_peers" {
                break;
            }
            if v["type"] == "error" {
                anyhow::bail!("join refused: {v}");
            }
        }
    }
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            let ts = match v["type"].as_str() {
                Some("ice_candidate") => v["candidate"]["t"].as_u64(),
                Some("offer") => v["offer"]["t"].as_u64(),
                _ => None,
            };
            if let Some(ts) = ts {
                received.fetch_add(1, Ordering::Relaxed);
                if !stop.load(Ordering::Relaxed) {
                    let l = now_us().saturating_sub(ts).min(u32::MAX as u64) as u32;
                    if let Ok(mut v) = LATENCIES.lock() {
                        v.push(l);
                    }
                }
            }
        }
    });
    Ok(Joined { sink, reader })
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    START.get_or_init(Instant::now);
    let keyring = match &args.secret {
        Some(s) => {
            let cfg = switchboard_auth::AuthConfig {
                keys: vec![switchboard_auth::KeyConfig {
                    kid: "k1".into(),
                    secret: Some(s.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            };
            Some(Arc::new(switchboard_auth::KeyRing::from_config(&cfg)?))
        }
        None => None,
    };
    let pid = args.server_pid;
    let rss0 = pid.and_then(proc_rss_kib);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Join phase.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let (args, keyring, received, stop, sem) = (
            args.clone(),
            keyring.clone(),
            received.clone(),
            stop.clone(),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            join_one(&args, keyring.as_deref(), i, received, stop).await
        }));
    }
    let mut joined = Vec::with_capacity(args.clients);
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok(j) => joined.push(Some(j)),
            Err(e) => {
                if failed < 3 {
                    eprintln!("join failed: {e:#}");
                }
                failed += 1;
                joined.push(None);
            }
        }
    }
    let join_secs = t0.elapsed().as_secs_f64();
    let ok = joined.iter().filter(|j| j.is_some()).count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = pid.and_then(proc_rss_kib);
    let mem_per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if ok > 0 => Some((b.saturating_sub(a)) as f64 / ok as f64),
        _ => None,
    };
    println!(
        "[{}] joined {ok}/{} in {join_secs:.2} s = {:.0} joins/s; server RSS {} -> {} KiB = {} KiB per idle joined connection",
        args.label,
        args.clients,
        ok as f64 / join_secs,
        rss0.map_or("?".into(), |v| v.to_string()),
        rss1.map_or("?".into(), |v| v.to_string()),
        mem_per_conn.map_or("?".into(), |v| format!("{v:.1}")),
    );
    if args.rate == 0 {
        return Ok(());
    }

    // Relay phase: client i sends to the next member of its room.
    let per_client = args.rate as f64 / ok.max(1) as f64;
    let period = Duration::from_secs_f64(1.0 / per_client.max(1e-3));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = pid.and_then(proc_cpu_seconds);
    let me0 = proc_cpu_seconds(std::process::id());
    let r0 = received.load(Ordering::Relaxed);
    let t_relay = Instant::now();
    let deadline = t_relay + Duration::from_secs(args.duration);
    let sdp_pad = "a".repeat(900);
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (i, j) in joined.into_iter().enumerate() {
        let Some(Joined { mut sink, reader }) = j else {
            continue;
        };
        readers.push(reader);
        let room_base = i / args.room_size * args.room_size;
        let room_len = args.room_size.min(args.clients - room_base);
        if room_len < 2 {
            continue;
        }
        let target = format!("p{}", room_base + (i - room_base + 1) % room_len);
        let sent = sent.clone();
        let pad = sdp_pad.clone();
        senders.push(tokio::spawn(async move {
            // Spread start times so clients do not tick in lockstep.
            let offset = period.mul_f64((i % 997) as f64 / 997.0);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n: u64 = 0;
            loop {
                let at = tick.tick().await;
                if at.into_std() >= deadline {
                    break;
                }
                n += 1;
                let m = if n.is_multiple_of(5) {
                    json!({"type":"offer","target":target,"offer":{"type":"offer","sdp":pad,"t":now_us()}})
                } else {
                    json!({"type":"ice_candidate","target":target,"candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0","sdpMid":"0","sdpMLineIndex":0,"t":now_us()}})
                };
                if sink.send(Message::text(m.to_string())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        }));
    }
    let mut sinks = Vec::new();
    for s in senders {
        if let Ok(sink) = s.await {
            sinks.push(sink);
        }
    }
    let relay_secs = t_relay.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // drain
    stop.store(true, Ordering::Relaxed);
    let cpu1 = pid.and_then(proc_cpu_seconds);
    let me1 = proc_cpu_seconds(std::process::id());
    let got = received.load(Ordering::Relaxed) - r0;
    let sent = sent.load(Ordering::Relaxed);
    for mut s in sinks {
        let _ = s.close().await;
    }
    for r in readers {
        r.abort();
    }
    let mut lat = std::mem::take(&mut *LATENCIES.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    lat.sort_unstable();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if got > 0 => format!("{:.1}", (b - a) * 1e6 / got as f64),
        _ => "?".into(),
    };
    println!(
        "[{}] relay: sent {sent} in {relay_secs:.1} s ({:.0}/s offered), received {got} ({:.0}/s), loss {:.3}%, latency p50 {:.2} ms p99 {:.2} ms (n={}), server CPU {cpu} us/msg; load generator CPU {} s",
        args.label,
        sent as f64 / relay_secs,
        got as f64 / relay_secs,
        if sent > 0 { 100.0 * (1.0 - got as f64 / sent as f64) } else { 0.0 },
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        match (me0, me1) {
            (Some(a), Some(b)) => format!("{:.1}", b - a),
            _ => "?".into(),
        },
    );
    Ok(())
}
