//! Data integrity under concurrent clients. SQLite runs one writer at a time; PostgreSQL
//! runs writers side by side under READ COMMITTED, so every write path must hold there too:
//! nothing acknowledged is lost, numbering stays dense, a run's state never goes back,
//! resumed streams miss nothing and repeat nothing, deadlocks are retried (never
//! INTERNAL), numbers round-trip exactly, and both backends answer the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::realtime::{Subscriber, field, health_log_recorded_query, run_updated_query};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, TestServer, error_code, str_field};
use serde_json::{Value, json};

/// Fails the test on an INTERNAL answer; returns the error code, if any.
#[track_caller]
fn code_not_internal(resp: &Value, what: &str) -> Option<String> {
    let code = error_code(resp);
    assert_ne!(
        code.as_deref(),
        Some("INTERNAL"),
        "{what} answered INTERNAL: {resp:#}"
    );
    code
}

async fn upload(
    server: &TestServer,
    token: &str,
    workflow: &str,
    step: &str,
    bytes: Vec<u8>,
) -> Value {
    let query = "mutation($workflowId: ID!, $stepId: ID, $file: Upload!) { \
                 uploadScreenshot(workflowId: $workflowId, stepId: $stepId, file: $file) { id } }";
    let variables = json!({ "workflowId": workflow, "stepId": step });
    multipart_request(server, &server.client, Some(token), query, variables, bytes).await
}

const STEP_SCREENSHOTS: &str =
    "query($id: ID!) { workflow(id: $id) { steps { id stepNumber screenshot { id url } } } }";

// ---------------------------------------------------------------------------
// Finding 1: deleteWorkflow must not take a screenshot another mutation just attached
// ---------------------------------------------------------------------------

both_backends!(deleting_a_workflow_keeps_screenshots_attached_meanwhile);
async fn deleting_a_workflow_keeps_screenshots_attached_meanwhile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let admin = acme.admin_token.as_str();
    for round in 0..6u8 {
        let a = simple_workflow(&server, token, &format!("A{round}"), 1).await;
        let b = simple_workflow(&server, token, &format!("B{round}"), 1).await;
        let (a, a_step) = (str_field(&a, "id"), step_ids(&a)[0].clone());
        let (b, b_step) = (str_field(&b, "id"), step_ids(&b)[0].clone());
        let bytes = png(8, 8, round);
        let first = upload(&server, token, &a, &a_step, bytes.clone()).await;
        assert!(first["errors"].is_null(), "{first:#}");
        // At once: delete A, upload the same bytes onto B's step (deduplicated to A's
        // screenshot), duplicate A.
        let delete = server.gql(
            "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            json!({ "id": a }),
            Some(admin),
        );
        let attach = upload(&server, token, &b, &b_step, bytes.clone());
        let duplicate = server.gql(
            "mutation($id: ID!) { duplicateWorkflow(id: $id) { id } }",
            json!({ "id": a }),
            Some(token),
        );
        let (deleted, attached, duplicated) = tokio::join!(delete, attach, duplicate);
        code_not_internal(&deleted, "deleteWorkflow");
        assert!(deleted["errors"].is_null(), "{deleted:#}");
        code_not_internal(&attached, "uploadScreenshot");
        code_not_internal(&duplicated, "duplicateWorkflow");
        // Every acknowledged reference still shows a screenshot whose bytes load.
        let mut shown = Vec::new();
        if attached["errors"].is_null() {
            shown.push(b.clone());
        }
        if duplicated["errors"].is_null() {
            shown.push(str_field(&duplicated["data"]["duplicateWorkflow"], "id"));
        }
        for workflow in shown {
            let data = ok(&server, token, STEP_SCREENSHOTS, json!({ "id": workflow })).await;
            let step = &data["workflow"]["steps"][0];
            let url = step["screenshot"]["url"]
                .as_str()
                .unwrap_or_else(|| panic!("round {round}: the screenshot was lost: {data:#}"));
            let got = server.get(url).await;
            assert_eq!(
                got.status(),
                reqwest::StatusCode::OK,
                "round {round}: {url}"
            );
            assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
        }
    }
}

// ---------------------------------------------------------------------------
// Finding 2: step numbers stay 1..n under concurrent add / delete / reorder
// ---------------------------------------------------------------------------

both_backends!(step_numbers_stay_dense_under_concurrent_edits);
async fn step_numbers_stay_dense_under_concurrent_edits(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let mut tasks = Vec::new();
    let mut workflows = Vec::new();
    for w in 0..8 {
        let workflow = simple_workflow(&server, &token, &format!("Flow {w}"), 4).await;
        let id = str_field(&workflow, "id");
        let steps = step_ids(&workflow);
        // Per workflow at once: delete #2, append twice, insert at 1, reorder.
        let mut reversed = steps.clone();
        reversed.reverse();
        let ops: Vec<(&str, Value)> = vec![
            (
                "mutation($id: ID!) { deleteStep(id: $id) }",
                json!({ "id": steps[1] }),
            ),
            (
                "mutation($w: ID!) { addStep(workflowId: $w, input: { actionType: \"click\" }) { id } }",
                json!({ "w": id }),
            ),
            (
                "mutation($w: ID!) { addStep(workflowId: $w, input: { actionType: \"type\" }, position: 1) { id } }",
                json!({ "w": id }),
            ),
            (
                "mutation($w: ID!, $ids: [ID!]!) { reorderSteps(workflowId: $w, stepIds: $ids) { id } }",
                json!({ "w": id, "ids": reversed }),
            ),
            (
                "mutation($w: ID!) { addStep(workflowId: $w, input: { actionType: \"submit\" }) { id } }",
                json!({ "w": id }),
            ),
        ];
        for (query, variables) in ops {
            let (server, token) = (server.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                server.gql(query, variables, Some(&token)).await
            }));
        }
        workflows.push(id);
    }
    for task in tasks {
        let resp = task.await.unwrap();
        // A reorder that raced an add or delete may be refused (its list no longer names
        // every step): a user error, never a server error.
        if let Some(code) = code_not_internal(&resp, "a step edit") {
            assert_eq!(code, "BAD_USER_INPUT", "{resp:#}");
        }
    }
    for id in &workflows {
        let workflow = get_workflow(&server, &token, id).await;
        assert_dense(&workflow);
        // A later append lands after everything there is.
        let count = workflow["steps"].as_array().unwrap().len();
        let added = add_step(&server, &token, id, json!({ "actionType": "last" }), None).await;
        assert_eq!(added["stepNumber"], count + 1, "{workflow:#}");
    }
}

// ---------------------------------------------------------------------------
// Finding 3: a run's state never goes back; every runUpdated stream ends
// ---------------------------------------------------------------------------

both_backends!(run_state_only_moves_forward_under_concurrent_reports);
async fn run_state_only_moves_forward_under_concurrent_reports(backend: Backend) {
    const RUNS: usize = 4;
    const EXECUTORS: usize = 6;
    const REPORTS: usize = 5;
    let server = Arc::new(TestServer::start(backend).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let (workflow, steps) = active_workflow(&server, &token, "Busy", 3).await;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        runs.push(str_field(
            &start_run(&server, &token, &workflow).await,
            "id",
        ));
    }
    let ops: Vec<(String, String, Value)> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            (
                format!("run{i}"),
                run_updated_query(),
                json!({ "runId": run }),
            )
        })
        .collect();
    let specs: Vec<(&str, &str, Value)> = ops
        .iter()
        .map(|(op, q, v)| (op.as_str(), q.as_str(), v.clone()))
        .collect();
    let mut sub = Subscriber::start(&server, Some(&token), &specs);
    for (op, _, _) in &ops {
        sub.expect_data(op).await; // the snapshot
    }
    // Every run gets reports from several executors at once, and is finished while they
    // are still reporting: reports after the finish are refused, nothing else is.
    let mut tasks = Vec::new();
    for run in &runs {
        for _ in 0..EXECUTORS {
            let (server, token, run, steps) =
                (server.clone(), token.clone(), run.clone(), steps.clone());
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0i64;
                for r in 0..REPORTS {
                    let step = &steps[r % steps.len()];
                    let resp = common::runs::try_report_step(
                        &server,
                        &token,
                        &run,
                        step,
                        outcome(if r % 4 == 0 { "HEALED_AI" } else { "SUCCESS" }),
                    )
                    .await;
                    match code_not_internal(&resp, "reportStep") {
                        None => accepted += 1,
                        Some(code) => assert_eq!(code, "BAD_USER_INPUT", "{resp:#}"),
                    }
                }
                (run, accepted)
            }));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let finishes: Vec<_> = runs
        .iter()
        .map(|run| {
            let (server, token, run) = (server.clone(), token.clone(), run.clone());
            tokio::spawn(async move { finish_run(&server, &token, &run, "SUCCEEDED", None).await })
        })
        .collect();
    let mut accepted: HashMap<String, i64> = HashMap::new();
    for task in tasks {
        let (run, n) = task.await.unwrap();
        *accepted.entry(run).or_default() += n;
    }
    for finish in finishes {
        finish.await.unwrap();
    }
    for ((op, _, _), run) in ops.iter().zip(&runs) {
        let mut last_completed = 0;
        let mut last_updated = None;
        let mut finished = false;
        loop {
            let event = sub.event_for(op).await;
            if event["event"] == "complete" {
                break;
            }
            let update = field(&event["payload"]["data"], "runUpdated");
            let state = &update["run"];
            let completed = state["stepsCompleted"].as_i64().unwrap();
            let updated = common::parse_datetime(&state["updatedAt"]);
            assert!(
                completed >= last_completed,
                "{op}: stepsCompleted went back: {update:#}"
            );
            assert!(
                last_updated.is_none_or(|last| updated >= last),
                "{op}: updatedAt went back: {update:#}"
            );
            last_completed = completed;
            last_updated = Some(updated);
            if state["status"] == "SUCCEEDED" {
                assert_eq!(completed, accepted[run], "{op}: {update:#}");
                finished = true;
            }
        }
        assert!(
            finished,
            "{op}: the stream completed without the final state"
        );
    }
    sub.disconnect().await;
    // No report is stamped after its run finished.
    for run in &runs {
        let data = ok(
            &server,
            &token,
            "query($id: ID!) { run(id: $id) { finishedAt healthLogs(first: 100) { nodes { createdAt } } } }",
            json!({ "id": run }),
        )
        .await;
        let finished = common::parse_datetime(&data["run"]["finishedAt"]);
        for log in data["run"]["healthLogs"]["nodes"].as_array().unwrap() {
            assert!(
                common::parse_datetime(&log["createdAt"]) <= finished,
                "{data:#}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Finding 4: a client resuming with `after` misses nothing and sees nothing twice
// ---------------------------------------------------------------------------

both_backends!(resumed_log_streams_miss_nothing_under_concurrent_executors);
async fn resumed_log_streams_miss_nothing_under_concurrent_executors(backend: Backend) {
    const EXECUTORS: usize = 8;
    const REPORTS: usize = 12;
    let server = Arc::new(TestServer::start(backend).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let (workflow, steps) = active_workflow(&server, &token, "Busy", 2).await;
    let query = health_log_recorded_query();
    let mut sub = Subscriber::start(&server, Some(&token), &[("logs", &query, json!({}))]);
    // Live before the executors start: a warm-up report shows up.
    let warmup_run = str_field(&start_run(&server, &token, &workflow).await, "id");
    let warm = sub
        .until_live(&["logs"], async || {
            report_step(&server, &token, &warmup_run, &steps[0], outcome("SUCCESS")).await;
        })
        .await;
    let mut cursor = str_field(
        field(&warm[0]["payload"]["data"], "healthLogRecorded"),
        "cursor",
    );
    let warm_ids: HashSet<String> = {
        let data = ok(
            &server,
            &token,
            "query($id: ID!) { run(id: $id) { healthLogs(first: 100) { nodes { id } } } }",
            json!({ "id": warmup_run }),
        )
        .await;
        data["run"]["healthLogs"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| str_field(n, "id"))
            .collect()
    };
    let mut tasks = Vec::new();
    for _ in 0..EXECUTORS {
        let (server, token, workflow, steps) = (
            server.clone(),
            token.clone(),
            workflow.clone(),
            steps.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let run = str_field(&start_run(&server, &token, &workflow).await, "id");
            for r in 0..REPORTS {
                report_step(&server, &token, &run, &steps[r % 2], outcome("SUCCESS")).await;
            }
        }));
    }
    // Read a few, drop the connection, resume after the last cursor seen; again and again.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let expected = EXECUTORS * REPORTS;
    let counted =
        |seen: &HashMap<String, usize>| seen.keys().filter(|id| !warm_ids.contains(*id)).count();
    let mut round = 0;
    while counted(&seen) < expected {
        let take = 5 + round % 7;
        for _ in 0..take {
            let Some(event) = sub
                .try_event_for("logs", std::time::Duration::from_secs(20))
                .await
            else {
                break;
            };
            let data = &event["payload"]["data"];
            let log = field(data, "healthLogRecorded");
            *seen.entry(str_field(&log["healthLog"], "id")).or_default() += 1;
            cursor = str_field(log, "cursor");
            if counted(&seen) >= expected {
                break;
            }
        }
        sub.disconnect().await;
        sub = Subscriber::start(
            &server,
            Some(&token),
            &[("logs", &query, json!({ "after": cursor }))],
        );
        round += 1;
        assert!(
            round < 200,
            "never saw all logs: {} of {expected}",
            counted(&seen)
        );
    }
    for task in tasks {
        task.await.unwrap();
    }
    sub.expect_quiet("logs").await;
    sub.disconnect().await;
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "delivered twice: {repeated:?}");
    assert_eq!(counted(&seen), expected, "after {round} resumes");
}

// ---------------------------------------------------------------------------
// Finding 5: numbers and JSON round-trip exactly
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift), so a failure names its value.
fn doubles(count: usize) -> Vec<f64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = vec![
        0.9999999999999999,
        0.6999999999999999,
        0.1 + 0.2,
        f64::MIN_POSITIVE,
        5e-324,
        1.0 - f64::EPSILON,
        0.3,
        0.0,
        1.0,
    ];
    while out.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Uniform doubles in [0, 1) with all 52 mantissa bits random.
        out.push((state >> 11) as f64 / (1u64 << 53) as f64);
    }
    out
}

both_backends!(numbers_and_json_round_trip_exactly);
async fn numbers_and_json_round_trip_exactly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let values = doubles(300);
    // Doubles as Float arguments, written inline (the literal parser) and as variables.
    let steps: Vec<Value> = values
        .iter()
        .take(150)
        .map(|v| json!({ "actionType": "click", "aiConfidence": v }))
        .collect();
    let wf = create_workflow(&server, token, json!({ "name": "Floats", "steps": steps })).await;
    let inline: Vec<String> = values[150..]
        .iter()
        .map(|v| format!("{{ actionType: \"click\", aiConfidence: {v:?} }}"))
        .collect();
    let query = format!(
        "mutation {{ createWorkflow(input: {{ name: \"Inline\", steps: [{}] }}) {{ id }} }}",
        inline.join(", ")
    );
    let inline_wf = ok(&server, token, &query, json!({})).await;
    let mut stored = Vec::new();
    for id in [
        str_field(&wf, "id"),
        str_field(&inline_wf["createWorkflow"], "id"),
    ] {
        let data = ok(
            &server,
            token,
            "query($id: ID!) { workflow(id: $id) { steps { aiConfidence } } }",
            json!({ "id": id }),
        )
        .await;
        for step in data["workflow"]["steps"].as_array().unwrap() {
            stored.push(step["aiConfidence"].as_f64().unwrap());
        }
    }
    for (sent, got) in values.iter().zip(&stored) {
        assert_eq!(
            sent.to_bits(),
            got.to_bits(),
            "sent {sent:?}, stored {got:?}"
        );
    }
    // JSON documents: doubles, integers at the 64-bit edges, key order, unicode.
    let document = json!({
        "zeta": 0.6999999999999999, "alpha": 0.9999999999999999, "mid": 1e-7,
        "max": u64::MAX, "min": i64::MIN, "big": 9_007_199_254_740_993_u64,
        "nested": { "b": [1, 2.5, -0.0, 1e300], "a": "Ém\u{1F600}" }
    });
    let sent = document.to_string();
    let created = create_workflow(
        &server,
        token,
        json!({ "name": "Doc", "steps": [{ "actionType": "click", "selectors": document }] }),
    )
    .await;
    let data = ok(
        &server,
        token,
        "query($id: ID!) { workflow(id: $id) { steps { selectors } } }",
        json!({ "id": str_field(&created, "id") }),
    )
    .await;
    let got = data["workflow"]["steps"][0]["selectors"].to_string();
    assert_eq!(got, sent, "the document came back changed");
}

// ---------------------------------------------------------------------------
// Finding 6: health rules respect the status a person set
// ---------------------------------------------------------------------------

both_backends!(health_rules_leave_a_draft_alone);
async fn health_rules_leave_a_draft_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    for person_status in ["DRAFT", "PROCESSING"] {
        let (workflow, steps) = active_workflow(&server, token, person_status, 1).await;
        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(str_field(&start_run(&server, token, &workflow).await, "id"));
        }
        // ACTIVE cannot become PROCESSING directly; a person takes it back to DRAFT first.
        if person_status == "PROCESSING" {
            let resp = update_workflow_try(&server, token, &workflow, "DRAFT").await;
            assert!(resp["errors"].is_null(), "{resp:#}");
        }
        let resp = update_workflow_try(&server, token, &workflow, person_status).await;
        assert!(resp["errors"].is_null(), "{resp:#}");
        // A low-confidence healing of a run already going does not put it up for review...
        let low = json!({ "status": "HEALED_AI", "healingConfidence": 0.2 });
        report_step(&server, token, &runs[0], &steps[0], low).await;
        let status = workflow_status(&server, token, &workflow).await;
        assert_eq!(
            status, person_status,
            "a low-confidence healing overrode {person_status}"
        );
        // ...three failures do not break it, and a straggler's success does not activate it.
        for run in &runs[..3] {
            finish_run(&server, token, run, "FAILED", Some("boom")).await;
        }
        let status = workflow_status(&server, token, &workflow).await;
        assert_eq!(
            status, person_status,
            "three failures overrode {person_status}"
        );
        finish_run(&server, token, &runs[3], "SUCCEEDED", None).await;
        let status = workflow_status(&server, token, &workflow).await;
        assert_eq!(status, person_status, "a success overrode {person_status}");
    }
}

async fn update_workflow_try(server: &TestServer, token: &str, id: &str, status: &str) -> Value {
    server
        .gql(
            "mutation($id: ID!, $s: WorkflowStatus!) { updateWorkflow(id: $id, input: { status: $s }) { id } }",
            json!({ "id": id, "s": status }),
            Some(token),
        )
        .await
}

async fn workflow_status(server: &TestServer, token: &str, id: &str) -> String {
    let data = ok(
        server,
        token,
        "query($id: ID!) { workflow(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    str_field(&data["workflow"], "status")
}

// ---------------------------------------------------------------------------
// Finding 7: the backends answer the same
// ---------------------------------------------------------------------------

both_backends!(backends_refuse_and_find_the_same);
async fn backends_refuse_and_find_the_same(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Émile's flow", 1).await;
    // NUL characters: refused by field on both.
    let nul = "a\u{0}b";
    let resp = server
        .gql(
            "mutation($id: ID!, $d: String) { updateWorkflow(id: $id, input: { description: $d }) { id } }",
            json!({ "id": workflow, "d": nul }),
            Some(token),
        )
        .await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("BAD_USER_INPUT"),
        "{resp:#}"
    );
    let resp =
        common::fixtures::try_update_step(&server, token, &steps[0], json!({ "fieldLabel": nul }))
            .await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("BAD_USER_INPUT"),
        "{resp:#}"
    );
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    for outcome in [
        json!({ "status": "FAILED", "errorMessage": nul }),
        json!({ "status": "SUCCESS", "idempotencyKey": nul }),
    ] {
        let resp = common::runs::try_report_step(&server, token, &run, &steps[0], outcome).await;
        assert_eq!(
            error_code(&resp).as_deref(),
            Some("BAD_USER_INPUT"),
            "{resp:#}"
        );
    }
    let resp = server
        .gql(
            "mutation($id: ID!, $r: String) { cancelRun(runId: $id, reason: $r) { id } }",
            json!({ "id": run, "r": nul }),
            Some(token),
        )
        .await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("BAD_USER_INPUT"),
        "{resp:#}"
    );
    // Search folds case beyond ASCII, on both.
    for search in ["Émile", "émile", "ÉMILE", "mile's"] {
        let data = ok(
            &server,
            token,
            "query($s: String) { workflows(filter: { search: $s }) { totalCount } }",
            json!({ "s": search }),
        )
        .await;
        assert_eq!(data["workflows"]["totalCount"], 1, "search {search:?}");
    }
    // A bound finer than the stored microseconds compares like the stored value.
    let data = ok(
        &server,
        token,
        "query($id: ID!) { workflow(id: $id) { updatedAt } }",
        json!({ "id": workflow }),
    )
    .await;
    let updated = common::parse_datetime(&data["workflow"]["updatedAt"]);
    let finer = (updated + chrono::TimeDelta::nanoseconds(300))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let data = ok(
        &server,
        token,
        "query($t: DateTime) { workflows(filter: { updatedSince: $t }) { totalCount } }",
        json!({ "t": finer }),
    )
    .await;
    assert_eq!(
        data["workflows"]["totalCount"], 0,
        "{finer} is after {updated}"
    );
    // Names sort the same on both: by code point.
    for name in ["b flow", "B flow", "a flow", "Z flow", "é flow"] {
        simple_workflow(&server, token, name, 1).await;
    }
    let data = ok(
        &server,
        token,
        "{ workflows(first: 100, orderBy: { field: NAME, direction: ASC }) { nodes { name } } }",
        json!({}),
    )
    .await;
    let names: Vec<String> = data["workflows"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| str_field(n, "name"))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "names in code-point order");
}

both_backends!(reports_racing_a_workflow_deletion_are_not_found);
async fn reports_racing_a_workflow_deletion_are_not_found(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let admin: Arc<str> = acme.admin_token.as_str().into();
    for round in 0..5 {
        let (workflow, steps) =
            active_workflow(&server, &token, &format!("Doomed {round}"), 2).await;
        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(str_field(
                &start_run(&server, &token, &workflow).await,
                "id",
            ));
        }
        let mut tasks = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let (server, token, run, step) = (
                server.clone(),
                token.clone(),
                run.clone(),
                steps[i % 2].clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers.push(
                        common::runs::try_report_step(
                            &server,
                            &token,
                            &run,
                            &step,
                            outcome("FAILED"),
                        )
                        .await,
                    );
                }
                answers
            }));
        }
        let deleted = server
            .gql(
                "mutation($id: ID!) { deleteWorkflow(id: $id) }",
                json!({ "id": workflow }),
                Some(&admin),
            )
            .await;
        assert!(deleted["errors"].is_null(), "{deleted:#}");
        for task in tasks {
            for answer in task.await.unwrap() {
                if let Some(code) = code_not_internal(&answer, "reportStep racing deleteWorkflow") {
                    assert_eq!(code, "NOT_FOUND", "{answer:#}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Finding 8: a deadlock is retried, never answered INTERNAL
// ---------------------------------------------------------------------------

// The lock order keeps the server's own write paths from deadlocking each other, so the
// tests above never reach the retry. Here a session outside the server takes the locks of
// `finishRun` (run, then workflow) in the opposite order: PostgreSQL detects the deadlock
// after `deadlock_timeout` (1 s) in the server's transaction, which waited first, and
// aborts it. The server runs it again once the other session is gone and answers success.
// (SQLite has a single writer: no deadlocks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_is_retried() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    if !Backend::Postgres.available().await {
        return;
    }
    let server = Arc::new(TestServer::start(Backend::Postgres).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let (workflow, _) = active_workflow(&server, &token, "Contended", 1).await;
    let run = str_field(&start_run(&server, &token, &workflow).await, "id");

    let mut other = AsyncPgConnection::establish(&server.database_url())
        .await
        .expect("connect to the server's database");
    other
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM workflows WHERE id = {} FOR UPDATE;",
            lit(&workflow)
        ))
        .await
        .unwrap();
    // The server locks the run, then waits for the workflow...
    let finish = {
        let (server, token, run) = (server.clone(), token.clone(), run.clone());
        tokio::spawn(async move {
            common::runs::try_finish_run(&server, &token, &run, "SUCCEEDED", None).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...and this session now waits for the run: a cycle. PostgreSQL aborts the server's
    // transaction (it waited first), which releases the run to this session.
    let started = std::time::Instant::now();
    other
        .batch_execute(&format!(
            "SELECT 1 FROM runs WHERE id = {} FOR UPDATE;",
            lit(&run)
        ))
        .await
        .expect("this session gets the run once the server's transaction is aborted");
    let waited = started.elapsed();
    other.batch_execute("ROLLBACK").await.unwrap();
    let resp = finish.await.unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "no deadlock happened (the run was free after {waited:?})"
    );
    assert!(
        resp["errors"].is_null(),
        "a deadlocked finishRun was not retried: {resp:#}"
    );
    let data = ok(
        &server,
        &token,
        "query($id: ID!, $w: ID!) { run(id: $id) { status } workflow(id: $w) { totalUses } }",
        json!({ "id": run, "w": workflow }),
    )
    .await;
    assert_eq!(data["run"]["status"], "SUCCEEDED", "{data:#}");
    assert_eq!(data["workflow"]["totalUses"], 1, "counted once: {data:#}");
}

// ---------------------------------------------------------------------------
// A retried report racing its original
// ---------------------------------------------------------------------------

// On PostgreSQL a report is one statement, whose reads share the snapshot taken before it
// waited for the run's lock. Here a session outside the server plays the original report:
// it holds the run, records the log under the key and commits while the retry waits. The
// retry must then find that log (the unique index refuses a second one) and answer it as
// a duplicate, counting nothing. Then the same with several retries at once. (SQLite's
// single writer cannot interleave them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_for_its_original_is_answered_as_a_duplicate() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    if !Backend::Postgres.available().await {
        return;
    }
    let server = Arc::new(TestServer::start(Backend::Postgres).await);
    let acme = team(&server, "Acme").await;
    let token: Arc<str> = acme.member_token.as_str().into();
    let (workflow, steps) = active_workflow(&server, &token, "Retried", 1).await;
    let run = str_field(&start_run(&server, &token, &workflow).await, "id");
    let original = new_id();

    let mut other = AsyncPgConnection::establish(&server.database_url())
        .await
        .expect("connect to the server's database");
    other
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM runs WHERE id = {run} FOR UPDATE; \
             INSERT INTO health_logs (id, company_id, workflow_id, run_id, step_id, \
               idempotency_key, status, created_at) \
             VALUES ({original}, {company}, {workflow}, {run}, {step}, 'attempt-1', 'success', \
               (now() AT TIME ZONE 'UTC')); \
             UPDATE runs SET steps_completed = steps_completed + 1, version = version + 1, \
               updated_at = (now() AT TIME ZONE 'UTC') WHERE id = {run};",
            run = lit(&run),
            original = lit(&original),
            company = lit(&acme.company_id),
            workflow = lit(&workflow),
            step = lit(&steps[0]),
        ))
        .await
        .unwrap();
    let retry = |status: &'static str| {
        let (server, token, run, step) =
            (server.clone(), token.clone(), run.clone(), steps[0].clone());
        tokio::spawn(async move {
            common::runs::try_report_step(
                &server,
                &token,
                &run,
                &step,
                json!({ "status": status, "idempotencyKey": "attempt-1" }),
            )
            .await
        })
    };
    let retries = [retry("FAILED"), retry("SUCCESS"), retry("FAILED")];
    // The retries are waiting for the run's lock when the original commits.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    other.batch_execute("COMMIT").await.unwrap();
    for retry in retries {
        let resp = retry.await.unwrap();
        assert!(resp["errors"].is_null(), "{resp:#}");
        let report = &resp["data"]["reportStep"];
        assert_eq!(report["duplicate"], true, "{report:#}");
        assert_eq!(report["healthLog"]["id"], original.as_str(), "{report:#}");
        assert_eq!(report["healthLog"]["status"], "SUCCESS", "{report:#}");
        assert_eq!(report["run"]["stepsCompleted"], 1, "{report:#}");
        assert_eq!(report["run"]["stepsFailed"], 0, "{report:#}");
    }
    assert_eq!(
        server
            .sql_count(&format!("health_logs WHERE run_id = {}", lit(&run)))
            .await,
        1
    );
}
