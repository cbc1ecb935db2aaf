//! N+1 guard: how many SQL statements a nested list query costs must not grow with the
//! page size. The server counts every statement it starts in `/metrics`
//! (`stepwise_db_statements_total`); each test has its own server, so only its own
//! requests move the counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

const COUNTER: &str = "stepwise_db_statements_total";

fn nested_query(first: usize) -> String {
    format!(
        "{{ workflows(first: {first}) {{ edges {{ node {{ id createdBy {{ name }} \
           steps {{ id screenshot {{ id }} editedBy {{ id }} }} }} }} }} }}"
    )
}

/// Statements the server ran for one request of `query` (checked to return `rows`
/// workflows with 3 steps and a screenshot each).
async fn statements_for(server: &TestServer, token: &str, query: &str, rows: usize) -> u64 {
    let before = server.metric(COUNTER).await;
    let data = ok(server, token, query, json!({})).await;
    let after = server.metric(COUNTER).await;
    let edges = data["workflows"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), rows, "{query}");
    for edge in edges {
        let node = &edge["node"];
        assert!(node["createdBy"]["name"].is_string(), "{node:#}");
        let steps = node["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{node:#}");
        for step in steps {
            assert!(
                step["screenshot"]["id"].is_string(),
                "every step has a screenshot: {step:#}"
            );
        }
        assert!(
            steps.iter().any(|s| s["editedBy"]["id"].is_string()),
            "one step of each workflow was edited: {node:#}"
        );
    }
    assert!(after >= before, "the counter went backwards");
    (after - before) as u64
}

both_backends!(nested_workflow_list_costs_the_same_for_5_and_50_rows);
async fn nested_workflow_list_costs_the_same_for_5_and_50_rows(backend: Backend) {
    // What is under test is how many batches a page costs, not how fast the debug build
    // enqueues 150 steps' keys on a machine busy with other tests: a wide batching window
    // keeps timing out of the count (production keeps the 1 ms default).
    let options = ServerOptions {
        env: vec![("STEPWISE_BATCH_WINDOW_US".into(), "50000".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let mut sql = String::new();
    for i in 0..60 {
        let (token, editor) = if i % 2 == 0 {
            (&acme.admin_token, &acme.member_id)
        } else {
            (&acme.member_token, &acme.admin_id)
        };
        let wf = create_workflow(
            &server,
            token,
            json!({ "name": format!("Flow {i:02}"), "steps": step_inputs("s", 3) }),
        )
        .await;
        let wf_id = str_field(&wf, "id");
        for (j, step) in step_ids(&wf).iter().enumerate() {
            let (shot, insert) = screenshot_sql(&ScreenshotRow {
                company_id: &acme.company_id,
                workflow_id: &wf_id,
                hash: &format!("hash-{i}-{j}"),
            });
            sql.push_str(&insert);
            sql.push_str(&attach_screenshot_sql(step, &shot));
            if j == 1 {
                sql.push_str(&format!(
                    "UPDATE steps SET edited_by = {}, edited_at = {} WHERE id = {};\n",
                    lit(editor),
                    ts_at(i),
                    lit(step)
                ));
            }
        }
    }
    server.sql(&sql).await;

    let token = &acme.member_token;
    let (q5, q50) = (nested_query(5), nested_query(50));
    // Warm up (connections opened, caches filled), then sample each size a few times.
    statements_for(&server, token, &q5, 5).await;
    statements_for(&server, token, &q50, 50).await;
    let mut samples5 = Vec::new();
    let mut samples50 = Vec::new();
    for _ in 0..5 {
        samples5.push(statements_for(&server, token, &q5, 5).await);
        samples50.push(statements_for(&server, token, &q50, 50).await);
    }
    // Loads of the same kind from different levels (authors of workflows and editors of
    // steps) may or may not share a batch, so a size's cost can vary by one; ten times the
    // rows must still never cost more than the small page does at its most.
    let d5 = samples5.iter().copied().max().unwrap();
    let d50 = samples50.iter().copied().min().unwrap();
    assert!(
        d5 > 0,
        "{COUNTER} did not move for a query that reads the database"
    );
    assert!(
        d50 <= d5,
        "the nested list ran {d50} statements for 50 workflows but at most {d5} for 5 (all \
         runs: 5 rows {samples5:?}, 50 rows {samples50:?}): the cost grows with the page size"
    );
    assert!(
        d50 < 12,
        "the nested list ran {d50} statements; expected a handful of batched loads"
    );
}

/// How far one request of `query` moves the counter.
async fn delta(server: &TestServer, token: &str, query: &str) -> f64 {
    let before = server.metric(COUNTER).await;
    let data: Value = ok(server, token, query, json!({})).await;
    let after = server.metric(COUNTER).await;
    assert!(data.is_object());
    after - before
}

both_backends!(statement_counter_moves_with_work);
/// The counter really counts: a query that loads more kinds of data costs more than one
/// that loads fewer, so the equality above is not an artefact of a frozen counter.
async fn statement_counter_moves_with_work(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.admin_token, "Flow", 2).await;
    let token = &acme.admin_token;
    // Warm up.
    delta(&server, token, "{ workflows { edges { node { id } } } }").await;
    let flat = delta(&server, token, "{ workflows { edges { node { id } } } }").await;
    let nested = delta(
        &server,
        token,
        "{ workflows { edges { node { id createdBy { id } steps { id editedBy { id } } } } } }",
    )
    .await;
    assert!(flat >= 1.0, "listing workflows ran no statement? ({flat})");
    assert!(
        nested > flat,
        "loading creators and steps too ran {nested} statements, listing alone {flat}"
    );
    let before = server.metric(COUNTER).await;
    update_step(
        &server,
        token,
        &str_field(&wf["steps"][0], "id"),
        json!({ "fieldLabel": "x" }),
    )
    .await;
    assert!(
        server.metric(COUNTER).await > before,
        "a write ran no statement?"
    );
}

both_backends!(status_change_subscribers_do_not_read_per_event);
/// A workflow status change costs the same statements with 1 or 60 `workflowStatusChanged`
/// subscribers: the event carries the workflow, nobody reads it again per subscriber.
async fn status_change_subscribers_do_not_read_per_event(backend: Backend) {
    use common::realtime::{Subscriber, workflow_status_changed_query};
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let wf = simple_workflow(&server, token, "Flow", 1).await;
    let id = str_field(&wf, "id");
    let mut status = ["ACTIVE", "DRAFT"].into_iter().cycle();
    let mut cost = Vec::new();
    for subscribers in [1usize, 60] {
        let ops: Vec<String> = (0..subscribers).map(|i| format!("s{i}")).collect();
        let query = workflow_status_changed_query();
        let specs: Vec<(&str, &str, Value)> = ops
            .iter()
            .map(|op| (op.as_str(), query.as_str(), json!({ "workflowId": id })))
            .collect();
        let mut sub = Subscriber::start(&server, Some(token), &specs);
        let names: Vec<&str> = ops.iter().map(String::as_str).collect();
        sub.until_live(&names, async || {
            set_status(&server, token, &id, status.next().unwrap()).await;
        })
        .await;
        // Let stragglers of the warm-up arrive before counting.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let before = server.metric(COUNTER).await;
        set_status(&server, token, &id, status.next().unwrap()).await;
        for op in &names {
            sub.expect_data(op).await;
        }
        cost.push(server.metric(COUNTER).await - before);
        sub.disconnect().await;
    }
    assert!(
        cost[1] <= cost[0] + 2.0,
        "a status change cost {} statements with 1 subscriber and {} with 60",
        cost[0],
        cost[1]
    );
}

both_backends!(nested_connections_cost_the_same_for_5_and_50_parents);
/// Connections under a list (each workflow's runs and logs, each run's logs) with their
/// counts are read for the whole list at once: 50 parents cost no more statements than 5.
async fn nested_connections_cost_the_same_for_5_and_50_parents(backend: Backend) {
    use common::runs::{active_workflow, outcome, report_step, start_run};
    let options = ServerOptions {
        env: vec![("STEPWISE_BATCH_WINDOW_US".into(), "50000".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    for i in 0..50 {
        let (workflow, steps) = active_workflow(&server, token, &format!("Flow {i:02}"), 1).await;
        if i % 5 == 0 {
            let run = str_field(&start_run(&server, token, &workflow).await, "id");
            report_step(&server, token, &run, &steps[0], outcome("SUCCESS")).await;
        }
    }
    let query = |first: usize| {
        format!(
            "{{ workflows(first: {first}) {{ edges {{ node {{ id \
               runs(first: 2) {{ totalCount edges {{ node {{ id \
                 healthLogs(first: 3) {{ totalCount edges {{ node {{ id }} }} }} }} }} }} \
               healthLogs(first: 2, filter: {{ status: [SUCCESS] }}) {{ totalCount \
                 edges {{ node {{ id status }} }} }} }} }} }} }}"
        )
    };
    let cost = async |first: usize| {
        let before = server.metric(COUNTER).await;
        let data = ok(&server, token, &query(first), json!({})).await;
        let after = server.metric(COUNTER).await;
        let edges = data["workflows"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), first);
        let runs: i64 = edges
            .iter()
            .map(|e| e["node"]["runs"]["totalCount"].as_i64().unwrap())
            .sum();
        let logs: i64 = edges
            .iter()
            .map(|e| e["node"]["healthLogs"]["totalCount"].as_i64().unwrap())
            .sum();
        assert_eq!(
            runs, logs,
            "one run with one successful report per fifth workflow"
        );
        after - before
    };
    cost(5).await;
    // Seven kinds of load (the page of workflows; their runs and logs, each a page and a
    // count; the runs' logs, a page and a count), each batched over all parents. Loads of
    // two levels that share a loader (the logs of workflows and of runs) may or may not
    // land in one batch window, depending on which timer fires first, so a request costs 7
    // to 10 statements whatever its size (seen on both backends, for 5 and for 50 parents
    // alike; comparing the two sizes failed by chance). A per-parent statement would cost
    // 50 or more for 50 parents.
    const MOST: f64 = 12.0;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        small.push(cost(5).await);
        large.push(cost(50).await);
    }
    assert!(
        small
            .iter()
            .chain(&large)
            .all(|&statements| statements <= MOST),
        "nested connections ran {large:?} statements for 50 workflows, {small:?} for 5 \
         (at most {MOST} whatever the number of parents)"
    );
}

both_backends!(a_report_costs_one_statement_on_postgres);
/// `reportStep` is one statement on PostgreSQL (a data-modifying CTE run on its own: no
/// BEGIN, no COMMIT), whoever reports and whatever the outcome, and a duplicate is
/// answered by that same statement. (It was 6 for an admin's report and 7 for a member's,
/// 4 and 5 for a duplicate.) A healing that sends the workflow to review still takes the
/// transaction, as every report does on SQLite.
async fn a_report_costs_one_statement_on_postgres(backend: Backend) {
    use common::runs::{active_workflow, start_run};
    // What an executor asks back: nothing that needs another read.
    let report_step =
        async |server: &TestServer, token: &str, run: &str, step: &str, outcome: Value| {
            ok(
                server,
                token,
                "mutation($run: ID!, $step: ID!, $outcome: StepOutcomeInput!) { \
               reportStep(runId: $run, stepId: $step, outcome: $outcome) { \
                 duplicate healthLog { id status } run { id status stepsCompleted } } }",
                json!({ "run": run, "step": step, "outcome": outcome }),
            )
            .await["reportStep"]
                .clone()
        };
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Flow", 2).await;
    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );
    // The fewest statements of a few tries: a credential re-check (every few seconds)
    // or a sweeper may fall into any one request.
    let cost = async |token: &str, outcome: Value, duplicate: bool| {
        let mut least = f64::MAX;
        for _ in 0..3 {
            let before = server.metric(COUNTER).await;
            let report = report_step(&server, token, &run, &steps[1], outcome.clone()).await;
            least = least.min(server.metric(COUNTER).await - before);
            assert_eq!(report["duplicate"], duplicate, "{report:#}");
        }
        least
    };
    // Warm up (connections opened, statements prepared).
    report_step(
        &server,
        &acme.admin_token,
        &run,
        &steps[0],
        json!({ "status": "SUCCESS" }),
    )
    .await;
    let mut counted = Vec::new();
    let mut duplicates = Vec::new();
    for (who, token) in [("admin", &acme.admin_token), ("member", &acme.member_token)] {
        counted.push((
            who,
            "success",
            cost(token, json!({ "status": "SUCCESS" }), false).await,
        ));
        let healed = json!({ "status": "HEALED_DETERMINISTIC", "healingConfidence": 0.99,
                             "healedSelectors": { "css": "#b" } });
        counted.push((who, "healed", cost(token, healed, false).await));
        let keyed = json!({ "status": "FAILED", "idempotencyKey": format!("k-{who}") });
        report_step(&server, token, &run, &steps[1], keyed.clone()).await;
        duplicates.push((who, "duplicate", cost(token, keyed, true).await));
    }
    let review = json!({ "status": "HEALED_AI", "healingConfidence": 0.1 });
    let transaction = cost(&acme.admin_token, review, false).await;
    if backend == Backend::Postgres {
        // A duplicate announces nothing: what it costs is the report's statement alone.
        for (who, what, statements) in &duplicates {
            assert_eq!(
                *statements, 1.0,
                "a {what} report by the {who} ran {statements} statements"
            );
        }
        // A counted report announces its log: the instance's log-stream tail then reads
        // what is new (once or twice, whoever wrote it), on the same counter.
        for (who, what, statements) in &counted {
            assert!(
                *statements <= 3.0,
                "a {what} report by the {who} ran {statements} statements: one for the \
                 report and at most two tail reads expected (all: {counted:?})"
            );
        }
        assert!(
            transaction > 3.0,
            "a healing sent to review takes the transaction ({transaction} statements)"
        );
    } else {
        // SQLite's single writer: the transaction of several statements, as before.
        for (who, what, statements) in counted.iter().chain(&duplicates) {
            assert!(
                *statements >= 4.0,
                "a {what} report by the {who} ran {statements} statements on SQLite"
            );
        }
    }
}
