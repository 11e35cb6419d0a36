//! `switchboard`: one binary for tickets, signaling, TURN, SFU and gRPC streaming.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::io::BufRead;
use switchboard::config::{Config, LogFormat};
use switchboard::ice::{IceServers, TurnPorts};
use switchboard::users::Users;
use switchboard_auth::store::Store;
use switchboard_auth::{turn_rest, unix_now, KeyRing, MintRequest, Scope, Scopes};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Real-time communication server: tickets, signaling, TURN, SFU, gRPC streaming"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// TOML config file; every key can also be set as SWITCHBOARD_<SECTION>_<KEY>.
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
    config: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Development mode: no config file needed. Generates the signing key and TURN secret in
        /// memory unless configured, allows loopback TURN peers and anonymous guest tickets, and
        /// prints a demo URL and a ticket. Without --config every listener binds 127.0.0.1
        /// (SWITCHBOARD_* variables still apply); with it, the file says where.
        #[arg(long)]
        dev: bool,
    },
    /// Check a configuration: refuses everything `serve` would refuse, naming the key and the
    /// file line; prints OK when it would start.
    CheckConfig {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Also print the effective configuration (defaults filled in, secrets redacted).
        #[arg(long)]
        print: bool,
    },
    /// Tickets (JWT).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Print TURN REST credentials as JSON {username, credential, ttl, uris}.
    TurnCredentials {
        #[command(flatten)]
        cfg: ConfigArg,
        /// User part of the TURN username.
        #[arg(long)]
        user: String,
        /// Validity, e.g. "1h"; at most 24h.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Users of the built-in store (who may log in and mint tickets).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// API keys (for backends that mint tickets over HTTP Basic).
    Apikey {
        #[command(subcommand)]
        cmd: ApikeyCmd,
    },
    /// List the live nodes of the cluster ([cluster] redis_url) with their load.
    Nodes {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Drain a running node as SIGTERM does: it takes no new sessions, tells its clients to
    /// resume on other nodes of the cluster, and exits when none is left or after
    /// [cluster] drain_timeout. Calls POST /v1/drain with an admin ticket minted from the
    /// configuration's key ring.
    Drain {
        #[command(flatten)]
        cfg: ConfigArg,
        /// The node's HTTP address (host:port); default: the configuration's http.bind.
        #[arg(long)]
        addr: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a ticket with the first key of the ring and print it.
    Create {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Who the ticket is for: its `sub` claim, the peer id in rooms (1 to 256 bytes).
        #[arg(long)]
        identity: String,
        /// Bind the ticket to one room (default: any room).
        #[arg(long)]
        room: Option<String>,
        /// Comma-separated: webrtc, grpc, admin.
        #[arg(long, default_value = "webrtc,grpc")]
        scope: String,
        /// Lifetime, at most auth.max_token_ttl.
        #[arg(long)]
        ttl: Option<String>,
        /// Where SFU rooms this ticket creates should be served: a node's [cluster] region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Verify a ticket against the key ring and print its claims.
    Verify {
        #[command(flatten)]
        cfg: ConfigArg,
        /// The ticket (compact JWT) to verify.
        token: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read from the first line of standard input.
    Add {
        #[command(flatten)]
        cfg: ConfigArg,
        username: String,
        /// Scopes the user may grant in tickets it mints.
        #[arg(long, default_value = "webrtc,grpc")]
        scopes: String,
    },
    /// Remove a user and their sessions.
    Remove {
        #[command(flatten)]
        cfg: ConfigArg,
        username: String,
    },
    /// List users.
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ApikeyCmd {
    /// Create an API key; prints `id:secret` once (the secret is stored hashed).
    Create {
        #[command(flatten)]
        cfg: ConfigArg,
        /// A label for the key, e.g. the backend that uses it.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "webrtc,grpc")]
        scopes: String,
    },
    /// Revoke an API key by id.
    Revoke {
        #[command(flatten)]
        cfg: ConfigArg,
        id: String,
    },
    /// List API keys.
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

fn load(cfg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(cfg.config.as_deref(), std::env::vars())?)
}

/// `c` with every secret replaced by `<redacted>` and defaults spelled out, for printing.
fn redacted(c: &Config) -> Config {
    let hide = |v: &mut String| {
        if !v.is_empty() {
            *v = "<redacted>".into();
        }
    };
    let mut shown = c.clone();
    for k in &mut shown.auth.keys {
        if k.algorithm.is_empty() {
            k.algorithm = "HS256".into();
        }
        for v in [&mut k.secret, &mut k.private_key].into_iter().flatten() {
            hide(v);
        }
    }
    hide(&mut shown.turn.static_auth_secret);
    shown.turn.previous_auth_secrets.iter_mut().for_each(hide);
    for u in &mut shown.turn.user {
        if let Some((name, _)) = u.split_once(':') {
            *u = format!("{name}:<redacted>");
        }
    }
    hide(&mut shown.http.metrics_token);
    shown
}

/// The longest `turn-credentials --ttl` (a day, as the TURN REST API draft suggests).
const MAX_TURN_CREDENTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The user store the configuration names: the cluster's Redis in multi-node mode, else the
/// SQLite file `auth.database`.
fn open_users(cfg: &ConfigArg) -> anyhow::Result<Users> {
    if cfg.config.is_none()
        && std::env::var_os("SWITCHBOARD_AUTH_DATABASE").is_none()
        && std::env::var_os("SWITCHBOARD_CLUSTER_REDIS_URL").is_none()
    {
        bail!(
            "which user store? Pass --config FILE (its auth.database, or [cluster] redis_url) \
             or set SWITCHBOARD_AUTH_DATABASE=PATH"
        );
    }
    let c = load(cfg)?;
    if c.cluster.enabled() {
        let mut scratch = prometheus_client::registry::Registry::default();
        let shared = switchboard_cluster::Shared::connect(
            &c.cluster,
            switchboard_cluster::ClusterMetrics::register(&mut scratch),
        )?;
        return Ok(Users::Shared(Box::new(
            switchboard_cluster::SharedUsers::new(shared),
        )));
    }
    if c.auth.database == ":memory:" {
        bail!("auth.database is \":memory:\"; users and API keys would be lost. Set auth.database to a file.");
    }
    let store = Store::open(&c.auth.database)
        .with_context(|| format!("auth.database {:?}", c.auth.database))?;
    Ok(Users::Local(std::sync::Arc::new(store)))
}

/// Runs `f` on a small runtime (the user store may be Redis).
/// `POST /v1/drain` over plain HTTP/1.1; the status and body.
fn post_drain(addr: &str, token: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "POST /v1/drain HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.take(64 * 1024).read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP answer")?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn init_logging(c: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&c.log.level))
        .with_context(|| format!("log.level {:?}", c.log.level))?;
    // Colour only on a terminal: a log file or a pipe gets plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match c.log.format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve { cfg, dev } => {
            // Every refusal is a config problem found before any socket is bound, the same
            // ones `check-config` reports (switchboard::start validates too).
            let (c, dev_keys) = if dev {
                let mut c = match &cfg.config {
                    Some(_) => load(&cfg)?,
                    None => switchboard::dev::dev_config(std::env::vars())?,
                };
                let keys = switchboard::dev::apply_dev_defaults(&mut c);
                (c, Some(keys))
            } else {
                (load(&cfg)?, None)
            };
            c.validate()?;
            init_logging(&c)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(c, dev_keys))
        }
        Cmd::CheckConfig { cfg, print } => {
            let c = load(&cfg)?;
            c.validate()?;
            if print {
                println!("{}", toml::to_string_pretty(&redacted(&c))?);
            }
            println!(
                "OK: {} would start",
                cfg.config.as_deref().unwrap_or("the default configuration")
            );
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    cfg,
                    identity,
                    room,
                    scope,
                    ttl,
                    region,
                },
        } => {
            let c = load(&cfg)?;
            let ring = KeyRing::from_config(&c.auth)?;
            let ttl = ttl
                .map(|t| switchboard_auth::duration::parse(&t))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let req = MintRequest {
                identity,
                room,
                scope: Scopes::parse_list(&scope).map_err(anyhow::Error::msg)?,
                ttl,
                region,
            };
            let (token, _) = ring.mint(&req, unix_now()).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Cmd::Token {
            cmd: TokenCmd::Verify { cfg, token },
        } => {
            let c = load(&cfg)?;
            let ring = KeyRing::from_config(&c.auth)?;
            match ring.verify(token.trim(), unix_now()) {
                Ok(claims) => {
                    println!("{}", serde_json::to_string_pretty(&claims)?);
                    Ok(())
                }
                Err(e) => bail!("{} ({})", e, e.reason()),
            }
        }
        Cmd::TurnCredentials { cfg, user, ttl } => {
            let c = load(&cfg)?;
            if c.turn.static_auth_secret.is_empty() {
                bail!("turn.static_auth_secret is not set");
            }
            let ttl = switchboard_auth::duration::parse(&ttl).map_err(anyhow::Error::msg)?;
            if ttl.is_zero() || ttl > MAX_TURN_CREDENTIAL_TTL {
                bail!(
                    "--ttl {}: TURN credentials live from 1s to 24h",
                    switchboard_auth::duration::format(ttl)
                );
            }
            let cred = turn_rest::mint(
                c.turn.static_auth_secret.as_bytes(),
                &user,
                ttl.as_secs(),
                unix_now(),
            );
            let ice = IceServers::new(&c.turn, TurnPorts::default());
            if ice.host_from_request() {
                eprintln!(
                    "note: turn.listen {} is every address and turn.external_ip is not set; the \
                     URIs below name 127.0.0.1 (set turn.external_ip to a public address)",
                    c.turn.listen
                );
            }
            let (_, uris) = ice.uris(None);
            println!(
                "{}",
                serde_json::json!({"username": cred.username, "credential": cred.credential, "ttl": cred.ttl, "uris": uris})
            );
            Ok(())
        }
        Cmd::User { cmd } => match cmd {
            UserCmd::Add {
                cfg,
                username,
                scopes,
            } => {
                let users = open_users(&cfg)?;
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let password = line.trim_end_matches(['\n', '\r']).to_string();
                let scopes = Scopes::parse_list(&scopes).map_err(anyhow::Error::msg)?;
                let name = username.clone();
                block_on(
                    async move { Ok(users.add_user(name, password, scopes, unix_now()).await?) },
                )?;
                println!("added user {username} (scopes: {})", scopes.to_list());
                Ok(())
            }
            UserCmd::Remove { cfg, username } => {
                let users = open_users(&cfg)?;
                let name = username.clone();
                if block_on(async move { Ok(users.remove_user(name).await?) })? {
                    println!("removed user {username}");
                    Ok(())
                } else {
                    bail!("no user {username:?}")
                }
            }
            UserCmd::List { cfg } => {
                let users = open_users(&cfg)?;
                for u in block_on(async move { Ok(users.list_users().await?) })? {
                    println!("{}\t{}", u.username, u.scopes.to_list());
                }
                Ok(())
            }
        },
        Cmd::Apikey { cmd } => match cmd {
            ApikeyCmd::Create { cfg, name, scopes } => {
                let scopes = Scopes::parse_list(&scopes).map_err(anyhow::Error::msg)?;
                let users = open_users(&cfg)?;
                let label = name.clone();
                let (id, secret) =
                    block_on(
                        async move { Ok(users.create_api_key(label, scopes, unix_now()).await?) },
                    )?;
                println!("{id}:{secret}");
                eprintln!(
                    "API key {id} ({name}, scopes {}). The secret is shown only now.",
                    scopes.to_list()
                );
                Ok(())
            }
            ApikeyCmd::Revoke { cfg, id } => {
                let users = open_users(&cfg)?;
                let key = id.clone();
                if block_on(async move { Ok(users.revoke_api_key(key, unix_now()).await?) })? {
                    println!("revoked {id}");
                    Ok(())
                } else {
                    bail!("no live API key {id:?}")
                }
            }
            ApikeyCmd::List { cfg } => {
                let users = open_users(&cfg)?;
                for k in block_on(async move { Ok(users.list_api_keys().await?) })? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.scopes.to_list(),
                        if k.revoked { "revoked" } else { "active" }
                    );
                }
                Ok(())
            }
        },
        Cmd::Drain { cfg, addr } => {
            let c = load(&cfg)?;
            let ring = KeyRing::from_config(&c.auth)?;
            let req = MintRequest::new("switchboard-drain", [Scope::Admin]);
            let (token, _) = ring.mint(&req, unix_now()).map_err(anyhow::Error::msg)?;
            let addr = addr.unwrap_or_else(|| c.http.bind.clone());
            let (status, body) = post_drain(&addr, &token)
                .with_context(|| format!("cannot reach the node at {addr}"))?;
            if status != 202 {
                bail!("the node at {addr} answered {status}: {}", body.trim());
            }
            println!("{}", body.trim());
            Ok(())
        }
        Cmd::Nodes { cfg } => {
            let c = load(&cfg)?;
            if !c.cluster.enabled() {
                bail!("[cluster] redis_url is not set: this configuration is a single node");
            }
            // The Redis connection spawns its driver task: made inside the runtime.
            let nodes = block_on(async move {
                let mut scratch = prometheus_client::registry::Registry::default();
                let shared = switchboard_cluster::Shared::connect(
                    &c.cluster,
                    switchboard_cluster::ClusterMetrics::register(&mut scratch),
                )?;
                let registry = switchboard_cluster::Registry::new(shared, c.cluster.node_ttl);
                Ok(registry.nodes().await?)
            })?;
            println!("id\turl\tregion\tsessions\trooms\tcpu%\tstate");
            for n in nodes {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{:.1}\t{}",
                    n.id,
                    n.url,
                    if n.region.is_empty() { "-" } else { &n.region },
                    n.load.sessions,
                    n.load.rooms,
                    n.load.cpu_percent,
                    if n.draining { "draining" } else { "live" }
                );
            }
            Ok(())
        }
    }
}

async fn serve(c: Config, dev: Option<switchboard::dev::DevKeys>) -> anyhow::Result<()> {
    let nofile = switchboard::accept::raise_nofile_limit();
    tracing::debug!(nofile, "open-files limit");
    let server = switchboard::start(c).await?;
    let addr = server.http_addr;
    tracing::info!(%addr, startup_ms = server.startup.as_millis() as u64, "switchboard ready");
    // One machine-readable line for scripts and tests that start the binary on ephemeral ports.
    println!("{}", server.listening_line());
    if let Some(keys) = dev {
        print_dev_banner(&server, keys)?;
    }
    let shutdown = server.state.shutdown.clone();
    tokio::select! {
        _ = switchboard::app::shutdown_signal() => {
            tracing::info!("signal received");
            server.state.begin_shutdown();
        }
        _ = shutdown.cancelled() => {}
    }
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// What a newcomer needs after `serve --dev`: where the demo is, a ticket to try the API with,
/// how long it lives and how to present it, and where the keys came from.
fn print_dev_banner(
    server: &switchboard::RunningServer,
    keys: switchboard::dev::DevKeys,
) -> anyhow::Result<()> {
    let addr = server.http_addr;
    let s = &server.state;
    let scope = [
        switchboard_auth::Scope::Webrtc,
        switchboard_auth::Scope::Grpc,
    ];
    let req = MintRequest::new("dev-user", scope);
    let now = unix_now();
    let (token, claims) = s.gate.keyring.mint(&req, now).map_err(anyhow::Error::msg)?;
    let ttl = switchboard_auth::duration::format(std::time::Duration::from_secs(claims.exp - now));
    let keys_from = match (keys.signing_key_generated, keys.turn_secret_generated) {
        (true, true) => "signing key and TURN secret generated in memory (new on every start)",
        (true, false) => "signing key generated in memory; TURN secret from your configuration",
        (false, true) => "signing key from your configuration; TURN secret generated in memory",
        (false, false) => "signing key and TURN secret from your configuration",
    };
    println!(
        "Switchboard dev server ready in {} ms",
        server.startup.as_millis()
    );
    println!("  demo page:  {}", server.demo_url("lobby"));
    println!("              open it in several tabs: each tab mints its own guest ticket");
    println!("  ticket:     {token}");
    println!(
        "              identity dev-user, scopes webrtc,grpc, valid {ttl}; it opens one signaling"
    );
    println!(
        "              session (single use); HTTP calls take it as `Authorization: Bearer <ticket>`"
    );
    println!("              or `?access_token=<ticket>`, e.g. curl -H \"Authorization: Bearer $TICKET\" http://{addr}/v1/ice-servers");
    println!("  more:       POST /v1/token mints guest tickets without login (dev mode only)");
    println!("  keys:       {keys_from}");
    Ok(())
}
