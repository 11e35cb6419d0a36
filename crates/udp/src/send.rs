//! Send side: [`SendBatch`] queues datagrams and [`send_datagrams`] sends them, each run of
//! [`gso_runs`] as one `sendmsg` through `quinn-udp` (a UDP GSO message while [`GSO`] is on
//! and the run has several datagrams), the datagrams of a run the kernel refused one by one.

use crate::{gso_runs, Run, BATCH, GSO, GSO_MAX_SEGMENTS};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Send side: queued datagrams, flushed with one `sendmsg` per run (consecutive datagrams of
/// equal size to one destination leave as one UDP GSO message).
#[derive(Default)]
pub struct SendBatch {
    /// The queued datagrams back to back: a GSO message is sent from one contiguous buffer,
    /// so a run leaves from here without being copied again.
    bytes: Vec<u8>,
    /// Where each queued datagram lies in `bytes`.
    spans: Vec<std::ops::Range<usize>>,
    to: Vec<SocketAddr>,
    runs: Vec<Run>,
}

impl SendBatch {
    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Queues a copy of `data` for `to`.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.spans.push(start..self.bytes.len());
        self.to.push(to);
    }

    /// Queues `data` for `to`, e.g. a datagram a protocol library already allocated. It is
    /// copied next to the others, like [`SendBatch::push`].
    pub fn push_owned(&mut self, data: Vec<u8>, to: SocketAddr) {
        self.push(&data, to);
    }

    /// Sends everything queued on a non-blocking socket; datagrams the kernel will not take
    /// right now are dropped (UDP semantics).
    pub fn flush(&mut self, sock: &impl AsRawFd) -> SendOutcome {
        let (bytes, spans, to) = (&self.bytes, &self.spans, &self.to);
        let out = send_all(
            sock.as_raw_fd(),
            spans.len(),
            |i| &bytes[spans[i].clone()],
            |i| to[i],
            &mut self.runs,
            Some(bytes),
        );
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

/// Sends datagrams `0..n` (`data(i)` to `to(i)`) on the non-blocking socket `fd`, one
/// `sendmsg` per run of [`gso_runs`], merging runs into GSO messages while [`GSO`] is on (a
/// run's datagrams are copied into one buffer for that). `runs` is scratch space.
pub fn send_datagrams<'a>(
    fd: i32,
    n: usize,
    data: impl Fn(usize) -> &'a [u8],
    to: impl Fn(usize) -> SocketAddr,
    runs: &mut Vec<Run>,
) -> SendOutcome {
    send_all(fd, n, data, to, runs, None)
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
    // Our segment limit, or fewer if `quinn-udp` found the kernel takes fewer.
    let segs = if GSO.enabled() {
        GSO_MAX_SEGMENTS.min(crate::quinn::max_gso_segments())
    } else {
        1
    };
    gso_runs(n, |i| data(i).len(), &to, segs, runs);
    let mut out = SendOutcome::default();
    for (r, &run) in runs.iter().enumerate() {
        match send_run(fd, run, &data, &to, whole) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Socket buffer full: the rest is dropped, as UDP would.
                out.dropped += runs[r..].iter().map(|x| x.count).sum::<usize>();
                break;
            }
            Err(_) if run.count > 1 => {
                // The kernel refused this GSO message: send its datagrams one by one.
                GSO.refused();
                out.gso_fallbacks += 1;
                let end = run.start + run.count;
                for i in run.start..end {
                    match send_run(fd, Run { start: i, count: 1 }, &data, &to, whole) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            out.dropped += end - i;
                            break;
                        }
                        Err(_) => out.dropped += 1,
                    }
                }
            }
            // The datagram failed (e.g. unreachable): skip it and go on.
            Err(_) => out.dropped += 1,
        }
    }
    out
}

/// One `sendmsg` through `quinn-udp` of `run` (`WouldBlock` when the socket buffer is full).
/// A run of several datagrams is one GSO message from one contiguous buffer: a slice of
/// `whole` when they lie back to back in it, else a copy.
fn send_run<'a>(
    fd: i32,
    run: Run,
    data: &impl Fn(usize) -> &'a [u8],
    to: &impl Fn(usize) -> SocketAddr,
    whole: Option<&'a [u8]>,
) -> io::Result<()> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Run { start, count } = run;
    let first = data(start);
    if count == 1 {
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
    }
}

/// Datagrams `start..start + count` as one slice of `whole`, if they lie back to back in it.
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
