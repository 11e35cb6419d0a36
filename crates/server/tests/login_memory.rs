//! Memory under a storm of failed logins, measured on the real binary: password checks are
//! bounded by `[auth] login_hash_concurrency`, each on a reused 19 MiB buffer, so resident
//! memory grows by at most that many buffers however many logins arrive at once.
#![cfg(target_os = "linux")]

mod common;

use common::child::{add_user, ServerProcess};
use common::{client_from, login_status};
use std::process::Stdio;

/// Argon2id's default memory cost: 19 MiB per running check.
const HASH_MIB: u64 = 19;
/// Checks that may run at once in this test.
const PERMITS: u64 = 2;
/// Growth allowed beyond the hashing buffers. Measured at ≈ 2-3 MiB on the debug binary: 64
/// connections' buffers, blocking threads' stacks and malloc arenas, SQLite's page cache, and
/// the login path's code paged in. 32 MiB leaves room for a different allocator state while
/// staying far below one more 19 MiB buffer per concurrent request (64 × 19 MiB ≈ 1.2 GiB
/// without the bound).
const MARGIN_MIB: u64 = 32;

/// The server's config on top of the child-process defaults: users in `db`, at most
/// [`PERMITS`] password checks at once, and rate limits out of the way.
fn config(db: &std::path::Path) -> String {
    format!(
        r#"[http]
web_ui = false
[auth]
database = "{}"
login_hash_concurrency = {PERMITS}
login_hash_queue = 4
login_hash_wait = "100ms"
# Out of the way: this test is about the hashing bound, not the rate limits.
login_attempts_per_second = 100000
login_attempts_per_ip_per_minute = 100000
login_failures_per_ip_user_per_minute = 100000
"#,
        db.display()
    )
}

/// `VmRSS` and `VmHWM` (peak) of the server, in KiB.
fn memory_kib(server: &ServerProcess) -> (u64, u64) {
    (server.status_kib("VmRSS"), server.status_kib("VmHWM"))
}

/// Logins from `clients` clients at once, client `i` from 127.0.`net`.(2 + `i`), each sending
/// `each` one after another with the username and password `creds(i, j)` gives; every status.
async fn login_storm(
    base: &str,
    net: u8,
    clients: u8,
    each: u8,
    creds: fn(u8, u8) -> (String, String),
) -> Vec<u16> {
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let base = base.to_string();
            tokio::spawn(async move {
                let c = client_from([127, 0, net, 2 + i]);
                let mut statuses = Vec::new();
                for j in 0..each {
                    let (user, pw) = creds(i, j);
                    statuses.push(login_status(&c, &base, &user, &pw).await);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    statuses
}

/// Fails unless `now` is at most `budget` KiB above `before`.
fn assert_within_budget(what: &str, before: u64, now: u64, budget: u64) {
    assert!(
        now.saturating_sub(before) <= budget,
        "{what} {} KiB above the start, budget {budget} KiB",
        now - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failed_logins_keep_memory_bounded() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("users.db");
    add_user(&db, "alice", "correct horse battery");
    let server = ServerProcess::start_with(&config(&db), |cmd| {
        cmd.stderr(Stdio::null());
    });
    let base = format!("http://{}", server.http);

    // One request first, so the baseline includes the HTTP path paged in and warm.
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (before, _) = memory_kib(&server);

    // 64 clients, each from its own loopback address, 4 failed logins each: a wrong password
    // for alice or an unknown user, alternately. All at once.
    let statuses = login_storm(&base, 1, 64, 4, |i, j| {
        if (i + j) % 2 == 0 {
            ("alice".to_string(), format!("guess {i} {j}"))
        } else {
            (format!("ghost{i}"), "whatever-pw".to_string())
        }
    })
    .await;
    let (after, peak) = memory_kib(&server);

    let count = |code| statuses.iter().filter(|&&s| s == code).count();
    let (checked, busy) = (count(401), count(503));
    eprintln!(
        "RSS before {before} KiB, peak {peak} KiB (+{} KiB), after {after} KiB (+{} KiB); \
         {checked} checked (401), {busy} refused busy (503)",
        peak.saturating_sub(before),
        after.saturating_sub(before),
    );
    assert_eq!(checked + busy, statuses.len(), "{statuses:?}");
    assert!(checked >= 1, "some passwords were checked");
    assert!(busy >= 1, "the excess was refused at once, not queued");

    let budget = (PERMITS * HASH_MIB + MARGIN_MIB) * 1024;
    assert_within_budget("peak", before, peak, budget);
    // The hashing buffers are kept for reuse, so memory after the storm is the same bound.
    assert_within_budget("after the storm", before, after, budget);

    // Then a slower stream, 4 at once for 48 logins: more checks run, on the same buffers, so
    // memory stays where the storm left it (before the pool, this phase kept growing).
    let statuses = login_storm(&base, 3, 4, 12, |i, j| {
        (format!("ghost{i}-{j}"), "whatever-pw".to_string())
    })
    .await;
    let (settled, peak) = memory_kib(&server);
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    eprintln!("after 48 more at 4-way ({checked} checked): RSS {settled} KiB, peak {peak} KiB");
    assert!(checked >= 2, "{statuses:?}");
    assert_within_budget("peak", before, peak, budget);
    assert_within_budget("after the second phase", before, settled, budget);

    // The user added by the CLI still logs in, from a fresh address.
    let c = client_from([127, 0, 2, 1]);
    assert_eq!(
        login_status(&c, &base, "alice", "correct horse battery").await,
        200
    );
}
