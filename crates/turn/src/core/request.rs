//! What every request goes through before its method's handler: comprehension-required
//! attributes this server does not know (420), Binding (answered without authentication),
//! methods it does not serve (400), long-term authentication, and the check that a client
//! with an allocation uses that allocation's username (441). Also the reply helpers the
//! handlers share.

use super::auth::Key;
use super::authenticate::Authed;
use super::client::ClientId;
use super::relay::RelayAllocator;
use super::stun::{attr, method, Class, Message, MessageWriter};
use super::turn_core::{Output, TurnCore};
use std::time::Instant;

/// Comprehension-required attributes (types below 0x8000) this server understands; a request
/// with any other gets 420 (RFC 8489 §14).
const KNOWN_REQUIRED: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::CONNECTION_ID,
];

impl TurnCore {
    /// Handles a STUN request: the response goes to `out`, unless the method asks the driver
    /// to act first (RFC 6062 Connect).
    pub(super) fn request(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        relays: &mut dyn RelayAllocator,
        out: &mut Vec<u8>,
    ) -> Output {
        // Comprehension-required attributes not in KNOWN_REQUIRED → 420, listing the first
        // eight in UNKNOWN-ATTRIBUTES.
        let mut unknown = [0u8; 2 * 8];
        let mut n_unknown = 0;
        for t in m.attribute_types() {
            if t < 0x8000 && !KNOWN_REQUIRED.contains(&t) && n_unknown < 8 {
                unknown[2 * n_unknown..2 * n_unknown + 2].copy_from_slice(&t.to_be_bytes());
                n_unknown += 1;
            }
        }
        if n_unknown > 0 {
            self.metrics.malformed("unknown_attribute");
            MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &unknown[..2 * n_unknown])
                .fingerprint();
            return Output::ToClient;
        }
        if m.method == method::BINDING {
            let mut w = MessageWriter::new(out, method::BINDING, Class::Success, &m.transaction_id);
            w.address(attr::XOR_MAPPED_ADDRESS, client.remote, true);
            if let Some(s) = &self.cfg.software {
                w.attr(attr::SOFTWARE, s.as_bytes());
            }
            w.fingerprint();
            return Output::ToClient;
        }
        if !matches!(
            m.method,
            method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
                | method::CONNECT
                | method::CONNECTION_BIND
        ) {
            self.metrics.malformed("unknown_method");
            MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                .error(400, "Bad Request")
                .fingerprint();
            return Output::ToClient;
        }
        let (key, username) = match self.authenticate(now, client, m, out) {
            Authed::Ok(k, u) => (k, u),
            Authed::Refused => return Output::ToClient,
        };
        if let Some(a) = self.allocations.get(client) {
            if &*a.username != username {
                self.metrics.auth_failure("wrong_credentials");
                error(out, m, 441, "Wrong Credentials", Some(&key));
                return Output::ToClient;
            }
        }
        match m.method {
            method::ALLOCATE => self.allocate(now, client, m, username, key, relays, out),
            method::REFRESH => self.refresh(now, client, m, key, relays, out),
            method::CREATE_PERMISSION => self.create_permission(now, client, m, key, out),
            method::CONNECT => return self.connect(client, m, key, out),
            method::CONNECTION_BIND => return self.connection_bind(client, m, username, key, out),
            _ => self.channel_bind(now, client, m, key, out),
        }
        Output::ToClient
    }
}

/// Adds the integrity attribute the client used, then FINGERPRINT.
pub(super) fn seal(w: &mut MessageWriter<'_>, key: &Key) {
    if key.sha256_integrity {
        w.integrity_sha256(key.as_bytes());
    } else {
        w.integrity_sha1(key.as_bytes());
    }
    w.fingerprint();
}

/// Writes the success response to `m` for a method whose success carries no attributes
/// (CreatePermission, ChannelBind, ConnectionBind), sealed with `key`.
pub(super) fn success(out: &mut Vec<u8>, m: &Message<'_>, key: &Key) {
    let mut w = MessageWriter::new(out, m.method, Class::Success, &m.transaction_id);
    seal(&mut w, key);
}

/// Writes an error response to `m`: sealed with `key` once the request has authenticated,
/// with FINGERPRINT alone before.
pub(super) fn error(
    out: &mut Vec<u8>,
    m: &Message<'_>,
    code: u16,
    reason: &str,
    key: Option<&Key>,
) {
    out.clear();
    let mut w = MessageWriter::new(out, m.method, Class::Error, &m.transaction_id);
    w.error(code, reason);
    match key {
        Some(k) => seal(&mut w, k),
        None => {
            w.fingerprint();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::stun::{attr, method, Message};
    use crate::core::test_support::{harness, udp_client, unsigned};
    use crate::core::Output;

    /// Comprehension-required attributes the server does not know get 420 before anything
    /// else (authentication included), listing the first eight; unknown
    /// comprehension-optional ones (0x8000 and up) are ignored.
    #[test]
    fn unknown_required_attributes_get_420_listing_the_first_eight() {
        let mut h = harness(|_| {});
        let c = udp_client(1);
        let req = unsigned(method::ALLOCATE, |w| {
            w.attr(0x8030, b"optional");
            for t in 0x0030..0x003a_u16 {
                w.attr(t, &[]);
            }
        });
        assert_eq!(h.send(0, &c, &req), Output::ToClient);
        assert_eq!(h.error_code(), Some(420));
        let m = Message::decode(&h.out).unwrap();
        let listed: Vec<u8> = (0x0030..0x0038_u16).flat_map(u16::to_be_bytes).collect();
        assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&listed[..]));

        let req = unsigned(method::BINDING, |w| {
            w.attr(0x8030, b"optional");
        });
        assert_eq!(h.send(0, &c, &req), Output::ToClient);
        assert_eq!(h.error_code(), None, "Binding answered");
    }
}
