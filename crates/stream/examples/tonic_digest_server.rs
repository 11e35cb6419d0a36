//! Benchmark reference (d): a bare tonic server for `inference.Inference/StreamPredict` with the
//! same chunking and the same work as Switchboard's `local:digest` worker (same payload JSON,
//! same bytes), so the gateway can be compared with "just tonic".
//!
//!     cargo run --release -p switchboard-stream --example tonic_digest_server -- 127.0.0.1:0
//!
//! Prints `tonic-digest listening ADDR`.

use futures::Stream;
use std::pin::Pin;
use switchboard_proto::inference::inference_server::{Inference, InferenceServer};
use switchboard_proto::inference::{PredictChunk, PredictRequest};
use switchboard_stream::backend::{digest_part, DigestParams};

#[derive(Default)]
struct Digest;

type Out = Pin<Box<dyn Stream<Item = Result<PredictChunk, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Inference for Digest {
    type StreamPredictStream = Out;

    async fn stream_predict(
        &self,
        req: tonic::Request<PredictRequest>,
    ) -> Result<tonic::Response<Out>, tonic::Status> {
        let r = req.into_inner();
        let p = DigestParams::parse(&r.payload)
            .map_err(|s| tonic::Status::invalid_argument(s.message))?;
        let seed = p.seed.clone().unwrap_or(r.task_id).into_bytes();
        let chunks = p.chunks as u64;
        let cb = p.chunk_bytes as usize;
        let delay = std::time::Duration::from_millis(p.delay_ms as u64);
        let s = futures::stream::unfold(0u64, move |i| {
            let seed = seed.clone();
            async move {
                if i > chunks {
                    return None;
                }
                if i == chunks {
                    let done = PredictChunk {
                        index: -1,
                        partial: Vec::new(),
                        done: true,
                    };
                    return Some((Ok(done), i + 1));
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let c = PredictChunk {
                    index: i as i32,
                    partial: digest_part(&seed, i, cb),
                    done: false,
                };
                Some((Ok(c), i + 1))
            }
        });
        Ok(tonic::Response::new(Box::pin(s)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("tonic-digest listening {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(InferenceServer::new(Digest))
        // Nagle off, as tonic does when it binds itself (and as Switchboard does).
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
