//! Run statistics for dashboards: runs by status, success rate, healed and failed steps,
//! failures by error type, run duration percentiles, and the same per time bucket, for
//! one workflow or the whole company over a time range.
//!
//! # What is counted
//! - Runs by the time they were created, in `[from, to)`. The success rate is succeeded
//!   runs among succeeded, failed and timed-out ones (cancelled runs do not count, as for
//!   a workflow's health); none of those: no rate.
//! - Steps by the time their report was recorded: healed deterministically, healed by the
//!   AI, failed; failures grouped by the executor's error type, the most frequent
//!   [`TOP_ERROR_TYPES`] kept.
//! - Durations (`finishedAt − startedAt`, whole milliseconds) of the runs that succeeded
//!   or failed: the 50th and 95th percentile, interpolated between the closest ranks as
//!   PostgreSQL's `percentile_cont` does.
//!
//! Buckets start on whole UTC hours or days, from the one `from` falls in; a range holds
//! at most [`MAX_BUCKETS`]. Everything is aggregated by the database (`db::statistics`):
//! what comes back is a few rows per bucket, whatever the number of runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta, Timelike as _};
use diesel::prelude::*;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Tenant, health_log, run};
use crate::db::schema::workflows;
use crate::db::statistics::{DurationRow, ErrorTypeCount, StatsRange, StatusCount};
use crate::db::{Db, NoEvents, Tx};
use crate::error::{AppError, AppResult};

pub use crate::db::statistics::Bucket;

/// The most buckets one request may ask for (41 days by the hour, 2.7 years by the day).
pub const MAX_BUCKETS: i64 = 1_000;
/// How many error types the failures are broken down into, most frequent first.
pub const TOP_ERROR_TYPES: i64 = 20;

impl Bucket {
    fn width(self) -> TimeDelta {
        match self {
            Self::Hour => TimeDelta::hours(1),
            Self::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket `at` falls in.
    fn start_of(self, at: NaiveDateTime) -> NaiveDateTime {
        let hour = at.date().and_hms_opt(at.hour(), 0, 0).unwrap_or(at);
        match self {
            Self::Hour => hour,
            Self::Day => at.date().and_hms_opt(0, 0, 0).unwrap_or(at),
        }
    }
}

/// Counts over one range or one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Every status, in declaration order, with its count (zeros included).
    pub runs_by_status: Vec<(run::Status, i64)>,
    pub healed_deterministic: i64,
    pub healed_ai: i64,
    pub failed_steps: i64,
    pub durations: Durations,
}

/// Duration percentiles of the runs that succeeded or failed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Durations {
    /// How many runs the percentiles are of.
    pub runs: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            runs_by_status: run::Status::ALL.iter().map(|s| (*s, 0)).collect(),
            healed_deterministic: 0,
            healed_ai: 0,
            failed_steps: 0,
            durations: Durations::default(),
        }
    }
}

impl Tally {
    pub fn runs(&self) -> i64 {
        self.runs_by_status.iter().map(|(_, n)| n).sum()
    }

    fn of(&self, status: run::Status) -> i64 {
        self.runs_by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Succeeded among succeeded, failed and timed out; `None` without any of those.
    pub fn success_rate(&self) -> Option<f64> {
        let succeeded = self.of(run::Status::Succeeded);
        let judged = succeeded + self.of(run::Status::Failed) + self.of(run::Status::TimedOut);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        (judged > 0).then(|| succeeded as f64 / judged as f64)
    }

    fn add_runs(&mut self, status: run::Status, n: i64) {
        if let Some(entry) = self.runs_by_status.iter_mut().find(|(s, _)| *s == status) {
            entry.1 += n;
        }
    }

    fn add_steps(&mut self, status: health_log::Status, n: i64) {
        match status {
            health_log::Status::HealedDeterministic => self.healed_deterministic += n,
            health_log::Status::HealedAi => self.healed_ai += n,
            health_log::Status::Failed => self.failed_steps += n,
            health_log::Status::Success => {}
        }
    }
}

/// One bucket of the time series.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStats {
    pub start: NaiveDateTime,
    pub tally: Tally,
}

/// Statistics over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    pub bucket: Bucket,
    pub total: Tally,
    /// Failed steps by error type (`None`: unclassified), most frequent first.
    pub failures_by_type: Vec<(Option<String>, i64)>,
    /// Every bucket from the one `from` falls in to the one before `to`, empty ones too.
    pub series: Vec<BucketStats>,
}

/// Checks the range and answers its bucket starts.
fn buckets(
    from: NaiveDateTime,
    to: NaiveDateTime,
    bucket: Bucket,
) -> AppResult<Vec<NaiveDateTime>> {
    if to <= from {
        return Err(AppError::bad_input("to", "to must be after from"));
    }
    let first = bucket.start_of(from);
    let width = bucket.width();
    let span = to.signed_duration_since(first);
    // Ceiling division: a partial last bucket is still a bucket.
    let count = (span.num_seconds() + width.num_seconds() - 1) / width.num_seconds();
    if count > MAX_BUCKETS {
        let unit = match bucket {
            Bucket::Hour => "hourly",
            Bucket::Day => "daily",
        };
        return Err(AppError::bad_input(
            "to",
            format!(
                "from..to spans {count} {unit} buckets; at most {MAX_BUCKETS}: narrow the range \
                 or use a wider bucket"
            ),
        ));
    }
    let mut starts = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut at = first;
    while at < to {
        starts.push(at);
        match at.checked_add_signed(width) {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(starts)
}

/// Statistics of one workflow of the tenant; another company's workflow, or one the
/// viewer may not see, is not found (and the statistics count only runs of workflows the
/// viewer may see).
pub async fn of_workflow(
    db: &Db,
    gate: &StatisticsGate,
    tenant: &Tenant,
    workflow_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
    bucket: Bucket,
) -> AppResult<RunStats> {
    let starts = buckets(from, to, bucket)?;
    let _turn = gate.enter().await?;
    let mut tx = db.read(tenant).await?;
    let found: Option<String> = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(workflows::id),
        )
        .await?;
    if found.is_none() {
        return Err(AppError::NotFound("workflow"));
    }
    let range = StatsRange {
        workflow_id: Some(workflow_id.to_owned()),
        from,
        to,
        bucket,
    };
    compute(&mut tx, &range, starts).await
}

/// Statistics of the tenant's whole company.
pub async fn of_company(
    db: &Db,
    gate: &StatisticsGate,
    tenant: &Tenant,
    from: NaiveDateTime,
    to: NaiveDateTime,
    bucket: Bucket,
) -> AppResult<RunStats> {
    let starts = buckets(from, to, bucket)?;
    let _turn = gate.enter().await?;
    let mut tx = db.read(tenant).await?;
    let range = StatsRange {
        workflow_id: None,
        from,
        to,
        bucket,
    };
    compute(&mut tx, &range, starts).await
}

async fn compute(
    tx: &mut Tx<NoEvents>,
    range: &StatsRange,
    starts: Vec<NaiveDateTime>,
) -> AppResult<RunStats> {
    let duration_statuses = [
        run::Status::Succeeded.as_str(),
        run::Status::Failed.as_str(),
    ];
    let step_statuses = [
        health_log::Status::HealedDeterministic.as_str(),
        health_log::Status::HealedAi.as_str(),
        health_log::Status::Failed.as_str(),
    ];
    let runs: Vec<StatusCount> = tx.load_statement(&range.runs_by_status()).await?;
    let durations: Vec<DurationRow> = tx
        .load_statement(&range.run_durations(&duration_statuses))
        .await?;
    let steps: Vec<StatusCount> = tx
        .load_statement(&range.step_outcomes(&step_statuses))
        .await?;
    let failures: Vec<ErrorTypeCount> = tx
        .load_statement(&range.failure_types(health_log::Status::Failed.as_str(), TOP_ERROR_TYPES))
        .await?;

    let mut total = Tally::default();
    let mut by_bucket: HashMap<NaiveDateTime, Tally> = HashMap::with_capacity(starts.len());
    for row in runs {
        let status = run::Status::parse(&row.status).ok_or_else(|| unknown("run", &row.status))?;
        total.add_runs(status, row.n);
        by_bucket
            .entry(row.bucket)
            .or_default()
            .add_runs(status, row.n);
    }
    for row in steps {
        let status = health_log::Status::parse(&row.status)
            .ok_or_else(|| unknown("health log", &row.status))?;
        total.add_steps(status, row.n);
        by_bucket
            .entry(row.bucket)
            .or_default()
            .add_steps(status, row.n);
    }
    for row in durations {
        let durations = Durations {
            runs: row.runs,
            p50_ms: row.p50,
            p95_ms: row.p95,
        };
        match row.bucket {
            Some(bucket) => by_bucket.entry(bucket).or_default().durations = durations,
            None => total.durations = durations,
        }
    }
    let series = starts
        .into_iter()
        .map(|start| BucketStats {
            start,
            tally: by_bucket.remove(&start).unwrap_or_default(),
        })
        .collect();
    Ok(RunStats {
        from: range.from,
        to: range.to,
        bucket: range.bucket,
        total,
        failures_by_type: failures.into_iter().map(|f| (f.error_type, f.n)).collect(),
        series,
    })
}

fn unknown(what: &str, status: &str) -> AppError {
    AppError::internal(anyhow::anyhow!("unknown {what} status {status:?} stored"))
}

/// How many statistics (and retention previews) may be computed at once on this instance:
/// each aggregates up to a range's (or a company's) worth of runs and health logs, so a
/// flood of them would take the database from every other request. Past the wait,
/// UNAVAILABLE (retry after a second).
#[derive(Debug, Clone)]
pub struct StatisticsGate {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl StatisticsGate {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            wait,
        }
    }

    /// A turn to compute statistics, held until dropped.
    pub async fn enter(&self) -> AppResult<OwnedSemaphorePermit> {
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(AppError::Unavailable {
                message: "too many statistics are being computed; try again shortly",
                retry_after: Duration::from_secs(1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap_or_default()
    }

    #[test]
    fn buckets_start_on_whole_hours_and_days() {
        let hours = buckets(
            at("2026-03-01 22:30:00"),
            at("2026-03-02 01:00:00"),
            Bucket::Hour,
        );
        assert_eq!(
            hours.ok(),
            Some(vec![
                at("2026-03-01 22:00:00"),
                at("2026-03-01 23:00:00"),
                at("2026-03-02 00:00:00"),
            ])
        );
        let days = buckets(
            at("2026-03-01 22:30:00"),
            at("2026-03-02 00:00:01"),
            Bucket::Day,
        );
        assert_eq!(
            days.ok(),
            Some(vec![at("2026-03-01 00:00:00"), at("2026-03-02 00:00:00")])
        );
    }

    #[test]
    fn ranges_are_bounded() {
        let from = at("2026-01-01 00:00:00");
        assert!(buckets(from, from, Bucket::Day).is_err());
        assert!(buckets(from, at("2025-01-01 00:00:00"), Bucket::Day).is_err());
        assert!(buckets(from, at("2026-02-11 16:00:00"), Bucket::Hour).is_ok());
        assert!(buckets(from, at("2026-02-11 16:00:01"), Bucket::Hour).is_err());
        assert!(buckets(from, at("2036-01-01 00:00:00"), Bucket::Day).is_err());
    }

    #[test]
    fn success_rate_leaves_out_cancelled_and_unfinished_runs() {
        let mut tally = Tally::default();
        assert_eq!(tally.success_rate(), None);
        tally.add_runs(run::Status::Cancelled, 5);
        tally.add_runs(run::Status::Running, 2);
        assert_eq!(tally.success_rate(), None);
        tally.add_runs(run::Status::Succeeded, 3);
        tally.add_runs(run::Status::Failed, 1);
        assert_eq!(tally.success_rate(), Some(0.75));
        assert_eq!(tally.runs(), 11);
    }
}
