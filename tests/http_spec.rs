//! GraphQL over HTTP: graphql-http's own audit suite against the running server, the
//! status codes and media types of the spec, CSRF, CORS, switches for production, and the
//! query and request limits (each refused while a normal query still succeeds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Backend, PASSWORD, ServerOptions, TestServer, realtime::ensure_npm_packages};

const GQL_RESPONSE: &str = "application/graphql-response+json";
const JSON_TYPE: &str = "application/json";

fn audit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("http-audit")
}

/// What one raw HTTP exchange gave back.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The first error's `extensions.code`.
    fn code(&self) -> String {
        self.json()["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    fn assert_refused(&self, status: StatusCode, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        let body = self.json();
        assert_eq!(self.code(), code, "{what}: {body:#}");
        assert!(
            body.get("data").is_none(),
            "{what}: a refused request has no data entry: {body:#}"
        );
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request failed");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn post(server: &TestServer) -> reqwest::RequestBuilder {
    server.client.post(server.url("/graphql"))
}

async fn post_json(server: &TestServer, accept: Option<&str>, body: &Value) -> Answer {
    let mut request = post(server)
        .header(header::CONTENT_TYPE, JSON_TYPE)
        .body(body.to_string());
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    send(request).await
}

async fn signup(server: &TestServer, who: &str) -> String {
    let email = format!("{who}@{who}.example");
    server
        .signup(&format!("{who} Inc"), who, &email, PASSWORD)
        .await
        .0
}

/// The question a well-behaved client keeps asking while an abusive one is refused.
async fn normal_query_succeeds(server: &TestServer, token: &str) {
    let data = server
        .gql_ok(
            "{ me { email } workflows(first: 5) { edges { node { id } } } }",
            json!({}),
            Some(token),
        )
        .await;
    assert!(data["me"]["email"].is_string(), "{data:#}");
}

// ---------------------------------------------------------------------------
// graphql-http's audit suite
// ---------------------------------------------------------------------------

/// One audit result line of `audit.mjs`.
fn run_audit(server: &TestServer, token: &str) -> Vec<Value> {
    let dir = audit_dir();
    ensure_npm_packages(&dir);
    let output = Command::new("node")
        .arg("audit.mjs")
        .args(["--url", &server.url("/graphql"), "--token", token])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("could not start `node audit.mjs` (Node.js 20+ is needed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "audit.mjs failed ({}):\n{stdout}\n{}\n--- server log ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log_tail()
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l}: {e}")))
        .collect()
}

async fn graphql_http_audit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = signup(&server, "auditor").await;
    let results = run_audit(&server, &token);
    assert!(results.len() > 40, "too few audits ran: {results:#?}");
    // MUST failures are "error", SHOULD failures "warn": neither is acceptable. MAY audits
    // ("notice") are optional, but today they all pass too; report any that stop passing.
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r["status"] == "error" || r["status"] == "warn")
        .collect();
    assert!(
        failed.is_empty(),
        "graphql-http audits failed:\n{}",
        failed
            .iter()
            .map(|r| format!("{r:#}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for notice in results.iter().filter(|r| r["status"] == "notice") {
        eprintln!("graphql-http optional audit not passed: {notice}");
    }
    // Every audit ran with the token: it is still good afterwards.
    normal_query_succeeds(&server, &token).await;
}
both_backends!(graphql_http_audit);

// ---------------------------------------------------------------------------
// Media types and status codes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_header_picks_the_response_type() {
    let server = TestServer::start(Backend::Sqlite).await;
    let query = json!({ "query": "{ __typename }" });
    for (accept, expected) in [
        (None, JSON_TYPE),
        (Some("*/*"), JSON_TYPE),
        (Some(JSON_TYPE), JSON_TYPE),
        (Some(GQL_RESPONSE), GQL_RESPONSE),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            GQL_RESPONSE,
        ),
        (
            Some("application/json, application/graphql-response+json;q=0.5"),
            JSON_TYPE,
        ),
    ] {
        let answer = post_json(&server, accept, &query).await;
        assert_eq!(answer.status, StatusCode::OK, "{accept:?}: {answer:?}");
        assert!(
            answer.content_type().starts_with(expected),
            "Accept {accept:?} must be answered with {expected}: {answer:?}"
        );
        assert_eq!(answer.json()["data"]["__typename"], "Query");
    }
    let answer = post_json(&server, Some("text/xml"), &query).await;
    assert_eq!(answer.status, StatusCode::NOT_ACCEPTABLE, "{answer:?}");
    assert!(answer.json()["errors"][0]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_have_no_data_and_the_spec_status() {
    let server = TestServer::start(Backend::Sqlite).await;
    for (what, body) in [
        ("parse error", json!({ "query": "{" })),
        ("validation error", json!({ "query": "{ noSuchField }" })),
        (
            "variable coercion",
            json!({ "query": "query($id: ID!) { __typename }", "variables": { "id": null } }),
        ),
    ] {
        // 400 under the new media type, 200 under application/json (legacy clients).
        for (accept, status) in [
            (GQL_RESPONSE, StatusCode::BAD_REQUEST),
            (JSON_TYPE, StatusCode::OK),
        ] {
            let answer = post_json(&server, Some(accept), &body).await;
            answer.assert_refused(status, "BAD_USER_INPUT", &format!("{what} ({accept})"));
            assert!(answer.content_type().starts_with(accept), "{answer:?}");
        }
    }

    // Not GraphQL requests at all: 400 whatever the client accepts.
    for (what, body) in [
        ("malformed JSON", "{ \"query\": ".to_owned()),
        ("empty body", String::new()),
        ("no query", json!({ "qeury": "{ __typename }" }).to_string()),
        ("query not a string", json!({ "query": 1 }).to_string()),
        (
            "variables not a map",
            json!({ "query": "{ __typename }", "variables": "x" }).to_string(),
        ),
        (
            "operationName not a string",
            json!({ "query": "{ __typename }", "operationName": false }).to_string(),
        ),
    ] {
        for accept in [GQL_RESPONSE, JSON_TYPE] {
            let answer = send(
                post(&server)
                    .header(header::CONTENT_TYPE, JSON_TYPE)
                    .header(header::ACCEPT, accept)
                    .body(body.clone()),
            )
            .await;
            answer.assert_refused(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", what);
        }
    }

    // A field error is not a request error: 200 with data beside the error.
    let answer = post_json(
        &server,
        Some(GQL_RESPONSE),
        &json!({ "query": "{ me { id } }" }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = answer.json();
    assert!(body.get("data").is_some(), "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_serves_queries_and_graphiql_but_not_mutations() {
    let server = TestServer::start(Backend::Sqlite).await;
    let get = |query: &str| {
        server
            .client
            .get(server.url("/graphql"))
            .query(&[("query", query)])
            .header(header::ACCEPT, GQL_RESPONSE)
    };
    let answer = send(get("{ __typename }")).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json()["data"]["__typename"], "Query");

    let mutation = r#"mutation { signup(companyName: "X", name: "x", email: "x@x.example",
        password: "correct horse battery staple") { token } }"#;
    for query in [mutation, "mutation M { __typename }"] {
        let answer = send(get(query)).await;
        answer.assert_refused(StatusCode::METHOD_NOT_ALLOWED, "BAD_USER_INPUT", query);
        assert_eq!(answer.headers[header::ALLOW], "POST");
    }
    // A document with a query and a mutation: only the selected operation matters.
    let both = "query Q { __typename } mutation M { __typename }";
    let answer = send(get(both).query(&[("operationName", "Q")])).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let answer = send(get(both).query(&[("operationName", "M")])).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{answer:?}");
    assert_eq!(
        server.sql_count("users").await,
        0,
        "no state change over GET"
    );

    let page = send(
        server
            .client
            .get(server.url("/graphql"))
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8"),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("graphiql"), "{}", page.body);

    let answer = send(server.client.put(server.url("/graphql")).body("{}")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

// ---------------------------------------------------------------------------
// CSRF and CORS
// ---------------------------------------------------------------------------

/// What a cross-site page can send without a CORS preflight: `text/plain`,
/// `application/x-www-form-urlencoded` and `multipart/form-data` bodies, and GETs. None of
/// them may change anything; the first two never reach the schema at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_cross_site_requests_change_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let token = signup(&server, "victim").await;
    let invite = server.invite_token(&token).await;
    let rotate = "mutation { rotateInviteToken { id } }";
    let signup_mutation = r#"mutation { signup(companyName: "Spam", name: "s",
        email: "spam@spam.example", password: "correct horse battery staple") { token } }"#;
    let evil = "https://evil.example";

    for mutation in [rotate, signup_mutation] {
        let json_body = json!({ "query": mutation }).to_string();
        for content_type in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
        ] {
            let answer = send(
                post(&server)
                    .header(header::ORIGIN, evil)
                    .header(header::CONTENT_TYPE, content_type)
                    .bearer_auth(&token)
                    .body(json_body.clone()),
            )
            .await;
            answer.assert_refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BAD_USER_INPUT",
                content_type,
            );
        }
        let form = format!("query={}", urlencode(mutation));
        let answer = send(
            post(&server)
                .header(header::ORIGIN, evil)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // No content type at all (fetch with a Blob body, sendBeacon).
        let answer = send(post(&server).body(json_body.clone())).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // A GET (an <img> or a link).
        let answer = send(
            server
                .client
                .get(server.url("/graphql"))
                .header(header::ORIGIN, evil)
                .query(&[("query", mutation)]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{answer:?}");
    }

    // A forged multipart request cannot carry the victim's token (that needs the
    // Authorization header, which only a preflighted request may set): it is anonymous.
    let answer = send(
        post(&server)
            .header(header::ORIGIN, evil)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart_body(&json!({ "query": rotate }).to_string(), 0)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.code(), "UNAUTHENTICATED", "{answer:?}");

    assert_eq!(server.sql_count("users").await, 1, "no account was created");
    assert_eq!(
        server.invite_token(&token).await,
        invite,
        "the invite token was not rotated"
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const BOUNDARY: &str = "stepwise-test-boundary";

/// A GraphQL multipart request with `operations` and an empty `map`, padded with a junk
/// field of `padding` bytes.
/// A multipart request of `operations` with `padding` bytes of file: every part the spec
/// allows and nothing else (parts `map` does not name are refused), so the file is mapped
/// to a variable of its own.
fn multipart_body(operations: &str, padding: usize) -> Vec<u8> {
    let map = if padding > 0 {
        r#"{"0":["variables.padding"]}"#
    } else {
        "{}"
    };
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{map}\r\n"
    )
    .into_bytes();
    if padding > 0 {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"padding\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend(std::iter::repeat_n(b'x', padding));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn preflight(server: &TestServer, origin: &str) -> Answer {
    send(
        server
            .client
            .request(reqwest::Method::OPTIONS, server.url("/graphql"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,authorization",
            ),
    )
    .await
}

fn allow_origin(answer: &Answer) -> Option<String> {
    answer
        .headers
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let server = TestServer::start(Backend::Sqlite).await;
    let answer = preflight(&server, "https://app.example").await;
    assert_eq!(allow_origin(&answer), None, "{answer:?}");
    let answer = send(
        post(&server)
            .header(header::ORIGIN, "https://app.example")
            .header(header::CONTENT_TYPE, JSON_TYPE)
            .body(json!({ "query": "{ __typename }" }).to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(allow_origin(&answer), None, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_CORS_ALLOWED_ORIGINS".into(),
            "https://app.example,https://admin.example:8443".into(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, options).await;
    for origin in ["https://app.example", "https://admin.example:8443"] {
        let answer = preflight(&server, origin).await;
        assert!(answer.status.is_success(), "{answer:?}");
        assert_eq!(allow_origin(&answer).as_deref(), Some(origin), "{answer:?}");
        let allowed_headers = answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
            "{answer:?}"
        );
        let answer = send(
            post(&server)
                .header(header::ORIGIN, origin)
                .header(header::CONTENT_TYPE, JSON_TYPE)
                .body(json!({ "query": "{ __typename }" }).to_string()),
        )
        .await;
        assert_eq!(allow_origin(&answer).as_deref(), Some(origin), "{answer:?}");
    }
    for origin in ["https://evil.example", "http://app.example"] {
        let answer = preflight(&server, origin).await;
        assert_eq!(allow_origin(&answer), None, "{origin}: {answer:?}");
    }
}

// ---------------------------------------------------------------------------
// Production switches
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_and_graphiql_can_be_switched_off() {
    let options = ServerOptions {
        env: vec![
            ("STEPWISE_DISABLE_INTROSPECTION".into(), "true".into()),
            ("STEPWISE_DISABLE_GRAPHIQL".into(), "true".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, options).await;
    let token = signup(&server, "prod").await;
    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"Workflow\") { fields { name } } }",
    ] {
        let resp = server.gql(query, json!({}), Some(&token)).await;
        let schema_data = &resp["data"];
        assert!(
            resp["errors"].is_array()
                || schema_data.is_null()
                || schema_data
                    .as_object()
                    .is_some_and(|o| o.values().all(Value::is_null)),
            "introspection must be refused: {resp:#}"
        );
    }
    normal_query_succeeds(&server, &token).await;
    let page = send(
        server
            .client
            .get(server.url("/graphql"))
            .header(header::ACCEPT, "text/html,*/*;q=0.8"),
    )
    .await;
    assert!(!page.body.contains("graphiql"), "GraphiQL is off: {page:?}");
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{page:?}");

    // On by default.
    let server = TestServer::start(Backend::Sqlite).await;
    let data = server
        .gql_ok("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
}

/// GraphiQL and schema tools send graphql-js's introspection query; the default limits
/// (depth especially: `ofType` nests deep) must let it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_introspection_query_fits_the_default_limits() {
    let dir = audit_dir();
    ensure_npm_packages(&dir);
    let output = Command::new("node")
        .arg("introspection.mjs")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("could not start `node introspection.mjs` (Node.js 20+ is needed)");
    assert!(output.status.success(), "{output:?}");
    let query = String::from_utf8(output.stdout).expect("UTF-8");
    let server = TestServer::start(Backend::Sqlite).await;
    let data = server.gql_ok(&query, json!({}), None).await;
    assert!(
        data["__schema"]["types"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t["name"] == "Workflow")),
        "{data:#}"
    );
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// `{ workflows { ... runs { ... workflow { runs { ... } } } } }`, `cycles` times over:
/// four levels per cycle, one item per page (cheap, just deep).
fn deep_query(cycles: usize) -> String {
    let mut inner = "id".to_owned();
    for _ in 0..cycles {
        inner = format!("workflow {{ runs(first: 1) {{ edges {{ node {{ {inner} }} }} }} }}");
    }
    format!("{{ runs(first: 1) {{ edges {{ node {{ {inner} }} }} }} }}")
}

/// Sends an abusive request and, at the same time, a normal one; the abuse must be refused
/// as `expect` checks, the normal query must succeed.
async fn refused_while_normal_succeeds(
    server: &TestServer,
    token: &str,
    abuse: impl std::future::Future<Output = Answer>,
    expect: impl Fn(&Answer),
) {
    let (answer, ()) = tokio::join!(abuse, normal_query_succeeds(server, token));
    expect(&answer);
}

/// POSTs `query` as a signed-in client accepting `application/graphql-response+json`.
async fn query_as(server: &TestServer, token: &str, query: &str) -> Answer {
    send(
        post(server)
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, JSON_TYPE)
            .header(header::ACCEPT, GQL_RESPONSE)
            .body(json!({ "query": query }).to_string()),
    )
    .await
}

fn refused_by_limit(limit: &'static str) -> impl Fn(&Answer) {
    move |answer: &Answer| {
        answer.assert_refused(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", limit);
        assert_eq!(
            answer.json()["errors"][0]["extensions"]["limit"],
            limit,
            "{answer:?}"
        );
    }
}

async fn query_limits(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            ("STEPWISE_MAX_BODY_BYTES".into(), "65536".into()),
            ("STEPWISE_MAX_MULTIPART_BYTES".into(), "131072".into()),
            ("STEPWISE_REQUEST_TIMEOUT_MS".into(), "3000".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let token = signup(&server, "limits").await;
    // Depth: 3 levels + 4 per cycle; the default limit is 16.
    let shallow = query_as(&server, &token, &deep_query(2)).await;
    assert_eq!(
        shallow.status,
        StatusCode::OK,
        "depth 11 is fine: {shallow:?}"
    );
    refused_while_normal_succeeds(
        &server,
        &token,
        query_as(&server, &token, &deep_query(4)),
        refused_by_limit("depth"),
    )
    .await;

    // Complexity: nested pages multiply (100 × 100 × 100 health logs).
    let wide = "{ workflows(first: 100) { edges { node { runs(first: 100) { edges { node { \
                healthLogs(first: 100) { edges { node { id status } } } } } } } } } }";
    refused_while_normal_succeeds(
        &server,
        &token,
        query_as(&server, &token, wide),
        refused_by_limit("complexity"),
    )
    .await;
    // The same shape with small pages is fine: the cost follows `first`.
    let narrow = wide.replace("first: 100", "first: 10");
    let answer = query_as(&server, &token, &narrow).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(answer.json()["errors"].is_null(), "{answer:?}");

    // Aliases: 51 (the limit is 50).
    let aliases: Vec<String> = (0..51).map(|i| format!("a{i}: __typename")).collect();
    let query = format!("{{ {} }}", aliases.join(" "));
    refused_while_normal_succeeds(
        &server,
        &token,
        query_as(&server, &token, &query),
        refused_by_limit("aliases"),
    )
    .await;

    // Directives: 11 on one field (the limit is 10).
    let directives = " @skip(if: false)".repeat(11);
    let query = format!("{{ me{directives} {{ id }} }}");
    refused_while_normal_succeeds(
        &server,
        &token,
        query_as(&server, &token, &query),
        refused_by_limit("directives"),
    )
    .await;

    // Batches are refused outright.
    let one = json!({ "query": "{ __typename }" });
    let batch = send(
        post(&server)
            .header(header::CONTENT_TYPE, JSON_TYPE)
            .body(json!([one, one, one]).to_string()),
    );
    refused_while_normal_succeeds(&server, &token, batch, |answer| {
        answer.assert_refused(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", "batch");
    })
    .await;

    // Body size: a JSON body over 64 KiB, declared and streamed alike.
    let padding = "x".repeat(70_000);
    let big = json!({ "query": format!("{{ __typename }} # {padding}") }).to_string();
    let too_big = send(
        post(&server)
            .header(header::CONTENT_TYPE, JSON_TYPE)
            .body(big.clone()),
    );
    refused_while_normal_succeeds(&server, &token, too_big, |answer| {
        answer.assert_refused(StatusCode::PAYLOAD_TOO_LARGE, "BAD_USER_INPUT", "body size");
    })
    .await;
    let answer = raw_request(&server, &chunked_json_post(&big), None).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "streamed body: {answer}"
    );

    // Multipart has its own (larger) limit, and small multipart requests still work.
    let multipart = |padding: usize| {
        post(&server)
            .bearer_auth(&token)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart_body(
                &json!({ "query": "{ me { email } }", "variables": { "padding": null } })
                    .to_string(),
                padding,
            ))
    };
    let answer = send(multipart(100_000)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "multipart under its limit: {answer:?}"
    );
    assert!(
        answer.json()["data"]["me"]["email"].is_string(),
        "{answer:?}"
    );
    refused_while_normal_succeeds(&server, &token, send(multipart(200_000)), |answer| {
        answer.assert_refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            "multipart size",
        );
    })
    .await;

    // Timeout: a body that never finishes is cut off after 3 s with a TIMEOUT error, while
    // others are served meanwhile.
    let stalled = "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Content-Length: 100\r\n\r\n{\"query\":";
    let (answer, ()) = tokio::join!(
        raw_request(&server, stalled, Some(Duration::from_secs(20))),
        normal_query_succeeds(&server, &token)
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "stalled body: {answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");

    normal_query_succeeds(&server, &token).await;
}
both_backends!(query_limits);

/// A chunked POST (no Content-Length), so only counting the bytes can stop it.
fn chunked_json_post(body: &str) -> String {
    let mut request = "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                       Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_owned();
    for chunk in body.as_bytes().chunks(8192) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).expect("ASCII body"));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    request
}

/// Writes `request` as is and reads what comes back until the server closes or answers in
/// full (`wait` bounds the whole exchange).
async fn raw_request(server: &TestServer, request: &str, wait: Option<Duration>) -> String {
    let wait = wait.unwrap_or(Duration::from_secs(20));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        // The server may answer (and close) before reading everything; that is fine.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut received = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if response_complete(&received) {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    tokio::time::timeout(wait, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {wait:?}"))
}

/// Whether `bytes` hold a whole response with a Content-Length body.
fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|length| body.len() >= length)
}
