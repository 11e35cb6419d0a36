//! One session's resume buffer: the messages delivered to it, numbered by `seq`, oldest first,
//! bounded by count and by bytes. A client that lost its socket resumes with the last `seq` it
//! saw and gets the rest from here; anything evicted before it resumes makes the resume a gap.

use crate::protocol::ServerMessage;
use std::collections::VecDeque;
use std::sync::Arc;

/// A buffered message and the bytes it counts for.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub seq: u64,
    pub msg: Arc<ServerMessage>,
    pub bytes: usize,
}

/// The resume buffer of one session.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Ring {
    /// Appends `msg` as `seq`; returns the bytes it counts for.
    pub fn push(&mut self, seq: u64, msg: Arc<ServerMessage>) -> usize {
        let bytes = msg.approx_bytes();
        self.entries.push_back(Entry { seq, msg, bytes });
        self.bytes += bytes;
        bytes
    }

    /// Removes the oldest entry; returns the bytes freed (0 when empty).
    pub fn pop_front(&mut self) -> usize {
        match self.entries.pop_front() {
            Some(e) => {
                self.bytes -= e.bytes;
                e.bytes
            }
            None => 0,
        }
    }

    /// Drops entries up to and including `seq` (what a resuming client already has); returns
    /// the bytes freed.
    pub fn ack(&mut self, seq: u64) -> usize {
        let mut freed = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            freed += self.pop_front();
        }
        freed
    }

    /// Evicts the oldest entries while the ring holds more than `max_len` entries or more than
    /// `max_bytes` bytes. The newest entry always stays, whatever its size. Returns (entries
    /// evicted, bytes freed).
    pub fn trim(&mut self, max_len: usize, max_bytes: usize) -> (usize, usize) {
        let (mut n, mut freed) = (0, 0);
        while self.entries.len() > 1
            && (self.entries.len() > max_len.max(1) || self.bytes > max_bytes)
        {
            freed += self.pop_front();
            n += 1;
        }
        (n, freed)
    }

    /// `seq` of the oldest entry kept, if any.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;
    use serde_json::json;

    fn offer(sdp_bytes: usize) -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Offer {
            offer: Payload::from(json!({"type": "offer", "sdp": "x".repeat(sdp_bytes)})),
            from: "a".into(),
        })
    }

    #[test]
    fn bytes_follow_pushes_and_pops() {
        let mut r = Ring::default();
        let a = r.push(1, offer(1000));
        let b = r.push(2, offer(2000));
        assert_eq!(r.bytes(), a + b);
        assert_eq!(r.pop_front(), a);
        assert_eq!(r.bytes(), b);
        assert_eq!(r.oldest_seq(), Some(2));
        assert_eq!(r.pop_front(), b);
        assert_eq!((r.bytes(), r.len(), r.pop_front()), (0, 0, 0));
    }

    #[test]
    fn trim_by_bytes_keeps_the_newest() {
        let mut r = Ring::default();
        for seq in 1..=10 {
            r.push(seq, offer(10_000));
        }
        let before = r.bytes();
        let (n, freed) = r.trim(256, 35_000);
        assert_eq!(n, 7);
        assert_eq!(r.len(), 3);
        assert_eq!(r.oldest_seq(), Some(8));
        assert_eq!(before - freed, r.bytes());
        assert!(r.bytes() <= 35_000);
        // One message larger than the bound stays: it is the newest.
        r.push(11, offer(100_000));
        r.trim(256, 35_000);
        assert_eq!((r.len(), r.oldest_seq()), (1, Some(11)));
    }

    #[test]
    fn trim_by_count() {
        let mut r = Ring::default();
        for seq in 1..=5 {
            r.push(seq, offer(10));
        }
        assert_eq!(r.trim(3, usize::MAX).0, 2);
        assert_eq!(r.oldest_seq(), Some(3));
    }

    #[test]
    fn ack_drops_what_the_client_has() {
        let mut r = Ring::default();
        for seq in 1..=5 {
            r.push(seq, offer(10));
        }
        let freed = r.ack(3);
        assert!(freed > 0);
        assert_eq!(r.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    }
}
