//! ICE-TCP (RFC 6544, passive side): a listener on `[sfu] tcp_port` whose connections carry
//! RFC 4571 frames (2-byte big-endian length + packet). Each connection has a reader task and a
//! writer task; frames go to the engine through one bounded channel and the engine routes them
//! exactly like UDP datagrams (STUN ufrag first, then the connection's bound session).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest frame accepted; WebRTC packets stay under the path MTU. A larger length prefix
/// closes the connection (it is not a WebRTC peer).
pub const MAX_FRAME: usize = 2048;

/// What connection tasks tell the engine.
pub enum TcpIn {
    /// A connection was accepted.
    Open {
        /// Connection id.
        conn: u64,
        /// Remote address.
        remote: SocketAddr,
        /// Frames to write to it.
        tx: mpsc::Sender<Vec<u8>>,
        /// Cancel to close it.
        cancel: CancellationToken,
    },
    /// One framed packet arrived.
    Frame {
        /// Connection id.
        conn: u64,
        /// The packet.
        data: Vec<u8>,
    },
    /// The connection is gone.
    Closed {
        /// Connection id.
        conn: u64,
    },
}

/// Accepts connections until `shutdown`; at most `max_conns` at a time (excess are closed).
pub async fn accept_loop(
    listener: TcpListener,
    engine: mpsc::Sender<TcpIn>,
    shutdown: CancellationToken,
    max_conns: usize,
    live: Arc<AtomicUsize>,
) {
    let ids = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, remote)) = accepted else {
            continue;
        };
        if live.load(Ordering::Relaxed) >= max_conns {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        live.fetch_add(1, Ordering::Relaxed);
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        let cancel = shutdown.child_token();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        let (mut rd, mut wr) = stream.into_split();
        if engine
            .send(TcpIn::Open {
                conn,
                remote,
                tx,
                cancel: cancel.clone(),
            })
            .await
            .is_err()
        {
            live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let wcancel = cancel.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(MAX_FRAME + 2);
            loop {
                let frame = tokio::select! {
                    _ = wcancel.cancelled() => break,
                    f = rx.recv() => f,
                };
                let Some(frame) = frame else { break };
                let Ok(len) = u16::try_from(frame.len()) else {
                    continue;
                };
                buf.clear();
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(&frame);
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            wcancel.cancel();
        });
        let engine = engine.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let mut data = vec![0u8; MAX_FRAME];
            loop {
                let mut len = [0u8; 2];
                let r = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = rd.read_exact(&mut len) => r,
                };
                if r.is_err() {
                    break;
                }
                let n = usize::from(u16::from_be_bytes(len));
                if n == 0 || n > MAX_FRAME {
                    break;
                }
                let r = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = rd.read_exact(&mut data[..n]) => r,
                };
                if r.is_err() {
                    break;
                }
                let frame = TcpIn::Frame {
                    conn,
                    data: data[..n].to_vec(),
                };
                // Awaiting here is the backpressure: a slow engine slows this peer's reads.
                if engine.send(frame).await.is_err() {
                    break;
                }
            }
            cancel.cancel();
            live.fetch_sub(1, Ordering::Relaxed);
            let _ = engine.send(TcpIn::Closed { conn }).await;
        });
    }
}
