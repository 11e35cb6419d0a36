//! The embedded TURN server as `switchboard::start` wires it: real sockets on loopback.

mod common;
use common::*;
use std::time::Duration;
use switchboard_auth::{unix_now, KeyRing, MintRequest, Scope};
use switchboard_turn::core::stun::{attr, decode_address, method, Class, Message, MessageWriter};

fn turn_config() -> switchboard::config::Config {
    let mut c = test_config();
    c.turn.enabled = true;
    c
}

#[tokio::test]
async fn turn_starts_binds_and_is_advertised() {
    let s = start(turn_config()).await;
    let udp = s.state.bound.turn_udp.expect("turn_udp bound");
    let tcp = s.state.bound.turn_tcp.expect("turn_tcp bound");
    assert_ne!(udp.port(), 0);
    let line = s.listening_line();
    assert!(line.contains(&format!("turn_udp={udp}")), "{line}");
    assert!(line.contains(&format!("turn_tcp={tcp}")), "{line}");

    // /v1/ice-servers names the ports actually bound.
    let ring = KeyRing::from_config(&s.state.config.auth).unwrap();
    let req = MintRequest::new("alice", [Scope::Webrtc]);
    let (token, _) = ring.mint(&req, unix_now()).unwrap();
    let doc: serde_json::Value = client()
        .get(format!("{}/v1/ice-servers", base(&s)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = doc.to_string();
    assert!(
        text.contains(&format!("turn:127.0.0.1:{}?transport=udp", udp.port())),
        "{text}"
    );
    assert!(
        text.contains(&format!("turn:127.0.0.1:{}?transport=tcp", tcp.port())),
        "{text}"
    );

    // A STUN Binding over real UDP answers with our own address.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut req = Vec::new();
    MessageWriter::new(&mut req, method::BINDING, Class::Request, &[3; 12]).fingerprint();
    sock.send_to(&req, udp).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("binding response")
        .unwrap();
    let m = Message::decode(&buf[..n]).unwrap();
    assert_eq!(m.class, Class::Success);
    let mapped = decode_address(
        m.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
        true,
        &m.transaction_id,
    );
    assert_eq!(mapped, Some(sock.local_addr().unwrap()));

    let metrics = scrape(s.http_addr).await;
    assert!(
        metrics.contains("switchboard_turn_allocations "),
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn turn_without_credentials_is_a_clear_startup_error() {
    let mut c = turn_config();
    c.turn.static_auth_secret = String::new();
    let err = match switchboard::start(c).await {
        Ok(_) => panic!("started without TURN credentials"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("static_auth_secret"), "{err}");
}
