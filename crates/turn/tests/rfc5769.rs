//! RFC 5769 test vectors (the IETF's published STUN samples) through our codec: decoding,
//! MESSAGE-INTEGRITY with short-term and long-term keys, FINGERPRINT, XOR addresses, and a
//! byte-exact re-encode of the long-term request.

use switchboard_turn::core::auth::{derive_key, ALG_MD5};
use switchboard_turn::core::stun::{attr, decode_address, method, Class, Message, MessageWriter};

fn hex(s: &str) -> Vec<u8> {
    let d: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..d.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&d[i..i + 2], 16).unwrap())
        .collect()
}

const SHORT_TERM: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

const REQUEST: &str = "00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

const IPV4_RESPONSE: &str = "01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

const IPV6_RESPONSE: &str = "01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

const LONG_TERM: &str = "00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

#[test]
fn sample_request() {
    let b = hex(REQUEST);
    let m = Message::decode(&b).expect("decodes, fingerprint valid");
    assert_eq!((m.method, m.class), (method::BINDING, Class::Request));
    assert_eq!(m.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert_eq!(m.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.get(attr::PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
    assert!(m.has_fingerprint());
    assert!(m.check_integrity_sha1(SHORT_TERM));
    assert!(!m.check_integrity_sha1(b"VOkJxbRl1RmTxUk/WvJxBu"));
}

#[test]
fn sample_responses() {
    for (v, want) in [
        (IPV4_RESPONSE, "192.0.2.1:32853"),
        (
            IPV6_RESPONSE,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let b = hex(v);
        let m = Message::decode(&b).expect("decodes");
        assert_eq!((m.method, m.class), (method::BINDING, Class::Success));
        let a = decode_address(
            m.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
            true,
            &m.transaction_id,
        );
        assert_eq!(a, Some(want.parse().unwrap()));
        assert!(m.check_integrity_sha1(SHORT_TERM));
        // Our encoder produces the vector's XOR-MAPPED-ADDRESS bytes exactly (the vector's
        // SOFTWARE is padded with spaces, so the whole message cannot be byte-identical).
        let mut out = Vec::new();
        MessageWriter::new(&mut out, method::BINDING, Class::Success, &m.transaction_id)
            .address(attr::XOR_MAPPED_ADDRESS, want.parse().unwrap(), true)
            .integrity_sha1(SHORT_TERM)
            .fingerprint();
        let ours = Message::decode(&out).expect("our encoding decodes");
        assert_eq!(
            ours.get(attr::XOR_MAPPED_ADDRESS),
            m.get(attr::XOR_MAPPED_ADDRESS)
        );
        assert!(ours.check_integrity_sha1(SHORT_TERM));
    }
}

#[test]
fn long_term_request() {
    let b = hex(LONG_TERM);
    let m = Message::decode(&b).expect("decodes");
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    assert_eq!(m.get(attr::USERNAME), Some(user.as_bytes()));
    assert_eq!(
        m.get(attr::NONCE),
        Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
    );
    assert_eq!(m.get(attr::REALM), Some(&b"example.org"[..]));
    assert!(!m.has_fingerprint());
    // SASLprep("TheMatrIX") is itself.
    let key = derive_key(ALG_MD5, user, "example.org", "TheMatrIX");
    assert!(m.check_integrity_sha1(key.as_bytes()));
    let wrong = derive_key(ALG_MD5, user, "example.org", "thematrix");
    assert!(!m.check_integrity_sha1(wrong.as_bytes()));
    let mut out = Vec::new();
    MessageWriter::new(&mut out, method::BINDING, Class::Request, &m.transaction_id)
        .attr(attr::USERNAME, user.as_bytes())
        .attr(attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
        .attr(attr::REALM, b"example.org")
        .integrity_sha1(key.as_bytes());
    assert_eq!(out, b);
}
