//! Gives back to the system the heap memory the allocator holds free.
//!
//! glibc's malloc keeps freed memory in its arenas (one per thread that allocated), and only
//! returns the top of each heap on its own. After a burst of large messages (resume buffers of
//! 60 KB offers, say) leaves, the process would keep that memory resident for good. A task
//! checks every two seconds how much the arenas hold free and, past a threshold, asks malloc to
//! return it (`malloc_trim`, which releases free pages anywhere in the heaps). Both calls lock
//! each arena briefly; at this interval their cost does not show.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Free heap memory worth giving back.
const THRESHOLD: usize = 8 * 1024 * 1024;
const INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
struct Metrics {
    free: Gauge,
    trims: Counter,
}

/// Starts the task on the current runtime; it ends with `shutdown`.
pub fn spawn_release_task(registry: &mut Registry, shutdown: CancellationToken) {
    let m = Metrics::default();
    registry.register(
        "heap_free_bytes",
        "Heap memory the allocator holds free (returned to the system past 8 MiB)",
        m.free.clone(),
    );
    registry.register(
        "heap_trims",
        "Times free heap memory was returned to the system",
        m.trims.clone(),
    );
    if !supported() {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let free = free_heap_bytes();
            m.free.set(free as i64);
            if free >= THRESHOLD {
                // Off the runtime's threads: trimming a large heap can take a few ms.
                let _ = tokio::task::spawn_blocking(release).await;
                m.trims.inc();
                m.free.set(free_heap_bytes() as i64);
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn supported() -> bool {
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe { libc::mallinfo2() }.fordblks
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim has no preconditions; it returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn supported() -> bool {
    false
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_heap_bytes() -> usize {
    0
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_is_seen_and_released() {
        // 64 blocks of 64 KiB: below glibc's mmap threshold, so they live in the heap.
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let before = free_heap_bytes();
        drop(blocks);
        let freed = free_heap_bytes();
        assert!(freed >= before, "{before} -> {freed}");
        release();
        assert!(free_heap_bytes() <= freed);
    }
}
