//! The run queue: `enqueueRun`, `claimRun`, `heartbeatRun` and `retryRun`, and the lease
//! a claim hands out. (`runQueued`, which wakes idle executors, is with the other
//! subscriptions.)

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::run::Run;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::run::queue::{Enqueue, Lease};

/// What made a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::run::Trigger")]
pub enum RunTrigger {
    /// Started at once by `startRun`.
    Manual,
    /// Queued by `enqueueRun`.
    Queue,
    /// Queued by a schedule (`Run.schedule`).
    Schedule,
    /// Queued by a signed request to a webhook (`Run.webhook`).
    Webhook,
    /// Queued by `retryRun` (`Run.retryOf`).
    Retry,
}

/// A run to queue for an executor.
#[derive(InputObject)]
pub struct EnqueueRunInput {
    /// The workflow to run: ACTIVE or NEEDS_REVIEW.
    pub workflow_id: ID,
    /// Handed to the executor as `Run.input`: any JSON value, at most 64 KiB serialised
    /// (`--run-json-max-bytes`).
    pub input: Option<serde_json::Value>,
    /// Claimed before runs of lower priority: -1,000 to 1,000, default 0.
    pub priority: Option<i32>,
    /// Not claimable before this time (at most a year ahead); a past time means now.
    pub not_before: Option<DateTime<Utc>>,
    /// Claims the run may take before an expired lease fails it: 1 to 20, default 3.
    pub max_attempts: Option<i32>,
    /// 1 to 200 characters. Enqueueing again with the same key returns the run queued the
    /// first time (whatever else is sent) instead of queueing another.
    pub idempotency_key: Option<String>,
}

/// A claimed run and the lease its executor holds on it.
pub struct RunLease {
    lease: Lease,
    viewer: Viewer,
}

/// A claimed run and the lease its executor holds on it. Renew the lease with
/// `heartbeatRun` before it expires, or the run goes back to the queue (or fails after
/// `maxAttempts` claims).
#[Object]
impl RunLease {
    /// The proof that this executor holds the run: pass it to `heartbeatRun`, and to
    /// `reportStep`/`finishRun` to be refused (CONFLICT) once the claim has lapsed.
    async fn lease_id(&self) -> ID {
        ID(self.lease.lease_id.clone())
    }

    /// When the lease lapses unless renewed; null while the run is paused.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.lease.run.lease_expires_at.map(|at| at.and_utc())
    }

    /// The run, now RUNNING (`attempt` counts this claim).
    async fn run(&self) -> Run {
        Run {
            row: self.lease.run.clone(),
            viewer: self.viewer.clone(),
        }
    }
}

#[derive(Default)]
pub struct QueueMutation;

#[Object]
impl QueueMutation {
    /// Queues a run of an ACTIVE or NEEDS_REVIEW workflow for an executor to claim: QUEUED,
    /// `trigger` QUEUE, `startedBy` the viewer. Idle executors subscribed to `runQueued`
    /// hear of it.
    async fn enqueue_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run to queue.")] input: EnqueueRunInput,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let request = Enqueue {
            workflow_id: input.workflow_id.0,
            input: input.input,
            priority: input.priority,
            not_before: input.not_before.map(super::health_log::stored_precision),
            max_attempts: input.max_attempts,
            idempotency_key: input.idempotency_key,
        };
        let row = domain::run::queue::enqueue(
            ctx.db(),
            &services.events,
            &viewer.tenant,
            viewer.user_id(),
            request,
            services.queue.max_json_bytes,
        )
        .await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Hands the next claimable QUEUED run to the caller, atomically: highest priority
    /// first, then the one waiting longest. It starts RUNNING under a lease. Null when
    /// nothing is claimable: poll, or wait for `runQueued`. Any number of executors on any
    /// number of instances may claim at once; each run goes to one.
    async fn claim_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only runs of these workflows (at most 100); empty or absent: any workflow."
        )]
        workflow_ids: Option<Vec<ID>>,
        #[graphql(
            desc = "How long the lease lasts without a heartbeat: 1 to 3,600 seconds, \
                          default 60."
        )]
        lease_seconds: Option<i32>,
    ) -> async_graphql::Result<Option<RunLease>> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let lease = domain::run::queue::claim(
            ctx.db(),
            &services.events,
            &viewer.tenant,
            workflow_ids.map(|ids| ids.into_iter().map(|id| id.0).collect()),
            lease_seconds,
        )
        .await?;
        Ok(lease.map(|lease| RunLease {
            lease,
            viewer: viewer.clone(),
        }))
    }

    /// Renews a lease for `leaseSeconds` from now. CONFLICT when the lease is no longer the
    /// run's (it expired and the run was re-queued, or the run ended): stop working on it.
    /// A heartbeat changes no run state (no `runUpdated` event).
    async fn heartbeat_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The claimed run.")] run_id: ID,
        #[graphql(desc = "The lease `claimRun` gave.")] lease_id: ID,
        #[graphql(desc = "The new lease length: 1 to 3,600 seconds, default 60.")]
        lease_seconds: Option<i32>,
    ) -> async_graphql::Result<RunLease> {
        let viewer = ctx.viewer()?;
        let lease = domain::run::queue::heartbeat(
            ctx.db(),
            &viewer.tenant,
            &run_id,
            &lease_id,
            lease_seconds,
        )
        .await?;
        Ok(RunLease {
            lease,
            viewer: viewer.clone(),
        })
    }

    /// Queues a new run retrying a finished run on its workflow's current steps: same input,
    /// priority and `maxAttempts`, `trigger` RETRY, linked both ways (`Run.retryOf`,
    /// `Run.retries`). The workflow must be ACTIVE or NEEDS_REVIEW.
    async fn retry_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The finished run to retry.")] run_id: ID,
        #[graphql(
            desc = "Start from this step of the workflow (as it is now); absent: from the first."
        )]
        from_step: Option<ID>,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let row = domain::run::queue::retry(
            ctx.db(),
            &services.events,
            &viewer.tenant,
            viewer.user_id(),
            &run_id,
            from_step.as_ref().map(|id| id.as_str()),
        )
        .await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }
}
