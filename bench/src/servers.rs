//! Building and starting the processes under test: `stepwise serve` (release) and
//! PostGraphile 4.14.1 (installed with npm into target/bench/postgraphile).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// A fixed secret: tokens signed during seeding stay valid across restarts.
pub const JWT_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef0123456789abcdef";

/// The repository's top level (bench/ lives in it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the harness keeps its scratch files and results.
pub fn out_dir() -> PathBuf {
    root().join("target").join("bench")
}

/// The server under test: the release build, or the binary named by `STEPWISE_BENCH_SERVER`
/// (e.g. target/profiling/stepwise, or a wrapper that starts it under valgrind).
pub fn stepwise_binary() -> PathBuf {
    std::env::var_os("STEPWISE_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target").join("release").join("stepwise"))
}

async fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().await?;
    if !status.success() {
        return Err(format!("{what} failed with {status}").into());
    }
    Ok(())
}

/// `cargo build --release` of the server, in its own target directory.
pub async fn build_stepwise() -> Result<()> {
    eprintln!("building stepwise (release)...");
    run_checked(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "--bin", "stepwise"])
            .current_dir(root()),
        "cargo build --release",
    )
    .await
}

/// `stepwise migrate run` on `database_url`.
pub async fn migrate(database_url: &str) -> Result<()> {
    run_checked(
        Command::new(stepwise_binary())
            .args(["migrate", "run"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
        "stepwise migrate run",
    )
    .await
}

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A started server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Server {
    pub fn graphql_url(&self) -> String {
        format!("http://127.0.0.1:{}/graphql", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/graphql/ws", self.port)
    }

    /// Ready does not wait for the event bus (NATS may still be connecting); events written
    /// before it is up would reach no other instance.
    async fn wait_event_bus_up(&self) -> Result<Value> {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body: Value =
                serde_json::from_slice(&client.get(&url).send().await?.bytes().await?)?;
            let state = &body["eventBus"]["state"];
            if state.is_null() || state == "up" {
                return Ok(body["eventBus"].clone());
            }
            if Instant::now() > deadline {
                return Err(format!("the event bus is not up after 30 s: {body}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(mut self) {
        // SIGTERM first so the server shuts down cleanly; then make sure.
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn wait_http_ok(url: &str, child: &mut Child, what: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited during start-up with {status}").into());
        }
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer {url} within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The soft "Max open files" of a process, from /proc/<pid>/limits.
fn open_files_limit(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

/// The JetStream stream of the bench servers: not the default one, so the machine's other
/// users of its NATS (tests, other instances) neither see nor feed the bench's events.
pub const NATS_STREAM: &str = "stepwise_bench_events";

/// Starts `stepwise serve` on `database_url` and waits until /readyz answers. `env` adds
/// to (or overrides) the bench settings, e.g. `STEPWISE_EVENT_BUS`.
pub async fn start_stepwise(
    name: &str,
    database_url: &str,
    pool_size: usize,
    env: &[(&str, &str)],
) -> Result<Server> {
    let port = free_port()?;
    let log = std::fs::File::create(out_dir().join(format!("server-{name}.log")))?;
    let mut command = Command::new(stepwise_binary());
    command
        // A row's label names its bus and backend: nothing set in the caller's shell may
        // change them behind its back.
        .env_remove("STEPWISE_EVENT_BUS")
        .env_remove("DATABASE_READ_URL")
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("STEPWISE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_POOL_SIZE", pool_size.to_string())
        .env("JWT_SECRET", JWT_SECRET)
        // Access tokens live 15 minutes by default, and a WebSocket closes when its token
        // expires: a full run takes longer than that.
        .env("JWT_TTL_SECONDS", "604800")
        .env("RUST_LOG", "warn")
        // S1 connects thousands of subscribers with one token per company; the default
        // per-user connection cap guards production servers against exactly that.
        .env("STEPWISE_WS_MAX_CONNECTIONS_PER_USER", "1000000")
        // Every sign-up comes from 127.0.0.1; the sign-in limiter would throttle the
        // harness, not an attacker.
        .env("STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS", "0")
        .env("STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL", "0")
        // Runs started for a scenario wait through the ones before it; the sweeper must
        // not time them out meanwhile.
        .env("STEPWISE_RUN_TIMEOUT_SECONDS", "86400")
        .env("STEPWISE_BLOB_STORE", out_dir().join("blobs"))
        .env("STEPWISE_NATS_STREAM", NATS_STREAM);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("stepwise has no pid")?;
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/readyz"),
        &mut child,
        "stepwise serve",
    )
    .await?;
    let server = Server { child, pid, port };
    let bus = server.wait_event_bus_up().await?;
    eprintln!(
        "started stepwise {name} (pid {pid}, port {port}, event bus {bus}, open files {})",
        open_files_limit(pid).unwrap_or_else(|| "?".into())
    );
    Ok(server)
}

fn postgraphile_dir() -> PathBuf {
    out_dir().join("postgraphile")
}

/// `npm install postgraphile@4.14.1` into target/bench/postgraphile, once.
pub async fn install_postgraphile() -> Result<PathBuf> {
    let dir = postgraphile_dir();
    let cli = dir.join("node_modules/postgraphile/cli.js");
    if cli.exists() {
        return Ok(cli);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"stepwise-bench-postgraphile","private":true}"#,
    )?;
    eprintln!("installing postgraphile@4.14.1 with npm...");
    run_checked(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "postgraphile@4.14.1",
            ])
            .current_dir(&dir),
        "npm install postgraphile@4.14.1",
    )
    .await?;
    Ok(cli)
}

/// Starts PostGraphile 4 (Node) on the same database, with the same pool size.
pub async fn start_postgraphile(
    cli: &Path,
    database_url: &str,
    pool_size: usize,
) -> Result<Server> {
    let port = free_port()?;
    let log = std::fs::File::create(out_dir().join("server-postgraphile.log"))?;
    let mut child = Command::new("node")
        .arg(cli)
        .args([
            "-c",
            database_url,
            "--schema",
            "public",
            "--host",
            "127.0.0.1",
        ])
        .args(["--port", &port.to_string()])
        .args(["--max-pool-size", &pool_size.to_string()])
        .arg("--disable-query-log")
        .env("NODE_ENV", "production")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("node has no pid")?;
    // PostGraphile answers GET /graphql with 405 until... a POST is the reliable probe.
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/graphql");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("postgraphile exited during start-up with {status}").into());
        }
        if let Ok(response) = client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"query":"{ __typename }"}"#)
            .send()
            .await
            && response.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("postgraphile did not answer within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Server { child, pid, port })
}

/// One GraphQL request; an answer with `errors` is an error.
pub async fn gql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(json!({ "query": query, "variables": variables }).to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await?;
    let body: Value = serde_json::from_slice(&response.bytes().await?)?;
    if body.get("errors").is_some_and(|e| !e.is_null()) {
        return Err(format!("GraphQL errors: {body}").into());
    }
    Ok(body["data"].clone())
}
