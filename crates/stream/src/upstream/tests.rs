//! Upstream pools: endpoint choice, health and the circuit breaker.

use super::*;

#[test]
fn breaker_opens_half_opens_and_closes() {
    let t0 = Instant::now();
    let open_for = Duration::from_secs(10);
    let mut b = Breaker::new();
    assert!(!b.on_failure(t0, 3, open_for));
    assert!(!b.on_failure(t0, 3, open_for));
    assert!(b.allow(t0));
    assert!(b.on_failure(t0, 3, open_for));
    assert!(!b.allow(t0 + Duration::from_secs(9)));
    // After the open period exactly one trial goes through.
    assert!(b.allow(t0 + Duration::from_secs(10)));
    assert!(!b.allow(t0 + Duration::from_secs(10)));
    // The trial fails: open again.
    assert!(b.on_failure(t0 + Duration::from_secs(10), 3, open_for));
    assert!(!b.allow(t0 + Duration::from_secs(11)));
    assert!(b.allow(t0 + Duration::from_secs(21)));
    b.on_success();
    assert_eq!(b, Breaker::Closed { failures: 0 });
    // Threshold 0 disables the breaker.
    let mut off = Breaker::new();
    for _ in 0..100 {
        assert!(!off.on_failure(t0, 0, open_for));
    }
    assert!(off.allow(t0));
}

#[test]
fn least_loaded_prefers_idle_endpoints_and_round_robin_rotates() {
    let cfg = UpstreamConfig {
        name: "ml".into(),
        url: "http://127.0.0.1:1".into(),
        urls: vec!["http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()],
        lb_policy: LbPolicy::LeastLoaded,
        ..Default::default()
    };
    let p = UpstreamPool::new(&cfg, 1024, StreamMetrics::unregistered()).unwrap();
    p.endpoints[0].active.store(5, Ordering::Relaxed);
    p.endpoints[1].active.store(1, Ordering::Relaxed);
    p.endpoints[2].active.store(3, Ordering::Relaxed);
    for _ in 0..3 {
        let o: Vec<_> = p.order().iter().map(|e| e.url.clone()).collect();
        assert_eq!(
            o,
            [
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
                "http://127.0.0.1:1"
            ]
        );
    }
    let rr = UpstreamPool::new(
        &UpstreamConfig {
            lb_policy: LbPolicy::RoundRobin,
            ..cfg.clone()
        },
        1024,
        StreamMetrics::unregistered(),
    )
    .unwrap();
    let firsts: Vec<_> = (0..3).map(|_| rr.order()[0].url.clone()).collect();
    assert_eq!(
        firsts,
        [
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3"
        ]
    );
    assert!(UpstreamPool::new(
        &UpstreamConfig {
            url: "ftp://x".into(),
            urls: vec![],
            ..cfg
        },
        1,
        StreamMetrics::unregistered()
    )
    .is_err());
}

#[test]
fn grpc_status_headers() {
    let mut h = HeaderMap::new();
    assert!(grpc_status_of(&h).is_none());
    h.insert("grpc-status", "14".parse().unwrap());
    h.insert("grpc-message", "gone%20away".parse().unwrap());
    let s = grpc_status_of(&h).unwrap();
    assert_eq!(
        (s.code, s.message.as_str()),
        (Code::Unavailable, "gone away")
    );
    h.insert("grpc-status", "x".parse().unwrap());
    assert!(grpc_status_of(&h).is_none());
}
