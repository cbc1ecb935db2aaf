//! Realtime harness: WebSocket clients that are not ours. `tests/realtime/` holds two Node
//! scripts — `client.mjs` (graphql-ws's own client) and `raw.mjs` (frame-level, the `ws`
//! package) — which the tests run as child processes and read line by line (one JSON
//! event per line). The npm packages are installed on first use (`npm ci`), once per
//! checkout, under a lock so parallel tests and test binaries do not race.
//!
//! Also: a second server process on the same Postgres database (`start_sibling`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Backend, TestDb, TestServer};

/// How long any single wait for a WebSocket event may take.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long to listen when asserting that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(1500);
/// Upper bound on a child process's life.
const PROCESS_TIMEOUT_MS: u64 = 180_000;
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// Selections
// ---------------------------------------------------------------------------

pub const RUN_UPDATE_FIELDS: &str = "run { id status stepsTotal stepsCompleted stepsFailed \
     stepsHealed currentStep { id } error startedAt finishedAt updatedAt workflow { id } } \
     healthLog { id status run { id } step { id } workflow { id } }";

pub const HEALTH_LOG_EVENT_FIELDS: &str =
    "cursor healthLog { id status run { id } step { id } workflow { id } createdAt }";

pub const NOTIFICATION_EVENT_FIELDS: &str =
    "id kind severity title message read workflow { id } createdAt";

pub const STATUS_CHANGE_FIELDS: &str =
    "status previousStatus workflow { id status consecutiveFailures }";

pub fn run_updated_query() -> String {
    format!("subscription($runId: ID!) {{ runUpdated(runId: $runId) {{ {RUN_UPDATE_FIELDS} }} }}")
}

pub fn runs_updated_query() -> String {
    format!(
        "subscription($workflowId: ID) {{ runsUpdated(workflowId: $workflowId) {{ {RUN_UPDATE_FIELDS} }} }}"
    )
}

pub fn health_log_recorded_query() -> String {
    format!(
        "subscription($workflowId: ID, $after: String) {{ \
           healthLogRecorded(workflowId: $workflowId, after: $after) {{ {HEALTH_LOG_EVENT_FIELDS} }} }}"
    )
}

pub fn notification_created_query() -> String {
    format!("subscription {{ notificationCreated {{ {NOTIFICATION_EVENT_FIELDS} }} }}")
}

pub fn workflow_status_changed_query() -> String {
    format!(
        "subscription($workflowId: ID) {{ workflowStatusChanged(workflowId: $workflowId) {{ {STATUS_CHANGE_FIELDS} }} }}"
    )
}

// ---------------------------------------------------------------------------
// npm packages
// ---------------------------------------------------------------------------

/// `tests/realtime` in the source tree.
pub fn realtime_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("realtime")
}

/// Installs `tests/realtime`'s npm packages unless the pinned versions are already there.
pub fn ensure_node_packages() {
    ensure_npm_packages(&realtime_dir());
}

/// Installs the npm packages of `dir` (a folder with `package.json` and `package-lock.json`)
/// with `npm ci`, unless the pinned versions are already there. Once per directory per test
/// binary, and across concurrently running test binaries under an exclusive file lock in
/// cargo's target tmp dir.
pub fn ensure_npm_packages(dir: &Path) {
    static INSTALLED: Mutex<Vec<(PathBuf, Result<(), String>)>> = Mutex::new(Vec::new());
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let result = match installed.iter().find(|(d, _)| d == dir) {
        Some((_, result)) => result.clone(),
        None => {
            let result = install_node_packages(dir);
            installed.push((dir.to_owned(), result.clone()));
            result
        }
    };
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn install_node_packages(dir: &Path) -> Result<(), String> {
    if packages_installed(dir) {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map_or_else(|| "packages".into(), |n| n.to_string_lossy().into_owned());
    let lock_path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stepwise-{name}-npm.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    // Someone else may have installed them while we waited for the lock.
    if packages_installed(dir) {
        return Ok(());
    }
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "could not run `npm ci` in {} (Node.js 20+ and npm are needed for the \
                 tests that drive independent clients): {e}",
                dir.display()
            )
        })?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let deadline = Instant::now() + NPM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`npm ci` in {} took over {NPM_TIMEOUT:?}",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "stdout:\n{}\nstderr:\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    if !status.success() || !packages_installed(dir) {
        return Err(format!(
            "`npm ci` in {} failed ({status})\n{output}",
            dir.display()
        ));
    }
    drop(lock);
    Ok(())
}

fn collect(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut out);
        }
        out
    })
}

/// Whether every dependency of `package.json` is installed at its pinned version.
fn packages_installed(dir: &Path) -> bool {
    let manifest: Value = match std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
    {
        Some(v) => v,
        None => return false,
    };
    let Some(deps) = manifest["dependencies"].as_object() else {
        return false;
    };
    deps.iter().all(|(name, version)| {
        std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|installed| installed["version"] == *version)
    })
}

// ---------------------------------------------------------------------------
// A Node child process speaking JSON lines
// ---------------------------------------------------------------------------

struct NodeProcess {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Every event read so far, for failure messages.
    transcript: Vec<Value>,
    ended: bool,
}

impl NodeProcess {
    fn spawn(script: &str, args: &[String], label: String) -> NodeProcess {
        Self::spawn_in(&realtime_dir(), script, args, label)
    }

    /// Runs `script` of the npm folder `dir` (its packages installed first).
    fn spawn_in(dir: &Path, script: &str, args: &[String], label: String) -> NodeProcess {
        ensure_npm_packages(dir);
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .args(["--timeout-ms", &PROCESS_TIMEOUT_MS.to_string()])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start `node {script}` (Node.js 20+ needed): {e}")
            });
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("child stdout");
        std::thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({ "event": "stdout", "text": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("child stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        let stdin = child.stdin.take();
        NodeProcess {
            label,
            child,
            stdin,
            lines,
            stderr,
            transcript: Vec::new(),
            ended: false,
        }
    }

    fn command(&mut self, command: Value) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail(&format!("cannot send {command} after closing stdin"));
        };
        let line = format!("{command}\n");
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            self.fail(&format!("could not send {command}: {e}"));
        }
    }

    /// The next event, or `None` when `timeout` passes or the process has ended.
    async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if self.ended {
            return None;
        }
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(value)) => {
                self.transcript.push(value.clone());
                Some(value)
            }
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(_) => None,
        }
    }

    /// Closes stdin (the scripts then close the socket cleanly and exit) and waits for the
    /// process to end, killing it after a few seconds.
    async fn shutdown(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn fail(&self, what: &str) -> ! {
        let events: Vec<String> = self.transcript.iter().map(Value::to_string).collect();
        panic!(
            "{}: {what}\n----- events so far -----\n{}\n----- stderr -----\n{}\n-----",
            self.label,
            events.join("\n"),
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// graphql-ws client (client.mjs)
// ---------------------------------------------------------------------------

/// One graphql-ws client connection with any number of operations on it.
pub struct Subscriber {
    process: NodeProcess,
    /// Events read but not yet consumed (they belonged to another operation).
    buffer: VecDeque<Value>,
}

impl TestServer {
    /// `ws://<addr>/graphql/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// A second `stepwise serve` process on this server's Postgres database, with the same
    /// JWT secret and settings. Dropping it stops that process only; the database belongs
    /// to `self`.
    pub async fn start_sibling(&self) -> TestServer {
        assert_eq!(
            self.backend(),
            Backend::Postgres,
            "only Postgres instances share events"
        );
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("stepwise-test-sibling-{id}"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let db = TestDb {
            backend: Backend::Postgres,
            dir,
            url: self.database_url(),
            pg_name: None,
        };
        let mut options = self.options.clone();
        options.database_url = Some(self.database_url());
        TestServer::start_on(db, options).await
    }
}

impl Subscriber {
    /// Connects (with `{"token": ...}` as the `connection_init` payload when given) and
    /// waits for the server's `connection_ack`.
    pub async fn connect(server: &TestServer, token: Option<&str>) -> Subscriber {
        let mut subscriber = Subscriber::start(server, token, &[]);
        subscriber.expect_connected().await;
        subscriber
    }

    /// Starts the client with `ops` (`(id, query, variables)`) subscribed at once; does not wait.
    pub fn start(
        server: &TestServer,
        token: Option<&str>,
        ops: &[(&str, &str, Value)],
    ) -> Subscriber {
        let mut args = vec!["--url".to_owned(), server.ws_url()];
        if let Some(token) = token {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        for (id, query, variables) in ops {
            args.push("--op".to_owned());
            args.push(json!({ "id": id, "query": query, "variables": variables }).to_string());
        }
        Subscriber {
            process: NodeProcess::spawn(
                "client.mjs",
                &args,
                format!("graphql-ws client of {}", server.addr),
            ),
            buffer: VecDeque::new(),
        }
    }

    /// Waits for `connected` (the server's `connection_ack`).
    pub async fn expect_connected(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = self.next_raw(deadline).await;
            match event["event"].as_str() {
                Some("connected") => return,
                Some("connecting" | "opened") => {}
                _ => self.fail(&format!("expected `connected`, got {event}")),
            }
        }
    }

    /// Subscribes operation `id` on the open connection.
    pub fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.process.command(json!({
            "subscribe": { "id": id, "query": query, "variables": variables }
        }));
    }

    /// Stops operation `id` (the client sends `complete`).
    pub fn unsubscribe(&mut self, id: &str) {
        self.process.command(json!({ "unsubscribe": id }));
    }

    async fn next_raw(&mut self, deadline: Instant) -> Value {
        if let Some(event) = self.buffer.pop_front() {
            return event;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.process.recv(left).await {
            Some(event) => event,
            None => self.fail(&format!("no event within {WAIT:?} (or the client exited)")),
        }
    }

    /// The next event of operation `op` (`next`, `error` or `complete`) arriving within
    /// `timeout`; events of other operations stay queued.
    pub async fn try_event_for(&mut self, op: &str, timeout: Duration) -> Option<Value> {
        if let Some(pos) = self.buffer.iter().position(|e| e["op"] == op) {
            return self.buffer.remove(pos);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.process.recv(left).await?;
            if event["op"] == op {
                return Some(event);
            }
            self.buffer.push_back(event);
        }
    }

    /// The next event of operation `op`, failing after [`WAIT`].
    pub async fn event_for(&mut self, op: &str) -> Value {
        match self.try_event_for(op, WAIT).await {
            Some(event) => event,
            None => self.fail(&format!("no event for operation `{op}` within {WAIT:?}")),
        }
    }

    /// The next event of `op` must be a `next` without errors; returns its `data`.
    pub async fn expect_data(&mut self, op: &str) -> Value {
        let event = self.event_for(op).await;
        if event["event"] != "next" || !event["payload"]["errors"].is_null() {
            self.fail(&format!(
                "expected a `next` with data for `{op}`, got {event}"
            ));
        }
        event["payload"]["data"].clone()
    }

    /// The next event of `op` must be `complete`.
    pub async fn expect_complete(&mut self, op: &str) {
        let event = self.event_for(op).await;
        if event["event"] != "complete" {
            self.fail(&format!("expected `complete` for `{op}`, got {event}"));
        }
    }

    /// The operation must fail with a GraphQL error of `code`: either an `error` message,
    /// or a `next` carrying the error (no data) followed by `complete`. Returns the error.
    pub async fn expect_error_code(&mut self, op: &str, code: &str) -> Value {
        let event = self.event_for(op).await;
        let errors = match event["event"].as_str() {
            Some("error") => event["errors"].clone(),
            Some("next") => event["payload"]["errors"].clone(),
            _ => Value::Null,
        };
        let first = errors[0].clone();
        if first["extensions"]["code"] != code {
            self.fail(&format!(
                "expected an error with code {code} for `{op}`, got {event}"
            ));
        }
        if event["event"] == "next" {
            let data = &event["payload"]["data"];
            if !(data.is_null()
                || data
                    .as_object()
                    .is_some_and(|o| o.values().all(Value::is_null)))
            {
                self.fail(&format!(
                    "an error event for `{op}` must carry no data: {event}"
                ));
            }
            self.expect_complete(op).await;
        }
        first
    }

    /// Asserts that operation `op` receives nothing for [`QUIET`].
    pub async fn expect_quiet(&mut self, op: &str) {
        if let Some(event) = self.try_event_for(op, QUIET).await {
            self.fail(&format!("expected nothing for `{op}`, got {event}"));
        }
    }

    /// Repeats `trigger` (at most 30 times, one second apart) until every operation in `ops`
    /// has received something, proving the server has registered them; returns what each
    /// received first. Events caused by earlier triggers may still arrive afterwards, so
    /// tests must recognise (and skip) everything the trigger produces.
    pub async fn until_live<F>(&mut self, ops: &[&str], mut trigger: F) -> Vec<Value>
    where
        F: AsyncFnMut(),
    {
        let mut first: Vec<Option<Value>> = vec![None; ops.len()];
        for _ in 0..30 {
            trigger().await;
            let deadline = Instant::now() + Duration::from_secs(1);
            for (i, op) in ops.iter().enumerate() {
                if first[i].is_none() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    first[i] = self.try_event_for(op, left).await;
                    if let Some(event) = &first[i]
                        && event["event"] != "next"
                    {
                        self.fail(&format!("operation `{op}` ended while warming up: {event}"));
                    }
                }
            }
            if first.iter().all(Option::is_some) {
                return first.into_iter().flatten().collect();
            }
        }
        self.fail(&format!(
            "operations {ops:?} never received the warm-up events"
        ))
    }

    /// Closes the connection cleanly and waits for the client to exit.
    pub async fn disconnect(mut self) {
        self.process.shutdown().await;
    }

    fn fail(&self, what: &str) -> ! {
        self.process.fail(what)
    }
}

/// `data[field]` of a subscription event.
#[track_caller]
pub fn field<'a>(data: &'a Value, name: &str) -> &'a Value {
    let value = &data[name];
    assert!(
        value.is_object(),
        "no `{name}` in subscription data: {data:#}"
    );
    value
}

// ---------------------------------------------------------------------------
// Frame-level client (raw.mjs)
// ---------------------------------------------------------------------------

/// One WebSocket connection controlled frame by frame.
pub struct RawSocket {
    process: NodeProcess,
}

impl RawSocket {
    /// Starts connecting with `protocols` offered (none when empty); does not wait.
    pub fn start(server: &TestServer, protocols: &[&str]) -> RawSocket {
        let args = vec![
            "--url".to_owned(),
            server.ws_url(),
            "--protocols".to_owned(),
            json!(protocols).to_string(),
        ];
        RawSocket {
            process: NodeProcess::spawn(
                "raw.mjs",
                &args,
                format!("raw WebSocket to {} offering {protocols:?}", server.addr),
            ),
        }
    }

    /// Connects offering `graphql-transport-ws` and waits until the socket is open.
    pub async fn open(server: &TestServer) -> RawSocket {
        Self::open_with(server, &["graphql-transport-ws"]).await
    }

    /// Connects offering `protocols` and waits until the socket is open.
    pub async fn open_with(server: &TestServer, protocols: &[&str]) -> RawSocket {
        let mut socket = Self::start(server, protocols);
        loop {
            let event = socket.event().await;
            match event["event"].as_str() {
                Some("upgrade") => {}
                Some("open") => return socket,
                _ => socket.fail(&format!("expected the socket to open, got {event}")),
            }
        }
    }

    /// Stops reading from the socket, like a client on a congested link.
    pub fn pause_reading(&mut self) {
        self.process.command(json!({ "pauseReading": true }));
    }

    /// Reads from the socket again after [`RawSocket::pause_reading`].
    pub fn resume_reading(&mut self) {
        self.process.command(json!({ "pauseReading": false }));
    }

    /// Sends `frame` serialised as one JSON text frame.
    pub fn send(&mut self, frame: Value) {
        self.process.command(json!({ "send": frame }));
    }

    /// Sends exactly `text` as a text frame.
    pub fn send_text(&mut self, text: &str) {
        self.process.command(json!({ "send": text }));
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.process
            .command(json!({ "sendBinary": STANDARD.encode(bytes) }));
    }

    /// Sends a close frame.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.process
            .command(json!({ "close": { "code": code, "reason": reason } }));
    }

    /// The next event (`upgrade`, `open`, `message`, `close`, `error`, ...), failing after [`WAIT`].
    pub async fn event(&mut self) -> Value {
        self.event_within(WAIT).await
    }

    pub async fn event_within(&mut self, timeout: Duration) -> Value {
        match self.process.recv(timeout).await {
            Some(event) => event,
            None => self.fail(&format!(
                "no event within {timeout:?} (or the client exited)"
            )),
        }
    }

    /// The next event within `timeout`, if any.
    pub async fn try_event_within(&mut self, timeout: Duration) -> Option<Value> {
        self.process.recv(timeout).await
    }

    /// The next event must be a JSON text message; returns it.
    pub async fn expect_message(&mut self) -> Value {
        let event = self.event().await;
        if event["event"] != "message" || !event["json"].is_object() {
            self.fail(&format!("expected a JSON message, got {event}"));
        }
        event["json"].clone()
    }

    /// The next message must have `type`; returns it.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let message = self.expect_message().await;
        if message["type"] != kind {
            self.fail(&format!("expected a `{kind}` message, got {message}"));
        }
        message
    }

    /// The next message other than a legacy keep-alive (`ka`).
    pub async fn expect_message_skipping_ka(&mut self) -> Value {
        loop {
            let message = self.expect_message().await;
            if message["type"] != "ka" {
                return message;
            }
        }
    }

    /// The next event must be the socket closing (within `timeout`); returns its code and reason.
    pub async fn expect_close_within(&mut self, timeout: Duration) -> (u16, String) {
        let event = self.event_within(timeout).await;
        if event["event"] != "close" {
            self.fail(&format!("expected the socket to close, got {event}"));
        }
        let code = event["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or_else(|| self.fail(&format!("close without a code: {event}")));
        (
            code,
            event["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }

    pub async fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(WAIT).await
    }

    /// Asserts the socket is closed with `code`.
    pub async fn expect_close_code(&mut self, code: u16, context: &str) -> String {
        let (got, reason) = self.expect_close().await;
        if got != code {
            self.fail(&format!(
                "{context}: expected close code {code}, got {got} ({reason:?})"
            ));
        }
        reason
    }

    /// Asserts that nothing at all arrives for [`QUIET`].
    pub async fn expect_quiet(&mut self) {
        if let Some(event) = self.process.recv(QUIET).await {
            self.fail(&format!("expected nothing, got {event}"));
        }
    }

    /// `connection_init` with `{"token": token}` (or `{}`), then the ack.
    pub async fn init(&mut self, token: Option<&str>) {
        let payload = token.map_or_else(|| json!({}), |t| json!({ "token": t }));
        self.send(json!({ "type": "connection_init", "payload": payload }));
        self.expect_type("connection_ack").await;
    }

    /// Sends a graphql-transport-ws `subscribe`.
    pub fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "type": "subscribe",
            "id": id,
            "payload": { "query": query, "variables": variables },
        }));
    }

    /// Closes the socket cleanly and waits for the client to exit.
    pub async fn shutdown(mut self) {
        self.process.shutdown().await;
    }

    fn fail(&self, what: &str) -> ! {
        self.process.fail(what)
    }
}

// ---------------------------------------------------------------------------
// Other reference clients (tests/clients/): graphql-sse and Apollo Client
// ---------------------------------------------------------------------------

/// `tests/clients` in the source tree: graphql-sse's client (`sse.mjs`) and Apollo Client
/// with its persisted-queries link (`apollo.mjs`).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
}

impl TestServer {
    /// `http://<addr>/graphql/stream`.
    pub fn sse_url(&self) -> String {
        format!("http://{}/graphql/stream", self.addr)
    }
}

impl Subscriber {
    /// A graphql-sse client (distinct connections mode, or single connection mode with
    /// `single`) with `ops` subscribed at once; does not wait. Its events have the shape of
    /// the graphql-ws client's, so every `Subscriber` method works on it.
    pub fn start_sse(
        server: &TestServer,
        token: Option<&str>,
        ops: &[(&str, &str, Value)],
        single: bool,
    ) -> Subscriber {
        let mut args = vec!["--url".to_owned(), server.sse_url()];
        if let Some(token) = token {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        if single {
            args.push("--single".to_owned());
        }
        for (id, query, variables) in ops {
            args.push("--op".to_owned());
            args.push(json!({ "id": id, "query": query, "variables": variables }).to_string());
        }
        Subscriber {
            process: NodeProcess::spawn_in(
                &clients_dir(),
                "sse.mjs",
                &args,
                format!("graphql-sse client of {} (single: {single})", server.addr),
            ),
            buffer: VecDeque::new(),
        }
    }
}

/// Runs `ops` (`{"kind": "query"|"mutation", "query": ..., "variables": ...}`) one after the
/// other through Apollo Client with its persisted-queries link (hashed queries over GET with
/// `get`), and returns every line it printed: one `request` per HTTP request (method,
/// whether it carried the document, its `persistedQuery`, the status and body), one
/// `result` or `failure` per operation.
pub async fn run_apollo(
    server: &TestServer,
    token: Option<&str>,
    ops: &[Value],
    get: bool,
) -> Vec<Value> {
    let mut args = vec![
        "--url".to_owned(),
        server.url("/graphql"),
        "--ops".to_owned(),
        Value::Array(ops.to_vec()).to_string(),
    ];
    if let Some(token) = token {
        args.extend(["--token".to_owned(), token.to_owned()]);
    }
    if get {
        args.push("--get".to_owned());
    }
    let mut process = NodeProcess::spawn_in(
        &clients_dir(),
        "apollo.mjs",
        &args,
        format!("Apollo Client of {}", server.addr),
    );
    let mut lines = Vec::new();
    loop {
        match process.recv(WAIT).await {
            Some(line) if line["event"] == "done" => return lines,
            Some(line) => lines.push(line),
            None => process.fail("Apollo Client did not finish"),
        }
    }
}
