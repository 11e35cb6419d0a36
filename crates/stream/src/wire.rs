//! Wire formats the gateway parses from the network, sans-IO: gRPC length-prefixed messages
//! (shared by gRPC and gRPC-Web), gRPC-Web text (base64, possibly padded per segment),
//! `grpc-timeout` values and `grpc-message` percent-encoding. Every parser here is bounded and
//! returns an error instead of panicking; they have property tests and a fuzz target
//! (`fuzz/fuzz_targets/stream_wire.rs`).

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;

/// Flag bit of a gRPC-Web trailer frame.
pub const TRAILER_FLAG: u8 = 0x80;
/// Flag bit of a compressed message.
pub const COMPRESSED_FLAG: u8 = 0x01;

/// One length-prefixed message: `flags(1) | length(4, big endian) | payload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("stream ended inside a message")]
    Truncated,
    #[error("invalid base64 in grpc-web-text body")]
    BadBase64,
    #[error("invalid grpc-timeout")]
    BadTimeout,
    #[error("compressed message (grpc-encoding identity only)")]
    Compressed,
}

/// Incremental decoder: push bytes as they arrive, pop whole frames. Holds at most one
/// partial frame (bounded by `max_len`) plus the bytes of the current push.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
}

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_len,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Appends without copying when the buffer is empty (the common case for HTTP/2 frames
    /// that carry exactly whole messages).
    pub fn push_bytes(&mut self, data: Bytes) {
        if self.buf.is_empty() {
            self.buf = BytesMut::from(data);
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_len {
            return Err(WireError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if self.buf.len() < 5 + len {
            // Reserve only what the announced (bounded) message needs.
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Call at end of stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Truncated)
        }
    }

    /// Bytes held for an unfinished frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Whole length-prefixed messages, still framed for the wire: what the gateway forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Messages {
    /// One or more `flags | len | payload` frames, back to back.
    pub framed: Bytes,
    /// How many messages `framed` holds.
    pub count: u32,
    /// The sum of their payload lengths (without the 5-byte prefixes).
    pub payload_bytes: u64,
}

impl Messages {
    /// Frames one encoded message.
    pub fn one(payload: &[u8]) -> Self {
        Messages {
            framed: encode_frame(0, payload),
            count: 1,
            payload_bytes: payload.len() as u64,
        }
    }
}

/// Cuts a stream of HTTP/2 DATA frames at message boundaries without copying the messages
/// that lie whole inside one DATA frame: those are handed on as a slice of the frame. Only a
/// message that spans DATA frames is copied (into `carry`, bounded by `max_len`). Every message
/// is checked: uncompressed (flags 0) and at most `max_len` bytes.
#[derive(Debug)]
pub struct MessageSplitter {
    carry: BytesMut,
    max_len: usize,
}

impl MessageSplitter {
    pub fn new(max_len: usize) -> Self {
        MessageSplitter {
            carry: BytesMut::new(),
            max_len,
        }
    }

    fn header(&self, h: &[u8]) -> Result<usize, WireError> {
        if h[0] != 0 {
            return Err(WireError::Compressed);
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > self.max_len {
            return Err(WireError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        Ok(len)
    }

    /// Feeds one DATA frame. Returns up to two runs of whole messages, in order: the message
    /// completed from an earlier frame's tail, then the whole messages inside this frame.
    pub fn push(&mut self, mut data: Bytes) -> Result<[Option<Messages>; 2], WireError> {
        let mut out = [None, None];
        if !self.carry.is_empty() {
            if self.carry.len() < 5 {
                let take = (5 - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data.split_to(take));
                if self.carry.len() < 5 {
                    return Ok(out);
                }
            }
            let len = self.header(&self.carry[..5])?;
            let need = 5 + len - self.carry.len();
            let take = need.min(data.len());
            if self.carry.capacity() < 5 + len {
                self.carry.reserve(5 + len - self.carry.len());
            }
            self.carry.extend_from_slice(&data.split_to(take));
            if self.carry.len() < 5 + len {
                return Ok(out);
            }
            out[0] = Some(Messages {
                framed: std::mem::take(&mut self.carry).freeze(),
                count: 1,
                payload_bytes: len as u64,
            });
        }
        let (mut pos, mut count, mut payload_bytes) = (0usize, 0u32, 0u64);
        while data.len() - pos >= 5 {
            let len = self.header(&data[pos..pos + 5])?;
            if data.len() - pos - 5 < len {
                break;
            }
            pos += 5 + len;
            count += 1;
            payload_bytes += len as u64;
        }
        if count > 0 {
            out[1] = Some(Messages {
                framed: data.split_to(pos),
                count,
                payload_bytes,
            });
        }
        if !data.is_empty() {
            if data.len() >= 5 {
                // Check the partial message's header now, so an oversized one fails at once.
                let len = self.header(&data[..5])?;
                self.carry.reserve(5 + len);
            }
            self.carry.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Call at end of stream: an unfinished message is an error.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(WireError::Truncated)
        }
    }
}

/// Decodes every frame of a complete body.
pub fn decode_all(body: &[u8], max_len: usize) -> Result<Vec<Frame>, WireError> {
    let mut d = FrameDecoder::new(max_len);
    d.push(body);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame()? {
        out.push(f);
    }
    d.finish()?;
    Ok(out)
}

/// `flags | len | payload` as one buffer.
pub fn encode_frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// gRPC-Web text bodies are base64; a sender may pad each segment it flushes, so padding can
/// appear mid-stream. Decodes such a body (whitespace ignored).
pub fn decode_web_text(text: &[u8]) -> Result<Vec<u8>, WireError> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !clean.len().is_multiple_of(4) {
        return Err(WireError::BadBase64);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let mut start = 0;
    for q in (0..clean.len()).step_by(4) {
        let quantum = &clean[q..q + 4];
        if quantum.contains(&b'=') {
            engine
                .decode_vec(&clean[start..q + 4], &mut out)
                .map_err(|_| WireError::BadBase64)?;
            start = q + 4;
        }
    }
    if start < clean.len() {
        engine
            .decode_vec(&clean[start..], &mut out)
            .map_err(|_| WireError::BadBase64)?;
    }
    Ok(out)
}

/// Parses a `grpc-timeout` header: 1–8 ASCII digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Result<Duration, WireError> {
    let v = v.trim();
    if v.len() < 2 || v.len() > 9 || !v.is_ascii() {
        return Err(WireError::BadTimeout);
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(WireError::BadTimeout);
    }
    let n: u64 = digits.parse().map_err(|_| WireError::BadTimeout)?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(WireError::BadTimeout),
    })
}

/// Formats a duration as a `grpc-timeout` value (at most 8 digits, rounding up so the peer
/// never sees a shorter deadline than ours... by more than one unit).
pub fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        return format!("{}m", ms.max(1));
    }
    let s = d.as_secs();
    if s < 100_000_000 {
        return format!("{s}S");
    }
    format!("{}H", (s / 3600).min(99_999_999))
}

/// Percent-encodes a `grpc-message` (everything outside printable ASCII, and '%').
pub fn encode_grpc_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_grpc_message`]; invalid escapes are kept literally.
pub fn decode_grpc_message(m: &str) -> String {
    let b = m.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the fuzz target runs: every parser in this module on the same input.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_one(data: &[u8]) {
    let max = data.first().map(|b| *b as usize * 16).unwrap_or(0);
    let _ = decode_all(data, max);
    for step in [1usize, 7, 64] {
        let mut sp = MessageSplitter::new(max);
        for part in data.chunks(step) {
            if sp.push(Bytes::copy_from_slice(part)).is_err() {
                break;
            }
        }
    }
    if let Ok(text) = decode_web_text(data) {
        let _ = decode_all(&text, 1 << 20);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_grpc_timeout(s);
        let _ = decode_grpc_message(s);
        let _ = encode_grpc_message(s);
    }
    let _ = <switchboard_proto::inference::PredictRequest as prost::Message>::decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_grpc_timeout("10S").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_grpc_timeout("250m").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_grpc_timeout("1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_grpc_timeout("99999999n").unwrap(),
            Duration::from_nanos(99_999_999)
        );
        for bad in ["", "S", "10", "123456789S", "-1S", "1x", "1.5S", "ééS"] {
            assert!(parse_grpc_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_split_anywhere() {
        let mut wire = encode_frame(0, b"hello").to_vec();
        wire.extend_from_slice(&encode_frame(TRAILER_FLAG, b"grpc-status:0\r\n"));
        for cut in 0..wire.len() {
            let mut d = FrameDecoder::new(1024);
            d.push(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.push(&wire[cut..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.finish().unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(&got[0].payload[..], b"hello");
            assert_eq!(got[1].flags, TRAILER_FLAG);
        }
    }

    /// Feeds `wire` to a splitter cut at `cuts`; returns the messages' payloads and the runs.
    fn split_at(
        wire: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<(Vec<Vec<u8>>, usize), WireError> {
        let mut sp = MessageSplitter::new(max);
        let (mut msgs, mut runs) = (Vec::new(), 0);
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < wire.len()));
        bounds.sort_unstable();
        bounds.dedup();
        bounds.push(wire.len());
        for w in bounds.windows(2) {
            for m in sp
                .push(Bytes::copy_from_slice(&wire[w[0]..w[1]]))?
                .into_iter()
                .flatten()
            {
                runs += 1;
                let frames = decode_all(&m.framed, max).unwrap();
                assert_eq!(frames.len() as u32, m.count);
                assert_eq!(
                    frames.iter().map(|f| f.payload.len() as u64).sum::<u64>(),
                    m.payload_bytes
                );
                msgs.extend(frames.into_iter().map(|f| f.payload.to_vec()));
            }
        }
        sp.finish()?;
        Ok((msgs, runs))
    }

    #[test]
    fn splitter_forwards_whole_messages_and_carries_split_ones() {
        let mut wire = Vec::new();
        for m in [&b"alpha"[..], b"", b"gamma-delta"] {
            wire.extend_from_slice(&encode_frame(0, m));
        }
        let want = vec![b"alpha".to_vec(), vec![], b"gamma-delta".to_vec()];
        // One DATA frame: one zero-copy run.
        assert_eq!(split_at(&wire, &[], 64).unwrap(), (want.clone(), 1));
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let (got, _) = split_at(&wire, &[a, b], 64).unwrap();
                assert_eq!(got, want, "cut at {a},{b}");
            }
        }
        // The zero-copy run is a slice of the pushed frame.
        let frame = Bytes::from(wire.clone());
        let [carried, run] = MessageSplitter::new(64).push(frame.clone()).unwrap();
        assert!(carried.is_none());
        assert_eq!(run.unwrap().framed.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn splitter_rejects_compressed_oversized_and_truncated() {
        let big = encode_frame(0, &[7u8; 100]);
        assert!(matches!(
            split_at(&big, &[], 50),
            Err(WireError::TooLarge { .. })
        ));
        // An oversized header fails as soon as it is seen, before the body arrives.
        let mut sp = MessageSplitter::new(50);
        assert!(matches!(
            sp.push(big.slice(..8)),
            Err(WireError::TooLarge { .. })
        ));
        let mut sp = MessageSplitter::new(50);
        assert_eq!(sp.push(big.slice(..3)).unwrap(), [None, None]);
        assert!(matches!(
            sp.push(big.slice(3..9)),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(
            split_at(&encode_frame(COMPRESSED_FLAG, b"x"), &[], 50),
            Err(WireError::Compressed)
        );
        assert_eq!(split_at(&big[..50], &[], 500), Err(WireError::Truncated));
    }

    #[test]
    fn oversized_and_truncated() {
        let mut d = FrameDecoder::new(4);
        d.push(&encode_frame(0, b"hello"));
        assert!(matches!(d.next_frame(), Err(WireError::TooLarge { .. })));
        let mut d = FrameDecoder::new(64);
        d.push(&[0, 0, 0, 0, 9, 1]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.finish(), Err(WireError::Truncated));
        // A huge announced length does not allocate.
        let mut d = FrameDecoder::new(usize::MAX);
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn web_text_with_padding_mid_stream() {
        let e = base64::engine::general_purpose::STANDARD;
        let mut t = e.encode(b"ab");
        t.push_str(&e.encode(b"cdef"));
        t.push_str(&e.encode(b"g"));
        assert_eq!(decode_web_text(t.as_bytes()).unwrap(), b"abcdefg");
        assert!(decode_web_text(b"abc").is_err());
        assert!(decode_web_text(b"a=bc").is_err());
    }

    #[test]
    fn grpc_message_roundtrip() {
        let m = "bad 100% ünïcode\r\n";
        let e = encode_grpc_message(m);
        assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(decode_grpc_message(&e), m);
        assert_eq!(decode_grpc_message("%"), "%");
        assert_eq!(decode_grpc_message("%4"), "%4");
        assert_eq!(decode_grpc_message("%zz"), "%zz");
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..300) {
            let _ = decode_all(&data, max);
            let _ = decode_web_text(&data);
            if let Ok(s) = std::str::from_utf8(&data) {
                let _ = parse_grpc_timeout(s);
                let _ = decode_grpc_message(s);
            }
        }

        #[test]
        fn splitter_matches_decoder(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..8),
            cuts in proptest::collection::vec(0usize..500, 0..6),
        ) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend_from_slice(&encode_frame(0, m));
            }
            let (got, _) = split_at(&wire, &cuts, 64).unwrap();
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn splitter_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), step in 1usize..40, max in 0usize..200) {
            let mut sp = MessageSplitter::new(max);
            for part in data.chunks(step) {
                if sp.push(Bytes::copy_from_slice(part)).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn frames_roundtrip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..8)) {
            let mut wire = Vec::new();
            for m in &msgs { wire.extend_from_slice(&encode_frame(0, m)); }
            let got = decode_all(&wire, 100).unwrap();
            prop_assert_eq!(got.len(), msgs.len());
            for (f, m) in got.iter().zip(&msgs) { prop_assert_eq!(&f.payload[..], &m[..]); }
        }

        #[test]
        fn web_text_roundtrip(segs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let e = base64::engine::general_purpose::STANDARD;
            let text: String = segs.iter().map(|s| e.encode(s)).collect();
            let want: Vec<u8> = segs.concat();
            prop_assert_eq!(decode_web_text(text.as_bytes()).unwrap(), want);
        }

        #[test]
        fn timeout_roundtrip(ms in 1u64..10_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)).unwrap(), d);
        }
    }

    /// Replays the checked-in fuzz corpus on stable, so CI covers past findings.
    #[test]
    fn replay_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_wire");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz corpus directory") {
            let data = std::fs::read(e.expect("entry").path()).expect("read corpus file");
            crate::wire::fuzz_one(&data);
            n += 1;
        }
        assert!(n > 0, "empty corpus at {dir:?}");
    }
}
