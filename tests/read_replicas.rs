//! Read replicas (`DATABASE_READ_URL`): a private primary with a streaming replica made by
//! `pg_basebackup -R`, both logging every statement, so the test counts which server ran
//! what. Queries and subscription snapshots read from the replica; mutations, and the reads
//! inside a mutation's answer, from the primary; a lagging or stopped replica is skipped
//! and shown in `/readyz` and `/metrics`. PostgreSQL only (SQLite refuses the setting:
//! `tests/postgres_tls.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::faults::PrivateCluster;
use common::fixtures::{simple_workflow, team};
use common::realtime::{Subscriber, field, run_updated_query};
use common::runs::{active_workflow, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

const WORKFLOWS: &str = "{ workflows(first: 50) { edges { node { id name } } } }";
const SELECT_WORKFLOWS: &str = "FROM \"workflows\"";

async fn readyz(server: &TestServer) -> (u16, Value) {
    let resp = server.get("/readyz").await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits (at most 30 s) until the replica's state in `/readyz` is `state`.
async fn until_replica(server: &TestServer, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(server).await;
        if body["replicas"][0]["state"] == state {
            assert_eq!(
                status, 200,
                "a replica never makes the instance unready: {body:#}"
            );
            return body;
        }
        if Instant::now() > deadline {
            server.fail_with(&format!("the replica never became {state}: {body:#}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `sql` (one value) answers `expected` on the replica.
async fn until_replayed(replica: &PrivateCluster, sql: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.psql(sql).await != expected {
        assert!(
            Instant::now() < deadline,
            "the replica never replayed: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The statements `server` label has on `/metrics`.
async fn statements_on(server: &TestServer, label: &str) -> f64 {
    let body = server.get("/metrics").await.text().await.unwrap();
    let prefix = format!("stepwise_db_server_statements_total{{server=\"{label}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the workflows query `times` times; every answer must list `name`.
async fn query_workflows(server: &TestServer, token: &str, times: usize, name: &str) {
    for _ in 0..times {
        let data = server.gql_ok(WORKFLOWS, json!({}), Some(token)).await;
        let names: Vec<&str> = data["workflows"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["node"]["name"].as_str())
            .collect();
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

/// The log has caught up with what the server ran (the postmaster writes it as it goes).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_from_the_replica_and_mutations_from_the_primary() {
    if !Backend::Postgres.available().await || !PrivateCluster::available() {
        return;
    }
    let primary =
        PrivateCluster::start_configured("log_statement = 'all'\n".to_owned(), None, vec![]).await;
    let mut replica = primary.start_replica().await;
    let replica_url = format!("postgres://postgres@127.0.0.1:{}/postgres", replica.port);
    let replica_label = format!("127.0.0.1:{}/postgres", replica.port);
    let options = ServerOptions {
        env: vec![
            ("DATABASE_READ_URL".into(), replica_url),
            ("STEPWISE_REPLICA_CHECK_INTERVAL_MS".into(), "100".into()),
            ("STEPWISE_REPLICA_MAX_LAG_MS".into(), "500".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_on(primary.test_db(), options).await;
    let body = until_replica(&server, "up").await;
    assert_eq!(
        body["replicas"][0]["name"],
        replica_label.as_str(),
        "{body:#}"
    );
    assert_eq!(body["replicas"][0]["lagMs"], 0, "{body:#}");

    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let workflow = simple_workflow(&server, token, "Replicated", 2).await;
    let workflow_id = str_field(&workflow, "id");
    until_replayed(
        &replica,
        "SELECT count(*) FROM workflows WHERE name = 'Replicated'",
        "1",
    )
    .await;

    // Queries: served by the replica, not the primary.
    settle().await;
    let (replica_before, primary_before) = (
        replica.statements_containing(SELECT_WORKFLOWS),
        primary.statements_containing(SELECT_WORKFLOWS),
    );
    let counted_before = statements_on(&server, &replica_label).await;
    query_workflows(&server, token, 5, "Replicated").await;
    settle().await;
    assert!(
        replica.statements_containing(SELECT_WORKFLOWS) >= replica_before + 5,
        "the replica did not serve the queries:\n{}",
        replica.log()
    );
    assert_eq!(
        primary.statements_containing(SELECT_WORKFLOWS),
        primary_before,
        "the primary served a query"
    );
    assert!(statements_on(&server, &replica_label).await >= counted_before + 5.0);

    // A mutation and everything its answer reads (the steps, through the batch loader):
    // the primary.
    let steps_query = "FROM \"steps\"";
    let (replica_before, primary_before) = (
        replica.statements_containing(steps_query),
        primary.statements_containing(steps_query),
    );
    let renamed = server
        .gql_ok(
            "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"Renamed\" }) \
               { name steps { id } } }",
            json!({ "id": workflow_id }),
            Some(token),
        )
        .await;
    assert_eq!(renamed["updateWorkflow"]["name"], "Renamed");
    assert_eq!(
        renamed["updateWorkflow"]["steps"].as_array().map(Vec::len),
        Some(2)
    );
    settle().await;
    assert_eq!(
        replica.statements_containing(steps_query),
        replica_before,
        "a mutation's answer was read from the replica"
    );
    assert!(primary.statements_containing(steps_query) > primary_before);

    // A subscription's first snapshot: the replica.
    let (flow, _) = active_workflow(&server, token, "Watched", 1).await;
    let run = str_field(&start_run(&server, token, &flow).await, "id");
    until_replayed(
        &replica,
        &format!("SELECT count(*) FROM runs WHERE id = '{run}'"),
        "1",
    )
    .await;
    settle().await;
    let runs_query = "FROM \"runs\"";
    let replica_before = replica.statements_containing(runs_query);
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("run", &run_updated_query(), json!({ "runId": run }))],
    );
    let data = sub.expect_data("run").await;
    assert_eq!(field(&data, "runUpdated")["run"]["status"], "RUNNING");
    sub.disconnect().await;
    settle().await;
    assert!(
        replica.statements_containing(runs_query) > replica_before,
        "the snapshot was not read from the replica"
    );

    // A replica that lags beyond the bound is skipped: what the primary has is what a
    // query shows.
    replica.psql("SELECT pg_wal_replay_pause()").await;
    simple_workflow(&server, token, "While paused", 1).await;
    let body = until_replica(&server, "lagging").await;
    assert!(
        body["replicas"][0]["lagMs"].as_u64().unwrap() > 500,
        "{body:#}"
    );
    assert_eq!(server.metric("stepwise_db_replica_up").await, 0.0);
    settle().await;
    let replica_before = replica.statements_containing(SELECT_WORKFLOWS);
    query_workflows(&server, token, 3, "While paused").await;
    settle().await;
    assert_eq!(
        replica.statements_containing(SELECT_WORKFLOWS),
        replica_before,
        "a lagging replica served a query"
    );
    replica.psql("SELECT pg_wal_replay_resume()").await;
    until_replica(&server, "up").await;
    assert_eq!(server.metric("stepwise_db_replica_up").await, 1.0);

    // A stopped replica does not fail queries: they go to the primary at once.
    replica.stop().await;
    for _ in 0..5 {
        let resp = server.gql(WORKFLOWS, json!({}), Some(token)).await;
        assert!(
            resp["errors"].is_null(),
            "a query failed with the replica down: {resp:#}"
        );
    }
    let body = until_replica(&server, "down").await;
    assert!(body["replicas"][0]["error"].is_string(), "{body:#}");
    query_workflows(&server, token, 3, "While paused").await;
    assert_eq!(server.metric("stepwise_db_replica_up").await, 0.0);

    // And it is used again once it is back.
    replica.restart().await;
    until_replica(&server, "up").await;
    settle().await;
    let replica_before = replica.statements_containing(SELECT_WORKFLOWS);
    query_workflows(&server, token, 2, "While paused").await;
    settle().await;
    assert!(replica.statements_containing(SELECT_WORKFLOWS) >= replica_before + 2);
}
