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
//!
//! Several nodes of one cluster: `--url` once per node; member k of every room connects to the
//! k-th URL (modulo their number), so with two URLs and rooms of 2 every relay crosses nodes.
//! `--server-pid` once per server process (CPU and memory are summed). `--rate` takes a list
//! (`--rate 5000,10000,20000`): the same joined clients relay at each rate in turn and stop
//! after the first rate with loss; the last line names the highest loss-free rate.
//! `--redis-url` reads the cluster Redis's `INFO` before and after each rate and reports its
//! commands and CPU per relayed message. `--join-waves` lets every room's k-th members join only
//! after its earlier members have (no two members of a room joining at the same moment). After
//! each rate a `machine:` line says how busy the cores were and how much of that went to other
//! processes than the servers, Redis and this one.

use anyhow::Context;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_load::{
    machine_busy_seconds, pct, proc_cpu_seconds, proc_rss_kib, sum_over, with_ticket, RedisStats,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Signaling endpoint, e.g. ws://127.0.0.1:7880/v1/signal or ws://127.0.0.1:8765. Given
    /// more than once (nodes of one cluster), member k of every room connects to the k-th.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// HS256 secret (kid "k1") to mint a ticket per client; omit for servers without auth.
    #[arg(long)]
    secret: Option<String>,
    /// Server process id, for CPU and memory figures; once per server (they are summed).
    #[arg(long)]
    server_pid: Vec<u32>,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Total relayed messages per second across all clients (0 = only join and idle). A
    /// comma-separated list steps through the rates with the same clients, stopping after the
    /// first one with loss.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rate: Vec<u64>,
    /// With a list of rates: run every rate even after one had loss.
    #[arg(long)]
    all_rates: bool,
    /// Seconds of relaying (per rate).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Join room member by room member: the k-th member of every room starts joining once
    /// every room's earlier members have joined (no two members of a room join at once).
    #[arg(long)]
    join_waves: bool,
    /// Concurrent connection attempts during the join phase.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Redis of the cluster (redis://host:port/): its commands and CPU per relayed message.
    #[arg(long)]
    redis_url: Option<String>,
    /// Label printed in the summary line.
    #[arg(long, default_value = "server")]
    label: String,
}

static START: OnceLock<Instant> = OnceLock::new();
fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
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
/// `error` messages and `peer_left` the clients received after joining, by code (reported
/// with each rate, then cleared): a relay the server refused is lost.
static NOTICES: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn notice(kind: String) {
    if let Ok(mut m) = NOTICES.lock() {
        *m.entry(kind).or_default() += 1;
    }
}

async fn join_one(
    args: &Args,
    keyring: Option<&switchboard_auth::KeyRing>,
    i: usize,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Joined> {
    let id = format!("p{i}");
    let room = format!("room-{}", i / args.room_size);
    let base = &args.url[(i % args.room_size) % args.url.len()];
    let url = with_ticket(base, keyring, &id)?;
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
                Some("error") => {
                    notice(format!("error {}", v["code"].as_str().unwrap_or("?")));
                    None
                }
                Some("peer_left") => {
                    notice("peer_left".into());
                    None
                }
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

fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A joined client's sending half; `index` places it in its room.
struct Client {
    index: usize,
    sink: Sink,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    START.get_or_init(Instant::now);
    let keyring = match &args.secret {
        Some(s) => Some(Arc::new(signal_load::keyring(s)?)),
        None => None,
    };
    let mut redis = match &args.redis_url {
        Some(u) => Some(
            redis::Client::open(u.as_str())?
                .get_multiplexed_async_connection()
                .await
                .context("connect to Redis")?,
        ),
        None => None,
    };
    let pids = args.server_pid.clone();
    let rss = |pids: &[u32]| sum_over(pids, |p| proc_rss_kib(p).map(|v| v as f64));
    let cpu = |pids: &[u32]| sum_over(pids, proc_cpu_seconds);
    let rss0 = rss(&pids);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Join phase: everyone at once, or with --join-waves the k-th member of every room only
    // after every room's members before it have joined.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let waves: Vec<Vec<usize>> = if args.join_waves {
        (0..args.room_size)
            .map(|k| {
                (0..args.clients)
                    .filter(|i| i % args.room_size == k)
                    .collect()
            })
            .collect()
    } else {
        vec![(0..args.clients).collect()]
    };
    let mut joined: Vec<Option<Joined>> = (0..args.clients).map(|_| None).collect();
    let mut failed = 0;
    for wave in waves {
        let mut tasks = Vec::with_capacity(wave.len());
        for i in wave {
            let (args, keyring, received, stop, sem) = (
                args.clone(),
                keyring.clone(),
                received.clone(),
                stop.clone(),
                sem.clone(),
            );
            tasks.push((
                i,
                tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    join_one(&args, keyring.as_deref(), i, received, stop).await
                }),
            ));
        }
        for (i, t) in tasks {
            match t.await? {
                Ok(j) => joined[i] = Some(j),
                Err(e) => {
                    if failed < 3 {
                        eprintln!("join failed: {e:#}");
                    }
                    failed += 1;
                }
            }
        }
    }
    let join_secs = t0.elapsed().as_secs_f64();
    let ok = joined.iter().filter(|j| j.is_some()).count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss(&pids);
    let mem_per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a).max(0.0) / ok as f64),
        _ => None,
    };
    println!(
        "[{}] joined {ok}/{} in {join_secs:.2} s = {:.0} joins/s; server RSS {} -> {} KiB = {} KiB per idle joined connection",
        args.label,
        args.clients,
        ok as f64 / join_secs,
        rss0.map_or("?".into(), |v| format!("{v:.0}")),
        rss1.map_or("?".into(), |v| format!("{v:.0}")),
        mem_per_conn.map_or("?".into(), |v| format!("{v:.1}")),
    );
    if args.rate.iter().all(|&r| r == 0) {
        return Ok(());
    }

    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for (i, j) in joined.into_iter().enumerate() {
        let Some(Joined { sink, reader }) = j else {
            continue;
        };
        readers.push(reader);
        clients.push(Client { index: i, sink });
    }
    let ladder = args.rate.len() > 1;
    let mut steps: Vec<Relayed> = Vec::new();
    for &rate in args.rate.iter().filter(|&&r| r > 0) {
        let label = if ladder {
            format!("{}@{rate}", args.label)
        } else {
            args.label.clone()
        };
        let redis0 = match redis.as_mut() {
            Some(c) => Some(RedisStats::read(c).await?),
            None => None,
        };
        stop.store(false, Ordering::Relaxed);
        let (step, back) = relay(&args, &label, rate, clients, &received, &stop, &cpu).await?;
        clients = back;
        let mut redis_cpu = 0.0;
        if let (Some(c), Some(before)) = (redis.as_mut(), redis0) {
            let d = RedisStats::read(c).await?.since(&before);
            redis_cpu = d.cpu_seconds;
            println!("[{label}] redis: {}", d.per_message(step.received.max(1)));
        }
        if let (Some(busy), Some(ours)) = (step.busy, step.ours) {
            println!(
                "[{label}] machine: {:.2} of {} cores busy over the {:.1} s; servers, Redis and load generator {:.2}, other processes {:.2}",
                busy / step.window,
                machine_cores(),
                step.window,
                (ours + redis_cpu) / step.window,
                (busy - ours - redis_cpu).max(0.0) / step.window,
            );
        }
        let lossy = step.loss > 0.0;
        steps.push(step);
        if lossy && !args.all_rates {
            break;
        }
        if ladder {
            // Let the servers settle (and the coalesced session writes pass) between rates.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if ladder {
        let best = steps.iter().filter(|s| s.loss <= 0.0).map(|s| s.offered);
        let best = best.fold(f64::NAN, f64::max);
        let next = steps.iter().find(|s| s.loss > 0.0);
        println!(
            "[{}] highest loss-free rate: {} msg/s{}",
            args.label,
            if best.is_nan() {
                "none".to_string()
            } else {
                format!("{best:.0}")
            },
            match next {
                Some(s) => format!(
                    " (next: {:.0} msg/s offered, {:.3}% loss)",
                    s.offered, s.loss
                ),
                None => " (no rate tried had loss)".to_string(),
            }
        );
    }
    for mut c in clients {
        let _ = c.sink.close().await;
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// What one rate gave: offered msg/s, loss in percent, messages received; the seconds from
/// the first message to the end of the drain, the machine's busy CPU seconds in them and the
/// servers' plus this process's.
struct Relayed {
    offered: f64,
    loss: f64,
    received: u64,
    window: f64,
    busy: Option<f64>,
    ours: Option<f64>,
}

/// One rate: every client relays to the next member of its room for `--duration` seconds,
/// then 2 s for the last messages to arrive. Prints the summary line; gives the sinks back.
async fn relay(
    args: &Args,
    label: &str,
    rate: u64,
    clients: Vec<Client>,
    received: &AtomicU64,
    stop: &AtomicBool,
    cpu: &dyn Fn(&[u32]) -> Option<f64>,
) -> anyhow::Result<(Relayed, Vec<Client>)> {
    let pids = &args.server_pid;
    let ok = clients.len();
    let per_client = rate as f64 / ok.max(1) as f64;
    let period = Duration::from_secs_f64(1.0 / per_client.max(1e-3));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu(pids);
    let me0 = proc_cpu_seconds(std::process::id());
    let busy0 = machine_busy_seconds();
    let r0 = received.load(Ordering::Relaxed);
    let t_relay = Instant::now();
    let deadline = t_relay + Duration::from_secs(args.duration);
    let sdp_pad = "a".repeat(900);
    let mut senders = Vec::new();
    let mut idle = Vec::new();
    for Client { index: i, mut sink } in clients {
        let room_base = i / args.room_size * args.room_size;
        let room_len = args.room_size.min(args.clients - room_base);
        if room_len < 2 {
            idle.push(Client { index: i, sink });
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
            Client { index: i, sink }
        }));
    }
    let mut back = idle;
    for s in senders {
        if let Ok(c) = s.await {
            back.push(c);
        }
    }
    let relay_secs = t_relay.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // drain
    stop.store(true, Ordering::Relaxed);
    let cpu1 = cpu(pids);
    let me1 = proc_cpu_seconds(std::process::id());
    let busy1 = machine_busy_seconds();
    let window = t_relay.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) - r0;
    let sent = sent.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *LATENCIES.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let notices = std::mem::take(&mut *NOTICES.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    lat.sort_unstable();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if got > 0 => format!("{:.1}", (b - a) * 1e6 / got as f64),
        _ => "?".into(),
    };
    let loss = if sent > 0 {
        100.0 * (1.0 - got as f64 / sent as f64)
    } else {
        0.0
    };
    println!(
        "[{label}] relay: sent {sent} in {relay_secs:.1} s ({:.0}/s offered), received {got} ({:.0}/s), loss {loss:.3}%, latency p50 {:.2} ms p99 {:.2} ms (n={}), server CPU {cpu} us/msg; load generator CPU {} s",
        sent as f64 / relay_secs,
        got as f64 / relay_secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        match (me0, me1) {
            (Some(a), Some(b)) => format!("{:.1}", b - a),
            _ => "?".into(),
        },
    );
    if !notices.is_empty() {
        let list: Vec<String> = notices.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("[{label}] clients were told: {}", list.join(", "));
    }
    back.sort_by_key(|c| c.index);
    let ours = match (cpu0, cpu1, me0, me1) {
        (Some(a), Some(b), Some(c), Some(d)) => Some(b - a + d - c),
        _ => None,
    };
    Ok((
        Relayed {
            offered: sent as f64 / relay_secs,
            loss,
            received: got,
            window,
            busy: busy0.zip(busy1).map(|(a, b)| b - a),
            ours,
        },
        back,
    ))
}
