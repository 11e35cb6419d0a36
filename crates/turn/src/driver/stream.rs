//! TURN over TCP and TLS (RFC 8656 §3.1): the byte stream is cut into STUN messages and
//! ChannelData frames (padded to four bytes), each handed to the core. A connection that
//! binds an RFC 6062 peer connection (ConnectionBind) becomes a client data connection: from
//! then on its bytes are relayed as they are ([`super::tcp_relay::pump`]).
//! Replies and relayed data go through a bounded queue to a writer task; when a slow client
//! lets it fill, further relayed packets are dropped (as UDP would), never buffered without
//! bound. TLS certificates are reloaded on SIGHUP.

use super::{Shared, State};
use crate::core::stun::stream_frame_len;
use crate::core::{ClientId, Output, Transport};
use crate::TurnError;
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames queued per connection before relayed data is dropped.
const QUEUE: usize = 2048;
/// Largest frame: a STUN message with a 64 KiB body.
const MAX_FRAME: usize = 20 + 65_535 + 3;
/// A connection that has sent nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(600);
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
/// Worker thread for the next TCP client connection.
static NEXT_WORKER: AtomicUsize = AtomicUsize::new(0);

/// Counts open stream connections against `max_tcp_connections`.
pub(crate) struct ConnLimit {
    max: usize,
    open: AtomicUsize,
}

impl ConnLimit {
    pub fn new(max: usize) -> Self {
        ConnLimit {
            max,
            open: AtomicUsize::new(0),
        }
    }
    fn try_acquire(self: &Arc<Self>) -> Option<ConnGuard> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnGuard(self.clone()))
    }
}

struct ConnGuard(Arc<ConnLimit>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The next admitted connection: accept errors back off instead of spinning, connections over
/// `max_tcp_connections` are dropped and counted. `None` once shutdown begins.
async fn accept_admitted(
    shared: &Shared,
    l: &TcpListener,
    limit: &Arc<ConnLimit>,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, SocketAddr, ConnGuard)> {
    loop {
        let (s, remote) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "turn accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return None,
        };
        let Some(guard) = limit.try_acquire() else {
            shared.metrics.quota("tcp_connections");
            continue;
        };
        let _ = s.set_nodelay(true);
        return Some((s, remote, guard));
    }
}

pub(crate) async fn accept_tcp(shared: Arc<Shared>, l: TcpListener, limit: Arc<ConnLimit>) {
    while let Some((s, remote, guard)) = accept_admitted(&shared, &l, &limit, "tcp").await {
        // Hand the connection to a worker thread (its relay sockets will live there too).
        let Ok(std) = s.into_std() else { continue };
        // Round robin: client ports say nothing about load (RTP tools use even ports only).
        let w = &shared.workers[NEXT_WORKER.fetch_add(1, Ordering::Relaxed) % shared.workers.len()];
        let sh = shared.clone();
        w.spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => serve_stream(sh, s, remote, Transport::Tcp, guard).await,
                Err(e) => tracing::debug!(error = %e, "turn tcp register failed"),
            }
        });
    }
}

/// Holds the current TLS config; SIGHUP swaps in a freshly read certificate and key.
pub(crate) struct TlsReloader {
    cert: String,
    key: String,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsReloader {
    pub fn load(cert: &str, key: &str) -> Result<Self, TurnError> {
        let c = read_tls(cert, key)?;
        Ok(TlsReloader {
            cert: cert.into(),
            key: key.into(),
            current: RwLock::new(Arc::new(c)),
        })
    }

    fn reload(&self) -> Result<(), TurnError> {
        let c = read_tls(&self.cert, &self.key)?;
        *self.current.write() = Arc::new(c);
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }
}

fn read_tls(cert: &str, key: &str) -> Result<rustls::ServerConfig, TurnError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TurnError::Tls(format!("turn.cert {cert}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| TurnError::Tls(format!("turn.cert {cert}: {e}")))?;
    if certs.is_empty() {
        return Err(TurnError::Tls(format!("turn.cert {cert}: no certificate")));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TurnError::Tls(format!("turn.pkey {key}: {e}")))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TurnError::Tls(e.to_string()))
}

pub(crate) async fn reload_on_sighup(tls: Arc<TlsReloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                r = hup.recv() => if r.is_none() { return },
                _ = shutdown.cancelled() => return,
            }
            match tls.reload() {
                Ok(()) => tracing::info!("turn tls certificate reloaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "turn tls reload failed; keeping the old certificate")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tls, shutdown);
    }
}

pub(crate) async fn accept_tls(
    shared: Arc<Shared>,
    l: TcpListener,
    tls: Arc<TlsReloader>,
    limit: Arc<ConnLimit>,
) {
    while let Some((s, remote, guard)) = accept_admitted(&shared, &l, &limit, "tls").await {
        let acceptor = tls.acceptor();
        let shared = shared.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(s)).await {
                Ok(Ok(s)) => serve_stream(shared, s, remote, Transport::Tls, guard).await,
                _ => shared.metrics.malformed("tls_handshake"),
            }
        });
    }
}

async fn serve_stream<S>(
    shared: Arc<Shared>,
    stream: S,
    remote: SocketAddr,
    transport: Transport,
    guard: ConnGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = guard;
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let client = ClientId {
        transport,
        conn,
        remote,
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    shared.state.lock().conns.insert(conn, tx.clone());
    shared.metrics.tcp_connections.inc();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let stop = shared.shutdown.child_token();
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        // Everything queued goes out in one write (up to 64 KiB).
        let mut wbuf: Vec<u8> = Vec::new();
        loop {
            let b = tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    // Every sender is gone but the connection lives on (a ConnectionBind):
                    // everything queued is written; hand the write half back.
                    None => return Some(wr),
                },
                _ = writer_stop.cancelled() => break,
            };
            wbuf.clear();
            wbuf.extend_from_slice(&b);
            while wbuf.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(b) => wbuf.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            if wr.write_all(&wbuf).await.is_err() {
                break;
            }
            if wbuf.capacity() > 256 * 1024 {
                wbuf = Vec::new();
            }
        }
        writer_stop.cancel();
        let _ = wr.shutdown().await;
        None
    });

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 16 * 1024];
    // Datagrams for peers cut from one read leave together (see `PeerSends`).
    let mut to_peers = super::udp::PeerSends::default();
    // Set by a successful ConnectionBind: (connection id, where the relayed bytes start).
    let mut bound: Option<(u32, usize)> = None;
    'read: loop {
        let n = tokio::select! {
            r = tokio::time::timeout(IDLE, rd.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            },
            _ = stop.cancelled() => break,
        };
        super::udp::count_work(1);
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        loop {
            let len = match stream_frame_len(&buf[at..]) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    if buf.len() - at > MAX_FRAME {
                        shared.metrics.malformed("stream_frame");
                        break 'read;
                    }
                    break;
                }
                Err(_) => {
                    shared.metrics.malformed("stream_frame");
                    break 'read;
                }
            };
            let frame_at = at;
            let frame = &buf[at..at + len];
            at += len;
            let peer_send = {
                let mut st = shared.state.lock();
                let State { core, relays, .. } = &mut *st;
                let o = core.handle_client(Instant::now(), &client, frame, relays, &mut out);
                let send = match o {
                    Output::None => None,
                    Output::ToClient => {
                        if tx.try_send(out.clone()).is_err() {
                            shared.metrics.dropped("client_queue_full");
                        }
                        None
                    }
                    Output::ToPeer {
                        relay,
                        peer,
                        start,
                        end,
                    } => relays.socket(relay).map(|s| (s, peer, start, end)),
                    Output::Connect { id, relay, peer } => {
                        tokio::spawn(super::tcp_relay::connect(shared.clone(), id, relay, peer));
                        None
                    }
                    Output::Bind { id } => {
                        if tx.try_send(out.clone()).is_err() {
                            shared.metrics.dropped("client_queue_full");
                        }
                        bound = Some((id, at));
                        None
                    }
                };
                // A Refresh with lifetime 0 may have ended TCP peer connections.
                st.close_ended_tcp();
                send
            };
            if let Some((s, peer, start, end)) = peer_send {
                to_peers.push(s, peer, 0, frame_at + start, frame_at + end);
            }
            if bound.is_some() {
                // What follows the ConnectionBind is the client's data, not TURN frames.
                break 'read;
            }
        }
        to_peers.flush(&shared, |_, start, end| &buf[start..end]);
        buf.drain(..at);
        if buf.capacity() > 256 * 1024 && buf.len() < 4096 {
            buf.shrink_to(4096);
        }
    }
    // A bad frame ends the connection; the good ones before it still go out.
    to_peers.flush(&shared, |_, start, end| &buf[start..end]);
    if let Some((id, at)) = bound {
        // A client data connection now: the writer sends the ConnectionBind response, then
        // gives its half back and the connection relays raw bytes to and from the peer.
        shared.state.lock().conns.remove(&conn);
        drop(tx);
        if let Ok(Some(wr)) = writer.await {
            let early = buf[at..].to_vec();
            super::tcp_relay::pump(shared.clone(), id, client, rd.unsplit(wr), early).await;
        } else {
            shared.state.lock().core.tcp_closed(id);
        }
        shared.metrics.tcp_connections.dec();
        return;
    }
    stop.cancel();
    {
        let mut st = shared.state.lock();
        st.conns.remove(&conn);
        let State { core, relays, .. } = &mut *st;
        core.client_closed(&client, relays);
        st.close_ended_tcp();
    }
    shared.metrics.tcp_connections.dec();
    let _ = writer.await;
}
