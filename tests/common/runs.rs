//! Run helpers over HTTP: executable workflows, starting runs, reporting steps, finishing,
//! pausing, resuming and cancelling them, and reading back runs, workflow health and
//! notifications.

use serde_json::{Value, json};

use super::fixtures::{
    HEALTH_LOG_FIELDS, NOTIFICATION_FIELDS, RUN_FIELDS, create_workflow, step_ids,
};
use super::{TestServer, error_code, str_field};

/// The health fields of a workflow.
pub const HEALTH_FIELDS: &str =
    "id status successRate totalUses consecutiveFailures lastSuccessAt lastFailureAt updatedAt";

/// Selection of a `StepReport`.
pub fn report_fields() -> String {
    format!("duplicate run {{ {RUN_FIELDS} }} healthLog {{ {HEALTH_LOG_FIELDS} }}")
}

/// An ACTIVE workflow with `steps` steps; returns its id and its step ids in order.
pub async fn active_workflow(
    server: &TestServer,
    token: &str,
    name: &str,
    steps: usize,
) -> (String, Vec<String>) {
    let workflow = create_workflow(
        server,
        token,
        json!({
            "name": name,
            "status": "ACTIVE",
            "steps": super::fixtures::step_inputs(&format!("{name} step "), steps),
        }),
    )
    .await;
    assert_eq!(workflow["status"], "ACTIVE", "{workflow:#}");
    (str_field(&workflow, "id"), step_ids(&workflow))
}

/// `{ "status": status }` plus nothing else: the smallest `StepOutcomeInput`.
pub fn outcome(status: &str) -> Value {
    json!({ "status": status })
}

/// Fails with the response unless it has no errors; returns `data[field]`.
#[track_caller]
fn expect_ok(server: &TestServer, resp: Value, field: &str, what: &str) -> Value {
    if !resp["errors"].is_null() || !resp["data"][field].is_object() {
        server.fail(&format!("{what} failed: {resp:#}"));
    }
    resp["data"][field].clone()
}

pub async fn try_start_run(server: &TestServer, token: &str, workflow_id: &str) -> Value {
    server
        .gql(
            &format!("mutation($id: ID!) {{ startRun(workflowId: $id) {{ {RUN_FIELDS} }} }}"),
            json!({ "id": workflow_id }),
            Some(token),
        )
        .await
}

/// Starts a run; returns it.
pub async fn start_run(server: &TestServer, token: &str, workflow_id: &str) -> Value {
    let resp = try_start_run(server, token, workflow_id).await;
    expect_ok(
        server,
        resp,
        "startRun",
        &format!("startRun({workflow_id})"),
    )
}

pub async fn try_report_step(
    server: &TestServer,
    token: &str,
    run_id: &str,
    step_id: &str,
    outcome: Value,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($run: ID!, $step: ID!, $outcome: StepOutcomeInput!) {{ \
                   reportStep(runId: $run, stepId: $step, outcome: $outcome) {{ {} }} }}",
                report_fields()
            ),
            json!({ "run": run_id, "step": step_id, "outcome": outcome }),
            Some(token),
        )
        .await
}

/// Reports a step; returns the `StepReport`.
pub async fn report_step(
    server: &TestServer,
    token: &str,
    run_id: &str,
    step_id: &str,
    outcome: Value,
) -> Value {
    let resp = try_report_step(server, token, run_id, step_id, outcome.clone()).await;
    expect_ok(
        server,
        resp,
        "reportStep",
        &format!("reportStep({run_id}, {step_id}, {outcome})"),
    )
}

pub async fn try_finish_run(
    server: &TestServer,
    token: &str,
    run_id: &str,
    status: &str,
    error: Option<&str>,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($id: ID!, $status: RunOutcome!, $error: String) {{ \
                   finishRun(runId: $id, status: $status, error: $error) {{ {RUN_FIELDS} }} }}"
            ),
            json!({ "id": run_id, "status": status, "error": error }),
            Some(token),
        )
        .await
}

/// Finishes a run as `SUCCEEDED` or `FAILED`; returns it.
pub async fn finish_run(
    server: &TestServer,
    token: &str,
    run_id: &str,
    status: &str,
    error: Option<&str>,
) -> Value {
    let resp = try_finish_run(server, token, run_id, status, error).await;
    expect_ok(
        server,
        resp,
        "finishRun",
        &format!("finishRun({run_id}, {status})"),
    )
}

/// `pauseRun`, `resumeRun` or `cancelRun` (with `reason` for the latter).
pub async fn try_transition(
    server: &TestServer,
    token: &str,
    mutation: &str,
    run_id: &str,
    reason: Option<&str>,
) -> Value {
    let (decl, args, vars) = if mutation == "cancelRun" {
        (
            "$id: ID!, $reason: String",
            "runId: $id, reason: $reason",
            json!({ "id": run_id, "reason": reason }),
        )
    } else {
        ("$id: ID!", "runId: $id", json!({ "id": run_id }))
    };
    server
        .gql(
            &format!("mutation({decl}) {{ {mutation}({args}) {{ {RUN_FIELDS} }} }}"),
            vars,
            Some(token),
        )
        .await
}

pub async fn transition(
    server: &TestServer,
    token: &str,
    mutation: &str,
    run_id: &str,
    reason: Option<&str>,
) -> Value {
    let resp = try_transition(server, token, mutation, run_id, reason).await;
    expect_ok(server, resp, mutation, &format!("{mutation}({run_id})"))
}

pub async fn pause_run(server: &TestServer, token: &str, run_id: &str) -> Value {
    transition(server, token, "pauseRun", run_id, None).await
}

pub async fn resume_run(server: &TestServer, token: &str, run_id: &str) -> Value {
    transition(server, token, "resumeRun", run_id, None).await
}

pub async fn cancel_run(
    server: &TestServer,
    token: &str,
    run_id: &str,
    reason: Option<&str>,
) -> Value {
    transition(server, token, "cancelRun", run_id, reason).await
}

/// `run(id)` with [`RUN_FIELDS`] and its health logs (oldest first).
pub async fn get_run(server: &TestServer, token: &str, run_id: &str) -> Value {
    let resp = server
        .gql(
            &format!(
                "query($id: ID!) {{ run(id: $id) {{ {RUN_FIELDS} \
                   healthLogs(first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} }} }}"
            ),
            json!({ "id": run_id }),
            Some(token),
        )
        .await;
    expect_ok(server, resp, "run", &format!("run({run_id})"))
}

/// A workflow's health fields.
pub async fn workflow_health(server: &TestServer, token: &str, workflow_id: &str) -> Value {
    let resp = server
        .gql(
            &format!("query($id: ID!) {{ workflow(id: $id) {{ {HEALTH_FIELDS} }} }}"),
            json!({ "id": workflow_id }),
            Some(token),
        )
        .await;
    expect_ok(
        server,
        resp,
        "workflow",
        &format!("workflow({workflow_id})"),
    )
}

/// The company's notifications, newest first (at most 100).
pub async fn notifications(server: &TestServer, token: &str) -> Vec<Value> {
    let resp = server
        .gql(
            &format!("{{ notifications(first: 100) {{ nodes {{ {NOTIFICATION_FIELDS} }} }} }}"),
            json!({}),
            Some(token),
        )
        .await;
    let connection = expect_ok(server, resp, "notifications", "notifications");
    connection["nodes"].as_array().cloned().unwrap_or_default()
}

/// The notifications about one workflow, newest first.
pub async fn workflow_notifications(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
) -> Vec<Value> {
    notifications(server, token)
        .await
        .into_iter()
        .filter(|n| n["workflow"]["id"] == workflow_id)
        .collect()
}

/// Starts a run of `workflow_id`, reports every step as SUCCESS (or the first as FAILED
/// when `outcome` is `FAILED`), and finishes it with `outcome`; returns the finished run.
pub async fn complete_run(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    steps: &[String],
    outcome_status: &str,
) -> Value {
    let run = start_run(server, token, workflow_id).await;
    let run_id = str_field(&run, "id");
    finish_started_run(server, token, &run_id, steps, outcome_status).await
}

/// Reports `steps` on a started run and finishes it with `outcome` (see [`complete_run`]).
pub async fn finish_started_run(
    server: &TestServer,
    token: &str,
    run_id: &str,
    steps: &[String],
    outcome_status: &str,
) -> Value {
    for (i, step) in steps.iter().enumerate() {
        let status = if outcome_status == "FAILED" && i == 0 {
            "FAILED"
        } else {
            "SUCCESS"
        };
        report_step(server, token, run_id, step, outcome(status)).await;
        if status == "FAILED" {
            break;
        }
    }
    let error = (outcome_status == "FAILED").then_some("element not found");
    finish_run(server, token, run_id, outcome_status, error).await
}

/// Asserts a BAD_USER_INPUT error whose message mentions `needle` (case-insensitive) and,
/// when `field` is given, whose `extensions.field` is that field.
#[track_caller]
pub fn assert_bad_input(resp: &Value, field: Option<&str>, needle: &str, context: &str) {
    assert_eq!(
        error_code(resp).as_deref(),
        Some("BAD_USER_INPUT"),
        "{context}: expected BAD_USER_INPUT, got:\n{resp:#}"
    );
    let message = resp["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{context}: the error message should mention {needle:?}, got {message:?}\n{resp:#}"
    );
    if let Some(field) = field {
        assert_eq!(
            resp["errors"][0]["extensions"]["field"].as_str(),
            Some(field),
            "{context}: extensions.field should be {field:?}:\n{resp:#}"
        );
    }
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
pub async fn poll_until<T, F>(limit: std::time::Duration, what: &str, mut check: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
