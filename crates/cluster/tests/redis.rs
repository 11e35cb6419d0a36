//! The cluster against a real `redis-server` on loopback: the registry sees nodes come and go
//! within the TTL, a `jti` is single-use across nodes, users and API keys made on one node work
//! on another, and the cluster re-forms by itself after Redis is killed and restarted.

mod support;

use std::time::{Duration, Instant};
use support::RedisServer;
use switchboard_auth::{ReplayError, ReplayGuard, Scopes};
use switchboard_cluster::{Cluster, ClusterConfig, SharedReplayGuard, SharedUsers};
use tokio_util::sync::CancellationToken;

fn config(redis: &RedisServer, id: &str) -> ClusterConfig {
    ClusterConfig {
        redis_url: Some(redis.url()),
        node_id: Some(id.into()),
        heartbeat: Duration::from_millis(200),
        node_ttl: Duration::from_millis(600),
        ..Default::default()
    }
}

fn node(redis: &RedisServer, id: &str) -> Cluster {
    let mut registry = prometheus_client::registry::Registry::default();
    Cluster::new(
        &config(redis, id),
        format!("http://{id}.test:7880"),
        &mut registry,
    )
    .unwrap()
}

/// Waits up to `limit` for `f` to hold.
async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn ids(c: &Cluster) -> Vec<String> {
    c.nodes()
        .await
        .map(|n| n.into_iter().map(|n| n.id).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn nodes_see_each_other_and_a_stopped_node_is_gone_within_the_ttl() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    a.spawn_heartbeat(|| (3, 1), stop_a.clone());
    let beat_b = b.spawn_heartbeat(|| (0, 0), stop_b.clone());
    assert!(eventually(Duration::from_secs(3), async || ids(&a).await == ["a", "b"]).await);
    let nodes = b.nodes().await.unwrap();
    assert_eq!(nodes[0].url, "http://a.test:7880");
    assert_eq!((nodes[0].load.sessions, nodes[0].load.rooms), (3, 1));

    // b stops beating without leaving (as if killed): gone within the TTL (600 ms).
    beat_b.abort();
    let t = Instant::now();
    assert!(eventually(Duration::from_secs(3), async || ids(&a).await == ["a"]).await);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "took {:?}",
        t.elapsed()
    );

    // A clean stop removes the entry at once.
    let c = node(&redis, "c");
    let stop_c = CancellationToken::new();
    let beat_c = c.spawn_heartbeat(|| (0, 0), stop_c.clone());
    assert!(eventually(Duration::from_secs(3), async || ids(&a).await == ["a", "c"]).await);
    stop_c.cancel();
    beat_c.await.unwrap();
    assert_eq!(ids(&a).await, ["a"]);
    stop_a.cancel();
    stop_b.cancel();
}

#[tokio::test]
async fn a_ticket_is_single_use_across_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let guard_a = SharedReplayGuard::new(a.shared.clone(), 1000);
    let guard_b = SharedReplayGuard::new(b.shared.clone(), 1000);
    let now = switchboard_auth::unix_now();
    guard_a
        .claim("switchboard", "jti-1", now + 300, now)
        .await
        .unwrap();
    assert_eq!(
        guard_b.claim("switchboard", "jti-1", now + 300, now).await,
        Err(ReplayError::Replayed)
    );
    assert_eq!(
        guard_a.claim("switchboard", "jti-1", now + 300, now).await,
        Err(ReplayError::Replayed)
    );
    // Another issuer's jti of the same text is another ticket.
    guard_b
        .claim("django", "jti-1", now + 300, now)
        .await
        .unwrap();
}

#[tokio::test]
async fn users_and_api_keys_made_on_one_node_work_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let (users_a, users_b) = (
        SharedUsers::new(a.shared.clone()),
        SharedUsers::new(b.shared.clone()),
    );
    let now = switchboard_auth::unix_now();
    let (id, secret) = users_a
        .create_api_key("django", Scopes::parse_list("webrtc,grpc").unwrap(), now)
        .await
        .unwrap();
    let key = users_b
        .verify_api_key(&id, &secret)
        .await
        .unwrap()
        .expect("key works on b");
    assert_eq!(key.name, "django");
    assert!(users_b
        .verify_api_key(&id, "wrong")
        .await
        .unwrap()
        .is_none());
    assert!(users_b.revoke_api_key(&id, now).await.unwrap());
    assert!(
        users_a
            .verify_api_key(&id, &secret)
            .await
            .unwrap()
            .is_none(),
        "revoked on b, refused on a"
    );
    assert!(!users_a.revoke_api_key(&id, now).await.unwrap());
    assert!(users_a.list_api_keys().await.unwrap()[0].revoked);

    let phc = switchboard_auth::store::new_password_hash("correct horse battery").unwrap();
    users_a
        .add_user(
            "alice",
            phc.clone(),
            Scopes::parse_list("webrtc").unwrap(),
            now,
        )
        .await
        .unwrap();
    assert!(users_b
        .add_user("alice", phc, Scopes::default(), now)
        .await
        .is_err());
    let (hash, scopes) = users_b.login_record("alice").await.unwrap().unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert_eq!(scopes.to_list(), "webrtc");
    let cookie = users_b.create_session("alice", 60).await.unwrap();
    assert_eq!(
        users_a
            .session_user(&cookie)
            .await
            .unwrap()
            .unwrap()
            .username,
        "alice"
    );
    // Removing the user on a ends its session everywhere.
    assert!(users_a.remove_user("alice").await.unwrap());
    assert!(users_b.session_user(&cookie).await.unwrap().is_none());
    assert!(users_b.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cluster_re_forms_after_redis_is_killed_and_restarted() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let stop = CancellationToken::new();
    a.spawn_heartbeat(|| (0, 0), stop.clone());
    b.spawn_heartbeat(|| (0, 0), stop.clone());
    assert!(eventually(Duration::from_secs(3), async || ids(&a).await == ["a", "b"]).await);
    assert_eq!(a.unreachable(), None);

    redis.kill();
    assert!(
        eventually(Duration::from_secs(5), async || a.unreachable().is_some()).await,
        "a notices Redis is gone"
    );
    // A ticket can still open a session on a node meanwhile (checked locally, counted).
    let guard = SharedReplayGuard::new(a.shared.clone(), 1000);
    let now = switchboard_auth::unix_now();
    guard
        .claim("switchboard", "during-outage", now + 60, now)
        .await
        .unwrap();
    assert_eq!(
        guard
            .claim("switchboard", "during-outage", now + 60, now)
            .await,
        Err(ReplayError::Replayed),
        "the local fallback still refuses a replay on the same node"
    );
    assert!(a.shared.metrics.replay_fallbacks.get() >= 1);

    // A new, empty Redis on the same port: the nodes register again with no restart.
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), async || ids(&b).await
            == ["a", "b"])
        .await,
        "the cluster re-formed"
    );
    assert!(eventually(Duration::from_secs(5), async || a.unreachable().is_none()).await);
    assert!(a.shared.metrics.redis_reconnects.get() >= 1);
    stop.cancel();
}
