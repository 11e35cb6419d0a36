//! Backends: where a stream's chunks come from. Both kinds sit behind [`Backend`]: an
//! [`crate::upstream::UpstreamPool`] (gRPC servers over HTTP/2) and a [`LocalBackend`] wrapping
//! an in-process [`LocalWorker`].
//!
//! A backend returns a pull-based [`ChunkStream`]: nothing is produced or read ahead of what
//! the client consumes, which is how backpressure reaches the producer, and dropping the stream
//! is how cancellation reaches it.

use crate::status::Status;
pub use crate::wire::Messages;
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use prost::Message;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use switchboard_proto::inference::PredictChunk;

/// Encoded `PredictChunk` messages, already length-prefixed for the wire and grouped in runs
/// of one or more ([`Messages`]), in order. An upstream hands on its DATA frames' bytes as
/// they came, a local worker frames one message per item. The stream ends after the last
/// message; an `Err` ends it with that status.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Messages, Status>> + Send>>;

/// One stream as a backend sees it.
#[derive(Clone, Debug)]
pub struct BackendRequest {
    /// The ticket's `sub`.
    pub identity: String,
    pub task_id: String,
    pub payload: Bytes,
    /// The `PredictRequest` exactly as the client encoded it (forwarded unchanged upstream).
    pub raw: Bytes,
    /// When the whole stream must be over.
    pub deadline: Option<tokio::time::Instant>,
}

/// A source of chunks. `open` may retry internally, but only before it yields the first
/// chunk; once a chunk was handed out, failures end the stream.
#[async_trait]
pub trait Backend: Send + Sync {
    /// "local:<worker>" or the upstream's name, for logs and metrics.
    fn name(&self) -> &str;
    async fn open(&self, req: BackendRequest) -> Result<ChunkStream, Status>;
}

/// An in-process worker: validates a request and hands back a job that produces partial
/// results one at a time.
pub trait LocalWorker: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn start(&self, req: &BackendRequest) -> Result<Box<dyn WorkerJob>, Status>;
}

/// One running job. Each `next_part` does a bounded slice of work (it runs on the async
/// runtime, when the client is ready for more), so a job never runs ahead of its reader.
pub trait WorkerJob: Send {
    /// The next partial result, or `None` when the job is complete.
    fn next_part(&mut self) -> Option<Result<Bytes, Status>>;
    /// Pause before the next part (simulated think time); zero for pure CPU jobs.
    fn pause(&self) -> Duration {
        Duration::ZERO
    }
}

/// Serves a [`LocalWorker`] as a [`Backend`], framing parts like the reference ML servicer
/// (examples/python-ml-worker/server.py): `PredictChunk{index: i, partial, done: false}` per
/// part, then `{index: -1, done: true}`.
pub struct LocalBackend {
    name: String,
    worker: Arc<dyn LocalWorker>,
}

impl LocalBackend {
    pub fn new(worker: Arc<dyn LocalWorker>) -> Self {
        LocalBackend {
            name: format!("local:{}", worker.name()),
            worker,
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, req: BackendRequest) -> Result<ChunkStream, Status> {
        let job = self.worker.start(&req)?;
        struct St {
            job: Box<dyn WorkerJob>,
            index: i32,
            done: bool,
        }
        let st = St {
            job,
            index: 0,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let pause = st.job.pause();
            if st.index > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            match st.job.next_part() {
                Some(Ok(part)) => {
                    let msg = PredictChunk {
                        index: st.index,
                        partial: part.to_vec(),
                        done: false,
                    };
                    st.index = st.index.saturating_add(1);
                    Some((Ok(framed(&msg)), st))
                }
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(e), st))
                }
                None => {
                    st.done = true;
                    let msg = PredictChunk {
                        index: -1,
                        partial: Vec::new(),
                        done: true,
                    };
                    Some((Ok(framed(&msg)), st))
                }
            }
        })))
    }
}

/// One message, encoded straight behind its gRPC length prefix (no second copy).
fn framed(msg: &PredictChunk) -> Messages {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    msg.encode_raw(&mut b);
    Messages {
        framed: b.freeze(),
        count: 1,
        payload_bytes: len as u64,
    }
}

/// `local:digest` — a SHA-256 counter-mode byte generator. It is not AI: it is honest CPU work
/// with a checkable result. Part `i` is the concatenation of
/// `SHA-256(seed ‖ u64_le(i) ‖ u32_le(j))` for j = 0, 1, … cut to `chunk_bytes`.
///
/// Payload (JSON, every field optional):
/// `{"seed": "<text, default task_id>", "chunks": 16, "chunk_bytes": 1024, "delay_ms": 0}`
/// with `1 ≤ chunks ≤ 1_000_000`, `1 ≤ chunk_bytes ≤ 262_144`, `delay_ms ≤ 10_000`
/// (a pause between parts, to imitate a model thinking). The Python example servicer computes
/// the same bytes, so both backends can be checked against each other.
#[derive(Default)]
pub struct DigestWorker;

/// The digest worker's request payload.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestParams {
    pub seed: Option<String>,
    #[serde(default = "default_chunks")]
    pub chunks: u32,
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: u32,
    #[serde(default)]
    pub delay_ms: u32,
}

fn default_chunks() -> u32 {
    16
}
fn default_chunk_bytes() -> u32 {
    1024
}

impl DigestParams {
    pub const MAX_CHUNKS: u32 = 1_000_000;
    pub const MAX_CHUNK_BYTES: u32 = 256 * 1024;
    pub const MAX_DELAY_MS: u32 = 10_000;

    /// Parses and bounds a payload; an empty payload means all defaults.
    pub fn parse(payload: &[u8]) -> Result<DigestParams, Status> {
        let p: DigestParams = if payload.iter().all(|b| b.is_ascii_whitespace()) {
            serde_json::from_str("{}").map_err(|e| Status::internal(e.to_string()))?
        } else {
            serde_json::from_slice(payload).map_err(|e| {
                Status::invalid_argument(format!("digest payload must be JSON: {e}"))
            })?
        };
        if p.chunks == 0 || p.chunks > Self::MAX_CHUNKS {
            return Err(Status::invalid_argument(format!(
                "chunks must be 1..={}",
                Self::MAX_CHUNKS
            )));
        }
        if p.chunk_bytes == 0 || p.chunk_bytes > Self::MAX_CHUNK_BYTES {
            return Err(Status::invalid_argument(format!(
                "chunk_bytes must be 1..={}",
                Self::MAX_CHUNK_BYTES
            )));
        }
        if p.delay_ms > Self::MAX_DELAY_MS {
            return Err(Status::invalid_argument(format!(
                "delay_ms must be <= {}",
                Self::MAX_DELAY_MS
            )));
        }
        Ok(p)
    }
}

/// Part `index` of a digest stream (also used by tests and the benchmark's reference server).
pub fn digest_part(seed: &[u8], index: u64, chunk_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk_bytes + 32);
    let mut j: u32 = 0;
    let mut base = Sha256::new();
    base.update(seed);
    base.update(index.to_le_bytes());
    while out.len() < chunk_bytes {
        let mut h = base.clone();
        h.update(j.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        j = j.wrapping_add(1);
    }
    out.truncate(chunk_bytes);
    out
}

struct DigestJob {
    seed: Vec<u8>,
    next: u64,
    chunks: u64,
    chunk_bytes: usize,
    pause: Duration,
}

impl WorkerJob for DigestJob {
    fn next_part(&mut self) -> Option<Result<Bytes, Status>> {
        if self.next >= self.chunks {
            return None;
        }
        let part = digest_part(&self.seed, self.next, self.chunk_bytes);
        self.next += 1;
        Some(Ok(Bytes::from(part)))
    }
    fn pause(&self) -> Duration {
        self.pause
    }
}

impl LocalWorker for DigestWorker {
    fn name(&self) -> &'static str {
        "digest"
    }

    fn start(&self, req: &BackendRequest) -> Result<Box<dyn WorkerJob>, Status> {
        let p = DigestParams::parse(&req.payload)?;
        Ok(Box::new(DigestJob {
            seed: p.seed.unwrap_or_else(|| req.task_id.clone()).into_bytes(),
            next: 0,
            chunks: p.chunks as u64,
            chunk_bytes: p.chunk_bytes as usize,
            pause: Duration::from_millis(p.delay_ms as u64),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn req(payload: &str) -> BackendRequest {
        BackendRequest {
            identity: "u".into(),
            task_id: "t1".into(),
            payload: Bytes::from(payload.to_string()),
            raw: Bytes::new(),
            deadline: None,
        }
    }

    #[test]
    fn digest_known_answer() {
        // SHA-256("abc" ‖ 0u64 ‖ 0u32), computed independently with Python's hashlib.
        let p = digest_part(b"abc", 0, 32);
        assert_eq!(p.len(), 32);
        let mut h = Sha256::new();
        h.update(b"abc");
        h.update([0u8; 12]);
        assert_eq!(p, h.finalize().to_vec());
        assert_eq!(digest_part(b"abc", 1, 70).len(), 70);
        assert_ne!(digest_part(b"abc", 1, 32), digest_part(b"abc", 2, 32));
    }

    #[tokio::test]
    async fn local_backend_frames_like_the_seed() {
        let b = LocalBackend::new(Arc::new(DigestWorker));
        let s = b
            .open(req(r#"{"chunks":3,"chunk_bytes":40,"seed":"s"}"#))
            .await
            .unwrap();
        let msgs: Vec<_> = s.collect().await;
        assert_eq!(msgs.len(), 4);
        let one = |m: &Result<Messages, Status>| {
            let m = m.clone().unwrap();
            assert_eq!(m.count, 1);
            let frames = crate::wire::decode_all(&m.framed, 1 << 20).unwrap();
            assert_eq!(m.payload_bytes, frames[0].payload.len() as u64);
            PredictChunk::decode(frames[0].payload.clone()).unwrap()
        };
        for (i, m) in msgs[..3].iter().enumerate() {
            let c = one(m);
            assert_eq!(c.index, i as i32);
            assert!(!c.done);
            assert_eq!(c.partial, digest_part(b"s", i as u64, 40));
        }
        let last = one(&msgs[3]);
        assert_eq!((last.index, last.done, last.partial.len()), (-1, true, 0));
    }

    #[tokio::test]
    async fn bad_payloads_are_invalid_argument() {
        let b = LocalBackend::new(Arc::new(DigestWorker));
        for p in [
            "not json",
            r#"{"chunks":0}"#,
            r#"{"chunk_bytes":999999999}"#,
            r#"{"delay_ms":99999}"#,
            r#"{"other":1}"#,
        ] {
            let e = b.open(req(p)).await.err().expect(p);
            assert_eq!(e.code, crate::Code::InvalidArgument, "{p}");
        }
        assert!(b.open(req("")).await.is_ok());
    }
}
