//! Two `stepwise serve` processes on one Postgres database: a mutation on either instance
//! reaches subscribers on the other (LISTEN/NOTIFY). Postgres only — SQLite is one process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::fixtures::team;
use common::realtime::{
    Subscriber, field, health_log_recorded_query, notification_created_query, run_updated_query,
    runs_updated_query,
};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, TestServer, str_field};
use serde_json::json;

/// Subscribes on `listener`, mutates on `writer`, and checks every event crosses over.
async fn events_cross(listener: &TestServer, writer: &TestServer, token: &str, direction: &str) {
    let (workflow, steps) = active_workflow(writer, token, &format!("Flow {direction}"), 2).await;

    let mut sub = Subscriber::start(
        listener,
        Some(token),
        &[
            (
                "runs",
                &runs_updated_query(),
                json!({ "workflowId": workflow }),
            ),
            (
                "logs",
                &health_log_recorded_query(),
                json!({ "workflowId": workflow }),
            ),
            ("notes", &notification_created_query(), json!({})),
        ],
    );
    // Live once a run started and reported on the writer shows up on the listener.
    let mut warmup_runs = HashSet::new();
    let mut warmup_logs = HashSet::new();
    sub.until_live(&["runs", "logs"], async || {
        let run = str_field(&start_run(writer, token, &workflow).await, "id");
        let report = report_step(writer, token, &run, &steps[0], outcome("SUCCESS")).await;
        warmup_logs.insert(str_field(&report["healthLog"], "id"));
        warmup_runs.insert(run);
    })
    .await;

    // A run on the writer, watched from its first state on the listener.
    let run = str_field(&start_run(writer, token, &workflow).await, "id");
    sub.subscribe("run", &run_updated_query(), json!({ "runId": run }));
    let data = sub.expect_data("run").await;
    let state = field(&data, "runUpdated");
    assert_eq!(state["run"]["id"], run.as_str(), "{direction}: {state:#}");
    assert_eq!(state["run"]["status"], "RUNNING", "{direction}: {state:#}");

    let mut logs = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let report = report_step(writer, token, &run, step, outcome("SUCCESS")).await;
        let log = str_field(&report["healthLog"], "id");
        let data = sub.expect_data("run").await;
        let update = field(&data, "runUpdated");
        assert_eq!(
            update["healthLog"]["id"],
            log.as_str(),
            "{direction}: {update:#}"
        );
        assert_eq!(
            update["run"]["stepsCompleted"],
            i + 1,
            "{direction}: {update:#}"
        );
        logs.push(log);
    }
    finish_run(writer, token, &run, "SUCCEEDED", None).await;
    let data = sub.expect_data("run").await;
    assert_eq!(
        field(&data, "runUpdated")["run"]["status"],
        "SUCCEEDED",
        "{direction}: {data:#}"
    );
    sub.expect_complete("run").await;

    // The same run on runsUpdated, and its reports on healthLogRecorded.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let data = sub.expect_data("runs").await;
        let update = field(&data, "runsUpdated");
        let id = str_field(&update["run"], "id");
        if warmup_runs.contains(&id) {
            continue;
        }
        assert_eq!(id, run, "{direction}: {update:#}");
        seen.push((
            str_field(&update["run"], "status"),
            update["healthLog"]["id"].as_str().unwrap_or("-").to_owned(),
        ));
    }
    let expected = vec![
        ("RUNNING".to_owned(), "-".to_owned()),
        ("RUNNING".to_owned(), logs[0].clone()),
        ("RUNNING".to_owned(), logs[1].clone()),
        ("SUCCEEDED".to_owned(), "-".to_owned()),
    ];
    assert_eq!(seen, expected, "{direction}: runsUpdated across instances");
    let mut seen_logs = Vec::new();
    while seen_logs.len() < 2 {
        let data = sub.expect_data("logs").await;
        let id = str_field(&field(&data, "healthLogRecorded")["healthLog"], "id");
        if !warmup_logs.contains(&id) {
            seen_logs.push(id);
        }
    }
    assert_eq!(
        seen_logs, logs,
        "{direction}: healthLogRecorded across instances"
    );

    // A low-confidence healing on the writer: its notification reaches the listener.
    let review = str_field(&start_run(writer, token, &workflow).await, "id");
    report_step(
        writer,
        token,
        &review,
        &steps[0],
        json!({ "status": "HEALED_AI", "healingConfidence": 0.2 }),
    )
    .await;
    let data = sub.expect_data("notes").await;
    let note = field(&data, "notificationCreated");
    assert_eq!(
        note["kind"], "workflow_needs_review",
        "{direction}: {note:#}"
    );
    assert_eq!(note["severity"], "WARNING", "{direction}: {note:#}");
    assert_eq!(
        note["workflow"]["id"],
        workflow.as_str(),
        "{direction}: {note:#}"
    );
    sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_between_two_instances_on_one_database() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.start_sibling().await;
    assert_ne!(first.addr, second.addr);

    // Signed up on one, the token works on the other (same secret, same database).
    let acme = team(&first, "Acme").await;
    let me = second.me(&acme.admin_token).await;
    assert_eq!(me["email"], "admin@acme.test");

    events_cross(&second, &first, &acme.admin_token, "first -> second").await;
    events_cross(&first, &second, &acme.member_token, "second -> first").await;

    // Tenancy holds across instances too: Globex, listening on the second instance, hears
    // nothing of Acme's runs on the first, yet hears its own.
    let globex = team(&second, "Globex").await;
    let (g_flow, g_steps) = active_workflow(&second, &globex.admin_token, "Globex flow", 1).await;
    let (a_flow, a_steps) = active_workflow(&first, &acme.admin_token, "Acme again", 1).await;
    let mut sub = Subscriber::start(
        &second,
        Some(globex.member_token.as_str()),
        &[("runs", &runs_updated_query(), json!({}))],
    );
    let mut globex_runs = HashSet::new();
    sub.until_live(&["runs"], async || {
        let run = start_run(&first, &globex.admin_token, &g_flow).await;
        globex_runs.insert(str_field(&run, "id"));
    })
    .await;
    let a_run = str_field(&start_run(&first, &acme.admin_token, &a_flow).await, "id");
    report_step(
        &first,
        &acme.admin_token,
        &a_run,
        &a_steps[0],
        outcome("SUCCESS"),
    )
    .await;
    finish_run(&first, &acme.admin_token, &a_run, "SUCCEEDED", None).await;
    let g_run = str_field(&start_run(&first, &globex.admin_token, &g_flow).await, "id");
    let marker = report_step(
        &first,
        &globex.admin_token,
        &g_run,
        &g_steps[0],
        outcome("SUCCESS"),
    )
    .await;
    let marker = str_field(&marker["healthLog"], "id");
    globex_runs.insert(g_run);
    loop {
        let data = sub.expect_data("runs").await;
        let update = field(&data, "runsUpdated");
        let id = str_field(&update["run"], "id");
        assert!(
            globex_runs.contains(&id),
            "Globex heard a run that is not its own: {update:#}"
        );
        if update["healthLog"]["id"] == marker.as_str() {
            break;
        }
    }
    sub.disconnect().await;
    drop(second);
}
