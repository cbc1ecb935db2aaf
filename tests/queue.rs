//! The executor run queue (issue 13): enqueue, claim under a lease, heartbeat, report with
//! healed selectors, finish with output; expired leases re-queued then failed; retries
//! linked both ways; schedules firing once per occurrence with one catch-up; signed
//! webhooks with every refusal; AI step text that never overwrites a person's; and the
//! `runQueued` wake-up. On both backends, and across two instances on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::fixtures::*;
use common::realtime::{Subscriber, field};
use common::runs::{active_workflow, assert_bad_input, poll_until};
use common::{
    Backend, ServerOptions, TestServer, assert_error_code, error_code, parse_datetime, str_field,
};
use serde_json::{Value, json};

/// Everything the queue adds to a run, and what it shares with a started one.
const QUEUED_RUN: &str = "id status trigger priority notBefore input output attempt maxAttempts \
     leaseExpiresAt stepsTotal stepsCompleted stepsHealed error startedAt finishedAt \
     workflow { id } startedBy { id } retryOf { id } retries { totalCount nodes { id } } \
     fromStep { id } schedule { id } webhook { id }";

/// A server whose queue ticks every 100 ms and whose cron takes a seconds field.
async fn queue_server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, queue_options(&[])).await
}

fn queue_options(extra: &[(&str, &str)]) -> ServerOptions {
    let mut env = vec![
        ("STEPWISE_QUEUE_TICK_MS".to_owned(), "100".to_owned()),
        (
            "STEPWISE_CRON_SECONDS_FOR_TESTS".to_owned(),
            "true".to_owned(),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ServerOptions {
        env,
        ..ServerOptions::default()
    }
}

async fn try_enqueue(server: &TestServer, token: &str, input: Value) -> Value {
    server
        .gql(
            &format!(
                "mutation($input: EnqueueRunInput!) {{ enqueueRun(input: $input) {{ {QUEUED_RUN} }} }}"
            ),
            json!({ "input": input }),
            Some(token),
        )
        .await
}

async fn enqueue(server: &TestServer, token: &str, input: Value) -> Value {
    let resp = try_enqueue(server, token, input.clone()).await;
    assert!(resp["errors"].is_null(), "enqueueRun({input}): {resp:#}");
    resp["data"]["enqueueRun"].clone()
}

const CLAIM: &str = "mutation($ids: [ID!], $lease: Int) { claimRun(workflowIds: $ids, leaseSeconds: $lease) { \
     leaseId expiresAt run { id status attempt stepsTotal leaseExpiresAt input priority trigger } } }";

async fn try_claim(server: &TestServer, token: &str, ids: Option<Vec<&str>>, lease: i64) -> Value {
    server
        .gql(CLAIM, json!({ "ids": ids, "lease": lease }), Some(token))
        .await
}

/// Claims a run; `Null` when none is claimable.
async fn claim(server: &TestServer, token: &str, ids: Option<Vec<&str>>, lease: i64) -> Value {
    let resp = try_claim(server, token, ids, lease).await;
    assert!(resp["errors"].is_null(), "claimRun: {resp:#}");
    resp["data"]["claimRun"].clone()
}

async fn get_run(server: &TestServer, token: &str, id: &str) -> Value {
    let data = server
        .gql_ok(
            &format!("query($id: ID!) {{ run(id: $id) {{ {QUEUED_RUN} }} }}"),
            json!({ "id": id }),
            Some(token),
        )
        .await;
    data["run"].clone()
}

const HEARTBEAT: &str = "mutation($run: ID!, $lease: ID!, $seconds: Int) { \
     heartbeatRun(runId: $run, leaseId: $lease, leaseSeconds: $seconds) { leaseId expiresAt run { id status } } }";

// ---------------------------------------------------------------------------
// The executor loop
// ---------------------------------------------------------------------------

both_backends!(an_executor_claims_reports_healed_selectors_and_finishes);
async fn an_executor_claims_reports_healed_selectors_and_finishes(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (flow, steps) = active_workflow(&server, token, "Checkout", 3).await;
    let (other, _) = active_workflow(&server, token, "Other", 1).await;

    // Nothing queued: a claim answers null (an executor polls).
    assert!(claim(&server, token, None, 30).await.is_null());

    let low = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "input": { "order": 1 } }),
    )
    .await;
    assert_eq!(low["status"], "QUEUED", "{low:#}");
    assert_eq!(low["trigger"], "QUEUE");
    assert_eq!(low["attempt"], 0);
    assert_eq!(low["maxAttempts"], 3);
    assert_eq!(low["input"], json!({ "order": 1 }));
    assert_eq!(low["startedBy"]["id"], acme.member_id.as_str());
    assert!(low["startedAt"].is_null() && low["leaseExpiresAt"].is_null());
    let high = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "priority": 5, "input": [1, "two", { "three": 3.5 }] }),
    )
    .await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let later = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "priority": 100, "notBefore": tomorrow }),
    )
    .await;
    let elsewhere = enqueue(&server, token, json!({ "workflowId": other })).await;

    // Highest priority first; a run not yet due is not claimable; a filter holds.
    let lease = claim(&server, token, Some(vec![&flow]), 30).await;
    assert_eq!(lease["run"]["id"], high["id"], "{lease:#}");
    assert_eq!(lease["run"]["status"], "RUNNING");
    assert_eq!(lease["run"]["attempt"], 1);
    assert_eq!(lease["run"]["stepsTotal"], 3);
    assert_eq!(lease["run"]["input"], json!([1, "two", { "three": 3.5 }]));
    assert!(!lease["expiresAt"].is_null());
    let second = claim(&server, token, Some(vec![&flow]), 30).await;
    assert_eq!(second["run"]["id"], low["id"], "{second:#}");
    assert!(claim(&server, token, Some(vec![&flow]), 30).await.is_null());
    assert_eq!(
        get_run(&server, token, &str_field(&later, "id")).await["status"],
        "QUEUED"
    );
    assert_eq!(
        claim(&server, token, None, 30).await["run"]["id"],
        elsewhere["id"]
    );

    // Heartbeat renews; a wrong lease is CONFLICT.
    let run_id = str_field(&lease["run"], "id");
    let lease_id = str_field(&lease, "leaseId");
    let beat = server
        .gql_ok(
            HEARTBEAT,
            json!({ "run": run_id, "lease": lease_id, "seconds": 120 }),
            Some(token),
        )
        .await;
    let renewed = parse_datetime(&beat["heartbeatRun"]["expiresAt"]);
    assert!(renewed > parse_datetime(&lease["expiresAt"]), "{beat:#}");
    let stolen = server
        .gql(
            HEARTBEAT,
            json!({ "run": run_id, "lease": second["leaseId"] }),
            Some(token),
        )
        .await;
    assert_error_code(&stolen, "CONFLICT", "heartbeat with another run's lease");

    // A healed report writes its selectors to the step, in the same transaction.
    let healed = json!({ "css": "#pay-v2", "xpath": "//button[text()='Pay']", "rank": [1, 2] });
    let report = server
        .gql(
            "mutation($run: ID!, $step: ID!, $outcome: StepOutcomeInput!, $lease: ID) { \
               reportStep(runId: $run, stepId: $step, outcome: $outcome, leaseId: $lease) { \
                 duplicate run { stepsCompleted stepsHealed } } }",
            json!({ "run": run_id, "step": steps[1], "lease": lease_id, "outcome": {
                "status": "HEALED_DETERMINISTIC", "healingConfidence": 0.93,
                "healedSelectors": healed, "healingMethod": "text-match",
                "idempotencyKey": "a1-step2" } }),
            Some(token),
        )
        .await;
    assert!(report["errors"].is_null(), "{report:#}");
    assert_eq!(report["data"]["reportStep"]["run"]["stepsHealed"], 1);
    let step = server
        .gql_ok(
            "query($id: ID!) { step(id: $id) { healedSelectors healedAt healingConfidence healingMethod selectors } }",
            json!({ "id": steps[1] }),
            Some(token),
        )
        .await;
    assert_eq!(step["step"]["healedSelectors"], healed, "{step:#}");
    assert_eq!(step["step"]["healingConfidence"], json!(0.93));
    assert_eq!(step["step"]["healingMethod"], "text-match");
    assert!(!step["step"]["healedAt"].is_null());
    assert_eq!(
        step["step"]["selectors"],
        json!({ "css": "#Checkout step 2" }),
        "the recorded selectors stay"
    );
    // Selectors only go with a healed status.
    let wrong = server
        .gql(
            "mutation($run: ID!, $step: ID!, $outcome: StepOutcomeInput!) { \
               reportStep(runId: $run, stepId: $step, outcome: $outcome) { duplicate } }",
            json!({ "run": run_id, "step": steps[0], "outcome": {
                "status": "SUCCESS", "healedSelectors": { "css": "#x" } } }),
            Some(token),
        )
        .await;
    assert_bad_input(
        &wrong,
        Some("outcome.healedSelectors"),
        "healed",
        "selectors on a success",
    );

    // Finish with output; the lease ends with the run.
    let finished = server
        .gql(
            "mutation($run: ID!, $lease: ID, $output: JSON) { finishRun(runId: $run, \
               status: SUCCEEDED, output: $output, leaseId: $lease) { status output leaseExpiresAt } }",
            json!({ "run": run_id, "lease": lease_id, "output": { "receipt": "R-1", "total": 12.5 } }),
            Some(token),
        )
        .await;
    assert!(finished["errors"].is_null(), "{finished:#}");
    let finished = &finished["data"]["finishRun"];
    assert_eq!(finished["status"], "SUCCEEDED");
    assert_eq!(
        finished["output"],
        json!({ "receipt": "R-1", "total": 12.5 })
    );
    assert!(finished["leaseExpiresAt"].is_null());
    let late = server
        .gql(
            HEARTBEAT,
            json!({ "run": run_id, "lease": lease_id }),
            Some(token),
        )
        .await;
    assert_error_code(&late, "CONFLICT", "heartbeat after finishing");
    // A late finish with a stale lease is refused too, and changes nothing.
    let second_run = str_field(&second["run"], "id");
    let stale = server
        .gql(
            "mutation($run: ID!, $lease: ID) { finishRun(runId: $run, status: FAILED, leaseId: $lease) { status } }",
            json!({ "run": second_run, "lease": lease_id }),
            Some(token),
        )
        .await;
    assert_error_code(&stale, "CONFLICT", "finish with another run's lease");
    assert_eq!(
        get_run(&server, token, &second_run).await["status"],
        "RUNNING"
    );

    // startRun still starts a run at once, outside the queue.
    let manual = common::runs::start_run(&server, token, &flow).await;
    assert_eq!(manual["status"], "RUNNING");
    assert_eq!(
        get_run(&server, token, &str_field(&manual, "id")).await["trigger"],
        "MANUAL"
    );
}

both_backends!(enqueue_and_claim_refuse_bad_input_and_repeat_by_key);
async fn enqueue_and_claim_refuse_bad_input_and_repeat_by_key(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        queue_options(&[("STEPWISE_RUN_JSON_MAX_BYTES", "1024")]),
    )
    .await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (flow, _) = active_workflow(&server, token, "Flow", 1).await;
    let draft = simple_workflow(&server, token, "Draft", 1).await;

    for (input, field, needle) in [
        (
            json!({ "workflowId": flow, "priority": 1001 }),
            "priority",
            "between",
        ),
        (
            json!({ "workflowId": flow, "maxAttempts": 0 }),
            "maxAttempts",
            "between",
        ),
        (
            json!({ "workflowId": flow, "maxAttempts": 21 }),
            "maxAttempts",
            "between",
        ),
        (
            json!({ "workflowId": flow, "input": { "big": "x".repeat(2000) } }),
            "input",
            "bytes",
        ),
        (
            json!({ "workflowId": flow, "idempotencyKey": "" }),
            "idempotencyKey",
            "characters",
        ),
        (
            json!({ "workflowId": flow, "notBefore": "2999-01-01T00:00:00Z" }),
            "notBefore",
            "days",
        ),
        (
            json!({ "workflowId": str_field(&draft, "id") }),
            "workflowId",
            "draft",
        ),
    ] {
        let resp = try_enqueue(&server, token, input.clone()).await;
        assert_bad_input(&resp, Some(field), needle, &format!("enqueueRun({input})"));
    }
    let missing = try_enqueue(&server, token, json!({ "workflowId": new_id() })).await;
    assert_error_code(&missing, "NOT_FOUND", "enqueue an unknown workflow");
    for lease in [0, 3601] {
        let resp = try_claim(&server, token, None, lease).await;
        assert_bad_input(&resp, Some("leaseSeconds"), "between", "claim lease");
    }
    let many: Vec<String> = (0..101).map(|_| new_id()).collect();
    let resp = server
        .gql(CLAIM, json!({ "ids": many, "lease": 10 }), Some(token))
        .await;
    assert_bad_input(&resp, Some("workflowIds"), "at most", "claim 101 workflows");
    assert_eq!(server.sql_count("runs").await, 0, "nothing was queued");

    // The same key answers the first run, whatever else is sent.
    let first = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "idempotencyKey": "order-7", "input": { "n": 1 } }),
    )
    .await;
    let again = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "idempotencyKey": "order-7", "input": { "n": 2 } }),
    )
    .await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["input"], json!({ "n": 1 }));
    assert_eq!(server.sql_count("runs").await, 1);
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// Claims with a one-second lease and never heartbeats, `max_attempts` times: the run goes
/// back to the queue each time but the last, then fails with a clear error.
async fn lease_expires_then_fails(claimer: &TestServer, watcher: &TestServer, token: &str) {
    let (flow, steps) = active_workflow(claimer, token, "Fragile", 2).await;
    let run = enqueue(
        claimer,
        token,
        json!({ "workflowId": flow, "maxAttempts": 2 }),
    )
    .await;
    let run_id = str_field(&run, "id");
    let lease = claim(claimer, token, Some(vec![&flow]), 1).await;
    assert_eq!(lease["run"]["id"], run_id.as_str());
    common::runs::report_step(
        claimer,
        token,
        &run_id,
        &steps[0],
        common::runs::outcome("SUCCESS"),
    )
    .await;
    let requeued = poll_until(Duration::from_secs(20), "the lease to expire", async || {
        let run = get_run(watcher, token, &run_id).await;
        (run["status"] == "QUEUED").then_some(run)
    })
    .await;
    assert_eq!(requeued["attempt"], 1);
    assert_eq!(
        requeued["stepsCompleted"], 0,
        "progress restarts: {requeued:#}"
    );
    assert!(requeued["leaseExpiresAt"].is_null());
    assert!(
        requeued["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{requeued:#}"
    );
    // The first executor's lease is gone for good.
    let stale = claimer
        .gql(
            HEARTBEAT,
            json!({ "run": run_id, "lease": lease["leaseId"] }),
            Some(token),
        )
        .await;
    assert_error_code(&stale, "CONFLICT", "heartbeat after the lease expired");
    let stale_report = claimer
        .gql(
            "mutation($run: ID!, $step: ID!, $lease: ID) { reportStep(runId: $run, stepId: $step, \
               outcome: { status: SUCCESS }, leaseId: $lease) { duplicate } }",
            json!({ "run": run_id, "step": steps[1], "lease": lease["leaseId"] }),
            Some(token),
        )
        .await;
    assert_error_code(&stale_report, "CONFLICT", "report after the lease expired");

    let second = claim(watcher, token, Some(vec![&flow]), 1).await;
    assert_eq!(second["run"]["id"], run_id.as_str());
    assert_eq!(second["run"]["attempt"], 2);
    let failed = poll_until(
        Duration::from_secs(20),
        "the last lease to expire",
        async || {
            let run = get_run(claimer, token, &run_id).await;
            (run["status"] == "FAILED").then_some(run)
        },
    )
    .await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("maxAttempts"), "{failed:#}");
    assert!(!failed["finishedAt"].is_null());
    let health = common::runs::workflow_health(claimer, token, &flow).await;
    assert_eq!(
        health["consecutiveFailures"], 1,
        "it counts as a failure: {health:#}"
    );
    // A heartbeat in time keeps a run.
    let kept = enqueue(claimer, token, json!({ "workflowId": flow })).await;
    let lease = claim(claimer, token, Some(vec![&flow]), 2).await;
    assert_eq!(lease["run"]["id"], kept["id"]);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        watcher
            .gql_ok(
                HEARTBEAT,
                json!({ "run": kept["id"], "lease": lease["leaseId"], "seconds": 2 }),
                Some(token),
            )
            .await;
    }
    assert_eq!(
        get_run(claimer, token, &str_field(&kept, "id")).await["status"],
        "RUNNING"
    );
}

both_backends!(an_expired_lease_is_requeued_then_failed_after_max_attempts);
async fn an_expired_lease_is_requeued_then_failed_after_max_attempts(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    lease_expires_then_fails(&server, &server, &acme.member_token).await;
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

both_backends!(a_retry_is_linked_both_ways_and_runs_the_current_steps);
async fn a_retry_is_linked_both_ways_and_runs_the_current_steps(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (flow, steps) = active_workflow(&server, token, "Flow", 3).await;
    let run = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "input": { "a": 1 }, "priority": 7, "maxAttempts": 5 }),
    )
    .await;
    let run_id = str_field(&run, "id");
    let retry = "mutation($run: ID!, $from: ID) { retryRun(runId: $run, fromStep: $from) { id } }";
    let early = server
        .gql(retry, json!({ "run": run_id }), Some(token))
        .await;
    assert_bad_input(&early, Some("runId"), "queued", "retrying a queued run");
    let lease = claim(&server, token, None, 30).await;
    common::runs::finish_run(&server, token, &run_id, "FAILED", Some("boom")).await;
    let _ = lease;

    // A step added since: the retry runs the workflow as it is now, from step 2 on.
    add_step(&server, token, &flow, step_input("click", "new last"), None).await;
    let (other, other_steps) = active_workflow(&server, token, "Other", 1).await;
    let foreign_step = server
        .gql(
            retry,
            json!({ "run": run_id, "from": other_steps[0] }),
            Some(token),
        )
        .await;
    assert_bad_input(
        &foreign_step,
        Some("fromStep"),
        "workflow",
        "fromStep of another workflow",
    );
    let missing_step = server
        .gql(
            retry,
            json!({ "run": run_id, "from": new_id() }),
            Some(token),
        )
        .await;
    assert_error_code(&missing_step, "NOT_FOUND", "unknown fromStep");
    let _ = other;
    let retried = server
        .gql_ok(
            retry,
            json!({ "run": run_id, "from": steps[1] }),
            Some(token),
        )
        .await;
    let retry_id = str_field(&retried["retryRun"], "id");
    let retry_run = get_run(&server, token, &retry_id).await;
    assert_eq!(retry_run["status"], "QUEUED");
    assert_eq!(retry_run["trigger"], "RETRY");
    assert_eq!(retry_run["retryOf"]["id"], run_id.as_str());
    assert_eq!(retry_run["fromStep"]["id"], steps[1].as_str());
    assert_eq!(retry_run["input"], json!({ "a": 1 }));
    assert_eq!(retry_run["priority"], 7);
    assert_eq!(retry_run["maxAttempts"], 5);
    let original = get_run(&server, token, &run_id).await;
    assert_eq!(original["retries"]["totalCount"], 1, "{original:#}");
    assert_eq!(original["retries"]["nodes"][0]["id"], retry_id.as_str());
    let lease = claim(&server, token, None, 30).await;
    assert_eq!(lease["run"]["id"], retry_id.as_str());
    assert_eq!(lease["run"]["stepsTotal"], 3, "steps 2, 3 and the new one");
}

// ---------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------

const SCHEDULE_FIELDS: &str = "id name cron timezone input priority enabled nextFireAt \
     lastFiredAt lastError lastRun { id } workflow { id }";

async fn try_create_schedule(server: &TestServer, token: &str, input: Value) -> Value {
    server
        .gql(
            &format!(
                "mutation($input: CreateScheduleInput!) {{ createSchedule(input: $input) {{ {SCHEDULE_FIELDS} }} }}"
            ),
            json!({ "input": input }),
            Some(token),
        )
        .await
}

async fn schedule_runs(server: &TestServer, schedule: &str) -> Vec<String> {
    server
        .sql_strings(&format!(
            "SELECT CAST(not_before AS TEXT) AS v FROM runs WHERE trigger_id = {} ORDER BY not_before",
            lit(schedule)
        ))
        .await
}

both_backends!(schedules_fire_pause_resume_and_refuse_bad_cron_or_zone);
async fn schedules_fire_pause_resume_and_refuse_bad_cron_or_zone(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (flow, _) = active_workflow(&server, token, "Nightly", 1).await;

    for (cron, zone, field) in [
        ("61 * * * *", "UTC", "cron"),
        ("every day", "UTC", "cron"),
        ("0 0 30 2 *", "UTC", "cron"),
        ("0 9 * * *", "Europe/Atlantis", "timezone"),
        ("0 9 * * *", "", "timezone"),
    ] {
        let resp = try_create_schedule(
            &server,
            token,
            json!({ "workflowId": flow, "cron": cron, "timezone": zone }),
        )
        .await;
        assert_bad_input(&resp, Some(field), field, &format!("{cron:?} in {zone:?}"));
    }
    let missing = try_create_schedule(
        &server,
        token,
        json!({ "workflowId": new_id(), "cron": "* * * * *" }),
    )
    .await;
    assert_error_code(&missing, "NOT_FOUND", "schedule of an unknown workflow");

    // 09:30 on weekdays in New York: the next occurrence is shown in UTC.
    let weekday = try_create_schedule(
        &server,
        token,
        json!({ "workflowId": flow, "cron": "30 9 * * 1-5", "timezone": "America/New_York", "name": "Morning" }),
    )
    .await;
    let weekday = weekday["data"]["createSchedule"].clone();
    let next = parse_datetime(&weekday["nextFireAt"]);
    let local = next.with_timezone(&chrono_tz::America::New_York);
    assert_eq!(local.format("%H:%M").to_string(), "09:30", "{weekday:#}");
    assert!(next > chrono::Utc::now());

    // Every second (the test setting): runs arrive, each for its own occurrence.
    let every = try_create_schedule(
        &server,
        token,
        json!({ "workflowId": flow, "cron": "* * * * * *", "input": { "from": "schedule" }, "priority": 3 }),
    )
    .await;
    assert!(every["errors"].is_null(), "{every:#}");
    let every_id = str_field(&every["data"]["createSchedule"], "id");
    let fired = poll_until(Duration::from_secs(20), "two scheduled runs", async || {
        let runs = schedule_runs(&server, &every_id).await;
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    let distinct: HashSet<&String> = fired.iter().collect();
    assert_eq!(
        distinct.len(),
        fired.len(),
        "one run per occurrence: {fired:?}"
    );
    let data = server
        .gql_ok(
            &format!("query($id: ID!) {{ schedule(id: $id) {{ {SCHEDULE_FIELDS} }} }}"),
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    let schedule = &data["schedule"];
    let last_run = str_field(&schedule["lastRun"], "id");
    let run = get_run(&server, token, &last_run).await;
    assert_eq!(run["trigger"], "SCHEDULE");
    assert_eq!(run["schedule"]["id"], every_id.as_str());
    assert_eq!(run["input"], json!({ "from": "schedule" }));
    assert_eq!(run["priority"], 3);
    assert!(run["startedBy"].is_null());

    // Paused: no more runs and no next occurrence.
    let paused = server
        .gql_ok(
            "mutation($id: ID!) { pauseSchedule(id: $id) { enabled nextFireAt } }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    assert_eq!(
        paused["pauseSchedule"],
        json!({ "enabled": false, "nextFireAt": null })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = schedule_runs(&server, &every_id).await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        schedule_runs(&server, &every_id).await.len(),
        count,
        "paused"
    );
    let resumed = server
        .gql_ok(
            "mutation($id: ID!) { resumeSchedule(id: $id) { enabled nextFireAt } }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    assert_eq!(resumed["resumeSchedule"]["enabled"], true);
    poll_until(
        Duration::from_secs(20),
        "a run after resuming",
        async || (schedule_runs(&server, &every_id).await.len() > count).then_some(()),
    )
    .await;

    // A workflow that cannot run: the occurrence queues nothing and says why.
    set_status(&server, token, &flow, "ARCHIVED").await;
    let errored = poll_until(Duration::from_secs(20), "lastError", async || {
        let data = server
            .gql_ok(
                "query($id: ID!) { schedule(id: $id) { lastError } }",
                json!({ "id": every_id }),
                Some(token),
            )
            .await;
        data["schedule"]["lastError"].as_str().map(str::to_owned)
    })
    .await;
    assert!(errored.contains("archived"), "{errored}");

    // An update moves the next occurrence; deletion keeps the runs.
    let updated = server
        .gql(
            "mutation($id: ID!) { updateSchedule(id: $id, input: { cron: \"0 12 * * *\", timezone: \"Asia/Tokyo\", name: null }) { cron timezone name nextFireAt } }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    let updated = &updated["data"]["updateSchedule"];
    assert_eq!(updated["timezone"], "Asia/Tokyo", "{updated:#}");
    let local = parse_datetime(&updated["nextFireAt"]).with_timezone(&chrono_tz::Asia::Tokyo);
    assert_eq!(local.format("%H:%M").to_string(), "12:00");
    let bad = server
        .gql(
            "mutation($id: ID!) { updateSchedule(id: $id, input: { timezone: \"Nowhere/Else\" }) { id } }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    assert_bad_input(&bad, Some("timezone"), "IANA", "update with a bad zone");
    let runs_before = schedule_runs(&server, &every_id).await.len();
    server
        .gql_ok(
            "mutation($id: ID!) { deleteSchedule(id: $id) }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    assert_eq!(schedule_runs(&server, &every_id).await.len(), runs_before);
    let gone = server
        .gql(
            "query($id: ID!) { schedule(id: $id) { id } }",
            json!({ "id": every_id }),
            Some(token),
        )
        .await;
    assert_error_code(&gone, "NOT_FOUND", "a deleted schedule");
    let listed = server
        .gql_ok(
            "query($w: ID!) { schedules(workflowId: $w) { id name } }",
            json!({ "w": flow }),
            Some(token),
        )
        .await;
    assert_eq!(
        listed["schedules"],
        json!([{ "id": weekday["id"], "name": "Morning" }])
    );
}

both_backends!(missed_occurrences_are_caught_up_by_one_run);
async fn missed_occurrences_are_caught_up_by_one_run(backend: Backend) {
    let mut server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.clone();
    let (flow, _) = active_workflow(&server, &token, "Hourly", 1).await;
    let created = try_create_schedule(
        &server,
        &token,
        json!({ "workflowId": flow, "cron": "0 * * * *" }),
    )
    .await;
    let id = str_field(&created["data"]["createSchedule"], "id");
    // Everything was down for a day: 24 hourly occurrences were missed.
    server.restart().await;
    server
        .sql(&format!(
            "UPDATE schedules SET next_fire_at = {} WHERE id = {}",
            ts(chrono::Utc::now() - chrono::Duration::hours(24)),
            lit(&id)
        ))
        .await;
    let next = poll_until(Duration::from_secs(20), "the catch-up run", async || {
        let data = server
            .gql_ok(
                "query($id: ID!) { schedule(id: $id) { nextFireAt lastRun { id notBefore } } }",
                json!({ "id": id }),
                Some(&token),
            )
            .await;
        (!data["schedule"]["lastRun"].is_null()).then_some(data)
    })
    .await;
    // Give further ticks the chance to (wrongly) fire more.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        schedule_runs(&server, &id).await.len(),
        1,
        "one catch-up run, not 24"
    );
    let upcoming = parse_datetime(&next["schedule"]["nextFireAt"]);
    assert!(upcoming > chrono::Utc::now(), "{next:#}");
    assert!(upcoming <= chrono::Utc::now() + chrono::Duration::hours(1));
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Post<'a> {
    content_type: Option<&'a str>,
    signature: Option<String>,
    key: Option<&'a str>,
}

async fn post_hook(server: &TestServer, url: &str, body: Vec<u8>, post: Post<'_>) -> (u16, Value) {
    let mut request = server.client.post(server.url(url)).body(body);
    if let Some(content_type) = post.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(signature) = post.signature {
        request = request.header("stepwise-signature", signature);
    }
    if let Some(key) = post.key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn json_post(signature: Option<String>, key: Option<&str>) -> Post<'_> {
    Post {
        content_type: Some("application/json"),
        signature,
        key,
    }
}

fn signed(secret: &str, body: &[u8]) -> Option<String> {
    let t = chrono::Utc::now().timestamp();
    Some(format!("t={t},v1={}", sign(secret, t, body)))
}

const WEBHOOK_WITH_SECRET: &str = "secret webhook { id url enabled name workflow { id } }";

both_backends!(webhooks_queue_signed_requests_and_refuse_everything_else);
async fn webhooks_queue_signed_requests_and_refuse_everything_else(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        queue_options(&[
            ("STEPWISE_RUN_JSON_MAX_BYTES", "2048"),
            ("STEPWISE_WEBHOOK_REQUESTS_PER_MINUTE", "30"),
        ]),
    )
    .await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let (flow, _) = active_workflow(&server, admin, "Inbound", 1).await;
    let create = format!(
        "mutation($w: ID!) {{ createWebhook(workflowId: $w, name: \"CRM\") {{ {WEBHOOK_WITH_SECRET} }} }}"
    );
    let denied = server
        .gql(&create, json!({ "w": flow }), Some(&acme.member_token))
        .await;
    assert_error_code(&denied, "FORBIDDEN", "a member creating a webhook");
    let created = server
        .gql_ok(&create, json!({ "w": flow }), Some(admin))
        .await;
    let hook = &created["createWebhook"];
    let secret = str_field(hook, "secret");
    assert!(secret.starts_with("whsec_"), "{hook:#}");
    let hook_id = str_field(&hook["webhook"], "id");
    let url = str_field(&hook["webhook"], "url");
    assert_eq!(url, format!("/hooks/{hook_id}"));
    // The secret is not stored anywhere.
    let stored = server
        .sql_strings(&format!(
            "SELECT secret_salt || COALESCE(name, '') AS v FROM webhooks WHERE id = {}",
            lit(&hook_id)
        ))
        .await;
    assert!(
        !stored[0].contains(&secret[6..]),
        "the secret is not in the row"
    );
    // Members see the hook, never a secret.
    let listed = server
        .gql_ok(
            "query($w: ID!) { webhooks(workflowId: $w) { id url enabled } }",
            json!({ "w": flow }),
            Some(&acme.member_token),
        )
        .await;
    assert_eq!(listed["webhooks"][0]["id"], hook_id.as_str());

    // A good request: 202 and a queued run whose input is the body.
    let body = br#"{"lead":{"email":"ada@example.com","score":0.75},"tags":["a","b"]}"#.to_vec();
    let (status, answer) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&secret, &body), Some("evt-1")),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let run_id = str_field(&answer, "runId");
    let run = get_run(&server, admin, &run_id).await;
    assert_eq!(run["status"], "QUEUED");
    assert_eq!(run["trigger"], "WEBHOOK");
    assert_eq!(run["webhook"]["id"], hook_id.as_str());
    assert_eq!(
        run["input"],
        serde_json::from_slice::<Value>(&body).unwrap()
    );
    assert_eq!(run["workflow"]["id"], flow.as_str());
    // The same key again (even re-signed later): the same run.
    let (status, replay) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&secret, &body), Some("evt-1")),
    )
    .await;
    assert_eq!(
        (status, replay["runId"].clone(), replay["duplicate"].clone()),
        (202, json!(run_id), json!(true))
    );
    // No key: the very same signed request replayed is the same run too.
    let signature = signed(&secret, &body);
    let (_, first) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signature.clone(), None),
    )
    .await;
    let (_, second) = post_hook(&server, &url, body.clone(), json_post(signature, None)).await;
    assert_eq!(first["runId"], second["runId"]);
    assert_ne!(first["runId"], json!(run_id));

    // Every refusal, and nothing queued by any of them.
    let runs_before = server.sql_count("runs").await;
    let stale_t = chrono::Utc::now().timestamp() - 3_600;
    let stale = Some(format!("t={stale_t},v1={}", sign(&secret, stale_t, &body)));
    let cases: Vec<(&str, String, Vec<u8>, Post<'_>, u16)> = vec![
        (
            "wrong signature",
            url.clone(),
            body.clone(),
            json_post(signed("whsec_wrong", &body), None),
            401,
        ),
        (
            "no signature",
            url.clone(),
            body.clone(),
            json_post(None, None),
            401,
        ),
        (
            "replayed after the tolerance",
            url.clone(),
            body.clone(),
            json_post(stale, None),
            401,
        ),
        (
            "garbled signature",
            url.clone(),
            body.clone(),
            json_post(Some("t=1,v1=zz".into()), None),
            401,
        ),
        (
            "tampered body",
            url.clone(),
            br#"{"lead":{"email":"eve@example.com"}}"#.to_vec(),
            json_post(signed(&secret, &body), None),
            401,
        ),
        (
            "unknown hook",
            format!("/hooks/{}", uuid::Uuid::now_v7()),
            body.clone(),
            json_post(signed(&secret, &body), None),
            404,
        ),
        (
            "not an id",
            "/hooks/..%2F..".to_owned(),
            body.clone(),
            json_post(signed(&secret, &body), None),
            404,
        ),
        (
            "oversized",
            url.clone(),
            vec![b' '; 4096],
            json_post(signed(&secret, &vec![b' '; 4096]), None),
            413,
        ),
        (
            "text/plain",
            url.clone(),
            body.clone(),
            Post {
                content_type: Some("text/plain"),
                signature: signed(&secret, &body),
                key: None,
            },
            415,
        ),
        (
            "no content type",
            url.clone(),
            body.clone(),
            Post {
                content_type: None,
                signature: signed(&secret, &body),
                key: None,
            },
            415,
        ),
        (
            "not JSON",
            url.clone(),
            b"{not json".to_vec(),
            json_post(signed(&secret, b"{not json"), None),
            400,
        ),
        (
            "bad key",
            url.clone(),
            body.clone(),
            json_post(signed(&secret, &body), Some("with space")),
            400,
        ),
    ];
    for (what, target, payload, post, expected) in cases {
        let (status, answer) = post_hook(&server, &target, payload, post).await;
        assert_eq!(status, expected, "{what}: {answer}");
    }
    assert_eq!(
        server.sql_count("runs").await,
        runs_before,
        "no refusal queued a run"
    );

    // Disabled and deleted hooks, and another company's hook id sent to it, all look
    // like an unknown hook.
    let (_, unknown) = post_hook(
        &server,
        &format!("/hooks/{}", uuid::Uuid::now_v7()),
        body.clone(),
        json_post(signed(&secret, &body), None),
    )
    .await;
    server
        .gql_ok(
            "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: false }) { enabled } }",
            json!({ "id": hook_id }),
            Some(admin),
        )
        .await;
    let (status, disabled) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&secret, &body), Some("evt-9")),
    )
    .await;
    assert_eq!(
        (status, &disabled),
        (404, &unknown),
        "disabled looks unknown"
    );
    server
        .gql_ok(
            "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: true }) { enabled } }",
            json!({ "id": hook_id }),
            Some(admin),
        )
        .await;

    // Rotation: the new secret works at once; the old one only during its grace period.
    let rotate = "mutation($id: ID!, $keep: Int) { rotateWebhookSecret(id: $id, keepPreviousSeconds: $keep) { secret webhook { previousSecretExpiresAt } } }";
    let rotated = server
        .gql_ok(rotate, json!({ "id": hook_id, "keep": 600 }), Some(admin))
        .await;
    let new_secret = str_field(&rotated["rotateWebhookSecret"], "secret");
    assert_ne!(new_secret, secret);
    assert!(!rotated["rotateWebhookSecret"]["webhook"]["previousSecretExpiresAt"].is_null());
    let (status, _) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&new_secret, &body), Some("evt-2")),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&secret, &body), Some("evt-3")),
    )
    .await;
    assert_eq!(status, 202, "the previous secret during the grace period");
    let rotated = server
        .gql_ok(rotate, json!({ "id": hook_id }), Some(admin))
        .await;
    let newest = str_field(&rotated["rotateWebhookSecret"], "secret");
    let (status, _) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&new_secret, &body), Some("evt-4")),
    )
    .await;
    assert_eq!(status, 401, "no grace: the old secret stops at once");
    let (status, _) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&newest, &body), Some("evt-5")),
    )
    .await;
    assert_eq!(status, 202);

    // Deleted: 404 from then on, like an unknown hook.
    server
        .gql_ok(
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": hook_id }),
            Some(admin),
        )
        .await;
    let (status, gone) = post_hook(
        &server,
        &url,
        body.clone(),
        json_post(signed(&newest, &body), Some("evt-6")),
    )
    .await;
    assert_eq!(
        (status, &gone),
        (404, &unknown),
        "a deleted hook looks unknown"
    );

    // Rate limit: 30 a minute per hook; beyond, 429 with Retry-After.
    let burst = server
        .gql_ok(&create, json!({ "w": flow }), Some(admin))
        .await;
    let burst_secret = str_field(&burst["createWebhook"], "secret");
    let burst_url = str_field(&burst["createWebhook"]["webhook"], "url");
    let mut limited = None;
    for i in 0..40 {
        let request = server
            .client
            .post(server.url(&burst_url))
            .header("content-type", "application/json")
            .header("stepwise-signature", signed(&burst_secret, &body).unwrap())
            .header("idempotency-key", format!("burst-{i}"))
            .body(body.clone());
        let response = request.send().await.unwrap();
        if response.status().as_u16() == 429 {
            limited = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            break;
        }
        assert_eq!(response.status().as_u16(), 202);
    }
    let retry_after: u64 = limited
        .expect("the per-hook limit answered 429")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");

    // An archived workflow: the sender learns its own workflow cannot run (409).
    let other = server
        .gql_ok(&create, json!({ "w": flow }), Some(admin))
        .await;
    let other_secret = str_field(&other["createWebhook"], "secret");
    let other_url = str_field(&other["createWebhook"]["webhook"], "url");
    set_status(&server, admin, &flow, "ARCHIVED").await;
    let (status, answer) = post_hook(
        &server,
        &other_url,
        body.clone(),
        json_post(signed(&other_secret, &body), None),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
}

both_backends!(the_hook_limiter_stays_bounded_under_random_ids);
async fn the_hook_limiter_stays_bounded_under_random_ids(backend: Backend) {
    let server = queue_server(backend).await;
    // Thousands of random ids: every one is 404, none costs more than a lookup, and the
    // server's memory does not grow with them (the limiter is an LRU of 100,000 ids).
    let before = server.rss_bytes();
    let client = Arc::new(server.client.clone());
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (client, base) = (client.clone(), server.url("/hooks/"));
        tasks.push(tokio::spawn(async move {
            let mut statuses = HashMap::new();
            for _ in 0..750 {
                let id = uuid::Uuid::now_v7();
                let status = client
                    .post(format!("{base}{id}"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                *statuses.entry(status).or_insert(0) += 1;
            }
            let _ = worker;
            statuses
        }));
    }
    for task in tasks {
        let statuses = task.await.unwrap();
        assert_eq!(
            statuses.keys().copied().collect::<Vec<_>>(),
            vec![404],
            "{statuses:?}"
        );
    }
    let after = server.rss_bytes();
    println!("RSS before {before} after {after} bytes (3,000 random hook ids)");
    assert!(
        after < before + 64 * 1024 * 1024,
        "memory grew by {}",
        after - before
    );
}

// ---------------------------------------------------------------------------
// AI step text
// ---------------------------------------------------------------------------

const SUGGEST: &str = "mutation($step: ID!, $label: String, $instruction: String, $confidence: Float) { \
     suggestStepText(stepId: $step, fieldLabel: $label, instruction: $instruction, aiModel: \"gpt-x\", aiConfidence: $confidence) { \
       applied skipped step { id fieldLabel instruction aiModel aiConfidence labelEdited instructionEdited } } }";

both_backends!(an_ai_suggestion_never_overwrites_a_persons_text);
async fn an_ai_suggestion_never_overwrites_a_persons_text(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let workflow = create_workflow(
        &server,
        token,
        json!({ "name": "Form", "steps": [
            { "actionType": "type" },
            { "actionType": "type", "fieldLabel": "Typed by Ada" },
        ] }),
    )
    .await;
    let steps = step_ids(&workflow);

    // An empty step takes both fields.
    let first = server
        .gql_ok(SUGGEST, json!({ "step": steps[0], "label": "Email", "instruction": "Type the email", "confidence": 0.8 }), Some(token))
        .await;
    let first = &first["suggestStepText"];
    assert_eq!(
        first["applied"],
        json!(["LABEL", "INSTRUCTION"]),
        "{first:#}"
    );
    assert_eq!(first["step"]["fieldLabel"], "Email");
    assert_eq!(first["step"]["aiModel"], "gpt-x");
    assert_eq!(first["step"]["aiConfidence"], json!(0.8));

    // A person edits the AI's label: the next suggestion leaves it, takes the instruction.
    update_step(
        &server,
        token,
        &steps[0],
        json!({ "fieldLabel": "Work email" }),
    )
    .await;
    let second = server
        .gql_ok(SUGGEST, json!({ "step": steps[0], "label": "E-mail address", "instruction": "Enter the e-mail" }), Some(token))
        .await;
    let second = &second["suggestStepText"];
    assert_eq!(second["applied"], json!(["INSTRUCTION"]), "{second:#}");
    assert_eq!(second["skipped"], json!(["LABEL"]));
    assert_eq!(second["step"]["fieldLabel"], "Work email");
    assert_eq!(second["step"]["labelEdited"], true);
    assert_eq!(second["step"]["instruction"], "Enter the e-mail");

    // A label a person wrote on a step no AI touched is theirs, and stays theirs.
    let third = server
        .gql_ok(
            SUGGEST,
            json!({ "step": steps[1], "label": "Name", "instruction": "Type the name" }),
            Some(token),
        )
        .await;
    let third = &third["suggestStepText"];
    assert_eq!(third["applied"], json!(["INSTRUCTION"]), "{third:#}");
    assert_eq!(third["step"]["fieldLabel"], "Typed by Ada");
    assert_eq!(third["step"]["labelEdited"], true);
    let fourth = server
        .gql_ok(
            SUGGEST,
            json!({ "step": steps[1], "label": "Full name" }),
            Some(token),
        )
        .await;
    assert_eq!(fourth["suggestStepText"]["applied"], json!([]));
    assert_eq!(
        fourth["suggestStepText"]["step"]["fieldLabel"],
        "Typed by Ada"
    );

    for (vars, field) in [
        (json!({ "step": steps[0] }), "fieldLabel"),
        (
            json!({ "step": steps[0], "label": "x", "confidence": 1.5 }),
            "aiConfidence",
        ),
        (
            json!({ "step": steps[0], "label": "x".repeat(2001) }),
            "fieldLabel",
        ),
    ] {
        let resp = server.gql(SUGGEST, vars, Some(token)).await;
        assert_eq!(
            error_code(&resp).as_deref(),
            Some("BAD_USER_INPUT"),
            "{resp:#}"
        );
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{resp:#}");
    }
    let missing = server
        .gql(
            SUGGEST,
            json!({ "step": new_id(), "label": "x" }),
            Some(token),
        )
        .await;
    assert_error_code(&missing, "NOT_FOUND", "unknown step");
}

// ---------------------------------------------------------------------------
// runQueued
// ---------------------------------------------------------------------------

fn run_queued_query() -> String {
    "subscription($ids: [ID!]) { runQueued(workflowIds: $ids) { id status workflow { id } } }"
        .to_owned()
}

both_backends!(run_queued_wakes_executors_of_the_company_only);
async fn run_queued_wakes_executors_of_the_company_only(backend: Backend) {
    let server = queue_server(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let token = acme.member_token.as_str();
    let (flow, _) = active_workflow(&server, token, "Flow", 1).await;
    let (other, _) = active_workflow(&server, token, "Other", 1).await;
    let (g_flow, _) = active_workflow(&server, &globex.admin_token, "Globex", 1).await;
    let waiting = enqueue(&server, token, json!({ "workflowId": flow })).await;

    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[
            ("all", &run_queued_query(), json!({})),
            ("one", &run_queued_query(), json!({ "ids": [flow] })),
        ],
    );
    // First what waits now.
    for op in ["all", "one"] {
        let data = sub.expect_data(op).await;
        assert_eq!(
            field(&data, "runQueued")["id"],
            waiting["id"],
            "{op}: {data:#}"
        );
    }
    // Another company's runs never arrive; a run of another workflow only on "all".
    enqueue(
        &server,
        &globex.admin_token,
        json!({ "workflowId": g_flow }),
    )
    .await;
    let elsewhere = enqueue(&server, token, json!({ "workflowId": other })).await;
    let next = enqueue(&server, token, json!({ "workflowId": flow })).await;
    let data = sub.expect_data("all").await;
    assert_eq!(field(&data, "runQueued")["id"], elsewhere["id"], "{data:#}");
    let data = sub.expect_data("all").await;
    assert_eq!(field(&data, "runQueued")["id"], next["id"]);
    let data = sub.expect_data("one").await;
    assert_eq!(field(&data, "runQueued")["id"], next["id"], "{data:#}");
    // A delayed run wakes its executors when it becomes due.
    let due = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let delayed = enqueue(
        &server,
        token,
        json!({ "workflowId": flow, "notBefore": due }),
    )
    .await;
    let data = sub.expect_data("one").await;
    assert_eq!(field(&data, "runQueued")["id"], delayed["id"]);
    assert!(
        chrono::Utc::now() >= parse_datetime(&json!(due)),
        "not before it is due"
    );
    // Claims are not wake-ups.
    claim(&server, token, None, 30).await;
    sub.expect_quiet("one").await;
    sub.disconnect().await;

    // Without a token: UNAUTHENTICATED.
    let mut anonymous = Subscriber::connect(&server, None).await;
    anonymous.subscribe("q", &run_queued_query(), json!({}));
    anonymous.expect_error_code("q", "UNAUTHENTICATED").await;
    anonymous.disconnect().await;
}

// ---------------------------------------------------------------------------
// Two instances (PostgreSQL)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_on_two_instances_claim_each_of_200_runs_once() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = Arc::new(queue_server(Backend::Postgres).await);
    let second = Arc::new(first.start_sibling().await);
    let acme = team(&first, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let (flow, _) = active_workflow(&first, &token, "Busy", 2).await;
    let mut queued = HashSet::new();
    for i in 0..200 {
        let run = enqueue(
            &first,
            &token,
            json!({ "workflowId": flow, "priority": i % 3 }),
        )
        .await;
        queued.insert(str_field(&run, "id"));
    }
    let mut claimers = Vec::new();
    for claimer in 0..8 {
        let server = if claimer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let token = token.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty = 0;
            while empty < 2 {
                let resp = try_claim(&server, &token, None, 300).await;
                assert!(resp["errors"].is_null(), "claimer {claimer}: {resp:#}");
                let lease = &resp["data"]["claimRun"];
                if lease.is_null() {
                    empty += 1;
                    continue;
                }
                empty = 0;
                assert_eq!(lease["run"]["status"], "RUNNING");
                mine.push(str_field(&lease["run"], "id"));
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 200, "every run claimed exactly once");
    assert_eq!(distinct, queued, "none lost, none invented");
    assert_eq!(first.sql_count("runs WHERE status = 'queued'").await, 0);
    assert_eq!(
        first
            .sql_count("runs WHERE status = 'running' AND attempt = 1")
            .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_requeued_then_failed_across_two_instances() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = queue_server(Backend::Postgres).await;
    let second = first.start_sibling().await;
    let acme = team(&first, "Acme").await;
    lease_expires_then_fails(&first, &second, &acme.member_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_period_with_two_instances() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = queue_server(Backend::Postgres).await;
    let second = first.start_sibling().await;
    let acme = team(&first, "Acme").await;
    let token = acme.member_token.as_str();
    let (flow, _) = active_workflow(&first, token, "Every second", 1).await;
    // "Every minute" on the fast clock of the test setting: every second.
    let created = try_create_schedule(
        &first,
        token,
        json!({ "workflowId": flow, "cron": "* * * * * *" }),
    )
    .await;
    let id = str_field(&created["data"]["createSchedule"], "id");
    let started = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    second
        .gql_ok(
            "mutation($id: ID!) { pauseSchedule(id: $id) { enabled } }",
            json!({ "id": id }),
            Some(token),
        )
        .await;
    let elapsed = (chrono::Utc::now() - started).num_seconds();
    let occurrences = schedule_runs(&first, &id).await;
    let distinct: HashSet<&String> = occurrences.iter().collect();
    assert_eq!(
        distinct.len(),
        occurrences.len(),
        "each occurrence queued one run across both instances: {occurrences:?}"
    );
    // Each run is for a whole second of its own; a slow machine may merge late ones into
    // a catch-up, never duplicate them.
    assert!(
        occurrences.len() >= 3 && occurrences.len() as i64 <= elapsed + 1,
        "{} runs in {elapsed} s: {occurrences:?}",
        occurrences.len()
    );
    let fired = first
        .sql_count(&format!("runs WHERE trigger_id = {}", lit(&id)))
        .await;
    assert_eq!(fired as usize, occurrences.len());
    drop(second);
}
