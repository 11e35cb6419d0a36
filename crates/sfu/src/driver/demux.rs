//! Demultiplexing of the shared ports: every session's traffic arrives on one UDP socket and one
//! ICE-TCP listener, and each datagram or frame must reach the one `Rtc` it belongs to.
//!
//! The first byte says what it is (RFC 7983). A STUN message is routed by the ufrag in its
//! USERNAME (`ours:theirs`, [`crate::wire::stun_local_ufrag`]); a connectivity check that the
//! session's `Rtc` accepted teaches us its source address, by which DTLS and SRTP are routed
//! afterwards. Over ICE-TCP the connection itself is bound to the session its first accepted
//! check named. Learning is bounded ([`MAX_ADDRS`] per session) and never takes an address or a
//! connection from another session, so spoofed checks can neither grow the tables nor steal
//! routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;
use switchboard_udp::{RecvBatch, BATCH};

use super::drop_reason;
use super::engine::Engine;
use super::forward::egress_nacks;
use super::net::{recv_batch, RECV_BATCHES, RECV_BUF};
use crate::core::ParticipantId;
use crate::tcp::TcpIn;
use crate::wire::{self, DatagramKind};

/// Source addresses remembered per session (ICE candidate pairs); bounds what a flood of
/// STUN messages carrying a known ufrag can make us store.
const MAX_ADDRS: usize = 8;

/// How a session is reached: its ICE ufrags and the source addresses it was seen at.
#[derive(Debug, Default)]
pub(super) struct SessionRoutes {
    ufrag: String,
    /// The ufrag before the last ICE restart (checks in flight may still carry it).
    old_ufrag: Option<String>,
    addrs: Vec<SocketAddr>,
}

/// The routing tables of the shared ports.
#[derive(Debug, Default)]
pub(super) struct Demux {
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
}

impl Demux {
    /// Routes checks carrying `ufrag` to the new session `id`.
    pub(super) fn add_session(&mut self, id: ParticipantId, ufrag: String) -> SessionRoutes {
        self.by_ufrag.insert(ufrag.clone(), id);
        SessionRoutes {
            ufrag,
            old_ufrag: None,
            addrs: Vec::new(),
        }
    }

    /// The session a UDP datagram of `kind` from `src` belongs to, or the drop reason.
    pub(super) fn route_udp(
        &self,
        kind: DatagramKind,
        data: &[u8],
        src: SocketAddr,
    ) -> Result<ParticipantId, &'static str> {
        match kind {
            DatagramKind::Unknown => Err("unknown_kind"),
            DatagramKind::Stun => {
                let ufrag = wire::stun_local_ufrag(data).ok_or("stun_without_username")?;
                self.by_ufrag.get(ufrag).copied().ok_or("unknown_ufrag")
            }
            DatagramKind::Dtls | DatagramKind::Rtp => {
                self.by_addr.get(&src).copied().ok_or("unknown_source")
            }
        }
    }

    /// The session an ICE-TCP frame of `kind` belongs to, on a connection bound to `bound`, or
    /// the drop reason. A check on a bound connection must name the same session.
    pub(super) fn route_tcp(
        &self,
        kind: DatagramKind,
        data: &[u8],
        bound: Option<ParticipantId>,
    ) -> Result<ParticipantId, &'static str> {
        match (kind, bound) {
            (DatagramKind::Unknown, _) => Err("unknown_kind"),
            (DatagramKind::Stun, bound) => {
                let id = wire::stun_local_ufrag(data)
                    .and_then(|u| self.by_ufrag.get(u))
                    .copied()
                    .ok_or("unknown_ufrag")?;
                if bound.is_some_and(|b| b != id) {
                    return Err("tcp_session_mismatch");
                }
                Ok(id)
            }
            (_, Some(id)) => Ok(id),
            (_, None) => Err("unknown_source"),
        }
    }

    /// A STUN check from `src` carrying session `id`'s ufrag was accepted by its `Rtc`: route
    /// `src` to it, unless another session owns the address or `id` has [`MAX_ADDRS`] already.
    pub(super) fn learn(&mut self, routes: &mut SessionRoutes, id: ParticipantId, src: SocketAddr) {
        if !self.by_addr.contains_key(&src) && routes.addrs.len() < MAX_ADDRS {
            self.by_addr.insert(src, id);
            routes.addrs.push(src);
        }
    }

    /// The session's local ufrag is now `ufrag` (an ICE restart when it changed): route it and
    /// keep the previous one until the next restart; the one before that is dropped.
    pub(super) fn set_ufrag(
        &mut self,
        routes: &mut SessionRoutes,
        id: ParticipantId,
        ufrag: String,
    ) {
        if ufrag == routes.ufrag {
            return;
        }
        let previous = std::mem::replace(&mut routes.ufrag, ufrag.clone());
        if let Some(older) = routes.old_ufrag.replace(previous) {
            self.by_ufrag.remove(&older);
        }
        self.by_ufrag.insert(ufrag, id);
    }

    /// Drops every route to `id` (its session ended); routes another session owns stay.
    pub(super) fn remove_session(&mut self, routes: &SessionRoutes, id: ParticipantId) {
        self.by_ufrag.remove(&routes.ufrag);
        if let Some(old) = &routes.old_ufrag {
            self.by_ufrag.remove(old);
        }
        for a in &routes.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
    }

    /// ufrag routes.
    pub(super) fn ufrag_routes(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Source-address routes.
    pub(super) fn addr_routes(&self) -> usize {
        self.by_addr.len()
    }
}

/// Where a datagram or ICE-TCP frame came from.
#[derive(Clone, Copy)]
enum Source {
    /// A UDP datagram from this address.
    Udp(SocketAddr),
    /// A frame on ICE-TCP connection `conn` from `remote` to our `local` listener; `bound` is
    /// the session the connection is bound to, if any yet.
    Tcp {
        conn: u64,
        remote: SocketAddr,
        local: SocketAddr,
        bound: Option<ParticipantId>,
    },
}

impl Engine {
    /// Reads what the socket holds, in `recvmmsg` batches, and feeds every datagram to its
    /// session before anything is polled: one wakeup handles many packets, and sessions are
    /// polled once per batch instead of once per datagram. Bounded so commands and timers are
    /// not starved under flood.
    pub(super) fn drain_socket(&mut self, rx: &mut RecvBatch) {
        for _ in 0..RECV_BATCHES {
            let n = match recv_batch(&self.net.socket, rx) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    // ICMP errors surface as recv errors on some platforms; keep going.
                    drop_reason(&self.metrics, "recv_error");
                    break;
                }
            };
            self.metrics.datagrams_received.inc_by(n as u64);
            let now = Instant::now();
            let wall = switchboard_udp::wall_clock();
            for i in 0..n {
                let (data, src, truncated) = rx.get(i);
                let Some(src) = src else {
                    drop_reason(&self.metrics, "unknown_source");
                    continue;
                };
                // str0m gets the kernel's receive time, so a frame's `network_time` (where the
                // forwarding latency starts) includes the time it waited in the socket queue.
                let stamp = rx.timestamp(i);
                let at = switchboard_udp::arrival(now, wall, stamp);
                if stamp.is_some() {
                    let queued = now.saturating_duration_since(at);
                    self.metrics.receive_queue.observe(queued.as_secs_f64());
                }
                self.datagram(at, src, data, truncated || data.len() >= RECV_BUF);
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// One UDP datagram: routed to its session and handed to its `Rtc`.
    fn datagram(&mut self, now: Instant, src: SocketAddr, data: &[u8], truncated: bool) {
        if truncated {
            drop_reason(&self.metrics, "oversized");
            return;
        }
        self.receive(Source::Udp(src), data, now);
    }

    /// A datagram or ICE-TCP frame: routed to its session and handed to its `Rtc`, or counted
    /// as dropped (no route, not a packet str0m can take, not accepted by the session). NACKs
    /// for the own egress are answered on the transport they came in on; a STUN check the
    /// session accepted over UDP teaches its address, a frame it accepted over ICE-TCP binds
    /// the connection to it.
    #[inline]
    fn receive(&mut self, from: Source, data: &[u8], now: Instant) {
        let kind = wire::classify(data);
        let (routed, proto, source, destination) = match from {
            Source::Udp(src) => (
                self.demux.route_udp(kind, data, src),
                Protocol::Udp,
                src,
                self.net.local,
            ),
            Source::Tcp {
                remote,
                local,
                bound,
                ..
            } => (
                self.demux.route_tcp(kind, data, bound),
                Protocol::Tcp,
                remote,
                local,
            ),
        };
        let id = match routed {
            Ok(id) => id,
            Err(reason) => {
                drop_reason(&self.metrics, reason);
                return;
            }
        };
        let Ok(recv) = Receive::new(proto, source, destination, data) else {
            drop_reason(&self.metrics, "malformed");
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let input = Input::Receive(now, recv);
        if !s.rtc.accepts(&input) {
            drop_reason(&self.metrics, "not_accepted");
            return;
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(error = %e, "sfu input rejected");
            drop_reason(&self.metrics, "rtc_error");
        }
        match from {
            Source::Udp(src) => {
                if kind == DatagramKind::Rtp {
                    let out = &mut self.net.out;
                    egress_nacks(s, data, now, &self.metrics, |b| out.push(b, src));
                }
                if kind == DatagramKind::Stun {
                    self.demux.learn(&mut s.routes, id, src);
                }
            }
            Source::Tcp { conn, .. } => {
                if kind == DatagramKind::Rtp {
                    let tcp = &self.net.tcp;
                    egress_nacks(s, data, now, &self.metrics, |b| {
                        let _ = tcp.send_on(conn, b.to_vec());
                    });
                }
                self.net.tcp.bind(conn, id);
            }
        }
        self.work.mark(id, s);
    }

    /// What the ICE-TCP connection tasks report.
    pub(super) fn tcp_input(&mut self, t: TcpIn) {
        match t {
            TcpIn::Open {
                conn,
                remote,
                tx,
                cancel,
            } => self.net.tcp.open(conn, remote, tx, cancel, Instant::now()),
            TcpIn::Closed { conn } => self.net.tcp.closed(conn),
            TcpIn::Frame { conn, data } => self.tcp_frame(conn, &data),
        }
    }

    /// One RFC 4571 frame from ICE-TCP connection `conn`: routed like a datagram; the first
    /// frame its session accepts binds the connection to that session.
    fn tcp_frame(&mut self, conn: u64, data: &[u8]) {
        let Some(local) = self.net.local_tcp else {
            return;
        };
        let Some((remote, bound)) = self.net.tcp.get(conn) else {
            return;
        };
        let from = Source::Tcp {
            conn,
            remote,
            local,
            bound,
        };
        self.receive(from, data, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::stun_with_username;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 1], port))
    }

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);

    /// A demux with session A (ufrag "ua") and session B (ufrag "ub"), and their routes.
    fn sessions_a_and_b() -> (Demux, SessionRoutes, SessionRoutes) {
        let mut d = Demux::default();
        let ra = d.add_session(A, "ua".into());
        let rb = d.add_session(B, "ub".into());
        (d, ra, rb)
    }

    #[test]
    fn udp_stun_goes_by_ufrag_and_media_by_learned_address() {
        let mut d = Demux::default();
        let mut ra = d.add_session(A, "ua".into());
        let check = stun_with_username(b"ua:remote");
        let k = wire::classify(&check);
        assert_eq!(d.route_udp(k, &check, addr(1)), Ok(A));
        assert_eq!(
            d.route_udp(k, &stun_with_username(b"zz:remote"), addr(1)),
            Err("unknown_ufrag")
        );
        assert_eq!(
            d.route_udp(k, &check[..20], addr(1)),
            Err("stun_without_username")
        );
        let rtp = [0x80, 0x60, 0, 1];
        let dtls = [22, 0xfe, 0xfd];
        assert_eq!(
            d.route_udp(wire::classify(&rtp), &rtp, addr(1)),
            Err("unknown_source")
        );
        d.learn(&mut ra, A, addr(1));
        assert_eq!(d.route_udp(wire::classify(&rtp), &rtp, addr(1)), Ok(A));
        assert_eq!(d.route_udp(wire::classify(&dtls), &dtls, addr(1)), Ok(A));
        assert_eq!(
            d.route_udp(wire::classify(&[0xff]), &[0xff], addr(1)),
            Err("unknown_kind")
        );
        assert_eq!(
            d.route_udp(wire::classify(&[]), &[], addr(1)),
            Err("unknown_kind")
        );
    }

    #[test]
    fn tcp_frames_follow_the_bound_session_and_checks_may_not_switch_it() {
        let (d, _, _) = sessions_a_and_b();
        let (ca, cb) = (stun_with_username(b"ua:x"), stun_with_username(b"ub:x"));
        let stun_kind = DatagramKind::Stun;
        assert_eq!(d.route_tcp(stun_kind, &ca, None), Ok(A));
        assert_eq!(d.route_tcp(stun_kind, &ca, Some(A)), Ok(A));
        assert_eq!(
            d.route_tcp(stun_kind, &cb, Some(A)),
            Err("tcp_session_mismatch")
        );
        // Over TCP a check without a usable USERNAME counts as an unknown ufrag.
        assert_eq!(
            d.route_tcp(stun_kind, &ca[..20], None),
            Err("unknown_ufrag")
        );
        assert_eq!(d.route_tcp(DatagramKind::Rtp, &[0x80], Some(B)), Ok(B));
        assert_eq!(d.route_tcp(DatagramKind::Dtls, &[22], Some(B)), Ok(B));
        assert_eq!(
            d.route_tcp(DatagramKind::Rtp, &[0x80], None),
            Err("unknown_source")
        );
        assert_eq!(
            d.route_tcp(DatagramKind::Unknown, &[0xff], Some(A)),
            Err("unknown_kind")
        );
    }

    #[test]
    fn learning_is_bounded_and_never_takes_another_sessions_address() {
        let (mut d, mut ra, mut rb) = sessions_a_and_b();
        d.learn(&mut ra, A, addr(1));
        d.learn(&mut rb, B, addr(1));
        assert_eq!(d.by_addr.get(&addr(1)), Some(&A), "A keeps its address");
        assert!(rb.addrs.is_empty());
        d.learn(&mut ra, A, addr(1));
        assert_eq!(ra.addrs, &[addr(1)], "an address is stored once");
        for port in 2..100 {
            d.learn(&mut ra, A, addr(port));
        }
        assert_eq!(ra.addrs.len(), MAX_ADDRS);
        assert_eq!(d.addr_routes(), MAX_ADDRS);
    }

    #[test]
    fn ice_restart_keeps_the_previous_ufrag_until_the_next_one() {
        let mut d = Demux::default();
        let mut ra = d.add_session(A, "u1".into());
        d.set_ufrag(&mut ra, A, "u1".into());
        assert_eq!(d.ufrag_routes(), 1, "same ufrag: nothing changes");
        d.set_ufrag(&mut ra, A, "u2".into());
        assert_eq!(d.ufrag_routes(), 2);
        for u in ["u1", "u2"] {
            let check = stun_with_username(format!("{u}:x").as_bytes());
            assert_eq!(d.route_udp(DatagramKind::Stun, &check, addr(1)), Ok(A));
        }
        d.set_ufrag(&mut ra, A, "u3".into());
        assert_eq!(d.ufrag_routes(), 2, "u1 is dropped");
        let check = stun_with_username(b"u1:x");
        assert_eq!(
            d.route_udp(DatagramKind::Stun, &check, addr(1)),
            Err("unknown_ufrag")
        );
    }

    #[test]
    fn removing_a_session_drops_its_routes_only() {
        let (mut d, mut ra, mut rb) = sessions_a_and_b();
        d.set_ufrag(&mut ra, A, "ua2".into());
        d.learn(&mut ra, A, addr(1));
        d.learn(&mut rb, B, addr(2));
        d.remove_session(&ra, A);
        assert_eq!(d.ufrag_routes(), 1);
        assert_eq!(d.addr_routes(), 1);
        assert_eq!(d.route_udp(DatagramKind::Rtp, &[0x80], addr(2)), Ok(B));
    }
}
