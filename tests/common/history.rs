//! A company's history at chosen times, inserted with SQL (column lists as in
//! `migrations/*/up.sql`): runs with start and finish times, health logs with error types,
//! notifications. For retention, statistics and list filters, whose subject is rows of
//! any age in any status, which no client can produce quickly.

use chrono::{NaiveDateTime, TimeDelta};

use super::TestServer;
use super::fixtures::{lit, new_id, opt_lit};

/// A timestamp literal written as the server writes them (`%F %T%.f`: the fraction only
/// when there is one), so text comparisons on SQLite see what they would in production.
pub fn at(t: NaiveDateTime) -> String {
    lit(&t.format("%F %T%.f").to_string())
}

fn opt_at(t: Option<NaiveDateTime>) -> String {
    t.map_or_else(|| "NULL".to_owned(), at)
}

/// `2026-01-01 00:00:00` UTC plus `seconds`.
pub fn base_plus(seconds: i64) -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("base time")
        + TimeDelta::seconds(seconds)
}

/// The current time, to the second.
pub fn now_utc() -> NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    now - TimeDelta::nanoseconds(i64::from(now.and_utc().timestamp_subsec_nanos()))
}

#[derive(Debug, Clone)]
pub struct SeedRun {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub started_by: Option<String>,
    /// As stored: `succeeded`, `running`, `timed_out`, ...
    pub status: &'static str,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
}

impl SeedRun {
    /// A run of `status` requested at `created_at`; started then (unless queued) and, when
    /// finished, finished `duration_ms` later.
    pub fn new(
        company_id: &str,
        workflow_id: &str,
        status: &'static str,
        created_at: NaiveDateTime,
        duration_ms: i64,
    ) -> Self {
        let started_at = (status != "queued").then_some(created_at);
        let finished = matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out");
        Self {
            id: new_id(),
            company_id: company_id.to_owned(),
            workflow_id: workflow_id.to_owned(),
            started_by: None,
            status,
            created_at,
            started_at,
            finished_at: finished.then(|| created_at + TimeDelta::milliseconds(duration_ms)),
        }
    }

    pub fn sql(&self) -> String {
        format!(
            "INSERT INTO runs (id, company_id, workflow_id, started_by, status, steps_total, \
               steps_completed, steps_failed, steps_healed, current_step_id, error, started_at, \
               finished_at, created_at, updated_at) \
             VALUES ({}, {}, {}, {}, {}, 3, 0, 0, 0, NULL, NULL, {}, {}, {c}, {c});\n",
            lit(&self.id),
            lit(&self.company_id),
            lit(&self.workflow_id),
            opt_lit(self.started_by.as_deref()),
            lit(self.status),
            opt_at(self.started_at),
            opt_at(self.finished_at),
            c = at(self.created_at),
        )
    }
}

#[derive(Debug, Clone)]
pub struct SeedLog {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub run_id: String,
    pub step_id: Option<String>,
    /// As stored: `success`, `failed`, `healed_deterministic`, `healed_ai`.
    pub status: &'static str,
    pub error_type: Option<String>,
    pub created_at: NaiveDateTime,
}

impl SeedLog {
    pub fn new(run: &SeedRun, status: &'static str, created_at: NaiveDateTime) -> Self {
        Self {
            id: new_id(),
            company_id: run.company_id.clone(),
            workflow_id: run.workflow_id.clone(),
            run_id: run.id.clone(),
            step_id: None,
            status,
            error_type: None,
            created_at,
        }
    }

    pub fn sql(&self) -> String {
        format!(
            "INSERT INTO health_logs (id, company_id, workflow_id, run_id, step_id, \
               idempotency_key, status, error_type, error_message, healing_confidence, \
               deterministic_score, ai_score, page_url, execution_time_ms, created_at) \
             VALUES ({}, {}, {}, {}, {}, NULL, {}, {}, NULL, NULL, NULL, NULL, NULL, 10, {});\n",
            lit(&self.id),
            lit(&self.company_id),
            lit(&self.workflow_id),
            lit(&self.run_id),
            opt_lit(self.step_id.as_deref()),
            lit(self.status),
            opt_lit(self.error_type.as_deref()),
            at(self.created_at),
        )
    }
}

#[derive(Debug, Clone)]
pub struct SeedNote {
    pub id: String,
    pub company_id: String,
    pub workflow_id: Option<String>,
    /// `info`, `warning` or `error`.
    pub severity: &'static str,
    pub read: bool,
    pub created_at: NaiveDateTime,
}

impl SeedNote {
    pub fn new(company_id: &str, workflow_id: Option<&str>, created_at: NaiveDateTime) -> Self {
        Self {
            id: new_id(),
            company_id: company_id.to_owned(),
            workflow_id: workflow_id.map(str::to_owned),
            severity: "info",
            read: false,
            created_at,
        }
    }

    pub fn sql(&self) -> String {
        format!(
            "INSERT INTO notifications (id, company_id, workflow_id, kind, severity, title, \
               message, read, read_at, read_by, created_at) \
             VALUES ({}, {}, {}, 'seeded', {}, 'Seeded', 'Seeded notification', {}, {}, NULL, {c});\n",
            lit(&self.id),
            lit(&self.company_id),
            opt_lit(self.workflow_id.as_deref()),
            lit(self.severity),
            if self.read { "TRUE" } else { "FALSE" },
            if self.read {
                at(self.created_at)
            } else {
                "NULL".to_owned()
            },
            c = at(self.created_at),
        )
    }
}

/// Runs `statements` (one per line) a few hundred at a time.
pub async fn insert_all(server: &TestServer, statements: &[String]) {
    for chunk in statements.chunks(300) {
        server.sql(&chunk.concat()).await;
    }
}

/// The value of the sample `name{labels}` on `GET /metrics` (e.g.
/// `stepwise_retention_removed_total`, `kind="runs"`); 0 when absent.
pub async fn labelled_metric(server: &TestServer, name: &str, labels: &str) -> f64 {
    let body = server
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap_or_default();
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
