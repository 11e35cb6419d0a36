//! Memory under a storm of failed logins, measured on the real binary: password checks are
//! bounded by `[auth] login_hash_concurrency`, each on a reused 19 MiB buffer, so resident
//! memory grows by at most that many buffers however many logins arrive at once.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

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

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("switchboard.toml");
    std::fs::write(
        &p,
        format!(
            r#"[http]
bind = "127.0.0.1:0"
shutdown_grace = "1s"
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
[[auth.keys]]
kid = "k1"
secret = "login-memory-test-secret-0123456789abcdef"
[turn]
enabled = false
[sfu]
mode = "mesh"
"#,
            dir.join("users.db").display()
        ),
    )
    .unwrap();
    p
}

fn add_user(cfg: &std::path::Path, name: &str, password: &str) {
    let mut child = Command::new(BIN)
        .args(["user", "add", "-c", cfg.to_str().unwrap(), name])
        .env_remove("SWITCHBOARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve(cfg: &std::path::Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "-c", cfg.to_str().unwrap()])
        .env_remove("SWITCHBOARD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("switchboard listening http=")
                .map(|rest| rest.split(' ').next().unwrap().to_string())
        })
        .expect("listening line");
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn login(c: &reqwest::Client, addr: &str, user: &str, password: &str) -> u16 {
    c.post(format!("http://{addr}/v1/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failed_logins_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    add_user(&cfg, "alice", "correct horse battery");
    let server = serve(&cfg);
    let pid = server.child.id();
    let addr = server.addr.clone();

    // One request first, so the baseline includes the HTTP path paged in and warm.
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (before, _) = memory_kib(pid);

    // 64 clients, each from its own loopback address, 4 failed logins each: a wrong password
    // for alice or an unknown user, alternately. All at once.
    let workers: Vec<_> = (0..64u8)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .local_address(IpAddr::from([127, 0, 1, 2 + i]))
                    .build()
                    .unwrap();
                let mut statuses = Vec::new();
                for j in 0..4 {
                    let (user, pw) = if (i + j) % 2 == 0 {
                        ("alice".to_string(), format!("guess {i} {j}"))
                    } else {
                        (format!("ghost{i}"), "whatever-pw".to_string())
                    };
                    statuses.push(login(&c, &addr, &user, &pw).await);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let (after, peak) = memory_kib(pid);

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
    assert!(
        peak.saturating_sub(before) <= budget,
        "peak grew {} KiB, budget {budget} KiB",
        peak - before
    );
    // The hashing buffers are kept for reuse, so memory after the storm is the same bound.
    assert!(
        after.saturating_sub(before) <= budget,
        "after the storm {} KiB above the start, budget {budget} KiB",
        after - before
    );

    // Then a slower stream, 4 at once for 48 logins: more checks run, on the same buffers, so
    // memory stays where the storm left it (before the pool, this phase kept growing).
    let workers: Vec<_> = (0..4u8)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .local_address(IpAddr::from([127, 0, 3, 2 + i]))
                    .build()
                    .unwrap();
                let mut statuses = Vec::new();
                for j in 0..12 {
                    let user = format!("ghost{i}-{j}");
                    statuses.push(login(&c, &addr, &user, "whatever-pw").await);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let (settled, peak) = memory_kib(pid);
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    eprintln!("after 48 more at 4-way ({checked} checked): RSS {settled} KiB, peak {peak} KiB");
    assert!(checked >= 2, "{statuses:?}");
    assert!(
        peak.saturating_sub(before) <= budget,
        "peak grew {} KiB, budget {budget} KiB",
        peak - before
    );
    assert!(
        settled.saturating_sub(before) <= budget,
        "after the second phase {} KiB above the start, budget {budget} KiB",
        settled - before
    );

    // The user added by the CLI still logs in, from a fresh address.
    let c = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 2, 1]))
        .build()
        .unwrap();
    assert_eq!(
        login(&c, &addr, "alice", "correct horse battery").await,
        200
    );
}
