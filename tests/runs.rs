//! Runs over HTTP: starting, reporting steps (idempotently), pausing, resuming, finishing
//! and cancelling them; what each transition may and may not do; workflow health,
//! breakage, recovery and review notifications; and the sweeper timing out silent runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::{RunRow, insert_run, lit, new_id, set_status, team, ts};
use common::runs::{
    active_workflow, assert_bad_input, cancel_run, complete_run, finish_run, get_run, outcome,
    pause_run, poll_until, report_step, resume_run, start_run, transition, try_finish_run,
    try_report_step, try_start_run, try_transition, workflow_health, workflow_notifications,
};
use common::{Backend, ServerOptions, TestServer, assert_error_code, parse_datetime, str_field};
use serde_json::{Value, json};

fn approx(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

both_backends!(full_run_lifecycle);
async fn full_run_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Checkout", 3).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);

    let run = start_run(&server, token, &workflow).await;
    let run_id = str_field(&run, "id");
    assert_eq!(run["status"], "RUNNING", "{run:#}");
    assert_eq!(run["workflow"]["id"], workflow.as_str());
    assert_eq!(run["startedBy"]["id"], acme.member_id.as_str());
    assert_eq!(run["stepsTotal"], 3);
    for counter in ["stepsCompleted", "stepsFailed", "stepsHealed"] {
        assert_eq!(run[counter], 0, "{counter}: {run:#}");
    }
    assert!(run["currentStep"].is_null() && run["error"].is_null() && run["finishedAt"].is_null());
    assert!(parse_datetime(&run["startedAt"]) >= before, "{run:#}");

    // SUCCESS
    let report = report_step(
        &server,
        token,
        &run_id,
        &steps[0],
        json!({
            "status": "SUCCESS",
            "pageUrl": "https://shop.example/cart",
            "executionTimeMs": 420,
            "idempotencyKey": "step-1",
        }),
    )
    .await;
    assert_eq!(report["duplicate"], false, "{report:#}");
    let log = &report["healthLog"];
    assert_eq!(log["status"], "SUCCESS");
    assert_eq!(log["run"]["id"], run_id.as_str());
    assert_eq!(log["workflow"]["id"], workflow.as_str());
    assert_eq!(log["step"]["id"], steps[0].as_str());
    assert_eq!(log["pageUrl"], "https://shop.example/cart");
    assert_eq!(log["executionTimeMs"], 420);
    let r = &report["run"];
    assert_eq!(
        (
            r["stepsCompleted"].as_i64(),
            r["stepsFailed"].as_i64(),
            r["stepsHealed"].as_i64()
        ),
        (Some(1), Some(0), Some(0)),
        "{r:#}"
    );
    assert_eq!(r["currentStep"]["id"], steps[0].as_str());

    // HEALED_DETERMINISTIC (confident): completed and healed; the step records the healing.
    let report = report_step(
        &server,
        token,
        &run_id,
        &steps[1],
        json!({ "status": "HEALED_DETERMINISTIC", "healingConfidence": 0.92, "deterministicScore": 0.92 }),
    )
    .await;
    let r = &report["run"];
    assert_eq!(
        (
            r["stepsCompleted"].as_i64(),
            r["stepsFailed"].as_i64(),
            r["stepsHealed"].as_i64()
        ),
        (Some(2), Some(0), Some(1)),
        "{r:#}"
    );
    assert_eq!(r["currentStep"]["id"], steps[1].as_str());
    assert!(
        approx(&report["healthLog"]["healingConfidence"], 0.92),
        "{report:#}"
    );
    let step = server
        .gql_ok(
            "query($id: ID!) { step(id: $id) { healedAt healingConfidence healingMethod } }",
            json!({ "id": steps[1] }),
            Some(token),
        )
        .await;
    assert!(step["step"]["healedAt"].is_string(), "{step:#}");
    assert!(approx(&step["step"]["healingConfidence"], 0.92), "{step:#}");
    assert_eq!(step["step"]["healingMethod"], "deterministic", "{step:#}");

    // Pause and resume.
    let paused = pause_run(&server, token, &run_id).await;
    assert_eq!(paused["status"], "PAUSED");
    let resumed = resume_run(&server, token, &run_id).await;
    assert_eq!(resumed["status"], "RUNNING");

    // FAILED
    let report = report_step(
        &server,
        token,
        &run_id,
        &steps[2],
        json!({ "status": "FAILED", "errorType": "ElementNotFound", "errorMessage": "#pay is gone" }),
    )
    .await;
    let r = &report["run"];
    assert_eq!(
        (
            r["stepsCompleted"].as_i64(),
            r["stepsFailed"].as_i64(),
            r["stepsHealed"].as_i64()
        ),
        (Some(2), Some(1), Some(1)),
        "{r:#}"
    );
    assert_eq!(report["healthLog"]["errorType"], "ElementNotFound");
    assert_eq!(report["healthLog"]["errorMessage"], "#pay is gone");

    // Finish.
    let finished = finish_run(&server, token, &run_id, "SUCCEEDED", None).await;
    assert_eq!(finished["status"], "SUCCEEDED");
    let finished_at = parse_datetime(&finished["finishedAt"]);
    assert!(
        finished_at >= parse_datetime(&finished["startedAt"]),
        "{finished:#}"
    );

    // Read back: the run and its reports in the order they were made.
    let stored = get_run(&server, token, &run_id).await;
    assert_eq!(stored["status"], "SUCCEEDED");
    assert_eq!(stored["stepsCompleted"], 2);
    assert_eq!(stored["healthLogs"]["totalCount"], 3);
    let statuses: Vec<_> = stored["healthLogs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["SUCCESS", "HEALED_DETERMINISTIC", "FAILED"]);

    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(health["status"], "ACTIVE", "{health:#}");
    assert_eq!(health["totalUses"], 1);
    assert!(approx(&health["successRate"], 1.0), "{health:#}");
    assert_eq!(health["consecutiveFailures"], 0);
    assert!(
        health["lastSuccessAt"].is_string() && health["lastFailureAt"].is_null(),
        "{health:#}"
    );
}

both_backends!(report_step_is_idempotent);
async fn report_step_is_idempotent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Retry", 2).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let keyed = |status: &str, key: &str| json!({ "status": status, "idempotencyKey": key });

    let first = report_step(
        &server,
        token,
        &run,
        &steps[0],
        keyed("SUCCESS", "attempt-1"),
    )
    .await;
    assert_eq!(first["duplicate"], false);
    // The retry (even claiming another outcome) is recognised and counts nothing.
    for retry in [keyed("SUCCESS", "attempt-1"), keyed("FAILED", "attempt-1")] {
        let again = report_step(&server, token, &run, &steps[0], retry).await;
        assert_eq!(again["duplicate"], true, "{again:#}");
        assert_eq!(
            again["healthLog"]["id"], first["healthLog"]["id"],
            "the original log"
        );
        assert_eq!(again["healthLog"]["status"], "SUCCESS", "the original log");
        assert_eq!(again["run"]["stepsCompleted"], 1, "{again:#}");
        assert_eq!(again["run"]["stepsFailed"], 0, "{again:#}");
    }
    assert_eq!(
        server
            .sql_count(&format!("health_logs WHERE run_id = {}", lit(&run)))
            .await,
        1
    );

    // Another key is another report; the same key on another run is that run's own.
    let second = report_step(
        &server,
        token,
        &run,
        &steps[1],
        keyed("SUCCESS", "attempt-2"),
    )
    .await;
    assert_eq!(second["duplicate"], false);
    assert_eq!(second["run"]["stepsCompleted"], 2);
    let other = str_field(&start_run(&server, token, &workflow).await, "id");
    let elsewhere = report_step(
        &server,
        token,
        &other,
        &steps[0],
        keyed("SUCCESS", "attempt-1"),
    )
    .await;
    assert_eq!(
        elsewhere["duplicate"], false,
        "keys are per run: {elsewhere:#}"
    );
    assert_eq!(elsewhere["run"]["stepsCompleted"], 1);
    // Without a key every report counts.
    for _ in 0..2 {
        report_step(&server, token, &other, &steps[1], outcome("SUCCESS")).await;
    }
    assert_eq!(get_run(&server, token, &other).await["stepsCompleted"], 3);
}

both_backends!(concurrent_reports_are_all_counted);
async fn concurrent_reports_are_all_counted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Busy", 2).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let reports = (0..20).map(|i| {
        let status = if i % 4 == 0 { "FAILED" } else { "SUCCESS" };
        try_report_step(
            &server,
            token,
            &run,
            &steps[i % 2],
            json!({ "status": status, "idempotencyKey": format!("k{i}") }),
        )
    });
    for resp in futures_util::future::join_all(reports).await {
        assert!(resp["errors"].is_null(), "{resp:#}");
    }
    let stored = get_run(&server, token, &run).await;
    assert_eq!(stored["stepsCompleted"], 15, "{stored:#}");
    assert_eq!(stored["stepsFailed"], 5, "{stored:#}");
    assert_eq!(stored["healthLogs"]["totalCount"], 20);
}

// ---------------------------------------------------------------------------
// Illegal transitions and bad input
// ---------------------------------------------------------------------------

/// Every transition that must be refused from `status`, with the run left as it was.
async fn assert_all_refused(
    server: &TestServer,
    token: &str,
    run: &str,
    step: &str,
    status: &str,
    refused: &[&str],
) {
    let before = get_run(server, token, run).await;
    assert_eq!(before["status"], status.to_uppercase(), "{before:#}");
    let needle = status.to_lowercase();
    for mutation in refused {
        let resp = match *mutation {
            "finishRun" => try_finish_run(server, token, run, "SUCCEEDED", None).await,
            "finishRun(FAILED)" => try_finish_run(server, token, run, "FAILED", Some("x")).await,
            "reportStep" => try_report_step(server, token, run, step, outcome("SUCCESS")).await,
            m => try_transition(server, token, m, run, Some("why")).await,
        };
        assert_bad_input(
            &resp,
            Some("runId"),
            &needle,
            &format!("{mutation} on a {status} run"),
        );
    }
    let after = get_run(server, token, run).await;
    assert_eq!(before, after, "refused transitions must change nothing");
}

both_backends!(illegal_transitions_are_refused_naming_the_current_status);
async fn illegal_transitions_are_refused_naming_the_current_status(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Strict", 1).await;
    let step = steps[0].as_str();
    let finished_refusals = [
        "pauseRun",
        "resumeRun",
        "cancelRun",
        "finishRun",
        "reportStep",
    ];

    // RUNNING cannot resume.
    let running = str_field(&start_run(&server, token, &workflow).await, "id");
    assert_all_refused(&server, token, &running, step, "running", &["resumeRun"]).await;

    // PAUSED cannot pause, finish (must resume first) or take reports.
    pause_run(&server, token, &running).await;
    assert_all_refused(
        &server,
        token,
        &running,
        step,
        "paused",
        &["pauseRun", "finishRun", "finishRun(FAILED)", "reportStep"],
    )
    .await;
    // ...but can be cancelled.
    let cancelled = cancel_run(&server, token, &running, Some("no longer needed")).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["error"], "no longer needed");
    assert!(cancelled["finishedAt"].is_string());
    assert_all_refused(
        &server,
        token,
        &running,
        step,
        "cancelled",
        &finished_refusals,
    )
    .await;

    // SUCCEEDED and FAILED are final.
    let succeeded = str_field(&start_run(&server, token, &workflow).await, "id");
    finish_run(&server, token, &succeeded, "SUCCEEDED", None).await;
    assert_all_refused(
        &server,
        token,
        &succeeded,
        step,
        "succeeded",
        &finished_refusals,
    )
    .await;
    let failed = str_field(&start_run(&server, token, &workflow).await, "id");
    let run = finish_run(&server, token, &failed, "FAILED", Some("timeout on #pay")).await;
    assert_eq!(run["error"], "timeout on #pay");
    assert_all_refused(&server, token, &failed, step, "failed", &finished_refusals).await;

    // A RUNNING run can be cancelled directly, a QUEUED one too, and a QUEUED run takes reports.
    let direct = str_field(&start_run(&server, token, &workflow).await, "id");
    assert_eq!(
        cancel_run(&server, token, &direct, None).await["status"],
        "CANCELLED"
    );
    let queued = insert_run(
        &server,
        &RunRow {
            company_id: &acme.company_id,
            workflow_id: &workflow,
            started_by: Some(acme.admin_id.as_str()),
            status: "queued",
            current_step_id: None,
            error: None,
            created_at: ts(chrono::Utc::now()),
        },
    )
    .await;
    let report = report_step(&server, token, &queued, step, outcome("SUCCESS")).await;
    assert_eq!(report["duplicate"], false);
    let queued2 = insert_run(
        &server,
        &RunRow {
            company_id: &acme.company_id,
            workflow_id: &workflow,
            started_by: None,
            status: "queued",
            current_step_id: None,
            error: None,
            created_at: ts(chrono::Utc::now()),
        },
    )
    .await;
    assert_eq!(
        transition(&server, token, "cancelRun", &queued2, Some("stale")).await["status"],
        "CANCELLED"
    );
}

both_backends!(a_report_writes_the_log_the_run_and_the_step_alike);
/// What one report writes, as a client reads it back: the log it answered, the run
/// (a queued run started at the report's time, counters, current step, one more version
/// in `updatedAt` order) and, for a healing, the step — selectors kept from the last
/// healing that sent some. On PostgreSQL this is one statement; on SQLite a transaction.
async fn a_report_writes_the_log_the_run_and_the_step_alike(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Alike", 2).await;
    let queued = insert_run(
        &server,
        &RunRow {
            company_id: &acme.company_id,
            workflow_id: &workflow,
            started_by: Some(acme.member_id.as_str()),
            status: "queued",
            current_step_id: None,
            error: None,
            created_at: ts(chrono::Utc::now()),
        },
    )
    .await;
    let selectors = json!({ "css": "#pay", "xpath": "//button[2]" });
    let first = report_step(
        &server,
        token,
        &queued,
        &steps[1],
        json!({ "status": "HEALED_DETERMINISTIC", "healingConfidence": 0.93,
                "deterministicScore": 0.93, "pageUrl": "https://shop.example/pay",
                "executionTimeMs": 812, "healedSelectors": selectors }),
    )
    .await;
    assert_eq!(first["duplicate"], false);
    let (run, log) = (&first["run"], &first["healthLog"]);
    assert_eq!(run["status"], "RUNNING", "a queued run starts: {first:#}");
    assert_eq!(run["startedAt"], log["createdAt"], "{first:#}");
    assert_eq!(run["updatedAt"], log["createdAt"], "{first:#}");
    assert_eq!(run["currentStep"]["id"], steps[1].as_str());
    assert_eq!(
        (
            &run["stepsCompleted"],
            &run["stepsHealed"],
            &run["stepsFailed"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "the fixture's run had one completed and one failed step: {first:#}"
    );
    assert_eq!(log["status"], "HEALED_DETERMINISTIC");
    assert_eq!(log["step"]["id"], steps[1].as_str());
    assert_eq!(log["run"]["id"], queued.as_str());
    assert_eq!(log["workflow"]["id"], workflow.as_str());
    assert_eq!(log["pageUrl"], "https://shop.example/pay");
    assert_eq!(log["executionTimeMs"], 812);
    assert!(approx(&log["healingConfidence"], 0.93), "{log:#}");
    assert!(approx(&log["deterministicScore"], 0.93), "{log:#}");
    assert!(
        log["aiScore"].is_null() && log["errorType"].is_null(),
        "{log:#}"
    );

    // What the answer said is what is stored.
    let step_query = "query($id: ID!) { step(id: $id) { healedSelectors healedAt \
                      healingConfidence healingMethod } }";
    let read = ok_query(
        &server,
        token,
        "query($id: ID!) { run(id: $id) { status startedAt updatedAt stepsCompleted \
           healthLogs(first: 5) { nodes { id createdAt status } } } }",
        json!({ "id": queued }),
    )
    .await;
    assert_eq!(read["run"]["updatedAt"], run["updatedAt"]);
    assert_eq!(read["run"]["healthLogs"]["nodes"][0]["id"], log["id"]);
    assert_eq!(
        read["run"]["healthLogs"]["nodes"][0]["createdAt"],
        log["createdAt"]
    );
    let step = ok_query(&server, token, step_query, json!({ "id": steps[1] })).await;
    assert_eq!(step["step"]["healedSelectors"], selectors, "{step:#}");
    assert_eq!(step["step"]["healedAt"], log["createdAt"], "{step:#}");
    assert_eq!(step["step"]["healingMethod"], "deterministic", "{step:#}");

    // A later healing without selectors says nothing new about where the element is.
    let second = report_step(
        &server,
        token,
        &queued,
        &steps[1],
        json!({ "status": "HEALED_AI", "healingConfidence": 0.97, "healingMethod": "text-match" }),
    )
    .await;
    let run2 = &second["run"];
    assert!(
        parse_datetime(&run2["updatedAt"]) >= parse_datetime(&run["updatedAt"]),
        "{second:#}"
    );
    assert_eq!(
        run2["startedAt"], run["startedAt"],
        "started once: {second:#}"
    );
    assert_eq!(
        (
            &run2["stepsCompleted"],
            &run2["stepsHealed"],
            &run2["stepsFailed"]
        ),
        (&json!(3), &json!(2), &json!(1))
    );
    let step = ok_query(&server, token, step_query, json!({ "id": steps[1] })).await;
    assert_eq!(step["step"]["healedSelectors"], selectors, "kept: {step:#}");
    assert_eq!(step["step"]["healingMethod"], "text-match", "{step:#}");
    assert!(approx(&step["step"]["healingConfidence"], 0.97), "{step:#}");
    assert_eq!(step["step"]["healedAt"], second["healthLog"]["createdAt"]);

    // A failure counts as one, on the other step, and leaves the step's healing alone.
    let third = report_step(
        &server,
        token,
        &queued,
        &steps[0],
        json!({ "status": "FAILED", "errorType": "timeout", "errorMessage": "no #pay" }),
    )
    .await;
    assert_eq!(third["run"]["stepsFailed"], 2);
    assert_eq!(third["run"]["stepsCompleted"], 3);
    assert_eq!(third["run"]["currentStep"]["id"], steps[0].as_str());
    assert_eq!(third["healthLog"]["errorType"], "timeout");
    assert_eq!(third["healthLog"]["errorMessage"], "no #pay");
    let other = ok_query(&server, token, step_query, json!({ "id": steps[0] })).await;
    assert!(other["step"]["healedAt"].is_null(), "{other:#}");
}

async fn ok_query(server: &TestServer, token: &str, query: &str, variables: Value) -> Value {
    server.gql_ok(query, variables, Some(token)).await
}

both_backends!(report_step_checks_the_step_and_the_outcome);
async fn report_step_checks_the_step_and_the_outcome(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Mine", 1).await;
    let (_, other_steps) = active_workflow(&server, token, "Also mine", 1).await;
    let (g_workflow, g_steps) = active_workflow(&server, &globex.admin_token, "Theirs", 1).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let g_run = str_field(
        &start_run(&server, &globex.admin_token, &g_workflow).await,
        "id",
    );

    // A step of another workflow of the same company.
    let resp = try_report_step(&server, token, &run, &other_steps[0], outcome("SUCCESS")).await;
    assert_bad_input(&resp, Some("stepId"), "", "step of another workflow");
    // Another company's step, or none at all.
    let resp = try_report_step(&server, token, &run, &g_steps[0], outcome("SUCCESS")).await;
    assert_error_code(&resp, "NOT_FOUND", "another company's step");
    let resp = try_report_step(&server, token, &run, &new_id(), outcome("SUCCESS")).await;
    assert_error_code(&resp, "NOT_FOUND", "missing step");
    // Another company's run, or none at all.
    let resp = try_report_step(&server, token, &g_run, &g_steps[0], outcome("SUCCESS")).await;
    assert_error_code(&resp, "NOT_FOUND", "another company's run");
    let resp = try_report_step(&server, token, &new_id(), &steps[0], outcome("SUCCESS")).await;
    assert_error_code(&resp, "NOT_FOUND", "missing run");

    // Outcome limits.
    let bad_outcomes = [
        (
            "healingConfidence above 1",
            json!({ "status": "HEALED_AI", "healingConfidence": 1.5 }),
        ),
        (
            "healingConfidence below 0",
            json!({ "status": "HEALED_AI", "healingConfidence": -0.1 }),
        ),
        (
            "deterministicScore above 1",
            json!({ "status": "SUCCESS", "deterministicScore": 1.01 }),
        ),
        (
            "aiScore below 0",
            json!({ "status": "SUCCESS", "aiScore": -1 }),
        ),
        (
            "negative executionTimeMs",
            json!({ "status": "SUCCESS", "executionTimeMs": -1 }),
        ),
        (
            "errorMessage too long",
            json!({ "status": "FAILED", "errorMessage": "e".repeat(2001) }),
        ),
        (
            "pageUrl too long",
            json!({ "status": "SUCCESS", "pageUrl": format!("https://x.example/{}", "p".repeat(2049)) }),
        ),
        (
            "empty idempotencyKey",
            json!({ "status": "SUCCESS", "idempotencyKey": "" }),
        ),
        (
            "idempotencyKey too long",
            json!({ "status": "SUCCESS", "idempotencyKey": "k".repeat(201) }),
        ),
    ];
    for (what, bad) in bad_outcomes {
        let resp = try_report_step(&server, token, &run, &steps[0], bad).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
    }
    // At the limits: accepted.
    let edge = json!({
        "status": "FAILED",
        "errorMessage": "e".repeat(2000),
        "idempotencyKey": "k".repeat(200),
        "healingConfidence": 0.0,
        "aiScore": 1.0,
        "executionTimeMs": 0,
    });
    report_step(&server, token, &run, &steps[0], edge).await;

    // Nothing refused was recorded or counted, for either company.
    let stored = get_run(&server, token, &run).await;
    assert_eq!(stored["healthLogs"]["totalCount"], 1, "{stored:#}");
    assert_eq!(
        (
            stored["stepsCompleted"].as_i64(),
            stored["stepsFailed"].as_i64()
        ),
        (Some(0), Some(1))
    );
    let theirs = get_run(&server, &globex.admin_token, &g_run).await;
    assert_eq!(theirs["healthLogs"]["totalCount"], 0, "{theirs:#}");

    // Other mutations on another company's run: NOT_FOUND, and it is untouched.
    for mutation in ["pauseRun", "resumeRun", "cancelRun"] {
        let resp = try_transition(&server, token, mutation, &g_run, None).await;
        assert_error_code(
            &resp,
            "NOT_FOUND",
            &format!("{mutation} of another company's run"),
        );
    }
    let resp = try_finish_run(&server, token, &g_run, "FAILED", None).await;
    assert_error_code(&resp, "NOT_FOUND", "finishRun of another company's run");
    assert_eq!(get_run(&server, &globex.admin_token, &g_run).await, theirs);
}

both_backends!(start_run_needs_an_active_or_reviewed_workflow);
async fn start_run_needs_an_active_or_reviewed_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let token = acme.admin_token.as_str();
    let draft = common::fixtures::simple_workflow(&server, token, "Draft", 2).await;
    let draft_id = str_field(&draft, "id");
    assert_eq!(draft["status"], "DRAFT");

    // Each status reached by a legal step from the one before.
    for (status, lower) in [
        ("DRAFT", "draft"),
        ("PROCESSING", "processing"),
        ("BROKEN", "broken"),
        ("ARCHIVED", "archived"),
    ] {
        if status != "DRAFT" {
            set_status(&server, token, &draft_id, status).await;
        }
        let resp = try_start_run(&server, token, &draft_id).await;
        assert_bad_input(
            &resp,
            Some("workflowId"),
            lower,
            &format!("startRun on a {lower} workflow"),
        );
    }
    assert_eq!(
        server
            .sql_count(&format!("runs WHERE workflow_id = {}", lit(&draft_id)))
            .await,
        0
    );

    // ACTIVE and NEEDS_REVIEW may run; stepsTotal is the step count at start.
    set_status(&server, token, &draft_id, "DRAFT").await;
    set_status(&server, token, &draft_id, "ACTIVE").await;
    assert_eq!(start_run(&server, token, &draft_id).await["stepsTotal"], 2);
    set_status(&server, token, &draft_id, "NEEDS_REVIEW").await;
    common::fixtures::add_step(
        &server,
        token,
        &draft_id,
        common::fixtures::step_input("click", "extra"),
        None,
    )
    .await;
    assert_eq!(start_run(&server, token, &draft_id).await["stepsTotal"], 3);

    // Another company's workflow, or none.
    let resp = try_start_run(&server, &globex.admin_token, &draft_id).await;
    assert_error_code(&resp, "NOT_FOUND", "startRun on another company's workflow");
    let resp = try_start_run(&server, token, &new_id()).await;
    assert_error_code(&resp, "NOT_FOUND", "startRun on a missing workflow");
    // Without a token.
    let resp = server
        .gql(
            "mutation($id: ID!) { startRun(workflowId: $id) { id } }",
            json!({ "id": draft_id }),
            None,
        )
        .await;
    assert_error_code(&resp, "UNAUTHENTICATED", "startRun without a token");
}

// ---------------------------------------------------------------------------
// Workflow health
// ---------------------------------------------------------------------------

both_backends!(health_arithmetic);
async fn health_arithmetic(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Measured", 2).await;

    // (outcome, totalUses, successRate, consecutiveFailures)
    let script: [(&str, i64, f64, i64); 6] = [
        ("SUCCEEDED", 1, 1.0, 0),
        ("FAILED", 2, 0.5, 1),
        ("FAILED", 3, 1.0 / 3.0, 2),
        ("CANCELLED", 3, 1.0 / 3.0, 2),
        ("SUCCEEDED", 4, 0.5, 0),
        ("FAILED", 5, 0.4, 1),
    ];
    let mut last_success = None;
    let mut last_failure = None;
    for (i, (result, uses, rate, failures)) in script.into_iter().enumerate() {
        if result == "CANCELLED" {
            let run = str_field(&start_run(&server, token, &workflow).await, "id");
            cancel_run(&server, token, &run, None).await;
        } else {
            complete_run(&server, token, &workflow, &steps, result).await;
        }
        let health = workflow_health(&server, token, &workflow).await;
        let context = format!("after run {} ({result}): {health:#}", i + 1);
        assert_eq!(health["totalUses"], uses, "{context}");
        assert!(
            approx(&health["successRate"], rate),
            "successRate should be {rate}, {context}"
        );
        assert_eq!(health["consecutiveFailures"], failures, "{context}");
        assert_eq!(health["status"], "ACTIVE", "{context}");
        match result {
            "SUCCEEDED" => last_success = Some(health["lastSuccessAt"].clone()),
            "FAILED" => last_failure = Some(health["lastFailureAt"].clone()),
            _ => {}
        }
        assert_eq!(
            Some(&health["lastSuccessAt"]).filter(|v| !v.is_null()),
            last_success.as_ref(),
            "{context}"
        );
        assert_eq!(
            Some(&health["lastFailureAt"]).filter(|v| !v.is_null()),
            last_failure.as_ref(),
            "{context}"
        );
    }
    assert!(
        workflow_notifications(&server, token, &workflow)
            .await
            .is_empty()
    );
}

both_backends!(three_failures_break_a_workflow_and_a_success_recovers_it);
async fn three_failures_break_a_workflow_and_a_success_recovers_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Fragile", 1).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(str_field(&start_run(&server, token, &workflow).await, "id"));
    }
    let fail = async |run: &str| {
        report_step(&server, token, run, &steps[0], outcome("FAILED")).await;
        finish_run(&server, token, run, "FAILED", Some("element not found")).await;
    };

    fail(runs[0].as_str()).await;
    fail(runs[1].as_str()).await;
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(
        (
            health["status"].as_str(),
            health["consecutiveFailures"].as_i64()
        ),
        (Some("ACTIVE"), Some(2))
    );
    assert!(
        workflow_notifications(&server, token, &workflow)
            .await
            .is_empty()
    );

    fail(runs[2].as_str()).await;
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(health["status"], "BROKEN", "{health:#}");
    assert_eq!(health["consecutiveFailures"], 3);
    let notes = workflow_notifications(&server, token, &workflow).await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(notes[0]["kind"], "workflow_broken");
    assert_eq!(notes[0]["severity"], "ERROR");
    assert_eq!(notes[0]["read"], false);
    assert!(
        str_field(&notes[0], "title")
            .to_lowercase()
            .contains("broken"),
        "{notes:#?}"
    );
    // A regular member sees it too.
    let member_view = workflow_notifications(&server, &acme.member_token, &workflow).await;
    assert_eq!(member_view.len(), 1);

    // A broken workflow starts no runs.
    let resp = try_start_run(&server, token, &workflow).await;
    assert_bad_input(
        &resp,
        Some("workflowId"),
        "broken",
        "startRun on a broken workflow",
    );

    // Failing again while broken: counted, but not broken twice.
    fail(runs[3].as_str()).await;
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(
        (
            health["status"].as_str(),
            health["consecutiveFailures"].as_i64()
        ),
        (Some("BROKEN"), Some(4))
    );
    assert_eq!(
        workflow_notifications(&server, token, &workflow)
            .await
            .len(),
        1
    );

    // A success (of a run started before the breakage) recovers it.
    finish_run(&server, token, &runs[4], "SUCCEEDED", None).await;
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(health["status"], "ACTIVE", "{health:#}");
    assert_eq!(health["consecutiveFailures"], 0);
    assert_eq!(health["totalUses"], 5);
    assert!(approx(&health["successRate"], 0.2), "{health:#}");
    let notes = workflow_notifications(&server, token, &workflow).await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(notes[0]["kind"], "workflow_recovered", "{notes:#?}");
    assert_eq!(notes[0]["severity"], "INFO", "{notes:#?}");
    assert_eq!(
        server
            .gql_ok("{ unreadNotificationCount }", json!({}), Some(token))
            .await["unreadNotificationCount"],
        2
    );
}

both_backends!(broken_threshold_is_configurable);
async fn broken_threshold_is_configurable(backend: Backend) {
    let options = ServerOptions {
        env: vec![("STEPWISE_BROKEN_AFTER_FAILURES".into(), "1".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Touchy", 1).await;
    complete_run(&server, token, &workflow, &steps, "FAILED").await;
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(
        health["status"], "BROKEN",
        "one failure with a threshold of 1: {health:#}"
    );
    assert_eq!(
        workflow_notifications(&server, token, &workflow)
            .await
            .len(),
        1
    );
}

both_backends!(low_confidence_healing_puts_a_workflow_in_review);
async fn low_confidence_healing_puts_a_workflow_in_review(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (doubtful, steps) = active_workflow(&server, token, "Doubtful", 2).await;
    let (confident, c_steps) = active_workflow(&server, token, "Confident", 1).await;

    // Confident healing (at the 0.7 threshold and above): still ACTIVE, no notification.
    let run = str_field(&start_run(&server, token, &confident).await, "id");
    for confidence in [0.95, 0.7] {
        report_step(
            &server,
            token,
            &run,
            &c_steps[0],
            json!({ "status": "HEALED_AI", "healingConfidence": confidence }),
        )
        .await;
    }
    assert_eq!(
        workflow_health(&server, token, &confident).await["status"],
        "ACTIVE"
    );
    assert!(
        workflow_notifications(&server, token, &confident)
            .await
            .is_empty()
    );

    // Low confidence: NEEDS_REVIEW with one WARNING; the step records the AI healing.
    let run = str_field(&start_run(&server, token, &doubtful).await, "id");
    let report = report_step(
        &server,
        token,
        &run,
        &steps[0],
        json!({ "status": "HEALED_AI", "healingConfidence": 0.4, "aiScore": 0.4 }),
    )
    .await;
    assert_eq!(report["run"]["stepsHealed"], 1);
    assert_eq!(report["run"]["stepsCompleted"], 1);
    assert_eq!(
        report["run"]["status"], "RUNNING",
        "the run goes on: {report:#}"
    );
    assert_eq!(
        workflow_health(&server, token, &doubtful).await["status"],
        "NEEDS_REVIEW"
    );
    let step = server
        .gql_ok(
            "query($id: ID!) { step(id: $id) { healedAt healingConfidence healingMethod } }",
            json!({ "id": steps[0] }),
            Some(token),
        )
        .await;
    assert_eq!(step["step"]["healingMethod"], "ai", "{step:#}");
    assert!(approx(&step["step"]["healingConfidence"], 0.4), "{step:#}");
    let notes = workflow_notifications(&server, token, &doubtful).await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(notes[0]["kind"], "workflow_needs_review");
    assert_eq!(notes[0]["severity"], "WARNING");

    // Already in review: another doubtful healing adds no second warning; runs still start.
    report_step(
        &server,
        token,
        &run,
        &steps[1],
        json!({ "status": "HEALED_DETERMINISTIC", "healingConfidence": 0.1 }),
    )
    .await;
    assert_eq!(
        workflow_notifications(&server, token, &doubtful)
            .await
            .len(),
        1
    );
    assert_eq!(
        workflow_health(&server, token, &doubtful).await["status"],
        "NEEDS_REVIEW"
    );
    assert_eq!(
        start_run(&server, token, &doubtful).await["status"],
        "RUNNING"
    );
    // Finishing counts towards health but keeps the review status.
    finish_run(&server, token, &run, "SUCCEEDED", None).await;
    let health = workflow_health(&server, token, &doubtful).await;
    assert_eq!(
        (health["status"].as_str(), health["totalUses"].as_i64()),
        (Some("NEEDS_REVIEW"), Some(1)),
        "{health:#}"
    );
}

// ---------------------------------------------------------------------------
// Sweeper
// ---------------------------------------------------------------------------

both_backends!(sweeper_times_out_silent_runs);
async fn sweeper_times_out_silent_runs(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            ("STEPWISE_RUN_TIMEOUT_SECONDS".into(), "1".into()),
            ("STEPWISE_SWEEP_INTERVAL_SECONDS".into(), "1".into()),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, token, "Silent", 2).await;
    // A finished run and a paused one, both silent for an hour.
    let hour_ago = ts(chrono::Utc::now() - chrono::Duration::hours(1));
    let row = |status| RunRow {
        company_id: &acme.company_id,
        workflow_id: &workflow,
        started_by: Some(acme.admin_id.as_str()),
        status,
        current_step_id: None,
        error: None,
        created_at: hour_ago.clone(),
    };
    let done = insert_run(&server, &row("succeeded")).await;
    let paused = insert_run(&server, &row("paused")).await;
    let silent = str_field(&start_run(&server, token, &workflow).await, "id");

    let run = poll_until(
        Duration::from_secs(15),
        "the silent run to time out",
        async || {
            let run = get_run(&server, token, &silent).await;
            (run["status"] != "RUNNING").then_some(run)
        },
    )
    .await;
    assert_eq!(run["status"], "TIMED_OUT", "{run:#}");
    let error = str_field(&run, "error");
    assert!(
        error.contains("no step report for 1 seconds"),
        "error: {error:?}"
    );
    assert!(run["finishedAt"].is_string(), "{run:#}");

    // A timeout is a failure for the workflow's health.
    let health = workflow_health(&server, token, &workflow).await;
    assert_eq!(health["totalUses"], 1, "{health:#}");
    assert_eq!(health["consecutiveFailures"], 1, "{health:#}");
    assert!(approx(&health["successRate"], 0.0), "{health:#}");
    assert!(health["lastFailureAt"].is_string(), "{health:#}");

    // Paused and finished runs are not the sweeper's business.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_run(&server, token, &paused).await["status"], "PAUSED");
    assert_eq!(get_run(&server, token, &done).await["status"], "SUCCEEDED");
    // Once resumed and silent again, it is.
    let resumed = resume_run(&server, token, &paused).await;
    assert_eq!(resumed["status"], "RUNNING");
    poll_until(
        Duration::from_secs(15),
        "the resumed run to time out",
        async || (get_run(&server, token, &paused).await["status"] == "TIMED_OUT").then_some(()),
    )
    .await;
}
