//! RFC 6062 TCP relays: the listening socket of a TCP allocation, connections to and from
//! peers, and the byte pump between a peer connection and the client's data connection.
//!
//! The core decides (permissions, ids, the 30 s wait for ConnectionBind); this module owns
//! the sockets. A peer connection waits in [`State::tcp_peers`] as a plain std socket until a
//! client data connection binds it, on whichever worker thread that connection lives.
//! Whenever the core ends connections it lists their ids; [`close_ended`] closes them.

use super::{Shared, State};
use crate::core::{ClientId, TurnCore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a Connect request's connection attempt may take (RFC 6062 §5.2: at least 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a relay listener queues before they are accepted.
const BACKLOG: u32 = 64;

/// `max_bps` for a TCP allocation: one token bucket for all its connections, both directions
/// (as for UDP relays). Over TCP the excess is not dropped: a pump that overdraws it pauses
/// until the debt is repaid, and TCP flow control slows the sender.
pub(crate) struct TcpBudget {
    bps: u64,
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl TcpBudget {
    pub fn new(bps: u64) -> Arc<Self> {
        Arc::new(TcpBudget {
            bps,
            state: parking_lot::Mutex::new((bps as f64, Instant::now())),
        })
    }

    /// Takes `n` bytes; returns how long to wait before relaying more.
    fn take(&self, n: usize) -> Duration {
        let mut g = self.state.lock();
        let now = Instant::now();
        let (tokens, last) = &mut *g;
        let rate = self.bps as f64;
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        *tokens -= n as f64;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / rate)
        }
    }
}

/// A TCP connection to a peer, as the driver holds it.
pub(crate) enum TcpPeer {
    /// Connected, waiting for the client's ConnectionBind.
    Waiting(std::net::TcpStream),
    /// Bound to a client data connection; cancelling closes both.
    Relaying(CancellationToken),
}

/// A TCP socket on `addr` that the relay's listener and its outgoing connections can share
/// (SO_REUSEADDR and SO_REUSEPORT on both).
fn relay_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    #[cfg(unix)]
    s.set_reuseport(true)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Binds and listens on `addr` (port 0 or one from the range).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = relay_socket(addr)?;
    s.bind(addr)?;
    s.listen(BACKLOG)
}

/// Accepts peer connections on a TCP relay address until the allocation ends (the task is
/// aborted). A connection from a peer without a permission is closed at once.
pub(crate) async fn accept_peers(shared: Weak<Shared>, l: TcpListener, relay: SocketAddr) {
    let mut out = Vec::new();
    loop {
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Ok(s) = s.into_std() else { continue };
        let mut st = shared.state.lock();
        if let Some((id, owner)) = st
            .core
            .peer_connected(Instant::now(), relay, peer, &mut out)
        {
            st.peer_ready(&shared, id, Some(s), owner.conn, std::mem::take(&mut out));
        }
    }
}

/// Connects from relay address `relay` to `peer` for Connect request `id` and answers the
/// client: success with the connection id, or 447.
pub(crate) async fn connect(shared: Arc<Shared>, id: u32, relay: SocketAddr, peer: SocketAddr) {
    let attempt = async {
        let s = relay_socket(relay)?;
        s.bind(relay)?;
        s.connect(peer).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(s)) => s.into_std().ok(),
        _ => None,
    };
    let mut out = Vec::new();
    let mut st = shared.state.lock();
    if let Some(owner) = st
        .core
        .connect_done(Instant::now(), id, stream.is_some(), &mut out)
    {
        st.peer_ready(&shared, id, stream, owner.conn, out);
    }
}

impl State {
    /// Keeps peer connection `id` (when there is a socket) until a ConnectionBind takes it,
    /// and sends `frames` (the Connect response or the ConnectionAttempt indication) to the
    /// client on control connection `conn`.
    fn peer_ready(
        &mut self,
        shared: &Shared,
        id: u32,
        stream: Option<std::net::TcpStream>,
        conn: u64,
        frames: Vec<u8>,
    ) {
        if let Some(s) = stream {
            self.tcp_peers.insert(id, TcpPeer::Waiting(s));
        }
        super::queue_to_stream(shared, &self.conns, conn, frames);
    }
}

/// Closes the peer connections the core ended since it was last asked.
pub(crate) fn close_ended(core: &mut TurnCore, tcp_peers: &mut HashMap<u32, TcpPeer>) {
    for id in core.take_closed_tcp() {
        if let Some(TcpPeer::Relaying(stop)) = tcp_peers.remove(&id) {
            stop.cancel();
        }
    }
}

/// Relays bytes as they are between a bound client data connection and its peer connection
/// until either side closes (then both are closed, RFC 6062 §5.5) or the core ends it.
/// `early` are bytes the client sent right behind its ConnectionBind.
pub(crate) async fn pump<S>(shared: Arc<Shared>, id: u32, client: ClientId, data: S, early: Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stop = CancellationToken::new();
    let (peer, budget) = {
        let mut st = shared.state.lock();
        let budget = st
            .core
            .tcp_relay_of(id)
            .and_then(|r| st.relays.tcp_budget(r));
        let peer = match st.tcp_peers.remove(&id) {
            Some(TcpPeer::Waiting(s)) => {
                st.tcp_peers.insert(id, TcpPeer::Relaying(stop.clone()));
                Some(s)
            }
            _ => None,
        };
        (peer, budget)
    };
    let peer = peer.and_then(|s| TcpStream::from_std(s).ok());
    if let Some(peer) = peer {
        let (mut pr, mut pw) = peer.into_split();
        let (mut cr, mut cw) = tokio::io::split(data);
        let m = &shared.metrics;
        let budget = budget.as_deref();
        let up = async {
            if !early.is_empty() {
                pw.write_all(&early).await?;
                m.bytes_to_peer.inc_by(early.len() as u64);
            }
            copy_counted(&mut cr, &mut pw, &m.bytes_to_peer, budget, m).await
        };
        let down = copy_counted(&mut pr, &mut cw, &m.bytes_to_client, budget, m);
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = stop.cancelled() => {}
        }
        let _ = pw.shutdown().await;
        let _ = cw.shutdown().await;
    }
    tracing::debug!(id, client = %client.remote, "turn tcp relay connection closed");
    let mut st = shared.state.lock();
    st.tcp_peers.remove(&id);
    st.core.tcp_closed(id);
}

async fn copy_counted<R, W>(
    r: &mut R,
    w: &mut W,
    bytes: &prometheus_client::metrics::counter::Counter,
    budget: Option<&TcpBudget>,
    metrics: &crate::TurnMetrics,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        bytes.inc_by(n as u64);
        let wait = budget.map_or(Duration::ZERO, |b| b.take(n));
        if !wait.is_zero() {
            metrics.quota("bandwidth");
            tokio::time::sleep(wait).await;
        }
    }
}
