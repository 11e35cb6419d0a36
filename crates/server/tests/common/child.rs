//! The real `switchboard` binary as a child process, for tests that measure the server alone
//! (its memory in `/proc/<pid>/status`, its CPU in `/proc/<pid>/stat`) or that signal it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
pub const CHILD_SECRET: &str = "child-process-test-secret-0123456789";

/// A running server process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Everything the server printed on stdout after its listening line.
    stdout: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `switchboard serve` with a config on loopback (ephemeral HTTP port, TURN off,
    /// mesh-only rooms, in-memory store, one HS256 key), plus `extra` TOML appended.
    pub fn start(extra: &str) -> ServerProcess {
        Self::start_with(extra, |_| {})
    }

    /// Like [`ServerProcess::start`], letting `tune` adjust the command first.
    pub fn start_with(extra: &str, tune: impl FnOnce(&mut Command)) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("switchboard.toml");
        let base = format!(
            r#"[http]
bind = "127.0.0.1:0"
shutdown_grace = "2s"
[auth]
database = ":memory:"
[[auth.keys]]
kid = "k1"
secret = "{CHILD_SECRET}"
[turn]
enabled = false
[sfu]
mode = "mesh"
[log]
level = "warn"
"#
        );
        std::fs::write(&cfg, merge_toml(&base, extra)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", cfg.to_str().unwrap()])
            .env_remove("SWITCHBOARD_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tune(&mut cmd);
        let mut child = cmd.spawn().expect("switchboard starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut http = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("switchboard listening http=") {
                http = Some(rest.split(' ').next().unwrap().parse().unwrap());
                break;
            }
        }
        let stdout = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let keep = stdout.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().push(l);
            }
        });
        ServerProcess {
            child,
            http: http.expect("listening line"),
            dir,
            stdout,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc/{}/status", self.pid()))
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS") as f64 / 1024.0
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz.max(1))
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits up to `limit` for the process to exit; its exit code, or `None` if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Lines the server printed on stdout after its listening line.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().clone()
    }

    /// A ticket for `identity` (scopes webrtc and grpc) signed with the server's key.
    pub fn ticket(&self, identity: &str) -> String {
        let auth = switchboard_auth::AuthConfig {
            keys: vec![switchboard_auth::KeyConfig {
                kid: "k1".into(),
                secret: Some(CHILD_SECRET.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ring = switchboard_auth::KeyRing::from_config(&auth).unwrap();
        let scope = [
            switchboard_auth::Scope::Webrtc,
            switchboard_auth::Scope::Grpc,
        ];
        let req = switchboard_auth::MintRequest::new(identity, scope);
        ring.mint(&req, switchboard_auth::unix_now()).unwrap().0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` (no `SWITCHBOARD_CONFIG`), `stdin` written to its input; its exit
/// code, stdout and stderr.
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SWITCHBOARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Adds `name` with `password` to the user database file `db` with `switchboard user add`, as
/// an operator does before starting the server (through a config beside it naming `db`).
pub fn add_user(db: &Path, name: &str, password: &str) {
    let cli_cfg = db.with_extension("cli.toml");
    let db = db.display();
    let toml = format!(
        "[auth]\ndatabase = \"{db}\"\n[[auth.keys]]\nkid = \"k1\"\nsecret = \"{CHILD_SECRET}\"\n"
    );
    std::fs::write(&cli_cfg, toml).unwrap();
    let args = ["user", "add", name, "-c", cli_cfg.to_str().unwrap()];
    let (code, _, err) = run_cli(&args, Some(&format!("{password}\n")));
    assert_eq!(code, 0, "user add: {err}");
}

/// `extra`'s keys laid over `base`, section by section.
fn merge_toml(base: &str, extra: &str) -> String {
    let mut merged: toml::Table = base.parse().unwrap();
    let extra: toml::Table = extra.parse().expect("extra config is TOML");
    for (section, value) in extra {
        match (merged.get_mut(&section), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
            (_, v) => {
                merged.insert(section, v);
            }
        }
    }
    toml::to_string(&merged).unwrap()
}
