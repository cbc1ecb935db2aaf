//! Retention policies: admins set them, a preview says what they remove, and the sweeper
//! (every instance, in batches) then removes exactly that — never a queued, running or
//! paused run, never another company's rows — and counts it on `/metrics`. On PostgreSQL,
//! two instances sweeping the same companies at once remove each row once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use common::fixtures::{Team, create_workflow, lit, ok, team};
use common::history::{SeedLog, SeedNote, SeedRun, insert_all, labelled_metric, now_utc};
use common::runs::{assert_bad_input, poll_until};
use common::{Backend, ServerOptions, TestServer, assert_error_code, str_field};
use serde_json::{Value, json};

const POLICY_FIELDS: &str = "runMaxAgeDays runsKeptPerWorkflow notificationMaxAgeDays updatedAt";
const PREVIEW: &str = "query($p: RetentionPolicyInput) { retentionPreview(policy: $p) { runs healthLogs notifications auditEntries asOf } }";
const UPDATE: &str = "mutation($p: RetentionPolicyInput!) { updateRetentionPolicy(policy: $p) { runMaxAgeDays runsKeptPerWorkflow notificationMaxAgeDays updatedAt } }";

/// A server that sweeps every second, `batch` rows per transaction.
async fn sweeping_server(backend: Backend, batch: usize) -> TestServer {
    let options = ServerOptions {
        env: vec![
            (
                "STEPWISE_RETENTION_SWEEP_INTERVAL_SECONDS".to_owned(),
                "1".to_owned(),
            ),
            (
                "STEPWISE_RETENTION_BATCH_SIZE".to_owned(),
                batch.to_string(),
            ),
        ],
        ..ServerOptions::default()
    };
    TestServer::start_with(backend, options).await
}

/// A company's seeded history and what a policy of 30 days / 3 runs per workflow / 30
/// days of notifications removes from it, computed here from the seeds.
struct History {
    team: Team,
    runs: Vec<SeedRun>,
    logs: Vec<SeedLog>,
    notes: Vec<SeedNote>,
}

const POLICY: (i32, i32, i32) = (30, 3, 30);

fn policy_json() -> Value {
    json!({ "runMaxAgeDays": POLICY.0, "runsKeptPerWorkflow": POLICY.1, "notificationMaxAgeDays": POLICY.2 })
}

impl History {
    /// The runs the policy removes: finished, and older than the age limit or behind the
    /// newest `runsKeptPerWorkflow` of their workflow (any status counts among those).
    fn expired_runs(&self, now: NaiveDateTime) -> BTreeSet<String> {
        let cutoff = now - TimeDelta::days(i64::from(POLICY.0));
        let mut by_workflow: HashMap<&str, Vec<&SeedRun>> = HashMap::new();
        for run in &self.runs {
            by_workflow.entry(&run.workflow_id).or_default().push(run);
        }
        let mut expired = BTreeSet::new();
        for runs in by_workflow.values_mut() {
            runs.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
            for (rank, run) in runs.iter().enumerate() {
                let finished = matches!(
                    run.status,
                    "succeeded" | "failed" | "cancelled" | "timed_out"
                );
                let beyond = rank >= usize::try_from(POLICY.1).unwrap();
                if finished && (run.created_at < cutoff || beyond) {
                    expired.insert(run.id.clone());
                }
            }
        }
        expired
    }

    fn expired_logs(&self, now: NaiveDateTime) -> BTreeSet<String> {
        let runs = self.expired_runs(now);
        self.logs
            .iter()
            .filter(|l| runs.contains(&l.run_id))
            .map(|l| l.id.clone())
            .collect()
    }

    fn expired_notes(&self, now: NaiveDateTime) -> BTreeSet<String> {
        let cutoff = now - TimeDelta::days(i64::from(POLICY.2));
        self.notes
            .iter()
            .filter(|n| n.created_at < cutoff)
            .map(|n| n.id.clone())
            .collect()
    }
}

/// Old and recent runs in every status over three workflows, with logs; old and recent
/// notifications, read and unread. `scale` multiplies the old finished runs.
async fn seed(server: &TestServer, company: &str, scale: i64) -> History {
    let team = team(server, company).await;
    let mut workflows = Vec::new();
    for name in ["Invoices", "Payroll", "Quiet"] {
        let wf = create_workflow(
            server,
            &team.admin_token,
            json!({ "name": format!("{company} {name}") }),
        )
        .await;
        workflows.push(str_field(&wf, "id"));
    }
    let now = now_utc();
    let mut runs = Vec::new();
    // Long ago (2026-01-01 onwards, over 300 days back): finished ones go by age, the
    // unfinished stay.
    let old = common::history::base_plus(0);
    let statuses = [
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
        "queued",
        "running",
        "paused",
    ];
    for i in 0..(7 * scale) {
        let status = statuses[usize::try_from(i % 7).unwrap()];
        let workflow = &workflows[usize::try_from(i % 2).unwrap()];
        runs.push(SeedRun::new(
            &team.company_id,
            workflow,
            status,
            old + TimeDelta::minutes(i),
            1_000,
        ));
    }
    // Recent (the last two days): only the count limit removes them. Payroll gets six,
    // oldest first; the running one is among the newest three (it counts, and stays),
    // so the three before it go.
    for (i, status) in [
        "succeeded",
        "failed",
        "succeeded",
        "running",
        "succeeded",
        "cancelled",
    ]
    .into_iter()
    .enumerate()
    {
        let i = i64::try_from(i).unwrap();
        runs.push(SeedRun::new(
            &team.company_id,
            &workflows[1],
            status,
            now - TimeDelta::days(2) + TimeDelta::minutes(i * 10),
            500,
        ));
    }
    // Two recent runs of Invoices (kept, with its newest old run: the three newest);
    // exactly three of Quiet (all kept).
    for (workflow, minutes) in [
        (&workflows[0], 5),
        (&workflows[0], 6),
        (&workflows[2], 7),
        (&workflows[2], 8),
        (&workflows[2], 9),
    ] {
        runs.push(SeedRun::new(
            &team.company_id,
            workflow,
            "succeeded",
            now - TimeDelta::days(1) + TimeDelta::minutes(minutes),
            500,
        ));
    }
    let mut logs = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        for j in 0..(n % 4) {
            let j = i64::try_from(j).unwrap();
            logs.push(SeedLog::new(
                run,
                "success",
                run.created_at + TimeDelta::seconds(j + 1),
            ));
        }
    }
    let mut notes = Vec::new();
    for i in 0..(5 * scale) {
        let mut note = SeedNote::new(
            &team.company_id,
            Some(&workflows[usize::try_from(i % 3).unwrap()]),
            old + TimeDelta::hours(i),
        );
        note.read = i % 2 == 0;
        notes.push(note);
    }
    for i in 0..3 {
        notes.push(SeedNote::new(
            &team.company_id,
            None,
            now - TimeDelta::days(3) + TimeDelta::hours(i),
        ));
    }
    let statements: Vec<String> = runs
        .iter()
        .map(SeedRun::sql)
        .chain(logs.iter().map(SeedLog::sql))
        .chain(notes.iter().map(SeedNote::sql))
        .collect();
    insert_all(server, &statements).await;
    History {
        team,
        runs,
        logs,
        notes,
    }
}

/// The ids of `table`'s rows of `company`.
async fn ids(server: &TestServer, table: &str, company: &str) -> BTreeSet<String> {
    server
        .sql_strings(&format!(
            "SELECT id AS v FROM {table} WHERE company_id = {}",
            lit(company)
        ))
        .await
        .into_iter()
        .collect()
}

fn all_ids<'a>(ids: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    ids.cloned().collect()
}

async fn preview(server: &TestServer, token: &str, policy: Value) -> Value {
    ok(server, token, PREVIEW, json!({ "p": policy })).await["retentionPreview"].clone()
}

/// Waits until the saved policy of `token`'s company removes nothing more.
async fn swept(server: &TestServer, token: &str) {
    poll_until(Duration::from_secs(60), "the sweep to finish", async || {
        let left = preview(server, token, Value::Null).await;
        (left["runs"] == 0 && left["healthLogs"] == 0 && left["notifications"] == 0).then_some(())
    })
    .await;
}

async fn removed(server: &TestServer, kind: &str) -> i64 {
    labelled_metric(
        server,
        "stepwise_retention_removed_total",
        &format!("kind=\"{kind}\""),
    )
    .await as i64
}

both_backends!(the_sweep_removes_exactly_what_the_preview_said_in_batches);
async fn the_sweep_removes_exactly_what_the_preview_said_in_batches(backend: Backend) {
    let server = sweeping_server(backend, 2).await;
    let acme = seed(&server, "Acme", 2).await;
    let globex = seed(&server, "Globex", 1).await;
    let token = &acme.team.admin_token;
    let now = now_utc();
    let (runs, logs, notes) = (
        acme.expired_runs(now),
        acme.expired_logs(now),
        acme.expired_notes(now),
    );
    assert!(
        runs.len() > 6 && logs.len() > 6 && notes.len() > 6,
        "a sizeable sweep"
    );

    // No policy yet: nothing to remove.
    let resp = ok(
        &server,
        token,
        &format!("{{ retentionPolicy {{ {POLICY_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(
        resp["retentionPolicy"],
        json!({ "runMaxAgeDays": null, "runsKeptPerWorkflow": null, "notificationMaxAgeDays": null, "updatedAt": null })
    );
    let none = preview(&server, token, Value::Null).await;
    assert_eq!(
        (
            none["runs"].clone(),
            none["healthLogs"].clone(),
            none["notifications"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );

    // The preview of the policy before saving it says what the test computed.
    let said = preview(&server, token, policy_json()).await;
    assert_eq!(said["runs"], runs.len(), "{said:#}");
    assert_eq!(said["healthLogs"], logs.len(), "{said:#}");
    assert_eq!(said["notifications"], notes.len(), "{said:#}");
    // Each rule alone.
    let by_age = preview(&server, token, json!({ "runMaxAgeDays": 30 })).await;
    let old_finished = acme
        .runs
        .iter()
        .filter(|r| r.created_at < now - TimeDelta::days(30))
        .filter(|r| matches!(r.status, "succeeded" | "failed" | "cancelled" | "timed_out"))
        .count();
    assert_eq!(by_age["runs"], old_finished, "{by_age:#}");
    assert_eq!(by_age["notifications"], 0, "{by_age:#}");
    let other = preview(&server, &globex.team.admin_token, policy_json()).await;
    assert_eq!(
        other["runs"],
        globex.expired_runs(now).len(),
        "Globex counts its own"
    );
    assert_eq!(
        metric_sum(&server).await,
        0,
        "nothing swept before a policy is saved"
    );

    let saved = ok(&server, token, UPDATE, json!({ "p": policy_json() })).await;
    let saved = &saved["updateRetentionPolicy"];
    assert_eq!(saved["runMaxAgeDays"], 30);
    assert_eq!(saved["runsKeptPerWorkflow"], 3);
    assert_eq!(saved["notificationMaxAgeDays"], 30);
    assert!(saved["updatedAt"].is_string());
    swept(&server, token).await;
    let total = i64::try_from(runs.len() + logs.len() + notes.len()).unwrap();
    // The counters move right after each batch commits.
    poll_until(Duration::from_secs(5), "the metrics", async || {
        (metric_sum(&server).await >= total).then_some(())
    })
    .await;

    // Exactly what the preview said went, and the metrics say so.
    assert_eq!(removed(&server, "runs").await, runs.len() as i64);
    assert_eq!(removed(&server, "health_logs").await, logs.len() as i64);
    assert_eq!(removed(&server, "notifications").await, notes.len() as i64);
    let company = &acme.team.company_id;
    let kept_runs: BTreeSet<String> = all_ids(acme.runs.iter().map(|r| &r.id))
        .difference(&runs)
        .cloned()
        .collect();
    assert_eq!(ids(&server, "runs", company).await, kept_runs);
    let kept_logs: BTreeSet<String> = all_ids(acme.logs.iter().map(|l| &l.id))
        .difference(&logs)
        .cloned()
        .collect();
    assert_eq!(ids(&server, "health_logs", company).await, kept_logs);
    let kept_notes: BTreeSet<String> = all_ids(acme.notes.iter().map(|n| &n.id))
        .difference(&notes)
        .cloned()
        .collect();
    assert_eq!(ids(&server, "notifications", company).await, kept_notes);
    // Queued, running and paused runs stay however old, with their logs.
    let unfinished = acme
        .runs
        .iter()
        .filter(|r| matches!(r.status, "queued" | "running" | "paused"))
        .count();
    assert_eq!(
        server
            .sql_count(&format!(
                "runs WHERE company_id = {} AND status IN ('queued', 'running', 'paused')",
                lit(company)
            ))
            .await,
        i64::try_from(unfinished).unwrap()
    );
    // In batches of two: no transaction removed more than two logs, runs or notifications.
    let batches = labelled_metric(&server, "stepwise_retention_batches_total", "").await as usize;
    assert!(
        batches >= logs.len().div_ceil(2) + notes.len().div_ceil(2),
        "{batches} batches for {} logs and {} notifications",
        logs.len(),
        notes.len()
    );

    // Globex has no policy: untouched.
    assert_eq!(
        ids(&server, "runs", &globex.team.company_id).await,
        all_ids(globex.runs.iter().map(|r| &r.id))
    );
    assert_eq!(
        ids(&server, "notifications", &globex.team.company_id).await,
        all_ids(globex.notes.iter().map(|n| &n.id))
    );

    // Lifting the limits stops the sweep: nothing more goes.
    let lifted = ok(&server, token, UPDATE, json!({ "p": {} })).await;
    assert_eq!(
        lifted["updateRetentionPolicy"]["runMaxAgeDays"],
        Value::Null
    );
    let before = metric_sum(&server).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(metric_sum(&server).await, before);
}

async fn metric_sum(server: &TestServer) -> i64 {
    removed(server, "runs").await
        + removed(server, "health_logs").await
        + removed(server, "notifications").await
}

both_backends!(policies_are_validated_and_for_admins);
async fn policies_are_validated_and_for_admins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let member = &acme.member_token;
    for query in [
        format!("{{ retentionPolicy {{ {POLICY_FIELDS} }} }}"),
        "{ retentionPreview { runs } }".to_owned(),
        "mutation { updateRetentionPolicy(policy: { runMaxAgeDays: 5 }) { runMaxAgeDays } }"
            .to_owned(),
    ] {
        let resp = server.gql(&query, json!({}), Some(member)).await;
        assert_error_code(&resp, "FORBIDDEN", &query);
    }
    let token = &acme.admin_token;
    for (policy, field) in [
        (json!({ "runMaxAgeDays": 0 }), "policy.runMaxAgeDays"),
        (json!({ "runMaxAgeDays": 3651 }), "policy.runMaxAgeDays"),
        (
            json!({ "runsKeptPerWorkflow": -1 }),
            "policy.runsKeptPerWorkflow",
        ),
        (
            json!({ "runsKeptPerWorkflow": 10001 }),
            "policy.runsKeptPerWorkflow",
        ),
        (
            json!({ "notificationMaxAgeDays": 0 }),
            "policy.notificationMaxAgeDays",
        ),
        // The audit log keeps its own, longer period.
        (json!({ "auditMaxAgeDays": 29 }), "policy.auditMaxAgeDays"),
        (
            json!({ "runMaxAgeDays": 90, "auditMaxAgeDays": 60 }),
            "policy.auditMaxAgeDays",
        ),
        (
            json!({ "notificationMaxAgeDays": 400, "auditMaxAgeDays": 365 }),
            "policy.auditMaxAgeDays",
        ),
    ] {
        let resp = server
            .gql(UPDATE, json!({ "p": policy }), Some(token))
            .await;
        assert_bad_input(&resp, Some(field), "between", &policy.to_string());
        let resp = server
            .gql(PREVIEW, json!({ "p": policy }), Some(token))
            .await;
        assert_bad_input(&resp, Some(field), "between", &policy.to_string());
    }
    // Nothing was saved by the refusals; a valid policy is, and replaces the whole policy.
    let data = ok(
        &server,
        token,
        &format!("{{ retentionPolicy {{ {POLICY_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    assert!(data["retentionPolicy"]["updatedAt"].is_null(), "{data:#}");
    ok(
        &server,
        token,
        UPDATE,
        json!({ "p": { "runMaxAgeDays": 3650, "notificationMaxAgeDays": 1 } }),
    )
    .await;
    let data = ok(
        &server,
        token,
        UPDATE,
        json!({ "p": { "runsKeptPerWorkflow": 10000 } }),
    )
    .await;
    assert_eq!(
        data["updateRetentionPolicy"]["runMaxAgeDays"],
        Value::Null,
        "an absent limit is no limit: {data:#}"
    );
    let data = ok(
        &server,
        token,
        &format!("{{ retentionPolicy {{ {POLICY_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(data["retentionPolicy"]["runsKeptPerWorkflow"], 10000);
    assert_eq!(
        data["retentionPolicy"]["notificationMaxAgeDays"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sweeping_at_once_remove_each_row_once() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = sweeping_server(Backend::Postgres, 3).await;
    let second = first.start_sibling().await;
    let now = now_utc();
    let mut histories = Vec::new();
    for company in ["Acme", "Globex", "Initech", "Umbrella"] {
        histories.push(seed(&first, company, 3).await);
    }
    let mut expected = (0, 0, 0);
    for history in &histories {
        expected.0 += history.expired_runs(now).len() as i64;
        expected.1 += history.expired_logs(now).len() as i64;
        expected.2 += history.expired_notes(now).len() as i64;
    }
    // Policies saved on both instances; both sweep every second.
    for (n, history) in histories.iter().enumerate() {
        let server = if n % 2 == 0 { &first } else { &second };
        ok(
            server,
            &history.team.admin_token,
            UPDATE,
            json!({ "p": policy_json() }),
        )
        .await;
    }
    for history in &histories {
        swept(&first, &history.team.admin_token).await;
    }
    let total = |kind: &'static str| {
        let (first, second) = (&first, &second);
        async move { removed(first, kind).await + removed(second, kind).await }
    };
    poll_until(Duration::from_secs(5), "the metrics", async || {
        let sum = metric_sum(&first).await + metric_sum(&second).await;
        (sum >= expected.0 + expected.1 + expected.2).then_some(())
    })
    .await;
    assert_eq!(total("runs").await, expected.0, "runs removed once each");
    assert_eq!(
        total("health_logs").await,
        expected.1,
        "logs removed once each"
    );
    assert_eq!(
        total("notifications").await,
        expected.2,
        "notifications removed once each"
    );
    for history in &histories {
        let company = &history.team.company_id;
        let kept: BTreeSet<String> = all_ids(history.runs.iter().map(|r| &r.id))
            .difference(&history.expired_runs(now))
            .cloned()
            .collect();
        assert_eq!(ids(&first, "runs", company).await, kept);
    }
    // No claim is left behind once the companies are done.
    poll_until(
        Duration::from_secs(10),
        "claims to be released",
        async || {
            (first
                .sql_count("retention_policies WHERE claimed_by IS NOT NULL")
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
}

both_backends!(a_policy_change_stops_a_sweep_in_progress);
/// Every batch checks that its pass's policy is still the company's, so lifting the limits
/// in the middle of a sweep stops it at once: nothing more is removed under the old policy.
async fn a_policy_change_stops_a_sweep_in_progress(backend: Backend) {
    // Batches of one row: the sweep takes many passes of 200 batches, a second apart.
    let server = sweeping_server(backend, 1).await;
    let acme = team(&server, "Acme").await;
    let wf = create_workflow(&server, &acme.admin_token, json!({ "name": "Old" })).await;
    let workflow = str_field(&wf, "id");
    let old = common::history::base_plus(0);
    let mut statements = Vec::new();
    for i in 0..600 {
        let run = SeedRun::new(
            &acme.company_id,
            &workflow,
            "succeeded",
            old + TimeDelta::minutes(i),
            100,
        );
        statements.push(SeedLog::new(&run, "success", run.created_at).sql());
        statements.insert(0, run.sql());
    }
    insert_all(&server, &statements).await;
    let token = &acme.admin_token;
    ok(
        &server,
        token,
        UPDATE,
        json!({ "p": { "runMaxAgeDays": 30 } }),
    )
    .await;
    poll_until(Duration::from_secs(30), "the sweep to start", async || {
        (metric_sum(&server).await > 0).then_some(())
    })
    .await;
    ok(&server, token, UPDATE, json!({ "p": {} })).await;
    let stopped = metric_sum(&server).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let later = metric_sum(&server).await;
    // A batch that took the policy before the change may still be counted after it.
    assert!(
        later - stopped <= 2,
        "the sweep went on under the lifted policy: {stopped} -> {later} rows"
    );
    let left = preview(&server, token, json!({ "runMaxAgeDays": 30 })).await;
    assert!(
        left["runs"].as_i64().unwrap() > 0,
        "the sweep was stopped midway, not finished: {left:#}"
    );
    assert_eq!(
        left["runs"].as_i64().unwrap() + removed(&server, "runs").await,
        600,
        "what is left and what went add up"
    );
}

both_backends!(the_audit_log_keeps_its_own_period_and_records_policy_changes);
/// Audit entries older than `auditMaxAgeDays` go, in batches, and exactly what the preview
/// counted; newer ones and other companies' stay. Changing the policy is itself audited.
async fn the_audit_log_keeps_its_own_period_and_records_policy_changes(backend: Backend) {
    let server = sweeping_server(backend, 2).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let now = now_utc();
    let mut statements = Vec::new();
    let mut old = BTreeSet::new();
    for (company, days, count) in [
        (&acme.company_id, 400, 3),
        (&acme.company_id, 40, 2),
        (&globex.company_id, 400, 2),
    ] {
        for n in 0..count {
            let id = uuid::Uuid::now_v7().to_string();
            let at =
                (now - TimeDelta::days(days) - TimeDelta::minutes(n)).format("%Y-%m-%d %H:%M:%S");
            statements.push(format!(
                "INSERT INTO audit_log (id, company_id, created_at, actor_type, action, summary) \
                 VALUES ({}, {}, '{at}', 'system', 'company.renamed', '{{}}');",
                lit(&id),
                lit(company)
            ));
            if company == &acme.company_id && days == 400 {
                old.insert(id);
            }
        }
    }
    insert_all(&server, &statements).await;
    let before = ids(&server, "audit_log", &acme.company_id).await;
    let globex_before = ids(&server, "audit_log", &globex.company_id).await;

    let policy = json!({ "auditMaxAgeDays": 365 });
    let said = preview(&server, &acme.admin_token, policy.clone()).await;
    assert_eq!(said["auditEntries"], old.len(), "{said:#}");
    let data = ok(
        &server,
        &acme.admin_token,
        "mutation($p: RetentionPolicyInput!) { updateRetentionPolicy(policy: $p) { auditMaxAgeDays } }",
        json!({ "p": policy }),
    )
    .await;
    assert_eq!(data["updateRetentionPolicy"]["auditMaxAgeDays"], 365);
    poll_until(Duration::from_secs(60), "the audit sweep", async || {
        let left = preview(&server, &acme.admin_token, Value::Null).await;
        (left["auditEntries"] == 0).then_some(())
    })
    .await;
    let after = ids(&server, "audit_log", &acme.company_id).await;
    let expected: BTreeSet<String> = before.difference(&old).cloned().collect();
    // Exactly the old entries went; the policy change added one entry of its own.
    assert_eq!(
        after.difference(&expected).count(),
        1,
        "after {after:?}, expected {expected:?} plus the change"
    );
    assert!(after.is_disjoint(&old));
    assert_eq!(
        ids(&server, "audit_log", &globex.company_id).await,
        globex_before,
        "another company's audit log is untouched"
    );
    assert_eq!(removed(&server, "audit_entries").await, old.len() as i64);

    let log = ok(
        &server,
        &acme.admin_token,
        "{ auditLog(filter: { action: RETENTION_POLICY_UPDATED }) { nodes { actorId summary } } }",
        json!({}),
    )
    .await;
    let entries = log["auditLog"]["nodes"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log:#}");
    assert_eq!(entries[0]["actorId"], acme.admin_id.as_str());
    assert_eq!(entries[0]["summary"]["after"]["auditMaxAgeDays"], 365);
    assert_eq!(
        entries[0]["summary"]["before"]["auditMaxAgeDays"],
        Value::Null
    );
}
