//! Subscriptions as an independent client sees them: every test here talks to the server
//! through graphql-ws's own client (npm `graphql-ws`, run by tests/realtime/client.mjs),
//! while the mutations that cause the events go over HTTP.
//!
//! Subscriptions without a first snapshot (`runsUpdated`, `healthLogRecorded`,
//! `notificationCreated`, `workflowStatusChanged`) are proven live with a warm-up trigger
//! (see `Subscriber::until_live`) before a test relies on them; warm-up events are recognised
//! by their run or workflow and skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::fixtures::{Team, set_status, team, update_workflow};
use common::realtime::{
    Subscriber, field, health_log_recorded_query, notification_created_query, run_updated_query,
    runs_updated_query, workflow_status_changed_query,
};
use common::runs::{
    active_workflow, finish_run, outcome, pause_run, report_step, resume_run, start_run,
    workflow_notifications,
};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

/// `(run id, status, health log id or "-")` of a `RunUpdate`: what tests compare.
fn summary(update: &Value) -> (String, String, String) {
    (
        str_field(&update["run"], "id"),
        str_field(&update["run"], "status"),
        update["healthLog"]["id"].as_str().unwrap_or("-").to_owned(),
    )
}

fn expected(run: &str, status: &str, log: &str) -> (String, String, String) {
    (run.to_owned(), status.to_owned(), log.to_owned())
}

/// The next `count` `runsUpdated` events of `op` whose run is not in `skip`.
async fn run_updates(
    sub: &mut Subscriber,
    op: &str,
    skip: &HashSet<String>,
    count: usize,
) -> Vec<Value> {
    let mut updates = Vec::new();
    while updates.len() < count {
        let data = sub.expect_data(op).await;
        let update = field(&data, "runsUpdated").clone();
        if !skip.contains(&str_field(&update["run"], "id")) {
            updates.push(update);
        }
    }
    updates
}

fn with_key(status: &str, key: &str) -> Value {
    let mut value = outcome(status);
    value["idempotencyKey"] = json!(key);
    value
}

/// A low-confidence AI healing: makes an ACTIVE workflow NEEDS_REVIEW with a WARNING.
fn low_confidence_healing() -> Value {
    json!({ "status": "HEALED_AI", "healingConfidence": 0.1, "aiScore": 0.1 })
}

// ---------------------------------------------------------------------------
// runUpdated
// ---------------------------------------------------------------------------

both_backends!(run_updated_sends_state_then_every_change_then_completes);
async fn run_updated_sends_state_then_every_change_then_completes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Checkout", 3).await;
    let run = start_run(&server, token, &workflow).await;
    let run_id = str_field(&run, "id");

    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("run", &run_updated_query(), json!({ "runId": run_id }))],
    );

    // First the current state.
    let data = sub.expect_data("run").await;
    let state = field(&data, "runUpdated");
    assert_eq!(state["run"]["id"], run_id.as_str(), "{state:#}");
    assert_eq!(state["run"]["status"], "RUNNING", "{state:#}");
    assert_eq!(state["run"]["stepsTotal"], 3, "{state:#}");
    assert_eq!(state["run"]["stepsCompleted"], 0, "{state:#}");
    assert_eq!(
        state["run"]["workflow"]["id"],
        workflow.as_str(),
        "{state:#}"
    );
    assert!(
        state["healthLog"].is_null(),
        "a snapshot has no report: {state:#}"
    );

    // Then every report, live, with the report that caused it.
    for (i, step) in steps.iter().enumerate() {
        let report = report_step(
            &server,
            token,
            &run_id,
            step,
            with_key("SUCCESS", &format!("k{i}")),
        )
        .await;
        let data = sub.expect_data("run").await;
        let update = field(&data, "runUpdated");
        assert_eq!(
            update["healthLog"]["id"], report["healthLog"]["id"],
            "{update:#}"
        );
        assert_eq!(
            update["healthLog"]["step"]["id"],
            step.as_str(),
            "{update:#}"
        );
        assert_eq!(update["healthLog"]["status"], "SUCCESS", "{update:#}");
        assert_eq!(update["run"]["stepsCompleted"], i + 1, "{update:#}");
        assert_eq!(
            update["run"]["currentStep"]["id"],
            step.as_str(),
            "{update:#}"
        );
        assert_eq!(update["run"]["status"], "RUNNING", "{update:#}");

        if i == 0 {
            // Status changes are changes too.
            pause_run(&server, token, &run_id).await;
            let data = sub.expect_data("run").await;
            assert_eq!(
                summary(field(&data, "runUpdated")),
                expected(&run_id, "PAUSED", "-")
            );
            resume_run(&server, token, &run_id).await;
            let data = sub.expect_data("run").await;
            assert_eq!(
                summary(field(&data, "runUpdated")),
                expected(&run_id, "RUNNING", "-")
            );
        }
    }

    // A duplicate report changes nothing, so it is not an update.
    let dup = report_step(
        &server,
        token,
        &run_id,
        &steps[2],
        with_key("SUCCESS", "k2"),
    )
    .await;
    assert_eq!(dup["duplicate"], true, "{dup:#}");

    finish_run(&server, token, &run_id, "SUCCEEDED", None).await;
    let data = sub.expect_data("run").await;
    let last = field(&data, "runUpdated");
    assert_eq!(
        summary(last),
        expected(&run_id, "SUCCEEDED", "-"),
        "{last:#}"
    );
    assert_eq!(last["run"]["stepsCompleted"], 3, "{last:#}");
    assert!(last["run"]["finishedAt"].is_string(), "{last:#}");
    sub.expect_complete("run").await;
    sub.disconnect().await;
}

both_backends!(run_updated_of_finished_run_sends_state_and_completes);
async fn run_updated_of_finished_run_sends_state_and_completes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, token, "Done", 1).await;
    let done = start_run(&server, token, &workflow).await;
    let done_id = str_field(&done, "id");
    finish_run(&server, token, &done_id, "FAILED", Some("boom")).await;
    let cancelled = start_run(&server, token, &workflow).await;
    let cancelled_id = str_field(&cancelled, "id");

    let mut sub = Subscriber::connect(&server, Some(token)).await;
    sub.subscribe("done", &run_updated_query(), json!({ "runId": done_id }));
    let data = sub.expect_data("done").await;
    let state = field(&data, "runUpdated");
    assert_eq!(summary(state), expected(&done_id, "FAILED", "-"));
    assert_eq!(state["run"]["error"], "boom", "{state:#}");
    sub.expect_complete("done").await;

    // Cancelling is a finished state too: the stream ends after it.
    sub.subscribe(
        "cancel",
        &run_updated_query(),
        json!({ "runId": cancelled_id }),
    );
    let data = sub.expect_data("cancel").await;
    assert_eq!(
        summary(field(&data, "runUpdated")),
        expected(&cancelled_id, "RUNNING", "-")
    );
    common::runs::cancel_run(&server, token, &cancelled_id, Some("operator stopped it")).await;
    let data = sub.expect_data("cancel").await;
    let last = field(&data, "runUpdated");
    assert_eq!(summary(last), expected(&cancelled_id, "CANCELLED", "-"));
    assert_eq!(last["run"]["error"], "operator stopped it", "{last:#}");
    sub.expect_complete("cancel").await;

    // A missing run is NOT_FOUND.
    sub.subscribe(
        "missing",
        &run_updated_query(),
        json!({ "runId": common::fixtures::new_id() }),
    );
    sub.expect_error_code("missing", "NOT_FOUND").await;
    sub.disconnect().await;
}

both_backends!(run_updated_reports_the_sweeper_timing_a_run_out);
async fn run_updated_reports_the_sweeper_timing_a_run_out(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            ("STEPWISE_RUN_TIMEOUT_SECONDS".into(), "3".into()),
            ("STEPWISE_SWEEP_INTERVAL_SECONDS".into(), "1".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, token, "Stalls", 2).await;
    let run = start_run(&server, token, &workflow).await;
    let run_id = str_field(&run, "id");

    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("run", &run_updated_query(), json!({ "runId": run_id }))],
    );
    // RUNNING first (unless the sweeper was quicker than the client), then TIMED_OUT.
    let mut last = field(&sub.expect_data("run").await, "runUpdated").clone();
    if last["run"]["status"] == "RUNNING" {
        last = field(&sub.expect_data("run").await, "runUpdated").clone();
    }
    assert_eq!(
        summary(&last),
        expected(&run_id, "TIMED_OUT", "-"),
        "{last:#}"
    );
    let error = last["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no step report"), "timeout error: {last:#}");
    assert!(last["run"]["finishedAt"].is_string(), "{last:#}");
    sub.expect_complete("run").await;
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------
// runsUpdated
// ---------------------------------------------------------------------------

both_backends!(runs_updated_streams_every_run_of_the_company_or_of_one_workflow);
async fn runs_updated_streams_every_run_of_the_company_or_of_one_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (first, first_steps) = active_workflow(&server, token, "First", 2).await;
    let (second, second_steps) = active_workflow(&server, token, "Second", 1).await;

    let query = runs_updated_query();
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[
            ("all", &query, json!({})),
            ("first", &query, json!({ "workflowId": first })),
        ],
    );
    // Warm up with runs of the first workflow (both streams see them).
    let mut warmup = HashSet::new();
    sub.until_live(&["all", "first"], async || {
        let run = start_run(&server, token, &first).await;
        warmup.insert(str_field(&run, "id"));
    })
    .await;

    // A run of the second workflow, then one of the first.
    let two = str_field(&start_run(&server, token, &second).await, "id");
    let two_log = report_step(&server, token, &two, &second_steps[0], outcome("FAILED")).await;
    let two_log = str_field(&two_log["healthLog"], "id");
    finish_run(&server, token, &two, "FAILED", Some("nope")).await;

    let one = str_field(&start_run(&server, token, &first).await, "id");
    let mut one_logs = Vec::new();
    for step in &first_steps {
        let report = report_step(&server, token, &one, step, outcome("SUCCESS")).await;
        one_logs.push(str_field(&report["healthLog"], "id"));
    }
    finish_run(&server, token, &one, "SUCCEEDED", None).await;

    let one_expected = vec![
        expected(&one, "RUNNING", "-"),
        expected(&one, "RUNNING", &one_logs[0]),
        expected(&one, "RUNNING", &one_logs[1]),
        expected(&one, "SUCCEEDED", "-"),
    ];
    let mut all_expected = vec![
        expected(&two, "RUNNING", "-"),
        expected(&two, "RUNNING", &two_log),
        expected(&two, "FAILED", "-"),
    ];
    all_expected.extend(one_expected.clone());

    let all: Vec<_> = run_updates(&mut sub, "all", &warmup, all_expected.len())
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        all, all_expected,
        "runsUpdated without a filter: every run of the company, in order"
    );

    let filtered: Vec<_> = run_updates(&mut sub, "first", &warmup, one_expected.len())
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        filtered, one_expected,
        "runsUpdated(workflowId) must carry only that workflow's runs"
    );
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------
// healthLogRecorded
// ---------------------------------------------------------------------------

/// The `healthLog.id` of a `healthLogRecorded` event.
fn log_id(data: &Value) -> String {
    str_field(&field(data, "healthLogRecorded")["healthLog"], "id")
}

both_backends!(health_log_recorded_resumes_after_a_cursor_without_gaps_or_duplicates);
async fn health_log_recorded_resumes_after_a_cursor_without_gaps_or_duplicates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Resumable", 2).await;
    let (other, other_steps) = active_workflow(&server, token, "Other", 1).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let other_run = str_field(&start_run(&server, token, &other).await, "id");
    let report = async |run: &str, step: &str| -> String {
        let report = report_step(&server, token, run, step, outcome("SUCCESS")).await;
        str_field(&report["healthLog"], "id")
    };

    // First connection: receives two logs (a warm-up one, then `second`).
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("logs", &health_log_recorded_query(), json!({}))],
    );
    let mut warmup = HashSet::new();
    let first = sub
        .until_live(&["logs"], async || {
            warmup.insert(report(run.as_str(), steps[0].as_str()).await);
        })
        .await;
    assert!(
        warmup.contains(&log_id(&first[0]["payload"]["data"])),
        "{first:?}"
    );
    let second = report(run.as_str(), steps[1].as_str()).await;
    let cursor = loop {
        let data = sub.expect_data("logs").await;
        let id = log_id(&data);
        if id == second {
            let event = field(&data, "healthLogRecorded");
            assert_eq!(event["healthLog"]["run"]["id"], run.as_str(), "{event:#}");
            assert_eq!(
                event["healthLog"]["workflow"]["id"],
                workflow.as_str(),
                "{event:#}"
            );
            break str_field(event, "cursor");
        }
        assert!(
            warmup.contains(&id),
            "unexpected log {id} before {second}: {data:#}"
        );
    };
    assert!(!cursor.is_empty());
    sub.disconnect().await;

    // While disconnected: two logs of this workflow, one of another.
    let missed = [
        report(run.as_str(), steps[0].as_str()).await,
        report(run.as_str(), steps[1].as_str()).await,
    ];
    let elsewhere = report(other_run.as_str(), other_steps[0].as_str()).await;

    // Resubscribe after the cursor (only this workflow): exactly the two missed, oldest
    // first, then live ones.
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[(
            "logs",
            &health_log_recorded_query(),
            json!({ "workflowId": workflow, "after": cursor }),
        )],
    );
    let replayed = [
        log_id(&sub.expect_data("logs").await),
        log_id(&sub.expect_data("logs").await),
    ];
    assert_eq!(
        replayed, missed,
        "replay after the cursor (log {elsewhere} is another workflow's)"
    );
    for _ in 0..2 {
        let live = report(run.as_str(), steps[0].as_str()).await;
        report(other_run.as_str(), other_steps[0].as_str()).await;
        let data = sub.expect_data("logs").await;
        assert_eq!(
            log_id(&data),
            live,
            "live after the replay, nothing twice: {data:#}"
        );
        assert!(!str_field(field(&data, "healthLogRecorded"), "cursor").is_empty());
    }
    sub.expect_quiet("logs").await;

    // A cursor that was never issued.
    sub.subscribe(
        "forged",
        &health_log_recorded_query(),
        json!({ "after": "bm90LWEtY3Vyc29y" }),
    );
    sub.expect_error_code("forged", "BAD_USER_INPUT").await;
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------
// notificationCreated and workflowStatusChanged
// ---------------------------------------------------------------------------

/// The next event of `op` (`notificationCreated` or `workflowStatusChanged`) about
/// `workflow`, skipping events about `skip`.
async fn next_about(
    sub: &mut Subscriber,
    op: &str,
    root: &str,
    workflow: &str,
    skip: &str,
) -> Value {
    loop {
        let data = sub.expect_data(op).await;
        let event = field(&data, root).clone();
        let about = str_field(&event["workflow"], "id");
        if about == skip {
            continue;
        }
        assert_eq!(
            about, workflow,
            "{op}: an event about an unexpected workflow: {event:#}"
        );
        return event;
    }
}

both_backends!(breaking_and_recovering_a_workflow_notifies_and_streams_status_changes);
async fn breaking_and_recovering_a_workflow_notifies_and_streams_status_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (fragile, steps) = active_workflow(&server, token, "Fragile", 1).await;
    let (warm, warm_steps) = active_workflow(&server, token, "Warm-up", 1).await;
    // Runs started while the workflow is ACTIVE (a BROKEN one cannot start runs).
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(str_field(&start_run(&server, token, &fragile).await, "id"));
    }
    let warm_run = str_field(&start_run(&server, token, &warm).await, "id");

    let status_query = workflow_status_changed_query();
    let mut sub = Subscriber::start(
        &server,
        Some(acme.member_token.as_str()),
        &[
            ("notes", &notification_created_query(), json!({})),
            ("status", &status_query, json!({})),
            ("fragile", &status_query, json!({ "workflowId": fragile })),
        ],
    );
    // Warm up: a low-confidence healing puts the warm-up workflow in review (a status
    // change and a WARNING); setting it ACTIVE again re-arms the trigger.
    sub.until_live(&["notes", "status"], async || {
        report_step(
            &server,
            token,
            &warm_run,
            &warm_steps[0],
            low_confidence_healing(),
        )
        .await;
        set_status(&server, token, &warm, "ACTIVE").await;
    })
    .await;

    // Two failures: nothing yet. The third breaks the workflow.
    for run in &runs[..3] {
        report_step(&server, token, run, &steps[0], outcome("FAILED")).await;
        finish_run(&server, token, run, "FAILED", Some("element not found")).await;
    }
    let note = next_about(&mut sub, "notes", "notificationCreated", &fragile, &warm).await;
    assert_eq!(note["kind"], "workflow_broken", "{note:#}");
    assert_eq!(note["severity"], "ERROR", "{note:#}");
    assert_eq!(note["read"], false, "{note:#}");
    let title = str_field(&note, "title");
    assert!(title.to_lowercase().contains("broken"), "title {title:?}");
    for op in ["status", "fragile"] {
        let change = next_about(&mut sub, op, "workflowStatusChanged", &fragile, &warm).await;
        assert_eq!(change["status"], "BROKEN", "{op}: {change:#}");
        assert_eq!(change["previousStatus"], "ACTIVE", "{op}: {change:#}");
        assert_eq!(change["workflow"]["status"], "BROKEN", "{op}: {change:#}");
        assert_eq!(
            change["workflow"]["consecutiveFailures"], 3,
            "{op}: {change:#}"
        );
    }

    // A run started before the breakage succeeds: the workflow recovers.
    report_step(&server, token, &runs[3], &steps[0], outcome("SUCCESS")).await;
    finish_run(&server, token, &runs[3], "SUCCEEDED", None).await;
    let note = next_about(&mut sub, "notes", "notificationCreated", &fragile, &warm).await;
    assert_eq!(note["kind"], "workflow_recovered", "{note:#}");
    assert_eq!(note["severity"], "INFO", "{note:#}");
    for op in ["status", "fragile"] {
        let change = next_about(&mut sub, op, "workflowStatusChanged", &fragile, &warm).await;
        assert_eq!(change["status"], "ACTIVE", "{op}: {change:#}");
        assert_eq!(change["previousStatus"], "BROKEN", "{op}: {change:#}");
        assert_eq!(
            change["workflow"]["consecutiveFailures"], 0,
            "{op}: {change:#}"
        );
    }
    // The filtered stream never saw the warm-up workflow (next_about would have skipped
    // it, so check directly that nothing else is pending for it).
    sub.expect_quiet("fragile").await;

    // People change statuses too: editing and archiving stream like the health rules do.
    set_status(&server, token, &fragile, "NEEDS_REVIEW").await;
    let change = next_about(
        &mut sub,
        "fragile",
        "workflowStatusChanged",
        &fragile,
        &warm,
    )
    .await;
    assert_eq!(change["status"], "NEEDS_REVIEW", "{change:#}");
    assert_eq!(change["previousStatus"], "ACTIVE", "{change:#}");
    let archived = server
        .gql(
            "mutation($id: ID!) { archiveWorkflow(id: $id) { status } }",
            json!({ "id": fragile }),
            Some(token),
        )
        .await;
    assert_eq!(
        archived["data"]["archiveWorkflow"]["status"], "ARCHIVED",
        "{archived:#}"
    );
    let change = next_about(
        &mut sub,
        "fragile",
        "workflowStatusChanged",
        &fragile,
        &warm,
    )
    .await;
    assert_eq!(change["status"], "ARCHIVED", "{change:#}");
    assert_eq!(change["previousStatus"], "NEEDS_REVIEW", "{change:#}");
    // An edit that keeps the status announces nothing.
    update_workflow(
        &server,
        token,
        &fragile,
        json!({ "name": "Fragile, renamed" }),
    )
    .await;
    sub.expect_quiet("fragile").await;

    // What was streamed is what is stored.
    let stored = workflow_notifications(&server, token, &fragile).await;
    let kinds: Vec<_> = stored.iter().map(|n| n["kind"].clone()).collect();
    assert_eq!(
        kinds,
        vec![json!("workflow_recovered"), json!("workflow_broken")],
        "{stored:#?}"
    );
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------
// Tenancy and authentication
// ---------------------------------------------------------------------------

/// Whether a subscription event is about one of `workflows` / `runs` (and only those).
fn belongs_to(op: &str, data: &Value, workflows: &[&str], runs: &[&str]) -> bool {
    let root = match op {
        "runs" => "runsUpdated",
        "logs" => "healthLogRecorded",
        "notes" => "notificationCreated",
        "queued" => "runQueued",
        _ => "workflowStatusChanged",
    };
    let event = &data[root];
    let (workflow, run) = match op {
        "runs" => (&event["run"]["workflow"]["id"], &event["run"]["id"]),
        // Queued runs are new: their workflow is what must be Globex's.
        "queued" => (&event["workflow"]["id"], &Value::Null),
        "logs" => (
            &event["healthLog"]["workflow"]["id"],
            &event["healthLog"]["run"]["id"],
        ),
        _ => (&event["workflow"]["id"], &Value::Null),
    };
    workflows.iter().any(|w| workflow == w) && (run.is_null() || runs.iter().any(|r| run == r))
}

/// `runQueued` (the run queue, issue 13): the queued run and its workflow.
fn run_queued_query() -> String {
    "subscription($ids: [ID!]) { runQueued(workflowIds: $ids) { id status workflow { id } } }"
        .to_owned()
}

/// Queues a run of `workflow`; answers its id.
async fn enqueue_run(server: &TestServer, token: &str, workflow: &str) -> String {
    let data = server
        .gql_ok(
            "mutation($w: ID!) { enqueueRun(input: { workflowId: $w }) { id } }",
            json!({ "w": workflow }),
            Some(token),
        )
        .await;
    str_field(&data["enqueueRun"], "id")
}

both_backends!(subscribers_only_ever_see_their_own_company);
async fn subscribers_only_ever_see_their_own_company(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let a = acme.admin_token.as_str();
    let b = globex.admin_token.as_str();
    let (a_flow, a_steps) = active_workflow(&server, a, "Acme flow", 1).await;
    let mut a_runs = Vec::new();
    for _ in 0..3 {
        a_runs.push(str_field(&start_run(&server, a, &a_flow).await, "id"));
    }
    let (b_flow, b_steps) = active_workflow(&server, b, "Globex flow", 1).await;
    let (b_last, b_last_steps) = active_workflow(&server, b, "Globex last", 1).await;
    let b_run = str_field(&start_run(&server, b, &b_flow).await, "id");
    let b_last_run = str_field(&start_run(&server, b, &b_last).await, "id");

    let ops = ["runs", "logs", "notes", "status", "queued"];
    let mut sub = Subscriber::start(
        &server,
        Some(globex.member_token.as_str()),
        &[
            ("runs", &runs_updated_query(), json!({})),
            ("logs", &health_log_recorded_query(), json!({})),
            ("notes", &notification_created_query(), json!({})),
            ("status", &workflow_status_changed_query(), json!({})),
            ("queued", &run_queued_query(), json!({})),
        ],
    );
    // Globex's streams are live...
    let mut b_queued = Vec::new();
    sub.until_live(&ops, async || {
        report_step(&server, b, &b_run, &b_steps[0], low_confidence_healing()).await;
        set_status(&server, b, &b_flow, "ACTIVE").await;
        b_queued.push(enqueue_run(&server, b, &b_flow).await);
    })
    .await;

    // ...while Acme's runs report, fail and break Acme's workflow, and Acme queues runs.
    for _ in 0..3 {
        enqueue_run(&server, a, &a_flow).await;
    }
    for run in &a_runs {
        report_step(&server, a, run, &a_steps[0], outcome("FAILED")).await;
        finish_run(&server, a, run, "FAILED", None).await;
    }
    assert_eq!(
        common::runs::workflow_health(&server, a, &a_flow).await["status"],
        "BROKEN"
    );

    // Then Globex's own event on another workflow proves its streams still flow: everything
    // they carried up to it must be Globex's.
    let last_log = report_step(
        &server,
        b,
        &b_last_run,
        &b_last_steps[0],
        low_confidence_healing(),
    )
    .await;
    let last_log = str_field(&last_log["healthLog"], "id");
    let last_queued = enqueue_run(&server, b, &b_last).await;
    let b_flows = [b_flow.as_str(), b_last.as_str()];
    b_queued.push(last_queued.clone());
    let b_runs: Vec<&str> = [b_run.as_str(), b_last_run.as_str()]
        .into_iter()
        .chain(b_queued.iter().map(String::as_str))
        .collect();
    for op in ops {
        loop {
            let data = sub.expect_data(op).await;
            assert!(
                belongs_to(op, &data, &b_flows, &b_runs),
                "Globex's `{op}` stream carried something not Globex's: {data:#}"
            );
            let done = match op {
                "runs" => data["runsUpdated"]["healthLog"]["id"] == last_log.as_str(),
                "logs" => data["healthLogRecorded"]["healthLog"]["id"] == last_log.as_str(),
                "notes" => data["notificationCreated"]["workflow"]["id"] == b_last.as_str(),
                "queued" => data["runQueued"]["id"] == last_queued.as_str(),
                _ => data["workflowStatusChanged"]["workflow"]["id"] == b_last.as_str(),
            };
            if done {
                break;
            }
        }
    }

    // Another company's run is answered like a missing one.
    sub.subscribe("spy", &run_updated_query(), json!({ "runId": a_runs[0] }));
    let foreign = sub.expect_error_code("spy", "NOT_FOUND").await;
    sub.subscribe(
        "ghost",
        &run_updated_query(),
        json!({ "runId": common::fixtures::new_id() }),
    );
    let missing = sub.expect_error_code("ghost", "NOT_FOUND").await;
    assert_eq!(
        foreign["message"], missing["message"],
        "a foreign run must look exactly like a missing one"
    );
    // Filtering by another company's workflow yields nothing of it either.
    sub.subscribe(
        "spy-runs",
        &runs_updated_query(),
        json!({ "workflowId": a_flow }),
    );
    let reset = set_status(&server, a, &a_flow, "ACTIVE").await;
    assert_eq!(reset["status"], "ACTIVE");
    start_run(&server, a, &a_flow).await;
    // Silence, or the same NOT_FOUND a missing workflow would get; never Acme's run.
    if let Some(event) = sub.try_event_for("spy-runs", common::realtime::QUIET).await {
        let code = if event["event"] == "error" {
            event["errors"][0]["extensions"]["code"].clone()
        } else {
            event["payload"]["errors"][0]["extensions"]["code"].clone()
        };
        assert_eq!(
            code, "NOT_FOUND",
            "runsUpdated(another company's workflow) delivered: {event}"
        );
    }
    sub.disconnect().await;
}

both_backends!(subscriptions_need_a_valid_token);
async fn subscriptions_need_a_valid_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme: Team = team(&server, "Acme").await;
    let (workflow, _) = active_workflow(&server, &acme.admin_token, "Private", 1).await;
    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );

    // No token: the connection is accepted (anonymous), every subscription is refused.
    let mut anonymous = Subscriber::connect(&server, None).await;
    let subscriptions = [
        ("run", run_updated_query(), json!({ "runId": run })),
        ("runs", runs_updated_query(), json!({})),
        ("logs", health_log_recorded_query(), json!({})),
        ("notes", notification_created_query(), json!({})),
        ("status", workflow_status_changed_query(), json!({})),
        ("queued", run_queued_query(), json!({})),
    ];
    for (id, query, variables) in &subscriptions {
        anonymous.subscribe(id, query, variables.clone());
        anonymous.expect_error_code(id, "UNAUTHENTICATED").await;
    }
    anonymous.disconnect().await;

    // A bad token: the server closes the connection with 4403.
    let mut forged = Subscriber::start(
        &server,
        Some("not.a.token"),
        &[("runs", &runs_updated_query(), json!({}))],
    );
    let event = forged.event_for("runs").await;
    assert_eq!(event["event"], "error", "{event}");
    assert_eq!(
        event["close"]["code"], 4403,
        "a bad token closes with 4403: {event}"
    );
    forged.disconnect().await;
}
