//! Batched UDP datagram I/O for the TURN and SFU drivers, on the `quinn-udp` crate
//! (`docs/decisions/0049-udp-io-on-quinn-udp.md`): its `recvmmsg` for up to [`BATCH`]
//! datagrams per syscall, with their kernel receive times (`SO_TIMESTAMPNS`), and one `sendmsg`
//! per run of datagrams. `quinn-udp` is maintained, covers the platforms without `recvmmsg` or
//! GSO itself, and measured the same as hand-written `recvmmsg`/`sendmmsg` code in the TURN and
//! SFU load benchmarks, so that code is not kept. Buffers are owned by the batch and reused, so
//! the steady state allocates nothing.
//!
//! On the send side, runs of datagrams to one destination with equal sizes (a video frame split
//! into MTU-sized packets for one subscriber, a burst of relayed packets for one TURN client)
//! leave as one UDP GSO message (`UDP_SEGMENT`): the kernel walks its stack once per run and
//! splits the run into datagrams at the device (or, on loopback, at the receiving socket).
//! [`gso_runs`] is the pure rule that forms those runs; [`send_datagrams`] and
//! [`SendBatch::flush`] execute it while the process-wide [`GSO`] switch is on, and send a
//! run's datagrams one by one when the kernel refuses its GSO message. Both rules are ours:
//! `quinn-udp` sends what it is given.
//!
//! - `recv.rs`: [`RecvBatch`] (`recvmmsg` into reused slots) and kernel receive times
//!   ([`enable_rx_timestamps`], [`arrival`]).
//! - `send.rs`: [`SendBatch`] and [`send_datagrams`] (a GSO message per run, falling back to
//!   single datagrams when the kernel refuses one).
//! - `gso.rs`: the process-wide [`GSO`] switch and [`gso_runs`], the rule that forms runs.
//! - `quinn.rs`: the calls into `quinn-udp` and its one process-wide socket state.
//! - `sockopt.rs`: socket options ([`set_int_option`] on Linux, [`steer_reuseport`]).

mod gso;
mod quinn;
mod recv;
mod send;
mod sockopt;

pub use gso::{gso_runs, Gso, Run, GSO, GSO_MAX_BYTES, GSO_MAX_SEGMENT, GSO_MAX_SEGMENTS};
pub use recv::{arrival, enable_rx_timestamps, wall_clock, RecvBatch, MAX_QUEUE_AGE};
pub use send::{send_datagrams, SendBatch, SendOutcome};
#[cfg(target_os = "linux")]
pub use sockopt::set_int_option;
pub use sockopt::{steer_reuseport, Steering};

/// Datagrams per receive and per send batch (one `recvmmsg`; `quinn-udp` reads one datagram
/// per call where the platform has no `recvmmsg`).
pub const BATCH: usize = 32;
/// Largest datagram accepted; longer ones are truncated by the kernel and dropped here.
pub const SLOT: usize = 4096;
