//! Batched datagram I/O: `recvmmsg`/`sendmmsg` on Linux (one syscall for up to [`BATCH`]
//! datagrams), a plain loop elsewhere. Buffers are owned by the batch and reused, so the
//! steady state allocates nothing.

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

/// Send side: queued datagrams, flushed with one `sendmmsg`.
#[derive(Default)]
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    n: usize,
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

    /// Sends everything queued; datagrams the kernel will not take right now are dropped
    /// (UDP semantics). Returns how many were dropped.
    pub fn flush(&mut self, sock: &impl AsRawFd) -> usize {
        let mut sent = 0;
        let mut dropped = 0;
        while sent < self.n {
            match self.send_some(sock.as_raw_fd(), sent) {
                Ok(k) if k > 0 => sent += k,
                Ok(_) => {
                    dropped += self.n - sent;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Skip the datagram that failed (e.g. unreachable) and go on.
                    dropped += 1;
                    sent += 1;
                }
            }
        }
        self.n = 0;
        // Do not let one burst of large datagrams pin memory forever.
        if self.bufs.len() > 4 * super::batch::BATCH {
            self.bufs.truncate(BATCH);
            self.to.truncate(BATCH);
        }
        dropped
    }

    #[cfg(target_os = "linux")]
    fn send_some(&mut self, fd: i32, from: usize) -> io::Result<usize> {
        let k = (self.n - from).min(BATCH);
        // SAFETY: pointers reference `self.bufs` entries and local arrays that outlive the call.
        unsafe {
            let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iov: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            for i in 0..k {
                let b = &mut self.bufs[from + i];
                iov[i].iov_base = b.as_mut_ptr() as *mut libc::c_void;
                iov[i].iov_len = b.len();
                let len = sockaddr_from(self.to[from + i], &mut names[i]);
                hdrs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen = len;
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as libc::c_uint, libc::MSG_DONTWAIT);
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
    fn send_some(&mut self, fd: i32, from: usize) -> io::Result<usize> {
        use std::os::fd::FromRawFd;
        let sock = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        match sock.send_to(&self.bufs[from], self.to[from]) {
            Ok(_) => Ok(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
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
