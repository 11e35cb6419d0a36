//! Batched UDP datagram I/O for the TURN and SFU drivers: `recvmmsg`/`sendmmsg` on Linux (one
//! syscall for up to [`BATCH`] messages), a plain loop elsewhere. Buffers are owned by the batch
//! and reused, so the steady state allocates nothing.
//!
//! On the send side, runs of datagrams to one destination with equal sizes (a video frame split
//! into MTU-sized packets for one subscriber, a burst of relayed packets for one TURN client)
//! leave as one UDP GSO message (`UDP_SEGMENT`): the kernel walks its stack once per run and
//! splits the run into datagrams at the device (or, on loopback, at the receiving socket).
//! [`gso_runs`] is the pure rule that forms those runs; [`send_datagrams`] and
//! [`SendBatch::flush`] execute it while the process-wide [`GSO`] switch is on.
//!
//! - `recv.rs`: [`RecvBatch`] (`recvmmsg` into reused slots) and kernel receive times
//!   ([`enable_rx_timestamps`], [`arrival`]).
//! - `send.rs`: [`SendBatch`] and [`send_datagrams`] (`sendmmsg`, a GSO message per run,
//!   falling back to single datagrams when the kernel refuses one).
//! - `gso.rs`: the process-wide [`GSO`] switch and [`gso_runs`], the rule that forms runs.
//! - `sockopt.rs`: socket options ([`set_int_option`] on Linux, [`steer_reuseport`]).
//! - `sockaddr.rs`: `SocketAddr` to and from the kernel's `sockaddr_storage`.

mod gso;
#[cfg(feature = "quinn-udp")]
mod quinn;
mod recv;
mod send;
#[cfg(not(feature = "quinn-udp"))]
mod sockaddr;
mod sockopt;

pub use gso::{gso_runs, Gso, Run, GSO, GSO_MAX_BYTES, GSO_MAX_SEGMENT, GSO_MAX_SEGMENTS};
pub use recv::{arrival, enable_rx_timestamps, wall_clock, RecvBatch, MAX_QUEUE_AGE};
pub use send::{send_datagrams, SendBatch, SendOutcome};
#[cfg(target_os = "linux")]
pub use sockopt::set_int_option;
pub use sockopt::{steer_reuseport, Steering};

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Largest datagram accepted; longer ones are truncated by the kernel and dropped here.
pub const SLOT: usize = 4096;
