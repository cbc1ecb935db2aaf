//! Shared harness for the integration tests: starts the real `stepwise` binary
//! against a throw-away SQLite file or Postgres database and talks to it over HTTP.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{Value, json};

pub mod blobs;
pub mod faults;
pub mod fixtures;

/// Secret handed to every server unless a test opts out; tests forge tokens with it.
pub const TEST_JWT_SECRET: &str = "stepwise-integration-tests-secret-0123456789";
/// A syntactically fine password that satisfies the length rule.
pub const PASSWORD: &str = "correct horse battery staple";

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_LINES_KEPT: usize = 200;

/// Fields requested for every `AuthPayload`. `inviteToken` is left out on purpose:
/// regular users may not read it.
pub const AUTH_PAYLOAD_FIELDS: &str = "token expiresAt \
     user { id email name role createdAt company { id name } } \
     company { id name createdAt updatedAt }";

// ---------------------------------------------------------------------------
// Backends and databases
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether tests for this backend can run here. An unreachable Postgres fails the
    /// test under CI (`CI=true`) and is a loudly reported skip everywhere else.
    pub async fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => match AsyncPgConnection::establish(&pg_admin_url()).await {
                Ok(_) => true,
                Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("postgres unreachable at {} (CI=true): {e}", pg_admin_url())
                }
                Err(e) => {
                    // Written to the real stderr, past libtest's output capture, so the
                    // skip is visible in a normal `cargo test` run.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n********************************************************\n\
                         SKIPPED: postgres unreachable at {}: {e}\n\
                         ********************************************************",
                        pg_admin_url()
                    );
                    false
                }
            },
        }
    }
}

/// Admin URL used to create and drop test databases (`STEPWISE_TEST_PG_URL` overrides).
pub fn pg_admin_url() -> String {
    std::env::var("STEPWISE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// The admin URL with its database name replaced by `db`.
fn pg_url_for(db: &str) -> String {
    let base = pg_admin_url();
    let (base, query) = match base.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &base[..path_start])
}

/// A fresh, empty database plus a private temp directory (the server's cwd).
/// Dropping it removes both, even while a test is panicking.
pub struct TestDb {
    pub backend: Backend,
    pub dir: PathBuf,
    pub url: String,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("stepwise-test-{id}"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}", dir.join("stepwise.db").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let name = format!("stepwise_test_{id}");
                let mut conn = AsyncPgConnection::establish(&pg_admin_url())
                    .await
                    .expect("connect to postgres admin database");
                conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                TestDb {
                    backend,
                    url: pg_url_for(&name),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Path of the SQLite file (only meaningful for the SQLite backend).
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.join("stepwise.db")
    }

    /// Drops the Postgres database right now, terminating the server's connections.
    pub fn drop_pg_database(&self) {
        if let Some(name) = self.pg_name.clone() {
            std::thread::spawn(move || drop_pg_database(&name))
                .join()
                .expect("drop thread panicked");
        }
    }
}

/// Runs on its own thread and runtime so it works from `Drop`, inside or outside a
/// tokio runtime, and during a panic.
fn drop_pg_database(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let mut conn = AsyncPgConnection::establish(&pg_admin_url()).await?;
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    if let Err(e) = result {
        eprintln!("warning: could not drop test database {name}: {e}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.drop_pg_database();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `JWT_SECRET` for the child; `None` removes it from the child's environment.
    pub jwt_secret: Option<String>,
    /// The database URL to pass; `None` uses the test database's canonical URL.
    pub database_url: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            jwt_secret: Some(TEST_JWT_SECRET.to_owned()),
            database_url: None,
            env: Vec::new(),
        }
    }
}

type Log = Arc<Mutex<VecDeque<String>>>;

pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    options: ServerOptions,
    log: Log,
    // Declared last: dropped after the child is killed.
    pub db: TestDb,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, ServerOptions::default()).await
    }

    pub async fn start_with(backend: Backend, options: ServerOptions) -> TestServer {
        Self::start_on(TestDb::create(backend).await, options).await
    }

    /// Serves an existing database (e.g. one prepared with `stepwise migrate`).
    pub async fn start_on(db: TestDb, options: ServerOptions) -> TestServer {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut server = TestServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            client,
            options,
            log: Arc::new(Mutex::new(VecDeque::new())),
            db,
        };
        server.spawn().await;
        server
    }

    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    pub fn database_url(&self) -> String {
        self.options
            .database_url
            .clone()
            .unwrap_or_else(|| self.db.url.clone())
    }

    pub fn jwt_secret(&self) -> Option<&str> {
        self.options.jwt_secret.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server process's resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().map(Child::id).expect("the server runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// The last lines the server printed (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Kills the server (SIGKILL, no graceful shutdown) and starts it again on the
    /// same database; it gets a new port.
    pub async fn restart(&mut self) {
        self.kill();
        self.push_log("----- test harness: server killed, restarting -----".to_owned());
        self.spawn().await;
    }

    /// Sets `key=value` in the server's environment from its next (re)start on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.options.env.retain(|(k, _)| k != key);
        self.options.env.push((key.to_owned(), value.to_owned()));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn push_log(&self, line: String) {
        push_line(&self.log, line);
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n----- last {LOG_LINES_KEPT} lines of server output -----\n{}\n-----",
            self.log_tail()
        )
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepwise"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--database-url", &self.database_url()])
            .current_dir(&self.db.dir)
            .env_remove("DATABASE_URL")
            .env_remove("STEPWISE_LISTEN")
            .env_remove("JWT_TTL_SECONDS")
            .env_remove("JWT_ISSUER")
            .env_remove("JWT_AUDIENCE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.options.jwt_secret {
            Some(secret) => cmd.env("JWT_SECRET", secret),
            None => cmd.env_remove("JWT_SECRET"),
        };
        // Every test signs up and logs in from 127.0.0.1, many times per server; the
        // sign-in limits are off unless a test turns them on (tests/sign_in_limits.rs).
        cmd.env("STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS", "0")
            .env("STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL", "0");
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn stepwise serve");

        let (addr_tx, addr_rx) = mpsc::channel();
        drain(
            child.stdout.take().expect("stdout"),
            &self.log,
            Some(addr_tx.clone()),
        );
        drain(
            child.stderr.take().expect("stderr"),
            &self.log,
            Some(addr_tx),
        );
        self.child = Some(child);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        self.addr = loop {
            if let Ok(addr) = addr_rx.try_recv() {
                break addr;
            }
            self.check_alive("before logging its listen address");
            if Instant::now() > deadline {
                self.fail("server did not log `address=…` within 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        loop {
            if let Ok(resp) = self.client.get(self.url("/healthz")).send().await
                && resp.status() == reqwest::StatusCode::OK
            {
                return;
            }
            self.check_alive("before /healthz answered 200");
            if Instant::now() > deadline {
                self.fail(&format!(
                    "GET {} did not answer 200 within 60s",
                    self.url("/healthz")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&mut self, when: &str) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"));
        if let Some(status) = exited {
            // Give the reader threads a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(200));
            self.fail(&format!("server exited ({status}) {when}"));
        }
    }

    // -----------------------------------------------------------------------
    // HTTP / GraphQL
    // -----------------------------------------------------------------------

    /// POSTs a GraphQL request with `Authorization: Bearer <token>` when given and
    /// returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let header = token.map(|t| format!("Bearer {t}"));
        self.gql_with_authorization(query, variables, header.as_deref())
            .await
    }

    /// Like `gql`, but with a raw `Authorization` header value.
    pub async fn gql_with_authorization(
        &self,
        query: &str,
        variables: Value,
        authorization: Option<&str>,
    ) -> Value {
        let mut req = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(value) = authorization {
            req = req.header("Authorization", value);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => self.fail(&format!("POST /graphql failed: {e}")),
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str(&body) {
            Ok(json) => json,
            Err(_) => self.fail(&format!(
                "POST /graphql answered {status} with a non-JSON body: {body}\nquery: {query}"
            )),
        }
    }

    /// Runs `query`, panics if the response has errors, and returns `data`.
    pub async fn gql_ok(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let resp = self.gql(query, variables.clone(), token).await;
        if resp.get("errors").is_some_and(|e| !e.is_null()) {
            self.fail(&format!(
                "unexpected GraphQL errors\nquery: {query}\nvariables: {variables}\nresponse: {resp:#}"
            ));
        }
        resp["data"].clone()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| self.fail(&format!("GET {path} failed: {e}")))
    }

    // -----------------------------------------------------------------------
    // User stories
    // -----------------------------------------------------------------------

    pub async fn try_signup(
        &self,
        company: &str,
        name: &str,
        email: &str,
        password: &str,
    ) -> Value {
        let query = format!(
            "mutation($companyName: String!, $name: String!, $email: String!, $password: String!) {{ \
               signup(companyName: $companyName, name: $name, email: $email, password: $password) {{ {AUTH_PAYLOAD_FIELDS} }} }}"
        );
        let vars =
            json!({ "companyName": company, "name": name, "email": email, "password": password });
        self.gql(&query, vars, None).await
    }

    /// Signs up a new company with its admin; returns the token and the `AuthPayload`.
    pub async fn signup(
        &self,
        company: &str,
        name: &str,
        email: &str,
        password: &str,
    ) -> (String, Value) {
        let resp = self.try_signup(company, name, email, password).await;
        self.auth_payload(resp, "signup")
    }

    pub async fn try_join_company(
        &self,
        invite: &str,
        name: &str,
        email: &str,
        password: &str,
    ) -> Value {
        let query = format!(
            "mutation($inviteToken: String!, $name: String!, $email: String!, $password: String!) {{ \
               joinCompany(inviteToken: $inviteToken, name: $name, email: $email, password: $password) {{ {AUTH_PAYLOAD_FIELDS} }} }}"
        );
        let vars =
            json!({ "inviteToken": invite, "name": name, "email": email, "password": password });
        self.gql(&query, vars, None).await
    }

    /// Joins a company through its invite token; returns the token and the `AuthPayload`.
    pub async fn join_company(
        &self,
        invite: &str,
        name: &str,
        email: &str,
        password: &str,
    ) -> (String, Value) {
        let resp = self.try_join_company(invite, name, email, password).await;
        self.auth_payload(resp, "joinCompany")
    }

    pub async fn try_login(&self, email: &str, password: &str) -> Value {
        let query = format!(
            "mutation($email: String!, $password: String!) {{ \
               login(email: $email, password: $password) {{ {AUTH_PAYLOAD_FIELDS} }} }}"
        );
        self.gql(
            &query,
            json!({ "email": email, "password": password }),
            None,
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> (String, Value) {
        let resp = self.try_login(email, password).await;
        self.auth_payload(resp, "login")
    }

    /// `me` with the given token; panics on errors.
    pub async fn me(&self, token: &str) -> Value {
        let data = self
            .gql_ok(
                "{ me { id email name role createdAt company { id name } } }",
                json!({}),
                Some(token),
            )
            .await;
        data["me"].clone()
    }

    /// `company` (without `inviteToken`) with the given token; panics on errors.
    pub async fn company(&self, token: &str) -> Value {
        let data = self
            .gql_ok(
                "{ company { id name createdAt updatedAt } }",
                json!({}),
                Some(token),
            )
            .await;
        data["company"].clone()
    }

    /// The company's invite token as seen by an admin.
    pub async fn invite_token(&self, admin_token: &str) -> String {
        let data = self
            .gql_ok("{ company { inviteToken } }", json!({}), Some(admin_token))
            .await;
        str_field(&data["company"], "inviteToken")
    }

    pub async fn try_rotate_invite_token(&self, token: &str) -> Value {
        self.gql(
            "mutation { rotateInviteToken { id inviteToken updatedAt } }",
            json!({}),
            Some(token),
        )
        .await
    }

    /// Rotates the invite token as an admin; returns the new token.
    pub async fn rotate_invite_token(&self, admin_token: &str) -> String {
        let resp = self.try_rotate_invite_token(admin_token).await;
        if error_code(&resp).is_some() {
            self.fail(&format!("rotateInviteToken failed: {resp:#}"));
        }
        str_field(&resp["data"]["rotateInviteToken"], "inviteToken")
    }

    fn auth_payload(&self, resp: Value, field: &str) -> (String, Value) {
        if resp.get("errors").is_some_and(|e| !e.is_null()) {
            self.fail(&format!("{field} failed: {resp:#}"));
        }
        let payload = resp["data"][field].clone();
        let token = payload["token"]
            .as_str()
            .unwrap_or_else(|| self.fail(&format!("{field} returned no token: {resp:#}")))
            .to_owned();
        (token, payload)
    }
}

/// One text column named `v`, for [`TestServer::sql_strings`].
#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

/// A direct connection to a test server's database, bypassing the server.
// Short-lived, one at a time: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum DirectConn {
    Postgres(AsyncPgConnection),
    Sqlite(diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>),
}

// ---------------------------------------------------------------------------
// Direct SQL (for data that has no mutation yet, and for checking what is stored)
// ---------------------------------------------------------------------------

impl TestServer {
    async fn direct_connection(&self) -> DirectConn {
        match self.backend() {
            Backend::Postgres => DirectConn::Postgres(
                AsyncPgConnection::establish(&self.database_url())
                    .await
                    .unwrap_or_else(|e| self.fail(&format!("connect to the test database: {e}"))),
            ),
            Backend::Sqlite => {
                let path = self.db.sqlite_path();
                let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                    diesel::SqliteConnection,
                >::establish(&path.to_string_lossy())
                .await
                .unwrap_or_else(|e| self.fail(&format!("open the test SQLite file: {e}")));
                conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                    .await
                    .unwrap_or_else(|e| self.fail(&format!("SQLite pragmas: {e}")));
                DirectConn::Sqlite(conn)
            }
        }
    }

    /// Runs one or more SQL statements on the server's database (its own connection, not
    /// the server's pool, so it does not move `/metrics` counters). Panics on errors.
    pub async fn sql(&self, statements: &str) {
        let result = match &mut self.direct_connection().await {
            DirectConn::Postgres(conn) => conn.batch_execute(statements).await,
            DirectConn::Sqlite(conn) => conn.batch_execute(statements).await,
        };
        if let Err(e) = result {
            self.fail(&format!("SQL failed: {e}\nstatements:\n{statements}"));
        }
    }

    /// Runs a query selecting one text column named `v` and returns its values.
    pub async fn sql_strings(&self, query: &str) -> Vec<String> {
        use diesel_async::RunQueryDsl;
        let result = match &mut self.direct_connection().await {
            DirectConn::Postgres(conn) => diesel::sql_query(query).load::<TextRow>(conn).await,
            DirectConn::Sqlite(conn) => diesel::sql_query(query).load::<TextRow>(conn).await,
        };
        match result {
            Ok(rows) => rows.into_iter().map(|r| r.v).collect(),
            Err(e) => self.fail(&format!("SQL query failed: {e}\nquery: {query}")),
        }
    }

    /// `SELECT COUNT(*) FROM <from_where>`, e.g. `sql_count("steps WHERE workflow_id = 'x'")`.
    pub async fn sql_count(&self, from_where: &str) -> i64 {
        let rows = self
            .sql_strings(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) AS v FROM {from_where}"
            ))
            .await;
        rows.first()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| self.fail(&format!("COUNT(*) FROM {from_where} gave {rows:?}")))
    }

    /// The value of a Prometheus sample `name` on `GET /metrics` (summed over label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let resp = self.get("/metrics").await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::OK {
            self.fail(&format!("GET /metrics answered {status}: {body}"));
        }
        let mut found = None;
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let rest = if rest.starts_with('{') {
                match rest.find('}') {
                    Some(end) => &rest[end + 1..],
                    None => continue,
                }
            } else if rest.starts_with(' ') {
                rest
            } else {
                continue; // a longer metric name with this prefix
            };
            let value = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            match value {
                Some(v) => *found.get_or_insert(0.0) += v,
                None => self.fail(&format!("unparsable /metrics line: {line}")),
            }
        }
        found.unwrap_or_else(|| self.fail(&format!("no `{name}` sample on /metrics:\n{body}")))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- server output ({:?}, {}) -----\n{}\n-----",
                self.db.backend,
                self.database_url(),
                self.log_tail()
            );
        }
    }
}

fn push_line(log: &Log, line: String) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() == LOG_LINES_KEPT {
        log.pop_front();
    }
    log.push_back(line);
}

/// Reads a child pipe until EOF so it never fills up, keeping the last lines and
/// reporting the first `address=…` it sees.
fn drain(pipe: impl Read + Send + 'static, log: &Log, addr_tx: Option<mpsc::Sender<SocketAddr>>) {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut addr_tx = addr_tx;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
            if let Some(addr) = addr_tx.as_ref().and_then(|_| parse_address(&line)) {
                let _ = addr_tx.take().map(|tx| tx.send(addr));
            }
            push_line(&log, line);
        }
    });
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip a CSI sequence: ESC [ params final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds `address=127.0.0.1:PORT` (optionally quoted) in a text log line, or
/// `"address":"127.0.0.1:PORT"` in a JSON one.
fn parse_address(line: &str) -> Option<SocketAddr> {
    let (at, marker) = ["address=", "\"address\":"]
        .iter()
        .find_map(|marker| Some((line.find(marker)?, *marker)))?;
    let rest = &line[at + marker.len()..];
    let rest = rest.trim_start_matches('"');
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '}')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------
// Responses and tokens
// ---------------------------------------------------------------------------

/// `errors[0].extensions.code` of a GraphQL response.
pub fn error_code(resp: &Value) -> Option<String> {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

/// `errors[0].message` of a GraphQL response.
pub fn error_message(resp: &Value) -> Option<String> {
    resp["errors"][0]["message"].as_str().map(str::to_owned)
}

/// Asserts the response failed with `code`; `context` says what was attempted.
#[track_caller]
pub fn assert_error_code(resp: &Value, code: &str, context: &str) {
    assert_eq!(
        error_code(resp).as_deref(),
        Some(code),
        "{context}: expected error code {code}, got response:\n{resp:#}"
    );
}

/// A string field of a JSON object, panicking with the object if it is missing.
#[track_caller]
pub fn str_field(obj: &Value, field: &str) -> String {
    obj[field]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field `{field}` in {obj:#}"))
        .to_owned()
}

pub fn now_ts() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses an RFC 3339 `DateTime` scalar.
#[track_caller]
pub fn parse_datetime(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("DateTime is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("DateTime {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The (unverified) claims of a JWT.
#[track_caller]
pub fn jwt_claims(token: &str) -> Value {
    let payload = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("JWT payload is not base64url: {e}"));
    serde_json::from_slice(&bytes).expect("JWT payload is not JSON")
}

/// Signs `claims` with HS256 and `secret`.
pub fn forge_token(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

/// An unsigned `alg: none` token carrying `claims`.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// A token with any `header` and `claims`, signed HMAC-SHA256 with `key` whatever the header
/// says (hostile-token tests need headers no JWT library would produce).
pub fn raw_hs256_token(header: &Value, claims: &Value, key: &[u8]) -> String {
    use hmac::Mac as _;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Keeps the header and signature of `token` but swaps in `claims`.
pub fn tampered_token(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "`{what}` failed ({})\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `stepwise <args>` in `cwd` with `DATABASE_URL` set (or removed when `None`).
pub fn run_cli(args: &[&str], database_url: Option<&str>, cwd: &Path) -> CliOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("JWT_SECRET", TEST_JWT_SECRET);
    match database_url {
        Some(url) => cmd.env("DATABASE_URL", url),
        None => cmd.env_remove("DATABASE_URL"),
    };
    let out = cmd.output().expect("run stepwise");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// Test generation
// ---------------------------------------------------------------------------

/// `both_backends!(name, async_fn)` generates `mod name { fn sqlite; fn postgres }`,
/// each calling `async_fn(Backend)`. `both_backends!(name)` calls `name` itself.
/// The Postgres variant skips (loudly) when Postgres is unreachable outside CI.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        $crate::both_backends!($name, super::$name);
    };
    ($name:ident, $test:path) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $test($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !$crate::common::Backend::Postgres.available().await {
                    return;
                }
                $test($crate::common::Backend::Postgres).await;
            }
        }
    };
}

// Run helpers over HTTP, and WebSocket clients (Node scripts in tests/realtime/).
pub mod realtime;
pub mod runs;
// Runs, health logs and notifications at chosen times (retention, statistics, filters).
pub mod history;

// Versions, projects, templates, shares and public links (issue 14).
pub mod lifecycle;
