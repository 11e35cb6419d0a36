//! The `switchboard` binary's library half: configuration, wiring and the HTTP edge.
//!
//! `server` only wires and configures: it loads [`config::Config`], builds each role (ticket
//! office, signaling, TURN, stream gateway, SFU) from its crate, mounts their routes on one
//! HTTP listener that speaks HTTP/1.1 and cleartext HTTP/2, and runs until SIGTERM/SIGINT.
//! Integration tests start it in-process with [`app::start`] on ephemeral ports.

pub mod accept;
pub mod api;
pub mod app;
pub mod config;
pub mod conn_threads;
pub mod dev;
pub mod error;
pub mod ice;
pub mod memory;
pub mod metrics;
pub mod sfu_bridge;
pub mod state;
pub mod storage;
pub mod users;
pub mod web;

pub use app::{start, RunningServer};
pub use config::Config;
