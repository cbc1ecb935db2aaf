//! Faults the server must survive: SIGKILL in the middle of a burst of step reports,
//! many concurrent writers (SQLite's single writer above all), graceful shutdown on
//! SIGTERM, and PostgreSQL going away and coming back while the server is under load.
//!
//! Every test bounds its own waits and stops by itself within about a minute.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::{Endpoint, PrivateCluster, Reply, SlowRequest, connection_refused};
use common::fixtures::{step_input, team};
use common::realtime::{RawSocket, Subscriber, field, run_updated_query, runs_updated_query};
use common::runs::{active_workflow, poll_until, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

/// `reportStep` with the fields these tests look at.
const REPORT: &str = "mutation($run: ID!, $step: ID!, $outcome: StepOutcomeInput!) { \
     reportStep(runId: $run, stepId: $step, outcome: $outcome) { \
       duplicate run { id stepsCompleted stepsFailed stepsHealed } healthLog { id status } } }";

/// A run with its counters and every health log status (at most 100 logs).
const RUN_WITH_LOGS: &str = "query($id: ID!) { run(id: $id) { id status stepsCompleted \
     stepsFailed stepsHealed healthLogs(first: 100) { totalCount nodes { id status } } } }";

/// Statuses cycled through by the reports: each moves a different counter.
const STATUSES: [&str; 3] = ["SUCCESS", "FAILED", "HEALED_DETERMINISTIC"];

/// One step report a test sends, identified by its idempotency key.
#[derive(Debug, Clone)]
struct Report {
    run: String,
    step: String,
    key: String,
    status: &'static str,
}

impl Report {
    fn variables(&self) -> Value {
        let mut outcome = json!({ "status": self.status, "idempotencyKey": self.key });
        if self.status.starts_with("HEALED") {
            outcome["healingConfidence"] = json!(0.95);
        }
        json!({ "run": self.run, "step": self.step, "outcome": outcome })
    }
}

/// `count` reports per run, interleaved across the runs, cycling over steps and statuses.
fn reports(runs: &[String], steps: &[String], count: usize, tag: &str) -> Vec<Report> {
    let mut all = Vec::new();
    for i in 0..count {
        for (r, run) in runs.iter().enumerate() {
            all.push(Report {
                run: run.clone(),
                step: steps[i % steps.len()].clone(),
                key: format!("{tag}-{r}-{i}"),
                status: STATUSES[(i + r) % STATUSES.len()],
            });
        }
    }
    all
}

/// Sends every report with `workers` concurrent tasks and returns each with its reply.
/// `acked` counts the acknowledged ones as they come in.
async fn send_all(
    endpoint: &Endpoint,
    token: &str,
    reports: Vec<Report>,
    workers: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<(Report, Reply)> {
    let queue = Arc::new(Mutex::new(VecDeque::from(reports)));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (queue, results, acked) = (queue.clone(), results.clone(), acked.clone());
        let (endpoint, token) = (endpoint.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(report) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let reply = endpoint
                    .post(REPORT, report.variables(), Some(&token))
                    .await;
                if reply.ok_data().is_some() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                results.lock().unwrap().push((report, reply));
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(45), task)
            .await
            .expect("report workers finish within 45 s")
            .expect("report worker panicked");
    }
    std::mem::take(&mut *results.lock().unwrap())
}

/// Reads a run and asserts its counters equal the counts of its recorded health logs.
/// Returns the ids of the logs.
async fn assert_consistent_run(server: &TestServer, token: &str, run_id: &str) -> Vec<String> {
    let data = server
        .gql_ok(RUN_WITH_LOGS, json!({ "id": run_id }), Some(token))
        .await;
    let run = &data["run"];
    let logs = run["healthLogs"]["nodes"].as_array().unwrap().clone();
    assert_eq!(
        run["healthLogs"]["totalCount"].as_u64(),
        Some(logs.len() as u64),
        "more health logs than one page: {run:#}"
    );
    let count = |wanted: &[&str]| {
        logs.iter()
            .filter(|l| wanted.contains(&l["status"].as_str().unwrap_or_default()))
            .count() as i64
    };
    let completed = count(&["SUCCESS", "HEALED_DETERMINISTIC", "HEALED_AI"]);
    let healed = count(&["HEALED_DETERMINISTIC", "HEALED_AI"]);
    let failed = count(&["FAILED"]);
    assert_eq!(
        (
            run["stepsCompleted"].as_i64(),
            run["stepsHealed"].as_i64(),
            run["stepsFailed"].as_i64()
        ),
        (Some(completed), Some(healed), Some(failed)),
        "run {run_id}: counters (completed, healed, failed) disagree with its {} health logs",
        logs.len()
    );
    logs.iter().map(|l| str_field(l, "id")).collect()
}

// ---------------------------------------------------------------------------
// 1. SIGKILL in the middle of a burst of reportStep
// ---------------------------------------------------------------------------

async fn sigkill_during_report_burst(backend: Backend) {
    const RUNS: usize = 4;
    const PER_RUN: usize = 60;
    let began = Instant::now();
    let mut server = TestServer::start(backend).await;
    let team = team(&server, "Killco").await;
    let token = team.admin_token.clone();
    let (workflow, steps) = active_workflow(&server, &token, "Burst", 3).await;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        runs.push(str_field(
            &start_run(&server, &token, &workflow).await,
            "id",
        ));
    }
    let all = reports(&runs, &steps, PER_RUN, "burst");
    let total = all.len();

    // The burst, and a SIGKILL once a third of it has been acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (endpoint, token, acked, all) =
            (server.endpoint(), token.clone(), acked.clone(), all.clone());
        tokio::spawn(async move { send_all(&endpoint, &token, all, 16, acked).await })
    };
    poll_until(
        Duration::from_secs(30),
        "a third of the burst acknowledged",
        async || (acked.load(Ordering::SeqCst) >= total / 3).then_some(()),
    )
    .await;
    server.signal("KILL");
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let results = tokio::time::timeout(Duration::from_secs(50), burst)
        .await
        .expect("the burst ends after the kill")
        .expect("burst task");
    assert_eq!(results.len(), total);

    // Acknowledged: HTTP 200 with data. Anything else the server answered is a bug; no
    // answer at all (the process died) leaves the report unacknowledged.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut unacknowledged = Vec::new();
    for (report, reply) in &results {
        if let Some(data) = reply.ok_data() {
            assert_eq!(data["reportStep"]["duplicate"], false, "{data:#}");
            acknowledged.insert(
                report.key.clone(),
                str_field(&data["reportStep"]["healthLog"], "id"),
            );
        } else if let Reply::Transport(_) = reply {
            unacknowledged.push(report.clone());
        } else {
            server.fail_with(&format!(
                "reportStep {} got an answer that is not a success: {reply:?}",
                report.key
            ));
        }
    }
    assert!(
        !unacknowledged.is_empty(),
        "the kill came too late: every report was acknowledged"
    );

    server.restart().await;

    // Every acknowledged report survived; no run is half-written.
    let mut stored = BTreeSet::new();
    for run in &runs {
        stored.extend(assert_consistent_run(&server, &token, run).await);
    }
    for (key, log) in &acknowledged {
        assert!(
            stored.contains(log),
            "acknowledged report {key} (health log {log}) is gone after SIGKILL"
        );
    }
    let survived_unacked = stored.len() - acknowledged.len();

    // Retrying the unacknowledged reports with their keys records each exactly once...
    let endpoint = server.endpoint();
    let retried = send_all(
        &endpoint,
        &token,
        unacknowledged.clone(),
        8,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let mut duplicates_on_retry = 0;
    for (report, reply) in &retried {
        let Some(data) = reply.ok_data() else {
            server.fail_with(&format!("retry of {} failed: {reply:?}", report.key));
        };
        if data["reportStep"]["duplicate"] == true {
            duplicates_on_retry += 1;
        }
    }
    assert_eq!(
        duplicates_on_retry, survived_unacked,
        "retries seen as duplicates should be exactly the unacknowledged reports that had \
         been committed"
    );
    // ...and now every key is a duplicate answered with its original log.
    let again = send_all(
        &endpoint,
        &token,
        all.clone(),
        8,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    for (report, reply) in &again {
        let Some(data) = reply.ok_data() else {
            server.fail_with(&format!("second retry of {} failed: {reply:?}", report.key));
        };
        assert_eq!(
            data["reportStep"]["duplicate"], true,
            "{}: {data:#}",
            report.key
        );
        if let Some(original) = acknowledged.get(&report.key) {
            assert_eq!(
                data["reportStep"]["healthLog"]["id"].as_str(),
                Some(original.as_str()),
                "{}: a duplicate must answer with the original log",
                report.key
            );
        }
    }
    for run in &runs {
        let logs = assert_consistent_run(&server, &token, run).await;
        assert_eq!(logs.len(), PER_RUN, "run {run}");
    }
    let run_list = runs
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let mut keys = server
        .sql_strings(&format!(
            "SELECT idempotency_key AS v FROM health_logs WHERE run_id IN ({run_list})"
        ))
        .await;
    keys.sort();
    let mut expected: Vec<String> = all.iter().map(|r| r.key.clone()).collect();
    expected.sort();
    assert_eq!(keys, expected, "each idempotency key recorded exactly once");
    eprintln!(
        "{backend:?}: {total} reports, {acked_at_kill} acknowledged at the kill, {} in the end \
         before restart, {survived_unacked} committed but unacknowledged; {:.1?}",
        acknowledged.len(),
        began.elapsed()
    );
}
both_backends!(sigkill_during_report_burst);

// ---------------------------------------------------------------------------
// 2. Concurrent writers
// ---------------------------------------------------------------------------

async fn concurrent_writers(backend: Backend) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 10;
    let began = Instant::now();
    let server = TestServer::start(backend).await;
    let team = team(&server, "Writers").await;
    let token = team.admin_token.clone();
    let (workflow, steps) = active_workflow(&server, &token, "Shared", 3).await;
    let run = str_field(&start_run(&server, &token, &workflow).await, "id");
    let (edited, _) = active_workflow(&server, &token, "Edited", 1).await;
    let workflows_before = server
        .sql_count(&format!(
            "workflows WHERE company_id = '{}'",
            team.company_id
        ))
        .await;

    // Each task runs a mix of mutations, all of which write: createWorkflow, reportStep on
    // one shared run, startRun, updateWorkflow and addStep on one shared workflow.
    let endpoint = server.endpoint();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (endpoint, token) = (endpoint.clone(), token.clone());
        let (workflow, edited, run, steps) =
            (workflow.clone(), edited.clone(), run.clone(), steps.clone());
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for i in 0..PER_TASK {
                let (what, reply) = match (t + i) % 5 {
                    0 => (
                        "createWorkflow",
                        endpoint
                            .post(
                                "mutation($input: CreateWorkflowInput!) { \
                                   createWorkflow(input: $input) { id steps { id } } }",
                                json!({ "input": {
                                    "name": format!("Concurrent {t}-{i}"),
                                    "steps": [step_input("click", &format!("c{t}-{i}"))],
                                } }),
                                Some(&token),
                            )
                            .await,
                    ),
                    1 => {
                        let report = Report {
                            run: run.clone(),
                            step: steps[i % steps.len()].clone(),
                            key: format!("writer-{t}-{i}"),
                            status: STATUSES[i % STATUSES.len()],
                        };
                        (
                            "reportStep",
                            endpoint
                                .post(REPORT, report.variables(), Some(&token))
                                .await,
                        )
                    }
                    2 => (
                        "startRun",
                        endpoint
                            .post(
                                "mutation($id: ID!) { startRun(workflowId: $id) { id } }",
                                json!({ "id": workflow }),
                                Some(&token),
                            )
                            .await,
                    ),
                    3 => (
                        "updateWorkflow",
                        endpoint
                            .post(
                                "mutation($id: ID!, $input: UpdateWorkflowInput!) { \
                                   updateWorkflow(id: $id, input: $input) { id name } }",
                                json!({ "id": edited, "input": {
                                    "description": format!("edited by {t}-{i}"),
                                } }),
                                Some(&token),
                            )
                            .await,
                    ),
                    _ => (
                        "addStep",
                        endpoint
                            .post(
                                "mutation($id: ID!, $input: StepInput!) { \
                                   addStep(workflowId: $id, input: $input) { id stepNumber } }",
                                json!({ "id": edited,
                                        "input": step_input("type", &format!("a{t}-{i}")) }),
                                Some(&token),
                            )
                            .await,
                    ),
                };
                replies.push((what, t, i, reply));
            }
            replies
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.extend(
            tokio::time::timeout(Duration::from_secs(45), task)
                .await
                .expect("writers finish within 45 s")
                .expect("writer panicked"),
        );
    }
    let failures: Vec<String> = replies
        .iter()
        .filter(|(_, _, _, reply)| reply.ok_data().is_none())
        .map(|(what, t, i, reply)| format!("{what} ({t}-{i}): {reply:?}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{backend:?}: {} of {} concurrent mutations failed:\n{}",
        failures.len(),
        replies.len(),
        failures.join("\n")
    );
    let count = |name: &str| replies.iter().filter(|(w, ..)| *w == name).count() as i64;

    // Every write is there.
    let company = &team.company_id;
    assert_eq!(
        server
            .sql_count(&format!("workflows WHERE company_id = '{company}'"))
            .await,
        workflows_before + count("createWorkflow")
    );
    assert_eq!(
        server
            .sql_count(&format!("health_logs WHERE run_id = '{run}'"))
            .await,
        count("reportStep")
    );
    assert_consistent_run(&server, &token, &run).await;
    assert_eq!(
        server
            .sql_count(&format!("runs WHERE workflow_id = '{workflow}'"))
            .await,
        1 + count("startRun")
    );
    let numbers = server
        .sql_strings(&format!(
            "SELECT CAST(step_number AS TEXT) AS v FROM steps WHERE workflow_id = '{edited}'"
        ))
        .await;
    let mut numbers: Vec<i64> = numbers.iter().map(|n| n.parse().unwrap()).collect();
    numbers.sort_unstable();
    let dense: Vec<i64> = (1..=1 + count("addStep")).collect();
    assert_eq!(numbers, dense, "steps of the shared workflow stay dense");
    assert!(
        !server.log_tail().contains("database is locked"),
        "the server logged `database is locked`:\n{}",
        server.log_tail()
    );
    eprintln!(
        "{backend:?}: {} concurrent mutations from {TASKS} tasks, all succeeded; {:.1?}",
        replies.len(),
        began.elapsed()
    );
}
both_backends!(concurrent_writers);

/// Another process writing to the SQLite file (a second `stepwise` process, the CLI, an
/// operator's `sqlite3` shell) holds the write lock for a moment: the server's writers wait
/// for it (`busy_timeout`) instead of answering "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_outside_writer() {
    let server = TestServer::start(Backend::Sqlite).await;
    let team = team(&server, "Outsider").await;
    let token = team.admin_token.clone();
    let (workflow, steps) = active_workflow(&server, &token, "Locked", 2).await;
    let run = str_field(&start_run(&server, &token, &workflow).await, "id");

    let lock = server.hold_write_lock(&run).await;
    let endpoint = server.endpoint();
    let report = Report {
        run: run.clone(),
        step: steps[0].clone(),
        key: "outside-writer".to_owned(),
        status: "SUCCESS",
    };
    let reporting = {
        let (endpoint, token) = (endpoint.clone(), token.clone());
        tokio::spawn(async move {
            endpoint
                .post(REPORT, report.variables(), Some(&token))
                .await
        })
    };
    // The report first (its transaction reads before it writes), then a create.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let creating = {
        let (endpoint, token) = (endpoint.clone(), token.clone());
        tokio::spawn(async move {
            endpoint
                .post(
                    "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
                    json!({ "input": { "name": "While locked" } }),
                    Some(&token),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    lock.release().await;
    for (what, task) in [("reportStep", reporting), ("createWorkflow", creating)] {
        let reply = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the mutation answers")
            .expect("request task");
        if reply.ok_data().is_none() {
            server.fail_with(&format!(
                "{what} failed while another process held the SQLite write lock for 1 s \
                 (busy_timeout is 5 s): {reply:?}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Graceful shutdown on SIGTERM
// ---------------------------------------------------------------------------

async fn sigterm_shuts_down_gracefully(backend: Backend) {
    let began = Instant::now();
    let mut server = TestServer::start(backend).await;
    let team = team(&server, "Termco").await;
    let token = team.admin_token.clone();
    let (workflow, steps) = active_workflow(&server, &token, "Drain", 2).await;
    let run = str_field(&start_run(&server, &token, &workflow).await, "id");

    // An open subscription.
    let mut socket = RawSocket::open(&server).await;
    socket.init(Some(&token)).await;
    socket.subscribe("run", &run_updated_query(), json!({ "runId": run }));
    let first = socket.expect_message_skipping_ka().await;
    assert_eq!(first["type"], "next", "{first}");

    // In-flight requests. Over HTTP: requests whose body is still arriving. On PostgreSQL
    // also in the database: step reports waiting for a row lock held outside the server.
    // (On SQLite an outside write lock makes the server fail at once, see
    // `sqlite_outside_writer`.)
    let mut slow = Vec::new();
    for i in 0..2 {
        let report = Report {
            run: run.clone(),
            step: steps[i % steps.len()].clone(),
            key: format!("slow-{i}"),
            status: "SUCCESS",
        };
        slow.push(SlowRequest::start(server.addr, REPORT, report.variables(), &token).await);
    }
    let lock = match backend {
        Backend::Postgres => Some(server.hold_write_lock(&run).await),
        Backend::Sqlite => None,
    };
    let endpoint = server.endpoint();
    let mut in_flight = Vec::new();
    if lock.is_some() {
        for i in 0..3 {
            let report = Report {
                run: run.clone(),
                step: steps[i % steps.len()].clone(),
                key: format!("locked-{i}"),
                status: "SUCCESS",
            };
            let (endpoint, token) = (endpoint.clone(), token.clone());
            in_flight.push(tokio::spawn(async move {
                endpoint
                    .post(REPORT, report.variables(), Some(&token))
                    .await
            }));
        }
    }
    // Give everything time to reach the server (and block on the lock).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for request in &in_flight {
        assert!(!request.is_finished(), "a report finished despite the lock");
    }

    server.terminate();
    let terminated = Instant::now();

    // The WebSocket closes with 1001 Going Away.
    let close = loop {
        let event = socket.event_within(Duration::from_secs(10)).await;
        match event["event"].as_str() {
            Some("message") if event["json"]["type"] == "ka" => {}
            Some("close") => break event,
            _ => panic!("expected the socket to close with 1001, got {event}"),
        }
    };
    assert_eq!(close["code"], 1001, "close on SIGTERM: {close}");

    // New connections are refused while the in-flight requests are still running.
    poll_until(
        Duration::from_secs(5),
        "new connections refused",
        async || connection_refused(server.addr).await.then_some(()),
    )
    .await;
    assert!(
        server.is_running(),
        "the server exited with requests still in flight:\n{}",
        server.log_tail()
    );

    // The in-flight requests complete successfully: the slow bodies once they are sent,
    // the locked reports once the lock goes.
    if let Some(lock) = lock {
        lock.release().await;
    }
    for request in slow {
        let reply = request.finish(Duration::from_secs(20)).await;
        let Some(data) = reply.ok_data() else {
            server.fail_with(&format!(
                "in-flight slow request failed on shutdown: {reply:?}"
            ));
        };
        assert_eq!(data["reportStep"]["duplicate"], false, "{data:#}");
    }
    let stored = 2 + in_flight.len() as i64;
    for request in in_flight {
        let reply = tokio::time::timeout(Duration::from_secs(20), request)
            .await
            .expect("in-flight request completes")
            .expect("request task");
        let Some(data) = reply.ok_data() else {
            server.fail_with(&format!("in-flight request failed on shutdown: {reply:?}"));
        };
        assert_eq!(data["reportStep"]["duplicate"], false, "{data:#}");
    }
    let status = server.wait_exit(Duration::from_secs(15)).await;
    let Some(status) = status else {
        server.fail_with("the server did not exit within 15 s of SIGTERM");
    };
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        server.log_tail()
    );
    let shutdown = terminated.elapsed();
    assert!(
        connection_refused(server.addr).await,
        "still accepting after exit"
    );
    assert_eq!(
        server
            .sql_count(&format!("health_logs WHERE run_id = '{run}'"))
            .await,
        stored,
        "the drained reports are stored"
    );
    assert!(!server.log_has_panic(), "{}", server.log_tail());
    eprintln!(
        "{backend:?}: SIGTERM to exit {shutdown:.1?}, {stored} in-flight requests completed; {:.1?}",
        began.elapsed()
    );
}
both_backends!(sigterm_shuts_down_gracefully);

// ---------------------------------------------------------------------------
// 4. PostgreSQL restarted under load
// ---------------------------------------------------------------------------

const ACQUIRE_TIMEOUT_MS: u64 = 1000;
/// How much longer than the acquire timeout a request may take while the database is down.
const OUTAGE_MARGIN: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Sample {
    at: Instant,
    took: Duration,
    reply: Reply,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    if !PrivateCluster::available() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "PostgreSQL 15 binaries are missing (CI=true)"
        );
        eprintln!("SKIPPED: no PostgreSQL binaries for a private cluster");
        return;
    }
    let began = Instant::now();
    let mut cluster = PrivateCluster::start().await;
    let options = ServerOptions {
        database_url: Some(cluster.url()),
        env: vec![(
            "DATABASE_ACQUIRE_TIMEOUT_MS".to_owned(),
            ACQUIRE_TIMEOUT_MS.to_string(),
        )],
        ..ServerOptions::default()
    };
    let mut server = TestServer::start_on(cluster.test_db(), options).await;
    let mut sibling = server.start_sibling().await;
    let team = team(&server, "Outage").await;
    let token = team.admin_token.clone();
    let (workflow, _) = active_workflow(&server, &token, "Steady", 2).await;

    // Subscribers on both instances, live before the outage.
    let mut remote = Subscriber::connect(&sibling, Some(&token)).await;
    remote.subscribe(
        "runs",
        &runs_updated_query(),
        json!({ "workflowId": workflow }),
    );
    let mut local = Subscriber::connect(&server, Some(&token)).await;
    local.subscribe(
        "runs",
        &runs_updated_query(),
        json!({ "workflowId": workflow }),
    );
    for sub in [&mut remote, &mut local] {
        sub.until_live(&["runs"], async || {
            start_run(&server, &token, &workflow).await;
        })
        .await;
    }

    // Steady load: readers and one writer, each recording every request.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (endpoint, token, stop, samples) = (
            server.endpoint(),
            token.clone(),
            stop.clone(),
            samples.clone(),
        );
        let workflow = workflow.clone();
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                let reply = if worker == 0 {
                    endpoint
                        .post(
                            "mutation($id: ID!) { startRun(workflowId: $id) { id } }",
                            json!({ "id": workflow }),
                            Some(&token),
                        )
                        .await
                } else {
                    endpoint
                        .post(
                            "query($id: ID!) { workflow(id: $id) { id status \
                               steps { id } runs(first: 5) { totalCount } } }",
                            json!({ "id": workflow }),
                            Some(&token),
                        )
                        .await
                };
                samples.lock().unwrap().push(Sample {
                    at,
                    took: at.elapsed(),
                    reply,
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 20 } else { 50 })).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Down.
    cluster.stop().await;
    let stopped_at = Instant::now();
    let endpoint = server.endpoint();
    poll_until(
        Duration::from_secs(10),
        "/readyz answering 503",
        async || {
            (endpoint.get_status("/readyz").await == Ok(reqwest::StatusCode::SERVICE_UNAVAILABLE))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        endpoint.get_status("/readyz").await,
        Ok(reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "/readyz while PostgreSQL is down"
    );
    assert!(server.is_running(), "server died: {}", server.log_tail());
    assert!(sibling.is_running(), "sibling died");

    // Up again.
    cluster.restart().await;
    let restarted_at = Instant::now();
    poll_until(
        Duration::from_secs(15),
        "/readyz answering 200",
        async || {
            (endpoint.get_status("/readyz").await == Ok(reqwest::StatusCode::OK)).then_some(())
        },
    )
    .await;
    let ready_after = restarted_at.elapsed();
    let recovered = poll_until(Duration::from_secs(15), "requests succeeding", async || {
        let samples = samples.lock().unwrap();
        let recent: Vec<&Sample> = samples.iter().filter(|s| s.at > restarted_at).collect();
        (recent.len() >= 8
            && recent
                .iter()
                .rev()
                .take(8)
                .all(|s| s.reply.ok_data().is_some()))
        .then(|| restarted_at.elapsed())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        tokio::time::timeout(Duration::from_secs(25), task)
            .await
            .expect("load stops")
            .expect("load task");
    }

    // While it was down: clean GraphQL errors, never a hang, never a non-JSON answer.
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let limit = Duration::from_millis(ACQUIRE_TIMEOUT_MS) + OUTAGE_MARGIN;
    let mut failed = 0;
    let mut codes = BTreeSet::new();
    let mut slowest = Duration::ZERO;
    for sample in &samples {
        slowest = slowest.max(sample.took);
        assert!(
            sample.took <= limit,
            "a request took {:?} (limit {limit:?}): {:?}",
            sample.took,
            sample.reply
        );
        if sample.reply.ok_data().is_none() {
            failed += 1;
            assert!(
                sample.reply.is_graphql_error(),
                "a request failed without a GraphQL error: {:?}",
                sample.reply
            );
            codes.insert(sample.reply.error_code().unwrap_or_default());
            if let Reply::Json(_, body) = &sample.reply {
                let text = body.to_string();
                assert!(
                    !text.contains("connection") && !text.contains("refused"),
                    "internal details leaked to the client: {text}"
                );
            }
        }
    }
    assert!(failed > 0, "no request failed: the outage was not noticed");
    assert!(
        ready_after < Duration::from_secs(10) && recovered < Duration::from_secs(10),
        "recovery took too long: readyz {ready_after:?}, requests {recovered:?}"
    );

    // Events flow again: a run started on this instance reaches the subscribers of both
    // (the other one through the reconnected LISTEN bridge and this one's publisher).
    let mut delivered = None;
    for _ in 0..15 {
        let resp = server
            .gql(
                "mutation($id: ID!) { startRun(workflowId: $id) { id } }",
                json!({ "id": workflow }),
                Some(&token),
            )
            .await;
        let Some(id) = resp["data"]["startRun"]["id"].as_str().map(str::to_owned) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if wait_for_run(&mut remote, &id, Duration::from_secs(2)).await {
            delivered = Some(id);
            break;
        }
    }
    let Some(marker) = delivered else {
        panic!(
            "no runsUpdated event reached the other instance after PostgreSQL restarted\n\
             ----- sibling log -----\n{}",
            sibling.log_tail()
        );
    };
    assert!(
        wait_for_run(&mut local, &marker, Duration::from_secs(10)).await,
        "the local subscriber missed run {marker} after the restart"
    );

    assert!(server.is_running() && sibling.is_running());
    for (name, s) in [("server", &server), ("sibling", &sibling)] {
        assert!(!s.log_has_panic(), "{name} panicked:\n{}", s.log_tail());
    }
    remote.disconnect().await;
    local.disconnect().await;
    eprintln!(
        "postgres outage: {} requests, {failed} failed with codes {codes:?}, slowest {slowest:?}; \
         down {:.1?}; /readyz 200 after {ready_after:.1?}, requests ok after {recovered:.1?}; {:.1?}",
        samples.len(),
        restarted_at - stopped_at,
        began.elapsed()
    );
    drop(sibling);
    drop(server);
    drop(cluster);
}

/// Waits up to `limit` for a `runsUpdated` event about run `id`, skipping the others.
async fn wait_for_run(sub: &mut Subscriber, id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = sub.try_event_for("runs", left).await else {
            return false;
        };
        assert_eq!(event["event"], "next", "the subscription ended: {event}");
        let data = &event["payload"]["data"];
        if field(data, "runsUpdated")["run"]["id"] == id {
            return true;
        }
    }
}
