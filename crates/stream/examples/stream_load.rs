//! Load generator for `inference.Inference/StreamPredict`: many concurrent server-streaming
//! calls over HTTP/2 (tonic client), reporting time to first chunk (p50/p99), chunks/s and MB/s
//! of `partial` payload. Server CPU is measured by bench/stream.sh around the run.
//!
//!     cargo run --release -p switchboard-stream --example stream_load -- \
//!         --target http://127.0.0.1:7880 --token "$TOKEN" --concurrency 32 --streams 640 \
//!         --payload '{"chunks":200,"chunk_bytes":1024}'
//!
//! Prints one JSON line.

use clap::Parser;
use std::time::{Duration, Instant};
use switchboard_proto::inference::inference_client::InferenceClient;
use switchboard_proto::inference::PredictRequest;

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "")]
    token: String,
    /// Streams open at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Streams in total.
    #[arg(long, default_value_t = 640)]
    streams: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value = "bench")]
    task: String,
    #[arg(long, default_value = r#"{"chunks":200,"chunk_bytes":1024}"#)]
    payload: String,
    #[arg(long, default_value = "")]
    label: String,
}

struct One {
    ttfc: Duration,
    chunks: u64,
    bytes: u64,
    ok: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cpu0 = own_cpu_seconds();
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(a.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(InferenceClient::new(ch));
    }
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let mut c = clients[w % clients.len()].clone();
        let a = a.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < a.streams {
                let mut req = tonic::Request::new(PredictRequest {
                    task_id: a.task.clone(),
                    payload: a.payload.as_bytes().to_vec(),
                });
                if !a.token.is_empty() {
                    req.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {}", a.token).parse().expect("token header"),
                    );
                }
                let s0 = Instant::now();
                let mut one = One {
                    ttfc: Duration::ZERO,
                    chunks: 0,
                    bytes: 0,
                    ok: false,
                };
                match c.stream_predict(req).await {
                    Ok(r) => {
                        let mut st = r.into_inner();
                        loop {
                            match st.message().await {
                                Ok(Some(m)) => {
                                    if one.chunks == 0 {
                                        one.ttfc = s0.elapsed();
                                    }
                                    one.chunks += 1;
                                    one.bytes += m.partial.len() as u64;
                                }
                                Ok(None) => {
                                    one.ok = true;
                                    break;
                                }
                                Err(e) => {
                                    eprintln!("stream error: {e}");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => eprintln!("call error: {e}"),
                }
                out.push(one);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut ttfc: Vec<f64> = all
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.ttfc.as_secs_f64() * 1000.0)
        .collect();
    ttfc.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| -> f64 {
        if ttfc.is_empty() {
            return f64::NAN;
        }
        ttfc[((ttfc.len() - 1) as f64 * p).round() as usize]
    };
    let chunks: u64 = all.iter().map(|o| o.chunks).sum();
    let bytes: u64 = all.iter().map(|o| o.bytes).sum();
    let failed = all.iter().filter(|o| !o.ok).count();
    let client_cpu = own_cpu_seconds() - cpu0;
    println!(
        "{{\"label\":\"{}\",\"streams\":{},\"failed\":{},\"seconds\":{:.3},\"ttfc_p50_ms\":{:.3},\"ttfc_p99_ms\":{:.3},\"chunks\":{},\"chunks_per_s\":{:.0},\"mb_per_s\":{:.2},\"client_cpu_us_per_chunk\":{:.2}}}",
        a.label,
        all.len(),
        failed,
        secs,
        pct(0.5),
        pct(0.99),
        chunks,
        chunks as f64 / secs,
        bytes as f64 / secs / 1e6,
        client_cpu * 1e6 / chunks.max(1) as f64
    );
    Ok(())
}

/// This process's CPU time (user + system) in seconds, from /proc/self/stat (0 where absent).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
