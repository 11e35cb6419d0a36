//! UDP client listener and relay socket loops, both batched.

use super::steer::BusyClock;
use super::{Shared, State};
use crate::core::{ClientId, Output};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use switchboard_udp::{send_datagrams, RecvBatch, Run, SendBatch, SendOutcome, BATCH};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One datagram for a peer: bytes `start..end` of receive slot `slot` (or of the caller's
/// buffer), to leave on relay socket `sock`.
pub(crate) struct PeerSend {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    slot: usize,
    start: usize,
    end: usize,
}

/// Datagrams for peers gathered from one receive batch (or one TCP read), sent grouped by
/// relay socket: one batch per relay socket, equal-size datagrams to one peer merged into
/// GSO messages (one `sendmsg` each), instead of one `sendto` per datagram.
#[derive(Default)]
pub(crate) struct PeerSends {
    items: Vec<PeerSend>,
    runs: Vec<Run>,
}

impl PeerSends {
    pub fn push(
        &mut self,
        sock: Arc<UdpSocket>,
        peer: SocketAddr,
        slot: usize,
        start: usize,
        end: usize,
    ) {
        self.items.push(PeerSend {
            sock,
            peer,
            slot,
            start,
            end,
        });
    }

    /// Sends everything queued; `bytes(slot, start, end)` returns a datagram's bytes.
    pub fn flush<'a>(&mut self, shared: &Shared, bytes: impl Fn(usize, usize, usize) -> &'a [u8]) {
        if self.items.is_empty() {
            return;
        }
        // Stable: datagrams of one relay socket keep their order.
        if self.items.len() > 1 {
            self.items
                .sort_by_key(|p| Arc::as_ptr(&p.sock) as *const u8 as usize);
        }
        let mut out = SendOutcome::default();
        let mut i = 0;
        while i < self.items.len() {
            let sock = &self.items[i].sock;
            let n = self.items[i..]
                .iter()
                .take_while(|p| Arc::ptr_eq(&p.sock, sock))
                .count();
            let group = &self.items[i..i + n];
            out += send_datagrams(
                std::os::fd::AsRawFd::as_raw_fd(&**sock),
                n,
                |k| {
                    let p = &group[k];
                    bytes(p.slot, p.start, p.end)
                },
                |k| group[k].peer,
                &mut self.runs,
            );
            i += n;
        }
        self.items.clear();
        count_outcome(shared, out);
    }
}

/// Counts what a batched send dropped or could not merge.
pub(crate) fn count_outcome(shared: &Shared, out: SendOutcome) {
    if out.dropped > 0 {
        shared
            .metrics
            .dropped
            .get_or_create(&[("reason", "send_failed")])
            .inc_by(out.dropped as u64);
    }
    if out.gso_fallbacks > 0 {
        shared
            .metrics
            .gso_fallbacks
            .inc_by(out.gso_fallbacks as u64);
    }
}

thread_local! {
    /// Datagrams received on this worker thread since it last went idle.
    static WORK: Cell<usize> = const { Cell::new(0) };
    /// When this worker thread last went idle, and how long its last idle spell lasted.
    static PARKED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    static LAST_IDLE: Cell<Duration> = const { Cell::new(Duration::MAX) };
}

/// Runs when a UDP worker's runtime is about to wait for I/O (nothing left to run). When the
/// thread is busy — it found datagrams, and its previous wait lasted less than `window` — it
/// first sleeps `window`, so datagrams pile up and the next wakeup drains them in a few
/// batched syscalls instead of one epoll wakeup per datagram (software interrupt
/// coalescing). At lower rates the previous wait is longer than `window` and nothing is
/// delayed.
///
/// With `yield_first`, a thread that handled datagrams since its last wait first yields its
/// core once (see `TurnConfig::udp_yield`). `busy` is the thread's busy clock (read by the
/// steering task, see `steer`).
pub(crate) fn before_park(window: Duration, yield_first: bool, busy: &BusyClock) {
    busy.waits();
    let work = WORK.with(|w| w.replace(0));
    if should_yield(yield_first, work) {
        std::thread::yield_now();
    }
    if should_coalesce(window, work, LAST_IDLE.with(|l| l.get())) {
        std::thread::sleep(window);
    }
    PARKED_AT.with(|p| p.set(Some(Instant::now())));
}

/// Runs when a UDP worker's runtime wakes up; records how long it waited.
pub(crate) fn after_unpark(busy: &BusyClock) {
    busy.woke();
    if let Some(t) = PARKED_AT.with(|p| p.take()) {
        LAST_IDLE.with(|l| l.set(t.elapsed()));
    }
}

/// Whether a worker about to wait should sleep `window` first (see [`before_park`]).
fn should_coalesce(window: Duration, work: usize, last_idle: Duration) -> bool {
    !window.is_zero() && work > 0 && last_idle < window
}

/// Whether a worker about to wait should yield its core first (see [`before_park`]).
fn should_yield(enabled: bool, work: usize) -> bool {
    enabled && work > 0
}

pub(crate) fn count_work(n: usize) {
    WORK.with(|w| w.set(w.get() + n));
}

thread_local! {
    /// Index of the UDP worker running on this thread (its listener sends our replies).
    pub(crate) static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Serves one SO_REUSEPORT listener socket until shutdown.
pub(crate) async fn listener_loop(shared: Arc<Shared>, idx: usize, sock: Arc<UdpSocket>) {
    let _ = idx;
    let mut rx = RecvBatch::new();
    let mut replies = SendBatch::default();
    let mut to_peers = PeerSends::default();
    let mut out = Vec::with_capacity(2048);
    loop {
        tokio::select! {
            r = sock.readable() => if let Err(e) = r {
                tracing::warn!(error = %e, "turn udp socket failed");
                return;
            },
            _ = shared.shutdown.cancelled() => return,
        }
        loop {
            let n = match recv_batch(&sock, &mut rx) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors surface here on some kernels; keep serving.
                    tracing::debug!(error = %e, "turn udp recv");
                    break;
                }
            };
            count_work(n);
            let now = Instant::now();
            {
                let mut st = shared.state.lock();
                let State { core, relays, .. } = &mut *st;
                for i in 0..n {
                    let (data, from, truncated) = rx.get(i);
                    let Some(from) = from else { continue };
                    if truncated {
                        shared.metrics.malformed("oversized");
                        continue;
                    }
                    let client = ClientId::udp(from);
                    match core.handle_client(now, &client, data, relays, &mut out) {
                        Output::None => {}
                        Output::ToClient => replies.push(&out, from),
                        Output::ToPeer {
                            relay,
                            peer,
                            start,
                            end,
                        } => {
                            if let Some(sock) = relays.socket(relay) {
                                to_peers.push(sock, peer, i, start, end);
                            }
                        }
                        // TCP relays (RFC 6062) are refused over UDP; the core never asks.
                        Output::Connect { .. } | Output::Bind { .. } => {}
                    }
                }
            }
            to_peers.flush(&shared, |slot, start, end| &rx.get(slot).0[start..end]);
            if !replies.is_empty() {
                count_outcome(&shared, replies.flush(&*sock));
            }
            if n < BATCH {
                break;
            }
        }
    }
}

/// One `recvmmsg` through tokio's readiness. A batch shorter than [`BATCH`] means the socket
/// queue was empty when the kernel returned, so readiness is cleared right away (as if the
/// next read had returned `WouldBlock`): at ≤ 1 datagram per wakeup this saves a second,
/// empty `recvmmsg` per datagram. Tokio clears readiness only if no new event arrived since
/// it was observed, so a datagram landing in between still wakes us. Returns the count
/// received (0 when there was nothing).
fn recv_batch(sock: &UdpSocket, rx: &mut RecvBatch) -> io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, || {
        got = rx.recv(sock)?;
        if got < BATCH {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(got),
        Err(e) => Err(e),
    }
}

thread_local! {
    /// Relay tasks share per-thread buffers so an idle allocation holds none.
    static RELAY_IO: RefCell<(RecvBatch, SendBatch, Vec<u8>)> =
        RefCell::new((RecvBatch::new(), SendBatch::default(), Vec::with_capacity(2048)));
    /// On a UDP worker thread: datagrams for UDP clients queued by relay tasks, flushed by
    /// [`client_flusher`] once every relay task woken by the same poll has run, so replies
    /// read from many relay sockets leave in one batch (one `sendmsg` per GSO run) on the
    /// listener socket.
    static TO_CLIENTS: RefCell<SendBatch> = RefCell::new(SendBatch::default());
    static FLUSH: std::rc::Rc<tokio::sync::Notify> = std::rc::Rc::new(tokio::sync::Notify::new());
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs beside [`listener_loop`] on each UDP worker thread (same current-thread runtime):
/// flushes [`TO_CLIENTS`] when relay tasks ask for it. Being woken puts it at the back of the
/// run queue, behind the relay tasks the same I/O poll woke, so they share one flush.
pub(crate) async fn client_flusher(shared: Arc<Shared>, idx: usize) {
    IS_WORKER.with(|w| w.set(true));
    let notify = FLUSH.with(|f| f.clone());
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        flush_to_clients(&shared, idx);
    }
}

fn flush_to_clients(shared: &Shared, idx: usize) {
    let Some(sock) = shared.udp.get(idx).or(shared.udp.first()) else {
        return;
    };
    let out = TO_CLIENTS.with(|b| b.borrow_mut().flush(&**sock));
    count_outcome(shared, out);
}

/// Reads peer datagrams arriving on one relay socket until the allocation ends.
pub(crate) async fn relay_loop(shared: Weak<Shared>, sock: Arc<UdpSocket>, relay: SocketAddr) {
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let more = RELAY_IO.with(|io| {
            let mut io = io.borrow_mut();
            let (rx, udp_out, out) = &mut *io;
            drain_relay(&shared, &sock, relay, rx, udp_out, out)
        });
        if more {
            // A full batch: let other tasks run before draining again.
            tokio::task::yield_now().await;
        }
    }
}

fn drain_relay(
    shared: &Shared,
    sock: &UdpSocket,
    relay: SocketAddr,
    rx: &mut RecvBatch,
    udp_out: &mut SendBatch,
    out: &mut Vec<u8>,
) -> bool {
    let n = match recv_batch(sock, rx) {
        Ok(n) if n > 0 => n,
        _ => return false,
    };
    count_work(n);
    let now = Instant::now();
    let on_worker = IS_WORKER.with(|w| w.get());
    let mut deferred = false;
    {
        let mut st = shared.state.lock();
        let State { core, conns, .. } = &mut *st;
        // A relay socket belongs to one allocation, so everything it read goes to one client:
        // a TCP/TLS client gets the frames of the whole batch as one queued write.
        let mut to_stream: Option<(u64, Vec<u8>)> = None;
        for i in 0..n {
            let (data, from, truncated) = rx.get(i);
            let Some(from) = from else { continue };
            if truncated {
                shared.metrics.dropped("oversized");
                continue;
            }
            if let Some(client) = core.handle_peer(now, relay, from, data, out) {
                if client.transport.is_stream() {
                    match &mut to_stream {
                        Some((conn, frames)) if *conn == client.conn => {
                            frames.extend_from_slice(out)
                        }
                        _ => {
                            if let Some((conn, frames)) = to_stream.take() {
                                super::queue_to_stream(shared, conns, conn, frames);
                            }
                            to_stream = Some((client.conn, out.clone()));
                        }
                    }
                } else if on_worker {
                    // Deferred to the worker's flusher (see TO_CLIENTS).
                    TO_CLIENTS.with(|b| {
                        let mut b = b.borrow_mut();
                        if b.is_empty() {
                            FLUSH.with(|f| f.notify_one());
                        }
                        b.push(out, client.remote);
                    });
                    deferred = true;
                } else {
                    udp_out.push(out, client.remote);
                }
            }
        }
        if let Some((conn, frames)) = to_stream {
            super::queue_to_stream(shared, conns, conn, frames);
        }
    }
    if deferred && TO_CLIENTS.with(|b| b.borrow().len() >= 4 * BATCH) {
        flush_to_clients(shared, WORKER.with(|w| w.get()));
    }
    if !udp_out.is_empty() {
        let w = WORKER.with(|w| w.get());
        if let Some(s) = shared.udp.get(w).or(shared.udp.first()) {
            count_outcome(shared, udp_out.flush(&**s));
        }
    }
    n == BATCH
}

#[cfg(test)]
mod tests {
    use super::{should_coalesce, should_yield};
    use std::time::Duration;

    #[test]
    fn coalesces_only_when_busy() {
        let w = Duration::from_micros(200);
        // Woken again 50 µs after going idle and found datagrams: busy, wait first.
        assert!(should_coalesce(w, 3, Duration::from_micros(50)));
        // Idle for longer than the window: low rate, no delay.
        assert!(!should_coalesce(w, 3, Duration::from_millis(2)));
        // Nothing received since the last wait (timers, TCP): no delay.
        assert!(!should_coalesce(w, 0, Duration::ZERO));
        // Switched off.
        assert!(!should_coalesce(Duration::ZERO, 3, Duration::ZERO));
        // The first wait of a thread.
        assert!(!should_coalesce(w, 3, Duration::MAX));
    }

    #[test]
    fn yields_only_after_work() {
        assert!(should_yield(true, 1));
        // Woken by a timer or a TCP connection only: nothing to let others answer.
        assert!(!should_yield(true, 0));
        assert!(!should_yield(false, 5));
    }
}
