//! Receive side: [`RecvBatch`] reads up to [`BATCH`] datagrams per `recvmmsg` into slots it
//! owns and reuses, optionally with each datagram's kernel receive time (`SO_TIMESTAMPNS`),
//! which [`arrival`] turns into the monotonic instant the datagram arrived.

#[cfg(target_os = "linux")]
use crate::set_int_option;
#[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
use crate::sockaddr::sockaddr_to;
use crate::{BATCH, SLOT};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

/// Room for one `SCM_TIMESTAMPNS` control message (a `timespec` behind a `cmsghdr`), 8-aligned.
const CMSG_WORDS: usize = 8;

/// Receive side: `BATCH` slots of `SLOT` bytes.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    truncated: [bool; BATCH],
    /// Kernel receive times (`SO_TIMESTAMPNS`, `CLOCK_REALTIME` since the Unix epoch), when
    /// [`RecvBatch::with_timestamps`] asked for them and the socket has the option on.
    stamps: [Option<Duration>; BATCH],
    /// Control-message buffers, one per slot; empty unless timestamps are wanted. (With
    /// `quinn-udp`, which brings its own buffers, only the sign that they are.)
    control: Vec<[u64; CMSG_WORDS]>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            from: [None; BATCH],
            truncated: [false; BATCH],
            stamps: [None; BATCH],
            control: Vec::new(),
        }
    }

    /// A batch that also reads each datagram's kernel receive time ([`RecvBatch::timestamp`]);
    /// the socket needs [`enable_rx_timestamps`].
    pub fn with_timestamps() -> Self {
        let mut b = Self::new();
        b.control = vec![[0u64; CMSG_WORDS]; BATCH];
        b
    }

    /// When the kernel received datagram `i` of the last receive (`CLOCK_REALTIME`, since the
    /// Unix epoch), if it said.
    pub fn timestamp(&self, i: usize) -> Option<Duration> {
        self.stamps[i]
    }

    /// Datagram `i` of the last receive: bytes, source, and whether it was cut short.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        (
            &self.buf[i * SLOT..i * SLOT + self.lens[i]],
            self.from[i],
            self.truncated[i],
        )
    }

    /// Receives up to `BATCH` datagrams without blocking (`WouldBlock` when none). The socket
    /// must be non-blocking, as the drivers' are: with `quinn-udp`, which passes no
    /// `MSG_DONTWAIT`, a blocking socket would wait for a datagram.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.recv_impl(sock.as_raw_fd())
    }

    #[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
    fn recv_impl(&mut self, fd: i32) -> io::Result<usize> {
        // SAFETY: every pointer handed to the kernel points into `self.buf` or the local
        // arrays below, all of which outlive the call; sizes match the buffers.
        unsafe {
            let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iov: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            let base = self.buf.as_mut_ptr();
            for i in 0..BATCH {
                iov[i].iov_base = base.add(i * SLOT) as *mut libc::c_void;
                iov[i].iov_len = SLOT;
                hdrs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                if let Some(c) = self.control.get_mut(i) {
                    hdrs[i].msg_hdr.msg_control = c.as_mut_ptr() as *mut libc::c_void;
                    hdrs[i].msg_hdr.msg_controllen = std::mem::size_of_val(c) as _;
                }
            }
            let n = libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for i in 0..n {
                self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
                self.truncated[i] = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                self.from[i] = sockaddr_to(&names[i]);
                self.stamps[i] = if self.control.is_empty() {
                    None
                } else {
                    rx_timestamp(&hdrs[i].msg_hdr)
                };
            }
            Ok(n)
        }
    }

    /// `quinn-udp`'s `recvmmsg`. It does not report `MSG_TRUNC`: a datagram that fills its
    /// slot counts as cut short. Its kernel receive time, when the socket has
    /// `SO_TIMESTAMPNS` on, is in `RecvMeta::timestamp`.
    #[cfg(feature = "quinn-udp")]
    fn recv_impl(&mut self, fd: i32) -> io::Result<usize> {
        let mut meta = [quinn_udp::RecvMeta::default(); BATCH];
        let n = crate::quinn::recv(fd, &mut self.buf, SLOT, &mut meta)?;
        let stamped = !self.control.is_empty();
        for (i, m) in meta.iter().enumerate().take(n) {
            self.lens[i] = m.len.min(SLOT);
            self.truncated[i] = m.len >= SLOT;
            self.from[i] = Some(m.addr);
            self.stamps[i] = if stamped { m.timestamp } else { None };
        }
        Ok(n)
    }

    #[cfg(all(not(target_os = "linux"), not(feature = "quinn-udp")))]
    fn recv_impl(&mut self, fd: i32) -> io::Result<usize> {
        use std::os::fd::FromRawFd;
        let sock = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        let mut n = 0;
        while n < BATCH {
            match sock.recv_from(&mut self.buf[n * SLOT..(n + 1) * SLOT]) {
                Ok((len, from)) => {
                    self.lens[n] = len;
                    self.from[n] = Some(from);
                    self.truncated[n] = false;
                    self.stamps[n] = None;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received message, as a time since the Unix epoch.
#[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
fn rx_timestamp(hdr: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `hdr` is a message header the kernel just filled; the CMSG macros walk only the
    // control buffer it describes, and the payload is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
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
