//! Automatic persisted queries as Apollo Client's persisted-queries link (npm
//! `@apollo/client/link/persisted-queries`, run by tests/clients/apollo.mjs) uses them, over
//! POST and GET, and the allow-list mode (`--persisted-queries-only`) on every transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::team;
use common::realtime::{Subscriber, run_apollo};
use common::{Backend, ServerOptions, TestServer};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn requests(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["event"] == "request").collect()
}

fn results(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "result" || l["event"] == "failure")
        .collect()
}

/// A request that only named its document by hash and was told the server does not know it.
#[track_caller]
fn assert_not_found(request: &Value) {
    assert_eq!(request["hasQuery"], false, "{request}");
    assert!(
        request["persistedQuery"]["sha256Hash"].is_string(),
        "{request}"
    );
    assert_eq!(
        request["body"]["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{request}"
    );
    assert_eq!(
        request["body"]["errors"][0]["message"],
        "PersistedQueryNotFound"
    );
}

/// A request answered with data.
#[track_caller]
fn assert_served(request: &Value, method: &str, has_query: bool) {
    assert_eq!(request["method"], method, "{request}");
    assert_eq!(request["hasQuery"], has_query, "{request}");
    assert_eq!(request["status"], 200, "{request}");
    assert!(request["body"]["errors"].is_null(), "{request}");
    assert!(request["body"]["data"].is_object(), "{request}");
}

both_backends!(apollo_sends_hashes_and_the_document_only_when_asked);
async fn apollo_sends_hashes_and_the_document_only_when_asked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let me = json!({ "kind": "query", "query": "query Me { me { id email } }" });
    let rename = json!({
        "kind": "mutation",
        "query": "mutation Rename($name: String!) { renameCompany(name: $name) { id name } }",
        "variables": { "name": "Acme Renamed" },
    });

    // POST (the link's default): unknown hash, then the document; then the hash alone.
    let lines = run_apollo(
        &server,
        Some(token),
        &[me.clone(), me.clone(), rename.clone()],
        false,
    )
    .await;
    let sent = requests(&lines);
    assert_eq!(sent.len(), 5, "{lines:#?}");
    assert_eq!(sent[0]["method"], "POST");
    assert_not_found(sent[0]);
    assert_served(sent[1], "POST", true);
    assert_served(sent[2], "POST", false);
    assert_not_found(sent[3]);
    assert_served(sent[4], "POST", true);
    let answers = results(&lines);
    assert_eq!(
        answers[0]["data"]["me"]["id"],
        acme.admin_id.as_str(),
        "{lines:#?}"
    );
    assert_eq!(
        answers[1]["data"]["me"]["email"], "admin@acme.test",
        "{lines:#?}"
    );
    assert_eq!(answers[2]["data"]["renameCompany"]["name"], "Acme Renamed");

    // A second client (GET for hashed queries): the instance already knows `Me` and the
    // mutation; a new query is asked for once, then served by hash over GET.
    let users = json!({ "kind": "query", "query": "query Team { users { id role } }" });
    let lines = run_apollo(
        &server,
        Some(token),
        &[me.clone(), users.clone(), users, rename],
        true,
    )
    .await;
    let sent = requests(&lines);
    assert_eq!(sent.len(), 5, "{lines:#?}");
    assert_served(sent[0], "GET", false);
    assert_eq!(sent[1]["method"], "GET");
    assert_not_found(sent[1]);
    // The link sends the full document with POST.
    assert_served(sent[2], "POST", true);
    assert_served(sent[3], "GET", false);
    // Mutations are never sent over GET.
    assert_served(sent[4], "POST", false);
    let answers = results(&lines);
    assert_eq!(answers.len(), 4);
    assert_eq!(
        answers[2]["data"]["users"][0]["role"], "ADMIN",
        "{lines:#?}"
    );
}

/// POSTs a GraphQL request body as is.
async fn post(server: &TestServer, token: &str, body: Value) -> Value {
    server
        .client
        .post(server.url("/graphql"))
        .header("authorization", format!("Bearer {token}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

both_backends!(hashes_must_match_and_the_cache_is_bounded);
async fn hashes_must_match_and_the_cache_is_bounded(backend: Backend) {
    let budget: usize = 64 * 1024;
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_PERSISTED_QUERY_CACHE_BYTES".to_owned(),
            budget.to_string(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let code = |resp: &Value| resp["errors"][0]["extensions"]["code"].clone();

    // A document cannot be filed under another document's hash.
    let other = sha256_hex("{ users { id } }");
    let resp = post(
        &server,
        token,
        json!({ "query": "{ me { id } }", "extensions": extension(&other) }),
    )
    .await;
    assert_eq!(code(&resp), "BAD_USER_INPUT", "{resp}");
    assert_eq!(
        resp["errors"][0]["extensions"]["field"],
        "extensions.persistedQuery.sha256Hash"
    );
    let resp = post(&server, token, json!({ "extensions": extension(&other) })).await;
    assert_eq!(
        code(&resp),
        "PERSISTED_QUERY_NOT_FOUND",
        "the mismatch was kept: {resp}"
    );
    for bad in [
        json!({ "persistedQuery": { "version": 2, "sha256Hash": other } }),
        json!({ "persistedQuery": { "version": 1, "sha256Hash": "abc" } }),
        json!({ "persistedQuery": "yes" }),
    ] {
        let resp = post(&server, token, json!({ "extensions": bad })).await;
        assert_eq!(code(&resp), "BAD_USER_INPUT", "{bad}: {resp}");
        assert!(resp.get("data").is_none(), "{resp}");
    }
    // A document that fails validation is never kept.
    let invalid = "{ noSuchField }";
    let resp = post(
        &server,
        token,
        json!({ "query": invalid, "extensions": extension(&sha256_hex(invalid)) }),
    )
    .await;
    assert_eq!(code(&resp), "BAD_USER_INPUT", "{resp}");
    let resp = post(
        &server,
        token,
        json!({ "extensions": extension(&sha256_hex(invalid)) }),
    )
    .await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_FOUND", "{resp}");

    // Many distinct documents: the cache keeps the recent ones within its bytes.
    let documents: Vec<String> = (0..300)
        .map(|i| format!("query Q{i} {{ me {{ id }} }} # {}", "x".repeat(1_000)))
        .collect();
    for document in &documents {
        let resp = post(
            &server,
            token,
            json!({ "query": document, "extensions": extension(&sha256_hex(document)) }),
        )
        .await;
        assert!(resp["errors"].is_null(), "{resp}");
    }
    let first = post(
        &server,
        token,
        json!({ "extensions": extension(&sha256_hex(&documents[0])) }),
    )
    .await;
    assert_eq!(
        code(&first),
        "PERSISTED_QUERY_NOT_FOUND",
        "the oldest was evicted: {first}"
    );
    let last = post(
        &server,
        token,
        json!({ "extensions": extension(&sha256_hex(&documents[299])) }),
    )
    .await;
    assert_eq!(last["data"]["me"]["id"], acme.admin_id.as_str(), "{last}");
    let bytes = server.metric("stepwise_persisted_queries_bytes").await;
    let kept = server.metric("stepwise_persisted_queries").await;
    assert!(
        bytes <= budget as f64,
        "{bytes} bytes kept, budget {budget}"
    );
    assert!((20.0..=64.0).contains(&kept), "{kept} documents kept");
}

both_backends!(an_allow_list_refuses_every_other_operation_on_every_transport);
async fn an_allow_list_refuses_every_other_operation_on_every_transport(backend: Backend) {
    // Apollo prints documents in its own layout; the allowed hash is of that text.
    let allowed_text = "query Me {\n  me {\n    id\n    __typename\n  }\n}";
    // Signing up is an operation too: a deployment lists it with the rest.
    let signup = "mutation($c: String!, $n: String!, $e: String!, $p: String!) { \
                  signup(companyName: $c, name: $n, email: $e, password: $p) { token user { id } } }";
    let dir = std::env::temp_dir().join(format!("stepwise-apq-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("allowed.txt");
    std::fs::write(
        &list,
        format!(
            "# allowed operations\n{}\n\n{}\n",
            sha256_hex(allowed_text),
            sha256_hex(signup).to_uppercase()
        ),
    )
    .unwrap();
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_PERSISTED_QUERIES_ONLY".to_owned(),
            list.display().to_string(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let signed_up: Value = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({
            "query": signup,
            "variables": { "c": "Acme", "n": "Ada", "e": "ada@acme.test", "p": common::PASSWORD },
            "extensions": extension(&sha256_hex(signup)),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_up["data"]["signup"]["token"]
        .as_str()
        .expect("signed up")
        .to_owned();
    let token = token.as_str();
    let admin_id = signed_up["data"]["signup"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Plain operations: refused over HTTP, WebSocket and SSE alike.
    let resp = post(&server, token, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(
        resp["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{resp}"
    );
    assert!(resp.get("data").is_none(), "{resp}");
    let mut ws = Subscriber::start(&server, Some(token), &[("q", "{ me { id } }", json!({}))]);
    ws.expect_error_code("q", "FORBIDDEN").await;
    ws.disconnect().await;
    let mut sse = Subscriber::start_sse(
        &server,
        Some(token),
        &[("q", "{ me { id } }", json!({}))],
        false,
    );
    sse.expect_error_code("q", "FORBIDDEN").await;
    sse.disconnect().await;

    // Apollo's link: the listed operation is registered and served; another is refused
    // even with its document.
    let me = json!({ "kind": "query", "query": "query Me { me { id } }" });
    let users = json!({ "kind": "query", "query": "query Team { users { id } }" });
    let lines = run_apollo(&server, Some(token), &[me.clone(), me, users], false).await;
    let answers = results(&lines);
    assert_eq!(
        answers[0]["data"]["me"]["id"],
        admin_id.as_str(),
        "{lines:#?}"
    );
    assert_eq!(
        answers[1]["data"]["me"]["id"],
        admin_id.as_str(),
        "{lines:#?}"
    );
    let refused = answers[2];
    assert!(
        refused.to_string().contains("FORBIDDEN") || refused.to_string().contains("persisted"),
        "{lines:#?}"
    );
    assert!(
        refused["data"].is_null() || refused["data"]["users"].is_null(),
        "{lines:#?}"
    );
    let sent = requests(&lines);
    assert_eq!(
        sent.last().unwrap()["body"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN",
        "{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
