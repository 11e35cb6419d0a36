//! The engine's sockets: the shared UDP socket (bound with large buffers and kernel receive
//! times, read in `recvmmsg` batches, written in batches of GSO runs) and the table of ICE-TCP
//! connections whose frames the [`crate::tcp`] tasks carry.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_udp::{RecvBatch, SendBatch, BATCH};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::drop_reason;
use crate::core::ParticipantId;
use crate::metrics::SfuMetrics;
use crate::tcp::TcpIn;
use crate::SfuError;

/// Largest datagram we accept; anything this long or longer is treated as oversized.
pub(super) const RECV_BUF: usize = 2048;
/// Receive batches (of up to [`switchboard_udp::BATCH`] datagrams) per wakeup before commands
/// and timers get a turn.
pub(super) const RECV_BATCHES: usize = 8;
/// Queued outbound datagrams that force a flush in the middle of an engine turn (bounds memory
/// and the delay of the first datagram of a big fan-out).
pub(super) const SEND_FLUSH_AT: usize = 64;
/// A TCP connection that has not carried a valid check for a session by then is closed.
const TCP_UNBOUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared media socket, the datagrams queued for it in this engine turn, and the ICE-TCP
/// connections.
pub(super) struct Net {
    pub(super) socket: UdpSocket,
    /// Outbound datagrams of the current engine turn, flushed as GSO runs.
    pub(super) out: SendBatch,
    /// The advertised UDP address (public IP, bound port): str0m's local address for input.
    pub(super) local: SocketAddr,
    /// The advertised ICE-TCP address, if ICE-TCP is on.
    pub(super) local_tcp: Option<SocketAddr>,
    /// Per polled subscriber: earliest arrival of the media it was handed and how many units,
    /// observed as forwarding latency when the batch that carries them leaves.
    pub(super) fwd_sent: Vec<(Instant, u32)>,
    pub(super) tcp: TcpConns,
}

/// What [`bind`] opened.
pub(super) struct Bound {
    pub(super) net: Net,
    /// The UDP socket's bound address.
    pub(super) udp: SocketAddr,
    /// The ICE-TCP listener's bound address, if ICE-TCP is on.
    pub(super) tcp: Option<SocketAddr>,
    /// Frames and connection events from the ICE-TCP tasks.
    pub(super) tcp_rx: mpsc::Receiver<TcpIn>,
    /// Open ICE-TCP connections, counted by the connection tasks.
    pub(super) tcp_live: Arc<AtomicUsize>,
}

/// Binds `bind_ip:udp_port` and, with `ice_tcp`, the ICE-TCP listener on `bind_ip:tcp_port`
/// (its accept loop runs until `shutdown`); both are advertised on `public_ip`.
pub(super) async fn bind(
    bind_ip: IpAddr,
    public_ip: IpAddr,
    cfg: &crate::SfuConfig,
    shutdown: &CancellationToken,
) -> Result<Bound, SfuError> {
    let addr = SocketAddr::new(bind_ip, cfg.udp_port);
    let socket = bind_udp(addr).map_err(|source| SfuError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let bound = socket.local_addr().map_err(|source| SfuError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let local = SocketAddr::new(public_ip, bound.port());
    let (tcp_tx, tcp_rx) = mpsc::channel(1024);
    let tcp_live = Arc::new(AtomicUsize::new(0));
    let mut local_tcp = None;
    let mut bound_tcp = None;
    if cfg.ice_tcp {
        let taddr = SocketAddr::new(bind_ip, cfg.tcp_port);
        let listener = tokio::net::TcpListener::bind(taddr)
            .await
            .map_err(|source| SfuError::Bind {
                addr: taddr.to_string(),
                source,
            })?;
        let b = listener.local_addr().map_err(|source| SfuError::Bind {
            addr: taddr.to_string(),
            source,
        })?;
        bound_tcp = Some(b);
        local_tcp = Some(SocketAddr::new(public_ip, b.port()));
        tokio::spawn(crate::tcp::accept_loop(
            listener,
            tcp_tx.clone(),
            shutdown.clone(),
            cfg.max_sessions.saturating_mul(2),
            tcp_live.clone(),
        ));
    }
    drop(tcp_tx);
    let gso = switchboard_udp::GSO.init(true);
    tracing::debug!(gso, "sfu udp send path");
    Ok(Bound {
        net: Net {
            socket,
            out: SendBatch::default(),
            local,
            local_tcp,
            fwd_sent: Vec::new(),
            tcp: TcpConns::default(),
        },
        udp: bound,
        tcp: bound_tcp,
        tcp_rx,
        tcp_live,
    })
}

impl Net {
    /// Sends the datagrams queued during this turn and observes the forwarding latency of the
    /// media they carry.
    pub(super) fn flush(&mut self, metrics: &SfuMetrics) {
        let queued = self.out.len();
        if queued == 0 {
            return;
        }
        let dropped = self.out.flush(&self.socket).dropped;
        // Forwarding latency per (media unit, subscriber): arrival of the unit's first datagram
        // (the kernel's receive time, UDP) to this send of the subscriber's packets.
        if !self.fwd_sent.is_empty() {
            let now = Instant::now();
            for (t, units) in self.fwd_sent.drain(..) {
                let secs = now.duration_since(t).as_secs_f64();
                for _ in 0..units {
                    metrics.forwarding_latency.observe(secs);
                }
            }
        }
        metrics.datagrams_sent.inc_by((queued - dropped) as u64);
        for _ in 0..dropped {
            drop_reason(metrics, "send_failed");
        }
    }

    /// Whether enough datagrams are queued to send them before the turn ends.
    pub(super) fn should_flush(&self) -> bool {
        self.out.len() >= SEND_FLUSH_AT
    }
}

/// One accepted ICE-TCP connection.
struct TcpConn {
    remote: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
    /// The session whose checks it carried; set by the first frame a session accepted.
    session: Option<ParticipantId>,
    opened: Instant,
}

/// The ICE-TCP connections the engine knows, by connection id and by remote address (str0m
/// names a transmit's destination by address).
#[derive(Default)]
pub(super) struct TcpConns {
    conns: HashMap<u64, TcpConn>,
    by_remote: HashMap<SocketAddr, u64>,
}

impl TcpConns {
    /// A connection was accepted; a newer connection from the same remote takes its address.
    pub(super) fn open(
        &mut self,
        conn: u64,
        remote: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
        cancel: CancellationToken,
        now: Instant,
    ) {
        self.by_remote.insert(remote, conn);
        self.conns.insert(
            conn,
            TcpConn {
                remote,
                tx,
                cancel,
                session: None,
                opened: now,
            },
        );
    }

    /// The connection's tasks ended.
    pub(super) fn closed(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            self.forget_remote(conn, c.remote);
        }
    }

    /// The remote address of `conn` and the session it is bound to.
    pub(super) fn get(&self, conn: u64) -> Option<(SocketAddr, Option<ParticipantId>)> {
        self.conns.get(&conn).map(|c| (c.remote, c.session))
    }

    /// Binds `conn` to `id`: its later non-STUN frames go to that session.
    pub(super) fn bind(&mut self, conn: u64, id: ParticipantId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id);
        }
    }

    /// Queues a frame on connection `conn`; false if it is gone or its queue is full.
    pub(super) fn send_on(&self, conn: u64, frame: Vec<u8>) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.tx.try_send(frame).is_ok())
    }

    /// Queues a frame on the connection from `remote`; false if there is none or its queue is
    /// full.
    pub(super) fn send_to(&self, remote: SocketAddr, frame: Vec<u8>) -> bool {
        self.by_remote
            .get(&remote)
            .is_some_and(|conn| self.send_on(*conn, frame))
    }

    /// Closes connections that carried no valid check for [`TCP_UNBOUND_TIMEOUT`].
    pub(super) fn close_unbound(&self, now: Instant) {
        for c in self.conns.values() {
            if c.session.is_none() && now.duration_since(c.opened) >= TCP_UNBOUND_TIMEOUT {
                c.cancel.cancel();
            }
        }
    }

    /// Closes and forgets every connection bound to `id` (its session ended).
    pub(super) fn close_session(&mut self, id: ParticipantId) {
        let conns: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for k in conns {
            if let Some(c) = self.conns.remove(&k) {
                c.cancel.cancel();
                self.forget_remote(k, c.remote);
            }
        }
    }

    /// Closes every connection (shutdown).
    pub(super) fn close_all(&mut self) {
        for (_, c) in self.conns.drain() {
            c.cancel.cancel();
        }
    }

    /// Connections tracked.
    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    fn forget_remote(&mut self, conn: u64, remote: SocketAddr) {
        if self.by_remote.get(&remote) == Some(&conn) {
            self.by_remote.remove(&remote);
        }
    }
}

/// Binds the shared media socket with large kernel buffers: every session's media crosses it,
/// and bursts (keyframes fanned out to many subscribers) must not overflow the default ~200 kB.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    // Kernel receive times: the forwarding latency counts from there (see `drain_socket`).
    if !switchboard_udp::enable_rx_timestamps(&sock) {
        tracing::debug!("SO_TIMESTAMPNS refused; forwarding latency counts from the read");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// One `recvmmsg` through tokio's readiness. A batch shorter than [`BATCH`] means the socket
/// queue was empty when the kernel returned, so readiness is cleared at once (as if the next read
/// had returned `WouldBlock`), saving an empty `recvmmsg` per wakeup; tokio keeps readiness if a
/// new event arrived meanwhile, so no datagram is stranded. Returns the count received.
pub(super) fn recv_batch(sock: &UdpSocket, rx: &mut RecvBatch) -> std::io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, || {
        got = rx.recv(sock)?;
        if got < BATCH {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(got),
        Err(e) => Err(e),
    }
}

/// The source address the kernel would use towards the internet, if there is a default route.
pub(super) fn default_route_ip() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only asks the kernel for the source address.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    fn open(
        t: &mut TcpConns,
        conn: u64,
        remote: SocketAddr,
        now: Instant,
    ) -> (mpsc::Receiver<Vec<u8>>, CancellationToken) {
        let (tx, rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        t.open(conn, remote, tx, cancel.clone(), now);
        (rx, cancel)
    }

    #[test]
    fn frames_reach_the_connection_of_a_remote_address() {
        let now = Instant::now();
        let mut t = TcpConns::default();
        let (mut rx1, _) = open(&mut t, 1, addr(1000), now);
        assert!(t.send_to(addr(1000), b"a".to_vec()));
        assert_eq!(rx1.try_recv().ok(), Some(b"a".to_vec()));
        assert!(!t.send_to(addr(1001), b"b".to_vec()), "no such remote");
        assert!(t.send_on(1, b"c".to_vec()));
        assert!(!t.send_on(2, b"d".to_vec()), "no such connection");
        // A full queue refuses instead of waiting.
        for _ in 0..4 {
            t.send_on(1, vec![0]);
        }
        assert!(!t.send_on(1, vec![0]));
    }

    #[test]
    fn a_newer_connection_from_the_same_remote_keeps_its_address_when_the_old_one_closes() {
        let now = Instant::now();
        let mut t = TcpConns::default();
        let _old = open(&mut t, 1, addr(1000), now);
        let (mut rx2, _) = open(&mut t, 2, addr(1000), now);
        t.closed(1);
        assert_eq!(t.len(), 1);
        assert!(t.send_to(addr(1000), b"x".to_vec()));
        assert_eq!(rx2.try_recv().ok(), Some(b"x".to_vec()));
        t.closed(2);
        assert!(!t.send_to(addr(1000), b"y".to_vec()));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn binding_and_closing_a_session() {
        let now = Instant::now();
        let mut t = TcpConns::default();
        let (_, c1) = open(&mut t, 1, addr(1000), now);
        let (_, c2) = open(&mut t, 2, addr(1001), now);
        assert_eq!(t.get(1), Some((addr(1000), None)));
        t.bind(1, ParticipantId(7));
        assert_eq!(t.get(1), Some((addr(1000), Some(ParticipantId(7)))));
        t.close_session(ParticipantId(7));
        assert!(c1.is_cancelled());
        assert!(!c2.is_cancelled());
        assert_eq!(t.get(1), None);
        assert!(!t.send_to(addr(1000), vec![1]));
        t.close_all();
        assert!(c2.is_cancelled());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn unbound_connections_close_after_the_timeout() {
        let now = Instant::now();
        let mut t = TcpConns::default();
        let (_, unbound) = open(&mut t, 1, addr(1000), now);
        let (_, bound) = open(&mut t, 2, addr(1001), now);
        t.bind(2, ParticipantId(1));
        t.close_unbound(now + TCP_UNBOUND_TIMEOUT - Duration::from_millis(1));
        assert!(!unbound.is_cancelled());
        t.close_unbound(now + TCP_UNBOUND_TIMEOUT);
        assert!(unbound.is_cancelled());
        assert!(!bound.is_cancelled(), "a bound connection stays");
    }
}
