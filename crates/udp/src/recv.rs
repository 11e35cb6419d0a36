//! Receive side: [`RecvBatch`] reads up to [`BATCH`] datagrams per `recvmmsg` into slots it
//! owns and reuses, optionally with each datagram's kernel receive time (`SO_TIMESTAMPNS`),
//! which [`arrival`] turns into the monotonic instant the datagram arrived.

#[cfg(target_os = "linux")]
use crate::set_int_option;
use crate::{BATCH, SLOT};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

/// Bytes per receive slot: one more than [`SLOT`], so that a datagram longer than `SLOT` shows
/// by its length (`quinn-udp`'s `recvmmsg` does not report `MSG_TRUNC`).
const STRIDE: usize = SLOT + 1;

/// Receive side: `BATCH` slots for datagrams of up to `SLOT` bytes.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    truncated: [bool; BATCH],
    /// Kernel receive times (`SO_TIMESTAMPNS`, `CLOCK_REALTIME` since the Unix epoch), when
    /// [`RecvBatch::with_timestamps`] asked for them and the socket has the option on.
    stamps: [Option<Duration>; BATCH],
    /// Whether [`RecvBatch::with_timestamps`] made this batch.
    stamped: bool,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0u8; BATCH * STRIDE],
            lens: [0; BATCH],
            from: [None; BATCH],
            truncated: [false; BATCH],
            stamps: [None; BATCH],
            stamped: false,
        }
    }

    /// A batch that also reads each datagram's kernel receive time ([`RecvBatch::timestamp`]);
    /// the socket needs [`enable_rx_timestamps`].
    pub fn with_timestamps() -> Self {
        RecvBatch {
            stamped: true,
            ..Self::new()
        }
    }

    /// When the kernel received datagram `i` of the last receive (`CLOCK_REALTIME`, since the
    /// Unix epoch), if it said.
    pub fn timestamp(&self, i: usize) -> Option<Duration> {
        self.stamps[i]
    }

    /// Datagram `i` of the last receive: bytes, source, and whether it was cut short (longer
    /// than [`SLOT`]; the bytes are then its first `SLOT`).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        (
            &self.buf[i * STRIDE..i * STRIDE + self.lens[i]],
            self.from[i],
            self.truncated[i],
        )
    }

    /// Receives up to `BATCH` datagrams without blocking (`WouldBlock` when none): one
    /// `recvmmsg` through `quinn-udp`, which decodes the source address and the kernel receive
    /// time. The socket must be non-blocking, as the drivers' are: `quinn-udp` passes no
    /// `MSG_DONTWAIT`, so on a blocking socket this would wait for a datagram.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let mut meta = [quinn_udp::RecvMeta::default(); BATCH];
        let n = crate::quinn::recv(sock.as_raw_fd(), &mut self.buf, STRIDE, &mut meta)?;
        for (i, m) in meta.iter().enumerate().take(n) {
            self.lens[i] = m.len.min(SLOT);
            self.truncated[i] = m.len > SLOT;
            self.from[i] = Some(m.addr);
            self.stamps[i] = if self.stamped { m.timestamp } else { None };
        }
        Ok(n)
    }
}

/// Asks the kernel to stamp each datagram with its receive time (`SO_TIMESTAMPNS`), read with
/// [`RecvBatch::with_timestamps`]. Returns whether the option took.
#[cfg(target_os = "linux")]
pub fn enable_rx_timestamps(sock: &impl AsRawFd) -> bool {
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Without `SO_TIMESTAMPNS` there are no kernel receive times; [`arrival`] falls back to now.
#[cfg(not(target_os = "linux"))]
pub fn enable_rx_timestamps(_sock: &impl AsRawFd) -> bool {
    false
}

/// Longest queueing [`arrival`] believes; an older stamp (or a wall clock that jumped) counts
/// as this old.
pub const MAX_QUEUE_AGE: Duration = Duration::from_secs(1);

/// The monotonic instant at which a datagram stamped `stamp` (wall clock, since the Unix epoch)
/// arrived, given `now` and the wall clock `wall_now` read together with it: `now` minus the
/// time the datagram waited, bounded by [`MAX_QUEUE_AGE`]. Without a stamp, or with one from
/// the future (the wall clock stepped back), it arrived `now`.
pub fn arrival(now: Instant, wall_now: Duration, stamp: Option<Duration>) -> Instant {
    let Some(stamp) = stamp else {
        return now;
    };
    let age = wall_now.saturating_sub(stamp).min(MAX_QUEUE_AGE);
    now.checked_sub(age).unwrap_or(now)
}

/// The wall clock as [`arrival`] wants it.
pub fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn arrival_is_now_minus_the_queueing_bounded() {
        let now = Instant::now();
        let wall = Duration::from_secs(1_800_000_000);
        assert_eq!(arrival(now, wall, None), now);
        let waited = Duration::from_micros(700);
        assert_eq!(arrival(now, wall, Some(wall - waited)), now - waited);
        // A stamp from the future (the wall clock stepped back) means no wait.
        assert_eq!(arrival(now, wall, Some(wall + waited)), now);
        // A stale stamp or a clock jump forward counts as MAX_QUEUE_AGE at most.
        let old = Some(wall - Duration::from_secs(3600));
        assert_eq!(now.duration_since(arrival(now, wall, old)), MAX_QUEUE_AGE);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_receive_times_come_with_each_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        assert!(enable_rx_timestamps(&rx));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = RecvBatch::with_timestamps();
        // The kernel turns receive stamping on for the whole stack a moment after the first
        // socket asks (a deferred static key); until then it stamps at read time. Wait for a
        // probe that carries its time in the queue.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tx.send_to(&[0xff], rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(b.recv(&rx).unwrap(), 1);
            let queued = wall_clock().saturating_sub(b.timestamp(0).expect("stamped"));
            if queued >= Duration::from_millis(15) {
                break;
            }
            assert!(Instant::now() < deadline, "receive stamping never came on");
        }
        let before = wall_clock();
        for i in 0..3u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.recv(&rx).unwrap(), 3);
        let after = wall_clock();
        for i in 0..3 {
            assert_eq!(b.get(i).0, &[i as u8; 10]);
            let t = b.timestamp(i).expect("stamped");
            assert!(
                before <= t && t <= after,
                "{t:?} outside {before:?}..{after:?}"
            );
            // It waited in the queue for the 30 ms sleep.
            assert!(
                after - t >= Duration::from_millis(25),
                "{:?} before {:?}",
                after - t,
                after
            );
        }
        // Without the option asked for, no stamps.
        tx.send_to(&[9; 4], rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut plain = RecvBatch::new();
        assert_eq!(plain.recv(&rx).unwrap(), 1);
        assert_eq!(plain.timestamp(0), None);
    }

    /// A datagram of exactly `SLOT` bytes is whole; a longer one arrives cut to `SLOT` bytes
    /// and marked as cut short. (Elsewhere `quinn-udp` reads one datagram per call and skips
    /// the cut ones itself.)
    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_longer_than_a_slot_are_marked_cut_short() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(&[1; SLOT], to).unwrap();
        tx.send_to(&[2; SLOT + 1], to).unwrap();
        tx.send_to(&[3; 3 * SLOT], to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut b = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = b.recv(&rx).unwrap();
            got.extend((0..n).map(|i| {
                let (d, _, cut) = b.get(i);
                (d[0], d.len(), cut)
            }));
        }
        assert_eq!(
            got,
            vec![(1, SLOT, false), (2, SLOT, true), (3, SLOT, true)]
        );
    }

    #[test]
    fn receive_batch_reads_many_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 20], rx.local_addr().unwrap()).unwrap();
        }
        let mut got = Vec::new();
        let mut batch = RecvBatch::new();
        for _ in 0..100 {
            match batch.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from, trunc) = batch.get(i);
                        assert_eq!(from, Some(tx.local_addr().unwrap()));
                        assert!(!trunc);
                        got.push(d[0]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
            if got.len() == 10 {
                break;
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }
}
