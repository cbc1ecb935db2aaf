//! GraphiQL as a person meets it: the page on `GET /graphql` in Debian's Chromium, driven by
//! playwright-core (tests/graphiql/drive.mjs), with no internet. The CDN files the page
//! loads are the npm packages of the same pinned versions (tests/graphiql/package.json),
//! served by a small static server started here, which `--graphiql-assets-url` points at.
//!
//! Chromium (`/usr/bin/chromium`, Debian's `chromium` package; `.ci/run` installs it) missing
//! fails the browser test under `CI=true` and is a loud skip elsewhere, like Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::fixtures::team;
use common::realtime::ensure_npm_packages;
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha384};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Upper bound on one wait for the browser (page load, a response, a live update).
const WAIT: Duration = Duration::from_secs(90);

fn graphiql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("graphiql")
}

fn node_modules() -> PathBuf {
    graphiql_dir().join("node_modules")
}

// ---------------------------------------------------------------------------
// The CDN, mirrored from node_modules
// ---------------------------------------------------------------------------

/// Serves `/<package>@<version>/<file>` (the CDN layout) from `tests/graphiql/node_modules`,
/// only for the installed version of each package, with the CORS header a CDN sends
/// (integrity-checked `crossorigin` loads need it).
struct Mirror {
    addr: SocketAddr,
    served: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    async fn start() -> Mirror {
        ensure_npm_packages(&graphiql_dir());
        let served = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&served);
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let log = Arc::clone(&log);
            async move {
                let response = mirror_file(uri.path());
                if response.status() == StatusCode::OK {
                    log.lock().unwrap().push(uri.path().to_owned());
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Mirror { addr, served, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file behind a CDN path, if that package is installed at that version.
fn mirrored_path(path: &str) -> Option<PathBuf> {
    let (spec, file) = path.trim_start_matches('/').split_once('/')?;
    let (package, version) = spec.rsplit_once('@')?;
    if file.split('/').any(|part| part == ".." || part.is_empty()) || package.contains('/') {
        return None;
    }
    let dir = node_modules().join(package);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("package.json")).ok()?).ok()?;
    (manifest["version"] == version).then(|| dir.join(file))
}

fn mirror_file(path: &str) -> Response {
    let found = mirrored_path(path).and_then(|p| Some((std::fs::read(&p).ok()?, p)));
    let Some((bytes, file)) = found else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap();
    };
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Body::from(bytes))
        .unwrap()
}

// ---------------------------------------------------------------------------
// The page as served
// ---------------------------------------------------------------------------

/// GraphiQL's page and its Content-Security-Policy, as a browser asks for them.
async fn fetch_page(server: &TestServer) -> (String, String) {
    let response = server
        .client
        .get(server.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let policy = response
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.text().await.unwrap(), policy)
}

/// `(url, integrity)` of every `src=`/`href=` in the page (an empty integrity when missing),
/// except the inline `data:` icon.
fn page_assets(page: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + tag[start..].find('"')?;
        Some(tag[start..end].to_owned())
    };
    page.split('<')
        .filter(|tag| tag.starts_with("script") || tag.starts_with("link"))
        .filter_map(|tag| {
            let url = attribute(tag, "src").or_else(|| attribute(tag, "href"))?;
            (!url.starts_with("data:"))
                .then(|| (url, attribute(tag, "integrity").unwrap_or_default()))
        })
        .collect()
}

fn sha384_integrity(bytes: &[u8]) -> String {
    format!("sha384-{}", STANDARD.encode(Sha384::digest(bytes)))
}

async fn start_server(backend: Backend, assets_url: Option<&str>) -> TestServer {
    let mut options = ServerOptions::default();
    if let Some(url) = assets_url {
        options
            .env
            .push(("STEPWISE_GRAPHIQL_ASSETS_URL".into(), url.into()));
    }
    TestServer::start_with(backend, options).await
}

/// Every asset the page names is a pinned file of the npm packages installed here, with
/// the sha384 of that exact file; the policy allows those URLs and nothing inline but by
/// nonce. The hashes in the source cannot drift from the packages without failing here.
async fn page_pins_its_assets_with_integrity_hashes(backend: Backend) {
    let mirror = Mirror::start().await;
    let server = start_server(backend, Some(&mirror.url())).await;
    let (page, policy) = fetch_page(&server).await;
    let assets = page_assets(&page);
    assert_eq!(
        assets.len(),
        4,
        "react, react-dom, graphiql js + css: {assets:#?}"
    );
    for (url, integrity) in &assets {
        let path = url
            .strip_prefix(&mirror.url())
            .unwrap_or_else(|| panic!("{url} is not loaded from --graphiql-assets-url"));
        let file = mirrored_path(path)
            .unwrap_or_else(|| panic!("{url} is not a file of the installed npm packages"));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            integrity,
            &sha384_integrity(&bytes),
            "integrity of {url} (from {})",
            file.display()
        );
        assert!(!url.contains(".development."), "{url}: a development build");
        assert!(
            policy.split([' ', ';']).any(|source| source == url),
            "{url} is not allowed by the policy: {policy}"
        );
    }
    for directive in [
        "default-src 'none'",
        "img-src data:",
        "font-src data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(policy.contains(directive), "no `{directive}` in {policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no nonce in {policy}"));
    assert_eq!(
        page.matches(&format!("nonce=\"{nonce}\"")).count(),
        2,
        "the inline style and script carry the policy's nonce"
    );
    assert!(
        policy.contains(&format!(
            "connect-src 'self' ws://{0} wss://{0}",
            server.addr
        )),
        "{policy}"
    );

    // Without the setting, the same pinned files come from the public CDN.
    let default = start_server(backend, None).await;
    let (page, _) = fetch_page(&default).await;
    for (url, _) in page_assets(&page) {
        assert!(url.starts_with("https://unpkg.com/"), "{url}");
    }
}

both_backends!(page_pins_its_assets_with_integrity_hashes);

// ---------------------------------------------------------------------------
// In the browser
// ---------------------------------------------------------------------------

/// drive.mjs as a child process, read line by line.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    stderr: Arc<Mutex<String>>,
    transcript: Vec<Value>,
}

impl Driver {
    fn spawn(args: &[(&str, &str)]) -> Driver {
        let mut cmd = Command::new("node");
        cmd.arg("drive.mjs");
        for (name, value) in args {
            cmd.arg(format!("--{name}")).arg(value);
        }
        let mut child = cmd
            .current_dir(graphiql_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node drive.mjs (Node.js 20+ needed)");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({ "event": "stdout", "text": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        });
        Driver {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            transcript: Vec::new(),
        }
    }

    /// The next event called `name` (others are kept in the transcript only).
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            match tokio::time::timeout(WAIT, self.lines.recv()).await {
                Ok(Some(event)) => {
                    self.transcript.push(event.clone());
                    if event["event"] == name {
                        return event;
                    }
                    if event["event"] == "error" {
                        self.fail(&format!("the browser driver failed waiting for {name}"));
                    }
                }
                Ok(None) => self.fail(&format!("the driver exited before {name}")),
                Err(_) => self.fail(&format!("no {name} within {WAIT:?}")),
            }
        }
    }

    /// Waits until the response pane shows a subscription payload `accept`s; returns it.
    async fn expect_subscription(&mut self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = self.expect("subscriptionResult").await;
            let shown: Value = serde_json::from_str(event["text"].as_str().unwrap_or_default())
                .unwrap_or(Value::Null);
            if accept(&shown) {
                return shown;
            }
            if shown["errors"].is_array() {
                self.fail(&format!("the subscription failed while waiting for {what}"));
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn fail(&self, what: &str) -> ! {
        let events: Vec<String> = self.transcript.iter().map(Value::to_string).collect();
        panic!(
            "{what}\n----- driver events -----\n{}\n----- driver stderr -----\n{}",
            events.join("\n"),
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stdin = None;
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whether Chromium is installed; a loud skip outside CI, a failure under `CI=true`.
fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{CHROMIUM} is missing (CI=true): install Debian's `chromium` package (.ci/run does)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n********************************************************\n\
         SKIPPED: {CHROMIUM} is missing; `apt-get install chromium` to run the browser test\n\
         ********************************************************"
    );
    false
}

/// The page renders with its sign-in hints, a query typed into the editor returns data, and
/// a `runUpdated` subscription started from GraphiQL shows each step reported over HTTP as
/// it happens — all with the CSP enforced and nothing loaded from anywhere but the server
/// and the asset mirror. Leaves a screenshot in target/graphiql-artifacts/.
async fn graphiql_works_in_chromium(backend: Backend) {
    if !chromium_available() {
        return;
    }
    let mirror = Mirror::start().await;
    let server = start_server(backend, Some(&mirror.url())).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Checkout", 3).await;
    let run = start_run(&server, token, &workflow).await;
    let run_id = str_field(&run, "id");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("graphiql-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join(format!("graphiql-{backend:?}.png").to_lowercase());
    let _ = std::fs::remove_file(&screenshot);

    let query = "{ me { email company { name } } }";
    let subscription = format!(
        "subscription {{ runUpdated(runId: \"{run_id}\") {{ run {{ id status stepsCompleted stepsTotal }} }} }}"
    );
    let page_url = server.url("/graphql");
    let mut driver = Driver::spawn(&[
        ("page", &page_url),
        ("token", token),
        ("query", query),
        ("subscription", &subscription),
        ("screenshot", &screenshot.to_string_lossy()),
        ("browser", CHROMIUM),
        ("timeout-ms", "240000"),
    ]);

    let rendered = driver.expect("rendered").await;
    let default_query = rendered["query"].as_str().unwrap_or_default();
    for hint in ["signup(", "login(", "me {"] {
        assert!(
            default_query.contains(hint),
            "the default query shows how to sign in ({hint}): {default_query}"
        );
    }
    assert_eq!(
        rendered["headers"], r#"{"Authorization": "Bearer <token>"}"#,
        "the headers pane shows where the token goes"
    );

    let result = driver.expect("queryResult").await;
    let shown: Value = serde_json::from_str(result["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        shown["data"]["me"],
        json!({ "email": acme.admin_email, "company": { "name": "Acme" } }),
        "the typed query's answer, as the response pane shows it"
    );

    // The first payload is the run's current state; then one per step reported over HTTP.
    let first = driver
        .expect_subscription("the run's current state", |v| {
            v["data"]["runUpdated"]["run"]["id"] == run_id.as_str()
        })
        .await;
    assert_eq!(first["data"]["runUpdated"]["run"]["status"], "RUNNING");
    assert_eq!(first["data"]["runUpdated"]["run"]["stepsCompleted"], 0);
    for (done, step) in steps.iter().enumerate() {
        report_step(&server, token, &run_id, step, outcome("SUCCESS")).await;
        driver
            .expect_subscription(&format!("stepsCompleted {}", done + 1), |v| {
                v["data"]["runUpdated"]["run"]["stepsCompleted"] == done + 1
            })
            .await;
    }
    finish_run(&server, token, &run_id, "SUCCEEDED", None).await;
    driver
        .expect_subscription("SUCCEEDED", |v| {
            v["data"]["runUpdated"]["run"]["status"] == "SUCCEEDED"
        })
        .await;

    driver.send("finish");
    let done = driver.expect("done").await;
    assert_eq!(
        done["cspViolations"],
        json!([]),
        "the policy blocked something the page needs"
    );
    let styles = done["styles"].as_array().unwrap();
    assert!(
        styles.len() >= 2
            && styles.iter().all(|s| s["rules"].as_u64() > Some(0))
            && styles.iter().any(|s| s["text"]
                .as_str()
                .unwrap()
                .contains("with-scroll-bars-hidden")),
        "the page's style and the one GraphiQL's dialog adds both apply: {styles:#?}"
    );
    assert_eq!(done["pageErrors"], json!([]), "script errors on the page");
    assert_eq!(
        done["consoleErrors"],
        json!([]),
        "errors in the browser console"
    );
    let server_origin = server.url("/");
    let mirror_origin = format!("{}/", mirror.url());
    for url in done["requests"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            url.starts_with(&server_origin) || url.starts_with(&mirror_origin),
            "the page loaded {url}, from neither the server nor the asset mirror"
        );
    }
    let mut served = mirror.served();
    served.sort();
    assert_eq!(
        served,
        [
            "/graphiql@4.1.2/graphiql.min.css",
            "/graphiql@4.1.2/graphiql.min.js",
            "/react-dom@18.3.1/umd/react-dom.production.min.js",
            "/react@18.3.1/umd/react.production.min.js",
        ],
        "each pinned asset loaded once from the mirror"
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a screenshot",
        screenshot.display()
    );
}

both_backends!(graphiql_works_in_chromium);
