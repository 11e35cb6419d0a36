//! Per-session deadlines (str0m's `Output::Timeout`) in a min-heap, so an engine wakeup finds
//! the sessions whose timeout is due without scanning every session, and the next wakeup time is
//! the heap's top. Sans-IO: time is passed in.
//!
//! Rescheduling pushes a new heap entry and leaves the old one behind; an entry is live only if
//! it matches the key's current deadline, stale ones are skipped when they surface, and the heap
//! is rebuilt once stale entries outnumber live ones, so memory stays O(keys).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines keyed by `K` (a session id).
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    current: HashMap<K, Instant>,
}

impl<K: Copy + Eq + Hash + Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash + Ord> TimerQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
        }
    }

    /// Sets `key`'s deadline to `at`, replacing any earlier one.
    pub fn schedule(&mut self, key: K, at: Instant) {
        if self.current.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * self.current.len() + 64 {
            self.compact();
        }
    }

    /// Forgets `key` (its session is gone).
    pub fn remove(&mut self, key: K) {
        self.current.remove(&key);
        if self.current.is_empty() {
            self.heap.clear();
        }
    }

    /// `key`'s current deadline.
    pub fn deadline(&self, key: K) -> Option<Instant> {
        self.current.get(&key).copied()
    }

    /// Keys with a deadline.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Heap entries, live and stale (for the memory bound in tests).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves every key whose deadline is ≤ `now` into `out` (earliest first) and unschedules
    /// it; the caller polls it, which schedules its next deadline.
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<K>) {
        loop {
            self.drop_stale_top();
            match self.heap.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            if let Some(Reverse((_, key))) = self.heap.pop() {
                self.current.remove(&key);
                out.push(key);
            }
        }
    }

    fn is_live(&self, at: Instant, key: K) -> bool {
        self.current.get(&key) == Some(&at)
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.is_live(*at, *key) {
                return;
            }
            self.heap.pop();
        }
    }

    fn compact(&mut self) {
        self.heap = self
            .current
            .iter()
            .map(|(k, at)| Reverse((*at, *k)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_out_in_deadline_order_once() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(1u64, ms(t0, 30));
        q.schedule(2, ms(t0, 10));
        q.schedule(3, ms(t0, 20));
        assert_eq!(q.next_deadline(), Some(ms(t0, 10)));
        let mut out = Vec::new();
        q.pop_due(ms(t0, 5), &mut out);
        assert!(out.is_empty());
        q.pop_due(ms(t0, 20), &mut out);
        assert_eq!(out, vec![2, 3]);
        assert_eq!(q.next_deadline(), Some(ms(t0, 30)));
        assert_eq!(q.len(), 1);
        out.clear();
        q.pop_due(ms(t0, 20), &mut out);
        assert!(out.is_empty(), "popped keys are unscheduled");
    }

    #[test]
    fn rescheduling_replaces_the_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(1u64, ms(t0, 10));
        q.schedule(1, ms(t0, 50));
        q.schedule(2, ms(t0, 40));
        assert_eq!(
            q.next_deadline(),
            Some(ms(t0, 40)),
            "the old 10 ms entry is stale"
        );
        let mut out = Vec::new();
        q.pop_due(ms(t0, 45), &mut out);
        assert_eq!(out, vec![2]);
        // Earlier again.
        q.schedule(1, ms(t0, 5));
        out.clear();
        q.pop_due(ms(t0, 6), &mut out);
        assert_eq!(out, vec![1]);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn removed_keys_never_fire() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(1u64, ms(t0, 1));
        q.schedule(2, ms(t0, 2));
        q.remove(1);
        let mut out = Vec::new();
        q.pop_due(ms(t0, 100), &mut out);
        assert_eq!(out, vec![2]);
        // Same key and instant scheduled after a removal: fires once.
        q.schedule(3, ms(t0, 7));
        q.remove(3);
        q.schedule(4, ms(t0, 8));
        q.schedule(3, ms(t0, 7));
        out.clear();
        q.pop_due(ms(t0, 100), &mut out);
        assert_eq!(out, vec![3, 4]);
    }

    #[test]
    fn constant_rescheduling_keeps_the_heap_bounded() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        for i in 0..100_000u64 {
            q.schedule(i % 10, ms(t0, 1_000 + i));
        }
        assert_eq!(q.len(), 10);
        assert!(q.heap_len() <= 2 * 10 + 65, "heap {}", q.heap_len());
    }

    proptest! {
        /// Against a model (a plain map scanned in full, which is what the engine did before):
        /// the same keys come out, in deadline order, and `next` is the model's minimum.
        #[test]
        fn matches_a_full_scan(ops in proptest::collection::vec((0u8..3, 0u64..8, 0u64..200), 0..300)) {
            let t0 = Instant::now();
            let mut q = TimerQueue::new();
            let mut model: HashMap<u64, Instant> = HashMap::new();
            for (op, key, t) in ops {
                match op {
                    0 => { q.schedule(key, ms(t0, t)); model.insert(key, ms(t0, t)); }
                    1 => { q.remove(key); model.remove(&key); }
                    _ => {
                        let now = ms(t0, t);
                        let mut out = Vec::new();
                        q.pop_due(now, &mut out);
                        let mut want: Vec<(Instant, u64)> = model.iter().filter(|(_, at)| **at <= now).map(|(k, at)| (*at, *k)).collect();
                        want.sort();
                        model.retain(|_, at| *at > now);
                        prop_assert_eq!(out, want.into_iter().map(|w| w.1).collect::<Vec<_>>());
                    }
                }
                prop_assert_eq!(q.next_deadline(), model.values().min().copied());
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
