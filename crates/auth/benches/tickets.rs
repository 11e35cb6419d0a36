//! Mint and verify throughput, HS256 and EdDSA. Run: `cargo bench -p switchboard-auth --bench tickets`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard_auth::{generate_ed25519_pem, AuthConfig, KeyConfig, KeyRing, MintRequest, Scope};

fn ring(kc: KeyConfig) -> KeyRing {
    KeyRing::from_config(&AuthConfig {
        keys: vec![kc],
        ..Default::default()
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let hs = ring(KeyConfig {
        kid: "k1".into(),
        secret: Some("0123456789abcdef0123456789abcdef".into()),
        ..Default::default()
    });
    let ed = ring(KeyConfig {
        kid: "ed1".into(),
        algorithm: "EdDSA".into(),
        private_key: Some(generate_ed25519_pem()),
        ..Default::default()
    });
    let req = MintRequest {
        identity: "user-12345".into(),
        room: Some("room-42".into()),
        scope: [Scope::Webrtc, Scope::Grpc].into_iter().collect(),
        ttl: None,
        region: None,
    };
    let now = switchboard_auth::unix_now();
    let mut g = c.benchmark_group("tickets");
    g.throughput(Throughput::Elements(1));
    for (name, r) in [("hs256", &hs), ("eddsa", &ed)] {
        let (tok, _) = r.mint(&req, now).unwrap();
        g.bench_function(format!("{name}/mint"), |b| {
            b.iter(|| r.mint(&req, now).unwrap())
        });
        g.bench_function(format!("{name}/verify"), |b| {
            b.iter(|| r.verify(&tok, now).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
