//! One caller cannot starve the others: a request holds only a few of the pool's
//! connections however many nested lists it asks for, heavy fields are priced by the
//! database work they cause, and a pool that is exhausted anyway answers a coded,
//! retryable UNAVAILABLE (503 over HTTP) rather than INTERNAL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::*;
use common::realtime::RawSocket;
use common::{Backend, ServerOptions, TestServer, error_code};
use serde_json::{Value, json};

const POOL_GAUGE: &str = "stepwise_db_pool_connections";

/// A page of workflows, each asking for two connections with their counts: on a server
/// without a per-request share, every parent's lists run at once on their own connections.
fn fan_out_query(first: usize) -> String {
    format!(
        "{{ workflows(first: {first}) {{ edges {{ node {{ id \
           runs(first: 1) {{ totalCount edges {{ node {{ id }} }} }} \
           healthLogs(first: 1) {{ totalCount edges {{ node {{ id }} }} }} }} }} }} }}"
    )
}

both_backends!(one_request_holds_only_its_share_of_the_pool);
async fn one_request_holds_only_its_share_of_the_pool(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            ("DATABASE_POOL_SIZE".into(), "16".into()),
            ("STEPWISE_MAX_REQUEST_CONNECTIONS".into(), "2".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    for i in 0..40 {
        simple_workflow(&server, &acme.admin_token, &format!("Flow {i}"), 1).await;
    }
    let before = server.metric(POOL_GAUGE).await;
    for _ in 0..3 {
        let data = ok(&server, &acme.member_token, &fan_out_query(40), json!({})).await;
        assert_eq!(data["workflows"]["edges"].as_array().unwrap().len(), 40);
    }
    let after = server.metric(POOL_GAUGE).await;
    // The pool opens connections lazily, so its size says how many were ever wanted at
    // once: the request's share (2), beside the ones sign-up and the membership check
    // already opened.
    assert!(
        after <= before + 2.0,
        "one request opened {} more connections (pool {before} -> {after}); its share is 2",
        after - before
    );
}

both_backends!(an_exhausted_pool_answers_unavailable_with_retry_after);
async fn an_exhausted_pool_answers_unavailable_with_retry_after(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            ("DATABASE_POOL_SIZE".into(), "1".into()),
            ("DATABASE_ACQUIRE_TIMEOUT_MS".into(), "300".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.admin_token, "Flow", 1).await;
    let id = wf["id"].as_str().unwrap().to_owned();
    // Opened now, initialised once the pool is exhausted (see below).
    let mut socket = RawSocket::open(&server).await;
    // Something outside the server holds a lock the server's next write waits for, so that
    // write keeps the pool's only connection (and, on SQLite, the writer) busy.
    let blocker = Blocker::hold(&server).await;
    let stuck = {
        let client = server.client.clone();
        let url = server.url("/graphql");
        let token = acme.admin_token.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({
                    "query": "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"x\" }) { id } }",
                    "variables": { "id": id }
                }))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&acme.admin_token)
        .json(&json!({
            "query": "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"y\" }) { id } }",
            "variables": { "id": id }
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    // A token whose membership is not cached (the cache keeps an answer for 2 s) is
    // confirmed against the database before the request runs: that check finds the pool
    // exhausted too, and must answer the same coded, retryable error, not INTERNAL.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let check = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&acme.member_token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    let check_status = check.status();
    let check_retry_after = check
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let check_body: Value = check.json().await.unwrap();
    // The same check for a WebSocket's `connection_init`: "try again later", not an
    // internal error.
    socket.send(json!({ "type": "connection_init", "payload": { "token": acme.member_token } }));
    let (close_code, close_reason) = socket.expect_close().await;
    blocker.release().await;
    let _ = stuck.await;
    assert_eq!(
        error_code(&check_body).as_deref(),
        Some("UNAVAILABLE"),
        "the token check on an exhausted pool: {check_body:#}"
    );
    assert_eq!(
        check_status,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "{check_body:#}"
    );
    assert!(
        check_retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "no Retry-After on the token check: {check_body:#}"
    );
    assert!(
        check_body["errors"][0]["extensions"]["retryAfter"].as_u64() >= Some(1),
        "{check_body:#}"
    );
    assert_eq!(
        close_code, 1013,
        "connection_init on an exhausted pool closed with {close_code} {close_reason:?}"
    );
    assert_eq!(
        error_code(&body).as_deref(),
        Some("UNAVAILABLE"),
        "{body:#}"
    );
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "no Retry-After: {body:#}"
    );
    assert!(
        body["errors"][0]["extensions"]["retryAfter"].as_u64() >= Some(1),
        "{body:#}"
    );
    // Once the lock is gone the server serves again.
    ok(&server, &acme.admin_token, "{ me { id } }", json!({})).await;
}

/// A lock taken from outside the server on its database: PostgreSQL's `workflows` table in
/// exclusive mode, or SQLite's write lock.
struct Blocker {
    release: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Blocker {
    async fn hold(server: &TestServer) -> Self {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        let done = match server.backend() {
            Backend::Postgres => {
                let url = server.database_url();
                tokio::spawn(async move {
                    let mut conn = diesel_async::AsyncPgConnection::establish(&url)
                        .await
                        .unwrap();
                    conn.batch_execute("BEGIN; LOCK TABLE workflows IN ACCESS EXCLUSIVE MODE;")
                        .await
                        .unwrap();
                    let _ = locked_tx.send(());
                    let _ = release_rx.await;
                    conn.batch_execute("ROLLBACK").await.unwrap();
                })
            }
            Backend::Sqlite => {
                let path = server.db.sqlite_path();
                // rusqlite-free: a blocking diesel connection on its own thread.
                tokio::task::spawn_blocking(move || {
                    use diesel::Connection as _;
                    use diesel::connection::SimpleConnection as _;
                    let mut conn =
                        diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
                    conn.batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
                        .unwrap();
                    let _ = locked_tx.send(());
                    let _ = release_rx.blocking_recv();
                    conn.batch_execute("ROLLBACK").unwrap();
                })
            }
        };
        locked_rx.await.unwrap();
        Self { release, done }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.done.await.unwrap();
    }
}

both_backends!(nested_counts_are_priced_by_the_database_work);
async fn nested_counts_are_priced_by_the_database_work(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    // 100 workflows, each with two full pages and their COUNT(*)s: 200 round trips and 200
    // counts, ~100,000 of the 250,000 budget when a count or a round trip cost as much as
    // a field. Priced by that work it is refused; small nested pages stay allowed.
    let nested = |first: usize| {
        format!(
            "{{ workflows(first: 100) {{ edges {{ node {{ id \
               runs(first: {first}) {{ totalCount edges {{ node {{ id status }} }} }} \
               healthLogs(first: {first}) {{ totalCount edges {{ node {{ id status }} }} }} \
             }} }} }} }}"
        )
    };
    let resp = server
        .gql(&nested(10), json!({}), Some(&acme.member_token))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let resp = server
        .gql(&nested(100), json!({}), Some(&acme.member_token))
        .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["limit"], "complexity",
        "{resp:#}"
    );
}
