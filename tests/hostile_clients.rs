//! Clients that attack the transport rather than use it: documents built to crash or bloat
//! the parser, documents that would pin memory in the parsed-operation cache, multipart
//! requests that smuggle parts past the limits, forged request ids, slow connections, and
//! credentials leaking through the command line. Each is refused (or cut off) while the
//! server stays up and keeps serving well-behaved clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::realtime::RawSocket;
use common::{Backend, ServerOptions, TestServer};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};

const GQL_RESPONSE: &str = "application/graphql-response+json";

async fn server_with(backend: Backend, env: &[(&str, &str)]) -> TestServer {
    let options = ServerOptions {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ServerOptions::default()
    };
    TestServer::start_with(backend, options).await
}

/// Status and JSON body of a response.
async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}"));
    (status, body)
}

#[track_caller]
fn assert_limit(body: &Value, limit: &str, what: &str) {
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{what}: {body:#}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["limit"], limit,
        "{what}: {body:#}"
    );
    assert!(
        body.get("data").is_none(),
        "{what}: no data entry: {body:#}"
    );
}

/// The server is still up and answers a normal query.
async fn still_serving(server: &TestServer) {
    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK, "{}", server.log_tail());
    let data = server.gql_ok("{ __typename }", json!({}), None).await;
    assert_eq!(data["__typename"], "Query");
}

// ---------------------------------------------------------------------------
// 1. Documents that would crash or bloat the parser
// ---------------------------------------------------------------------------

/// The 4 KB document that used to overflow the parser's stack and abort the process.
fn nesting_bomb(levels: usize) -> String {
    format!(
        "{{ __typename @skip(if: {}{}) }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

both_backends!(parser_bombs_are_refused_on_every_transport);
async fn parser_bombs_are_refused_on_every_transport(backend: Backend) {
    let server = TestServer::start(backend).await;
    // 2,000 levels aborted the release build. In a debug build (these tests) the parser's
    // stack guard refuses that depth itself, but 500 levels get past it and overflow a later
    // recursive step, aborting the process just the same.
    for bomb in [nesting_bomb(500), nesting_bomb(2_000)] {
        // POST, under both response types.
        for (accept, status) in [
            (GQL_RESPONSE, StatusCode::BAD_REQUEST),
            ("application/json", StatusCode::OK),
        ] {
            let response = server
                .client
                .post(server.url("/graphql"))
                .header(header::ACCEPT, accept)
                .json(&json!({ "query": bomb }))
                .send()
                .await
                .expect("POST");
            let (got, body) = answer(response).await;
            assert_eq!(got, status, "POST accepting {accept}: {body:#}");
            assert_limit(&body, "nesting", "POST");
        }

        // GET ?query= (what an <img src> on any page can send).
        let response = server
            .client
            .get(server.url("/graphql"))
            .query(&[("query", bomb.as_str())])
            .header(header::ACCEPT, GQL_RESPONSE)
            .send()
            .await
            .expect("GET");
        let (status, body) = answer(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET: {body:#}");
        assert_limit(&body, "nesting", "GET");

        // WebSocket, anonymous, both protocols: an `error` message for the operation.
        for (protocol, start) in [
            ("graphql-transport-ws", "subscribe"),
            ("graphql-ws", "start"),
        ] {
            let mut socket = RawSocket::open_with(&server, &[protocol]).await;
            socket.send(json!({ "type": "connection_init", "payload": {} }));
            let ack = socket.expect_message_skipping_ka().await;
            assert_eq!(ack["type"], "connection_ack", "{protocol}: {ack}");
            socket.send(json!({ "type": start, "id": "bomb", "payload": { "query": bomb } }));
            let error = socket.expect_message_skipping_ka().await;
            assert_eq!(error["type"], "error", "{protocol}: {error}");
            assert_eq!(error["id"], "bomb", "{protocol}: {error}");
            assert_eq!(
                error["payload"][0]["extensions"]["limit"], "nesting",
                "{protocol}: {error}"
            );
            assert_eq!(
                error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
                "{protocol}: {error}"
            );
            // The connection survives and runs the next operation.
            socket.send(
                json!({ "type": start, "id": "next", "payload": { "query": "{ __typename }" } }),
            );
            let next = socket.expect_message_skipping_ka().await;
            assert_eq!(
                next["payload"]["data"]["__typename"], "Query",
                "{protocol}: {next}"
            );
            socket.shutdown().await;
        }
    }

    // A document of a million one-letter fields would parse into ~100 MB: refused by its
    // token count before the parse.
    let wide = format!("{{ {}}}", "a ".repeat(500_000));
    let response = server
        .client
        .post(server.url("/graphql"))
        .header(header::ACCEPT, GQL_RESPONSE)
        .json(&json!({ "query": wide }))
        .send()
        .await
        .expect("POST");
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    assert_limit(&body, "tokens", "a wide document");

    // Nesting up to the limit (64, the field's braces and parentheses included) parses.
    let (status, body) = answer(
        server
            .client
            .post(server.url("/graphql"))
            .json(&json!({ "query": nesting_bomb(62) }))
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert!(
        body["errors"][0]["extensions"]["limit"].is_null(),
        "62 levels are within the limit: {body:#}"
    );

    still_serving(&server).await;
}

// ---------------------------------------------------------------------------
// 4. The parsed-operation cache
// ---------------------------------------------------------------------------

/// Resident memory of the server process, in bytes.
fn server_rss(server: &TestServer) -> u64 {
    let pid = server.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Sends `count` requests made by `make` (two at a time, as a small client pool would).
async fn flood(count: usize, make: impl Fn(usize) -> reqwest::RequestBuilder) {
    let mut pending = Vec::new();
    for i in 0..count {
        pending.push(make(i).send());
        if pending.len() == 2 {
            for response in futures_util::future::join_all(pending.drain(..)).await {
                response.expect("request");
            }
        }
    }
    for response in futures_util::future::join_all(pending).await {
        response.expect("request");
    }
}

const CACHE_BUDGET: u64 = 2 * 1024 * 1024;
/// Each parses into ~1.8 MB (and takes half a second to parse in a debug build).
const REFUSED_DOCUMENTS: usize = 30;
/// Each parses into ~110 KB: within the budget's per-document share (1/16), and more of
/// them than the budget holds.
const VALID_DOCUMENTS: usize = 40;
/// Well above what the budget, a few parses in flight and the allocator's slack take (the
/// server grows by ~15 MB), well below what keeping every document took (~65 MB).
const RSS_GROWTH_BOUND: u64 = 40 * 1024 * 1024;

/// Entries and estimated bytes of the parsed-document cache, from `/metrics`.
async fn kept_documents(server: &TestServer) -> (f64, f64) {
    (
        server.metric("stepwise_parsed_documents").await,
        server.metric("stepwise_parsed_documents_bytes").await,
    )
}

both_backends!(parsed_documents_are_kept_within_a_memory_budget);
async fn parsed_documents_are_kept_within_a_memory_budget(backend: Backend) {
    let budget = CACHE_BUDGET.to_string();
    let server = server_with(backend, &[("STEPWISE_PARSED_QUERY_CACHE_BYTES", &budget)]).await;
    // One document kept: `{ __typename }`.
    still_serving(&server).await;
    let rss_before = server_rss(&server);

    // Distinct 16 KiB mutations over GET: each parses into ~1.8 MB and is then refused
    // (405). Every parsed document used to be kept, refused or not.
    let fields = "a ".repeat(8_000);
    flood(REFUSED_DOCUMENTS, |i| {
        server
            .client
            .get(server.url("/graphql"))
            .query(&[("query", format!("mutation {{ {fields}}} # {i}"))])
    })
    .await;
    let grown = server_rss(&server).saturating_sub(rss_before);
    assert!(
        grown < RSS_GROWTH_BOUND,
        "the server grew by {} MB after {REFUSED_DOCUMENTS} refused distinct documents",
        grown / 1024 / 1024
    );
    let (entries, _) = kept_documents(&server).await;
    assert_eq!(entries, 1.0, "refused documents are not kept");

    // Distinct valid documents are kept, within the budget.
    let typenames = "__typename ".repeat(500);
    flood(VALID_DOCUMENTS, |i| {
        server
            .client
            .post(server.url("/graphql"))
            .json(&json!({ "query": format!("{{ {typenames}}} # {i}") }))
    })
    .await;
    let (entries, bytes) = kept_documents(&server).await;
    assert!(entries > 1.0, "valid documents are kept");
    assert!(
        bytes <= CACHE_BUDGET as f64,
        "{bytes} bytes kept, budget {CACHE_BUDGET}"
    );
    let grown = server_rss(&server).saturating_sub(rss_before);
    assert!(
        grown < RSS_GROWTH_BOUND,
        "the server grew by {} MB after {REFUSED_DOCUMENTS} refused and {VALID_DOCUMENTS} \
         valid distinct documents",
        grown / 1024 / 1024
    );
    still_serving(&server).await;
}
