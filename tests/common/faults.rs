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

// ---------------------------------------------------------------------------
// Private clusters for the scale-out tests: TLS, statement logs, streaming replicas
// ---------------------------------------------------------------------------

/// Certificates a TLS test made with the `openssl` command: a CA, a server certificate it
/// signed for `localhost` only, and a second CA that signed nothing of ours.
pub struct TestCertificates {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCertificates {
    /// Makes the files in `dir`.
    pub fn make(dir: &Path) -> TestCertificates {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let path = |name: &str| dir.join(name);
        let s = |p: &PathBuf| p.to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (ca, cn) in [
            ("ca", "Stepwise Test CA"),
            ("wrong-ca", "Someone Else's CA"),
        ] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, cert) = (
                s(&path(&format!("{ca}.key"))),
                s(&path(&format!("{ca}.pem"))),
            );
            let subject = format!("/CN={cn}");
            args.extend([
                "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
            ]);
            run_checked(Command::new("openssl").args(&args), "openssl: make a CA");
        }
        let (csr, key, cert) = (path("server.csr"), path("server.key"), path("server.pem"));
        let mut args = vec!["req"];
        args.extend(ec);
        let (key_s, csr_s) = (s(&key), s(&csr));
        args.extend(["-keyout", &key_s, "-out", &csr_s, "-subj", "/CN=localhost"]);
        run_checked(Command::new("openssl").args(&args), "openssl: server key");
        let ext = path("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        run_checked(
            Command::new("openssl").args([
                "x509",
                "-req",
                "-in",
                &csr_s,
                "-CA",
                &s(&path("ca.pem")),
                "-CAkey",
                &s(&path("ca.key")),
                "-CAcreateserial",
                "-out",
                &s(&cert),
                "-days",
                "2",
                "-extfile",
                &s(&ext),
            ]),
            "openssl: sign the server certificate",
        );
        TestCertificates {
            ca: path("ca.pem"),
            wrong_ca: path("wrong-ca.pem"),
            server_cert: cert,
            server_key: key,
        }
    }
}

impl PrivateCluster {
    /// A fresh cluster with `settings` appended to its `postgresql.conf` and, when given,
    /// `hba` as its whole `pg_hba.conf`. `files` are copied into the cluster's directory
    /// (owned by `postgres`, mode 0600) first, for settings that name them.
    pub async fn start_configured(
        settings: String,
        hba: Option<String>,
        files: Vec<(PathBuf, &'static str)>,
    ) -> PrivateCluster {
        tokio::task::spawn_blocking(move || {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let dir = std::env::temp_dir().join(format!("stepwise-pg-{id}"));
            std::fs::create_dir_all(&dir).expect("create cluster dir");
            let port = free_port();
            let cluster = PrivateCluster { dir, port };
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
            let data = PathBuf::from(cluster.data_dir());
            for (source, name) in files {
                let target = data.join(name);
                std::fs::copy(&source, &target).expect("copy a file into the cluster");
                run_checked(
                    Command::new("chown").args(["postgres:postgres", &target.to_string_lossy()]),
                    "chown a cluster file",
                );
                run_checked(
                    Command::new("chmod").args(["600", &target.to_string_lossy()]),
                    "chmod a cluster file",
                );
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push('\n');
            text.push_str(&settings);
            text.push('\n');
            std::fs::write(&conf, text).expect("write postgresql.conf");
            if let Some(hba) = hba {
                std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
            }
            start_postgres(&cluster.dir, cluster.port);
            cluster
        })
        .await
        .expect("cluster start thread")
    }

    /// A streaming replica of this cluster: `pg_basebackup -R` into a directory of its
    /// own and a second postmaster on another port (it keeps this cluster's settings).
    pub async fn start_replica(&self) -> PrivateCluster {
        let primary_port = self.port;
        tokio::task::spawn_blocking(move || {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let dir = std::env::temp_dir().join(format!("stepwise-pg-replica-{id}"));
            std::fs::create_dir_all(&dir).expect("create replica dir");
            let replica = PrivateCluster {
                dir,
                port: free_port(),
            };
            run_checked(
                Command::new("chown").args(["postgres:postgres", &replica.dir_str()]),
                "chown the replica dir",
            );
            run_checked(
                Command::new("runuser").args([
                    "-u",
                    "postgres",
                    "--",
                    &format!("{PG_BIN}/pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary_port.to_string(),
                    "-U",
                    "postgres",
                    "-D",
                    &replica.data_dir(),
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                ]),
                "pg_basebackup",
            );
            start_postgres(&replica.dir, replica.port);
            replica
        })
        .await
        .expect("replica start thread")
    }

    /// Runs `sql` with `psql` as `postgres` on this cluster's `postgres` database and
    /// returns what it printed (unaligned, tuples only).
    pub async fn psql(&self, sql: &str) -> String {
        let (port, sql) = (self.port.to_string(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let out = Command::new("runuser")
                .args([
                    "-u",
                    "postgres",
                    "--",
                    &format!("{PG_BIN}/psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-d",
                    "postgres",
                    "-AtqX",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    &sql,
                ])
                .env("PGSSLMODE", "disable")
                .stdin(Stdio::null())
                .output()
                .expect("run psql");
            assert!(
                out.status.success(),
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .await
        .expect("psql thread")
    }

    /// Lines of this cluster's log (with `log_statement = 'all'`) that ran a statement
    /// containing `needle`.
    pub fn statements_containing(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains("statement: ") || line.contains(" execute "))
            .filter(|line| line.contains(needle))
            .count()
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// A private NATS server
// ---------------------------------------------------------------------------

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A `nats-server -js` of our own on a free port, its JetStream storage in a temp dir, so
/// a test may stop and restart it. Dropping it kills it and removes the directory.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    /// Whether `nats-server` is installed (`.ci/run` installs Debian's package). Without
    /// it the test is skipped with a loud message, or fails under `CI=true`.
    pub fn available() -> bool {
        if Path::new(NATS_SERVER).exists() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{NATS_SERVER} is missing (CI=true): apt-get install nats-server"
        );
        eprintln!("\n**********\nSKIPPED: {NATS_SERVER} is not installed\n**********");
        false
    }

    pub async fn start() -> PrivateNats {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("stepwise-nats-{id}"));
        std::fs::create_dir_all(&dir).expect("create nats dir");
        let mut nats = PrivateNats {
            port: free_port(),
            dir,
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and storage; waits until it accepts
    /// connections.
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .expect("nats log");
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `stepwise serve` with `env` on `database_url` and expects it to exit with an error
/// within 60 s; returns what it printed.
pub fn serve_fails(database_url: &str, env: &[(&str, &str)]) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let dir = std::env::temp_dir().join(format!("stepwise-test-{id}"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env("JWT_SECRET", super::TEST_JWT_SECRET)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stepwise serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "stepwise serve kept running on {database_url}; it should have refused to start"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    for stream in [
        child.stdout.take().map(|mut s| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
            text
        }),
        child.stderr.take().map(|mut s| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
            text
        }),
    ]
    .into_iter()
    .flatten()
    {
        output.push_str(&stream);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !status.success(),
        "stepwise serve exited successfully:\n{output}"
    );
    output
}
