//! The SFU over real loopback UDP with in-process str0m client peers playing the browsers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use switchboard_sfu::metrics::SfuMetrics;
use switchboard_sfu::peer::Peer;
use switchboard_sfu::{ParticipantHandle, Sfu, SfuConfig, SfuCounts, SfuEvent};
use tokio_util::sync::CancellationToken;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Client {
    name: String,
    peer: Peer,
    handle: ParticipantHandle,
    server_data: Vec<String>,
    tracks_added: Vec<String>,
    tracks_ended: Vec<String>,
}

fn loopback_cfg() -> SfuConfig {
    SfuConfig {
        udp_port: 0,
        tcp_port: 0,
        bind_ip: "127.0.0.1".into(),
        ..SfuConfig::default()
    }
}

/// Declares the test `$name`, run with str0m's egress, and `$own`, run with the SFU's own:
/// both call `$with(egress)`.
macro_rules! with_both_egresses {
    ($name:ident, $own:ident, $with:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $with("str0m").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $own() {
            $with("own").await;
        }
    };
}

async fn start() -> (Sfu, CancellationToken) {
    start_egress("str0m").await
}

/// An SFU on loopback with `[sfu] egress` set (decision 0047).
async fn start_egress(egress: &str) -> (Sfu, CancellationToken) {
    start_with(SfuConfig {
        egress: egress.parse().unwrap(),
        ..loopback_cfg()
    })
    .await
}

/// An SFU started with `cfg`, and the token that stops it.
async fn start_with(cfg: SfuConfig) -> (Sfu, CancellationToken) {
    let token = CancellationToken::new();
    let mut reg = Registry::with_prefix("switchboard");
    let sfu = Sfu::start(cfg, SfuMetrics::registered(&mut reg), token.clone())
        .await
        .expect("sfu starts");
    (sfu, token)
}

impl Client {
    fn new(name: &str, peer: Peer, handle: ParticipantHandle) -> Client {
        Client {
            name: name.into(),
            peer,
            handle,
            server_data: Vec::new(),
            tracks_added: Vec::new(),
            tracks_ended: Vec::new(),
        }
    }
}

/// Joins `name` over UDP with the offer `make_offer` builds.
async fn join_with(
    sfu: &Sfu,
    room: &str,
    name: &str,
    make_offer: impl FnOnce(&mut Peer) -> String,
) -> Client {
    let handle = sfu.join(room, name).await.expect("join");
    let mut peer = Peer::bind(LO).await.expect("bind peer");
    let offer = make_offer(&mut peer);
    let answer = handle.accept_offer(&offer).await.expect("answer");
    peer.accept_answer(&answer).expect("client accepts answer");
    Client::new(name, peer, handle)
}

async fn join(sfu: &Sfu, room: &str, name: &str, video: bool, audio: bool) -> Client {
    join_with(sfu, room, name, |p| p.offer(video, audio)).await
}

/// Joins `name` publishing one video track as simulcast layers q, h, f.
async fn join_simulcast(sfu: &Sfu, room: &str, name: &str) -> Client {
    join_with(sfu, room, name, |p| p.offer_simulcast(&["q", "h", "f"])).await
}

/// Runs every client's I/O concurrently for `dur`, answering server offers as they come.
async fn pump(clients: &mut [Client], dur: Duration) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        futures::future::join_all(
            clients
                .iter_mut()
                .map(|c| c.peer.run_for(Duration::from_millis(5))),
        )
        .await;
        for c in clients.iter_mut() {
            while let Some(ev) = c.handle.try_next_event() {
                match ev {
                    SfuEvent::Offer(sdp) => {
                        let answer = c.peer.accept_offer(&sdp).expect("client answers");
                        c.handle.accept_answer(&answer).await.expect("sfu accepts");
                    }
                    SfuEvent::Data { data, .. } => c.server_data.push(data),
                    SfuEvent::TrackAdded { publisher, .. } => c.tracks_added.push(publisher),
                    SfuEvent::TrackEnded { publisher, .. } => c.tracks_ended.push(publisher),
                    _ => {}
                }
            }
        }
    }
}

/// Every client sends 30 fps video of `size`-byte frames for `dur`, a keyframe every
/// `keyframe_every` frames and whenever the SFU asks for one.
async fn exchange_video(clients: &mut [Client], dur: Duration, keyframe_every: u64, size: usize) {
    let end = Instant::now() + dur;
    let mut frame = 0u64;
    while Instant::now() < end {
        for c in clients.iter_mut() {
            let p = &mut c.peer;
            let kf = frame.is_multiple_of(keyframe_every)
                || std::mem::take(&mut p.keyframe_requests) > 0;
            p.send_video(kf, size);
        }
        frame += 1;
        pump(clients, Duration::from_millis(33)).await;
    }
}

/// Publishes 30 fps video (+50 pps audio) from clients[idx] for `dur`, keyframe every second and
/// whenever the SFU asks for one.
async fn publish(clients: &mut [Client], idx: usize, dur: Duration) {
    publish_from(clients, idx, dur, 0).await;
}

/// [`publish`], starting the keyframe cadence at `first_frame`: from 1, the stream starts
/// mid-GOP and the first keyframe before the 1 s cadence is one the SFU asked for.
async fn publish_from(clients: &mut [Client], idx: usize, dur: Duration, first_frame: u64) {
    let end = Instant::now() + dur;
    let mut frame = first_frame;
    let mut kf_seen = clients[idx].peer.keyframe_requests;
    while Instant::now() < end {
        let p = &mut clients[idx].peer;
        let kf = frame.is_multiple_of(30) || p.keyframe_requests > kf_seen;
        kf_seen = p.keyframe_requests;
        p.send_video(kf, if kf { 6000 } else { 1500 });
        p.send_audio(120);
        p.send_audio(120);
        frame += 1;
        pump(clients, Duration::from_millis(33)).await;
    }
}

async fn wait_connected(clients: &mut [Client]) {
    for _ in 0..200 {
        if clients
            .iter()
            .all(|c| c.peer.connected && c.peer.reliable.is_some())
        {
            return;
        }
        pump(clients, Duration::from_millis(20)).await;
    }
    panic!("peers did not connect");
}

fn dropped(sfu: &Sfu, reason: &'static str) -> u64 {
    sfu.metrics()
        .datagrams_dropped
        .get_or_create(&[("reason", reason)])
        .get()
}

with_both_egresses!(
    publisher_reaches_two_subscribers_and_a_late_joiner,
    publisher_reaches_two_subscribers_and_a_late_joiner_own_egress,
    publisher_reaches_two_subscribers_and_a_late_joiner_with
);

async fn publisher_reaches_two_subscribers_and_a_late_joiner_with(egress: &str) {
    let (sfu, token) = start_egress(egress).await;
    let mut clients = vec![
        join(&sfu, "r1", "bob", false, false).await,
        join(&sfu, "r1", "carol", false, false).await,
        join(&sfu, "r1", "alice", true, true).await,
    ];
    // Someone in another room must see nothing.
    clients.push(join(&sfu, "r2", "mallory", false, false).await);
    wait_connected(&mut clients).await;
    // Start mid-GOP. Subscribers can become ready before the publisher's first packet, when a
    // keyframe request cannot reach it yet; the SFU must ask again once media flows (it did
    // not have to when the stream happened to open with a keyframe, which made the
    // keyframe-request assertion below depend on timing).
    publish_from(&mut clients, 2, Duration::from_secs(2), 1).await;

    for c in &clients[..2] {
        let video: u64 = c
            .peer
            .received
            .values()
            .filter(|r| r.keyframes > 0)
            .map(|r| r.units)
            .sum();
        let total: u64 = c.peer.received.values().map(|r| r.units).sum();
        assert!(video >= 20, "{} got {video} video frames", c.name);
        assert!(
            total - video >= 40,
            "{} got {} audio packets",
            c.name,
            total - video
        );
        assert_eq!(c.tracks_added.len(), 2, "{}: {:?}", c.name, c.tracks_added);
        assert!(c.tracks_added.iter().all(|p| p == "alice"));
    }
    assert_eq!(
        clients[2].peer.video_frames(),
        0,
        "publisher gets nothing back"
    );
    assert_eq!(clients[3].peer.video_frames(), 0, "other room gets nothing");
    assert!(
        clients[2].peer.keyframe_requests > 0,
        "SFU asked for keyframes"
    );

    // Late joiner: first decodable frame fast.
    let joined = Instant::now();
    clients.push(join(&sfu, "r1", "dave", false, false).await);
    let mut first_keyframe = None;
    let end = Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    // Frames alice had sent, and frames dave had received, when dave's first keyframe arrived.
    let mut at_first_keyframe = (0u64, 0u64);
    while Instant::now() < end {
        let p = &mut clients[2].peer;
        // Only send a keyframe when asked (not on the 1 s cadence) to prove PLI works.
        let kf = std::mem::take(&mut p.keyframe_requests) > 0;
        p.send_video(kf, if kf { 6000 } else { 1500 });
        sent += 1;
        pump(&mut clients, Duration::from_millis(33)).await;
        let d = &clients[4].peer;
        if first_keyframe.is_none() && d.received.values().any(|r| r.keyframes > 0) {
            first_keyframe = Some(joined.elapsed());
            at_first_keyframe = (sent, d.video_frames());
        }
    }
    let t = first_keyframe.expect("late joiner decoded a keyframe");
    assert!(t < Duration::from_secs(2), "late joiner waited {t:?}");
    // From its first keyframe on, the late joiner gets every frame alice sends, not just that
    // keyframe. The keyframe came within 2 s of the 3 s loop, so at least a second of 30 fps
    // video follows; 10 frames is that second even on a machine slow enough to stretch each
    // 33 ms step to 100 ms. Each frame has the 33 ms pump after it to cross loopback, so all
    // of them arrive; the tolerance of 2 is for a frame still in flight when a count is taken
    // (at the keyframe check or at the end), as in `lost_packets_are_retransmitted`.
    let sent_after = sent - at_first_keyframe.0;
    let got_after = clients[4].peer.video_frames() - at_first_keyframe.1;
    assert!(
        sent_after >= 10,
        "only {sent_after} frames were sent after dave's first keyframe"
    );
    assert!(
        got_after.abs_diff(sent_after) <= 2,
        "dave got {got_after} of the {sent_after} frames sent after its first keyframe"
    );

    let m = sfu.metrics();
    let pf = m
        .packets_forwarded
        .get_or_create(&[("kind", "video")])
        .get();
    assert!(pf > 100, "packets forwarded {pf}");
    assert!(m.plis.get() > 0);
    assert!(m.keyframe_waits.get() >= 3);

    // Publisher leaves: everyone sees its tracks end, counts drop.
    let alice = clients.remove(2);
    alice.handle.leave().await;
    pump(&mut clients, Duration::from_millis(300)).await;
    for c in &clients[..2] {
        assert_eq!(
            c.tracks_ended.len(),
            2,
            "{} saw {:?}",
            c.name,
            c.tracks_ended
        );
    }
    let counts = sfu.counts().await.expect("counts");
    assert_eq!(counts.tracks, 0);
    assert_eq!(counts.sessions, 4);
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_relayed_targeted_and_pushed() {
    let (sfu, token) = start().await;
    let mut clients = vec![
        join(&sfu, "d", "alice", false, false).await,
        join(&sfu, "d", "bob", false, false).await,
        join(&sfu, "d", "carol", false, false).await,
    ];
    wait_connected(&mut clients).await;
    assert!(clients[0]
        .peer
        .send_text(false, r#"{"data":{"hello":"all"}}"#));
    assert!(clients[0]
        .peer
        .send_text(false, r#"{"to":"bob","data":"just bob"}"#));
    assert!(clients[0]
        .peer
        .send_text(false, r#"{"to":"$server","data":{"q":1}}"#));
    assert!(clients[0].peer.send_text(false, "not an envelope"));
    assert!(clients[2].peer.send_text(true, r#"{"data":"lossy hi"}"#));
    clients[1]
        .handle
        .send_data("stream.progress", r#"{"pct":50}"#, true)
        .await
        .expect("push");
    assert!(matches!(
        clients[1].handle.send_data("x", "not json", true).await,
        Err(switchboard_sfu::SfuError::BadData)
    ));
    pump(&mut clients, Duration::from_millis(500)).await;

    let bob = &clients[1].peer.data;
    let carol = &clients[2].peer.data;
    let alice = &clients[0].peer.data;
    assert!(
        bob.contains(&r#"{"from":"alice","data":{"hello":"all"}}"#.to_string()),
        "{bob:?}"
    );
    assert!(carol.contains(&r#"{"from":"alice","data":{"hello":"all"}}"#.to_string()));
    assert!(bob.contains(&r#"{"from":"alice","data":"just bob"}"#.to_string()));
    assert!(!carol.iter().any(|m| m.contains("just bob")));
    assert!(bob.contains(
        &r#"{"from":"$server","topic":"stream.progress","data":{"pct":50}}"#.to_string()
    ));
    assert!(
        alice.contains(&r#"{"from":"carol","data":"lossy hi"}"#.to_string()),
        "{alice:?}"
    );
    assert!(
        !alice.iter().any(|m| m.contains("hello")),
        "no echo to sender"
    );
    assert_eq!(clients[0].server_data, vec![r#"{"q":1}"#.to_string()]);
    let m = sfu.metrics();
    assert_eq!(
        m.data_dropped
            .get_or_create(&[("reason", "malformed")])
            .get(),
        1
    );
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_backpressure_is_bounded() {
    let (sfu, token) = start_with(SfuConfig {
        data_queue_bytes: 4096,
        ..loopback_cfg()
    })
    .await;
    // Never connects: nothing can drain, so the queue fills and pushes are refused.
    let h = sfu.join("b", "slow").await.expect("join");
    let payload = format!("\"{}\"", "x".repeat(1000));
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..20 {
        match h.send_data("t", &payload, true).await {
            Ok(()) => accepted += 1,
            Err(switchboard_sfu::SfuError::Backpressure) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!((3..=4).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + refused, 20);
    assert!(sfu.counts().await.expect("counts").queued_bytes <= 4096);
    h.leave().await;
    assert_eq!(sfu.counts().await.expect("counts").queued_bytes, 0);
    token.cancel();
}

with_both_egresses!(
    join_leave_loop_returns_every_count_to_zero,
    join_leave_loop_returns_every_count_to_zero_own_egress,
    join_leave_loop_returns_every_count_to_zero_with
);

async fn join_leave_loop_returns_every_count_to_zero_with(egress: &str) {
    let (sfu, token) = start_egress(egress).await;
    for i in 0..8 {
        let mut clients = vec![
            join(&sfu, "loop", "pub", true, true).await,
            join(&sfu, "loop", "sub", false, false).await,
        ];
        wait_connected(&mut clients).await;
        publish(&mut clients, 0, Duration::from_millis(200)).await;
        assert!(
            clients[1].peer.video_frames() > 0,
            "round {i}: nothing forwarded"
        );
        clients[0]
            .handle
            .send_data("t", "1", true)
            .await
            .expect("push");
        let mut it = clients.into_iter();
        let a = it.next().expect("a");
        let b = it.next().expect("b");
        if i % 2 == 0 {
            a.handle.leave().await;
            b.handle.leave().await;
        } else {
            drop(a);
            drop(b);
        }
    }
    // Joins that never connect (signaling gave up mid-way) must be freed too.
    for i in 0..50 {
        let h = sfu.join("loop2", &format!("p{i}")).await.expect("join");
        let mut peer = Peer::bind(LO).await.expect("bind");
        let _ = h
            .accept_offer(&peer.offer(true, false))
            .await
            .expect("answer");
        h.leave().await;
    }
    let mut counts = SfuCounts::default();
    for _ in 0..50 {
        counts = sfu.counts().await.expect("counts");
        if counts == SfuCounts::default() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts, SfuCounts::default());
    let m = sfu.metrics();
    assert_eq!(m.sessions.get(), 0);
    assert_eq!(m.tracks.get(), 0);
    assert_eq!(m.subscriptions.get(), 0);
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_dropped_and_counted() {
    let (sfu, token) = start().await;
    let target = sfu.local_addr();
    let mut clients = vec![
        join(&sfu, "h", "a", true, false).await,
        join(&sfu, "h", "b", false, false).await,
    ];
    wait_connected(&mut clients).await;
    let evil = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"nope:bad");
    let mut srtp = vec![0x80, 0x60];
    srtp.extend_from_slice(&[0u8; 100]);
    let mut no_user = stun[..20].to_vec();
    no_user[2] = 0;
    no_user[3] = 0;
    for _ in 0..20 {
        evil.send_to(b"\xffgarbage", target).await.expect("send");
        evil.send_to(&stun, target).await.expect("send");
        evil.send_to(&no_user, target).await.expect("send");
        evil.send_to(&srtp, target).await.expect("send");
        evil.send_to(&[0x80u8; 4000], target).await.expect("send");
        evil.send_to(&[], target).await.expect("send");
        // Pace so the kernel's receive buffer never overflows: every datagram must be counted.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Random bytes too.
    let mut x: u32 = 12345;
    for _ in 0..500 {
        let len = (x % 1400) as usize + 1;
        let mut b = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b.push(x as u8);
        }
        evil.send_to(&b, target).await.expect("send");
        if len.is_multiple_of(8) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // The media path still works afterwards.
    publish(&mut clients, 0, Duration::from_millis(800)).await;
    assert!(clients[1].peer.video_frames() > 5, "forwarding survived");
    assert!(dropped(&sfu, "unknown_kind") >= 20);
    assert!(dropped(&sfu, "unknown_ufrag") >= 20);
    assert!(dropped(&sfu, "stun_without_username") >= 20);
    assert!(dropped(&sfu, "unknown_source") >= 20);
    assert!(dropped(&sfu, "oversized") >= 20);
    let c = sfu.counts().await.expect("counts");
    assert_eq!(c.sessions, 2);
    assert!(c.addr_routes <= 2, "attacker address never routed: {c:?}");
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_browser_offer_wins_and_server_reoffers() {
    let (sfu, token) = start().await;
    let mut clients = vec![join(&sfu, "g", "bob", false, false).await];
    wait_connected(&mut clients).await;
    clients.push(join(&sfu, "g", "alice", true, false).await);
    // Alice's track makes the SFU offer to Bob; Bob ignores that offer and sends his own
    // (he starts publishing), exactly the glare case.
    let mut server_offer = None;
    for _ in 0..100 {
        futures::future::join_all(
            clients
                .iter_mut()
                .map(|c| c.peer.run_for(Duration::from_millis(5))),
        )
        .await;
        if let Some(SfuEvent::Offer(sdp)) = clients[0].handle.try_next_event() {
            server_offer = Some(sdp);
            break;
        }
    }
    assert!(
        server_offer.is_some(),
        "server offered alice's track to bob"
    );
    let bob_offer = clients[0].peer.offer_with(true, false, false);
    let answer = clients[0]
        .handle
        .accept_offer(&bob_offer)
        .await
        .expect("browser offer wins");
    clients[0]
        .peer
        .accept_answer(&answer)
        .expect("bob applies answer");
    // The server re-offers alice's track; both now receive each other's video.
    exchange_video(&mut clients, Duration::from_secs(2), 15, 1200).await;
    assert!(clients[0].peer.video_frames() > 10, "bob sees alice");
    assert!(clients[1].peer.video_frames() > 10, "alice sees bob");
    assert_eq!(clients[0].tracks_added, vec!["alice".to_string()]);
    assert_eq!(clients[1].tracks_added, vec!["bob".to_string()]);
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layer_follows_subscriber_preference() {
    let (sfu, token) = start().await;
    let mut clients = vec![
        join(&sfu, "s", "bob", false, false).await,
        join(&sfu, "s", "carol", false, false).await,
    ];
    clients.push(join_simulcast(&sfu, "s", "alice").await);
    wait_connected(&mut clients).await;
    // Carol renders alice small: lowest layer only.
    clients[1]
        .handle
        .set_video_preference("alice", 0, false)
        .await
        .expect("cap");
    // Frame sizes tell the layers apart at the receiver.
    let sizes = [("q", 300usize), ("h", 1100), ("f", 3000)];
    let end = Instant::now() + Duration::from_secs(3);
    let mut frame = 0u64;
    let mut measured_from = None;
    while Instant::now() < end {
        let p = &mut clients[2].peer;
        let kf = frame.is_multiple_of(10) || std::mem::take(&mut p.keyframe_requests) > 0;
        for (rid, size) in sizes {
            p.send_video_layer(rid, kf, size);
        }
        frame += 1;
        pump(&mut clients, Duration::from_millis(33)).await;
        if measured_from.is_none() && frame == 45 {
            // After the switch settles, measure only what arrives from now on.
            for c in clients.iter_mut() {
                c.peer.received.clear();
            }
            measured_from = Some(frame);
        }
    }
    let avg = |c: &Client| {
        let (b, n) = c
            .peer
            .received
            .values()
            .filter(|r| r.video)
            .fold((0, 0), |(b, n), r| (b + r.bytes, n + r.units));
        assert!(n > 10, "{} got {n} frames", c.name);
        b / n
    };
    let bob = avg(&clients[0]);
    let carol = avg(&clients[1]);
    assert!(
        bob >= 2900,
        "bob should get the full layer, avg frame {bob} B"
    );
    assert!(
        carol <= 400,
        "carol should get the low layer, avg frame {carol} B"
    );
    token.cancel();
    sfu.stopped().await;
}

with_both_egresses!(
    simulcast_layer_switches_keep_the_subscribers_media_time_continuous,
    simulcast_layer_switches_keep_the_subscribers_media_time_continuous_own_egress,
    simulcast_layer_switches_keep_the_subscribers_media_time_continuous_with
);

/// Each simulcast layer has its own timestamp base (as in libwebrtc); a subscriber switched
/// between layers must still see its media time move forward smoothly, or its jitter buffer
/// holds or drops the new layer's frames (received but never decoded).
async fn simulcast_layer_switches_keep_the_subscribers_media_time_continuous_with(egress: &str) {
    let (sfu, token) = start_egress(egress).await;
    let mut clients = vec![join(&sfu, "t", "bob", false, false).await];
    clients.push(join_simulcast(&sfu, "t", "alice").await);
    wait_connected(&mut clients).await;
    let sizes = [("q", 300usize), ("h", 1100), ("f", 3000)];
    // Full layer, then capped to the lowest, then back up: two switches in each direction of
    // the timestamp bases (f → q goes far down, q → f far up).
    let mut frame = 0u64;
    let mut sizes_seen = Vec::new();
    for max_layer in [2u8, 0, 2] {
        clients[0]
            .handle
            .set_video_preference("alice", max_layer, false)
            .await
            .expect("preference");
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            let p = &mut clients[1].peer;
            let kf = frame.is_multiple_of(10) || std::mem::take(&mut p.keyframe_requests) > 0;
            for (rid, size) in sizes {
                p.send_video_layer(rid, kf, size);
            }
            frame += 1;
            pump(&mut clients, Duration::from_millis(33)).await;
        }
        let r = clients[0].peer.received.values().find(|r| r.video).cloned();
        sizes_seen.push(r.map(|r| (r.units, r.bytes)).unwrap_or_default());
    }
    let r = clients[0]
        .peer
        .received
        .values()
        .find(|r| r.video)
        .expect("bob receives alice's video")
        .clone();
    // The layer did change: the middle phase brought small frames (bytes per frame fell).
    let per_frame = |(u0, b0): (u64, u64), (u1, b1): (u64, u64)| (b1 - b0) / (u1 - u0).max(1);
    let low = per_frame(sizes_seen[0], sizes_seen[1]);
    let high = per_frame(sizes_seen[1], sizes_seen[2]);
    assert!(low < 1500 && high > 1500, "layers {sizes_seen:?}");
    assert_eq!(r.backwards, 0, "media time went backwards: {r:?}");
    // 33 ms frames; allow for a stall of up to a second, not for a jump of a base.
    assert!(
        r.max_step < 90_000,
        "media time jumped by {} ticks: {r:?}",
        r.max_step
    );
    token.cancel();
    sfu.stopped().await;
}

with_both_egresses!(
    ice_restart_keeps_media_flowing,
    ice_restart_keeps_media_flowing_own_egress,
    ice_restart_keeps_media_flowing_with
);

async fn ice_restart_keeps_media_flowing_with(egress: &str) {
    let (sfu, token) = start_egress(egress).await;
    let mut clients = vec![
        join(&sfu, "i", "bob", false, false).await,
        join(&sfu, "i", "alice", true, false).await,
    ];
    wait_connected(&mut clients).await;
    publish(&mut clients, 1, Duration::from_millis(500)).await;
    let before = clients[0].peer.video_frames();
    assert!(before > 5);
    // Bob restarts ICE: new ufrag on both sides; the SFU must route the new checks.
    let offer = clients[0].peer.offer_ice_restart();
    assert!(!offer.is_empty());
    let answer = clients[0]
        .handle
        .accept_offer(&offer)
        .await
        .expect("restart offer");
    clients[0]
        .peer
        .accept_answer(&answer)
        .expect("restart answer");
    let c = sfu.counts().await.expect("counts");
    assert_eq!(c.ufrag_routes, 3, "old + new ufrag for bob, one for alice");
    publish(&mut clients, 1, Duration::from_millis(1500)).await;
    let after = clients[0].peer.video_frames();
    assert!(
        after > before + 20,
        "media after restart: {before} -> {after}"
    );
    assert_eq!(
        dropped(&sfu, "unknown_ufrag"),
        0,
        "new-ufrag checks were routed"
    );
    assert_eq!(dropped(&sfu, "not_accepted"), 0);
    // Leaving frees both ufrag routes.
    let bob = clients.remove(0);
    bob.handle.leave().await;
    let c = sfu.counts().await.expect("counts");
    assert_eq!(c.ufrag_routes, 1);
    token.cancel();
    sfu.stopped().await;
}

async fn join_tcp(sfu: &Sfu, room: &str, name: &str, video: bool) -> Client {
    let handle = sfu.join(room, name).await.expect("join");
    let server = sfu.local_tcp_addr().expect("ice-tcp enabled");
    let mut peer = Peer::connect_tcp(server).await.expect("tcp connect");
    let offer = peer.offer(video, false);
    let answer = handle.accept_offer(&offer).await.expect("answer");
    assert!(
        answer.contains("tcptype passive"),
        "answer has the TCP candidate"
    );
    peer.accept_answer(&answer).expect("client accepts answer");
    Client::new(name, peer, handle)
}

with_both_egresses!(
    ice_tcp_peers_publish_and_receive,
    ice_tcp_peers_publish_and_receive_own_egress,
    ice_tcp_peers_publish_and_receive_with
);

async fn ice_tcp_peers_publish_and_receive_with(egress: &str) {
    let (sfu, token) = start_egress(egress).await;
    let mut clients = vec![
        join(&sfu, "t", "udp-bob", true, false).await,
        join_tcp(&sfu, "t", "tcp-alice", true).await,
    ];
    wait_connected(&mut clients).await;
    assert_eq!(sfu.tcp_connections(), 1);
    exchange_video(&mut clients, Duration::from_secs(2), 15, 2500).await;
    assert!(
        clients[0].peer.video_frames() > 20,
        "udp peer got tcp peer's video"
    );
    assert!(
        clients[1].peer.video_frames() > 20,
        "tcp peer got udp peer's video"
    );
    assert!(clients[1].peer.send_text(false, r#"{"data":"over tcp"}"#));
    pump(&mut clients, Duration::from_millis(300)).await;
    assert!(clients[0]
        .peer
        .data
        .contains(&r#"{"from":"tcp-alice","data":"over tcp"}"#.to_string()));
    // Leaving closes the TCP connection and frees its routes.
    let alice = clients.remove(1);
    alice.handle.leave().await;
    let mut c = sfu.counts().await.expect("counts");
    for _ in 0..50 {
        if sfu.tcp_connections() == 0 && c.tcp_conns == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        c = sfu.counts().await.expect("counts");
    }
    assert_eq!(sfu.tcp_connections(), 0);
    assert_eq!(c.tcp_conns, 0);
    // A TCP connection that speaks garbage is closed, never bound.
    let mut s = tokio::net::TcpStream::connect(sfu.local_tcp_addr().expect("tcp"))
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.expect("write");
    for _ in 0..50 {
        if sfu.tcp_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sfu.tcp_connections(),
        0,
        "oversized frame closes the connection"
    );
    token.cancel();
    sfu.stopped().await;
}

#[tokio::test]
async fn engine_on_its_own_thread_forwards_and_ends_with_shutdown() {
    let cfg = loopback_cfg();
    let token = CancellationToken::new();
    let mut reg = Registry::with_prefix("switchboard");
    let (sfu, thread) = Sfu::start_on_thread(cfg, SfuMetrics::registered(&mut reg), token.clone())
        .await
        .expect("sfu starts");
    assert_eq!(thread.thread().name(), Some("sfu-engine"));
    let mut clients = vec![
        join(&sfu, "r", "bob", false, false).await,
        join(&sfu, "r", "alice", true, false).await,
    ];
    wait_connected(&mut clients).await;
    publish(&mut clients, 1, Duration::from_secs(1)).await;
    assert!(clients[0].peer.video_frames() >= 10, "bob decodes alice");

    token.cancel();
    let joined = tokio::task::spawn_blocking(move || thread.join());
    tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .expect("engine thread ends within 5 s of shutdown")
        .expect("join task")
        .expect("engine thread did not panic");
    assert!(
        sfu.join("r", "late").await.is_err(),
        "a stopped engine refuses joins"
    );
}

/// A subscriber that loses every 10th media datagram still gets every video frame: its NACKs
/// reach the SFU, and the own egress resends the packets from its history (str0m's egress
/// does the same from its RTX cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retransmitted_own_egress() {
    lost_packets_are_retransmitted(false).await;
}

/// The same with the subscriber on ICE-TCP (its NACKs and the resends cross the TCP link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retransmitted_own_egress_tcp() {
    lost_packets_are_retransmitted(true).await;
}

async fn lost_packets_are_retransmitted(tcp: bool) {
    let (sfu, token) = start_egress("own").await;
    let bob = if tcp {
        join_tcp(&sfu, "n", "bob", false).await
    } else {
        join(&sfu, "n", "bob", false, false).await
    };
    let mut clients = vec![bob, join(&sfu, "n", "alice", true, false).await];
    wait_connected(&mut clients).await;
    publish(&mut clients, 1, Duration::from_millis(500)).await;
    clients[0].peer.drop_media_every = 10;
    let before = clients[0].peer.video_frames();
    let mut frames = 0;
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let p = &mut clients[1].peer;
        let kf = std::mem::take(&mut p.keyframe_requests) > 0;
        p.send_video(kf, 3000);
        frames += 1;
        pump(&mut clients, Duration::from_millis(33)).await;
    }
    // Stop losing and let the last retransmissions land.
    clients[0].peer.drop_media_every = 0;
    pump(&mut clients, Duration::from_millis(300)).await;
    let got = clients[0].peer.video_frames() - before;
    let lost = clients[0].peer.media_dropped;
    let resent = sfu.metrics().egress_retransmissions.get();
    assert!(lost >= 10, "the test dropped only {lost} datagrams");
    assert!(resent >= lost / 2, "{lost} dropped, {resent} resent");
    // The video track negotiated RTX, so its resends arrive as RFC 4588 RTX packets.
    let rtx = clients[0].peer.rtx_received;
    assert!(
        rtx >= resent / 2 && rtx <= resent,
        "{rtx} RTX packets arrived for {resent} resends"
    );
    assert!(
        got + 2 >= frames,
        "{got} of {frames} frames arrived ({lost} datagrams dropped, {resent} resent)"
    );
    assert!(
        sfu.metrics().egress_reports.get() > 0,
        "no sender report rewritten"
    );
    token.cancel();
    sfu.stopped().await;
}
