//! Retention: the company's policy, a preview of what it removes, and admins changing it.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use crate::domain;
use crate::domain::retention::{Limits, Policy};

/// How long the company keeps what it records; every limit is optional (null or absent:
/// kept forever). The whole policy is replaced at once.
#[derive(Debug, Clone, Copy, Default, InputObject)]
pub struct RetentionPolicyInput {
    /// Finished runs (with their health logs) are removed once they were requested this
    /// many days ago: 1 to 3,650.
    pub run_max_age_days: Option<i32>,
    /// Finished runs are removed once their workflow has this many newer runs (of any
    /// status): 1 to 10,000.
    pub runs_kept_per_workflow: Option<i32>,
    /// Notifications, read or not, are removed once they were raised this many days ago:
    /// 1 to 3,650.
    pub notification_max_age_days: Option<i32>,
    /// Audit entries are removed once they were recorded this many days ago: at least 30,
    /// and no shorter than the run and notification limits; at most 3,650.
    pub audit_max_age_days: Option<i32>,
}

impl From<RetentionPolicyInput> for Limits {
    fn from(input: RetentionPolicyInput) -> Self {
        Self {
            run_max_age_days: input.run_max_age_days,
            runs_kept_per_workflow: input.runs_kept_per_workflow,
            notification_max_age_days: input.notification_max_age_days,
            audit_max_age_days: input.audit_max_age_days,
        }
    }
}

/// The company's retention policy.
pub struct RetentionPolicy(Policy);

/// How long the company keeps what it records. Queued, running and paused runs are never
/// removed; a run's health logs go with it. Every instance sweeps in small batches, at
/// most an interval (an hour by default) after a change.
#[Object]
impl RetentionPolicy {
    /// Finished runs (with their health logs) are removed once they were requested this
    /// many days ago; null: no age limit.
    async fn run_max_age_days(&self) -> Option<i32> {
        self.0.limits.run_max_age_days
    }

    /// Finished runs are removed once their workflow has this many newer runs; null: no
    /// count limit. Either run limit removes a run.
    async fn runs_kept_per_workflow(&self) -> Option<i32> {
        self.0.limits.runs_kept_per_workflow
    }

    /// Notifications are removed once they were raised this many days ago; null: kept.
    async fn notification_max_age_days(&self) -> Option<i32> {
        self.0.limits.notification_max_age_days
    }

    /// Audit entries are removed once they were recorded this many days ago; null: the
    /// audit log is kept.
    async fn audit_max_age_days(&self) -> Option<i32> {
        self.0.limits.audit_max_age_days
    }

    /// When an admin last changed the policy; null while it was never set.
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at.map(|at| at.and_utc())
    }
}

/// What a retention policy would remove at one moment.
#[derive(SimpleObject)]
pub struct RetentionPreview {
    /// Finished runs it removes.
    pub runs: i64,
    /// Health logs removed with those runs.
    pub health_logs: i64,
    /// Notifications it removes.
    pub notifications: i64,
    /// Audit entries it removes.
    pub audit_entries: i64,
    /// The moment the counts are for; rows that age past a limit later are removed too.
    pub as_of: DateTime<Utc>,
}

#[derive(Default)]
pub struct RetentionQuery;

#[Object]
impl RetentionQuery {
    /// The company's retention policy (no limits until an admin sets one). Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn retention_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<RetentionPolicy> {
        let viewer = ctx.viewer()?;
        let policy = domain::retention::policy(ctx.db(), &viewer.tenant).await?;
        Ok(RetentionPolicy(policy))
    }

    /// What a retention policy would remove now: the one given, or the company's own.
    /// Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn retention_preview(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A policy to try before saving it; absent: the company's policy.")]
        policy: Option<RetentionPolicyInput>,
    ) -> async_graphql::Result<RetentionPreview> {
        let viewer = ctx.viewer()?;
        let preview = domain::retention::preview(
            ctx.db(),
            &ctx.services().statistics,
            &viewer.tenant,
            policy.map(Limits::from),
        )
        .await?;
        Ok(RetentionPreview {
            runs: preview.runs,
            health_logs: preview.health_logs,
            notifications: preview.notifications,
            audit_entries: preview.audit_entries,
            as_of: preview.as_of.and_utc(),
        })
    }
}

#[derive(Default)]
pub struct RetentionMutation;

#[Object]
impl RetentionMutation {
    /// Replaces the company's retention policy (an absent limit keeps forever) and answers
    /// it. The sweep applies it within the sweep interval. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn update_retention_policy(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The whole policy.")] policy: RetentionPolicyInput,
    ) -> async_graphql::Result<RetentionPolicy> {
        let viewer = ctx.viewer()?;
        let policy = domain::retention::update(ctx.db(), &viewer.tenant, policy.into()).await?;
        Ok(RetentionPolicy(policy))
    }
}
