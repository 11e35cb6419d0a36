//! The tokio driver over real loopback sockets: UDP relay through a channel to an echo peer,
//! TCP framing with messages split across writes, and a hostile stream being cut off.

use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::turn_rest;
use switchboard_turn::core::auth::{derive_key, ALG_MD5};
use switchboard_turn::core::stun::{attr, method, ChannelData, Class, Message, MessageWriter};
use switchboard_turn::{TurnConfig, TurnServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

fn config() -> TurnConfig {
    TurnConfig {
        listen: "127.0.0.1:0".into(),
        static_auth_secret: "driver-secret".into(),
        allow_loopback_peers: true,
        udp_workers: 2,
        ..TurnConfig::default()
    }
}

async fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("reply within 5 s")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn udp_allocate_channel_bind_and_relay_to_echo_peer() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let server = TurnServer::start(&config(), &mut reg, shutdown.clone()).unwrap();
    let addrs = server.local_addrs();

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = peer.recv_from(&mut buf).await {
            let _ = peer.send_to(&buf[..n], from).await;
        }
    });

    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(addrs.udp).await.unwrap();
    let mut out = Vec::new();
    MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &[1; 12])
        .u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
    c.send(&out).await.unwrap();
    let r = recv(&c).await;
    let m = Message::decode(&r).unwrap();
    let nonce = m.get(attr::NONCE).unwrap().to_vec();
    let user = format!("{}:drv", switchboard_auth::unix_now() + 600);
    let key = derive_key(
        ALG_MD5,
        &user,
        "switchboard",
        &turn_rest::password(b"driver-secret", &user),
    );
    let signed = |meth: u16, tid: [u8; 12], f: &dyn Fn(&mut MessageWriter<'_>)| {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, meth, Class::Request, &tid);
        f(&mut w);
        w.attr(attr::USERNAME, user.as_bytes())
            .attr(attr::REALM, b"switchboard")
            .attr(attr::NONCE, &nonce)
            .integrity_sha1(key.as_bytes())
            .fingerprint();
        drop(w);
        out
    };
    c.send(&signed(method::ALLOCATE, [2; 12], &|w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
    }))
    .await
    .unwrap();
    let r = recv(&c).await;
    let m = Message::decode(&r).unwrap();
    assert_eq!(m.class, Class::Success, "{:?}", m.get(attr::ERROR_CODE));
    let relay = m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    assert!(relay.port() >= 49152);
    assert_eq!(server.allocations(), 1);

    c.send(&signed(method::CHANNEL_BIND, [3; 12], &|w| {
        w.u32_attr(attr::CHANNEL_NUMBER, 0x4000 << 16);
        w.address(attr::XOR_PEER_ADDRESS, peer_addr, true);
    }))
    .await
    .unwrap();
    assert_eq!(
        Message::decode(&recv(&c).await).unwrap().class,
        Class::Success
    );
    for i in 0..100u32 {
        let mut cd = Vec::new();
        ChannelData::encode(0x4000, &i.to_be_bytes(), false, &mut cd);
        c.send(&cd).await.unwrap();
        let back = recv(&c).await;
        let d = ChannelData::decode(&back).unwrap();
        assert_eq!((d.channel, d.data), (0x4000, &i.to_be_bytes()[..]));
    }
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_frames_split_across_writes_and_garbage_closes() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let server = TurnServer::start(&config(), &mut reg, shutdown.clone()).unwrap();
    let tcp: SocketAddr = server.local_addrs().tcp;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    let mut req = Vec::new();
    for tid in [[5u8; 12], [6u8; 12]] {
        MessageWriter::new(&mut req, method::BINDING, Class::Request, &tid).fingerprint();
    }
    // Two Binding requests delivered in three uneven pieces.
    for chunk in [&req[..7], &req[7..30], &req[30..]] {
        s.write_all(chunk).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tid in [[5u8; 12], [6u8; 12]] {
        let mut hdr = [0u8; 20];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hdr))
            .await
            .unwrap()
            .unwrap();
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        let full = [&hdr[..], &body].concat();
        let m = Message::decode(&full).unwrap();
        assert_eq!((m.class, m.transaction_id), (Class::Success, tid));
    }
    // Bytes that are neither STUN nor ChannelData: the server hangs up.
    s.write_all(&[0xff; 64]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection should close, got {n:?}"
    );
    shutdown.cancel();
}

/// A port free for both UDP and TCP on loopback (the SO_REUSEPORT group needs a fixed port).
fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn metric(reg: &Registry, name: &str) -> f64 {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Two UDP workers: at rest every client datagram goes to the first worker; under a flood of
/// Binding requests that worker gets busy and the group switches to the kernel's hash; when
/// the flood stops it goes back to one worker. Every request is answered in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_clients_move_to_one_worker_at_rest_and_spread_under_load() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let cfg = TurnConfig {
        listen: format!("127.0.0.1:{}", free_port()),
        ..config()
    };
    let server = TurnServer::start(&cfg, &mut reg, shutdown.clone()).unwrap();
    let to = server.local_addrs().udp;
    let wait_for = |want: f64| {
        let reg = &reg;
        async move {
            for _ in 0..200 {
                if metric(reg, "turn_udp_spread") == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(wait_for(0.0).await, "starts consolidated");

    // Flood from 4 threads (no waiting for answers) until the group spreads (or 10 s pass).
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..4u8)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                c.connect(to).unwrap();
                c.set_nonblocking(true).unwrap();
                let mut req = Vec::new();
                MessageWriter::new(&mut req, method::BINDING, Class::Request, &[k; 12])
                    .fingerprint();
                let mut buf = vec![0u8; 1500];
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let _ = c.send(&req);
                    }
                    while let Ok(n) = c.recv(&mut buf) {
                        assert_eq!(Message::decode(&buf[..n]).unwrap().class, Class::Success);
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let spread = wait_for(1.0).await;
    stop.store(true, Ordering::Relaxed);
    let answered: u64 = floods.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(spread, "spreads under load ({answered} answered)");
    assert!(answered > 0);
    assert!(metric(&reg, "turn_udp_steering_changes_total") >= 1.0);

    // At rest again: back to one worker, and still answering.
    assert!(wait_for(0.0).await, "consolidates when idle");
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(to).await.unwrap();
    let mut req = Vec::new();
    MessageWriter::new(&mut req, method::BINDING, Class::Request, &[9; 12]).fingerprint();
    c.send(&req).await.unwrap();
    assert_eq!(
        Message::decode(&recv(&c).await).unwrap().class,
        Class::Success
    );
    shutdown.cancel();
}

/// Sends a signed Allocate for `user` from a fresh UDP socket and returns the error code
/// (None on success) and the socket, which keeps the allocation's 5-tuple alive.
async fn allocate_as(
    server: SocketAddr,
    secret: &[u8],
    user: &str,
    nonce: &[u8],
    tid: [u8; 12],
) -> (Option<u16>, UdpSocket) {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(server).await.unwrap();
    let key = derive_key(
        ALG_MD5,
        user,
        "switchboard",
        &turn_rest::password(secret, user),
    );
    let mut out = Vec::new();
    MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &tid)
        .u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24)
        .attr(attr::USERNAME, user.as_bytes())
        .attr(attr::REALM, b"switchboard")
        .attr(attr::NONCE, nonce)
        .integrity_sha1(key.as_bytes())
        .fingerprint();
    c.send(&out).await.unwrap();
    let r = recv(&c).await;
    let m = Message::decode(&r).unwrap();
    let code = m
        .get(attr::ERROR_CODE)
        .map(|v| v[2] as u16 * 100 + v[3] as u16);
    (code, c)
}

/// With the default `[turn]` quotas, one user allocating in a loop gets 486 once it holds
/// `DEFAULT_USER_QUOTA` relays, fresh credentials included, while another user still gets a
/// relay; the refusals are counted under `quota="user"`.
#[tokio::test]
async fn default_user_quota_refuses_one_user_while_another_allocates() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let cfg = config();
    assert_eq!(cfg.user_quota, switchboard_turn::DEFAULT_USER_QUOTA);
    let server = TurnServer::start(&cfg, &mut reg, shutdown.clone()).unwrap();
    let to = server.local_addrs().udp;
    let secret = cfg.static_auth_secret.as_bytes();
    assert_eq!(
        metric(&reg, "turn_quota_rejections_total{quota=\"user\"}"),
        0.0
    );

    // One nonce serves every socket: nonces are bound to the client's IP, not its port.
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.connect(to).await.unwrap();
    let mut out = Vec::new();
    MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &[1; 12])
        .u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
    probe.send(&out).await.unwrap();
    let nonce = Message::decode(&recv(&probe).await)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();

    let now = switchboard_auth::unix_now();
    let mallory = format!("{}:mallory", now + 600);
    let mut held = Vec::new();
    for i in 0..cfg.user_quota {
        let tid = [i as u8; 12];
        let (code, sock) = allocate_as(to, secret, &mallory, &nonce, tid).await;
        assert_eq!(code, None, "allocation {i} is within the quota");
        held.push(sock);
    }
    assert_eq!(server.allocations(), cfg.user_quota as usize);
    let (code, _) = allocate_as(to, secret, &mallory, &nonce, [0xEE; 12]).await;
    assert_eq!(code, Some(486), "one past the quota");
    let renewed = format!("{}:mallory", now + 601);
    let (code, _) = allocate_as(to, secret, &renewed, &nonce, [0xEF; 12]).await;
    assert_eq!(code, Some(486), "fresh credentials share the user's quota");
    assert_eq!(
        metric(&reg, "turn_quota_rejections_total{quota=\"user\"}"),
        2.0
    );

    let alice = format!("{}:alice", now + 600);
    let (code, _alice_sock) = allocate_as(to, secret, &alice, &nonce, [0xF0; 12]).await;
    assert_eq!(code, None, "another user still gets a relay");
    assert_eq!(server.allocations(), cfg.user_quota as usize + 1);
    assert_eq!(
        metric(&reg, "turn_quota_rejections_total{quota=\"total\"}"),
        0.0
    );
    shutdown.cancel();
}

/// Reads one STUN message from a TURN TCP connection.
async fn read_stun(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hdr))
        .await
        .expect("a STUN message within 5 s")
        .unwrap();
    let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    [&hdr[..], &body].concat()
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("relayed bytes within 5 s")
        .unwrap();
    b
}

/// Long-term credentials for the REST user `drv`, with a nonce the server gave out.
struct Signer {
    user: String,
    key: switchboard_turn::core::auth::Key,
    nonce: Vec<u8>,
}

impl Signer {
    async fn new(s: &mut TcpStream) -> Signer {
        let mut out = Vec::new();
        MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &[1; 12])
            .u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24)
            .fingerprint();
        s.write_all(&out).await.unwrap();
        let r = read_stun(s).await;
        let nonce = Message::decode(&r)
            .unwrap()
            .get(attr::NONCE)
            .unwrap()
            .to_vec();
        let user = format!("{}:drv", switchboard_auth::unix_now() + 600);
        let pw = turn_rest::password(b"driver-secret", &user);
        let key = derive_key(ALG_MD5, &user, "switchboard", &pw);
        Signer { user, key, nonce }
    }

    /// Sends a signed request on `s` and returns the decoded reply bytes.
    async fn call(
        &self,
        s: &mut TcpStream,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        self.call_then(s, meth, f, b"").await
    }

    /// Like `call`, with `then` written in the same `write` right behind the request.
    async fn call_then(
        &self,
        s: &mut TcpStream,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
        then: &[u8],
    ) -> Vec<u8> {
        let tid: [u8; 12] = rand::random();
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, meth, Class::Request, &tid);
        f(&mut w);
        w.attr(attr::USERNAME, self.user.as_bytes())
            .attr(attr::REALM, b"switchboard")
            .attr(attr::NONCE, &self.nonce)
            .integrity_sha1(self.key.as_bytes())
            .fingerprint();
        drop(w);
        out.extend_from_slice(then);
        s.write_all(&out).await.unwrap();
        let r = read_stun(s).await;
        let m = Message::decode(&r).unwrap();
        assert_eq!(m.transaction_id, tid);
        assert_eq!(m.get(attr::ERROR_CODE), None, "method {meth:#x} succeeds");
        r
    }
}

fn connection_id(r: &[u8]) -> u32 {
    let m = Message::decode(r).unwrap();
    let v = m.get(attr::CONNECTION_ID).expect("CONNECTION-ID");
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

/// A TCP echo server on loopback.
async fn tcp_echo() -> SocketAddr {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TCP allocation on the server at `tcp` with a permission for `peer`, Connected to it,
/// and a data connection bound to that connection: (control, credentials, relay, data).
/// `early` goes out in the same write as the ConnectionBind.
async fn tcp_relay_to(
    tcp: SocketAddr,
    peer: SocketAddr,
    early: &[u8],
) -> (TcpStream, Signer, SocketAddr, TcpStream) {
    let mut ctl = TcpStream::connect(tcp).await.unwrap();
    let sg = Signer::new(&mut ctl).await;
    let r = sg
        .call(&mut ctl, method::ALLOCATE, |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24);
        })
        .await;
    let m = Message::decode(&r).unwrap();
    let relay = m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap();
    sg.call(&mut ctl, method::CREATE_PERMISSION, |w| {
        w.address(attr::XOR_PEER_ADDRESS, peer, true);
    })
    .await;
    let r = sg
        .call(&mut ctl, method::CONNECT, |w| {
            w.address(attr::XOR_PEER_ADDRESS, peer, true);
        })
        .await;
    let id = connection_id(&r);
    let mut data = TcpStream::connect(tcp).await.unwrap();
    sg.call_then(
        &mut data,
        method::CONNECTION_BIND,
        |w| {
            w.u32_attr(attr::CONNECTION_ID, id);
        },
        early,
    )
    .await;
    (ctl, sg, relay, data)
}

/// RFC 6062 over real sockets: a TCP allocation connects out to a TCP echo peer (Connect,
/// then ConnectionBind on a second connection), and accepts a peer that connects in
/// (ConnectionAttempt, then ConnectionBind). Bytes pass unframed both ways; closing the
/// client's data connection closes the peer's; closing the control connection frees all.
#[tokio::test]
async fn tcp_relay_connects_out_accepts_in_and_cleans_up() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let server = TurnServer::start(&config(), &mut reg, shutdown.clone()).unwrap();
    let tcp = server.local_addrs().tcp;

    // Active: Connect to an echo peer, bind a data connection, echo through it.
    let echo_addr = tcp_echo().await;
    // Bytes sent right behind the ConnectionBind, in the same write, are data for the peer.
    let (mut ctl, sg, relay, mut data) = tcp_relay_to(tcp, echo_addr, b"early bytes").await;
    assert_eq!(read_n(&mut data, 11).await, b"early bytes");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    data.write_all(&payload).await.unwrap();
    assert_eq!(read_n(&mut data, payload.len()).await, payload);
    assert_eq!(metric(&reg, "turn_peer_tcp_connections"), 1.0);

    // Passive: a peer connects to the relay address; the client hears of it and binds it.
    let mut peer = TcpStream::connect(relay).await.unwrap();
    let ind = read_stun(&mut ctl).await;
    let m = Message::decode(&ind).unwrap();
    assert_eq!(
        (m.method, m.class),
        (method::CONNECTION_ATTEMPT, Class::Indication)
    );
    let from = m.xor_address(attr::XOR_PEER_ADDRESS);
    assert_eq!(from, Some(peer.local_addr().unwrap()));
    let id2 = connection_id(&ind);
    let mut data2 = TcpStream::connect(tcp).await.unwrap();
    sg.call(&mut data2, method::CONNECTION_BIND, |w| {
        w.u32_attr(attr::CONNECTION_ID, id2);
    })
    .await;
    peer.write_all(b"ping from the peer").await.unwrap();
    assert_eq!(read_n(&mut data2, 18).await, b"ping from the peer");
    data2.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(&mut peer, 4).await, b"pong");

    // The client closes its data connection: the peer's connection closes too.
    drop(data2);
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut b))
        .await
        .expect("peer connection closed within 5 s");
    assert!(matches!(n, Ok(0) | Err(_)), "got {n:?}");

    // Closing the control connection ends the allocation and every connection of it.
    drop(ctl);
    let n = tokio::time::timeout(Duration::from_secs(5), data.read(&mut b))
        .await
        .expect("data connection closed within 5 s");
    assert!(matches!(n, Ok(0) | Err(_)), "got {n:?}");
    for _ in 0..50 {
        if metric(&reg, "turn_peer_tcp_connections") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&reg, "turn_peer_tcp_connections"), 0.0);
    assert_eq!(metric(&reg, "turn_allocations"), 0.0);
    // The relay address is free again: nobody listens there any more.
    assert!(TcpStream::connect(relay).await.is_err());
    shutdown.cancel();
}

/// `max_bps` holds for TCP relays too: one bucket per allocation, both directions; over TCP
/// the excess waits (flow control) instead of being dropped. Only a lower bound on the time
/// is checked: 120 kB through a 40 kB/s bucket that starts full must take well over 1.5 s.
#[tokio::test]
async fn tcp_relay_is_paced_to_max_bps() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let cfg = TurnConfig {
        max_bps: 40_000,
        ..config()
    };
    let server = TurnServer::start(&cfg, &mut reg, shutdown.clone()).unwrap();
    let echo_addr = tcp_echo().await;
    let (_ctl, _sg, _relay, mut data) =
        tcp_relay_to(server.local_addrs().tcp, echo_addr, b"").await;
    let payload = vec![7u8; 60_000];
    let t0 = std::time::Instant::now();
    data.write_all(&payload).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(20), data.read_exact(&mut got))
        .await
        .expect("all bytes back within 20 s")
        .unwrap();
    assert_eq!(got, payload);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1500), "took only {took:?}");
    assert!(metric(&reg, r#"turn_quota_rejections_total{quota="bandwidth"}"#) >= 1.0);
    shutdown.cancel();
}

/// `no_tcp_relay = true` (coturn's no-tcp-relay): a TCP relay Allocate answers 442, and a
/// UDP relay over the same TCP connection still works.
#[tokio::test]
async fn no_tcp_relay_refuses_tcp_allocations_with_442() {
    let shutdown = CancellationToken::new();
    let mut reg = Registry::default();
    let cfg = TurnConfig {
        no_tcp_relay: true,
        ..config()
    };
    let server = TurnServer::start(&cfg, &mut reg, shutdown.clone()).unwrap();
    let mut ctl = TcpStream::connect(server.local_addrs().tcp).await.unwrap();
    let sg = Signer::new(&mut ctl).await;
    let tid = [9u8; 12];
    let mut out = Vec::new();
    MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &tid)
        .u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24)
        .attr(attr::USERNAME, sg.user.as_bytes())
        .attr(attr::REALM, b"switchboard")
        .attr(attr::NONCE, &sg.nonce)
        .integrity_sha1(sg.key.as_bytes())
        .fingerprint();
    ctl.write_all(&out).await.unwrap();
    let r = read_stun(&mut ctl).await;
    let m = Message::decode(&r).unwrap();
    let e = m.get(attr::ERROR_CODE).expect("an error");
    assert_eq!(e[2] as u16 * 100 + e[3] as u16, 442);
    sg.call(&mut ctl, method::ALLOCATE, |w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
    })
    .await;
    shutdown.cancel();
}
