//! Which UDP worker gets client datagrams (`turn.udp_consolidate`, decision 0027).
//!
//! With several workers sharing the listen port, the kernel spreads client datagrams over
//! them by a hash of the addresses. At light load that costs CPU: each worker goes to sleep
//! and is woken for its share of every burst, so N workers pay N wakeups where one would do.
//! This task watches how busy the workers are and, while they are lightly loaded, installs a
//! one-instruction BPF program on the SO_REUSEPORT group that hands every datagram to the
//! first worker; once that worker is more than half busy it switches back to the hash.
//! Any worker can serve any client (the TURN core is shared), so switching is safe at any
//! moment; relay sockets stay with the worker that created them.

use crate::metrics::TurnMetrics;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_udp::{steer_reuseport, Steering};
use tokio_util::sync::CancellationToken;

/// How often the workers' busy time is sampled.
const INTERVAL: Duration = Duration::from_millis(200);
/// Spread as soon as the first worker is busier than this (fraction of wall time).
const SPREAD_ABOVE: f64 = 0.5;
/// Consolidate when all workers together are busy less than this ...
const CONSOLIDATE_BELOW: f64 = 0.3;
/// ... for this many samples in a row (1 s), so a burst does not flip it back and forth.
const CALM_SAMPLES: u32 = 5;

/// How long one worker thread has been busy (awake) since it started; written by the worker's
/// park/unpark hooks, read by [`run`]. A worker that never waits still counts as busy.
#[derive(Debug, Default)]
pub(crate) struct BusyClock {
    /// Busy nanoseconds of the spells that ended.
    done_ns: AtomicU64,
    /// When the current spell started (ns since [`epoch`] + 1), 0 while waiting.
    woke_at: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

impl BusyClock {
    /// The worker woke up.
    pub(crate) fn woke(&self) {
        self.woke_at.store(now_ns(), Ordering::Relaxed);
    }

    /// The worker is about to wait.
    pub(crate) fn waits(&self) {
        let w = self.woke_at.swap(0, Ordering::Relaxed);
        if w != 0 {
            self.done_ns
                .fetch_add(now_ns().saturating_sub(w), Ordering::Relaxed);
        }
    }

    /// Busy nanoseconds so far, the current spell included.
    fn total(&self, now: u64) -> u64 {
        let w = self.woke_at.load(Ordering::Relaxed);
        let running = if w == 0 { 0 } else { now.saturating_sub(w) };
        self.done_ns.load(Ordering::Relaxed) + running
    }
}

/// The steering decision, apart from sockets and clocks.
#[derive(Debug, Default)]
pub(crate) struct Steer {
    spread: bool,
    calm: u32,
}

impl Steer {
    /// Takes each worker's busy fraction over the last sample (index 0 = the first worker);
    /// returns the new steering when it changes.
    pub(crate) fn sample(&mut self, busy: &[f64]) -> Option<Steering> {
        let first = busy.first().copied().unwrap_or(0.0);
        let total: f64 = busy.iter().sum();
        if !self.spread {
            if first > SPREAD_ABOVE {
                self.spread = true;
                self.calm = 0;
                return Some(Steering::Hash);
            }
            return None;
        }
        if total < CONSOLIDATE_BELOW {
            self.calm += 1;
            if self.calm >= CALM_SAMPLES {
                self.spread = false;
                self.calm = 0;
                return Some(Steering::First);
            }
        } else {
            self.calm = 0;
        }
        None
    }
}

/// Steers the group `sock` belongs to until shutdown. `busy[i]` is worker `i`'s clock. If
/// the kernel refuses the BPF program the default hash stays.
pub(crate) async fn run(
    sock: Arc<StdUdpSocket>,
    busy: Arc<[BusyClock]>,
    metrics: TurnMetrics,
    shutdown: CancellationToken,
) {
    if !steer_reuseport(&*sock, Steering::First) {
        tracing::info!("turn: SO_ATTACH_REUSEPORT_CBPF refused; UDP clients stay spread by hash");
        metrics.udp_spread.set(1);
        return;
    }
    metrics.udp_spread.set(0);
    let mut steer = Steer::default();
    let mut at = now_ns();
    let mut last: Vec<u64> = busy.iter().map(|b| b.total(at)).collect();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = now_ns();
        let wall = now.saturating_sub(at).max(1) as f64;
        at = now;
        let fractions: Vec<f64> = busy
            .iter()
            .zip(last.iter_mut())
            .map(|(b, l)| {
                let v = b.total(now);
                let d = v.saturating_sub(*l);
                *l = v;
                d as f64 / wall
            })
            .collect();
        if let Some(to) = steer.sample(&fractions) {
            if steer_reuseport(&*sock, to) {
                metrics.udp_spread.set(i64::from(to == Steering::Hash));
                metrics.udp_steering_changes.inc();
                tracing::debug!(?to, ?fractions, "turn udp steering");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_clock_counts_spells_and_a_spell_in_progress() {
        let c = BusyClock::default();
        assert_eq!(c.total(now_ns()), 0);
        c.woke();
        std::thread::sleep(Duration::from_millis(5));
        // Still awake: the running spell counts.
        assert!(c.total(now_ns()) >= 5_000_000);
        c.waits();
        let done = c.total(now_ns());
        assert!(done >= 5_000_000);
        std::thread::sleep(Duration::from_millis(5));
        // Waiting: nothing added.
        assert_eq!(c.total(now_ns()), done);
    }

    #[test]
    fn starts_on_one_worker_and_spreads_when_it_is_half_busy() {
        let mut s = Steer::default();
        assert_eq!(s.sample(&[0.2, 0.0]), None);
        assert_eq!(s.sample(&[0.5, 0.0]), None);
        assert_eq!(s.sample(&[0.7, 0.0]), Some(Steering::Hash));
        assert_eq!(s.sample(&[0.9, 0.8]), None);
    }

    #[test]
    fn consolidates_only_after_a_calm_second() {
        let mut s = Steer::default();
        assert_eq!(s.sample(&[0.9, 0.0]), Some(Steering::Hash));
        for _ in 0..CALM_SAMPLES - 1 {
            assert_eq!(s.sample(&[0.1, 0.1]), None);
        }
        // One busy sample resets the count.
        assert_eq!(s.sample(&[0.3, 0.2]), None);
        for _ in 0..CALM_SAMPLES - 1 {
            assert_eq!(s.sample(&[0.1, 0.05]), None);
        }
        assert_eq!(s.sample(&[0.1, 0.05]), Some(Steering::First));
        // And spreads again under load.
        assert_eq!(s.sample(&[0.6, 0.0]), Some(Steering::Hash));
    }
}
