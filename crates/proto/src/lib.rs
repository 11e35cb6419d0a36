//! Protocol buffers shared by Switchboard's gRPC surfaces.
//!
//! - [`inference`]: the `inference.Inference/StreamPredict` contract of the reference ML
//!   servicer (grpcio), byte-compatible.
//! - [`signal`]: `switchboard.signal.v1.Signal/Connect`, signaling as a bidirectional stream.
//!
//! Code is generated at build time by `protox` + `tonic-prost-build`; no `protoc` binary is used.

#![allow(clippy::all, missing_docs)]

pub mod inference {
    tonic::include_proto!("inference");
}

pub mod signal {
    tonic::include_proto!("switchboard.signal.v1");
}

/// The raw .proto sources, for tools and docs that want to show them.
pub const INFERENCE_PROTO: &str = include_str!("../proto/inference.proto");
/// The raw signaling .proto source.
pub const SIGNAL_PROTO: &str = include_str!("../proto/signal.proto");
