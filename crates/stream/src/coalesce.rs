//! Write coalescing for HTTP/2 connections (decision 0033).
//!
//! h2 writes every DATA frame of 256 bytes or more with its own `writev` and then flushes, so a
//! connection carrying many streams pays one syscall (on loopback: one TCP transmit, one
//! receive path and one wakeup of the reader) per frame. [`CoalescingIo`] sits between hyper
//! and the socket: writes are copied into a buffer, and a flush of a small buffer is deferred
//! once. The connection task is woken right away, so every frame that is ready by the time it
//! runs again (other streams' tasks run first) leaves in the same `write`. A flush with nothing
//! new since the deferral, a buffer of [`FLUSH_AT`] bytes, [`MAX_DEFERS`] deferrals in a row
//! and shutdown all write for real. So a quiet connection writes after one turn of its thread,
//! and one that keeps adding small frames after at most [`MAX_DEFERS`] turns.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pending bytes at which a write or flush goes to the socket without waiting.
pub const FLUSH_AT: usize = 64 * 1024;

/// Flushes deferred in a row (each because bytes were added since the last one) before one
/// writes anyway: bounds the delay for a producer that adds a small frame every turn.
pub const MAX_DEFERS: u8 = 16;

/// An I/O object whose writes are coalesced (see the module docs). Reads pass through.
pub struct CoalescingIo<T> {
    inner: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    pos: usize,
    /// `buf.len()` when a flush was last deferred.
    deferred: Option<usize>,
    /// Flushes deferred since the buffer was last written.
    defers: u8,
    /// Read-ahead (see [`CoalescingIo::with_read_ahead`]): bytes read from `inner` and not yet
    /// handed out start at `rpos`.
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    read_ahead: usize,
    passthrough: bool,
}

impl<T> CoalescingIo<T> {
    pub fn new(inner: T) -> Self {
        CoalescingIo {
            inner,
            buf: Vec::new(),
            pos: 0,
            deferred: None,
            defers: 0,
            rbuf: Box::default(),
            rpos: 0,
            rend: 0,
            read_ahead: 0,
            passthrough: false,
        }
    }

    /// Neither coalesces nor reads ahead: every call goes straight to `inner`.
    pub fn passthrough(inner: T) -> Self {
        CoalescingIo {
            passthrough: true,
            ..Self::new(inner)
        }
    }

    /// Also reads ahead: a read asking for less than `size` bytes reads up to `size` from the
    /// socket into a buffer of this object and hands it out from there. One `recv` then takes
    /// several frames that a peer wrote in a burst, at the price of one copy.
    pub fn with_read_ahead(inner: T, size: usize) -> Self {
        CoalescingIo {
            read_ahead: size,
            ..Self::new(inner)
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
    /// Writes everything buffered to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.buf.clear();
        self.pos = 0;
        self.deferred = None;
        self.defers = 0;
        // A burst can leave a large buffer behind; keep at most one flush's worth.
        if self.buf.capacity() > 2 * FLUSH_AT {
            self.buf.shrink_to(FLUSH_AT);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.rpos == me.rend {
            if buf.remaining() >= me.read_ahead {
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            if me.rbuf.is_empty() {
                me.rbuf = vec![0; me.read_ahead].into_boxed_slice();
            }
            let mut ahead = ReadBuf::new(&mut me.rbuf);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut ahead))?;
            me.rend = ahead.filled().len();
            me.rpos = 0;
        }
        let n = buf.remaining().min(me.rend - me.rpos);
        buf.put_slice(&me.rbuf[me.rpos..me.rpos + n]);
        me.rpos += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.passthrough {
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if me.pending() > 0 && me.pending() + total > FLUSH_AT {
            ready!(me.poll_drain(cx))?;
        }
        if me.pending() == 0 && total >= FLUSH_AT {
            // Large enough on its own: no copy.
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        me.buf.reserve(total);
        for b in bufs {
            me.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        !self.passthrough || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pending() == 0 {
            me.deferred = None;
            return Pin::new(&mut me.inner).poll_flush(cx);
        }
        if me.pending() < FLUSH_AT && me.deferred != Some(me.buf.len()) && me.defers < MAX_DEFERS {
            // Something was written since the last deferral: give the other ready tasks of
            // this thread one turn to add to it, then flush when polled again.
            me.deferred = Some(me.buf.len());
            me.defers += 1;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

impl<T: hyper_util::client::legacy::connect::Connection>
    hyper_util::client::legacy::connect::Connection for CoalescingIo<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records every write to the "socket"; can refuse writes (`blocked`).
    #[derive(Clone, Default)]
    struct Sink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        blocked: Arc<Mutex<bool>>,
        flushes: Arc<Mutex<usize>>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if *self.blocked.lock().unwrap() {
                return Poll::Pending;
            }
            // A short write, like a socket with little room.
            let n = data.len().min(40_000);
            self.writes.lock().unwrap().push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(futures::task::noop_waker_ref())
    }

    fn write(io: &mut CoalescingIo<Sink>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write_vectored(&mut cx(), &[IoSlice::new(data)])
    }

    fn flush(io: &mut CoalescingIo<Sink>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(&mut cx())
    }

    fn written(s: &Sink) -> Vec<u8> {
        s.writes.lock().unwrap().concat()
    }

    #[test]
    fn frames_written_before_the_second_flush_leave_in_one_write() {
        let sink = Sink::default();
        let mut io = CoalescingIo::new(sink.clone());
        assert!(matches!(write(&mut io, b"frame-1 "), Poll::Ready(Ok(8))));
        // First flush is deferred: nothing reaches the socket yet.
        assert!(flush(&mut io).is_ready());
        assert!(sink.writes.lock().unwrap().is_empty());
        assert!(matches!(write(&mut io, b"frame-2 "), Poll::Ready(Ok(8))));
        // New bytes since the deferral: deferred once more.
        assert!(flush(&mut io).is_ready());
        assert!(sink.writes.lock().unwrap().is_empty());
        // Nothing new: written, as one write, then the socket is flushed.
        assert!(flush(&mut io).is_ready());
        assert_eq!(sink.writes.lock().unwrap().len(), 1);
        assert_eq!(written(&sink), b"frame-1 frame-2 ");
        assert_eq!(*sink.flushes.lock().unwrap(), 1);
        // Empty: a flush goes straight to the socket.
        assert!(flush(&mut io).is_ready());
        assert_eq!(*sink.flushes.lock().unwrap(), 2);
        assert_eq!(sink.writes.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_producer_adding_a_frame_every_turn_is_flushed_after_max_defers() {
        let sink = Sink::default();
        let mut io = CoalescingIo::new(sink.clone());
        for turn in 0..MAX_DEFERS {
            assert!(write(&mut io, b"tick").is_ready());
            assert!(flush(&mut io).is_ready());
            assert!(
                sink.writes.lock().unwrap().is_empty(),
                "deferred at turn {turn}"
            );
        }
        assert!(write(&mut io, b"tick").is_ready());
        assert!(flush(&mut io).is_ready());
        assert_eq!(written(&sink), b"tick".repeat(MAX_DEFERS as usize + 1));
        // The count starts over after a real write.
        assert!(write(&mut io, b"next").is_ready());
        assert!(flush(&mut io).is_ready());
        assert_eq!(sink.writes.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_full_buffer_is_written_before_more_is_accepted_and_order_is_kept() {
        let sink = Sink::default();
        let mut io = CoalescingIo::new(sink.clone());
        let mut expect = Vec::new();
        for i in 0..40u8 {
            let frame = vec![i; 3000];
            expect.extend_from_slice(&frame);
            assert!(matches!(write(&mut io, &frame), Poll::Ready(Ok(3000))));
            assert!(io.pending() <= FLUSH_AT);
        }
        // 120,000 bytes through a 64 KiB buffer: at least one write happened without a flush.
        assert!(!sink.writes.lock().unwrap().is_empty());
        assert!(flush(&mut io).is_ready());
        assert!(flush(&mut io).is_ready());
        assert_eq!(io.pending(), 0);
        assert_eq!(written(&sink), expect);
    }

    #[test]
    fn large_writes_bypass_the_buffer() {
        let sink = Sink::default();
        let mut io = CoalescingIo::new(sink.clone());
        let big = vec![7u8; FLUSH_AT + 10];
        // The sink takes at most 40,000 bytes per write: a short write is reported as such.
        assert!(matches!(write(&mut io, &big), Poll::Ready(Ok(40_000))));
        assert_eq!(io.pending(), 0);
    }

    #[test]
    fn a_blocked_socket_holds_writes_back_instead_of_growing_the_buffer() {
        let sink = Sink::default();
        let mut io = CoalescingIo::new(sink.clone());
        assert!(write(&mut io, &vec![1u8; FLUSH_AT - 100]).is_ready());
        *sink.blocked.lock().unwrap() = true;
        assert!(write(&mut io, &[2u8; 1000]).is_pending());
        assert!(flush(&mut io).is_ready(), "deferred once");
        assert!(flush(&mut io).is_pending(), "then waits for the socket");
        assert!(io.pending() <= FLUSH_AT);
        *sink.blocked.lock().unwrap() = false;
        assert!(write(&mut io, &[2u8; 1000]).is_ready());
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx()).is_ready());
        let all = written(&sink);
        assert_eq!(all.len(), FLUSH_AT - 100 + 1000);
        assert!(all.ends_with(&[2u8; 1000]));
    }

    /// Hands out at most `chunk` bytes per read and counts reads.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        reads: usize,
    }

    impl Source {
        /// A reader over `data` that hands out at most `chunk` bytes a read.
        fn new(data: Vec<u8>, chunk: usize) -> Source {
            Source {
                data,
                pos: 0,
                chunk,
                reads: 0,
            }
        }
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = buf
                .remaining()
                .min(self.chunk)
                .min(self.data.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn read_all(io: &mut CoalescingIo<Source>, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut space = vec![0u8; piece];
            let mut rb = ReadBuf::new(&mut space);
            assert!(Pin::new(&mut *io).poll_read(&mut cx(), &mut rb).is_ready());
            if rb.filled().is_empty() {
                return out;
            }
            out.extend_from_slice(rb.filled());
        }
    }

    #[test]
    fn read_ahead_serves_small_reads_from_one_large_read_in_order() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let src = Source::new(data.clone(), usize::MAX);
        let mut io = CoalescingIo::with_read_ahead(src, 64 * 1024);
        assert_eq!(read_all(&mut io, 9_000), data);
        // 200,000 bytes in 64 KiB reads (plus the final empty one), not 23 reads of 9,000.
        assert_eq!(io.get_ref().reads, 5);
    }

    #[test]
    fn without_read_ahead_reads_pass_through() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
        let src = Source::new(data.clone(), 4_000);
        let mut io = CoalescingIo::new(src);
        assert_eq!(read_all(&mut io, 9_000), data);
        assert_eq!(io.get_ref().reads, 14);
    }
}
