//! Helpers shared by `signal-load` (relay load) and `signal-failover` (a node killed under
//! its clients): tickets, process figures from /proc, percentiles, Redis counters.

use std::collections::BTreeMap;

/// A key ring that mints tickets with the HS256 secret `secret` under kid "k1" (the key the
/// benchmark scripts give the servers).
pub fn keyring(secret: &str) -> anyhow::Result<switchboard_auth::KeyRing> {
    let cfg = switchboard_auth::AuthConfig {
        keys: vec![switchboard_auth::KeyConfig {
            kid: "k1".into(),
            secret: Some(secret.to_string()),
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(switchboard_auth::KeyRing::from_config(&cfg)?)
}

/// `url` with a fresh single-use signaling ticket for `identity`, or `url` itself without a
/// key ring (servers that take no ticket).
pub fn with_ticket(
    url: &str,
    keyring: Option<&switchboard_auth::KeyRing>,
    identity: &str,
) -> anyhow::Result<String> {
    let Some(k) = keyring else {
        return Ok(url.to_string());
    };
    let req = switchboard_auth::MintRequest::new(identity, [switchboard_auth::Scope::Webrtc]);
    let (tok, _) = k
        .mint(&req, switchboard_auth::unix_now())
        .map_err(anyhow::Error::msg)?;
    Ok(format!("{url}?access_token={tok}"))
}

/// User plus system CPU seconds of process `pid`.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident set size of process `pid`, KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds the whole machine spent busy (all cores, from /proc/stat: everything but idle
/// and iowait).
pub fn machine_busy_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().take(8).sum();
    Some((total - f.get(3)? - f.get(4)?) / 100.0)
}

/// Sum of `f` over `pids`; `None` when any of them cannot be read.
pub fn sum_over(pids: &[u32], f: impl Fn(u32) -> Option<f64>) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| f(p)).sum()
}

/// The `q` quantile of `sorted` (microseconds), in milliseconds.
pub fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// Counters from one Redis `INFO everything`: calls per command (`commandstats`) and the
/// server's CPU seconds. Both counts include the commands a Lua script runs (an `EVAL` that
/// publishes twice is three commands).
#[derive(Debug, Clone, Default)]
pub struct RedisStats {
    pub calls: BTreeMap<String, u64>,
    /// `total_commands_processed`.
    pub processed: u64,
    pub cpu_seconds: f64,
}

impl RedisStats {
    pub async fn read(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<RedisStats> {
        let info: String = redis::cmd("INFO")
            .arg("everything")
            .query_async(conn)
            .await?;
        Ok(RedisStats::parse(&info))
    }

    pub fn parse(info: &str) -> RedisStats {
        let mut s = RedisStats::default();
        for line in info.lines() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                s.calls.insert(name.to_string(), calls);
            } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
                s.processed = v.parse().unwrap_or(0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
            {
                s.cpu_seconds += v.parse::<f64>().unwrap_or(0.0);
            }
        }
        s
    }

    /// What happened between `before` and `self`, leaving out the `INFO` calls that read it.
    pub fn since(&self, before: &RedisStats) -> RedisStats {
        let mut calls = BTreeMap::new();
        for (name, &n) in &self.calls {
            let d = n.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
            if d > 0 && name != "info" {
                calls.insert(name.clone(), d);
            }
        }
        let info = self.calls.get("info").copied().unwrap_or(0)
            - before.calls.get("info").copied().unwrap_or(0);
        RedisStats {
            calls,
            processed: self
                .processed
                .saturating_sub(before.processed)
                .saturating_sub(info),
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
        }
    }

    /// One line: commands per `per` messages, in total and by command (most frequent first).
    pub fn per_message(&self, per: u64) -> String {
        let per = per.max(1) as f64;
        let mut by: Vec<(&String, &u64)> = self.calls.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1));
        let parts: Vec<String> = by
            .iter()
            .map(|(name, n)| format!("{name} {:.3}", **n as f64 / per))
            .collect();
        format!(
            "{} commands = {:.3} per relayed message ({}), Redis CPU {:.2} us/msg",
            self.processed,
            self.processed as f64 / per,
            parts.join(", "),
            self.cpu_seconds * 1e6 / per,
        )
    }
}
