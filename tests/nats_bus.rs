//! NATS JetStream as the event bus (`STEPWISE_EVENT_BUS=nats://...`), against a private
//! `nats-server -js` the test starts (and stops): events cross between instances without a
//! NOTIFY on the write path, forged and replayed messages are dropped, and a NATS outage
//! neither fails writes nor leaves subscribers behind once it is over. PostgreSQL only:
//! SQLite refuses a shared bus (`tests/postgres_tls.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::faults::PrivateNats;
use common::fixtures::team;
use common::realtime::{Subscriber, field, notification_created_query, runs_updated_query};
use common::runs::{active_workflow, outcome, report_step, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

fn nats_options(nats: &PrivateNats) -> ServerOptions {
    ServerOptions {
        env: vec![("STEPWISE_EVENT_BUS".into(), nats.url())],
        ..ServerOptions::default()
    }
}

/// Waits (at most 30 s) until `/readyz` reports the bus `state`; it stays 200 throughout.
async fn until_bus(server: &TestServer, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = server.get("/readyz").await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if body["eventBus"]["state"] == state {
            assert_eq!(body["eventBus"]["transport"], "nats", "{body:#}");
            assert_eq!(
                status, 200,
                "a bus outage does not make the instance unready"
            );
            return;
        }
        if Instant::now() > deadline {
            server.fail_with(&format!("the event bus never became {state}: {body:#}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/metrics` until `name` reaches `at_least` (at most 10 s).
async fn until_metric(server: &TestServer, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = server.metric(name).await;
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next `runsUpdated` of run `run` (others skipped).
async fn next_of(sub: &mut Subscriber, run: &str) -> Value {
    loop {
        let data = sub.expect_data("runs").await;
        let update = field(&data, "runsUpdated").clone();
        if update["run"]["id"] == run {
            return update;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_through_jetstream_and_forgeries_are_dropped() {
    if !Backend::Postgres.available().await || !PrivateNats::available() {
        return;
    }
    let nats = PrivateNats::start().await;
    let first = TestServer::start_with(Backend::Postgres, nats_options(&nats)).await;
    let second = first.start_sibling().await;
    until_bus(&first, "up").await;
    until_bus(&second, "up").await;

    let acme = team(&first, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&first, token, "Over NATS", 1).await;

    // Nothing goes through NOTIFY: a listener on the database hears nothing.
    let mut listener = AsyncPgConnection::establish(&first.database_url())
        .await
        .unwrap();
    listener
        .batch_execute("LISTEN stepwise_events")
        .await
        .unwrap();

    // A subscriber on one instance hears the writes on the other.
    let mut sub = Subscriber::start(
        &second,
        Some(token),
        &[
            (
                "runs",
                &runs_updated_query(),
                json!({ "workflowId": workflow }),
            ),
            ("notes", &notification_created_query(), json!({})),
        ],
    );
    let mut warmup = Vec::new();
    sub.until_live(&["runs"], async || {
        warmup.push(str_field(&start_run(&first, token, &workflow).await, "id"));
    })
    .await;
    let run = str_field(&start_run(&first, token, &workflow).await, "id");
    assert_eq!(next_of(&mut sub, &run).await["run"]["status"], "RUNNING");
    let report = report_step(&first, token, &run, &steps[0], outcome("SUCCESS")).await;
    let update = next_of(&mut sub, &run).await;
    assert_eq!(update["run"]["stepsCompleted"], 1, "{update:#}");
    assert_eq!(update["healthLog"]["id"], report["healthLog"]["id"]);
    let heard = tokio::time::timeout(
        Duration::from_millis(500),
        std::pin::pin!(listener.notifications_stream()).next(),
    )
    .await;
    assert!(
        heard.is_err(),
        "a NOTIFY was sent with NATS as the bus: {heard:?}"
    );

    // Forgeries published straight to the company's subject: unsigned, and framed with a
    // made-up signature. Both are dropped and counted, on both instances.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let subject = format!("stepwise_events.{}", acme.company_id);
    let unsigned = json!({ "v": 1, "o": "forger", "e": [{ "t": "resync", "c": acme.company_id }] });
    let framed = format!("v1.{}.{}", "ab".repeat(32), unsigned);
    let before = second.metric("stepwise_events_rejected_total").await;
    for payload in [unsigned.to_string(), framed] {
        client
            .publish(subject.clone(), payload.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let rejected = until_metric(&second, "stepwise_events_rejected_total", before + 2.0).await;
    assert!(rejected >= before + 2.0, "forged messages were not counted");
    sub.expect_quiet("notes").await;

    // A genuine envelope published again (a replay, or a redelivery) is delivered once.
    let mut tap = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let note_run = str_field(&start_run(&first, token, &workflow).await, "id");
    let low = json!({ "status": "HEALED_AI", "healingConfidence": 0.2 });
    report_step(&first, token, &note_run, &steps[0], low).await;
    let data = sub.expect_data("notes").await;
    assert_eq!(
        field(&data, "notificationCreated")["kind"],
        "workflow_needs_review"
    );
    let mut genuine = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), tap.next()).await
    {
        genuine.push(message.payload);
    }
    assert!(!genuine.is_empty(), "nothing was published on {subject}");
    let duplicates = second.metric("stepwise_events_duplicate_total").await;
    for payload in genuine {
        client.publish(subject.clone(), payload).await.unwrap();
    }
    client.flush().await.unwrap();
    let after = until_metric(&second, "stepwise_events_duplicate_total", duplicates + 1.0).await;
    assert!(after > duplicates, "a replayed envelope was not recognised");
    sub.expect_quiet("notes").await;
    sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_nats_is_down_and_subscribers_catch_up() {
    if !Backend::Postgres.available().await || !PrivateNats::available() {
        return;
    }
    let mut nats = PrivateNats::start().await;
    let first = TestServer::start_with(Backend::Postgres, nats_options(&nats)).await;
    let second = first.start_sibling().await;
    until_bus(&first, "up").await;
    until_bus(&second, "up").await;
    let acme = team(&first, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&first, token, "Outage", 3).await;
    let mut sub = Subscriber::start(
        &second,
        Some(token),
        &[(
            "runs",
            &runs_updated_query(),
            json!({ "workflowId": workflow }),
        )],
    );
    let mut warmup = Vec::new();
    sub.until_live(&["runs"], async || {
        warmup.push(str_field(&start_run(&first, token, &workflow).await, "id"));
    })
    .await;
    let run = str_field(&start_run(&first, token, &workflow).await, "id");
    assert_eq!(next_of(&mut sub, &run).await["run"]["stepsCompleted"], 0);

    // NATS goes away: both instances say so, and writes still succeed, promptly.
    nats.stop();
    until_bus(&first, "down").await;
    until_bus(&second, "down").await;
    let started = Instant::now();
    report_step(&first, token, &run, &steps[0], outcome("SUCCESS")).await;
    report_step(&first, token, &run, &steps[1], outcome("SUCCESS")).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "writes waited for a bus that is down: {:?}",
        started.elapsed()
    );
    let lost = first.metric("stepwise_events_lost_total").await;
    assert!(
        lost >= 2.0,
        "events that could not leave were not counted: {lost}"
    );

    // NATS is back: the subscriber on the other instance is brought up to date (a
    // snapshot), and new events flow again.
    nats.restart().await;
    until_bus(&first, "up").await;
    until_bus(&second, "up").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let update = next_of(&mut sub, &run).await;
        if update["run"]["stepsCompleted"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {update:#}");
    }
    report_step(&first, token, &run, &steps[2], outcome("SUCCESS")).await;
    let update = next_of(&mut sub, &run).await;
    assert_eq!(update["run"]["stepsCompleted"], 3, "{update:#}");
    sub.disconnect().await;
}
