//! What an SFU egress path of our own would cost per outbound datagram (decision 0047).
//!
//! One thread plays the engine: for every frame it builds each subscriber's RTP packets
//! (own SSRC and sequence numbers, shared payload), protects them with
//! `switchboard_sfu::srtp::Context` and sends them with the engine's batching
//! (`switchboard_udp::SendBatch`: a subscriber's run of equal-size packets as one UDP GSO
//! message, one `sendmsg` per run). Subscribers are loopback sockets drained by their own
//! threads. The figure is the sending thread's CPU time per datagram (kernel loopback delivery
//! included, as in `sfu-load`) and the wall time to fan one frame out to every subscriber.
//!
//! No str0m, no ICE or DTLS: a lower bound for the per-datagram cost of the egress, to set
//! against `sfu-load`'s outbound datagrams per engine core-second.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard_sfu::srtp::{Context, MasterKey, Profile};

#[derive(Parser, Debug)]
#[command(about = "Per-datagram cost of SRTP + batched UDP egress to loopback subscribers")]
struct Args {
    /// Subscribers (one loopback socket each).
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// RTP packets per frame (a 1.2 Mbit/s 30 fps VP8 frame is about 5; a 4x keyframe 20).
    #[arg(long, default_value_t = 5)]
    packets: usize,
    /// RTP payload bytes per packet.
    #[arg(long, default_value_t = 1100)]
    payload: usize,
    /// Frames to send.
    #[arg(long, default_value_t = 10_000)]
    frames: usize,
    /// Pause between frames, µs (lets the subscribers drain; their CPU is not counted).
    #[arg(long, default_value_t = 300)]
    gap_us: u64,
    /// SRTP profile: gcm128, gcm256 or cm (AES-CM-128 + HMAC-SHA1-80).
    #[arg(long, default_value = "gcm128")]
    profile: String,
}

fn thread_cpu() -> Duration {
    // utime + stime of this thread, in clock ticks (fields 14 and 15 of /proc/thread-self/stat).
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let profile = match a.profile.as_str() {
        "gcm128" => Profile::AeadAes128Gcm,
        "gcm256" => Profile::AeadAes256Gcm,
        "cm" => Profile::Aes128CmSha1_80,
        p => anyhow::bail!("unknown profile {p}"),
    };
    let master = MasterKey {
        profile,
        key: (0..profile.master_key_len() as u8).collect(),
        salt: (0..profile.master_salt_len() as u8)
            .map(|b| b ^ 0x5a)
            .collect(),
    };
    let ctx = Context::new(&master)?;
    let mut subs = Vec::new();
    for _ in 0..a.subscribers {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        subs.push(s.local_addr()?);
        std::thread::spawn(move || {
            let mut b = [0u8; 65536];
            while s.recv(&mut b).is_ok() {}
        });
    }
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    switchboard_udp::GSO.init(true);
    let payload = vec![0x5au8; a.payload];
    let mut seq = vec![0u16; subs.len()];
    let mut batch = switchboard_udp::SendBatch::default();
    let mut buf = Vec::with_capacity(1500);
    let mut fanout_us = Vec::with_capacity(a.frames);
    let (c0, t0) = (thread_cpu(), Instant::now());
    let mut sent = 0u64;
    for f in 0..a.frames {
        let start = Instant::now();
        for (s, to) in subs.iter().enumerate() {
            for p in 0..a.packets {
                buf.clear();
                let marker = if p + 1 == a.packets { 0x80 } else { 0 };
                buf.extend_from_slice(&[0x80, 96 | marker]);
                buf.extend_from_slice(&seq[s].to_be_bytes());
                buf.extend_from_slice(&(f as u32).wrapping_mul(3000).to_be_bytes());
                buf.extend_from_slice(&(0x1000 + s as u32).to_be_bytes());
                buf.extend_from_slice(&payload);
                ctx.protect_rtp(&mut buf, 0)?;
                batch.push(&buf, *to);
                seq[s] = seq[s].wrapping_add(1);
                sent += 1;
                if batch.len() >= 64 {
                    batch.flush(&tx);
                }
            }
        }
        batch.flush(&tx);
        fanout_us.push(start.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(Duration::from_micros(a.gap_us));
    }
    let cpu = (thread_cpu() - c0).as_secs_f64();
    fanout_us.sort_by(f64::total_cmp);
    let pct = |q: f64| fanout_us[((fanout_us.len() - 1) as f64 * q) as usize];
    println!(
        "subscribers={} packets/frame={} payload={} profile={:?} gso={}",
        a.subscribers,
        a.packets,
        a.payload,
        profile,
        switchboard_udp::GSO.enabled()
    );
    println!(
        "datagrams {sent} in {:.2} s wall, sender CPU {cpu:.2} s: {:.2} us per datagram, {:.0} datagrams per core-second",
        t0.elapsed().as_secs_f64(),
        cpu * 1e6 / sent as f64,
        sent as f64 / cpu
    );
    println!(
        "fan-out of one frame to all subscribers: p50 {:.0} us, p99 {:.0} us",
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
