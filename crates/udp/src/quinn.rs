//! The calls into `quinn-udp`: its `recvmmsg` with control-message decoding for
//! [`crate::RecvBatch`], and one `sendmsg` per [`crate::Run`] (a GSO message for a run of
//! several) for [`crate::send_datagrams`] and [`crate::SendBatch`]. The batching, the GSO run
//! rule and the fallback to single datagrams are this crate's.
//!
//! One [`UdpSocketState`] serves every socket of the process. It is made once on a probe
//! socket: what it holds (how many GSO segments the kernel takes, whether `sendmsg` rejected
//! its control messages) is the kernel's, not one socket's. The sockets the drivers read and
//! write are not passed to `UdpSocketState::new`, which would switch on UDP GRO (a receive
//! buffer then holds up to 64 datagrams, so every slot would need 64 KiB), `IP_PKTINFO`,
//! `IP_RECVTOS` and don't-fragment on them; receive times come through `SO_TIMESTAMPNS`, set by
//! [`crate::enable_rx_timestamps`] and decoded by `quinn-udp` into `RecvMeta::timestamp`.
//!
//! `quinn-udp` passes no `MSG_DONTWAIT`: the sockets must be non-blocking (the drivers' are).
//! It retries `EINTR` itself.

use crate::BATCH;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

/// On Linux a whole batch is one `recvmmsg` (elsewhere `quinn-udp` reads fewer per call).
#[cfg(target_os = "linux")]
const _: () = assert!(BATCH <= quinn_udp::BATCH_SIZE);

/// The process's `quinn-udp` state, made on first use; `None` if no probe socket could be had.
fn state() -> Option<&'static UdpSocketState> {
    static STATE: OnceLock<Option<UdpSocketState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            UdpSocketState::new((&probe).into()).ok()
        })
        .as_ref()
}

fn no_state() -> io::Error {
    io::Error::other("quinn-udp: no socket state")
}

/// GSO segments per message the kernel takes (1: no GSO), as `quinn-udp` found out (its
/// kernel version check, then the `UDP_SEGMENT` option on a socket; always 1 off Linux); it
/// lowers this to 1 after a GSO send failed with `EIO` or `EINVAL`.
pub(crate) fn max_gso_segments() -> usize {
    state().map_or(1, |s| s.max_gso_segments())
}

/// One receive of up to [`BATCH`] datagrams into `slots` (consecutive parts of `buf`, `slot`
/// bytes each): one `recvmmsg`, or one `recvmsg` where the platform has no `recvmmsg`. Fills
/// `meta` and returns the count (`WouldBlock` when none).
pub(crate) fn recv(
    fd: i32,
    buf: &mut [u8],
    slot: usize,
    meta: &mut [RecvMeta; BATCH],
) -> io::Result<usize> {
    let state = state().ok_or_else(no_state)?;
    let mut chunks = buf.chunks_mut(slot);
    let mut slices: [IoSliceMut<'_>; BATCH] =
        std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("BATCH slots")));
    // SAFETY: `fd` is the caller's open socket, which outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    state.recv(UdpSockRef::from(&fd), &mut slices, meta)
}

/// One `sendmsg` of `contents` to `to`: one datagram, or with `segment` a GSO message cut into
/// datagrams of that size (the last may be shorter).
pub(crate) fn send(
    fd: i32,
    contents: &[u8],
    segment: Option<usize>,
    to: SocketAddr,
) -> io::Result<()> {
    let state = state().ok_or_else(no_state)?;
    // SAFETY: `fd` is the caller's open socket, which outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    state.try_send(
        UdpSockRef::from(&fd),
        &Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        },
    )
}
