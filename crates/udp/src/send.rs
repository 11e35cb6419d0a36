//! Send side: [`SendBatch`] queues datagrams and [`send_datagrams`] sends them with as few
//! `sendmmsg` calls as possible, each run of [`gso_runs`] as one message (a UDP GSO message
//! while [`GSO`] is on).

#[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
use crate::sockaddr::sockaddr_from;
use crate::{gso_runs, Run, BATCH, GSO, GSO_MAX_SEGMENTS};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Send side: queued datagrams, flushed with one `sendmmsg` (consecutive datagrams of equal
/// size to one destination leave as one UDP GSO message inside it).
#[derive(Default)]
pub struct SendBatch {
    #[cfg(not(feature = "quinn-udp"))]
    bufs: Vec<Vec<u8>>,
    /// With `quinn-udp`, which sends a GSO message from one contiguous buffer: the queued
    /// datagrams back to back, so a run leaves without being copied again.
    #[cfg(feature = "quinn-udp")]
    bytes: Vec<u8>,
    /// Where each queued datagram lies in `bytes`.
    #[cfg(feature = "quinn-udp")]
    spans: Vec<std::ops::Range<usize>>,
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
    #[cfg(not(feature = "quinn-udp"))]
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
    #[cfg(not(feature = "quinn-udp"))]
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

    /// Sends everything queued on a non-blocking socket; datagrams the kernel will not take
    /// right now are dropped (UDP semantics).
    #[cfg(not(feature = "quinn-udp"))]
    pub fn flush(&mut self, sock: &impl AsRawFd) -> SendOutcome {
        let (bufs, to, n) = (&self.bufs, &self.to, self.n);
        let out = send_all(
            sock.as_raw_fd(),
            n,
            |i| bufs[i].as_slice(),
            |i| to[i],
            &mut self.runs,
            None,
        );
        self.n = 0;
        // Do not let one burst of large datagrams pin memory forever.
        if self.bufs.len() > 4 * BATCH {
            self.bufs.truncate(BATCH);
            self.to.truncate(BATCH);
        }
        out
    }

    /// Queues a copy of `data` for `to`.
    #[cfg(feature = "quinn-udp")]
    pub fn push(&mut self, data: &[u8], to: SocketAddr) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.spans.push(start..self.bytes.len());
        self.to.push(to);
        self.n += 1;
    }

    /// Queues `data` for `to`. (With `quinn-udp` it is copied next to the others.)
    #[cfg(feature = "quinn-udp")]
    pub fn push_owned(&mut self, data: Vec<u8>, to: SocketAddr) {
        self.push(&data, to);
    }

    /// Sends everything queued on a non-blocking socket; datagrams the kernel will not take
    /// right now are dropped (UDP semantics).
    #[cfg(feature = "quinn-udp")]
    pub fn flush(&mut self, sock: &impl AsRawFd) -> SendOutcome {
        let (bytes, spans, to) = (&self.bytes, &self.spans, &self.to);
        let out = send_all(
            sock.as_raw_fd(),
            self.n,
            |i| &bytes[spans[i].clone()],
            |i| to[i],
            &mut self.runs,
            Some(bytes),
        );
        self.n = 0;
        self.bytes.clear();
        self.spans.clear();
        self.to.clear();
        // Do not let one burst of large datagrams pin memory forever.
        if self.bytes.capacity() > 4 * BATCH * 2048 {
            self.bytes.shrink_to(BATCH * 2048);
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

/// Sends datagrams `0..n` (`data(i)` to `to(i)`) on `fd` with as few `sendmmsg` calls as
/// possible, merging runs into GSO messages while [`GSO`] is on. `runs` is scratch space.
pub fn send_datagrams<'a>(
    fd: i32,
    n: usize,
    data: impl Fn(usize) -> &'a [u8],
    to: impl Fn(usize) -> SocketAddr,
    runs: &mut Vec<Run>,
) -> SendOutcome {
    send_all(fd, n, data, to, runs, None)
}

/// GSO segments per message: ours, or fewer if `quinn-udp` found the kernel takes fewer.
fn max_segments() -> usize {
    #[cfg(feature = "quinn-udp")]
    return GSO_MAX_SEGMENTS.min(crate::quinn::max_gso_segments());
    #[cfg(not(feature = "quinn-udp"))]
    GSO_MAX_SEGMENTS
}

/// [`send_datagrams`]; `whole`, when given, is a buffer every `data(i)` lies in.
fn send_all<'a>(
    fd: i32,
    n: usize,
    data: impl Fn(usize) -> &'a [u8],
    to: impl Fn(usize) -> SocketAddr,
    runs: &mut Vec<Run>,
    whole: Option<&'a [u8]>,
) -> SendOutcome {
    let segs = if GSO.enabled() { max_segments() } else { 1 };
    gso_runs(n, |i| data(i).len(), &to, segs, runs);
    let mut out = SendOutcome::default();
    let mut r = 0;
    while r < runs.len() {
        match send_runs(fd, &runs[r..], &data, &to, whole) {
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
                    match send_runs(fd, &singles[s..], &data, &to, whole) {
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

/// One `sendmsg` (through `quinn-udp`) of the first of `runs`: returns 1, or 0 when the socket
/// buffer is full. A run of several datagrams is one GSO message from one contiguous buffer:
/// a slice of `whole` when they lie back to back in it, else a copy.
#[cfg(feature = "quinn-udp")]
fn send_runs<'a>(
    fd: i32,
    runs: &[Run],
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
    whole: Option<&'a [u8]>,
) -> io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Run { start, count } = runs[0];
    let first = data(start);
    let sent = if count == 1 {
        crate::quinn::send(fd, first, None, to(start))
    } else if let Some(c) = whole.and_then(|w| back_to_back(w, start, count, data)) {
        crate::quinn::send(fd, c, Some(first.len()), to(start))
    } else {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            for i in start..start + count {
                s.extend_from_slice(data(i));
            }
            crate::quinn::send(fd, &s, Some(first.len()), to(start))
        })
    };
    match sent {
        Ok(()) => Ok(1),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Datagrams `start..start + count` as one slice of `whole`, if they lie back to back in it.
#[cfg(feature = "quinn-udp")]
fn back_to_back<'a>(
    whole: &'a [u8],
    start: usize,
    count: usize,
    data: &impl Fn(usize) -> &'a [u8],
) -> Option<&'a [u8]> {
    let base = whole.as_ptr() as usize;
    let first = (data(start).as_ptr() as usize).checked_sub(base)?;
    let mut end = first;
    for i in start..start + count {
        let d = data(i);
        if d.as_ptr() as usize != base + end {
            return None;
        }
        end += d.len();
    }
    whole.get(first..end)
}

/// Messages per `sendmmsg` and iovecs over all of them.
#[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
const IOVS: usize = 4 * BATCH;

/// One `sendmmsg` of as many leading `runs` as fit; returns how many runs were sent
/// (0 when the socket buffer is full).
#[cfg(all(target_os = "linux", not(feature = "quinn-udp")))]
fn send_runs<'a>(
    fd: i32,
    runs: &[Run],
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
    _whole: Option<&'a [u8]>,
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

#[cfg(all(not(target_os = "linux"), not(feature = "quinn-udp")))]
fn send_runs<'a>(
    fd: i32,
    runs: &[Run],
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
    _whole: Option<&'a [u8]>,
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_os = "linux")]
    use crate::set_int_option;
    use std::net::UdpSocket;

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
        tx.set_nonblocking(true).unwrap();
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

    /// `send_datagrams` with each datagram in a buffer of its own (as the TURN driver sends
    /// slices of its receive slots): runs of equal sizes still arrive whole and in order.
    #[test]
    fn send_datagrams_from_separate_buffers() {
        GSO.init(true);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx = big_receiver();
        let to = rx.local_addr().unwrap();
        let bufs: Vec<Vec<u8>> = (0..50u8)
            .map(|i| vec![i; if i % 10 == 9 { 90 } else { 400 }])
            .collect();
        let mut runs = Vec::new();
        let out = send_datagrams(
            std::os::fd::AsRawFd::as_raw_fd(&tx),
            bufs.len(),
            |i| bufs[i].as_slice(),
            |_| to,
            &mut runs,
        );
        assert_eq!(out, SendOutcome::default());
        assert!(runs.iter().any(|r| r.count > 1) || !GSO.enabled());
        assert_eq!(receive_all(&rx, bufs.len()), bufs);
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
        tx.set_nonblocking(true).unwrap();
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
}
