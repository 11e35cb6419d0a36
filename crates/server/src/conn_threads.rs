//! Connection threads: every accepted HTTP/2 connection is served on one of N OS threads, each
//! running its own single-threaded tokio runtime, and stays there for its whole life.
//!
//! A connection's tasks (hyper's connection task, one task per HTTP/2 stream, the handlers and
//! whatever they spawn: gateway upstream connections, gRPC signaling sessions) then all run on
//! the same thread. Handing a request from the connection task to its stream task, or a gateway
//! chunk from the upstream connection to the client connection, is a queue push on the same
//! thread instead of a cross-thread wakeup (a futex and, on a VM, an IPI) — see
//! docs/decisions/0032-http-connection-threads.md for the measurements. HTTP/1.1 connections
//! (WebSocket signaling, REST, the demo page) stay on the shared work-stealing runtime: a
//! relayed signaling message wakes another connection's writer, which work stealing runs on
//! the waking thread.
//!
//! New connections go to the thread with the fewest live connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The running threads. Dropping this stops them; tasks still on them are dropped.
pub struct ConnThreads {
    threads: Vec<(Handle, Arc<AtomicUsize>)>,
    stop: CancellationToken,
}

/// Held by a connection's task: counts it on its thread while it lives.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnThreads {
    /// Starts `n` threads (`0` = one per CPU core), named `http-<i>`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push((rt.handle().clone(), Arc::new(AtomicUsize::new(0))));
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || rt.block_on(stop.cancelled_owned()))?;
        }
        Ok(ConnThreads { threads, stop })
    }

    /// How many threads run.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// The thread with the fewest live connections, and a slot counting one more there.
    pub fn pick(&self) -> (&Handle, Slot) {
        let (handle, count) = self
            .threads
            .iter()
            .min_by_key(|(_, c)| c.load(Ordering::Relaxed))
            .expect("at least one connection thread");
        count.fetch_add(1, Ordering::Relaxed);
        (handle, Slot(count.clone()))
    }

    /// Live connections per thread.
    pub fn loads(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl ConnThreads {
    /// Stops every thread; tasks still on them are dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for ConnThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_thread_and_threads_stop_on_drop() {
        let t = ConnThreads::start(3).unwrap();
        assert_eq!(t.count(), 3);
        let a = t.pick().1;
        let b = t.pick().1;
        let c = t.pick().1;
        assert_eq!(t.loads(), vec![1, 1, 1]);
        drop(b);
        assert_eq!(t.loads(), vec![1, 0, 1]);
        let (h, d) = t.pick();
        assert_eq!(t.loads(), vec![1, 1, 1]);
        // Tasks spawned on a picked handle run on that connection thread.
        let name = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let n2 = name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        h.spawn(async move {
            *n2.lock().unwrap() = std::thread::current().name().unwrap_or("").to_string();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(*name.lock().unwrap(), "http-1");
        drop((a, c, d));
        let handle = t.threads[0].0.clone();
        drop(t);
        // The runtime shuts down once its thread returns; spawning then yields a task that
        // never runs, so wait until the handle reports no more alive tasks to be sure.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        loop {
            let tx = tx.clone();
            drop(handle.spawn(async move {
                let _ = tx.send(());
            }));
            if rx
                .recv_timeout(std::time::Duration::from_millis(50))
                .is_err()
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "thread did not stop");
        }
    }
}
