//! Schedules: a workflow queued on a cron expression in an IANA time zone.
//!
//! A schedule keeps its next occurrence (`next_fire_at`, NULL while paused). Every instance
//! runs the scheduler ([`fire_due`]); a due schedule is fired by the instance whose
//! conditional update still finds that occurrence, under the schedule's row lock, so each
//! occurrence queues exactly one run across instances (its idempotency key makes a second
//! one impossible even so). The next occurrence is the first one after *now*, not after
//! the one fired: occurrences missed while every instance was down collapse into one
//! catch-up run instead of a burst.

use std::str::FromStr as _;

use chrono::{NaiveDateTime, SubsecRound as _};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use diesel::prelude::*;
use serde_json::Value;

use super::event::{EventKind, Events};
use super::run::Trigger;
use super::run::queue::{DEFAULT_MAX_ATTEMPTS, NewQueuedRun, insert_queued, json_document};
use super::{Tenant, new_id, now, refuse_nul};
use crate::db::schema::{schedules, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Schedules one workflow may have.
pub const MAX_PER_WORKFLOW: i64 = 20;
pub const MAX_CRON_CHARS: usize = 100;
pub const MAX_TIMEZONE_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 200;
/// Due schedules one scheduler tick fires at most; the next tick takes the rest.
const FIRE_BATCH: i64 = 200;
/// The longest `last_error` kept.
const MAX_ERROR_CHARS: usize = 500;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, Identifiable)]
#[diesel(table_name = schedules, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct Schedule {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub name: Option<String>,
    pub cron: String,
    pub timezone: String,
    /// JSON text each run gets as its input.
    pub input: Option<String>,
    pub priority: i32,
    pub enabled: bool,
    pub next_fire_at: Option<NaiveDateTime>,
    pub last_fired_at: Option<NaiveDateTime>,
    pub last_run_id: Option<String>,
    /// Why the last occurrence queued no run (the workflow was not runnable).
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantRow for Schedule {
    type Table = schedules::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// How cron expressions are read. Five fields (minute, hour, day of month, month, day
/// of week); `allow_seconds` (a test setting) also takes a sixth, leading seconds field.
#[derive(Debug, Clone, Copy, Default)]
pub struct CronRules {
    pub allow_seconds: bool,
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl CronRules {
    /// Parses `cron` and `timezone`; BAD_USER_INPUT naming the field at fault.
    pub fn timing(&self, cron: &str, timezone: &str) -> AppResult<Timing> {
        let cron = cron.trim();
        if cron.is_empty() || cron.chars().count() > MAX_CRON_CHARS {
            return Err(AppError::bad_input(
                "cron",
                format!("cron must be 1 to {MAX_CRON_CHARS} characters long"),
            ));
        }
        let parser = CronParser::builder()
            .seconds(if self.allow_seconds {
                Seconds::Optional
            } else {
                Seconds::Disallowed
            })
            .year(Year::Disallowed)
            .build();
        let parsed = parser.parse(cron).map_err(|error| {
            AppError::bad_input(
                "cron",
                format!(
                    "cron is not a valid 5-field cron expression \
                     (minute hour day-of-month month day-of-week): {error}"
                ),
            )
        })?;
        let zone = timezone.trim();
        if zone.is_empty() || zone.len() > MAX_TIMEZONE_CHARS {
            return Err(AppError::bad_input(
                "timezone",
                "timezone must be an IANA time zone name such as Europe/Berlin or UTC",
            ));
        }
        let zone = chrono_tz::Tz::from_str(zone).map_err(|_| {
            AppError::bad_input(
                "timezone",
                format!(
                    "timezone {zone:?} is not an IANA time zone name (e.g. Europe/Berlin, UTC)"
                ),
            )
        })?;
        Ok(Timing { cron: parsed, zone })
    }
}

impl Timing {
    /// The first occurrence strictly after `after` (UTC), as UTC; `None` when the
    /// expression never fires again.
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let local = after.and_utc().with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|at| at.naive_utc().trunc_subsecs(6))
    }

    /// The next occurrence after now, or BAD_USER_INPUT on `cron` when there is none.
    fn first(&self, at: NaiveDateTime) -> AppResult<NaiveDateTime> {
        self.next_after(at)
            .ok_or_else(|| AppError::bad_input("cron", "cron never fires (no such date)"))
    }

    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }
}

/// A new schedule, or the fields an update sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ScheduleInput {
    pub name: Option<Option<String>>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub input: Option<Option<Value>>,
    pub priority: Option<i32>,
}

fn name(value: Option<String>) -> AppResult<Option<String>> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(value) = &value {
        if value.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(
                "name",
                format!("name must be at most {MAX_NAME_CHARS} characters long"),
            ));
        }
        refuse_nul("name", value)?;
    }
    Ok(value)
}

/// Creates a schedule of the tenant's workflow `workflow_id`; enabled ones fire from their
/// next occurrence on.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    rules: CronRules,
    workflow_id: &str,
    input: ScheduleInput,
    enabled: bool,
    max_json_bytes: usize,
) -> AppResult<Schedule> {
    let cron = input.cron.unwrap_or_default();
    let timezone = input.timezone.unwrap_or_else(|| "UTC".to_owned());
    let timing = rules.timing(&cron, &timezone)?;
    let at = now();
    let next_fire_at = if enabled {
        Some(timing.first(at)?)
    } else {
        None
    };
    let row = Schedule {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: workflow_id.to_owned(),
        name: name(input.name.flatten())?,
        cron: cron.trim().to_owned(),
        timezone: timing.zone_name().to_owned(),
        input: json_document("input", input.input.flatten().as_ref(), max_json_bytes)?,
        priority: super::run::queue::priority(input.priority)?,
        enabled,
        next_fire_at,
        last_fired_at: None,
        last_run_id: None,
        last_error: None,
        created_at: at,
        updated_at: at,
    };
    let row = &row;
    db.write(tenant, |tx| created(tx, row).into_work()).await
}

async fn created(tx: &mut Tx<NoEvents>, row: &Schedule) -> AppResult<Schedule> {
    // The workflow first (the lock order): it stays while its schedules are counted.
    let locked = tx
        .lock(Lock::Share, workflows::id, &row.workflow_id)
        .await?;
    let exists: i64 = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(&row.workflow_id))
                .count(),
        )
        .await?;
    if exists == 0 || locked == Some(0) {
        return Err(AppError::NotFound("workflow"));
    }
    let count: i64 = tx
        .one(
            tx.schedules()
                .filter(schedules::workflow_id.eq(&row.workflow_id))
                .count(),
        )
        .await?;
    if count >= MAX_PER_WORKFLOW {
        return Err(AppError::bad_input(
            "workflowId",
            format!("a workflow has at most {MAX_PER_WORKFLOW} schedules"),
        ));
    }
    let mut row = row.clone();
    tx.insert(&mut row).await?;
    Ok(row)
}

/// The changes of an update, validated.
#[derive(AsChangeset)]
#[diesel(table_name = schedules)]
struct SchedulePatch {
    name: Option<Option<String>>,
    cron: Option<String>,
    timezone: Option<String>,
    input: Option<Option<String>>,
    priority: Option<i32>,
    enabled: Option<bool>,
    next_fire_at: Option<Option<NaiveDateTime>>,
    updated_at: NaiveDateTime,
}

/// Changes a schedule; a new cron or time zone moves its next occurrence.
pub async fn update(
    db: &Db,
    tenant: &Tenant,
    rules: CronRules,
    id: &str,
    input: ScheduleInput,
    max_json_bytes: usize,
) -> AppResult<Schedule> {
    if let Some(cron) = &input.cron {
        // Checked alone first so a bad cron is named even with no time zone sent.
        rules.timing(cron, input.timezone.as_deref().unwrap_or("UTC"))?;
    }
    let patch = SchedulePatch {
        name: input.name.map(name).transpose()?,
        cron: input.cron.map(|c| c.trim().to_owned()),
        timezone: None,
        input: input
            .input
            .map(|v| json_document("input", v.as_ref(), max_json_bytes))
            .transpose()?,
        priority: input
            .priority
            .map(|p| super::run::queue::priority(Some(p)))
            .transpose()?,
        enabled: None,
        next_fire_at: None,
        updated_at: now(),
    };
    let timezone = input.timezone;
    let (patch, timezone) = (&patch, timezone.as_deref());
    db.write(tenant, |tx| {
        changed(tx, rules, id, patch, timezone, None).into_work()
    })
    .await
}

/// Pauses (`enabled` false: no more runs, no next occurrence) or resumes (from the next
/// occurrence after now: what was missed while paused is not caught up) a schedule.
pub async fn set_enabled(
    db: &Db,
    tenant: &Tenant,
    rules: CronRules,
    id: &str,
    enabled: bool,
) -> AppResult<Schedule> {
    let patch = SchedulePatch {
        name: None,
        cron: None,
        timezone: None,
        input: None,
        priority: None,
        enabled: None,
        next_fire_at: None,
        updated_at: now(),
    };
    let patch = &patch;
    db.write(tenant, |tx| {
        changed(tx, rules, id, patch, None, Some(enabled)).into_work()
    })
    .await
}

async fn changed(
    tx: &mut Tx<NoEvents>,
    rules: CronRules,
    id: &str,
    patch: &SchedulePatch,
    timezone: Option<&str>,
    enabled: Option<bool>,
) -> AppResult<Schedule> {
    let current: Schedule = tx
        .lock_and_read(Lock::NoKeyUpdate, schedules::id, id)
        .await?
        .ok_or(AppError::NotFound("schedule"))?;
    let cron = patch.cron.as_deref().unwrap_or(&current.cron);
    let timing = rules.timing(cron, timezone.unwrap_or(&current.timezone))?;
    let enabled = enabled.unwrap_or(current.enabled);
    let timing_changed = patch.cron.is_some() || timezone.is_some();
    let next_fire_at = match (enabled, current.enabled) {
        (false, _) => None,
        // Resumed, or moved to a new time: from the next occurrence after now.
        (true, false) => Some(timing.first(now())?),
        (true, true) if timing_changed => Some(timing.first(now())?),
        (true, true) => current.next_fire_at,
    };
    let patch = SchedulePatch {
        name: patch.name.clone(),
        cron: patch.cron.clone(),
        timezone: Some(timing.zone_name().to_owned()),
        input: patch.input.clone(),
        priority: patch.priority,
        enabled: Some(enabled),
        next_fire_at: Some(next_fire_at),
        updated_at: patch.updated_at,
    };
    tx.one(
        tx.schedules()
            .filter(schedules::id.eq(&current.id))
            .set(&patch)
            .returning(Schedule::columns()),
    )
    .await
}

/// Deletes a schedule; the runs it queued stay.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<()> {
    let removed = tx
        .execute(tx.schedules().filter(schedules::id.eq(id)).delete())
        .await?;
    if removed == 0 {
        return Err(AppError::NotFound("schedule"));
    }
    Ok(())
}

/// The tenant's schedules among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Schedule>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.schedules()
            .filter(schedules::id.eq_any(ids))
            .select(Schedule::columns()),
    )
    .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Schedule> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("schedule"))
}

/// The schedules of the tenant's workflow `workflow_id`, oldest first; NOT_FOUND for a
/// workflow of no schedule's company.
pub async fn of_workflow(db: &Db, tenant: &Tenant, workflow_id: &str) -> AppResult<Vec<Schedule>> {
    let mut tx = db.read(tenant).await?;
    let exists: i64 = tx
        .one(tx.workflows().filter(workflows::id.eq(workflow_id)).count())
        .await?;
    if exists == 0 {
        return Err(AppError::NotFound("workflow"));
    }
    tx.load(
        tx.schedules()
            .filter(schedules::workflow_id.eq(workflow_id))
            .order((schedules::created_at.asc(), schedules::id.asc()))
            .limit(MAX_PER_WORKFLOW)
            .select(Schedule::columns()),
    )
    .await
}

/// Fires every due schedule once (see the module docs). Answers how many occurrences this
/// instance fired.
pub async fn fire_due(db: &Db, events: &Events, rules: CronRules) -> AppResult<usize> {
    let at = now();
    // The scheduler acts for no viewer: one read across companies finds what is due, then
    // each schedule is fired as its own company's.
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let due: Vec<(String, String, String, Option<NaiveDateTime>)> = all
        .load(
            all.schedules()
                .filter(schedules::enabled.eq(true))
                .filter(schedules::next_fire_at.le(at))
                .order((schedules::next_fire_at.asc(), schedules::id.asc()))
                .limit(FIRE_BATCH)
                .select((
                    schedules::id,
                    schedules::company_id,
                    schedules::workflow_id,
                    schedules::next_fire_at,
                )),
        )
        .await?;
    drop(tx);
    let mut fired = 0;
    for (id, company_id, workflow_id, occurrence) in due {
        let Some(occurrence) = occurrence else {
            continue;
        };
        let tenant = Tenant::new(company_id);
        let outcome = db
            .write_with_events(&tenant, events, |tx| {
                fired_occurrence(tx, rules, &id, &workflow_id, occurrence).into_work()
            })
            .await;
        match outcome {
            Ok(true) => fired += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(schedule_id = %id, ?error, "could not fire a schedule"),
        }
    }
    Ok(fired)
}

/// Fires `occurrence` of schedule `id` unless another instance did: `false` then.
async fn fired_occurrence(
    tx: &mut Tx<EventKind>,
    rules: CronRules,
    id: &str,
    workflow_id: &str,
    occurrence: NaiveDateTime,
) -> AppResult<bool> {
    // The workflow before the schedule (the lock order): a deletion of the workflow waits
    // for this firing or has removed the schedule with it.
    tx.lock(Lock::Share, workflows::id, workflow_id).await?;
    let Some(schedule) = tx
        .lock_and_read::<Schedule, _>(Lock::NoKeyUpdate, schedules::id, id)
        .await?
    else {
        return Ok(false);
    };
    // The claim: the occurrence read before the lock must still be the schedule's.
    if !schedule.enabled || schedule.next_fire_at != Some(occurrence) {
        return Ok(false);
    }
    let at = now();
    let next = match rules.timing(&schedule.cron, &schedule.timezone) {
        Ok(timing) => timing.next_after(at),
        // Stored under rules that no longer hold (the seconds field of a test setting):
        // stop, and say why.
        Err(_) => None,
    };
    let key = format!(
        "schedule:{}:{}",
        schedule.id,
        occurrence.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ")
    );
    let new = NewQueuedRun {
        workflow_id: &schedule.workflow_id,
        started_by: None,
        trigger: Trigger::Schedule,
        trigger_id: Some(&schedule.id),
        input: schedule.input.clone(),
        priority: schedule.priority,
        not_before: Some(occurrence),
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        retry_of: None,
        from_step_id: None,
        idempotency_key: Some(key),
    };
    let (last_run_id, last_error) = match insert_queued(tx, &new).await {
        Ok((run, _)) => (Some(run.id), None),
        // The workflow is not runnable now (draft, archived, broken): this occurrence
        // queues nothing, and the schedule says why.
        Err(AppError::BadUserInput { message, .. }) => {
            (schedule.last_run_id.clone(), Some(truncate(&message)))
        }
        Err(other) => return Err(other),
    };
    let last_error = match (&next, last_error) {
        (None, None) => Some("the cron expression fires no more; the schedule stopped".to_owned()),
        (_, error) => error,
    };
    tx.execute(tx.schedules().filter(schedules::id.eq(&schedule.id)).set((
        schedules::next_fire_at.eq(next),
        schedules::enabled.eq(next.is_some()),
        schedules::last_fired_at.eq(Some(occurrence)),
        schedules::last_run_id.eq(last_run_id),
        schedules::last_error.eq(last_error),
    )))
    .await?;
    Ok(true)
}

fn truncate(message: &str) -> String {
    message.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> NaiveDateTime {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    }

    #[test]
    fn five_fields_in_a_time_zone() {
        let rules = CronRules::default();
        let Ok(timing) = rules.timing("30 9 * * 1-5", "Europe/Berlin") else {
            panic!("a valid expression")
        };
        // Friday 2026-03-06 10:00 UTC is 11:00 in Berlin: next is Monday 09:30 CET.
        assert_eq!(
            timing.next_after(utc("2026-03-06T10:00:00Z")),
            Some(utc("2026-03-09T08:30:00Z"))
        );
        // Across the spring-forward change (2026-03-29) the wall time holds: 07:30 UTC.
        assert_eq!(
            timing.next_after(utc("2026-03-27T09:00:00Z")),
            Some(utc("2026-03-30T07:30:00Z"))
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let rules = CronRules::default();
        for (cron, zone, field) in [
            ("61 * * * *", "UTC", "cron"),
            ("* * * *", "UTC", "cron"),
            ("*/5 * * * * *", "UTC", "cron"),
            ("", "UTC", "cron"),
            ("* * * * *", "Mars/Olympus", "timezone"),
            ("* * * * *", "", "timezone"),
        ] {
            match rules.timing(cron, zone) {
                Err(AppError::BadUserInput { field: Some(f), .. }) => {
                    assert_eq!(f, field, "{cron:?} {zone:?}")
                }
                other => panic!("{cron:?} {zone:?}: {other:?}"),
            }
        }
        let seconds = CronRules {
            allow_seconds: true,
        };
        assert!(seconds.timing("*/5 * * * * *", "UTC").is_ok());
    }

    #[test]
    fn an_impossible_date_never_fires() {
        let rules = CronRules::default();
        let Ok(timing) = rules.timing("0 0 30 2 *", "UTC") else {
            panic!("parses")
        };
        let started = std::time::Instant::now();
        assert_eq!(timing.next_after(utc("2026-01-01T00:00:00Z")), None);
        // Not asserted (timing belongs in benchmarks), but printed: the search is bounded.
        println!("impossible date searched in {:?}", started.elapsed());
    }
}
