//! Statistics: `workflowStats` and `companyStats`, run numbers over a time range with a
//! time series for charts (see `domain::statistics` for what is counted).

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::health_log::stored_precision;
use super::run::RunStatus;
use crate::domain;
use crate::domain::statistics::{BucketStats, Tally};

/// The width of the buckets of a statistics time series (whole UTC hours or days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::statistics::Bucket")]
pub enum StatsBucket {
    /// One bucket per UTC hour (ranges of up to 1,000 hours).
    Hour,
    /// One bucket per UTC day (ranges of up to 1,000 days).
    Day,
}

/// How many runs ended up in one status.
#[derive(SimpleObject)]
pub struct RunStatusCount {
    /// The status.
    pub status: RunStatus,
    /// Runs in it.
    pub count: i64,
}

/// Steps whose recorded selectors failed and that were healed, by how.
#[derive(SimpleObject)]
pub struct HealedSteps {
    /// Healed by the deterministic fallback.
    pub deterministic: i64,
    /// Healed by the AI.
    pub ai: i64,
    /// Both together.
    pub total: i64,
}

/// How many failed steps had one error type.
#[derive(SimpleObject)]
pub struct ErrorTypeCount {
    /// The executor's error type, e.g. `element_not_found`; null: not classified.
    pub error_type: Option<String>,
    /// Failed steps with it.
    pub count: i64,
}

/// Duration percentiles of runs that succeeded or failed (`finishedAt − startedAt`),
/// interpolated between the closest ranks like PostgreSQL's `percentile_cont`.
#[derive(SimpleObject)]
pub struct RunDurations {
    /// How many runs the percentiles are of.
    pub runs: i64,
    /// The median, in milliseconds; null without runs.
    pub p50_ms: Option<f64>,
    /// The 95th percentile, in milliseconds; null without runs.
    pub p95_ms: Option<f64>,
}

fn runs_by_status(tally: &Tally) -> Vec<RunStatusCount> {
    tally
        .runs_by_status
        .iter()
        .map(|(status, count)| RunStatusCount {
            status: (*status).into(),
            count: *count,
        })
        .collect()
}

fn healed(tally: &Tally) -> HealedSteps {
    HealedSteps {
        deterministic: tally.healed_deterministic,
        ai: tally.healed_ai,
        total: tally.healed_deterministic + tally.healed_ai,
    }
}

fn durations(tally: &Tally) -> RunDurations {
    RunDurations {
        runs: tally.durations.runs,
        p50_ms: tally.durations.p50_ms,
        p95_ms: tally.durations.p95_ms,
    }
}

/// Run statistics over a time range.
pub struct RunStats(domain::statistics::RunStats);

/// Run statistics over `[from, to)`: runs by the time they were requested, steps by the
/// time they were reported.
#[Object]
impl RunStats {
    /// The start of the range (inclusive).
    async fn from(&self) -> DateTime<Utc> {
        self.0.from.and_utc()
    }

    /// The end of the range (exclusive).
    async fn to(&self) -> DateTime<Utc> {
        self.0.to.and_utc()
    }

    /// The width of the buckets of `series`.
    async fn bucket(&self) -> StatsBucket {
        self.0.bucket.into()
    }

    /// Runs requested in the range.
    async fn runs(&self) -> i64 {
        self.0.total.runs()
    }

    /// Those runs by status, every status listed (zeros included).
    async fn runs_by_status(&self) -> Vec<RunStatusCount> {
        runs_by_status(&self.0.total)
    }

    /// Succeeded runs among succeeded, failed and timed-out ones (0–1); null without any.
    async fn success_rate(&self) -> Option<f64> {
        self.0.total.success_rate()
    }

    /// Steps healed in the range.
    async fn steps_healed(&self) -> HealedSteps {
        healed(&self.0.total)
    }

    /// Steps that failed in the range.
    async fn steps_failed(&self) -> i64 {
        self.0.total.failed_steps
    }

    /// Failed steps by error type, the 20 most frequent first.
    async fn failures_by_error_type(&self) -> Vec<ErrorTypeCount> {
        self.0
            .failures_by_type
            .iter()
            .map(|(error_type, count)| ErrorTypeCount {
                error_type: error_type.clone(),
                count: *count,
            })
            .collect()
    }

    /// Durations of the runs that succeeded or failed.
    async fn duration(&self) -> RunDurations {
        durations(&self.0.total)
    }

    /// The same numbers per bucket, from the bucket `from` falls in to the one before
    /// `to`, empty buckets included.
    async fn series(&self) -> Vec<RunStatsBucket> {
        self.0.series.iter().cloned().map(RunStatsBucket).collect()
    }
}

/// One bucket of a statistics time series.
pub struct RunStatsBucket(BucketStats);

/// Run statistics of one hour or day (the part of it inside the range).
#[Object]
impl RunStatsBucket {
    /// When the bucket starts (a whole UTC hour or day).
    async fn start(&self) -> DateTime<Utc> {
        self.0.start.and_utc()
    }

    /// Runs requested in the bucket.
    async fn runs(&self) -> i64 {
        self.0.tally.runs()
    }

    /// Those runs by status, every status listed (zeros included).
    async fn runs_by_status(&self) -> Vec<RunStatusCount> {
        runs_by_status(&self.0.tally)
    }

    /// Succeeded runs among succeeded, failed and timed-out ones (0–1); null without any.
    async fn success_rate(&self) -> Option<f64> {
        self.0.tally.success_rate()
    }

    /// Steps healed in the bucket.
    async fn steps_healed(&self) -> HealedSteps {
        healed(&self.0.tally)
    }

    /// Steps that failed in the bucket.
    async fn steps_failed(&self) -> i64 {
        self.0.tally.failed_steps
    }

    /// Durations of the bucket's runs that succeeded or failed.
    async fn duration(&self) -> RunDurations {
        durations(&self.0.tally)
    }
}

#[derive(Default)]
pub struct StatisticsQuery;

#[Object]
impl StatisticsQuery {
    /// Run statistics of one workflow; null with NOT_FOUND when there is no such workflow
    /// or the viewer may not see it.
    async fn workflow_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "The start of the range (inclusive).")] from: DateTime<Utc>,
        #[graphql(desc = "The end of the range (exclusive); after `from`.")] to: DateTime<Utc>,
        #[graphql(
            desc = "The width of the time series' buckets: HOUR or DAY (default); at most 1,000 buckets.",
            default_with = "StatsBucket::Day"
        )]
        bucket: StatsBucket,
    ) -> async_graphql::Result<Option<RunStats>> {
        let viewer = ctx.viewer()?;
        let stats = domain::statistics::of_workflow(
            ctx.db(),
            &ctx.services().statistics,
            &viewer.tenant,
            &workflow_id,
            stored_precision(from),
            stored_precision(to),
            bucket.into(),
        )
        .await?;
        Ok(Some(RunStats(stats)))
    }

    /// Run statistics of the whole company: of every workflow the viewer may see.
    async fn company_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The start of the range (inclusive).")] from: DateTime<Utc>,
        #[graphql(desc = "The end of the range (exclusive); after `from`.")] to: DateTime<Utc>,
        #[graphql(
            desc = "The width of the time series' buckets: HOUR or DAY (default); at most 1,000 buckets.",
            default_with = "StatsBucket::Day"
        )]
        bucket: StatsBucket,
    ) -> async_graphql::Result<RunStats> {
        let viewer = ctx.viewer()?;
        let stats = domain::statistics::of_company(
            ctx.db(),
            &ctx.services().statistics,
            &viewer.tenant,
            stored_precision(from),
            stored_precision(to),
            bucket.into(),
        )
        .await?;
        Ok(RunStats(stats))
    }
}
