//! `healthLogRecorded` resumes: only cursors the server issued, only within the replay
//! window, and a replay streams page by page (a client that stops reading holds a page,
//! not a company's history, in the server's memory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::fixtures::{lit, team};
use common::realtime::{RawSocket, Subscriber, field, health_log_recorded_query};
use common::runs::{active_workflow, outcome, report_step, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

/// A live subscriber's cursor for one report made now.
async fn cursor_of_a_report(server: &TestServer, token: &str) -> (String, String, String) {
    let (workflow, steps) = active_workflow(server, token, "Resumable", 1).await;
    let run = str_field(&start_run(server, token, &workflow).await, "id");
    let mut sub = Subscriber::start(
        server,
        Some(token),
        &[("logs", &health_log_recorded_query(), json!({}))],
    );
    let first = sub
        .until_live(&["logs"], async || {
            report_step(server, token, &run, &steps[0], outcome("SUCCESS")).await;
        })
        .await;
    let cursor = str_field(
        field(&first[0]["payload"]["data"], "healthLogRecorded"),
        "cursor",
    );
    sub.disconnect().await;
    (cursor, workflow, run)
}

both_backends!(only_issued_recent_cursors_resume);
async fn only_issued_recent_cursors_resume(backend: Backend) {
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_HEALTH_LOG_REPLAY_WINDOW_SECONDS".into(),
            "3".into(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (cursor, _, _) = cursor_of_a_report(&server, token).await;

    let mut sub = Subscriber::connect(&server, Some(token)).await;
    // A well-formed position at the beginning of time, in the unsigned format the server
    // used to hand out: it would replay the company's whole history.
    let beginning = URL_SAFE_NO_PAD.encode(
        json!({ "o": "health_logs:created_at:asc", "key": { "time": 0 }, "id": "" }).to_string(),
    );
    // The issued cursor with its position moved to the beginning, signature kept.
    let (_, tag) = cursor.split_once('.').unwrap();
    let moved = format!(
        "{}.{tag}",
        URL_SAFE_NO_PAD.encode(json!({ "s": 0, "i": "", "t": 0 }).to_string())
    );
    for (i, forged) in [beginning, moved].iter().enumerate() {
        let op = format!("forged{i}");
        sub.subscribe(
            &op,
            &health_log_recorded_query(),
            json!({ "after": forged }),
        );
        let error = sub.expect_error_code(&op, "BAD_USER_INPUT").await;
        assert!(error.to_string().contains("after"), "{error}");
    }
    // The genuine cursor works now...
    sub.subscribe(
        "fresh",
        &health_log_recorded_query(),
        json!({ "after": cursor }),
    );
    sub.expect_quiet("fresh").await;
    // ...and not once it is older than the window.
    tokio::time::sleep(Duration::from_secs(4)).await;
    sub.subscribe(
        "stale",
        &health_log_recorded_query(),
        json!({ "after": cursor }),
    );
    let error = sub.expect_error_code("stale", "BAD_USER_INPUT").await;
    assert!(error.to_string().contains("replay window"), "{error}");
    sub.disconnect().await;
}

/// Inserts `count` logs of `run` with a 1 KB error message each, in one statement.
async fn seed_logs(server: &TestServer, company: &str, workflow: &str, run: &str, count: usize) {
    let message = "x".repeat(1_000);
    server
        .sql(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO health_logs (id, company_id, workflow_id, run_id, status, error_message, \
               created_at) \
             SELECT 'seed-' || (i + 100000), {}, {}, {}, 'failed', {}, CURRENT_TIMESTAMP FROM n",
            lit(company),
            lit(workflow),
            lit(run),
            lit(&message),
        ))
        .await;
}

both_backends!(replays_stream_with_back_pressure);
async fn replays_stream_with_back_pressure(backend: Backend) {
    const LOGS: usize = 20_000;
    const SUBSCRIPTIONS: usize = 100;
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (cursor, workflow, run) = cursor_of_a_report(&server, token).await;
    seed_logs(&server, &acme.company_id, &workflow, &run, LOGS).await;

    let before = server.rss_bytes();
    let mut socket = RawSocket::open(&server).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": token } }));
    socket.expect_type("connection_ack").await;
    // A client that stops reading, then asks for the same 20,000-log replay 100 times.
    socket.pause_reading();
    let query = health_log_recorded_query();
    for i in 0..SUBSCRIPTIONS {
        socket.send(json!({
            "id": format!("replay{i}"), "type": "subscribe",
            "payload": { "query": query, "variables": { "after": cursor } }
        }));
    }
    let mut peak = before;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(server.rss_bytes());
    }
    let grew = peak.saturating_sub(before);
    eprintln!(
        "100 stalled replays of {LOGS} logs: server RSS {} -> {} MiB",
        before / (1024 * 1024),
        peak / (1024 * 1024)
    );
    // Read whole, the replays would hold 100 × 20,000 logs of ~1.2 KB (> 2 GB).
    assert!(
        grew < 200 * 1024 * 1024,
        "100 stalled replays grew the server by {} MiB",
        grew / (1024 * 1024)
    );
    assert_eq!(
        server.get("/healthz").await.status(),
        reqwest::StatusCode::OK
    );
    drop(socket);

    // A client that reads gets the replay in order.
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("logs", &query, json!({ "after": cursor }))],
    );
    for n in 1..=5 {
        let data: Value = sub.expect_data("logs").await;
        let id = str_field(&field(&data, "healthLogRecorded")["healthLog"], "id");
        assert_eq!(id, format!("seed-{}", 100_000 + n));
    }
    sub.disconnect().await;
}

/// A replay that cannot be read (the database went away mid-replay) ends the subscription
/// with an error, instead of carrying on live and silently skipping what it could not
/// read: the client learns it must resume from the last cursor it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_the_database_cannot_serve_ends_with_an_error() {
    use common::faults::PrivateCluster;
    const LOGS: usize = 3_000;
    if !PrivateCluster::available() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "PostgreSQL 15 binaries are missing (CI=true)"
        );
        eprintln!("SKIPPED: no PostgreSQL binaries for a private cluster");
        return;
    }
    let mut cluster = PrivateCluster::start().await;
    let options = ServerOptions {
        database_url: Some(cluster.url()),
        env: vec![("DATABASE_ACQUIRE_TIMEOUT_MS".into(), "500".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_on(cluster.test_db(), options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (cursor, workflow, run) = cursor_of_a_report(&server, token).await;
    seed_logs(&server, &acme.company_id, &workflow, &run, LOGS).await;

    let mut socket = RawSocket::open(&server).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": token } }));
    socket.expect_type("connection_ack").await;
    // The client stops reading, so the replay waits on it with most pages still unread.
    socket.pause_reading();
    socket.send(json!({
        "id": "logs",
        "type": "subscribe",
        "payload": { "query": health_log_recorded_query(), "variables": { "after": cursor } },
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop().await;
    socket.resume_reading();

    // The logs read before the outage, then the subscription's own error, then its end.
    let mut delivered = 0;
    let mut ended_with = None;
    loop {
        let message = socket.expect_message_skipping_ka().await;
        match message["type"].as_str() {
            Some("next") => {
                let errors = message["payload"]["errors"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if let Some(error) = errors
                    .iter()
                    .find(|e| e["path"] == json!(["healthLogRecorded"]))
                {
                    ended_with = Some(error.clone());
                } else {
                    delivered += 1;
                }
            }
            Some("complete") if message["id"] == "logs" => break,
            other => panic!("expected the replay's logs, then its error; got {other:?}: {message}"),
        }
    }
    assert!(delivered < LOGS, "the whole replay arrived: {delivered}");
    let error = ended_with.expect("the subscription ended without saying why");
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{error}");
}
