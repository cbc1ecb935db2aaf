//! Three instances (A, B, C) on one PostgreSQL, sharing events through NATS JetStream and,
//! in the same scenario, through LISTEN/NOTIFY (issue 17, item 4):
//!
//! - a burst of runs written through A and B for two companies while C's subscribers
//!   watch: every acknowledged write of Acme reaches Acme's subscriber on C (each run's
//!   last acknowledged state, every acknowledged step report on `healthLogRecorded`),
//!   each run's states in order (its version never goes back), and nothing of Globex;
//!   Globex's subscriber hears only Globex;
//! - A is killed (SIGKILL) in the middle of the burst: what A acknowledged before it died
//!   still reaches C (a write is answered only once its events have left the instance);
//! - NATS is restarted (a private `nats-server`): writes go on meanwhile, and delivery
//!   resumes.
//!
//! PostgreSQL only: SQLite instances cannot share a database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::{Endpoint, PrivateNats, Reply};
use common::fixtures::{RUN_FIELDS, team};
use common::realtime::{Subscriber, field, health_log_recorded_query, runs_updated_query};
use common::runs::{active_workflow, report_fields, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

/// Runs per company per writing instance, and steps per run.
const RUNS: usize = 4;
const STEPS: usize = 4;

/// What the writers were told: per run, the last acknowledged `stepsCompleted` and whether
/// its finish was acknowledged; every acknowledged step report's log id.
#[derive(Default)]
struct Acknowledged {
    runs: HashMap<String, (i64, bool)>,
    logs: HashSet<String>,
}

type Shared = Arc<Mutex<Acknowledged>>;

/// One run written start to finish through `addr`, recording what was acknowledged; stops
/// at the first write that is not (its instance died).
async fn write_run(
    addr: SocketAddr,
    token: String,
    workflow: String,
    steps: Vec<String>,
    acks: Shared,
) {
    let endpoint = Endpoint::new(addr);
    let started = endpoint
        .post(
            &format!("mutation($id: ID!) {{ startRun(workflowId: $id) {{ {RUN_FIELDS} }} }}"),
            json!({ "id": workflow }),
            Some(&token),
        )
        .await;
    let Some(run) = started.ok_data().map(|d| str_field(&d["startRun"], "id")) else {
        return;
    };
    acks.lock().unwrap().runs.insert(run.clone(), (0, false));
    for step in &steps {
        let reply = endpoint
            .post(
                &format!(
                    "mutation($run: ID!, $step: ID!) {{ reportStep(runId: $run, stepId: $step, \
                       outcome: {{ status: SUCCESS }}) {{ {} }} }}",
                    report_fields()
                ),
                json!({ "run": run, "step": step }),
                Some(&token),
            )
            .await;
        let Some(data) = reply.ok_data() else {
            return;
        };
        let report = &data["reportStep"];
        let mut acks = acks.lock().unwrap();
        acks.logs.insert(str_field(&report["healthLog"], "id"));
        let completed = report["run"]["stepsCompleted"].as_i64().unwrap();
        acks.runs.insert(run.clone(), (completed, false));
    }
    let finished = endpoint
        .post(
            "mutation($run: ID!) { finishRun(runId: $run, status: SUCCEEDED) { status } }",
            json!({ "run": run }),
            Some(&token),
        )
        .await;
    if matches!(&finished, Reply::Json(..)) && finished.ok_data().is_some() {
        let mut acks = acks.lock().unwrap();
        let steps = acks.runs.get(&run).map_or(0, |r| r.0);
        acks.runs.insert(run, (steps, true));
    }
}

/// What C's subscriber saw of each run: its states in arrival order.
#[derive(Default)]
struct Seen {
    states: HashMap<String, Vec<(i64, String)>>,
    logs: Vec<String>,
}

impl Seen {
    fn take_run_update(&mut self, update: &Value) {
        let run = str_field(&update["run"], "id");
        let steps = update["run"]["stepsCompleted"].as_i64().unwrap();
        let status = str_field(&update["run"], "status");
        self.states.entry(run).or_default().push((steps, status));
    }

    /// Whether every acknowledged state of `acks` has been seen.
    fn covers(&self, acks: &Acknowledged) -> bool {
        acks.runs.iter().all(|(run, (steps, finished))| {
            self.states.get(run).is_some_and(|states| {
                states
                    .iter()
                    .any(|(s, status)| *s >= *steps && (!finished || status == "SUCCEEDED"))
            })
        }) && acks.logs.iter().all(|log| self.logs.contains(log))
    }
}

/// Reads C's subscriber until it has seen everything acknowledged (at most 60 s).
async fn collect(sub: &mut Subscriber, seen: &mut Seen, acks: &Acknowledged, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.covers(acks) {
        assert!(
            Instant::now() < deadline,
            "{what}: C missed acknowledged writes.\nacknowledged runs: {:?}\nseen: {:?}\nmissing logs: {:?}",
            acks.runs,
            seen.states,
            acks.logs
                .iter()
                .filter(|l| !seen.logs.contains(l))
                .collect::<Vec<_>>()
        );
        for op in ["runs", "logs"] {
            let Some(event) = sub.try_event_for(op, Duration::from_millis(200)).await else {
                continue;
            };
            assert_eq!(event["event"], "next", "{what}: {event}");
            let data = &event["payload"]["data"];
            if op == "runs" {
                seen.take_run_update(field(data, "runsUpdated"));
            } else {
                let log = &field(data, "healthLogRecorded")["healthLog"];
                seen.logs.push(str_field(log, "id"));
            }
        }
    }
}

/// Whether `run` is a run of the company `token` speaks for. A write sent to A when it was
/// killed may have committed without its answer reaching the writer: such a run is heard
/// by its company's subscriber but was never acknowledged, so the company asks.
async fn owns_run(server: &TestServer, token: &str, run: &str) -> bool {
    let resp = server
        .gql(
            "query($id: ID!) { run(id: $id) { id } }",
            json!({ "id": run }),
            Some(token),
        )
        .await;
    resp["data"]["run"]["id"] == run
}

/// Each run's states arrive in order: steps never go back, nothing follows SUCCEEDED, and
/// every step report arrives once.
fn assert_in_order(seen: &Seen, what: &str) {
    for (run, states) in &seen.states {
        for pair in states.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0 && pair[0].1 != "SUCCEEDED",
                "{what}: run {run} went back: {states:?}"
            );
        }
    }
    let unique: HashSet<&String> = seen.logs.iter().collect();
    assert_eq!(
        unique.len(),
        seen.logs.len(),
        "{what}: a step report arrived twice"
    );
}

async fn scenario(nats: Option<&mut PrivateNats>) {
    let what = if nats.is_some() { "NATS" } else { "NOTIFY" };
    let mut options = ServerOptions::default();
    if let Some(nats) = &nats {
        options.env.push(("STEPWISE_EVENT_BUS".into(), nats.url()));
    }
    let a = TestServer::start_with(Backend::Postgres, options).await;
    let b = a.start_sibling().await;
    let c = a.start_sibling().await;
    let acme = team(&a, "Acme").await;
    let globex = team(&b, "Globex").await;
    let (acme_flow, acme_steps) = active_workflow(&a, &acme.admin_token, "Acme flow", STEPS).await;
    let (globex_flow, globex_steps) =
        active_workflow(&b, &globex.admin_token, "Globex flow", STEPS).await;

    let mut acme_sub = Subscriber::start(
        &c,
        Some(acme.member_token.as_str()),
        &[
            ("runs", &runs_updated_query(), json!({})),
            ("logs", &health_log_recorded_query(), json!({})),
        ],
    );
    let mut globex_sub = Subscriber::start(
        &c,
        Some(globex.member_token.as_str()),
        &[("runs", &runs_updated_query(), json!({}))],
    );
    let mut warmup = HashSet::new();
    acme_sub
        .until_live(&["runs", "logs"], async || {
            let run = str_field(&start_run(&a, &acme.admin_token, &acme_flow).await, "id");
            common::runs::report_step(
                &a,
                &acme.admin_token,
                &run,
                &acme_steps[0],
                common::runs::outcome("SUCCESS"),
            )
            .await;
            warmup.insert(run);
        })
        .await;
    globex_sub
        .until_live(&["runs"], async || {
            warmup.insert(str_field(
                &start_run(&b, &globex.admin_token, &globex_flow).await,
                "id",
            ));
        })
        .await;
    // Only what the burst writes is checked from here.
    let acme_acks: Shared = Arc::default();
    let globex_acks: Shared = Arc::default();
    let mut seen = Seen::default();

    // The burst: Acme and Globex runs through A and B at once.
    let mut writers = Vec::new();
    for addr in [a.addr, b.addr] {
        for _ in 0..RUNS {
            writers.push(tokio::spawn(write_run(
                addr,
                acme.admin_token.clone(),
                acme_flow.clone(),
                acme_steps.clone(),
                acme_acks.clone(),
            )));
            writers.push(tokio::spawn(write_run(
                addr,
                globex.admin_token.clone(),
                globex_flow.clone(),
                globex_steps.clone(),
                globex_acks.clone(),
            )));
        }
    }
    // A dies in the middle of it, with no chance to finish anything.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acme_acks.lock().unwrap().logs.len() < RUNS * STEPS / 2 {
        assert!(
            Instant::now() < deadline,
            "{what}: the burst made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.signal("KILL");
    for writer in writers {
        writer.await.unwrap();
    }
    let acks = std::mem::take(&mut *acme_acks.lock().unwrap());
    assert!(
        acks.runs.values().any(|(_, finished)| *finished),
        "{what}: no run finished (the scenario needs some through B)"
    );
    collect(&mut acme_sub, &mut seen, &acks, what).await;
    assert_in_order(&seen, what);
    let acme_runs: HashSet<&String> = acks.runs.keys().collect();
    for run in seen.states.keys() {
        assert!(
            acme_runs.contains(run)
                || warmup.contains(run)
                || owns_run(&b, &acme.admin_token, run).await,
            "{what}: Acme's subscriber heard a run that is not Acme's: {run}"
        );
    }
    // Globex's subscriber on C heard Globex's runs and nothing else.
    let globex_runs: HashSet<String> = globex_acks.lock().unwrap().runs.keys().cloned().collect();
    let mut globex_seen = HashSet::new();
    while let Some(event) = globex_sub
        .try_event_for("runs", Duration::from_millis(500))
        .await
    {
        let run = str_field(
            &field(&event["payload"]["data"], "runsUpdated")["run"],
            "id",
        );
        assert!(
            globex_runs.contains(&run)
                || warmup.contains(&run)
                || owns_run(&b, &globex.admin_token, &run).await,
            "{what}: Globex heard a run that is not its own: {run}"
        );
        globex_seen.insert(run);
    }
    assert!(
        globex_runs.iter().all(|run| globex_seen.contains(run)),
        "{what}: Globex's subscriber missed runs: {globex_runs:?} vs {globex_seen:?}"
    );

    // NATS restarts: writes through B go on meanwhile; delivery resumes afterwards.
    if let Some(nats) = nats {
        nats.stop();
        let during: Shared = Arc::default();
        write_run(
            b.addr,
            acme.admin_token.clone(),
            acme_flow.clone(),
            acme_steps[..1].to_vec(),
            during.clone(),
        )
        .await;
        let during = std::mem::take(&mut *during.lock().unwrap());
        assert!(
            during.runs.values().all(|(_, finished)| *finished) && during.runs.len() == 1,
            "writes failed while NATS was down"
        );
        nats.restart().await;
        let after: Shared = Arc::default();
        // Delivery resumes: a run written through B after the restart reaches C whole
        // (retried until the instances are reconnected: the first attempts may be lost).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            write_run(
                b.addr,
                acme.admin_token.clone(),
                acme_flow.clone(),
                acme_steps.clone(),
                after.clone(),
            )
            .await;
            let latest = {
                let after = after.lock().unwrap();
                Acknowledged {
                    runs: after.runs.clone(),
                    logs: after.logs.clone(),
                }
            };
            let mut probe = Seen::default();
            let reached = tokio::time::timeout(Duration::from_secs(5), async {
                collect(&mut acme_sub, &mut probe, &latest, "after the NATS restart").await
            })
            .await;
            if reached.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "delivery did not resume after NATS restarted"
            );
            after.lock().unwrap().runs.clear();
            after.lock().unwrap().logs.clear();
        }
    }
    acme_sub.disconnect().await;
    globex_sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_events_through_nats() {
    if !Backend::Postgres.available().await || !PrivateNats::available() {
        return;
    }
    let mut nats = PrivateNats::start().await;
    scenario(Some(&mut nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_events_through_notify() {
    if !Backend::Postgres.available().await {
        return;
    }
    scenario(None).await;
}
