//! Batched UDP datagram I/O for the TURN and SFU drivers: `recvmmsg`/`sendmmsg` on Linux (one
//! syscall for up to [`BATCH`] messages), a plain loop elsewhere. Buffers are owned by the batch
//! and reused, so the steady state allocates nothing.
//!
//! On the send side, runs of datagrams to the same destination with equal sizes (a video frame
//! split into MTU-sized packets for one subscriber) can leave as one UDP GSO message
//! (`UDP_SEGMENT`): the kernel walks its stack once per run and splits the run into datagrams at
//! the device (or, on loopback, at the receiving socket). [`next_run`] is the pure rule that forms
//! those runs; [`SendBatch::flush`] executes it. GSO is off unless [`SendBatch::enable_gso`]
//! found kernel support, and switches itself off if a send with it fails.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Largest datagram accepted; longer ones are truncated by the kernel and dropped here.
pub const SLOT: usize = 4096;

/// Receive side: `BATCH` slots of `SLOT` bytes.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    truncated: [bool; BATCH],
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
        }
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
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// Send side: queued datagrams, flushed with one `sendmmsg` per [`BATCH`] messages.
#[derive(Default)]
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    n: usize,
    /// Largest number of datagrams folded into one GSO message; 1 = GSO off.
    gso_segments: usize,
}

/// Most segments the kernel accepts in one GSO message (`UDP_MAX_SEGMENTS` before Linux 6.x).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message (one IPv4/IPv6 UDP datagram's worth, with headroom).
pub const GSO_MAX_BYTES: usize = 65_000;
/// iovecs per `sendmmsg` call (bounds the stack arrays, which are zeroed per call).
const IOV_CAP: usize = 128;

/// Length of the run of datagrams starting at `start` that may leave as one GSO message: all go
/// to `to[start]`, all have the size of the first except the last, which may be shorter (never
/// empty), at most `max_segments` of them and at most [`GSO_MAX_BYTES`] in total. Always ≥ 1
/// when `start < lens.len()`.
pub fn next_run(lens: &[usize], to: &[SocketAddr], start: usize, max_segments: usize) -> usize {
    if start >= lens.len() {
        return 0;
    }
    let size = lens[start];
    let dest = to[start];
    let mut total = size;
    let mut k = 1;
    if size == 0 {
        return 1;
    }
    while k < max_segments && start + k < lens.len() {
        let (len, d) = (lens[start + k], to[start + k]);
        if d != dest || len == 0 || len > size || total + len > GSO_MAX_BYTES {
            break;
        }
        total += len;
        k += 1;
        if len < size {
            // A shorter datagram ends the run.
            break;
        }
    }
    k
}

impl SendBatch {
    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Turns UDP GSO on if the kernel supports it for `sock`; returns whether it is on.
    pub fn enable_gso(&mut self, sock: &impl AsRawFd) -> bool {
        self.gso_segments = if gso_supported(sock.as_raw_fd()) {
            GSO_MAX_SEGMENTS
        } else {
            1
        };
        self.gso_segments > 1
    }

    /// Whether sends currently use GSO.
    pub fn gso_enabled(&self) -> bool {
        self.gso_segments > 1
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
    /// (UDP semantics). Returns how many were dropped.
    pub fn flush(&mut self, sock: &impl AsRawFd) -> usize {
        let fd = sock.as_raw_fd();
        let mut sent = 0;
        let mut dropped = 0;
        while sent < self.n {
            match self.send_some(fd, sent) {
                Ok((_, 0)) => {
                    dropped += self.n - sent;
                    break;
                }
                Ok((_, datagrams)) => sent += datagrams,
                Err((e, _)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err((_, first)) if first > 1 && self.gso_segments > 1 => {
                    // The device or kernel refused GSO (e.g. no checksum offload): go on
                    // without it, resending the same datagrams one by one.
                    self.gso_segments = 1;
                }
                Err((_, first)) => {
                    // Skip the message that failed (e.g. unreachable) and go on.
                    dropped += first.max(1);
                    sent += first.max(1);
                }
            }
        }
        self.n = 0;
        // Do not let one burst of large datagrams pin memory forever.
        if self.bufs.len() > 4 * BATCH {
            self.bufs.truncate(BATCH);
            self.to.truncate(BATCH);
        }
        dropped
    }

    /// One `sendmmsg` starting at datagram `from`. Ok: (messages, datagrams) the kernel took,
    /// (0, 0) when the socket buffer is full. Err: the error and how many datagrams the first
    /// message carried.
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, fd: i32, from: usize) -> Result<(usize, usize), (io::Error, usize)> {
        // Lengths are gathered once per call so `next_run` can look at them.
        let mut lens = [0usize; IOV_CAP];
        let avail = (self.n - from).min(IOV_CAP);
        for (i, l) in lens.iter_mut().enumerate().take(avail) {
            *l = self.bufs[from + i].len();
        }
        let lens = &lens[..avail];
        let to = &self.to[from..from + avail];
        // SAFETY: every pointer handed to the kernel references `self.bufs` entries or the local
        // arrays below, all of which outlive the call; lengths match the buffers.
        unsafe {
            let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iov: [libc::iovec; IOV_CAP] = std::mem::zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            let mut ctrl: [[u64; 4]; BATCH] = [[0; 4]; BATCH];
            let mut segs = [0usize; BATCH];
            let iov_base = iov.as_mut_ptr();
            let names_base = names.as_mut_ptr();
            let mut m = 0;
            let mut i = 0;
            while m < BATCH && i < avail {
                let k = next_run(lens, to, i, self.gso_segments);
                for j in 0..k {
                    let b = &mut self.bufs[from + i + j];
                    let v = &mut *iov_base.add(i + j);
                    v.iov_base = b.as_mut_ptr() as *mut libc::c_void;
                    v.iov_len = b.len();
                }
                let len = sockaddr_from(to[i], &mut *names_base.add(m));
                let h = &mut hdrs[m].msg_hdr;
                h.msg_name = names_base.add(m) as *mut libc::c_void;
                h.msg_namelen = len;
                h.msg_iov = iov_base.add(i);
                h.msg_iovlen = k as _;
                if k > 1 {
                    let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                    h.msg_control = ctrl[m].as_mut_ptr() as *mut libc::c_void;
                    h.msg_controllen = space as _;
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, lens[i] as u16);
                }
                segs[m] = k;
                m += 1;
                i += k;
            }
            let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), m as libc::c_uint, libc::MSG_DONTWAIT);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok((0, 0));
                }
                return Err((e, segs[0]));
            }
            let n = n as usize;
            Ok((n, segs[..n].iter().sum()))
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, fd: i32, from: usize) -> Result<(usize, usize), (io::Error, usize)> {
        use std::os::fd::FromRawFd;
        let sock = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        match sock.send_to(&self.bufs[from], self.to[from]) {
            Ok(_) => Ok((1, 1)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((0, 0)),
            Err(e) => Err((e, 1)),
        }
    }
}

/// Whether the kernel knows `UDP_SEGMENT` for this socket (Linux ≥ 4.18).
#[cfg(target_os = "linux")]
fn gso_supported(fd: i32) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the duration of the call and sized as declared.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn gso_supported(_fd: i32) -> bool {
    false
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
    use proptest::prelude::*;
    use std::net::UdpSocket;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn runs_group_equal_sizes_to_one_destination() {
        let a = addr(1);
        let b = addr(2);
        let lens = [1200, 1200, 1200, 700, 1200, 1200, 90, 90];
        let to = [a, a, a, a, a, b, b, b];
        assert_eq!(
            next_run(&lens, &to, 0, 64),
            4,
            "short last datagram closes the run"
        );
        assert_eq!(
            next_run(&lens, &to, 4, 64),
            1,
            "destination change ends the run"
        );
        assert_eq!(next_run(&lens, &to, 5, 64), 2, "1200 then 90 to b");
        assert_eq!(next_run(&lens, &to, 7, 64), 1);
        assert_eq!(next_run(&lens, &to, 8, 64), 0);
        assert_eq!(next_run(&lens, &to, 0, 1), 1, "GSO off: singletons");
        assert_eq!(next_run(&lens, &to, 0, 2), 2);
        // A larger datagram never joins a run of smaller ones.
        assert_eq!(next_run(&[500, 600], &[a, a], 0, 64), 1);
        // Byte cap.
        let big = vec![1400; 64];
        let to = vec![a; 64];
        assert_eq!(next_run(&big, &to, 0, 64), GSO_MAX_BYTES / 1400);
    }

    proptest! {
        #[test]
        fn runs_cover_everything_and_respect_gso_rules(
            items in proptest::collection::vec((1usize..1500, 0u16..3), 0..300),
            max in 1usize..80,
        ) {
            let lens: Vec<usize> = items.iter().map(|i| i.0).collect();
            let to: Vec<SocketAddr> = items.iter().map(|i| addr(i.1)).collect();
            let mut i = 0;
            while i < lens.len() {
                let k = next_run(&lens, &to, i, max);
                prop_assert!(k >= 1 && k <= max);
                let run = &lens[i..i + k];
                prop_assert!(to[i..i + k].iter().all(|d| *d == to[i]));
                prop_assert!(run[..k - 1].iter().all(|l| *l == run[0]));
                prop_assert!(run[k - 1] <= run[0]);
                prop_assert!(k == 1 || run.iter().sum::<usize>() <= GSO_MAX_BYTES);
                i += k;
            }
        }
    }

    /// Receivers hold a whole test burst (the default ~200 kB would drop some).
    fn big_receiver() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        #[cfg(target_os = "linux")]
        {
            let v: libc::c_int = 2 << 20;
            // SAFETY: plain setsockopt with a c_int option value that outlives the call.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &v as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
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

    fn flush_roundtrip(gso: bool) {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx1 = big_receiver();
        let rx2 = big_receiver();
        let (a, b) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let mut batch = SendBatch::default();
        if gso {
            // Loopback on Linux ≥ 4.18 supports it; elsewhere the test still checks delivery.
            batch.enable_gso(&tx);
        }
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
        assert_eq!(batch.flush(&tx), 0);
        assert!(batch.is_empty());
        #[cfg(target_os = "linux")]
        assert_eq!(batch.gso_enabled(), gso, "GSO must not have fallen back");
        assert_eq!(receive_all(&rx1, want_a.len()), want_a);
        assert_eq!(receive_all(&rx2, want_b.len()), want_b);
    }

    #[test]
    fn flush_delivers_every_datagram_in_order_with_gso() {
        flush_roundtrip(true);
    }

    #[test]
    fn flush_delivers_every_datagram_in_order_without_gso() {
        flush_roundtrip(false);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn loopback_supports_gso() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = SendBatch::default();
        assert!(batch.enable_gso(&tx));
        assert!(batch.gso_enabled());
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
