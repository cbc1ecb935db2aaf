//! Retention: how long each company keeps finished runs (with their health logs),
//! notifications and its audit log, a preview of what that removes now, and the sweeper
//! that removes it.
//!
//! # The rules
//! A company's policy has four optional limits (none set: everything is kept):
//! - `run_max_age_days`: a finished run goes once it was created that many days ago;
//! - `runs_kept_per_workflow`: a finished run goes once its workflow has that many newer
//!   runs (of any status);
//! - `notification_max_age_days`: a notification goes once it was created that many days
//!   ago, read or not;
//! - `audit_max_age_days`: an audit entry goes once it was recorded that many days ago. The
//!   audit log keeps its own, longer period: at least [`MIN_AUDIT_DAYS`], and never shorter
//!   than the run or notification limit, so the record of who did what outlives what it
//!   was done to.
//!
//! Either run limit removes a run (as n8n prunes executions by age and by count). Queued,
//! running and paused runs are never removed, and their health logs stay with them; the
//! health logs of a removed run go with it. [`preview`] counts what the limits remove at
//! this moment; the sweep then removes exactly that (plus whatever ages past a limit in
//! between).
//!
//! # The sweep
//! Every instance runs [`sweep`] every `--retention-sweep-interval-seconds`. A company is
//! due once its `next_sweep_at` has passed (a policy change makes it due at once). An
//! instance claims a due company with one conditional update (`claimed_by`, and a lease
//! `claimed_until`), so two instances never sweep one company at once; another instance
//! takes over only after the lease ran out, and the first then stops at its next batch.
//! The company is swept in batches of `--retention-batch-size`, each its own short
//! transaction that first renews the lease and checks that the policy is still the one
//! the pass started with (a changed policy ends the pass; the next one applies the new
//! policy). A batch of runs removes at most that many health logs and, once their logs are
//! gone, that many runs, so no transaction grows with the data. What is removed is counted
//! in `stepwise_retention_removed_total{kind}` on `/metrics`.
//!
//! Lock order: the policy row is taken first (renewing the lease), then runs in id order
//! (see the `domain` docs), so a sweep and a workflow deletion never wait on each other in
//! a circle.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::upsert::excluded;

use serde_json::json;

use super::audit::{self, Action, Target};
use super::statistics::StatisticsGate;
use super::{Tenant, now, run};
use crate::db::retention::{ExpiredCounts, ExpiredRuns, RunId};
use crate::db::schema::{audit_log, health_logs, notifications, retention_policies, runs};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};
use crate::metrics::METRICS;

/// The longest age limit, in days (ten years).
pub const MAX_DAYS: i32 = 3_650;
/// The most runs a workflow may be told to keep; the sweep walks that many index entries
/// per workflow for each batch.
pub const MAX_RUNS_KEPT: i32 = 10_000;
/// The shortest audit-log retention, in days.
pub const MIN_AUDIT_DAYS: i32 = 30;

/// How long a claim on a company holds without being renewed by a batch.
const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// Batches one pass over a company runs before it lets other due companies go first.
const MAX_BATCHES_PER_PASS: usize = 200;
/// Company passes one sweep makes at most (it resumes at the next interval).
const MAX_PASSES_PER_SWEEP: usize = 1_000;
/// Due companies read at a time.
const DUE_PAGE: i64 = 20;

/// A company's retention limits; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub run_max_age_days: Option<i32>,
    pub runs_kept_per_workflow: Option<i32>,
    pub notification_max_age_days: Option<i32>,
    pub audit_max_age_days: Option<i32>,
}

impl Limits {
    /// Checks each limit; `field` prefixes the names in errors (e.g. `policy`).
    pub fn validate(self, field: &str) -> AppResult<Self> {
        let check = |name: &str, value: Option<i32>, max: i32| -> AppResult<()> {
            match value {
                Some(v) if !(1..=max).contains(&v) => Err(AppError::bad_input(
                    format!("{field}.{name}"),
                    format!("{field}.{name} must be between 1 and {max}, or null for no limit"),
                )),
                _ => Ok(()),
            }
        };
        check("runMaxAgeDays", self.run_max_age_days, MAX_DAYS)?;
        check(
            "runsKeptPerWorkflow",
            self.runs_kept_per_workflow,
            MAX_RUNS_KEPT,
        )?;
        check(
            "notificationMaxAgeDays",
            self.notification_max_age_days,
            MAX_DAYS,
        )?;
        if let Some(audit) = self.audit_max_age_days {
            let longest_other = [self.run_max_age_days, self.notification_max_age_days]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
            let min = MIN_AUDIT_DAYS.max(longest_other);
            if !(min..=MAX_DAYS).contains(&audit) {
                return Err(AppError::bad_input(
                    format!("{field}.auditMaxAgeDays"),
                    format!(
                        "{field}.auditMaxAgeDays must be between {min} and {MAX_DAYS} (at least \
                         {MIN_AUDIT_DAYS} days, and no shorter than the run and notification \
                         limits), or null to keep the audit log"
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// The runs these limits remove at `at`; `None` when no run limit is set.
    fn expired_runs(&self, at: NaiveDateTime) -> Option<ExpiredRuns> {
        let finished = run::Status::ALL
            .iter()
            .filter(|status| status.is_finished())
            .map(|status| status.as_str())
            .collect();
        ExpiredRuns::new(
            finished,
            self.run_max_age_days.and_then(|days| days_before(at, days)),
            self.runs_kept_per_workflow.map(i64::from),
        )
    }

    /// Notifications created before this go.
    fn notification_cutoff(&self, at: NaiveDateTime) -> Option<NaiveDateTime> {
        self.notification_max_age_days
            .and_then(|days| days_before(at, days))
    }

    /// Audit entries recorded before this go.
    fn audit_cutoff(&self, at: NaiveDateTime) -> Option<NaiveDateTime> {
        self.audit_max_age_days
            .and_then(|days| days_before(at, days))
    }
}

fn days_before(at: NaiveDateTime, days: i32) -> Option<NaiveDateTime> {
    at.checked_sub_signed(TimeDelta::days(i64::from(days)))
}

/// The stored policy of one company, with the sweep's bookkeeping.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = retention_policies, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
// Every column is written explicitly: None means NULL (no limit), not the column default.
#[diesel(treat_none_as_default_value = false)]
struct PolicyRow {
    company_id: String,
    run_max_age_days: Option<i32>,
    runs_kept_per_workflow: Option<i32>,
    notification_max_age_days: Option<i32>,
    /// One more with every change of the limits.
    version: i64,
    updated_at: NaiveDateTime,
    next_sweep_at: NaiveDateTime,
    claimed_by: Option<String>,
    claimed_until: Option<NaiveDateTime>,
    audit_max_age_days: Option<i32>,
}

impl TenantRow for PolicyRow {
    type Table = retention_policies::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl PolicyRow {
    fn limits(&self) -> Limits {
        Limits {
            run_max_age_days: self.run_max_age_days,
            runs_kept_per_workflow: self.runs_kept_per_workflow,
            notification_max_age_days: self.notification_max_age_days,
            audit_max_age_days: self.audit_max_age_days,
        }
    }
}

/// A company's policy as members see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limits: Limits,
    /// When an admin last changed it; `None` while it was never set.
    pub updated_at: Option<NaiveDateTime>,
}

/// The tenant's policy (no limits while none was set).
pub async fn policy(db: &Db, tenant: &Tenant) -> AppResult<Policy> {
    let mut tx = db.read(tenant).await?;
    Ok(stored(&mut tx).await?.map_or(
        Policy {
            limits: Limits::default(),
            updated_at: None,
        },
        |row| Policy {
            limits: row.limits(),
            updated_at: Some(row.updated_at),
        },
    ))
}

async fn stored<E: Send>(tx: &mut Tx<E>) -> AppResult<Option<PolicyRow>> {
    tx.optional(tx.retention_policies().select(PolicyRow::columns()))
        .await
}

/// Replaces the tenant's limits (all of them: an absent limit keeps forever). The company
/// is swept at the next interval of any instance; a sweep in progress stops at its next
/// batch.
pub async fn update(db: &Db, tenant: &Tenant, limits: Limits) -> AppResult<Policy> {
    let limits = limits.validate("policy")?;
    let row = db
        .write(tenant, |tx| updated(tx, limits).into_work())
        .await?;
    Ok(Policy {
        limits: row.limits(),
        updated_at: Some(row.updated_at),
    })
}

async fn updated(tx: &mut Tx<NoEvents>, limits: Limits) -> AppResult<PolicyRow> {
    use retention_policies::dsl as p;
    let before = stored(tx)
        .await?
        .map(|row| row.limits())
        .unwrap_or_default();
    let at = now();
    let mut row = PolicyRow {
        company_id: tx.tenant().id().to_owned(),
        run_max_age_days: limits.run_max_age_days,
        runs_kept_per_workflow: limits.runs_kept_per_workflow,
        notification_max_age_days: limits.notification_max_age_days,
        version: 1,
        updated_at: at,
        next_sweep_at: at,
        claimed_by: None,
        claimed_until: None,
        audit_max_age_days: limits.audit_max_age_days,
    };
    tx.insert_with(&mut row, |insert| {
        insert.on_conflict(p::company_id).do_update().set((
            p::run_max_age_days.eq(excluded(p::run_max_age_days)),
            p::runs_kept_per_workflow.eq(excluded(p::runs_kept_per_workflow)),
            p::notification_max_age_days.eq(excluded(p::notification_max_age_days)),
            p::audit_max_age_days.eq(excluded(p::audit_max_age_days)),
            p::version.eq(p::version + 1),
            p::updated_at.eq(excluded(p::updated_at)),
            p::next_sweep_at.eq(excluded(p::next_sweep_at)),
        ))
    })
    .await
    .map_err(company_gone)?;
    let company = tx.tenant().id().to_owned();
    audit::record(
        tx,
        Action::RetentionPolicyUpdated,
        Target::company(&company),
        json!({ "before": before.summary(), "after": limits.summary() }),
    )
    .await?;
    stored(tx).await?.ok_or_else(|| {
        AppError::internal(anyhow::anyhow!("a retention policy just written is gone"))
    })
}

impl Limits {
    /// The limits as the audit log shows them.
    fn summary(&self) -> serde_json::Value {
        json!({
            "runMaxAgeDays": self.run_max_age_days,
            "runsKeptPerWorkflow": self.runs_kept_per_workflow,
            "notificationMaxAgeDays": self.notification_max_age_days,
            "auditMaxAgeDays": self.audit_max_age_days,
        })
    }
}

/// The company of a verified token was deleted: answered like its account is.
fn company_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::Unauthenticated("this account no longer exists")
    } else {
        error
    }
}

/// What a policy removes at `as_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    pub runs: i64,
    pub health_logs: i64,
    pub notifications: i64,
    pub audit_entries: i64,
    pub as_of: NaiveDateTime,
}

/// What `limits` (or, without them, the tenant's policy) would remove now. Counting a
/// company's history is the statistics' kind of work, so it takes a turn at the same gate.
pub async fn preview(
    db: &Db,
    gate: &StatisticsGate,
    tenant: &Tenant,
    limits: Option<Limits>,
) -> AppResult<Preview> {
    let limits = limits.map(|l| l.validate("policy")).transpose()?;
    let _turn = gate.enter().await?;
    let as_of = now();
    let mut tx = db.read(tenant).await?;
    let limits = match limits {
        Some(limits) => limits,
        None => stored(&mut tx)
            .await?
            .map(|row| row.limits())
            .unwrap_or_default(),
    };
    let (runs, health_logs) = match limits.expired_runs(as_of) {
        Some(expired) => {
            let counts: Vec<ExpiredCounts> = tx.load_statement(&expired.counts()).await?;
            counts.first().map_or((0, 0), |c| (c.runs, c.health_logs))
        }
        None => (0, 0),
    };
    let notifications = match limits.notification_cutoff(as_of) {
        Some(cutoff) => {
            tx.one(
                tx.notifications()
                    .filter(notifications::created_at.lt(cutoff))
                    .count(),
            )
            .await?
        }
        None => 0,
    };
    let audit_entries = match limits.audit_cutoff(as_of) {
        Some(cutoff) => {
            tx.one(
                tx.audit_log()
                    .filter(audit_log::created_at.lt(cutoff))
                    .count(),
            )
            .await?
        }
        None => 0,
    };
    Ok(Preview {
        runs,
        health_logs,
        notifications,
        audit_entries,
        as_of,
    })
}

/// How the sweep runs on this instance.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Rows one batch (one transaction) removes at most, per table.
    pub batch_size: i64,
    /// How long after a complete pass a company is due again.
    pub interval: Duration,
    /// This instance, in claims.
    pub instance: String,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Passes over a company (a company with much to remove takes several).
    pub passes: usize,
    pub batches: usize,
    pub runs: usize,
    pub health_logs: usize,
    pub notifications: usize,
    pub audit_entries: usize,
}

/// Sweeps every due company this instance can claim; `stop` ends it between batches
/// (shutdown). Errors of one company are logged and leave it for a later sweep.
pub async fn sweep(
    db: &Db,
    settings: &SweepSettings,
    stop: &(dyn Fn() -> bool + Send + Sync),
) -> AppResult<Swept> {
    let mut swept = Swept::default();
    let mut passes = 0;
    while passes < MAX_PASSES_PER_SWEEP && !stop() {
        let due = due_companies(db).await?;
        let mut claimed_any = false;
        for company in due {
            if stop() || passes >= MAX_PASSES_PER_SWEEP {
                break;
            }
            let Some(row) = claim(db, settings, &company).await? else {
                continue;
            };
            claimed_any = true;
            passes += 1;
            swept.passes += 1;
            let tenant = Tenant::new(company);
            let end = match sweep_company(db, settings, &tenant, &row, stop, &mut swept).await {
                Ok(end) => end,
                Err(error) => {
                    tracing::warn!(company_id = %tenant.id(), ?error, "retention sweep of a company failed; retrying after the interval");
                    PassEnd::Done
                }
            };
            let version = row.version;
            db.write(&tenant, |tx| {
                released(tx, settings, version, end).into_work()
            })
            .await?;
        }
        if !claimed_any {
            break;
        }
    }
    Ok(swept)
}

/// Companies whose sweep is due and not claimed, longest due first (across companies).
async fn due_companies(db: &Db) -> AppResult<Vec<String>> {
    use retention_policies::dsl as p;
    let at = now();
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.retention_policies()
            .filter(p::next_sweep_at.le(at))
            .filter(p::claimed_until.is_null().or(p::claimed_until.lt(at)))
            .order((p::next_sweep_at.asc(), p::company_id.asc()))
            .limit(DUE_PAGE)
            .select(p::company_id),
    )
    .await
}

/// Claims `company` for this instance if it is still due and unclaimed (one conditional
/// update, so only one instance wins); answers its policy then.
async fn claim(db: &Db, settings: &SweepSettings, company: &str) -> AppResult<Option<PolicyRow>> {
    db.write(&Tenant::new(company.to_owned()), |tx| {
        claimed(tx, settings).into_work()
    })
    .await
}

async fn claimed(tx: &mut Tx<NoEvents>, settings: &SweepSettings) -> AppResult<Option<PolicyRow>> {
    use retention_policies::dsl as p;
    let at = now();
    let until = lease_end(at)?;
    let rows: Vec<PolicyRow> = tx
        .load(
            tx.retention_policies()
                .filter(p::next_sweep_at.le(at))
                .filter(p::claimed_until.is_null().or(p::claimed_until.lt(at)))
                .set((
                    p::claimed_by.eq(&settings.instance),
                    p::claimed_until.eq(until),
                ))
                .returning(PolicyRow::columns()),
        )
        .await?;
    Ok(rows.into_iter().next())
}

fn lease_end(at: NaiveDateTime) -> AppResult<NaiveDateTime> {
    let lease = TimeDelta::from_std(CLAIM_LEASE).map_err(AppError::internal)?;
    Ok(at.checked_add_signed(lease).unwrap_or(at))
}

/// How a pass over one company ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassEnd {
    /// Nothing left to remove: due again after the interval.
    Done,
    /// Stopped with work left (batch cap, shutdown): due again at once.
    Paused,
    /// The policy changed or the claim was lost: left as the change made it.
    Superseded,
}

/// One pass of the sweep over one company.
struct Pass<'a> {
    settings: &'a SweepSettings,
    version: i64,
    runs: Option<ExpiredRuns>,
    notifications_before: Option<NaiveDateTime>,
    audit_before: Option<NaiveDateTime>,
    finished: Vec<run::Status>,
}

async fn sweep_company(
    db: &Db,
    settings: &SweepSettings,
    tenant: &Tenant,
    row: &PolicyRow,
    stop: &(dyn Fn() -> bool + Send + Sync),
    swept: &mut Swept,
) -> AppResult<PassEnd> {
    let at = now();
    let limits = row.limits();
    let pass = Pass {
        settings,
        version: row.version,
        runs: limits.expired_runs(at),
        notifications_before: limits.notification_cutoff(at),
        audit_before: limits.audit_cutoff(at),
        finished: run::Status::ALL
            .iter()
            .copied()
            .filter(|s| s.is_finished())
            .collect(),
    };
    let pass = &pass;
    let mut batches = 0;
    if pass.runs.is_some() {
        loop {
            if stop() || batches >= MAX_BATCHES_PER_PASS {
                return Ok(PassEnd::Paused);
            }
            let Some(batch) = db
                .write(tenant, |tx| run_batch(tx, pass).into_work())
                .await?
            else {
                return Ok(PassEnd::Superseded);
            };
            batches += 1;
            batch.count(swept);
            // Nothing selected, or nothing could be removed of what was (another instance
            // that took over got there first): the runs are done.
            if batch.selected == 0 || batch.runs + batch.health_logs == 0 {
                break;
            }
        }
    }
    for aged in [Aged::Notifications, Aged::AuditEntries] {
        if aged.cutoff(pass).is_none() {
            continue;
        }
        loop {
            if stop() || batches >= MAX_BATCHES_PER_PASS {
                return Ok(PassEnd::Paused);
            }
            let Some(batch) = db
                .write(tenant, |tx| aged_batch(tx, pass, aged).into_work())
                .await?
            else {
                return Ok(PassEnd::Superseded);
            };
            batches += 1;
            batch.count(swept);
            let full =
                i64::try_from(batch.selected).unwrap_or(i64::MAX) >= pass.settings.batch_size;
            if !full || batch.notifications + batch.audit_entries == 0 {
                break;
            }
        }
    }
    Ok(PassEnd::Done)
}

/// What one batch removed.
#[derive(Debug, Clone, Copy, Default)]
struct Batch {
    selected: usize,
    runs: usize,
    health_logs: usize,
    notifications: usize,
    audit_entries: usize,
}

impl Batch {
    /// Adds the batch to the sweep's tally and to `/metrics`.
    fn count(&self, swept: &mut Swept) {
        swept.batches += 1;
        swept.runs += self.runs;
        swept.health_logs += self.health_logs;
        swept.notifications += self.notifications;
        swept.audit_entries += self.audit_entries;
        METRICS.retention_batches.inc();
        for (kind, removed) in [
            ("runs", self.runs),
            ("health_logs", self.health_logs),
            ("notifications", self.notifications),
            ("audit_entries", self.audit_entries),
        ] {
            if removed > 0 {
                METRICS.retention_removed(kind, removed);
            }
        }
    }
}

/// Renews the claim if the policy is still the pass's version and still claimed by this
/// instance; `false` ends the pass. The first statement of every batch: it takes the
/// policy row first (the lock order) and holds it until the batch commits, so no other
/// instance can claim the company in the middle of a batch.
async fn renewed(tx: &mut Tx<NoEvents>, pass: &Pass<'_>) -> AppResult<bool> {
    use retention_policies::dsl as p;
    let until = lease_end(now())?;
    let renewed = tx
        .execute(
            tx.retention_policies()
                .filter(p::version.eq(pass.version))
                .filter(p::claimed_by.eq(&pass.settings.instance))
                .set(p::claimed_until.eq(until)),
        )
        .await?;
    Ok(renewed == 1)
}

/// Removes up to a batch of health logs of the oldest expired runs and, once those runs
/// have no logs left, the runs; `None` when the pass is superseded.
async fn run_batch(tx: &mut Tx<NoEvents>, pass: &Pass<'_>) -> AppResult<Option<Batch>> {
    let Some(expired) = &pass.runs else {
        return Ok(Some(Batch::default()));
    };
    if !renewed(tx, pass).await? {
        return Ok(None);
    }
    let size = pass.settings.batch_size;
    let ids: Vec<RunId> = tx.load_statement(&expired.batch(size)).await?;
    let ids: Vec<String> = ids.into_iter().map(|row| row.id).collect();
    if ids.is_empty() {
        return Ok(Some(Batch::default()));
    }
    // Runs before their logs, in id order, as a workflow deletion takes them.
    tx.lock_rows(Lock::Update, runs::id, &ids).await?;
    // Ids first, then the delete by id: a table cannot appear in its own subquery in
    // diesel's DSL, and a batch's ids are few.
    let logs: Vec<String> = tx
        .load(
            tx.health_logs()
                .filter(health_logs::run_id.eq_any(&ids))
                .select(health_logs::id)
                .limit(size),
        )
        .await?;
    let health_logs = if logs.is_empty() {
        0
    } else {
        tx.execute(
            tx.health_logs()
                .filter(health_logs::id.eq_any(&logs))
                .delete(),
        )
        .await?
    };
    let runs = if i64::try_from(health_logs).unwrap_or(i64::MAX) < size {
        // Finished runs only, whatever the selection said: a finished run never starts
        // again, and nothing else may go.
        tx.execute(
            tx.runs()
                .filter(runs::id.eq_any(&ids))
                .filter(runs::status.eq_any(pass.finished.clone()))
                .delete(),
        )
        .await?
    } else {
        0
    };
    Ok(Some(Batch {
        selected: ids.len(),
        runs,
        health_logs,
        ..Batch::default()
    }))
}

/// The rows that go by age alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aged {
    Notifications,
    AuditEntries,
}

impl Aged {
    fn cutoff(self, pass: &Pass<'_>) -> Option<NaiveDateTime> {
        match self {
            Self::Notifications => pass.notifications_before,
            Self::AuditEntries => pass.audit_before,
        }
    }
}

/// Removes up to a batch of `aged` rows past their cutoff; `None` when the pass is
/// superseded.
async fn aged_batch(
    tx: &mut Tx<NoEvents>,
    pass: &Pass<'_>,
    aged: Aged,
) -> AppResult<Option<Batch>> {
    let Some(before) = aged.cutoff(pass) else {
        return Ok(Some(Batch::default()));
    };
    if !renewed(tx, pass).await? {
        return Ok(None);
    }
    let size = pass.settings.batch_size;
    // Ids first, then the delete by id: a table cannot appear in its own subquery in
    // diesel's DSL, and a batch's ids are few.
    let expired: Vec<String> = match aged {
        Aged::Notifications => {
            tx.load(
                tx.notifications()
                    .filter(notifications::created_at.lt(before))
                    .select(notifications::id)
                    .limit(size),
            )
            .await?
        }
        Aged::AuditEntries => {
            tx.load(
                tx.audit_log()
                    .filter(audit_log::created_at.lt(before))
                    .select(audit_log::id)
                    .limit(size),
            )
            .await?
        }
    };
    if expired.is_empty() {
        return Ok(Some(Batch::default()));
    }
    let removed = match aged {
        Aged::Notifications => {
            tx.execute(
                tx.notifications()
                    .filter(notifications::id.eq_any(&expired))
                    .delete(),
            )
            .await?
        }
        Aged::AuditEntries => {
            tx.execute(
                tx.audit_log()
                    .filter(audit_log::id.eq_any(&expired))
                    .delete(),
            )
            .await?
        }
    };
    let mut batch = Batch {
        selected: expired.len(),
        ..Batch::default()
    };
    match aged {
        Aged::Notifications => batch.notifications = removed,
        Aged::AuditEntries => batch.audit_entries = removed,
    }
    Ok(Some(batch))
}

/// Ends this instance's claim on the company and schedules its next pass.
async fn released(
    tx: &mut Tx<NoEvents>,
    settings: &SweepSettings,
    version: i64,
    end: PassEnd,
) -> AppResult<()> {
    use retention_policies::dsl as p;
    let at = now();
    let next = match end {
        PassEnd::Done => TimeDelta::from_std(settings.interval)
            .ok()
            .and_then(|interval| at.checked_add_signed(interval)),
        PassEnd::Paused => Some(at),
        PassEnd::Superseded => None,
    };
    if let Some(next) = next {
        tx.execute(
            tx.retention_policies()
                .filter(p::claimed_by.eq(&settings.instance))
                .filter(p::version.eq(version))
                .set(p::next_sweep_at.eq(next)),
        )
        .await?;
    }
    tx.execute(
        tx.retention_policies()
            .filter(p::claimed_by.eq(&settings.instance))
            .set((
                p::claimed_by.eq(None::<String>),
                p::claimed_until.eq(None::<NaiveDateTime>),
            )),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: AppResult<Limits>) -> Option<String> {
        match result {
            Err(AppError::BadUserInput { field, .. }) => field,
            _ => None,
        }
    }

    #[test]
    fn limits_are_bounded() {
        let ok = Limits {
            run_max_age_days: Some(30),
            runs_kept_per_workflow: Some(MAX_RUNS_KEPT),
            notification_max_age_days: None,
            audit_max_age_days: Some(365),
        };
        assert_eq!(ok.validate("policy").ok(), Some(ok));
        for (bad, field) in [
            (
                Limits {
                    run_max_age_days: Some(0),
                    ..Limits::default()
                },
                "policy.runMaxAgeDays",
            ),
            (
                Limits {
                    runs_kept_per_workflow: Some(MAX_RUNS_KEPT + 1),
                    ..Limits::default()
                },
                "policy.runsKeptPerWorkflow",
            ),
            (
                Limits {
                    notification_max_age_days: Some(-3),
                    ..Limits::default()
                },
                "policy.notificationMaxAgeDays",
            ),
            (
                Limits {
                    audit_max_age_days: Some(MIN_AUDIT_DAYS - 1),
                    ..Limits::default()
                },
                "policy.auditMaxAgeDays",
            ),
            (
                Limits {
                    run_max_age_days: Some(90),
                    audit_max_age_days: Some(60),
                    ..Limits::default()
                },
                "policy.auditMaxAgeDays",
            ),
        ] {
            assert_eq!(field_of(bad.validate("policy")).as_deref(), Some(field));
        }
    }

    #[test]
    fn only_finished_runs_expire() {
        let at = now();
        let limits = Limits {
            run_max_age_days: Some(1),
            ..Limits::default()
        };
        assert!(limits.expired_runs(at).is_some());
        assert!(Limits::default().expired_runs(at).is_none());
        assert_eq!(
            limits.notification_cutoff(at),
            None,
            "no notification limit"
        );
    }
}
