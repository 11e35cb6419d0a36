//! The response body of one stream: pulls one chunk at a time from the backend only when
//! hyper can send it, coalesces what is already there, enforces the deadline, closes on
//! shutdown, reports progress and metrics, and ends with the status (HTTP/2 trailers, or a
//! gRPC-Web trailer frame).

use super::*;

/// The response body: pulls one chunk at a time from the backend.
pub struct ResponseBody {
    pub(super) inner: Arc<Inner>,
    pub(super) stream: ChunkStream,
    pub(super) mode: Mode,
    pub(super) deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) shutdown: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    pub(super) t0: Instant,
    pub(super) chunks: u64,
    pub(super) bytes: u64,
    pub(super) done: bool,
    pub(super) identity: String,
    pub(super) task_id: String,
    pub(super) backend: String,
    pub(super) upstream: bool,
    pub(super) throttle: ProgressThrottle,
    /// The end of the stream, seen while coalescing; sent on the next poll.
    pub(super) pending_end: Option<Status>,
    pub(super) yield_after_first: bool,
    pub(super) _admission: Admission,
}

/// A client reset this close to the stream's deadline counts as a deadline expiry: the client's
/// timer started before the request reached us, so it fires first by the request's transit time.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Messages already available are sent together up to this many bytes per DATA frame.
const COALESCE_BYTES: usize = 32 * 1024;

/// A run of messages at least this large is forwarded as it is, not coalesced (copied).
const PASS_THROUGH_BYTES: usize = 4 * 1024;

impl ResponseBody {
    fn progress(&self, state: ProgressState, code: Option<Code>) {
        let mut e = ProgressEvent::new(&self.task_id, self.chunks, self.bytes, state);
        e.code = code.map(|c| c.label());
        e.elapsed_ms = self.t0.elapsed().as_millis() as u64;
        let sink = self.inner.sink.read().clone();
        sink.progress(&self.identity, &e);
    }

    fn record_end(&mut self, code: Code) {
        self.done = true;
        // Release the backend now (an upstream stream is reset), not when hyper drops us.
        self.stream = Box::pin(futures::stream::empty());
        let m = &self.inner.metrics;
        m.finished.get_or_create(&[("code", code.label())]).inc();
        m.duration.observe(self.t0.elapsed().as_secs_f64());
        m.active.dec();
        let state = if code == Code::Ok {
            ProgressState::Done
        } else {
            ProgressState::Failed
        };
        self.progress(state, Some(code));
    }

    /// Envoy's `upstream_rq_timeout`: a proxied stream that ran out of time.
    fn count_timeout(&self) {
        if self.upstream {
            self.inner
                .metrics
                .upstream_timeouts
                .get_or_create(&BackendLabel {
                    backend: self.backend.clone(),
                })
                .inc();
        }
    }

    /// The final frame carrying `s`.
    fn finish(&mut self, s: Status) -> Frame<Bytes> {
        if s.code == Code::DeadlineExceeded {
            self.count_timeout();
        }
        self.record_end(s.code);
        match self.mode {
            Mode::Grpc => {
                let mut h = HeaderMap::new();
                status_headers(&mut h, &s);
                Frame::trailers(h)
            }
            Mode::WebBinary | Mode::WebText => {
                let mut block = format!("grpc-status:{}\r\n", s.code as u8);
                if !s.message.is_empty() {
                    block.push_str(&format!(
                        "grpc-message:{}\r\n",
                        wire::encode_grpc_message(&s.message)
                    ));
                }
                let f = wire::encode_frame(wire::TRAILER_FLAG, block.as_bytes());
                Frame::data(self.encode(f))
            }
        }
    }

    fn encode(&self, framed: Bytes) -> Bytes {
        if self.mode == Mode::WebText {
            Bytes::from(base64::engine::general_purpose::STANDARD.encode(&framed))
        } else {
            framed
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Ok(this.finish(Status::deadline_exceeded()))));
            }
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Ok(
                this.finish(Status::unavailable("server is shutting down"))
            )));
        }
        if this.yield_after_first {
            // Let the connection task flush the first chunk before we produce more: with a
            // backend that is always ready (a local worker, a fast upstream) hyper would
            // otherwise keep filling the stream window and the first chunk would wait.
            this.yield_after_first = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(end) = this.pending_end.take() {
            return Poll::Ready(Some(Ok(this.finish(end))));
        }
        let first = match this.stream.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(msgs))) => msgs,
            Poll::Ready(Some(Err(s))) => return Poll::Ready(Some(Ok(this.finish(s)))),
            Poll::Ready(None) => return Poll::Ready(Some(Ok(this.finish(Status::ok())))),
        };
        let is_first = this.chunks == 0;
        if is_first {
            this.yield_after_first = true;
            this.inner
                .metrics
                .ttfc
                .observe(this.t0.elapsed().as_secs_f64());
        }
        let (mut n, mut nbytes) = (u64::from(first.count), first.payload_bytes);
        // A run that is already large (an upstream DATA frame) goes out as it came, without a
        // copy. Small runs (a local worker's single messages) are coalesced with what is
        // already available — never waiting for more — into one DATA frame, so that one
        // downstream frame per message does not multiply HTTP/2 framing work. The very first
        // run goes alone, so time to first chunk does not wait on anything.
        let out = if is_first || first.framed.len() >= PASS_THROUGH_BYTES {
            first.framed
        } else {
            let mut out = BytesMut::with_capacity(COALESCE_BYTES);
            out.extend_from_slice(&first.framed);
            while out.len() < COALESCE_BYTES {
                match this.stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(more))) => {
                        out.extend_from_slice(&more.framed);
                        n += u64::from(more.count);
                        nbytes += more.payload_bytes;
                    }
                    Poll::Ready(Some(Err(s))) => {
                        this.pending_end = Some(s);
                        break;
                    }
                    Poll::Ready(None) => {
                        this.pending_end = Some(Status::ok());
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            out.freeze()
        };
        let m = &this.inner.metrics;
        this.chunks += n;
        this.bytes += nbytes;
        m.chunks.inc_by(n);
        m.bytes.inc_by(nbytes);
        if this.throttle.due(Instant::now()) {
            this.progress(ProgressState::Running, None);
        }
        let data = this.encode(out);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if !self.done {
            // The client cancelled or went away: dropping `stream` here cancels the backend
            // (for an upstream, hyper resets the HTTP/2 stream). A client that gives up at its
            // own deadline resets a moment before our timer (started later, on arrival) fires:
            // that is a deadline expiry, not a reset.
            let at_deadline = self
                .deadline
                .as_ref()
                .is_some_and(|d| tokio::time::Instant::now() + DEADLINE_SLACK >= d.deadline());
            if at_deadline {
                self.count_timeout();
                self.record_end(Code::DeadlineExceeded);
            } else {
                self.inner.metrics.resets.inc();
                self.record_end(Code::Cancelled);
            }
        }
    }
}
