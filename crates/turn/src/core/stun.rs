//! STUN message codec (RFC 8489) plus TURN's ChannelData framing (RFC 8656 §12.4).
//!
//! Parsing borrows the input and records attribute positions in a fixed array, so decoding a
//! packet never allocates. Writing appends to a caller-owned `Vec<u8>` that is reused across
//! packets. Every length is checked against the buffer; malformed input is an error value,
//! never a panic.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
/// Attributes recorded per message; more is refused as malformed (real clients send < 15).
pub const MAX_ATTRS: usize = 32;

/// STUN and TURN methods.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    /// RFC 6062 (TCP relays).
    pub const CONNECT: u16 = 0x00A;
    pub const CONNECTION_BIND: u16 = 0x00B;
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

/// Attribute types used here.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// Message class (the two C bits of the type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }
}

/// Builds the 14-bit message type from method and class (RFC 8489 §5, figure 3).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// Why a packet could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (first bits or magic cookie)")]
    NotStun,
    #[error("length field disagrees with the packet")]
    BadLength,
    #[error("attribute runs past the end of the message")]
    TruncatedAttribute,
    #[error("more than {MAX_ATTRS} attributes")]
    TooManyAttributes,
    #[error("attribute after FINGERPRINT")]
    AfterFingerprint,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("ChannelData shorter than its length field")]
    BadChannelData,
}

/// What a datagram or stream frame starts with (RFC 7983 demultiplexing on the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Other,
}

pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(b) if b >> 6 == 0 => PacketKind::Stun,
        Some(b) if b >> 6 == 1 => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// Bytes a complete frame at the start of `buf` occupies on a stream transport (TCP/TLS):
/// `Ok(None)` when more bytes are needed, `Err` when the stream cannot be STUN/TURN.
/// ChannelData on streams is padded to a multiple of four (RFC 8656 §12.5).
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    match classify(buf) {
        PacketKind::Stun => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if !len.is_multiple_of(4) {
                return Err(DecodeError::BadLength);
            }
            Ok(Some(HEADER_LEN + len).filter(|n| *n <= buf.len()))
        }
        PacketKind::ChannelData => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            let total = 4 + ((len + 3) & !3);
            Ok(Some(total).filter(|n| *n <= buf.len()))
        }
        PacketKind::Other if buf.is_empty() => Ok(None),
        PacketKind::Other => Err(DecodeError::NotStun),
    }
}

/// A decoded ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decodes one ChannelData message; trailing padding is allowed and ignored.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < 4 {
            return Err(DecodeError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if channel >> 14 != 1 {
            return Err(DecodeError::NotStun);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        let data = buf.get(4..4 + len).ok_or(DecodeError::BadChannelData)?;
        Ok(ChannelData { channel, data })
    }

    /// Appends a ChannelData message; `pad` rounds it to four bytes (stream transports).
    pub fn encode(channel: u16, data: &[u8], pad: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if pad {
            let p = (4 - data.len() % 4) % 4;
            out.extend_from_slice(&[0u8; 3][..p]);
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct AttrPos {
    typ: u16,
    /// Offset of the attribute header.
    at: u16,
    len: u16,
}

/// A decoded STUN message borrowing its buffer.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    pub method: u16,
    pub class: Class,
    pub transaction_id: [u8; 12],
    attrs: [AttrPos; MAX_ATTRS],
    n_attrs: usize,
    /// Attributes from this index on follow MESSAGE-INTEGRITY and are ignored by `get`.
    integrity_index: Option<usize>,
    integrity_sha256_index: Option<usize>,
    fingerprint_index: Option<usize>,
}

impl<'a> Message<'a> {
    /// Decodes a whole STUN message (the buffer must hold exactly one message). A FINGERPRINT,
    /// when present, is verified.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        let typ = u16::from_be_bytes([buf[0], buf[1]]);
        if typ >> 14 != 0 || u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(DecodeError::NotStun);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if !len.is_multiple_of(4) || HEADER_LEN + len != buf.len() {
            return Err(DecodeError::BadLength);
        }
        let (method, class) = split_type(typ);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&buf[8..20]);
        let mut m = Message {
            buf,
            method,
            class,
            transaction_id,
            attrs: [AttrPos::default(); MAX_ATTRS],
            n_attrs: 0,
            integrity_index: None,
            integrity_sha256_index: None,
            fingerprint_index: None,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if m.fingerprint_index.is_some() {
                return Err(DecodeError::AfterFingerprint);
            }
            if at + 4 > buf.len() {
                return Err(DecodeError::TruncatedAttribute);
            }
            let t = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let l = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
            let padded = (l + 3) & !3;
            if at + 4 + padded > buf.len() {
                return Err(DecodeError::TruncatedAttribute);
            }
            if m.n_attrs == MAX_ATTRS {
                return Err(DecodeError::TooManyAttributes);
            }
            let idx = m.n_attrs;
            m.attrs[idx] = AttrPos {
                typ: t,
                at: at as u16,
                len: l as u16,
            };
            m.n_attrs += 1;
            match t {
                attr::MESSAGE_INTEGRITY if m.integrity_index.is_none() => {
                    m.integrity_index = Some(idx)
                }
                attr::MESSAGE_INTEGRITY_SHA256 if m.integrity_sha256_index.is_none() => {
                    m.integrity_sha256_index = Some(idx)
                }
                attr::FINGERPRINT => m.fingerprint_index = Some(idx),
                _ => {}
            }
            at += 4 + padded;
        }
        if let Some(i) = m.fingerprint_index {
            let a = m.attrs[i];
            let v = m.value_of(a);
            if v.len() != 4 || !fingerprint_matches(buf, a.at as usize, v) {
                return Err(DecodeError::BadFingerprint);
            }
        }
        Ok(m)
    }

    fn value_of(&self, a: AttrPos) -> &'a [u8] {
        let s = a.at as usize + 4;
        &self.buf[s..s + a.len as usize]
    }

    /// The raw bytes of the message.
    pub fn raw(&self) -> &'a [u8] {
        self.buf
    }

    /// Index after which attributes are ignored (RFC 8489 §14.5: only MESSAGE-INTEGRITY-SHA256
    /// and FINGERPRINT may follow MESSAGE-INTEGRITY).
    fn visible(&self) -> usize {
        match (self.integrity_index, self.integrity_sha256_index) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.n_attrs,
        }
    }

    /// The first value of attribute `typ` (before any integrity attribute).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs[..self.visible()]
            .iter()
            .find(|a| a.typ == typ)
            .map(|a| self.value_of(*a))
    }

    /// The first value of attribute `typ` decoded as an XOR address (XOR-PEER-ADDRESS,
    /// XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS); `None` when absent or malformed.
    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        decode_address(self.get(typ)?, true, &self.transaction_id)
    }

    /// Every value of attribute `typ` (before any integrity attribute).
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs[..self.visible()]
            .iter()
            .filter(move |a| a.typ == typ)
            .map(|a| self.value_of(*a))
    }

    /// Attribute types present before integrity, for the unknown comprehension-required check.
    pub fn attribute_types(&self) -> impl Iterator<Item = u16> + '_ {
        self.attrs[..self.visible()].iter().map(|a| a.typ)
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_index.is_some()
    }

    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256_index.is_some()
    }

    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_index.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`.
    pub fn check_integrity_sha1(&self, key: &[u8]) -> bool {
        let Some(i) = self.integrity_index else {
            return false;
        };
        let a = self.attrs[i];
        let v = self.value_of(a);
        if v.len() != 20 {
            return false;
        }
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
        feed_prefix(&mut mac, self.buf, a.at as usize, 24);
        mac.verify_slice(v).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key` (truncation to 16..=32 bytes allowed).
    pub fn check_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(i) = self.integrity_sha256_index else {
            return false;
        };
        let a = self.attrs[i];
        let v = self.value_of(a);
        if v.len() < 16 || v.len() > 32 || !v.len().is_multiple_of(4) {
            return false;
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        feed_prefix(&mut mac, self.buf, a.at as usize, 4 + v.len());
        mac.verify_truncated_left(v).is_ok()
    }
}

/// Feeds `buf[..upto]` to `mac` with the header length rewritten as if the message ended
/// after an attribute of `attr_len` bytes (header included) starting at `upto`.
fn feed_prefix<M: Mac>(mac: &mut M, buf: &[u8], upto: usize, attr_len: usize) {
    let len = (upto + attr_len - HEADER_LEN) as u16;
    mac.update(&buf[0..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&buf[4..upto]);
}

fn fingerprint_matches(buf: &[u8], at: usize, v: &[u8]) -> bool {
    let len = (at + 8 - HEADER_LEN) as u16;
    let mut c = Crc32::new();
    c.update(&buf[0..2]);
    c.update(&len.to_be_bytes());
    c.update(&buf[4..at]);
    (c.finish() ^ 0x5354_554E).to_be_bytes() == v
}

/// Decodes an (XOR-)address attribute value.
pub fn decode_address(v: &[u8], xor: bool, tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if xor {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid);
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut b = [0u8; 4];
            b.copy_from_slice(&v[4..8]);
            if xor {
                for (x, k) in b.iter_mut().zip(key.iter()) {
                    *x ^= k;
                }
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b)), port))
        }
        (0x02, 20) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&v[4..20]);
            if xor {
                for (x, k) in b.iter_mut().zip(key.iter()) {
                    *x ^= k;
                }
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port))
        }
        _ => None,
    }
}

/// Writes one STUN message into a reused buffer.
pub struct MessageWriter<'b> {
    out: &'b mut Vec<u8>,
    start: usize,
    tid: [u8; 12],
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `out`.
    pub fn new(out: &'b mut Vec<u8>, method: u16, class: Class, tid: &[u8; 12]) -> Self {
        let start = out.len();
        out.extend_from_slice(&message_type(method, class).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(tid);
        MessageWriter {
            out,
            start,
            tid: *tid,
        }
    }

    fn set_len(&mut self) {
        let len = (self.out.len() - self.start - HEADER_LEN) as u16;
        self.out[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&typ.to_be_bytes());
        self.out
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.out.extend_from_slice(value);
        let p = (4 - value.len() % 4) % 4;
        self.out.extend_from_slice(&[0u8; 3][..p]);
        self
    }

    pub fn u32_attr(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// An address attribute, XOR-encoded when `xor` (all TURN addresses are).
    pub fn address(&mut self, typ: u16, addr: SocketAddr, xor: bool) -> &mut Self {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&self.tid);
        let port = if xor {
            addr.port() ^ (MAGIC_COOKIE >> 16) as u16
        } else {
            addr.port()
        };
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&port.to_be_bytes());
        let n = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 1;
                v[4..8].copy_from_slice(&ip.octets());
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 2;
                v[4..20].copy_from_slice(&ip.octets());
                20
            }
        };
        if xor {
            for (x, k) in v[4..n].iter_mut().zip(key.iter()) {
                *x ^= k;
            }
        }
        self.attr(typ, &v[..n])
    }

    /// ERROR-CODE with its reason phrase.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = [0u8; 4 + 128];
        v[2] = (code / 100) as u8;
        v[3] = (code % 100) as u8;
        let r = &reason.as_bytes()[..reason.len().min(128)];
        v[4..4 + r.len()].copy_from_slice(r);
        self.attr(attr::ERROR_CODE, &v[..4 + r.len()])
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far).
    pub fn integrity_sha1(&mut self, key: &[u8]) -> &mut Self {
        let upto = self.out.len();
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
        feed_prefix(&mut mac, &self.out[self.start..], upto - self.start, 24);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag);
        self.set_len();
        self
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let upto = self.out.len();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        feed_prefix(&mut mac, &self.out[self.start..], upto - self.start, 36);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &tag);
        self.set_len();
        self
    }

    /// Appends FINGERPRINT and finishes the message.
    pub fn fingerprint(&mut self) -> &mut Self {
        let at = self.out.len() - self.start;
        let msg = &self.out[self.start..];
        let len = (at + 8 - HEADER_LEN) as u16;
        let mut c = Crc32::new();
        c.update(&msg[0..2]);
        c.update(&len.to_be_bytes());
        c.update(&msg[4..at]);
        let v = (c.finish() ^ 0x5354_554E).to_be_bytes();
        self.attr(attr::FINGERPRINT, &v);
        self.set_len();
        self
    }

    /// Fixes the length field; call last (integrity/fingerprint call it themselves).
    pub fn finish(&mut self) {
        self.set_len();
    }
}

impl Drop for MessageWriter<'_> {
    fn drop(&mut self) {
        self.set_len();
    }
}

/// CRC-32 (ISO-HDLC, as FINGERPRINT uses), table driven.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for b in data {
            c = CRC_TABLE[((c ^ *b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }
    fn finish(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// CRC-32 of `data` (exposed for tests).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn type_roundtrip() {
        for m in [method::BINDING, method::ALLOCATE, method::CHANNEL_BIND] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
        assert_eq!(message_type(method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
    }

    #[test]
    fn write_then_read() {
        let tid = [7u8; 12];
        let mut out = Vec::new();
        let a: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        MessageWriter::new(&mut out, method::ALLOCATE, Class::Success, &tid)
            .address(attr::XOR_RELAYED_ADDRESS, a, true)
            .u32_attr(attr::LIFETIME, 600)
            .integrity_sha1(b"key")
            .fingerprint();
        let m = Message::decode(&out).unwrap();
        assert_eq!(m.method, method::ALLOCATE);
        assert_eq!(m.class, Class::Success);
        let v = m.get(attr::XOR_RELAYED_ADDRESS).unwrap();
        assert_eq!(decode_address(v, true, &tid), Some(a));
        assert!(m.check_integrity_sha1(b"key"));
        assert!(!m.check_integrity_sha1(b"other"));
        let mut bad = out.clone();
        bad[30] ^= 1;
        assert_eq!(
            Message::decode(&bad).unwrap_err(),
            DecodeError::BadFingerprint
        );
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(None));
        assert_eq!(
            stream_frame_len(&[0x40, 0x00, 0x00, 0x01, 9, 0, 0, 0]),
            Ok(Some(8))
        );
        assert!(stream_frame_len(&[0xFF, 0, 0, 0]).is_err());
    }
}
