//! Run statistics (`workflowStats`, `companyStats`): every number matches what the test
//! computes itself from the rows it seeded — counts by status and bucket across a day
//! boundary, success rates, healed and failed steps, failures by error type, duration
//! percentiles — and bad ranges, unknown workflows and strangers are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta, Timelike as _};
use common::fixtures::{Team, create_workflow, ok, step_ids, team};
use common::history::{SeedLog, SeedRun, insert_all};
use common::runs::assert_bad_input;
use common::{Backend, TestServer, assert_error_code, parse_datetime, str_field};
use serde_json::{Value, json};

const TALLY: &str = "runs runsByStatus { status count } successRate \
     stepsHealed { deterministic ai total } stepsFailed duration { runs p50Ms p95Ms }";

fn stats_fields() -> String {
    format!(
        "from to bucket {TALLY} failuresByErrorType {{ errorType count }} series {{ start {TALLY} }}"
    )
}

const STATUSES: [&str; 7] = [
    "queued",
    "running",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
];

fn t(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("a test time")
}

fn iso(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// What the test expects for a set of runs and logs: computed here, from the seeds.
#[derive(Default)]
struct Expected {
    by_status: BTreeMap<&'static str, i64>,
    healed_deterministic: i64,
    healed_ai: i64,
    failed_steps: i64,
    durations: Vec<i64>,
}

impl Expected {
    fn add_run(&mut self, run: &SeedRun) {
        *self.by_status.entry(run.status).or_default() += 1;
        if matches!(run.status, "succeeded" | "failed")
            && let (Some(start), Some(end)) = (run.started_at, run.finished_at)
        {
            self.durations
                .push(end.signed_duration_since(start).num_milliseconds());
        }
    }

    fn add_log(&mut self, log: &SeedLog) {
        match log.status {
            "healed_deterministic" => self.healed_deterministic += 1,
            "healed_ai" => self.healed_ai += 1,
            "failed" => self.failed_steps += 1,
            _ => {}
        }
    }

    fn count(&self, status: &str) -> i64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    /// The checks a tally (`RunStats` or a bucket) must pass.
    #[track_caller]
    fn check(&self, tally: &Value, context: &str) {
        let runs: i64 = self.by_status.values().sum();
        assert_eq!(tally["runs"], runs, "{context}: runs in {tally:#}");
        let by_status: Vec<(String, i64)> = tally["runsByStatus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (str_field(c, "status"), c["count"].as_i64().unwrap()))
            .collect();
        let expected: Vec<(String, i64)> = STATUSES
            .iter()
            .map(|s| (s.to_uppercase(), self.count(s)))
            .collect();
        assert_eq!(by_status, expected, "{context}: runsByStatus");
        let judged = self.count("succeeded") + self.count("failed") + self.count("timed_out");
        if judged == 0 {
            assert!(tally["successRate"].is_null(), "{context}: {tally:#}");
        } else {
            let rate = self.count("succeeded") as f64 / judged as f64;
            close(
                &tally["successRate"],
                rate,
                &format!("{context}: successRate"),
            );
        }
        assert_eq!(
            tally["stepsHealed"],
            json!({
                "deterministic": self.healed_deterministic,
                "ai": self.healed_ai,
                "total": self.healed_deterministic + self.healed_ai,
            }),
            "{context}: stepsHealed"
        );
        assert_eq!(
            tally["stepsFailed"], self.failed_steps,
            "{context}: stepsFailed"
        );
        let mut durations = self.durations.clone();
        durations.sort_unstable();
        let duration = &tally["duration"];
        assert_eq!(
            duration["runs"],
            durations.len(),
            "{context}: duration.runs"
        );
        for (p, field) in [(50, "p50Ms"), (95, "p95Ms")] {
            match percentile_cont(&durations, p) {
                None => assert!(duration[field].is_null(), "{context}: {duration:#}"),
                Some(value) => close(&duration[field], value, &format!("{context}: {field}")),
            }
        }
    }
}

/// PostgreSQL's `percentile_cont(p / 100)`: linear interpolation between the values at
/// the ranks around `p/100 · (n − 1)`.
fn percentile_cont(sorted: &[i64], p: i64) -> Option<f64> {
    let n = i64::try_from(sorted.len()).unwrap();
    if n == 0 {
        return None;
    }
    let position = p * (n - 1);
    let lower = usize::try_from(position / 100).unwrap();
    let upper = (lower + 1).min(sorted.len() - 1);
    let fraction = (position % 100) as f64 / 100.0;
    Some(sorted[lower] as f64 + (sorted[upper] - sorted[lower]) as f64 * fraction)
}

#[track_caller]
fn close(actual: &Value, expected: f64, context: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{context}: {actual} is not a number"));
    assert!(
        (actual - expected).abs() < 1e-6,
        "{context}: {actual} != {expected}"
    );
}

/// The start of the hour or day `at` falls in.
fn bucket_of(at: NaiveDateTime, day: bool) -> NaiveDateTime {
    let hour = at.date().and_hms_opt(at.hour(), 0, 0).unwrap();
    if day {
        at.date().and_hms_opt(0, 0, 0).unwrap()
    } else {
        hour
    }
}

/// A company's seeded history: two workflows, runs in every status around midnight of
/// 2026-03-01, logs of every outcome with a few error types.
struct History {
    team: Team,
    workflows: [String; 2],
    runs: Vec<SeedRun>,
    logs: Vec<SeedLog>,
}

async fn seed(server: &TestServer, company: &str, salt: i64) -> History {
    let team = team(server, company).await;
    let mut workflows = Vec::new();
    let mut steps = Vec::new();
    for name in ["Invoices", "Payroll"] {
        let wf = create_workflow(
            server,
            &team.admin_token,
            json!({ "name": format!("{company} {name}"), "status": "ACTIVE",
                    "steps": common::fixtures::step_inputs("step ", 2) }),
        )
        .await;
        steps.push(step_ids(&wf));
        workflows.push(str_field(&wf, "id"));
    }
    let first = t("2026-03-01 19:10:00");
    let error_types = [
        Some("element_not_found"),
        Some("timeout"),
        None,
        Some("a_rare_one"),
    ];
    let mut runs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..46i64 {
        let status = STATUSES[usize::try_from((i * 5 + salt) % 7).unwrap()];
        let workflow = &workflows[usize::try_from(i % 3 / 2).unwrap()];
        // Every 13 minutes and a few seconds; milliseconds make durations uneven.
        let created = first + TimeDelta::seconds(i * 787) + TimeDelta::milliseconds(i * 37 % 1000);
        let duration = (i * 7_919 + salt * 31) % 50_000 + 120;
        let mut run = SeedRun::new(&team.company_id, workflow, status, created, duration);
        run.started_by = Some(team.admin_id.clone());
        for j in 0..(i % 4) {
            let outcome = ["success", "healed_deterministic", "healed_ai", "failed"]
                [usize::try_from((i + j) % 4).unwrap()];
            // Some logs land in the next hour (or day) after their run was requested.
            let mut log = SeedLog::new(&run, outcome, created + TimeDelta::seconds(40 + j * 400));
            log.step_id = Some(steps[usize::try_from(i % 3 / 2).unwrap()][0].clone());
            if outcome == "failed" {
                log.error_type =
                    error_types[usize::try_from((i + j) % 4).unwrap()].map(str::to_owned);
            }
            logs.push(log);
        }
        runs.push(run);
    }
    let statements: Vec<String> = runs
        .iter()
        .map(SeedRun::sql)
        .chain(logs.iter().map(SeedLog::sql))
        .collect();
    insert_all(server, &statements).await;
    History {
        team,
        workflows: [workflows[0].clone(), workflows[1].clone()],
        runs,
        logs,
    }
}

/// Everything the statistics of `history` over `[from, to)` (of one workflow, or all)
/// must say, checked against the server's answer.
#[track_caller]
fn check_stats(
    stats: &Value,
    history: &History,
    workflow: Option<&str>,
    from: NaiveDateTime,
    to: NaiveDateTime,
    day: bool,
    context: &str,
) {
    let of_range = |created: NaiveDateTime, wf: &str| {
        created >= from && created < to && workflow.is_none_or(|w| w == wf)
    };
    let runs: Vec<&SeedRun> = history
        .runs
        .iter()
        .filter(|r| of_range(r.created_at, &r.workflow_id))
        .collect();
    let logs: Vec<&SeedLog> = history
        .logs
        .iter()
        .filter(|l| of_range(l.created_at, &l.workflow_id))
        .collect();
    assert!(
        runs.len() > 5 && logs.len() > 5,
        "{context}: the range holds data"
    );

    let mut total = Expected::default();
    let mut buckets: BTreeMap<NaiveDateTime, Expected> = BTreeMap::new();
    let mut start = bucket_of(from, day);
    let step = if day {
        TimeDelta::days(1)
    } else {
        TimeDelta::hours(1)
    };
    while start < to {
        buckets.insert(start, Expected::default());
        start += step;
    }
    for run in &runs {
        total.add_run(run);
        buckets
            .get_mut(&bucket_of(run.created_at, day))
            .unwrap()
            .add_run(run);
    }
    for log in &logs {
        total.add_log(log);
        buckets
            .get_mut(&bucket_of(log.created_at, day))
            .unwrap()
            .add_log(log);
    }
    assert_eq!(parse_datetime(&stats["from"]), from.and_utc(), "{context}");
    assert_eq!(parse_datetime(&stats["to"]), to.and_utc(), "{context}");
    assert_eq!(
        stats["bucket"],
        if day { "DAY" } else { "HOUR" },
        "{context}"
    );
    total.check(stats, &format!("{context}, whole range"));

    let series = stats["series"].as_array().unwrap();
    assert_eq!(
        series.len(),
        buckets.len(),
        "{context}: one entry per bucket"
    );
    for (entry, (start, expected)) in series.iter().zip(&buckets) {
        assert_eq!(
            parse_datetime(&entry["start"]),
            start.and_utc(),
            "{context}: bucket start"
        );
        expected.check(entry, &format!("{context}, bucket {start}"));
    }

    // Failures by error type: most frequent first, ties by type, unclassified last.
    let mut failures: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for log in logs.iter().filter(|l| l.status == "failed") {
        *failures.entry(log.error_type.clone()).or_default() += 1;
    }
    let mut failures: Vec<(Option<String>, i64)> = failures.into_iter().collect();
    failures.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(a.0.is_none().cmp(&b.0.is_none()))
            .then(a.0.cmp(&b.0))
    });
    let expected: Vec<Value> = failures
        .iter()
        .map(|(t, n)| json!({ "errorType": t, "count": n }))
        .collect();
    assert_eq!(
        stats["failuresByErrorType"],
        json!(expected),
        "{context}: failuresByErrorType"
    );
}

async fn company_stats(
    server: &TestServer,
    token: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
    bucket: &str,
) -> Value {
    let data = ok(
        server,
        token,
        &format!(
            "query($from: DateTime!, $to: DateTime!, $bucket: StatsBucket!) {{ \
               companyStats(from: $from, to: $to, bucket: $bucket) {{ {} }} }}",
            stats_fields()
        ),
        json!({ "from": iso(from), "to": iso(to), "bucket": bucket }),
    )
    .await;
    data["companyStats"].clone()
}

fn workflow_stats_query() -> String {
    format!(
        "query($id: ID!, $from: DateTime!, $to: DateTime!, $bucket: StatsBucket!) {{ \
           workflowStats(workflowId: $id, from: $from, to: $to, bucket: $bucket) {{ {} }} }}",
        stats_fields()
    )
}

both_backends!(statistics_match_counts_computed_from_the_rows);
async fn statistics_match_counts_computed_from_the_rows(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = seed(&server, "Acme", 0).await;
    // Another company with rows at the same times: never counted for Acme.
    let other = seed(&server, "Globex", 3).await;

    // Across midnight; the first run (19:10) and the last ones fall outside.
    let from = t("2026-03-01 20:30:00");
    let to = t("2026-03-02 04:15:00");
    let token = &acme.team.member_token;
    for (bucket, day) in [("HOUR", false), ("DAY", true)] {
        let stats = company_stats(&server, token, from, to, bucket).await;
        check_stats(
            &stats,
            &acme,
            None,
            from,
            to,
            day,
            &format!("companyStats {bucket}"),
        );
        for workflow in &acme.workflows {
            let data = ok(
                &server,
                token,
                &workflow_stats_query(),
                json!({ "id": workflow, "from": iso(from), "to": iso(to), "bucket": bucket }),
            )
            .await;
            check_stats(
                &data["workflowStats"],
                &acme,
                Some(workflow),
                from,
                to,
                day,
                &format!("workflowStats {bucket}"),
            );
        }
    }
    let stats = company_stats(&server, &other.team.admin_token, from, to, "HOUR").await;
    check_stats(&stats, &other, None, from, to, false, "Globex companyStats");

    // The bounds: `from` inclusive, `to` exclusive, to the millisecond.
    let edge = acme.runs[20].created_at;
    let just = company_stats(
        &server,
        token,
        edge,
        edge + TimeDelta::milliseconds(1),
        "HOUR",
    )
    .await;
    assert_eq!(
        just["runs"], 1,
        "a run requested exactly at `from`: {just:#}"
    );
    let later = edge - TimeDelta::milliseconds(1);
    let without = company_stats(&server, token, later - TimeDelta::minutes(5), edge, "HOUR").await;
    assert_eq!(
        without["runs"], 0,
        "a run requested exactly at `to` is outside: {without:#}"
    );

    // An empty range still has its buckets, all zero.
    let empty = company_stats(
        &server,
        token,
        t("2025-06-01 00:00:00"),
        t("2025-06-04 00:00:00"),
        "DAY",
    )
    .await;
    assert_eq!(empty["runs"], 0);
    assert_eq!(empty["series"].as_array().unwrap().len(), 3);
    assert!(empty["successRate"].is_null() && empty["duration"]["p50Ms"].is_null());
    assert_eq!(empty["failuresByErrorType"], json!([]));
}

both_backends!(bad_ranges_unknown_workflows_and_strangers_are_refused);
async fn bad_ranges_unknown_workflows_and_strangers_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = seed(&server, "Acme", 1).await;
    let token = &acme.team.member_token;
    let query = workflow_stats_query();
    let workflow = &acme.workflows[0];
    let from = t("2026-03-01 00:00:00");

    let resp = server
        .gql(
            &query,
            json!({ "id": workflow, "from": iso(from), "to": iso(from), "bucket": "DAY" }),
            Some(token),
        )
        .await;
    assert_bad_input(&resp, Some("to"), "after", "an empty range");
    let resp = server
        .gql(
            &query,
            json!({ "id": workflow, "from": iso(from), "to": iso(from + TimeDelta::hours(1001)), "bucket": "HOUR" }),
            Some(token),
        )
        .await;
    assert_bad_input(&resp, Some("to"), "1000", "1,001 hourly buckets");
    let resp = server
        .gql(
            &format!(
                "query($from: DateTime!, $to: DateTime!) {{ companyStats(from: $from, to: $to) {{ {} }} }}",
                stats_fields()
            ),
            json!({ "from": iso(from), "to": iso(from + TimeDelta::days(1001)) }),
            Some(token),
        )
        .await;
    assert_bad_input(
        &resp,
        Some("to"),
        "1000",
        "1,001 daily buckets (the default bucket)",
    );
    // 1,000 hourly buckets are fine.
    let resp = server
        .gql(
            &query,
            json!({ "id": workflow, "from": iso(from), "to": iso(from + TimeDelta::hours(1000)), "bucket": "HOUR" }),
            Some(token),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    assert_eq!(
        resp["data"]["workflowStats"]["series"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );

    let missing = common::fixtures::new_id();
    let resp = server
        .gql(
            &query,
            json!({ "id": missing, "from": iso(from), "to": iso(from + TimeDelta::days(2)), "bucket": "DAY" }),
            Some(token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "an unknown workflow");
    assert!(resp["data"]["workflowStats"].is_null(), "{resp:#}");

    let resp = server
        .gql(
            "{ companyStats(from: \"2026-03-01T00:00:00Z\", to: \"2026-03-02T00:00:00Z\") { runs } }",
            json!({}),
            None,
        )
        .await;
    assert_error_code(&resp, "UNAUTHENTICATED", "no token");
}
