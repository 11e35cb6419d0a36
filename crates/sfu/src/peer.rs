//! A small str0m client that plays the browser side: it offers, publishes synthetic VP8/Opus,
//! receives forwarded media, and talks over DataChannels. Used by the integration tests and by
//! the `sfu-load` benchmark; it is not part of the server: it is compiled only for this crate's
//! tests and with the `test-peer` feature.
//!
//! Synthetic VP8 frames carry the send time (nanoseconds since a process-wide epoch) right after
//! a minimal VP8 frame header, so a receiver in the same process measures end-to-end latency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt, Simulcast, SimulcastLayer, Writer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// The writer of m-line `mid` and the payload type negotiated there for `codec`; None until
/// both exist. Takes the `Rtc`, not the peer, so the caller can still update the peer's media
/// clocks while it holds the writer.
fn writer_for(rtc: &mut Rtc, mid: Option<Mid>, codec: Codec) -> Option<(Writer<'_>, Pt)> {
    let w = rtc.writer(mid?)?;
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())?;
    Some((w, pt))
}

/// Adds a send-only m-line for track `track` of the peer's one media stream, "cam".
fn add_send_media(
    api: &mut SdpApi<'_>,
    kind: MediaKind,
    track: &str,
    simulcast: Option<Simulcast>,
) -> Mid {
    api.add_media(
        kind,
        Direction::SendOnly,
        Some("cam".into()),
        Some(track.into()),
        simulcast,
    )
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What one received m-line delivered.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Frames (video) or packets (audio).
    pub units: u64,
    /// Video keyframes.
    pub keyframes: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// RTP packets that made up the units.
    pub packets: u64,
    /// The m-line carries VP8 video.
    pub video: bool,
    /// Media time (ticks) of the last video frame.
    pub last_time: Option<u64>,
    /// Largest forward step between two consecutive video frames' media times.
    pub max_step: u64,
    /// Video frames whose media time was below the previous frame's.
    pub backwards: u64,
}

/// Client-side peer.
pub struct Peer {
    /// The client's `Rtc` (public so tests can poke at it).
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    /// Published video m-line.
    pub video_mid: Option<Mid>,
    /// Published audio m-line.
    pub audio_mid: Option<Mid>,
    /// Reliable channel, once open.
    pub reliable: Option<ChannelId>,
    /// Lossy ("updates") channel, once open.
    pub lossy: Option<ChannelId>,
    /// ICE+DTLS connected.
    pub connected: bool,
    /// Per received m-line.
    pub received: HashMap<Mid, Received>,
    /// Text messages received on any channel.
    pub data: Vec<String>,
    /// End-to-end latencies of received synthetic VP8 frames, microseconds.
    pub latencies_us: Vec<u64>,
    /// Keyframe requests (PLI/FIR) received from the SFU.
    pub keyframe_requests: u64,
    /// Tests: drop every Nth RTP datagram received (0: none), as a lossy network would;
    /// str0m then asks for them again (NACK).
    pub drop_media_every: u64,
    /// RTP datagrams received and how many of them were dropped on purpose.
    pub media_seen: u64,
    /// See `media_seen`.
    pub media_dropped: u64,
    /// RTP datagrams received with a negotiated RTX payload type (RFC 4588 retransmissions).
    pub rtx_received: u64,
    /// Send-time window (see [`Peer::sent_at`]): received synthetic video frames that were sent
    /// inside it are counted in `frames_in_window`, whenever they arrive.
    pub count_window: Option<(Instant, Instant)>,
    /// See `count_window`.
    pub frames_in_window: u64,
    next_timeout: Instant,
    video_time: u64,
    audio_time: u64,
    buf: Vec<u8>,
    tcp: Option<TcpLink>,
}

/// ICE-TCP transport of a peer: frames in from a reader task, frames out to a writer task.
struct TcpLink {
    local: SocketAddr,
    remote: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Peer {
    /// Binds a UDP socket on `ip:0` and creates the client `Rtc`.
    pub async fn bind(ip: std::net::IpAddr) -> std::io::Result<Peer> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let _ = epoch();
        let mut rtc = Rtc::builder().build(now);
        let cand =
            Candidate::host(local, "udp").map_err(|e| std::io::Error::other(e.to_string()))?;
        rtc.add_local_candidate(cand);
        Ok(Peer {
            rtc,
            socket,
            local,
            pending: None,
            video_mid: None,
            audio_mid: None,
            reliable: None,
            lossy: None,
            connected: false,
            received: HashMap::new(),
            data: Vec::new(),
            latencies_us: Vec::new(),
            keyframe_requests: 0,
            drop_media_every: 0,
            media_seen: 0,
            media_dropped: 0,
            rtx_received: 0,
            count_window: None,
            frames_in_window: 0,
            next_timeout: now,
            video_time: 0,
            audio_time: 0,
            buf: vec![0; 2048],
            tcp: None,
        })
    }

    /// A peer that reaches the SFU only over ICE-TCP (RFC 4571 framing) at `server`: it has a
    /// single active TCP host candidate, so ICE can only pair it with the SFU's TCP candidate.
    pub async fn connect_tcp(server: SocketAddr) -> std::io::Result<Peer> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        tokio::spawn(async move {
            let mut len = [0u8; 2];
            while rd.read_exact(&mut len).await.is_ok() {
                let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if rd.read_exact(&mut data).await.is_err() || in_tx.send(data).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                let Ok(n) = u16::try_from(frame.len()) else {
                    continue;
                };
                let mut buf = n.to_be_bytes().to_vec();
                buf.extend_from_slice(&frame);
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let mut peer = Peer::bind(local.ip()).await?;
        // Replace the UDP candidate: a fresh Rtc with only the TCP one.
        let mut rtc = Rtc::builder().build(Instant::now());
        let cand = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        rtc.add_local_candidate(cand);
        peer.rtc = rtc;
        peer.tcp = Some(TcpLink {
            local,
            remote: server,
            rx: in_rx,
            tx: out_tx,
        });
        Ok(peer)
    }

    /// Creates the initial offer: optional send-only video/audio, plus a reliable channel and a
    /// lossy "updates" channel.
    pub fn offer(&mut self, video: bool, audio: bool) -> String {
        self.offer_with(video, audio, true)
    }

    /// Like [`Peer::offer`]; `channels: false` for a renegotiation that only adds media.
    pub fn offer_with(&mut self, video: bool, audio: bool, channels: bool) -> String {
        let mut api = self.rtc.sdp_api();
        if video {
            self.video_mid = Some(add_send_media(&mut api, MediaKind::Video, "cam-v", None));
        }
        if audio {
            self.audio_mid = Some(add_send_media(&mut api, MediaKind::Audio, "cam-a", None));
        }
        if channels {
            api.add_channel("reliable".into());
            api.add_channel_with_config(ChannelConfig {
                label: "updates".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..ChannelConfig::default()
            });
        }
        let (offer, pending) = api.apply().expect("offer has changes");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    /// Initial offer publishing one simulcast video track with the given RIDs (lowest first)
    /// plus the two channels.
    pub fn offer_simulcast(&mut self, rids: &[&str]) -> String {
        let mut sim = Simulcast::new();
        for r in rids {
            sim.add_send_layer(SimulcastLayer::new(r));
        }
        let mut api = self.rtc.sdp_api();
        self.video_mid = Some(add_send_media(
            &mut api,
            MediaKind::Video,
            "cam-v",
            Some(sim),
        ));
        api.add_channel("reliable".into());
        let (offer, pending) = api.apply().expect("offer has changes");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    /// Sends one synthetic VP8 frame on simulcast layer `rid`.
    pub fn send_video_layer(&mut self, rid: &str, keyframe: bool, size: usize) -> bool {
        self.send_video_inner(Some(rid), keyframe, size)
    }

    /// Offer that restarts ICE (new credentials, same media), e.g. after a network change.
    pub fn offer_ice_restart(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("ice restart is a change");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    /// Applies the SFU's answer to [`Peer::offer`].
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("no pending offer")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())
    }

    /// Answers a server offer (renegotiation).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        Ok(answer.to_sdp_string())
    }

    /// Sends one synthetic VP8 frame of about `size` bytes (30 fps timeline).
    pub fn send_video(&mut self, keyframe: bool, size: usize) -> bool {
        self.send_video_inner(None, keyframe, size)
    }

    fn send_video_inner(&mut self, rid: Option<&str>, keyframe: bool, size: usize) -> bool {
        let Some((w, pt)) = writer_for(&mut self.rtc, self.video_mid, Codec::Vp8) else {
            return false;
        };
        let mut frame = Vec::with_capacity(size.max(24));
        // VP8 frame tag: bit0 = 0 for keyframes; show_frame set; then the keyframe start code.
        frame.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00]);
        frame.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        let sent = Instant::now().duration_since(epoch()).as_nanos() as u64;
        frame.extend_from_slice(&sent.to_be_bytes());
        frame.resize(size.max(frame.len()), 0xAB);
        // Layers of one frame share its capture time; advance once per frame (on the
        // lowest/only). Like libwebrtc, each layer's RTP stream has its own timestamp base.
        if rid.is_none_or(|r| r == "q") {
            self.video_time += 3000;
        }
        let base = match rid {
            Some("h") => 0x4000_0000,
            Some("f") => 0x8000_0000,
            _ => 0,
        };
        let now = Instant::now();
        let w = match rid {
            Some(r) => w.rid(r.into()),
            None => w,
        };
        w.write(
            pt,
            now,
            MediaTime::from_90khz(base + self.video_time),
            frame,
        )
        .is_ok()
    }

    /// Sends one synthetic 20 ms Opus packet of `size` bytes.
    pub fn send_audio(&mut self, size: usize) -> bool {
        let Some((w, pt)) = writer_for(&mut self.rtc, self.audio_mid, Codec::Opus) else {
            return false;
        };
        self.audio_time += 960;
        let now = Instant::now();
        w.write(
            pt,
            now,
            MediaTime::new(self.audio_time, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            vec![0xFC; size.max(1)],
        )
        .is_ok()
    }

    /// Writes a text message on the reliable (or lossy) channel.
    pub fn send_text(&mut self, lossy: bool, text: &str) -> bool {
        let cid = if lossy { self.lossy } else { self.reliable };
        let Some(mut ch) = cid.and_then(|c| self.rtc.channel(c)) else {
            return false;
        };
        matches!(ch.write(false, text.as_bytes()), Ok(true))
    }

    /// Total video frames received over all m-lines.
    pub fn video_frames(&self) -> u64 {
        self.received
            .values()
            .filter(|r| r.video)
            .map(|r| r.units)
            .sum()
    }

    /// Drives I/O and timers for `dur`.
    pub async fn run_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            self.poll();
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let wake = self.next_timeout.min(deadline).max(now);
            if let Some(link) = self.tcp.as_mut() {
                let frame = tokio::select! {
                    f = link.rx.recv() => f,
                    _ = tokio::time::sleep_until(wake.into()) => None,
                };
                let (local, remote) = (link.local, link.remote);
                match frame {
                    Some(f) if self.drop_this(&f) => {}
                    Some(f) => {
                        if let Ok(recv) = Receive::new(Protocol::Tcp, remote, local, &f) {
                            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), recv));
                        }
                    }
                    None => {
                        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                    }
                }
                continue;
            }
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    if let Ok((n, src)) = r {
                        self.input(src, n);
                        // Drain whatever else is queued without waiting.
                        while let Ok((n, src)) = self.socket.try_recv_from(&mut self.buf) {
                            self.input(src, n);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }

    /// Whether to lose this received datagram on purpose (see `drop_media_every`).
    fn drop_this(&mut self, d: &[u8]) -> bool {
        if !is_media(d) {
            return false;
        }
        let pt = d[1] & 0x7f;
        let params = self.rtc.codec_config().params();
        if params.iter().any(|p| p.resend().is_some_and(|r| *r == pt)) {
            self.rtx_received += 1;
        }
        if self.drop_media_every == 0 {
            return false;
        }
        self.media_seen += 1;
        let drop = self.media_seen.is_multiple_of(self.drop_media_every);
        self.media_dropped += u64::from(drop);
        drop
    }

    fn input(&mut self, src: SocketAddr, n: usize) {
        let buf = std::mem::take(&mut self.buf);
        let drop = self.drop_this(&buf[..n]);
        self.buf = buf;
        if drop {
            return;
        }
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.local, &self.buf[..n]) else {
            return;
        };
        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), recv));
    }

    /// Flushes transmits and handles events.
    pub fn poll(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => match &self.tcp {
                    Some(link) => {
                        let _ = link.tx.try_send(t.contents.to_vec());
                    }
                    None => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                },
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(_) => return,
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::ChannelOpen(id, label) => {
                if label == "updates" {
                    self.lossy = Some(id);
                } else {
                    self.reliable = Some(id);
                }
            }
            Event::ChannelData(d) => {
                if let Ok(s) = String::from_utf8(d.data) {
                    self.data.push(s);
                }
            }
            Event::MediaData(d) => {
                let r = self.received.entry(d.mid).or_default();
                r.video = d.params.spec().codec == Codec::Vp8;
                r.units += 1;
                r.bytes += d.data.len() as u64;
                r.packets += (**d.seq_range.end()).wrapping_sub(**d.seq_range.start()) + 1;
                if d.is_keyframe() {
                    r.keyframes += 1;
                }
                if r.video {
                    let t = d.time.numer();
                    match r.last_time {
                        Some(l) if t < l => r.backwards += 1,
                        Some(l) => r.max_step = r.max_step.max(t - l),
                        None => {}
                    }
                    r.last_time = Some(t);
                }
                if d.data.len() >= 18 && d.data[3..6] == [0x9d, 0x01, 0x2a] {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&d.data[10..18]);
                    let sent = u64::from_be_bytes(ts);
                    let now = Instant::now().duration_since(epoch()).as_nanos() as u64;
                    if now >= sent && self.latencies_us.len() < 1_000_000 {
                        self.latencies_us.push((now - sent) / 1000);
                    }
                    if let Some((from, to)) = self.count_window {
                        let sent_at = epoch() + std::time::Duration::from_nanos(sent);
                        if from <= sent_at && sent_at < to {
                            self.frames_in_window += 1;
                        }
                    }
                }
            }
            Event::KeyframeRequest(_) => self.keyframe_requests += 1,
            _ => {}
        }
    }

    /// The peer's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// An RTP (not RTCP) datagram: version 2, and not RTCP by RFC 5761's payload-type rule.
fn is_media(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !crate::egress::is_rtcp(d)
}
