//! Fault injection for `tests/faults.rs`: signals to the server process, a GraphQL client
//! that does not borrow the server (so requests can be in flight while it is killed),
//! locks held on the database from outside the server, and a private PostgreSQL cluster
//! that a test may stop and start without disturbing the machine's shared one.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{Value, json};

use super::{Backend, DirectConn, TestDb, TestServer};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_CTL_TIMEOUT_SECS: &str = "30";

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

impl TestServer {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) to the server with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .stdin(Stdio::null())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Sends SIGTERM: the server should shut down gracefully.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Waits at most `limit` for the server to exit; its exit status, if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client for this server that can be moved into spawned tasks.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr)
    }

    /// Holds a write lock on the server's database from outside the server until the
    /// returned guard is released: on SQLite the database write lock (`BEGIN IMMEDIATE`),
    /// on PostgreSQL a row lock on run `run_id`. A `reportStep` on that run then waits.
    pub async fn hold_write_lock(&self, run_id: &str) -> HeldLock {
        let mut conn = self.direct_connection().await;
        let result = match &mut conn {
            DirectConn::Sqlite(c) => c.batch_execute("BEGIN IMMEDIATE").await,
            DirectConn::Postgres(c) => {
                c.batch_execute(&format!(
                    "BEGIN; SELECT id FROM runs WHERE id = '{run_id}' FOR UPDATE"
                ))
                .await
            }
        };
        result.unwrap_or_else(|e| self.fail(&format!("could not take the write lock: {e}")));
        HeldLock { conn: Some(conn) }
    }

    /// Panics with `what` and the server's last log lines.
    pub fn fail_with(&self, what: &str) -> ! {
        self.fail(what)
    }

    /// Whether the server's log has a panic in it.
    pub fn log_has_panic(&self) -> bool {
        self.log_tail().contains("panicked")
    }
}

/// A write lock on the database held from outside the server (see
/// [`TestServer::hold_write_lock`]). Dropping it without `release` closes the connection,
/// which releases the lock as well.
pub struct HeldLock {
    conn: Option<DirectConn>,
}

impl HeldLock {
    /// Rolls back the locking transaction.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let result = match &mut conn {
                DirectConn::Sqlite(c) => c.batch_execute("ROLLBACK").await,
                DirectConn::Postgres(c) => c.batch_execute("ROLLBACK").await,
            };
            result.expect("release the write lock");
        }
    }
}

// ---------------------------------------------------------------------------
// A GraphQL client that owns what it needs
// ---------------------------------------------------------------------------

/// What became of one HTTP request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The server answered with a JSON body.
    Json(reqwest::StatusCode, Value),
    /// The server answered, but not with JSON.
    NotJson(reqwest::StatusCode, String),
    /// No answer: refused, reset, timed out.
    Transport(String),
}

impl Reply {
    /// The body when the answer was HTTP 200 with `data` and no `errors`.
    pub fn ok_data(&self) -> Option<&Value> {
        match self {
            Reply::Json(status, body)
                if *status == reqwest::StatusCode::OK
                    && body["errors"].is_null()
                    && body["data"].is_object() =>
            {
                Some(&body["data"])
            }
            _ => None,
        }
    }

    /// `errors[0].extensions.code` when the server answered with GraphQL errors.
    pub fn error_code(&self) -> Option<String> {
        match self {
            Reply::Json(_, body) => super::error_code(body),
            _ => None,
        }
    }

    /// Whether the server answered with a JSON body carrying at least one error.
    pub fn is_graphql_error(&self) -> bool {
        matches!(self, Reply::Json(_, body) if body["errors"].as_array().is_some_and(|e| !e.is_empty()))
    }
}

/// A GraphQL-over-HTTP client for one server address.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a GraphQL request; never panics.
    pub async fn post(&self, query: &str, variables: Value, token: Option<&str>) -> Reply {
        let mut req = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Reply::Transport(format!("{e:?}")),
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(body) => body,
            Err(e) => return Reply::Transport(format!("reading the body: {e:?}")),
        };
        match serde_json::from_str(&body) {
            Ok(json) => Reply::Json(status, json),
            Err(_) => Reply::NotJson(status, body),
        }
    }

    /// The status of `GET path`, or the transport error.
    pub async fn get_status(&self, path: &str) -> Result<reqwest::StatusCode, String> {
        self.client
            .get(self.url(path))
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| format!("{e:?}"))
    }
}

/// A GraphQL POST whose body the client sends slowly: the headers and half the body go out
/// at once, the rest only after [`SlowRequest::finish`]. Until then the request is in
/// flight on the server (it is reading the body), which makes graceful shutdown
/// observable. Plain HTTP/1.1 over a std `TcpStream` on a blocking thread.
pub struct SlowRequest {
    go: std::sync::mpsc::Sender<()>,
    task: tokio::task::JoinHandle<Reply>,
}

impl SlowRequest {
    /// Connects, sends the headers and the first half of the body; returns once those
    /// bytes are written.
    pub async fn start(addr: SocketAddr, query: &str, variables: Value, token: &str) -> Self {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let task = tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Write as _};
            let half = body.len() / 2;
            let mut stream =
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(
                    |mut s| {
                        s.write_all(head.as_bytes())?;
                        s.write_all(&body.as_bytes()[..half])?;
                        s.flush()?;
                        Ok(s)
                    },
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = sent_tx.send(Err(e.to_string()));
                        return Reply::Transport(format!("sending the first half: {e}"));
                    }
                };
            let _ = sent_tx.send(Ok(()));
            if wait.recv_timeout(Duration::from_secs(40)).is_err() {
                return Reply::Transport("never told to finish".to_owned());
            }
            let mut raw = Vec::new();
            let result = stream
                .write_all(&body.as_bytes()[half..])
                .and_then(|()| stream.flush())
                .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(20))))
                .and_then(|()| stream.read_to_end(&mut raw));
            if let Err(e) = result {
                return Reply::Transport(format!("finishing the request: {e}"));
            }
            parse_http_response(&raw)
        });
        match sent_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("slow request could not start: {e}"),
            Err(_) => panic!("slow request thread ended early"),
        }
        SlowRequest { go, task }
    }

    /// Sends the rest of the body and waits (at most `limit`) for the answer.
    pub async fn finish(self, limit: Duration) -> Reply {
        let _ = self.go.send(());
        match tokio::time::timeout(limit, self.task).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => Reply::Transport(format!("slow request thread: {e}")),
            Err(_) => Reply::Transport(format!("no answer within {limit:?}")),
        }
    }
}

/// Parses a whole HTTP/1.1 response (read to EOF), de-chunking the body if needed.
fn parse_http_response(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Reply::Transport(format!("incomplete response: {text:?}"));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| reqwest::StatusCode::from_u16(s).ok())
        .unwrap_or(reqwest::StatusCode::IM_A_TEAPOT);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    match serde_json::from_str(&body) {
        Ok(json) => Reply::Json(status, json),
        Err(_) => Reply::NotJson(status, body),
    }
}

/// Whether a new TCP connection to `addr` is refused right now.
pub async fn connection_refused(addr: SocketAddr) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => false,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// A private PostgreSQL cluster
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster of our own (initdb into a temp dir, trust auth, 127.0.0.1 on a
/// free port), run as the `postgres` user. Dropping it stops it (`-m immediate`) and
/// removes its directory.
pub struct PrivateCluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl PrivateCluster {
    /// Whether the PostgreSQL 15 binaries are installed here.
    pub fn available() -> bool {
        Path::new(PG_BIN).join("initdb").exists()
    }

    /// Creates and starts a fresh cluster.
    pub async fn start() -> PrivateCluster {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("cluster start thread")
    }

    fn start_blocking() -> PrivateCluster {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("stepwise-pg-{id}"));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("local addr").port()
        };
        let mut cluster = PrivateCluster { dir, port };
        run_checked(
            Command::new("chown").args(["postgres:postgres", &cluster.dir_str()]),
            "chown the cluster dir",
        );
        run_checked(
            Command::new("runuser").args([
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/initdb"),
                "-D",
                &cluster.data_dir(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ]),
            "initdb",
        );
        cluster.start_server_blocking();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A [`TestDb`] for a server on this cluster (its `postgres` database). The database
    /// is never dropped: the cluster goes away as a whole.
    pub fn test_db(&self) -> TestDb {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("stepwise-test-{id}"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TestDb {
            backend: Backend::Postgres,
            dir,
            url: self.url(),
            pg_name: None,
        }
    }

    /// Whether a client can connect right now.
    pub async fn accepts_connections(&self) -> bool {
        AsyncPgConnection::establish(&self.url()).await.is_ok()
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the cluster shuts down cleanly.
    pub async fn stop(&mut self) {
        let args = self.pg_ctl_args(&["stop", "-m", "fast"]);
        tokio::task::spawn_blocking(move || {
            run_checked(Command::new("runuser").args(args), "pg_ctl stop");
        })
        .await
        .expect("pg_ctl thread");
    }

    /// `pg_ctl start` again on the same port and data.
    pub async fn restart(&mut self) {
        let (dir, port) = (self.dir.clone(), self.port);
        tokio::task::spawn_blocking(move || start_postgres(&dir, port))
            .await
            .expect("pg_ctl thread");
    }

    fn start_server_blocking(&mut self) {
        start_postgres(&self.dir, self.port);
    }

    fn pg_ctl_args(&self, action: &[&str]) -> Vec<String> {
        pg_ctl_args(&self.dir, action)
    }

    fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    fn data_dir(&self) -> String {
        data_dir(&self.dir)
    }

    /// The cluster's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Stopped or not, make sure no postmaster is left behind.
        let _ = Command::new("runuser")
            .args(self.pg_ctl_args(&["stop", "-m", "immediate"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn data_dir(dir: &Path) -> String {
    dir.join("data").to_string_lossy().into_owned()
}

/// `runuser` arguments for `pg_ctl -D <data> -w -t 30 <action...>` as `postgres`.
fn pg_ctl_args(dir: &Path, action: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-u".into(),
        "postgres".into(),
        "--".into(),
        format!("{PG_BIN}/pg_ctl"),
        "-D".into(),
        data_dir(dir),
        "-w".into(),
        "-t".into(),
        PG_CTL_TIMEOUT_SECS.into(),
    ];
    args.extend(action.iter().map(|a| (*a).to_owned()));
    args
}

/// Starts the postmaster of the cluster in `dir`, listening on 127.0.0.1:`port` only.
fn start_postgres(dir: &Path, port: u16) {
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
         -c fsync=off -c max_connections=100",
        dir.display()
    );
    let log = dir.join("postgres.log").to_string_lossy().into_owned();
    let ok = Command::new("runuser")
        .args(pg_ctl_args(dir, &["start", "-l", &log, "-o", &options]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        panic!(
            "pg_ctl start failed; postgres.log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
