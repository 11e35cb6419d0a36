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

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Largest datagram accepted; longer ones are truncated by the kernel and dropped here.
pub const SLOT: usize = 4096;

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
    /// Control-message buffers, one per slot; empty unless timestamps are wanted.
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

    /// Receives up to `BATCH` datagrams without blocking (`WouldBlock` when none).
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.recv_impl(sock.as_raw_fd())
    }

    #[cfg(target_os = "linux")]
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

    #[cfg(not(target_os = "linux"))]
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

/// Send side: queued datagrams, flushed with one `sendmmsg` (consecutive datagrams of equal
/// size to one destination leave as one UDP GSO message inside it).
#[derive(Default)]
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    n: usize,
    runs: Vec<Run>,
}

impl SendBatch {
    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Queues a copy of `data` for `to`.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) {
        if self.bufs.len() == self.n {
            self.bufs.push(Vec::with_capacity(data.len().max(256)));
            self.to.push(to);
        }
        let b = &mut self.bufs[self.n];
        b.clear();
        b.extend_from_slice(data);
        self.to[self.n] = to;
        self.n += 1;
    }

    /// Queues `data` itself (no copy) for `to`, e.g. a datagram a protocol library already
    /// allocated.
    pub fn push_owned(&mut self, data: Vec<u8>, to: SocketAddr) {
        if self.bufs.len() == self.n {
            self.bufs.push(data);
            self.to.push(to);
        } else {
            self.bufs[self.n] = data;
            self.to[self.n] = to;
        }
        self.n += 1;
    }

    /// Sends everything queued; datagrams the kernel will not take right now are dropped
    /// (UDP semantics).
    pub fn flush(&mut self, sock: &impl AsRawFd) -> SendOutcome {
        let (bufs, to, n) = (&self.bufs, &self.to, self.n);
        let out = send_datagrams(
            sock.as_raw_fd(),
            n,
            |i| bufs[i].as_slice(),
            |i| to[i],
            &mut self.runs,
        );
        self.n = 0;
        // Do not let one burst of large datagrams pin memory forever.
        if self.bufs.len() > 4 * BATCH {
            self.bufs.truncate(BATCH);
            self.to.truncate(BATCH);
        }
        out
    }
}

/// What a batched send did besides sending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams not sent (socket buffer full, unreachable destination, ...).
    pub dropped: usize,
    /// GSO messages the kernel refused; their datagrams were re-sent one by one.
    pub gso_fallbacks: usize,
}

impl std::ops::AddAssign for SendOutcome {
    fn add_assign(&mut self, o: SendOutcome) {
        self.dropped += o.dropped;
        self.gso_fallbacks += o.gso_fallbacks;
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received message, as a time since the Unix epoch.
#[cfg(target_os = "linux")]
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

/// Segments per GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Payload bytes per GSO message: below the 65,507-byte limit of one IPv4 UDP datagram.
pub const GSO_MAX_BYTES: usize = 65_000;
/// Largest datagram merged into a GSO message: a segment above the path MTU makes the kernel
/// refuse the whole message, so only datagrams that fit a 1500-byte IPv6 path are merged.
pub const GSO_MAX_SEGMENT: usize = 1500 - 40 - 8;
/// GSO messages the kernel may refuse before GSO is switched off for the process.
const GSO_MAX_FAILURES: u32 = 16;

/// UDP generic segmentation offload (Linux ≥ 4.18): several datagrams of one size to one
/// destination cross the stack as one message, cut into datagrams at the device (or, on
/// loopback, at the receiving socket). Process-wide: probed once at start, switched off by
/// configuration or after the kernel refused it [`GSO_MAX_FAILURES`] times.
pub struct Gso {
    on: AtomicBool,
    /// A user of the process asked for GSO off (`[turn] udp_gso = false`); it stays off.
    vetoed: AtomicBool,
    failures: AtomicU32,
}

/// The process's GSO switch, shared by the TURN and SFU drivers.
pub static GSO: Gso = Gso {
    on: AtomicBool::new(false),
    vetoed: AtomicBool::new(false),
    failures: AtomicU32::new(0),
};

impl Gso {
    /// Each driver calls this at start with what its configuration wants. GSO is on when every
    /// caller so far wanted it and the kernel accepts the `UDP_SEGMENT` socket option; one
    /// `false` turns it off for the whole process, whatever the order of the calls. Returns
    /// whether it is on.
    pub fn init(&self, wanted: bool) -> bool {
        if !wanted {
            self.vetoed.store(true, Ordering::Relaxed);
        }
        let ok = !self.vetoed.load(Ordering::Relaxed) && probe_gso();
        self.on.store(ok, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        ok
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn refused(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= GSO_MAX_FAILURES
            && self.on.swap(false, Ordering::Relaxed)
        {
            tracing::warn!("the kernel refused UDP GSO sends repeatedly; GSO is off");
        }
    }
}

#[cfg(target_os = "linux")]
fn probe_gso() -> bool {
    let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    set_int_option(&s, libc::SOL_UDP, libc::UDP_SEGMENT, 1200)
}

/// `setsockopt` with an `int` value; whether the kernel accepted it.
#[cfg(target_os = "linux")]
pub fn set_int_option(sock: &impl AsRawFd, level: i32, name: i32, value: i32) -> bool {
    let v: libc::c_int = value;
    // SAFETY: setsockopt with a pointer to an int that outlives the call, on a valid fd.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Which socket of a `SO_REUSEPORT` group the kernel hands each incoming datagram to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// Every datagram to the group's first socket (the first one bound with the port).
    First,
    /// The kernel's default: by a hash of the source and destination addresses.
    Hash,
}

/// Installs `steering` on the `SO_REUSEPORT` group `sock` belongs to (any member will do;
/// the program applies to the whole group, and replacing it is atomic). Uses a one-instruction
/// classic BPF program: `First` returns index 0; `Hash` returns an index past the end of the
/// group, which makes the kernel fall back to its hash (so it works without
/// `SO_DETACH_REUSEPORT_BPF`, Linux ≥ 5.8). Whether the kernel accepted it (Linux ≥ 4.5).
#[cfg(target_os = "linux")]
pub fn steer_reuseport(sock: &impl AsRawFd, steering: Steering) -> bool {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let k = match steering {
        Steering::First => 0,
        Steering::Hash => u32::MAX,
    };
    // BPF_RET | BPF_K: return the constant k.
    let mut prog = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k,
    }];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: setsockopt with a pointer to a sock_fprog whose filter array outlives the call
    // (the kernel copies the program), on a valid fd.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ) == 0
    }
}

/// Not available off Linux: the kernel's default hash stays.
#[cfg(not(target_os = "linux"))]
pub fn steer_reuseport(_sock: &impl AsRawFd, _steering: Steering) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
fn probe_gso() -> bool {
    false
}

/// Datagrams `start..start + count` that leave as one message: one datagram, or a GSO
/// message of `count` segments of the first one's size (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub count: usize,
}

/// Cuts `n` datagrams (sizes `len(i)`, destinations `to(i)`) into [`Run`]s, in order: a run
/// is consecutive datagrams to one destination, all the size of the first except that the
/// last may be shorter, at most `max_segments` of them, [`GSO_MAX_BYTES`] in total and
/// each at most [`GSO_MAX_SEGMENT`] bytes. With
/// `max_segments` ≤ 1 every datagram is its own run.
pub fn gso_runs(
    n: usize,
    len: impl Fn(usize) -> usize,
    to: impl Fn(usize) -> SocketAddr,
    max_segments: usize,
    runs: &mut Vec<Run>,
) {
    runs.clear();
    let mut i = 0;
    while i < n {
        let seg = len(i);
        let dest = to(i);
        let mut count = 1;
        let mut total = seg;
        if seg > 0 && seg <= GSO_MAX_SEGMENT {
            while count < max_segments && i + count < n {
                let j = i + count;
                let l = len(j);
                if l == 0 || l > seg || total + l > GSO_MAX_BYTES || to(j) != dest {
                    break;
                }
                count += 1;
                total += l;
                if l < seg {
                    break; // a shorter datagram ends its run
                }
            }
        }
        runs.push(Run { start: i, count });
        i += count;
    }
}

/// Sends datagrams `0..n` (`data(i)` to `to(i)`) on `fd` with as few `sendmmsg` calls as
/// possible, merging runs into GSO messages while [`GSO`] is on. `runs` is scratch space.
pub fn send_datagrams<'a>(
    fd: i32,
    n: usize,
    data: impl Fn(usize) -> &'a [u8],
    to: impl Fn(usize) -> SocketAddr,
    runs: &mut Vec<Run>,
) -> SendOutcome {
    let segs = if GSO.enabled() { GSO_MAX_SEGMENTS } else { 1 };
    gso_runs(n, |i| data(i).len(), &to, segs, runs);
    let mut out = SendOutcome::default();
    let mut r = 0;
    while r < runs.len() {
        match send_runs(fd, &runs[r..], &data, &to) {
            Ok(k) if k > 0 => r += k,
            Ok(_) => {
                // Socket buffer full: the rest is dropped, as UDP would.
                out.dropped += runs[r..].iter().map(|x| x.count).sum::<usize>();
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if runs[r].count > 1 => {
                // The kernel refused this GSO message: send its datagrams one by one.
                GSO.refused();
                out.gso_fallbacks += 1;
                let Run { start, count } = runs[r];
                let mut singles: Vec<Run> = (start..start + count)
                    .map(|i| Run { start: i, count: 1 })
                    .collect();
                let mut s = 0;
                while s < singles.len() {
                    match send_runs(fd, &singles[s..], &data, &to) {
                        Ok(k) if k > 0 => s += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(_) => {
                            out.dropped += singles.len() - s;
                            break;
                        }
                        Err(_) => {
                            out.dropped += 1;
                            s += 1;
                        }
                    }
                }
                singles.clear();
                r += 1;
            }
            Err(_) => {
                // Skip the datagram that failed (e.g. unreachable) and go on.
                out.dropped += 1;
                r += 1;
            }
        }
    }
    out
}

/// Messages per `sendmmsg` and iovecs over all of them.
const IOVS: usize = 4 * BATCH;

/// One `sendmmsg` of as many leading `runs` as fit; returns how many runs were sent
/// (0 when the socket buffer is full).
#[cfg(target_os = "linux")]
fn send_runs<'a>(
    fd: i32,
    runs: &[Run],
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
) -> io::Result<usize> {
    // Room for one cmsghdr carrying a u16, 8-byte aligned.
    type Cmsg = [u64; 4];
    const _: () = assert!(std::mem::size_of::<libc::cmsghdr>() + 8 <= std::mem::size_of::<Cmsg>());
    // SAFETY: every pointer handed to the kernel points into the caller's buffers (which
    // outlive the call) or into the local arrays below; lengths match those buffers.
    unsafe {
        let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
        let mut iov: [libc::iovec; IOVS] = std::mem::zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
        let mut cmsgs: [Cmsg; BATCH] = [[0; 4]; BATCH];
        let mut m = 0;
        let mut v = 0;
        for run in runs.iter().take(BATCH) {
            if v + run.count > IOVS {
                break;
            }
            let first_v = v;
            for i in run.start..run.start + run.count {
                let d = data(i);
                iov[v].iov_base = d.as_ptr() as *mut libc::c_void;
                iov[v].iov_len = d.len();
                v += 1;
            }
            let len = sockaddr_from(to(run.start), &mut names[m]);
            let h = &mut hdrs[m].msg_hdr;
            h.msg_name = &mut names[m] as *mut _ as *mut libc::c_void;
            h.msg_namelen = len;
            h.msg_iov = &mut iov[first_v];
            h.msg_iovlen = run.count as _;
            if run.count > 1 {
                let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                h.msg_control = cmsgs[m].as_mut_ptr() as *mut libc::c_void;
                h.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                let seg = data(run.start).len() as u16;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
            }
            m += 1;
        }
        let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), m as libc::c_uint, libc::MSG_DONTWAIT);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn send_runs<'a>(
    fd: i32,
    runs: &[Run],
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
) -> io::Result<usize> {
    use std::os::fd::FromRawFd;
    // Without GSO every run is one datagram.
    let sock = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
    let i = runs[0].start;
    match sock.send_to(data(i), to(i)) {
        Ok(_) => Ok(1),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
fn sockaddr_to(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn sockaddr_from(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
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

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn runs(lens: &[usize], to: &[u16], max: usize) -> Vec<(usize, usize)> {
        let mut r = Vec::new();
        gso_runs(lens.len(), |i| lens[i], |i| addr(to[i]), max, &mut r);
        r.iter().map(|x| (x.start, x.count)).collect()
    }

    /// Binds `n` sockets to one port as a SO_REUSEPORT group (first bound = index 0).
    fn reuseport_group(n: usize) -> Vec<UdpSocket> {
        let bind = |port: u16| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            s.set_reuse_port(true)?;
            s.bind(&addr(port).into())?;
            s.set_nonblocking(true)?;
            Ok::<UdpSocket, io::Error>(s.into())
        };
        let first = bind(0).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut v = vec![first];
        for _ in 1..n {
            v.push(bind(port).unwrap());
        }
        v
    }

    /// Sends one datagram from each of `sources` fresh sockets; how many each member got.
    fn deliveries(group: &[UdpSocket], sources: usize) -> Vec<usize> {
        let to = group[0].local_addr().unwrap();
        for _ in 0..sources {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"x", to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [0u8; 16];
        group
            .iter()
            .map(|s| std::iter::from_fn(|| s.recv_from(&mut buf).ok()).count())
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reuseport_steering_sends_all_to_the_first_socket_then_spreads_again() {
        let group = reuseport_group(2);
        assert!(steer_reuseport(&group[1], Steering::First));
        assert_eq!(deliveries(&group, 40), vec![40, 0]);
        assert!(steer_reuseport(&group[0], Steering::Hash));
        let got = deliveries(&group, 40);
        assert_eq!(got.iter().sum::<usize>(), 40);
        // 40 different source ports all hashing to one socket: odds 2^-39.
        assert!(got[0] > 0 && got[1] > 0, "hash spread {got:?}");
    }

    #[test]
    fn equal_sizes_to_one_destination_make_one_run() {
        assert_eq!(runs(&[100; 5], &[1; 5], 64), vec![(0, 5)]);
    }

    #[test]
    fn last_may_be_shorter_but_ends_the_run() {
        assert_eq!(
            runs(&[100, 100, 60, 100, 100], &[1; 5], 64),
            vec![(0, 3), (3, 2)]
        );
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        assert_eq!(
            runs(&[100, 100, 120, 120], &[1; 4], 64),
            vec![(0, 2), (2, 2)]
        );
    }

    #[test]
    fn destination_changes_split_runs_in_order() {
        assert_eq!(
            runs(&[50; 6], &[1, 1, 2, 2, 1, 1], 64),
            vec![(0, 2), (2, 2), (4, 2)]
        );
    }

    #[test]
    fn segment_and_byte_limits() {
        assert_eq!(runs(&[10; 5], &[1; 5], 2), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(runs(&[10; 3], &[1; 3], 1), vec![(0, 1), (1, 1), (2, 1)]);
        // 1400-byte datagrams: 46 fit in GSO_MAX_BYTES (64,400 bytes), the 47th does not.
        let lens = vec![1400; 50];
        assert_eq!(runs(&lens, &[1; 50], 64), vec![(0, 46), (46, 4)]);
    }

    #[test]
    fn datagrams_above_the_mtu_are_never_merged() {
        assert_eq!(runs(&[1453; 3], &[1; 3], 64), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(runs(&[1452; 3], &[1; 3], 64), vec![(0, 3)]);
    }

    #[test]
    fn empty_datagrams_are_never_merged() {
        assert_eq!(runs(&[0, 0, 10], &[1; 3], 64), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(
            runs(&[10, 0, 10], &[1; 3], 64),
            vec![(0, 1), (1, 1), (2, 1)]
        );
        assert!(runs(&[], &[], 64).is_empty());
    }

    proptest::proptest! {
        /// Runs cover every datagram once, in order, and each obeys the GSO rules.
        #[test]
        fn runs_partition_and_obey_rules(
            items in proptest::collection::vec((0usize..3000, 0u16..3), 0..200),
            max in 1usize..80,
        ) {
            let lens: Vec<usize> = items.iter().map(|x| x.0).collect();
            let to: Vec<u16> = items.iter().map(|x| x.1).collect();
            let r = runs(&lens, &to, max);
            let mut next = 0;
            for &(start, count) in &r {
                proptest::prop_assert_eq!(start, next);
                proptest::prop_assert!(count >= 1 && count <= max);
                next = start + count;
                if count > 1 {
                    let seg = lens[start];
                    proptest::prop_assert!(seg > 0 && seg <= GSO_MAX_SEGMENT);
                    let total: usize = lens[start..next].iter().sum();
                    proptest::prop_assert!(total <= GSO_MAX_BYTES);
                    for i in start..next {
                        proptest::prop_assert_eq!(to[i], to[start]);
                        if i + 1 < next {
                            proptest::prop_assert_eq!(lens[i], seg);
                        } else {
                            proptest::prop_assert!(lens[i] <= seg && lens[i] > 0);
                        }
                    }
                }
            }
            proptest::prop_assert_eq!(next, lens.len());
        }
    }

    /// Real sockets: a GSO-merged run arrives as separate datagrams with the right bytes,
    /// in order, whether or not the kernel supports GSO (the probe decides).
    #[test]
    fn send_datagrams_delivers_each_datagram() {
        GSO.init(true);
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        rx2.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = rx.local_addr().unwrap();
        let b = rx2.local_addr().unwrap();
        let mut batch = SendBatch::default();
        let mut sent = Vec::new();
        for i in 0..40u8 {
            let len = if i == 9 { 70 } else { 170 };
            let d = vec![i; len];
            let to = if (10..15).contains(&i) { b } else { a };
            batch.push(&d, to);
            sent.push((d, to));
        }
        let out = batch.flush(&tx);
        assert_eq!(out, SendOutcome::default());
        let mut buf = [0u8; 4096];
        for (d, to) in sent {
            let s = if to == a { &rx } else { &rx2 };
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &d[..]);
        }
    }

    /// Receivers hold a whole test burst (the default ~200 kB would drop some).
    fn big_receiver() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        #[cfg(target_os = "linux")]
        set_int_option(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 2 << 20);
        s
    }

    fn receive_all(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < n {
            let (len, _) = rx.recv_from(&mut buf).expect("datagram");
            out.push(buf[..len].to_vec());
        }
        out
    }

    /// Owned and copied datagrams, runs cut by destination and by a short tail, more than
    /// [`BATCH`] messages: every datagram arrives, in order, and GSO did not fall back.
    #[test]
    fn flush_delivers_every_datagram_in_order() {
        let gso = GSO.init(true);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx1 = big_receiver();
        let rx2 = big_receiver();
        let (a, b) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let mut batch = SendBatch::default();
        let mut want_a = Vec::new();
        let mut want_b = Vec::new();
        // 3 frames x 5 packets for a, interleaved with single packets for b: more than
        // BATCH messages and runs cut by destination and by a short tail.
        for f in 0..40u8 {
            for p in 0..5u8 {
                let len = if p == 4 { 300 } else { 1100 };
                let d = vec![f ^ p; len];
                want_a.push(d.clone());
                batch.push_owned(d, a);
            }
            let d = vec![f; 50 + f as usize];
            want_b.push(d.clone());
            batch.push(&d, b);
        }
        assert_eq!(batch.len(), 240);
        assert_eq!(batch.flush(&tx), SendOutcome::default());
        assert!(batch.is_empty());
        #[cfg(target_os = "linux")]
        assert!(
            gso && GSO.enabled(),
            "loopback supports GSO and it must not have fallen back"
        );
        assert_eq!(receive_all(&rx1, want_a.len()), want_a);
        assert_eq!(receive_all(&rx2, want_b.len()), want_b);
    }

    #[test]
    fn receive_batch_reads_many_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
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
