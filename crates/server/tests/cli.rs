//! The `switchboard` binary as a user runs it: exit codes, error messages, CLI tools, signals.

mod common;

use common::child::{run_cli as run, BIN};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("switchboard.toml");
    let db = dir.join("data/switchboard.db");
    std::fs::write(
        &p,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n[auth]\ndatabase = \"{}\"\n[[auth.keys]]\nkid = \"k1\"\nsecret = \"cli-test-secret-0123456789abcdef0123\"\n[turn]\nenabled = false\nstatic_auth_secret = \"turnsecret\"\nlisten = \"127.0.0.1:3478\"\n{extra}",
            db.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn token_create_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let c = cfg.to_str().unwrap();
    let (code, tok, err) = run(
        &[
            "token",
            "create",
            "-c",
            c,
            "--identity",
            "alice",
            "--room",
            "r1",
            "--scope",
            "webrtc",
            "--ttl",
            "2m",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, claims, err) = run(&["token", "verify", "-c", c, tok.trim()], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["room"], "r1");
    assert_eq!(v["scope"], serde_json::json!(["webrtc"]));
    // Over the cap and unknown scope: clear errors, non-zero exit.
    let (code, _, err) = run(
        &["token", "create", "-c", c, "--identity", "a", "--ttl", "2h"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("max_token_ttl"), "{err}");
    let (code, _, err) = run(
        &[
            "token",
            "create",
            "-c",
            c,
            "--identity",
            "a",
            "--scope",
            "root",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("root"), "{err}");
    let (code, _, err) = run(&["token", "verify", "-c", c, "garbage"], None);
    assert_ne!(code, 0);
    assert!(err.contains("malformed"), "{err}");
}

#[test]
fn turn_credentials_match_coturn_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let (code, out, err) = run(
        &[
            "turn-credentials",
            "-c",
            cfg.to_str().unwrap(),
            "--user",
            "bob",
            "--ttl",
            "1h",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let user = v["username"].as_str().unwrap();
    assert!(user.ends_with(":bob"));
    assert_eq!(v["ttl"], 3600);
    assert_eq!(
        v["credential"].as_str().unwrap(),
        switchboard_auth::turn_rest::password(b"turnsecret", user)
    );
    assert_eq!(v["uris"][0], "turn:127.0.0.1:3478?transport=udp");
}

#[test]
fn users_and_api_keys_persist_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let c = cfg.to_str().unwrap();
    let (code, _, err) = run(
        &["user", "add", "-c", c, "alice", "--scopes", "webrtc"],
        Some("hunter2hunter2\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["user", "add", "-c", c, "alice"], Some("hunter2hunter2\n"));
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(&["user", "add", "-c", c, "bob"], Some("short\n"));
    assert_ne!(code, 0);
    assert!(err.contains("at least 8"), "{err}");
    let (_, list, _) = run(&["user", "list", "-c", c], None);
    assert_eq!(list.trim(), "alice\twebrtc");
    let (code, key, err) = run(&["apikey", "create", "-c", c, "--name", "django"], None);
    assert_eq!(code, 0, "{err}");
    let (id, secret) = key.trim().split_once(':').unwrap();
    assert!(id.starts_with("sbk_") && secret.len() >= 40);
    let (_, list, _) = run(&["apikey", "list", "-c", c], None);
    assert!(list.contains(id) && list.contains("active") && !list.contains(secret));
    let (code, _, _) = run(&["apikey", "revoke", "-c", c, id], None);
    assert_eq!(code, 0);
    let (_, list, _) = run(&["apikey", "list", "-c", c], None);
    assert!(list.contains("revoked"));
    let (code, _, _) = run(&["user", "remove", "-c", c, "alice"], None);
    assert_eq!(code, 0);
    let (code, _, err) = run(&["user", "remove", "-c", c, "alice"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no user"));
    assert!(dir.path().join("data/switchboard.db").exists());
}

#[test]
fn bad_config_unreadable_secret_and_port_in_use_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\nbind = \"127.0.0.1:0\"\n[auth]\ntoken_ttl = \"forever\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["serve", "-c", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("line 4") && err.contains("token_ttl"), "{err}");

    let cfg = dir.path().join("secretfile.toml");
    std::fs::write(
        &cfg,
        "[http]\nbind = \"127.0.0.1:0\"\n[auth]\ndatabase = \":memory:\"\n[[auth.keys]]\nkid = \"k7\"\nsecret_file = \"/nonexistent/k7.secret\"\n[turn]\nenabled = false\n",
    )
    .unwrap();
    let (code, _, err) = run(&["serve", "-c", cfg.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("k7") && err.contains("/nonexistent/k7.secret"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write_config(dir.path(), "");
    let bind = format!("127.0.0.1:{port}");
    let mut child = spawn(
        &["serve", "-c", cfg.to_str().unwrap()],
        &[("SWITCHBOARD_HTTP_BIND", &bind)],
    );
    let status = child.wait().unwrap();
    let err = stderr_text(&mut child);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("http.bind") && err.contains("in use"), "{err}");
}

/// Environment for `serve --dev` on free loopback ports, TURN off.
const DEV_FREE_PORTS: &[(&str, &str)] = &[
    ("SWITCHBOARD_HTTP_BIND", "127.0.0.1:0"),
    ("SWITCHBOARD_TURN_ENABLED", "false"),
    ("SWITCHBOARD_SFU_UDP_PORT", "0"),
    ("SWITCHBOARD_SFU_TCP_PORT", "0"),
];

/// Spawns the binary with `args` and `envs`, without the caller's `SWITCHBOARD_CONFIG` and
/// `RUST_LOG`; stdout and stderr are piped.
fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Everything a child that has ended wrote on stderr.
fn stderr_text(child: &mut Child) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

/// Sends `sig` to `child`, waits for it to end and returns its stderr.
fn stop(child: &mut Child, sig: i32) -> String {
    libc_kill(child.id() as i32, sig);
    child.wait().unwrap();
    stderr_text(child)
}

/// Runs `serve --dev` with `envs` until its banner has printed the `keys:` line, then stops it
/// with SIGTERM. Returns stdout up to and with that line, and stderr.
fn dev_banner(envs: &[(&str, &str)]) -> (String, String) {
    let mut child = spawn(&["serve", "--dev"], envs);
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.trim_start().starts_with("keys:") {
            break;
        }
    }
    let err = stop(&mut child, libc::SIGTERM);
    (out, err)
}

/// Starts `serve`, returns the child and the HTTP address from the `listening` line.
fn serve(args: &[&str], envs: &[(&str, &str)]) -> (std::process::Child, String, Duration) {
    let t0 = Instant::now();
    let mut child = spawn(args, envs);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("switchboard listening http=") {
            addr = Some(rest.split(' ').next().unwrap().to_string());
            break;
        }
    }
    let ready = t0.elapsed();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("listening line"), ready)
}

#[test]
fn dev_mode_is_ready_fast_prints_a_token_and_stops_on_sigterm() {
    let (mut child, addr, ready) = serve(&["serve", "--dev"], DEV_FREE_PORTS);
    assert!(ready < Duration::from_secs(5), "startup took {ready:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(r.status(), 200);
        // Dev mode mints guest tickets without login.
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v1/token"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let pid = child.id() as i32;
    libc_kill(pid, libc::SIGTERM);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let err = stderr_text(&mut child);
    assert!(err.contains("stopped"), "{err}");
}

/// The dev banner says what a newcomer needs (a demo URL that works in many tabs, the ticket's
/// lifetime, that it is single use and how to present it), every listener follows the
/// environment's overrides, and logs to a pipe carry no colour codes.
#[test]
fn dev_banner_explains_the_ticket_and_env_moves_every_listener() {
    let (out, err) = dev_banner(&[
        ("SWITCHBOARD_HTTP_BIND", "127.0.0.1:0"),
        ("SWITCHBOARD_TURN_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_SFU_UDP_PORT", "0"),
        ("SWITCHBOARD_SFU_TCP_PORT", "0"),
    ]);

    let listening = out
        .lines()
        .find(|l| l.starts_with("switchboard listening"))
        .unwrap_or_else(|| panic!("{out}"));
    for name in ["turn_udp", "turn_tcp", "sfu_udp", "sfu_tcp"] {
        let addr = listening
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing: {listening}"));
        assert!(addr.starts_with("127.0.0.1:"), "{name}={addr}");
        for fixed in [":3478", ":7881", ":7882"] {
            assert!(!addr.ends_with(fixed), "{name}={addr} ignored the override");
        }
    }
    let http = listening
        .split(' ')
        .find_map(|kv| kv.strip_prefix("http="))
        .unwrap();
    assert!(
        out.contains(&format!("demo page:  http://{http}/?room=lobby")),
        "{out}"
    );
    assert!(out.contains("valid 5m"), "ticket lifetime: {out}");
    assert!(out.contains("single use"), "{out}");
    assert!(
        out.contains("Authorization: Bearer") && out.contains("?access_token="),
        "{out}"
    );
    assert!(
        out.contains("signing key and TURN secret generated in memory"),
        "{out}"
    );
    assert!(
        !err.contains('\x1b'),
        "colour codes in a piped log: {err:?}"
    );
    assert!(err.contains("switchboard ready"), "{err}");
}

/// With keys from the environment, the banner does not claim they were generated.
#[test]
fn dev_banner_names_configured_keys() {
    let turn_secret = [(
        "SWITCHBOARD_TURN_STATIC_AUTH_SECRET",
        "cli-test-turn-secret",
    )];
    let (out, _) = dev_banner(&[DEV_FREE_PORTS, &turn_secret].concat());
    let keys = out.lines().last().unwrap_or_default();
    assert!(
        keys.contains("signing key generated in memory; TURN secret from your configuration"),
        "{keys}"
    );
}

#[test]
fn json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[log]\nformat = \"json\"\n");
    let (mut child, _addr, _) = serve(&["serve", "-c", cfg.to_str().unwrap()], &[]);
    let err = stop(&mut child, libc::SIGINT);
    let first = err.lines().next().expect("a log line");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO");
    assert!(!err.contains("cli-test-secret"), "secrets never logged");
}

/// Sends `sig` to a child process this test started.
fn libc_kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A full config file for the refusal cases: `body` is the whole file apart from the key.
fn config_file(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[[auth.keys]]\nkid = \"k1\"\nsecret = \"cli-test-secret-0123456789abcdef0123\"\n\
             [auth]\ndatabase = \":memory:\"\n{body}"
        ),
    )
    .unwrap();
    p
}

/// Every configuration `serve` refuses, `check-config` refuses too, naming the same key (and
/// the file line where the key is in the file); a sound one is `OK`, and `--print` shows the
/// effective configuration without secrets.
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("[http]\nbind = \"127.0.0.1:99999\"\n", "http.bind"),
        ("[turn]\nenabled = true\n", "turn.static_auth_secret"),
        ("[turn]\nstatic_auth_secret = \"s\"\nrealm = \"\"\n", "turn.realm"),
        ("[sfu]\nmode = \"selective\"\n", "mode"),
        ("[log]\nformat = \"yaml\"\n", "format"),
        (
            "[turn]\nenabled = false\n[[stream.upstreams]]\nname = \"ml\"\nurl = \"not a url\"\n",
            "stream",
        ),
        (
            "[http]\nbind = \"127.0.0.1:7990\"\n[turn]\nstatic_auth_secret = \"s\"\nlisten = \"0.0.0.0:7990\"\n",
            "turn.listen",
        ),
        (
            "[turn]\nstatic_auth_secret = \"s\"\nmin_port = 60000\nmax_port = 50000\n",
            "turn.min_port",
        ),
    ];
    for (i, (body, key)) in cases.iter().enumerate() {
        let cfg = config_file(dir.path(), &format!("bad{i}.toml"), body);
        let cfg = cfg.to_str().unwrap();
        let (code, out, err) = run(&["check-config", "-c", cfg], None);
        assert_eq!(code, 1, "check-config accepted {body:?}: {out}");
        assert!(
            err.contains(key),
            "check-config on {body:?} does not name {key}: {err}"
        );
        assert!(err.contains("line"), "no file line for {body:?}: {err}");
        assert!(!out.contains("OK"), "{out}");
        // serve refuses it too, before binding anything.
        let (code, _, serve_err) = run(&["serve", "-c", cfg], None);
        assert_eq!(code, 1, "serve accepted {body:?}");
        assert!(serve_err.contains(key), "serve on {body:?}: {serve_err}");
    }
    let good = config_file(
        dir.path(),
        "good.toml",
        "[turn]\nstatic_auth_secret = \"turn-secret-value\"\n[http]\nmetrics_token = \"m-token\"\n",
    );
    let (code, out, err) = run(&["check-config", "-c", good.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "only the verdict: {out}");
    assert!(out.starts_with("OK"), "{out}");
    let (code, out, _) = run(
        &["check-config", "--print", "-c", good.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("algorithm = \"HS256\""), "{out}");
    for secret in ["cli-test-secret", "turn-secret-value", "m-token"] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
}

/// The CLI says what is true: a missing file is reported once, credentials have a bounded
/// lifetime, and user commands need to be told which database to use.
#[test]
fn cli_errors_are_plain() {
    let (code, _, err) = run(&["check-config", "-c", "/nonexistent/sb.toml"], None);
    assert_eq!(code, 1);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let (code, _, err) = run(
        &[
            "turn-credentials",
            "-c",
            cfg.to_str().unwrap(),
            "--user",
            "u",
            "--ttl",
            "99d",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("24h"), "{err}");
    let (code, _, err) = Command::new(BIN)
        .args(["user", "list"])
        .current_dir(dir.path())
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("SWITCHBOARD_AUTH_DATABASE")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::new(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("--config"), "{err}");
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "no database created in the working directory"
    );
}
