//! SFU load tool: many simulated str0m participants in one process publish synthetic VP8/Opus at
//! realistic bitrates through one `switchboard-sfu` instance on loopback, and report outbound
//! packets per second per core of the SFU engine thread, forwarding latency and loss.
//!
//! The SFU engine runs alone on its own thread (a current-thread tokio runtime named
//! `sfu-engine`), so its CPU time — read from /proc/self/task/*/stat — is the SFU's cost; the
//! simulated clients run on a separate runtime.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use prometheus_client::registry::Registry;
use switchboard_sfu::peer::Peer;
use switchboard_sfu::{ParticipantHandle, Sfu, SfuConfig, SfuEvent};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load test for the Switchboard SFU")]
struct Args {
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (each sends one video and one audio track).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Receive-only subscribers per room (publishers also receive each other).
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Video bitrate per publisher, kbit/s (30 fps; keyframe every 2 s at 4x size).
    #[arg(long, default_value_t = 1200)]
    video_kbps: u64,
    /// Warm-up seconds (connect, first keyframes) before measuring.
    #[arg(long, default_value_t = 4)]
    warmup: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `[sfu] bwe_initial_kbps` for the SFU under test (0: no estimation/pacing).
    #[arg(long, default_value_t = 0)]
    bwe_initial_kbps: u64,
    /// `[sfu] egress` for the SFU under test: "auto" (the default: own while estimation is off), "own" or "str0m" (decision 0047).
    #[arg(long, default_value = "auto")]
    egress: String,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Nice value of the client runtime's threads (0: same as the SFU engine). The simulated
    /// participants stand for machines elsewhere; a positive value lets the engine thread take
    /// a CPU from them when a datagram arrives, as it would on a server of its own.
    #[arg(long, default_value_t = 0)]
    client_nice: i32,
}

/// How long participants keep receiving after the measured window, so frames sent just before
/// its end are not counted as lost.
const DRAIN: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Shared {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    packets_received: AtomicU64,
}

/// CPU time of the thread called `name`, in seconds, from /proc/self/task/*/schedstat (its first
/// field is the time spent on a CPU in nanoseconds; `stat`'s utime/stime count 10 ms ticks, too
/// coarse for an engine that is busy a fraction of a second per run).
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let p = e.ok()?.path();
        let comm = std::fs::read_to_string(p.join("comm")).ok()?;
        if comm.trim() == name {
            let stat = std::fs::read_to_string(p.join("schedstat")).ok()?;
            let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
            return Some(ns / 1e9);
        }
    }
    None
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = CancellationToken::new();
    let metrics = switchboard_sfu::metrics::SfuMetrics::default();
    let mut registry = Registry::with_prefix("switchboard");
    metrics.register(&mut registry);

    let nice = args.client_nice;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .on_thread_start(move || {
            if nice != 0 {
                // SAFETY: setpriority on this thread's own id; no memory is handed over.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
                }
            }
        })
        .build()?;
    // SFU engine on its own thread (`sfu-engine`), as in the server.
    let cfg = SfuConfig {
        udp_port: 0,
        ice_tcp: false,
        bind_ip: "127.0.0.1".into(),
        max_sessions: 100_000,
        bwe_initial_kbps: args.bwe_initial_kbps,
        egress: args.egress.parse().map_err(anyhow::Error::msg)?,
        ..SfuConfig::default()
    };
    let (sfu, engine) = rt.block_on(Sfu::start_on_thread(cfg, metrics.clone(), token.clone()))?;
    let report = rt.block_on(run(args.clone(), sfu.clone(), metrics.clone(), registry))?;
    token.cancel();
    drop(rt);
    let _ = engine.join();
    println!("{report}");
    Ok(())
}

async fn connect(
    sfu: &Sfu,
    room: &str,
    name: &str,
    publish: bool,
) -> anyhow::Result<(Peer, ParticipantHandle)> {
    let handle = sfu.join(room, name).await?;
    let mut peer = Peer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let offer = peer.offer(publish, publish);
    let answer = handle.accept_offer(&offer).await?;
    peer.accept_answer(&answer).map_err(anyhow::Error::msg)?;
    Ok((peer, handle))
}

#[allow(clippy::too_many_arguments)]
async fn participant(
    mut peer: Peer,
    mut handle: ParticipantHandle,
    publish: bool,
    video_kbps: u64,
    measure_from: Instant,
    end: Instant,
    shared: Arc<Shared>,
) -> Vec<u64> {
    let frame_bytes = (video_kbps * 1000 / 8 / 30) as usize;
    let mut next_frame = Instant::now();
    let mut frame = 0u64;
    let mut measuring = false;
    // Frames count by the time they were sent: a frame sent in [measure_from, end) counts as
    // received whenever it arrives, so none in flight at either edge is miscounted. Everyone
    // keeps receiving for DRAIN after `end` (publishers stop sending at `end`).
    peer.count_window = Some((measure_from, end));
    let mut base_packets = 0u64;
    let mut kf_seen = 0u64;
    loop {
        let now = Instant::now();
        if now >= end + DRAIN {
            break;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            peer.latencies_us.clear();
            base_packets = peer.received.values().map(|r| r.packets).sum();
        }
        if publish && now >= next_frame && now < end {
            let kf = frame.is_multiple_of(60) || peer.keyframe_requests > kf_seen;
            kf_seen = peer.keyframe_requests;
            let size = if kf { frame_bytes * 4 } else { frame_bytes };
            if peer.send_video(kf, size) && measuring && now < end {
                shared.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            peer.send_audio(100);
            if frame % 3 == 1 {
                // 50 audio packets/s on a 30 fps timeline: 1 + 2/3 per frame.
                peer.send_audio(100);
            }
            frame += 1;
            next_frame += Duration::from_micros(33_333);
        }
        let wake = if now < end {
            next_frame.min(end)
        } else {
            end + DRAIN
        };
        let wait = wake.saturating_duration_since(Instant::now());
        peer.run_for(
            wait.max(Duration::from_micros(200))
                .min(Duration::from_millis(20)),
        )
        .await;
        while let Some(ev) = handle.try_next_event() {
            if let SfuEvent::Offer(sdp) = ev {
                if let Ok(answer) = peer.accept_offer(&sdp) {
                    let _ = handle.accept_answer(&answer).await;
                }
            }
        }
    }
    // Count only frames of tracks that carry video (keyframes seen).
    shared
        .frames_received
        .fetch_add(peer.frames_in_window, Ordering::Relaxed);
    let packets: u64 = peer.received.values().map(|r| r.packets).sum();
    shared
        .packets_received
        .fetch_add(packets.saturating_sub(base_packets), Ordering::Relaxed);
    handle.leave().await;
    std::mem::take(&mut peer.latencies_us)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Approximate quantile from the forwarding-latency histogram (upper bucket bound).
fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map(|(le, _)| *le)
}

/// Share of forwarding-latency observations at or under each of `bounds` (seconds, bucket
/// bounds of the histogram), as percentages.
fn histogram_shares(buckets: &[(f64, f64)], bounds: &[f64]) -> Vec<f64> {
    let total = buckets.last().map_or(0.0, |b| b.1).max(1.0);
    bounds
        .iter()
        .map(|b| {
            let c = buckets
                .iter()
                .filter(|(le, _)| *le <= b * 1.000_001)
                .map(|(_, c)| *c)
                .fold(0.0, f64::max);
            100.0 * c / total
        })
        .collect()
}

/// Cumulative buckets of the SFU histogram `name` (`forwarding_latency`, `receive_queue`): (upper
/// bound in seconds, count).
fn histogram_buckets(text: &str, name: &str) -> Option<Vec<(f64, f64)>> {
    let prefix = format!("switchboard_sfu_{name}_seconds_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(prefix.as_str()) {
            let (le, v) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, v.trim().parse().ok()?));
        }
    }
    Some(buckets)
}

/// The buckets of histogram `name` over the measured window: the end's counts minus the start's,
/// so the warm-up (connections, first keyframes) is left out.
fn window_buckets(start: &str, end: &str, name: &str) -> Vec<(f64, f64)> {
    let before = histogram_buckets(start, name).unwrap_or_default();
    let mut after = histogram_buckets(end, name).unwrap_or_default();
    for (i, b) in after.iter_mut().enumerate() {
        b.1 -= before.get(i).map_or(0.0, |x| x.1);
    }
    after
}

async fn run(
    args: Args,
    sfu: Arc<Sfu>,
    metrics: switchboard_sfu::metrics::SfuMetrics,
    registry: Registry,
) -> anyhow::Result<String> {
    let shared = Arc::new(Shared::default());
    let mut peers = Vec::new();
    for r in 0..args.rooms {
        let room = format!("room{r}");
        for p in 0..args.publishers {
            peers.push((connect(&sfu, &room, &format!("pub{p}"), true).await?, true));
        }
        for s in 0..args.subscribers {
            peers.push((
                connect(&sfu, &room, &format!("sub{s}"), false).await?,
                false,
            ));
        }
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for ((peer, handle), publish) in peers {
        tasks.push(tokio::spawn(participant(
            peer,
            handle,
            publish,
            args.video_kbps,
            measure_from,
            end,
            shared.clone(),
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let mut text0 = String::new();
    prometheus_client::encoding::text::encode(&mut text0, &registry)?;
    let cpu0 = thread_cpu_seconds("sfu-engine").unwrap_or(0.0);
    let sent0 = metrics.datagrams_sent.get();
    let recv0 = metrics.datagrams_received.get();
    let t0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = thread_cpu_seconds("sfu-engine").unwrap_or(0.0);
    let sent1 = metrics.datagrams_sent.get();
    let recv1 = metrics.datagrams_received.get();
    let wall = t0.elapsed().as_secs_f64();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort_unstable();

    let buckets = window_buckets(&text0, &text, "forwarding_latency");
    let queue = window_buckets(&text0, &text, "receive_queue");
    let queue_p50 = histogram_quantile(&queue, 0.5);
    let queue_p99 = histogram_quantile(&queue, 0.99);
    let fwd_p50 = histogram_quantile(&buckets, 0.5);
    let fwd_p99 = histogram_quantile(&buckets, 0.99);
    let ms1 = 0.000_64 * std::f64::consts::SQRT_2; // the 905 µs bucket
    let shares = histogram_shares(&buckets, &[0.000_64, ms1, 0.001, 0.001_28, 0.002_56]);

    let cpu = (cpu1 - cpu0).max(1e-9);
    let out_pps = (sent1 - sent0) as f64 / wall;
    let in_pps = (recv1 - recv0) as f64 / wall;
    let per_core = (sent1 - sent0) as f64 / cpu;
    // Every subscriber (and every other publisher) of a room should get every frame.
    let receivers_per_frame = (args.subscribers + args.publishers - 1) as f64;
    let expected = shared.frames_sent.load(Ordering::Relaxed) as f64 * receivers_per_frame;
    let got = shared.frames_received.load(Ordering::Relaxed) as f64;
    let loss = if expected > 0.0 {
        (1.0 - got / expected).max(0.0)
    } else {
        0.0
    };
    Ok(format!(
        "rooms={} publishers/room={} subscribers/room={} video_kbps={} bwe_initial_kbps={} egress={} client_nice={} window={:.1}s\n\
         sfu outbound datagrams/s: {:.0}   inbound datagrams/s: {:.0}\n\
         sfu engine CPU: {:.2} core-seconds over {:.1}s ({:.0}% of one core)\n\
         outbound datagrams per engine core-second: {:.0}\n\
         forwarding latency inside the SFU (histogram bucket bound): p50 <= {} p99 <= {}\n\
         inbound datagrams' wait in the SFU socket's receive queue (counted in the latency above): p50 <= {} p99 <= {}\n\
         forwarding observations within 640 us / 905 us / 1 ms / 1.28 ms / 2.56 ms: {:.2}% / {:.2}% / {:.2}% / {:.2}% / {:.2}%\n\
         end-to-end client->SFU->client latency over {} frames: p50 {} us, p99 {} us\n\
         video frames expected {:.0}, received {:.0}, loss {:.2}%\n\
         RTP packets received by clients in window: {}",
        args.rooms,
        args.publishers,
        args.subscribers,
        args.video_kbps,
        args.bwe_initial_kbps,
        args.egress,
        args.client_nice,
        wall,
        out_pps,
        in_pps,
        cpu,
        wall,
        100.0 * cpu / wall,
        per_core,
        fwd_p50.map_or("n/a".into(), |v| format!("{:.0} us", v * 1e6)),
        fwd_p99.map_or("n/a".into(), |v| format!("{:.0} us", v * 1e6)),
        queue_p50.map_or("n/a".into(), |v| format!("{:.0} us", v * 1e6)),
        queue_p99.map_or("n/a".into(), |v| format!("{:.0} us", v * 1e6)),
        shares[0],
        shares[1],
        shares[2],
        shares[3],
        shares[4],
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        expected,
        got,
        loss * 100.0,
        shared.packets_received.load(Ordering::Relaxed),
    ))
}
