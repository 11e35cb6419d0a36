//! The tokio half: sockets, tasks and timers around [`crate::core::TurnCore`].
//!
//! One mutex guards the core, the relay socket table and the stream connection table; it is
//! held only while the core decides, never across a syscall that can block or an `.await`.
//! - UDP: `udp_workers` sockets share the listen port (SO_REUSEPORT); each task drains its
//!   socket with `recvmmsg`, runs the batch through the core under one lock, then sends.
//! - Relays: one UDP socket per allocation (random port in `min_port..=max_port`) with a small
//!   task that batches peer datagrams the same way; its buffers are per thread, so an idle
//!   allocation costs only its socket, its task and its table entries.
//! - TCP/TLS: one task per connection splitting the stream into STUN/ChannelData frames
//!   (see [`stream`]); the allocation dies with the connection.
//! - TCP relays (RFC 6062, see [`tcp_relay`]): a listening socket per TCP allocation, one
//!   socket per peer connection, and a byte pump per bound client data connection.
//! - A 1 s tick sweeps expired allocations, permissions and channels.

mod steer;
mod stream;
mod tcp_relay;
mod udp;

use crate::core::policy::PeerPolicy;
use crate::core::{
    CoreConfig, Family, Lifetimes, Limits, Parity, RelayAllocator, RelayError, TurnCore,
};
use crate::metrics::TurnMetrics;
use crate::{TurnConfig, TurnError};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where the TURN listeners are bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnAddrs {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

/// A running TURN server; it stops when the shutdown token given to [`TurnServer::start`]
/// is cancelled.
pub struct TurnServer {
    addrs: TurnAddrs,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("addrs", &self.addrs)
            .finish()
    }
}

pub(crate) struct State {
    pub core: TurnCore,
    pub relays: Relays,
    /// Stream connections: outgoing frames go through a bounded queue to the writer task.
    pub conns: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    /// RFC 6062 connections to peers, by connection id.
    pub tcp_peers: HashMap<u32, tcp_relay::TcpPeer>,
}

impl State {
    /// Closes the TCP peer connections (RFC 6062) the core ended since it was last asked.
    pub fn close_ended_tcp(&mut self) {
        tcp_relay::close_ended(&mut self.core, &mut self.tcp_peers);
    }

    /// Expires what is due at `now` (allocations, permissions, channels, unbound TCP peer
    /// connections) and closes what that ended.
    fn sweep(&mut self, now: Instant) {
        self.core.handle_timeout(now, &mut self.relays);
        self.close_ended_tcp();
    }
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Send handles of the UDP listener sockets (index = worker).
    pub udp: Vec<Arc<StdUdpSocket>>,
    /// The worker threads' runtimes; TCP connections are spread over them too.
    pub workers: Vec<tokio::runtime::Handle>,
    pub metrics: TurnMetrics,
    pub shutdown: CancellationToken,
}

/// A port held for a RESERVATION-TOKEN: bound, but nobody reads it yet.
struct Reserved(#[allow(dead_code)] StdUdpSocket);

struct RelaySocket {
    sock: Arc<UdpSocket>,
    /// Aborted when the allocation ends (cheaper per allocation than a cancellation token).
    task: tokio::task::JoinHandle<()>,
}

/// Binds relay sockets in the port range and runs their reader tasks.
pub(crate) struct Relays {
    sockets: HashMap<SocketAddr, RelaySocket>,
    /// TCP relay addresses (RFC 6062): their accept tasks, aborted when the allocation ends,
    /// and their `max_bps` budgets (when set).
    listeners: HashMap<SocketAddr, tokio::task::JoinHandle<()>>,
    budgets: HashMap<SocketAddr, Arc<tcp_relay::TcpBudget>>,
    max_bps: u64,
    /// `no_tcp_relay`: TCP relay allocations are refused (442).
    tcp_relays: bool,
    reserved: HashMap<SocketAddr, Reserved>,
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    min_port: u16,
    max_port: u16,
    shared: Weak<Shared>,
}

impl Relays {
    pub fn socket(&self, relay: SocketAddr) -> Option<Arc<UdpSocket>> {
        self.sockets.get(&relay).map(|r| r.sock.clone())
    }

    pub fn tcp_budget(&self, relay: SocketAddr) -> Option<Arc<tcp_relay::TcpBudget>> {
        self.budgets.get(&relay).cloned()
    }

    /// Ports to try for a new relay address: up to 64 random ones from the range (or 0, any
    /// port, when no range is set).
    fn candidate_ports(&self) -> impl Iterator<Item = u16> {
        let (min, span) = (
            self.min_port,
            (self.max_port as u32).saturating_sub(self.min_port as u32) + 1,
        );
        (0..span.min(64)).map(move |_| {
            if min == 0 {
                0
            } else {
                min + (rand::random::<u32>() % span) as u16
            }
        })
    }

    fn bind(&self, ip: IpAddr, parity: Parity) -> Option<(StdUdpSocket, Option<StdUdpSocket>)> {
        for mut port in self.candidate_ports() {
            if parity != Parity::Any {
                port &= !1;
                if port < self.min_port || port == u16::MAX {
                    continue;
                }
            }
            let Ok(s) = bind_udp(SocketAddr::new(ip, port), false, 1 << 20) else {
                continue;
            };
            let got = s.local_addr().map(|a| a.port()).unwrap_or(1);
            if parity != Parity::Any && got % 2 != 0 {
                continue;
            }
            if parity == Parity::EvenPair {
                if got >= self.max_port {
                    continue;
                }
                match bind_udp(SocketAddr::new(ip, got + 1), false, 1 << 20) {
                    Ok(next) => return Some((s, Some(next))),
                    Err(_) => continue,
                }
            }
            return Some((s, None));
        }
        None
    }

    fn activate(&mut self, std: StdUdpSocket) -> Result<SocketAddr, RelayError> {
        let addr = std.local_addr().map_err(|_| RelayError::Exhausted)?;
        // Registered with (and read on) the runtime of the worker thread that handled the
        // Allocate, so a relayed packet never crosses threads.
        let sock = Arc::new(UdpSocket::from_std(std).map_err(|_| RelayError::Exhausted)?);
        let task = tokio::spawn(udp::relay_loop(self.shared.clone(), sock.clone(), addr));
        self.sockets.insert(addr, RelaySocket { sock, task });
        Ok(addr)
    }
}

impl RelayAllocator for Relays {
    fn allocate(
        &mut self,
        family: Family,
        parity: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError> {
        let ip = match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
        .ok_or(RelayError::Unsupported)?;
        let (std, next) = self.bind(ip, parity).ok_or(RelayError::Exhausted)?;
        let next = match next {
            Some(n) => {
                let a = n.local_addr().map_err(|_| RelayError::Exhausted)?;
                self.reserved.insert(a, Reserved(n));
                Some(a)
            }
            None => None,
        };
        Ok((self.activate(std)?, next))
    }

    fn allocate_tcp(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        if !self.tcp_relays {
            return Err(RelayError::Unsupported);
        }
        let ip = match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
        .ok_or(RelayError::Unsupported)?;
        for port in self.candidate_ports() {
            let Ok(l) = tcp_relay::listen(SocketAddr::new(ip, port)) else {
                continue;
            };
            let addr = l.local_addr().map_err(|_| RelayError::Exhausted)?;
            let task = tokio::spawn(tcp_relay::accept_peers(self.shared.clone(), l, addr));
            self.listeners.insert(addr, task);
            if self.max_bps > 0 {
                self.budgets
                    .insert(addr, tcp_relay::TcpBudget::new(self.max_bps));
            }
            return Ok(addr);
        }
        Err(RelayError::Exhausted)
    }

    fn activate_reserved(&mut self, addr: SocketAddr) -> Result<(), RelayError> {
        let r = self.reserved.remove(&addr).ok_or(RelayError::Exhausted)?;
        self.activate(r.0).map(|_| ())
    }

    fn release(&mut self, relay: SocketAddr) {
        if let Some(r) = self.sockets.remove(&relay) {
            r.task.abort();
        }
        if let Some(t) = self.listeners.remove(&relay) {
            t.abort();
            self.budgets.remove(&relay);
        }
        self.reserved.remove(&relay);
    }
}

/// Binds a non-blocking UDP socket with big buffers (SO_RCVBUFFORCE when permitted).
fn bind_udp(addr: SocketAddr, reuse_port: bool, buffer: usize) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(true);
    }
    if reuse_port {
        #[cfg(unix)]
        s.set_reuse_port(true)?;
    }
    set_buffers(&s, buffer);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn set_buffers(s: &socket2::Socket, buffer: usize) {
    #[cfg(target_os = "linux")]
    {
        let v = buffer.min(i32::MAX as usize) as i32;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            switchboard_udp::set_int_option(s, libc::SOL_SOCKET, opt, v);
        }
    }
    // Without CAP_NET_ADMIN the forced variants fail; ask within rmem_max/wmem_max then.
    if s.recv_buffer_size().unwrap_or(0) < buffer {
        let _ = s.set_recv_buffer_size(buffer);
    }
    if s.send_buffer_size().unwrap_or(0) < buffer {
        let _ = s.set_send_buffer_size(buffer);
    }
}

/// The address the host would use to reach the internet (no packet is sent).
fn primary_ip(v6: bool) -> Option<IpAddr> {
    let (bind, probe) = if v6 {
        ("[::]:0", "[2001:db8::1]:9")
    } else {
        ("0.0.0.0:0", "192.0.2.1:9")
    };
    let s = StdUdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

fn parse_ip(key: &str, v: &Option<String>) -> Result<Option<IpAddr>, TurnError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| TurnError::Config(format!("turn.{key} {s:?} is not an IP address")))
        })
        .transpose()
}

/// Turns `[turn]` into the core's settings, refusing configs that cannot work.
pub fn core_config(cfg: &TurnConfig) -> Result<CoreConfig, TurnError> {
    let policy = PeerPolicy::new(
        &cfg.denied_peer_ip,
        &cfg.allowed_peer_ip,
        cfg.allow_loopback_peers,
    )
    .map_err(|e| TurnError::Config(e.to_string()))?;
    let mut users = HashMap::new();
    for u in &cfg.user {
        let Some((name, pw)) = u.split_once(':') else {
            return Err(TurnError::Config(format!(
                "turn.user entries are \"name:password\"; got one without ':' ({} bytes)",
                u.len()
            )));
        };
        users.insert(name.to_string(), pw.to_string());
    }
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    if !cfg.static_auth_secret.is_empty() {
        secrets.push(cfg.static_auth_secret.as_bytes().to_vec());
    }
    secrets.extend(
        cfg.previous_auth_secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec()),
    );
    if secrets.is_empty() && users.is_empty() {
        return Err(TurnError::Config(
            "TURN is enabled but neither turn.static_auth_secret nor turn.user is set; set a \
             secret (or SWITCHBOARD_TURN_STATIC_AUTH_SECRET), or set turn.enabled = false"
                .into(),
        ));
    }
    if cfg.min_port > cfg.max_port {
        return Err(TurnError::Config(format!(
            "turn.min_port {} is above turn.max_port {}",
            cfg.min_port, cfg.max_port
        )));
    }
    let ext = parse_ip("external_ip", &cfg.external_ip)?;
    let mut c = CoreConfig::new(&cfg.realm, policy);
    c.secrets = secrets;
    c.users = users;
    c.limits = Limits {
        user_quota: cfg.user_quota,
        total_quota: cfg.effective_total_quota(),
        max_bps: cfg.max_bps,
        max_permissions: cfg.max_permissions,
        max_channels: cfg.max_channels,
    };
    let max_allocation = cfg.max_allocate_lifetime.max(Duration::from_secs(1));
    c.lifetimes = Lifetimes {
        default_allocation: cfg.default_allocate_lifetime.min(max_allocation),
        max_allocation,
        permission: cfg.permission_lifetime,
        channel: cfg.channel_lifetime,
        nonce: cfg.stale_nonce,
    };
    c.software = cfg
        .software_attribute
        .then(|| format!("switchboard {}", env!("CARGO_PKG_VERSION")));
    c.external_v4 = ext.filter(|i| i.is_ipv4());
    c.external_v6 = ext.filter(|i| i.is_ipv6());
    Ok(c)
}

impl TurnServer {
    /// Binds UDP and TCP on `listen` (and TLS on `tls_listen` when `cert` and `pkey` are
    /// set), registers `switchboard_turn_*` metrics and starts serving until `shutdown` is
    /// cancelled. Must be called inside a tokio runtime.
    pub fn start(
        cfg: &TurnConfig,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Result<TurnServer, TurnError> {
        let core_cfg = core_config(cfg)?;
        let listen: SocketAddr = cfg.listen.parse().map_err(|_| {
            TurnError::Config(format!("turn.listen {:?} is not IP:port", cfg.listen))
        })?;
        let tls = match (&cfg.cert, &cfg.pkey) {
            (Some(c), Some(k)) => Some(stream::TlsReloader::load(c, k)?),
            (None, None) => None,
            _ => {
                return Err(TurnError::Config(
                    "turn.cert and turn.pkey must be set together".into(),
                ))
            }
        };
        let metrics = TurnMetrics::register(registry);
        let gso = switchboard_udp::GSO.init(cfg.udp_gso);

        // UDP: the first socket picks the port (maybe ephemeral); the others share it.
        let workers = match cfg.udp_workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(8),
            n => n.min(64),
        };
        let bind_err = |what, addr: SocketAddr| {
            move |source| TurnError::Bind {
                what,
                addr: addr.to_string(),
                source,
            }
        };
        // SO_REUSEPORT would let a bind to port 0, or a second server on the same port, join
        // an existing group silently and steal its packets. So: port 0 → one exclusive socket;
        // a fixed port → prove it is free with an exclusive bind first, then form the group.
        let workers = if listen.port() == 0 { 1 } else { workers };
        let first = if workers == 1 {
            bind_udp(listen, false, cfg.socket_buffer)
                .map_err(bind_err("turn.listen (udp)", listen))?
        } else {
            drop(bind_udp(listen, false, 0).map_err(bind_err("turn.listen (udp)", listen))?);
            bind_udp(listen, true, cfg.socket_buffer)
                .map_err(bind_err("turn.listen (udp)", listen))?
        };
        let udp_addr = first.local_addr()?;
        let mut std_socks = vec![first];
        for _ in 1..workers {
            std_socks.push(
                bind_udp(udp_addr, true, cfg.socket_buffer)
                    .map_err(bind_err("turn.listen (udp)", udp_addr))?,
            );
        }
        // Sending to UDP clients from any thread goes through plain std sockets (dup'ed fds
        // of the listeners: same port, non-blocking); receiving is done by the workers.
        let udp_socks = std_socks
            .iter()
            .map(|s| s.try_clone().map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut udp_std: std::collections::VecDeque<StdUdpSocket> = std_socks.into();
        let tcp =
            std::net::TcpListener::bind(listen).map_err(bind_err("turn.listen (tcp)", listen))?;
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let tcp_addr = tcp.local_addr()?;
        let tls_listener = match &tls {
            Some(_) => {
                let a: SocketAddr = cfg.tls_listen.parse().map_err(|_| {
                    TurnError::Config(format!(
                        "turn.tls_listen {:?} is not IP:port",
                        cfg.tls_listen
                    ))
                })?;
                let l = std::net::TcpListener::bind(a).map_err(bind_err("turn.tls_listen", a))?;
                l.set_nonblocking(true)?;
                Some(tokio::net::TcpListener::from_std(l)?)
            }
            None => None,
        };
        let tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;

        // Relay addresses: configured, else the listen IP, else the host's primary IP.
        let relay_v4 = match parse_ip("relay_ip", &cfg.relay_ip)? {
            Some(ip) => Some(ip),
            None if listen.is_ipv4() && !listen.ip().is_unspecified() => Some(listen.ip()),
            None => primary_ip(false),
        };
        let relay_v6 = match parse_ip("relay_ip6", &cfg.relay_ip6)? {
            Some(ip) => Some(ip),
            None if listen.is_ipv6() && !listen.ip().is_unspecified() => Some(listen.ip()),
            None => None,
        };
        let (relay_v4, relay_v6) = match relay_v4 {
            Some(ip) if ip.is_ipv6() => (None, Some(ip)),
            other => (other, relay_v6),
        };

        // Each worker's busy time (wake to wait), for the steering task.
        let busy: Arc<[steer::BusyClock]> = (0..udp_socks.len())
            .map(|_| steer::BusyClock::default())
            .collect();
        let runtimes = (0..udp_socks.len())
            .map(|i| {
                let (window, yield_first) = (cfg.udp_coalesce, cfg.udp_yield);
                let (parks, wakes) = (busy.clone(), busy.clone());
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(move || udp::before_park(window, yield_first, &parks[i]))
                    .on_thread_unpark(move || udp::after_unpark(&wakes[i]))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let worker_handles = runtimes.iter().map(|r| r.handle().clone()).collect();
        let now = Instant::now();
        let unix = switchboard_auth::unix_now();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            state: Mutex::new(State {
                core: TurnCore::new(core_cfg, metrics.clone(), now, unix),
                relays: Relays {
                    sockets: HashMap::new(),
                    listeners: HashMap::new(),
                    budgets: HashMap::new(),
                    max_bps: cfg.max_bps,
                    tcp_relays: !cfg.no_tcp_relay,
                    reserved: HashMap::new(),
                    v4: relay_v4,
                    v6: relay_v6,
                    min_port: cfg.min_port,
                    max_port: cfg.max_port,
                    shared: weak.clone(),
                },
                conns: HashMap::new(),
                tcp_peers: HashMap::new(),
            }),
            udp: udp_socks,
            workers: worker_handles,
            metrics,
            shutdown: shutdown.clone(),
        });
        // One OS thread per UDP socket, each with its own single-threaded runtime (like
        // coturn's relay threads): the listener and the relay sockets of allocations it
        // created are polled by the same thread, with no cross-thread wakeups per packet.
        for (i, rt) in runtimes.into_iter().enumerate() {
            let shared = shared.clone();
            // The listener socket must be registered with the runtime that polls it.
            let std_sock = udp_std.pop_front().expect("one std socket per worker");
            std::thread::Builder::new()
                .name(format!("turn-udp-{i}"))
                .spawn(move || {
                    udp::WORKER.with(|w| w.set(i));
                    rt.block_on(async move {
                        match UdpSocket::from_std(std_sock) {
                            Ok(sock) => {
                                tokio::join!(
                                    udp::listener_loop(shared.clone(), i, Arc::new(sock)),
                                    udp::client_flusher(shared, i)
                                );
                            }
                            Err(e) => tracing::error!(error = %e, "turn udp worker failed"),
                        }
                    });
                })?;
        }
        let limits = Arc::new(stream::ConnLimit::new(cfg.max_tcp_connections));
        tokio::spawn(stream::accept_tcp(shared.clone(), tcp, limits.clone()));
        if let (Some(l), Some(tls)) = (tls_listener, tls) {
            let tls = Arc::new(tls);
            tokio::spawn(stream::reload_on_sighup(tls.clone(), shutdown.clone()));
            tokio::spawn(stream::accept_tls(shared.clone(), l, tls, limits));
        }
        tokio::spawn(sweep(shared.clone()));
        if cfg.udp_consolidate && shared.udp.len() > 1 {
            tokio::spawn(steer::run(
                shared.udp[0].clone(),
                busy,
                shared.metrics.clone(),
                shutdown.clone(),
            ));
        } else {
            shared.metrics.udp_spread.set(1);
        }
        let total_quota = cfg.effective_total_quota();
        tracing::info!(udp = %udp_addr, tcp = %tcp_addr, tls = ?tls_addr, workers, gso,
            relay_v4 = ?relay_v4, relay_v6 = ?relay_v6, user_quota = cfg.user_quota,
            total_quota, "TURN server started");
        if total_quota == 0 || total_quota >= cfg.relay_ports() {
            tracing::warn!(
                total_quota,
                relay_ports = cfg.relay_ports(),
                "turn.total_quota does not keep allocations below the relay port range: once \
                 the range is full every Allocate answers 508 until allocations expire"
            );
        }
        Ok(TurnServer {
            addrs: TurnAddrs {
                udp: udp_addr,
                tcp: tcp_addr,
                tls: tls_addr,
            },
            shared,
        })
    }

    pub fn local_addrs(&self) -> TurnAddrs {
        self.addrs
    }

    /// Current allocation count (for tests and diagnostics).
    pub fn allocations(&self) -> usize {
        self.shared.state.lock().core.allocation_count()
    }
}

/// Once a second: expire allocations, permissions and channels. On shutdown, drop them all.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => break,
        }
        shared.state.lock().sweep(Instant::now());
    }
    shared
        .state
        .lock()
        .sweep(Instant::now() + Duration::from_secs(366 * 86400));
}

/// Queues framed bytes (one or more whole frames) for a TCP/TLS client connection's writer;
/// drops them when its queue is full.
pub(crate) fn queue_to_stream(
    shared: &Shared,
    conns: &HashMap<u64, mpsc::Sender<Vec<u8>>>,
    conn: u64,
    frames: Vec<u8>,
) {
    if let Some(tx) = conns.get(&conn) {
        if tx.try_send(frames).is_err() {
            shared.metrics.dropped("client_queue_full");
        }
    }
}
