//! Switchboard's gRPC server-streaming gateway: `inference.Inference/StreamPredict` (the
//! reference ML servicer's contract, byte-compatible) served on the main HTTP port as gRPC over cleartext HTTP/2 and as
//! gRPC-Web (binary and text) for browsers, with the ticket check built in.
//!
//! Data flow: [`gateway`] (the edge: CORS, ticket with scope `grpc`, deadline, limits, routing)
//! → a [`backend::Backend`] chosen by `[[stream.routes]]` — an [`upstream::UpstreamPool`] of gRPC
//! servers over HTTP/2, or a [`backend::LocalBackend`] running an in-process
//! [`backend::LocalWorker`] — → back out through a pull-based response body, one chunk at a
//! time, so a slow client slows the producer (HTTP/2 flow control end to end) and a client that
//! leaves cancels it. Progress for long streams goes to a [`progress::ProgressSink`] (signaling).
//! Wire parsing is sans-IO in [`wire`]; every failure is a gRPC [`Status`].

pub mod backend;
pub mod coalesce;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod progress;
pub mod status;
pub mod upstream;
pub mod wire;

pub use backend::{Backend, BackendRequest, ChunkStream, DigestWorker, LocalWorker, WorkerJob};
pub use config::{LbPolicy, RouteConfig, StreamConfig, UpstreamConfig};
pub use gateway::{check_config, Gateway, StreamError};
pub use metrics::StreamMetrics;
pub use progress::{FnSink, ProgressEvent, ProgressSink, ProgressState, RecordingSink};
pub use status::{Code, Status};
