//! Subscriptions: live run status, step reports, notifications and workflow status.
//!
//! Every stream listens to the instance's [`EventBus`](crate::events::EventBus) and only
//! lets through events of the viewer's company. Delivery on the bus is at most once, so
//! each stream also knows how to catch up: when it lagged behind the bus or the instance
//! lost its link to the other instances ([`EventKind::Resync`]), it re-reads its state
//! from the database and sends that, instead of going silent.
//!
//! Streams subscribe to the bus *before* reading their first snapshot, so nothing that
//! commits in between is lost.
//!
//! A regular member sees restricted workflows only where they may: snapshots and catch-ups
//! are read through their unit of work, which leaves the others out, and every live event
//! about a workflow is let through only when [`WorkflowReaders`](super::readers) says the
//! viewer sees it.

use crate::metrics::METRICS;
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::{Context, ID, Object, SimpleObject, Subscription};
use chrono::NaiveDateTime;
use futures_util::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::context::{ContextExt as _, Services};
use super::health_log::HealthLog;
use super::notification::Notification;
use super::run::Run;
use super::workflow::{Workflow, WorkflowStatus};
use crate::auth::Viewer;
use crate::domain;
use crate::domain::health_log::{StreamPosition, StreamScope, StreamedLog};
use crate::domain::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest};
use crate::domain::run::{RunFilter, Status as RunStatus};
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventKind};

/// What a stream learned from the bus.
enum Heard {
    Event(Arc<Event>),
    /// Events were missed: re-read the current state.
    CatchUp,
    Closed,
}

/// Which part of a subscription a stream runs, when subscribers of the same operation,
/// variables and authorisation share one resolution per event (`http::multiplex`). Only
/// the fields that know their parts are shared; any other runs whole for each subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPart {
    /// One subscriber's own beginning: it joins its group ([`StreamControl::join`]) and,
    /// for a field that sends a snapshot first, reads and sends its own snapshot; then the
    /// stream ends and the subscriber goes on with the group's answers.
    Head,
    /// The group's stream: what every subscriber of the group gets, live changes only.
    Tail,
    /// A subscriber that fell behind its group goes on alone, beginning with the catch-up
    /// a lagging stream does (changes since `since`).
    CatchUpFirst { since: NaiveDateTime },
}

/// Attached to a shared subscription's request: which part the stream runs, and what the
/// stream tells the subscriber about what it sent.
pub struct StreamControl {
    part: StreamPart,
    /// Subscribes the subscriber to its group's answers: called by the head before it
    /// reads its snapshot, so nothing committed in between is lost.
    joiner: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// `runUpdated`: the version of the run in the answer last sent (`i64::MIN`: none).
    version: AtomicI64,
    /// `runUpdated`: the head's snapshot shows a finished run; nothing follows it.
    finished: AtomicBool,
    /// The group's bus receiver, subscribed when the group started (before the first
    /// subscriber's head read its snapshot).
    events: Mutex<Option<Receiver<Arc<Event>>>>,
}

impl StreamControl {
    pub fn new(part: StreamPart, joiner: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Self {
            part,
            joiner: Mutex::new(joiner),
            version: AtomicI64::new(i64::MIN),
            finished: AtomicBool::new(false),
            events: Mutex::new(None),
        }
    }

    /// With the bus receiver the stream is to listen to.
    pub fn with_events(self, events: Receiver<Arc<Event>>) -> Self {
        *self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(events);
        self
    }

    /// The bus receiver to listen to: the one subscribed for this stream, or a new one.
    fn events(control: Option<&Arc<Self>>, services: &Services) -> Receiver<Arc<Event>> {
        control
            .and_then(|control| {
                control
                    .events
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take()
            })
            .unwrap_or_else(|| services.events.subscribe())
    }

    /// The part the stream runs.
    pub fn part(&self) -> StreamPart {
        self.part
    }

    /// The fields whose streams know their parts.
    pub fn shares(field: &str) -> bool {
        matches!(
            field,
            "runUpdated" | "runsUpdated" | "workflowStatusChanged"
        )
    }

    fn join(&self) {
        let joiner = self
            .joiner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(join) = joiner {
            join();
        }
    }

    /// The run version of the answer last sent, when the stream sends one run's versions.
    pub fn version(&self) -> Option<i64> {
        Some(self.version.load(Ordering::SeqCst)).filter(|v| *v != i64::MIN)
    }

    fn sent_version(&self, version: i64) {
        self.version.store(version, Ordering::SeqCst);
    }

    /// Whether the head sent everything there was (a finished run): no group follows.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// The part this stream runs, and its control when it is shared.
fn stream_part(ctx: &Context<'_>) -> (Option<Arc<StreamControl>>, Option<StreamPart>) {
    let control = ctx.data_opt::<Arc<StreamControl>>().cloned();
    let part = control.as_ref().map(|c| c.part);
    (control, part)
}

/// The next event of the viewer's company, or a reason to catch up.
async fn next_event(events: &mut Receiver<Arc<Event>>, viewer: &Viewer) -> Heard {
    loop {
        return match events.recv().await {
            Ok(event) if !event.is_visible_to(&viewer.tenant) => continue,
            Ok(event) if matches!(event.kind, EventKind::Resync) => Heard::CatchUp,
            Ok(event) => {
                METRICS.events_delivered.inc();
                Heard::Event(event)
            }
            Err(RecvError::Lagged(_)) => Heard::CatchUp,
            Err(RecvError::Closed) => Heard::Closed,
        };
    }
}

fn is_finished(run: &domain::run::Run) -> bool {
    run.status.is_finished()
}

/// A change of a run, with the step report that caused it.
pub struct RunUpdate {
    run: domain::run::Run,
    health_log: Option<domain::health_log::HealthLog>,
    viewer: Viewer,
}

/// A change of a run: its new state, and the step report that caused it if one did.
#[Object]
impl RunUpdate {
    /// The run as it is now.
    async fn run(&self) -> Run {
        Run {
            row: self.run.clone(),
            viewer: self.viewer.clone(),
        }
    }

    /// The step report that caused this change; null for status changes and snapshots.
    async fn health_log(&self) -> Option<HealthLog> {
        self.health_log.clone().map(|row| HealthLog {
            row,
            viewer: self.viewer.clone(),
        })
    }
}

/// A step report, with the cursor to resume from after a reconnect.
pub struct HealthLogEvent {
    log: Arc<StreamedLog>,
    cursor: String,
    viewer: Viewer,
}

/// A step report, with the cursor to resume from after a reconnect.
#[Object]
impl HealthLogEvent {
    /// Pass as `after` to `healthLogRecorded` to receive everything recorded since, in
    /// the same order, each report once. Valid for the replay window (a day by default).
    async fn cursor(&self) -> &str {
        &self.cursor
    }

    /// The report.
    async fn health_log(&self) -> HealthLog {
        HealthLog {
            row: self.log.log.clone(),
            viewer: self.viewer.clone(),
        }
    }
}

/// A workflow changed status.
#[derive(SimpleObject)]
pub struct WorkflowStatusChange {
    /// The workflow as it is now.
    workflow: Workflow,
    /// The new status.
    status: WorkflowStatus,
    /// The status before; null in a snapshot sent after this stream had to catch up.
    previous_status: Option<WorkflowStatus>,
}

#[derive(Default)]
pub struct Subscription;

/// Live updates over the WebSocket endpoint (`/graphql/ws`), each scoped to the signed-in
/// member's company. Send the token in `connection_init`: `{"token": "..."}`.
#[Subscription]
impl Subscription {
    /// One run: first its current state, then every change (status, progress, step
    /// reports). Completes once the run has finished.
    async fn run_updated(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = RunUpdate>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let (control, part) = stream_part(ctx);
        let mut events = StreamControl::events(control.as_ref(), &services);
        if let Some(control) = control.as_ref().filter(|_| part == Some(StreamPart::Head)) {
            control.join();
        }
        let run = match snapshot_run(&services, &viewer, &run_id).await {
            Ok(run) => Some(run),
            // The group ends; each subscriber's own head reported the error.
            Err(_) if part == Some(StreamPart::Tail) => None,
            Err(error) => return Err(error.into()),
        };
        Ok(async_stream::stream! {
            let Some(run) = run else { return };
            let mut last_version = run.version;
            let mut finished = is_finished(&run);
            match (&control, part) {
                (Some(control), Some(StreamPart::Head)) => {
                    control.sent_version(run.version);
                    control.finished.store(finished, Ordering::SeqCst);
                    yield RunUpdate { run, health_log: None, viewer: viewer.clone() };
                    return;
                }
                // Every subscriber of the group had its own snapshot.
                (_, Some(StreamPart::Tail)) => {}
                _ => yield RunUpdate { run, health_log: None, viewer: viewer.clone() },
            }
            while !finished {
                let update = match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => match &event.kind {
                        EventKind::RunChanged { run, health_log } if run.id == run_id.as_str() => {
                            // Still visible to the viewer (a restricted member's share may
                            // have gone since they subscribed).
                            if services.readers.can_view(&viewer.tenant, &run.workflow_id).await {
                                Some(((**run).clone(), health_log.as_deref().cloned()))
                            } else {
                                None
                            }
                        }
                        _ => None,
                    },
                    Heard::CatchUp => snapshot_run(&services, &viewer, &run_id).await.ok().map(|r| (r, None)),
                    Heard::Closed => break,
                };
                // Events can arrive out of commit order (publishers race after commit, and
                // other instances' events come later); a run's version never goes back.
                if let Some((run, health_log)) = update.filter(|(run, _)| run.version > last_version) {
                    last_version = run.version;
                    finished = is_finished(&run);
                    if let Some(control) = &control {
                        control.sent_version(run.version);
                    }
                    yield RunUpdate { run, health_log, viewer: viewer.clone() };
                }
            }
        })
    }

    /// Every run change of the company, or of one workflow. After catching up it sends the
    /// current state of every run still going.
    async fn runs_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only runs of this workflow.")] workflow_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = RunUpdate>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let (control, part) = stream_part(ctx);
        if let Some(control) = control.as_ref().filter(|_| part == Some(StreamPart::Head)) {
            // No snapshot: the group's answers are all there is.
            control.join();
        }
        let mut catch_up_first = matches!(part, Some(StreamPart::CatchUpFirst { .. }));
        let mut events = StreamControl::events(control.as_ref(), &services);
        let workflow_id = workflow_id.map(|id| id.0);
        Ok(async_stream::stream! {
            if part == Some(StreamPart::Head) {
                return;
            }
            let mut versions = RunVersions::default();
            loop {
                let heard = if std::mem::take(&mut catch_up_first) {
                    Heard::CatchUp
                } else {
                    next_event(&mut events, &viewer).await
                };
                match heard {
                    Heard::Event(event) => {
                        if let EventKind::RunChanged { run, health_log } = &event.kind
                            && workflow_id.as_ref().is_none_or(|w| *w == run.workflow_id)
                            && services.readers.can_view(&viewer.tenant, &run.workflow_id).await
                            && versions.advance(&run.id, run.version)
                        {
                            let (run, health_log) = ((**run).clone(), health_log.as_deref().cloned());
                            yield RunUpdate { run, health_log, viewer: viewer.clone() };
                        }
                    }
                    Heard::CatchUp => {
                        for run in active_runs(&services, &viewer, workflow_id.clone()).await.unwrap_or_default() {
                            if versions.advance(&run.id, run.version) {
                                yield RunUpdate { run, health_log: None, viewer: viewer.clone() };
                            }
                        }
                    }
                    Heard::Closed => break,
                }
            }
        })
    }

    /// Step reports in the order they were committed. With `after` (the cursor of the
    /// last event a client saw) it first replays everything recorded since, so a client
    /// that reconnects misses nothing and sees nothing twice. A cursor older than the
    /// replay window is refused (BAD_USER_INPUT on `after`): subscribe without it. A
    /// replay the database cannot serve ends the subscription with that error (e.g.
    /// UNAVAILABLE): subscribe again with the last cursor received.
    async fn health_log_recorded(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only reports for this workflow.")] workflow_id: Option<ID>,
        #[graphql(desc = "Resume after this `HealthLogEvent.cursor`.")] after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<HealthLogEvent>>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let resume = after
            .map(|cursor| services.stream_cursors.decode(&cursor, domain::now()))
            .transpose()?;
        let workflow_id = workflow_id.map(|id| id.0);
        // Subscribed before anything is read: what the replay does not cover, the live
        // stream has.
        let (mut live, start) = services.log_stream.subscribe();
        let replay_first = resume.is_some();
        Ok(async_stream::stream! {
            let mut position: Option<StreamPosition> = resume.or(start);
            let mut replay = replay_first;
            loop {
                if replay {
                    replay = false;
                    // Page by page, each log sent before the next page is read: a slow
                    // client holds one page, not the replay.
                    loop {
                        let scope = StreamScope::Company {
                            tenant: &viewer.tenant,
                            workflow_id: workflow_id.as_deref(),
                        };
                        let page = match domain::health_log::stream_after(
                            &services.db, scope, position.as_ref(), REPLAY_PAGE,
                        ).await {
                            Ok(page) => page,
                            // Going on live would skip what this page held: the client is
                            // told, and resumes from the last cursor it received.
                            Err(error) => {
                                yield Err(error.into());
                                return;
                            }
                        };
                        let complete = page.len() < REPLAY_PAGE_LEN;
                        for log in page {
                            position = Some(log.position.clone());
                            yield Ok(log_event(&services, Arc::new(log), &viewer));
                        }
                        if complete {
                            break;
                        }
                    }
                }
                match live.recv().await {
                    Ok(log) => {
                        let wanted = log.log.company_id == viewer.tenant.id()
                            && workflow_id.as_ref().is_none_or(|w| *w == log.log.workflow_id)
                            && position.as_ref().is_none_or(|p| log.position > *p)
                            && services.readers.can_view(&viewer.tenant, &log.log.workflow_id).await;
                        if wanted {
                            METRICS.events_delivered.inc();
                            position = Some(log.position.clone());
                            yield Ok(log_event(&services, log, &viewer));
                        }
                    }
                    // Fell behind the instance's tail: catch up from the database.
                    Err(RecvError::Lagged(_)) => replay = true,
                    Err(RecvError::Closed) => break,
                }
            }
        })
    }

    /// Notifications as they are created for the company, those the member wants pushed
    /// (`UserSettings.notificationSeverities` and `mutedNotificationKinds`, as they were
    /// when the subscription started). After catching up it sends the newest ones it had
    /// not sent yet.
    async fn notification_created(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Notification>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let mut events = services.events.subscribe();
        let since = domain::now();
        // A small `Copy` value compared per event: no read per notification.
        let preferences = match viewer.user_id() {
            Some(user_id) => {
                domain::user_settings::notification_preferences(
                    &services.db,
                    &viewer.tenant,
                    user_id,
                )
                .await?
            }
            None => domain::user_settings::NotificationPreferences::default(),
        };
        Ok(async_stream::stream! {
            let mut delivered = RecentIds::default();
            loop {
                match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => {
                        let visible = match &event.kind {
                            EventKind::NotificationCreated { notification } => match &notification.workflow_id {
                                Some(workflow) => services.readers.can_view(&viewer.tenant, workflow).await,
                                None => true,
                            },
                            _ => false,
                        };
                        if let EventKind::NotificationCreated { notification } = &event.kind
                            && visible
                            && preferences.wants(notification.severity, &notification.kind)
                            && delivered.insert(notification.id.clone())
                        {
                            yield Notification { row: (**notification).clone(), viewer: viewer.clone() };
                        }
                    }
                    Heard::CatchUp => {
                        let missed = recent_notifications(&services, &viewer, since).await.unwrap_or_default();
                        for row in missed.into_iter().rev() {
                            if preferences.wants(row.severity, &row.kind) && delivered.insert(row.id.clone()) {
                                yield Notification { row, viewer: viewer.clone() };
                            }
                        }
                    }
                    Heard::Closed => break,
                }
            }
        })
    }

    /// Wakes idle executors: the company's QUEUED runs (of `workflowIds`, any when empty)
    /// as they become claimable — first those waiting now (at most 100, in claim order),
    /// then each run queued or re-queued after an expired lease, and each delayed run when
    /// its `notBefore` arrives. Answer with `claimRun`: another executor may have claimed
    /// the run meanwhile. Delivery is at most once; poll `claimRun` now and then as well.
    async fn run_queued(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only runs of these workflows (at most 100); empty or absent: any.")]
        workflow_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<impl Stream<Item = Run>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let workflow_ids: Vec<String> = workflow_ids
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.0)
            .collect();
        if workflow_ids.len() > domain::run::queue::MAX_CLAIM_WORKFLOWS {
            return Err(crate::error::AppError::bad_input(
                "workflowIds",
                format!(
                    "workflowIds may list at most {} workflows",
                    domain::run::queue::MAX_CLAIM_WORKFLOWS
                ),
            )
            .into());
        }
        let mut events = services.events.subscribe();
        let snapshot =
            domain::run::queue::queued(&services.db, &viewer.tenant, &workflow_ids).await?;
        let wanted = move |run: &domain::run::Run| {
            run.status == RunStatus::Queued
                && (workflow_ids.is_empty() || workflow_ids.contains(&run.workflow_id))
        };
        Ok(async_stream::stream! {
            let mut versions = RunVersions::default();
            let mut delayed = DelayedRuns::default();
            let mut pending = snapshot;
            loop {
                for run in std::mem::take(&mut pending) {
                    if !wanted(&run) || !versions.advance(&run.id, run.version) {
                        continue;
                    }
                    match run.not_before.filter(|at| *at > domain::now()) {
                        Some(at) => delayed.add(run, at),
                        None => yield Run { row: run, viewer: viewer.clone() },
                    }
                }
                let next_due = delayed.next_due();
                let wake = tokio::select! {
                    heard = next_event(&mut events, &viewer) => QueueWake::Heard(heard),
                    () = async {
                        match next_due {
                            Some(at) => tokio::time::sleep(until(at)).await,
                            None => std::future::pending::<()>().await,
                        }
                    } => QueueWake::Due,
                };
                match wake {
                    QueueWake::Heard(Heard::Event(event)) => {
                        if let EventKind::RunChanged { run, .. } = &event.kind
                            && services.readers.can_view(&viewer.tenant, &run.workflow_id).await
                        {
                            pending.push((**run).clone());
                        }
                    }
                    QueueWake::Heard(Heard::CatchUp) => {
                        pending = domain::run::queue::queued(&services.db, &viewer.tenant, &[])
                            .await
                            .unwrap_or_default();
                    }
                    QueueWake::Heard(Heard::Closed) => break,
                    QueueWake::Due => {
                        for run in delayed.take_due(domain::now()) {
                            yield Run { row: run, viewer: viewer.clone() };
                        }
                    }
                }
            }
        })
    }

    /// Workflow status changes of the company, or of one workflow.
    async fn workflow_status_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only changes of this workflow.")] workflow_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = WorkflowStatusChange>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let (control, part) = stream_part(ctx);
        if let Some(control) = control.as_ref().filter(|_| part == Some(StreamPart::Head)) {
            // No snapshot: the group's answers are all there is.
            control.join();
        }
        let (mut catch_up_first, since) = match part {
            Some(StreamPart::CatchUpFirst { since }) => (true, since),
            _ => (false, domain::now()),
        };
        let mut events = StreamControl::events(control.as_ref(), &services);
        let workflow_id = workflow_id.map(|id| id.0);
        Ok(async_stream::stream! {
            if part == Some(StreamPart::Head) {
                return;
            }
            let mut last_heard = since;
            loop {
                let heard = if std::mem::take(&mut catch_up_first) {
                    Heard::CatchUp
                } else {
                    next_event(&mut events, &viewer).await
                };
                match heard {
                    Heard::Event(event) => {
                        // The event carries the workflow as committed: no read per subscriber.
                        let EventKind::WorkflowStatusChanged { workflow, previous } = &event.kind else {
                            continue;
                        };
                        if workflow_id.as_ref().is_some_and(|w| *w != workflow.id) {
                            continue;
                        }
                        if workflow.visibility == domain::visibility::Visibility::Restricted
                            && !services.readers.can_view(&viewer.tenant, &workflow.id).await
                        {
                            continue;
                        }
                        last_heard = last_heard.max(workflow.updated_at);
                        yield status_change((**workflow).clone(), Some((*previous).into()), &viewer);
                    }
                    Heard::CatchUp => {
                        let changed = recently_changed_workflows(&services, &viewer, workflow_id.clone(), last_heard).await;
                        for row in changed.unwrap_or_default() {
                            last_heard = last_heard.max(row.updated_at);
                            yield status_change(row, None, &viewer);
                        }
                    }
                    Heard::Closed => break,
                }
            }
        })
    }
}

/// What a `runQueued` stream does next.
enum QueueWake {
    Heard(Heard),
    /// A delayed run's `notBefore` arrived.
    Due,
}

/// Queued runs a `runQueued` stream heard of whose `notBefore` is still ahead, soonest
/// first; bounded (the furthest are forgotten: executors poll too).
#[derive(Default)]
struct DelayedRuns {
    runs: std::collections::BTreeMap<(NaiveDateTime, String), domain::run::Run>,
}

impl DelayedRuns {
    const CAPACITY: usize = 1_024;

    fn add(&mut self, run: domain::run::Run, at: NaiveDateTime) {
        self.runs.retain(|(_, id), _| *id != run.id);
        self.runs.insert((at, run.id.clone()), run);
        if self.runs.len() > Self::CAPACITY {
            self.runs.pop_last();
        }
    }

    fn next_due(&self) -> Option<NaiveDateTime> {
        self.runs.keys().next().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now: NaiveDateTime) -> Vec<domain::run::Run> {
        let mut due = Vec::new();
        while let Some(entry) = self.runs.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }
}

/// How long until `at`, from now (zero when it has passed).
fn until(at: NaiveDateTime) -> std::time::Duration {
    (at - domain::now()).to_std().unwrap_or_default()
}

fn status_change(
    row: domain::workflow::Workflow,
    previous_status: Option<WorkflowStatus>,
    viewer: &Viewer,
) -> WorkflowStatusChange {
    WorkflowStatusChange {
        status: row.status.into(),
        workflow: Workflow {
            row,
            viewer: viewer.clone(),
        },
        previous_status,
    }
}

/// A run as it is now, for a `runUpdated` snapshot: from a read replica when there is a
/// usable one, and from the primary when the replica does not have the run yet (a client
/// that has just started a run subscribes to it at once, and a replica replays a moment
/// behind).
async fn snapshot_run(
    services: &Services,
    viewer: &Viewer,
    run_id: &str,
) -> AppResult<domain::run::Run> {
    match domain::run::find(&services.snapshots(), &viewer.tenant, run_id).await {
        Err(AppError::NotFound(_)) => domain::run::find(&services.db, &viewer.tenant, run_id).await,
        found => found,
    }
}

/// The company's runs that are still going (the snapshot after catching up).
async fn active_runs(
    services: &Services,
    viewer: &Viewer,
    workflow_id: Option<String>,
) -> AppResult<Vec<domain::run::Run>> {
    let filter = RunFilter {
        workflow_id,
        statuses: vec![RunStatus::Queued, RunStatus::Running, RunStatus::Paused],
        ..RunFilter::default()
    };
    let page = domain::run::list(
        &services.snapshots(),
        &viewer.tenant,
        &filter,
        domain::run::RunOrder::NewestFirst,
        &PageRequest::first(MAX_PAGE_SIZE),
    )
    .await?;
    Ok(page.items)
}

/// The newest notifications created since `since`, newest first.
async fn recent_notifications(
    services: &Services,
    viewer: &Viewer,
    since: NaiveDateTime,
) -> AppResult<Vec<domain::notification::Notification>> {
    let filter = domain::notification::NotificationFilter::default();
    let page = domain::notification::list(
        &services.snapshots(),
        &viewer.tenant,
        &filter,
        &PageRequest::first(DEFAULT_PAGE_SIZE),
    )
    .await?;
    Ok(page
        .items
        .into_iter()
        .filter(|n| n.created_at >= since)
        .collect())
}

/// Workflows changed at or after `since` (their status may have changed unheard).
async fn recently_changed_workflows(
    services: &Services,
    viewer: &Viewer,
    workflow_id: Option<String>,
    since: NaiveDateTime,
) -> AppResult<Vec<domain::workflow::Workflow>> {
    if let Some(id) = workflow_id {
        let row = domain::workflow::find(&services.snapshots(), &viewer.tenant, &id).await?;
        return Ok(if row.updated_at >= since {
            vec![row]
        } else {
            Vec::new()
        });
    }
    let filter = domain::workflow::WorkflowFilter {
        updated_since: Some(since),
        ..Default::default()
    };
    let order = domain::workflow::WorkflowOrder {
        field: domain::workflow::OrderField::UpdatedAt,
        descending: false,
    };
    let page = domain::workflow::list(
        &services.snapshots(),
        &viewer.tenant,
        &filter,
        order,
        &PageRequest::first(MAX_PAGE_SIZE),
    )
    .await?;
    Ok(page.items)
}

/// Logs a replay reads per query (and holds at most, per subscriber).
const REPLAY_PAGE: i64 = 100;
const REPLAY_PAGE_LEN: usize = 100;

fn log_event(services: &Services, log: Arc<StreamedLog>, viewer: &Viewer) -> HealthLogEvent {
    let cursor = services
        .stream_cursors
        .encode(&log.position, log.log.created_at);
    HealthLogEvent {
        log,
        cursor,
        viewer: viewer.clone(),
    }
}

/// The most recent ids a stream delivered, so a catch-up never sends one twice. Bounded:
/// only recent items can come back in a catch-up, and a subscription lives for days.
struct RecentIds<T> {
    ids: HashSet<T>,
    order: VecDeque<T>,
}

impl<T> Default for RecentIds<T> {
    fn default() -> Self {
        Self {
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> RecentIds<T> {
    const CAPACITY: usize = 4_096;

    /// Records an id; false when it was delivered already.
    fn insert(&mut self, id: T) -> bool {
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

/// The newest version a `runsUpdated` stream sent of each recent run, so a run's state
/// never goes back however events arrive. Bounded like [`RecentIds`]: a run forgotten
/// after [`RunVersions::CAPACITY`] newer ones has long stopped changing.
#[derive(Default)]
struct RunVersions {
    versions: std::collections::HashMap<String, i64>,
    order: VecDeque<String>,
}

impl RunVersions {
    const CAPACITY: usize = 1_024;

    /// Whether `version` of run `id` is newer than what was sent; remembers it if so.
    fn advance(&mut self, id: &str, version: i64) -> bool {
        match self.versions.get_mut(id) {
            Some(sent) if *sent >= version => false,
            Some(sent) => {
                *sent = version;
                true
            }
            None => {
                self.versions.insert(id.to_owned(), version);
                self.order.push_back(id.to_owned());
                if self.order.len() > Self::CAPACITY
                    && let Some(old) = self.order.pop_front()
                {
                    self.versions.remove(&old);
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentIds, RunVersions};

    #[test]
    fn run_versions_only_move_forward() {
        let mut versions = RunVersions::default();
        assert!(versions.advance("a", 2));
        assert!(!versions.advance("a", 2));
        assert!(!versions.advance("a", 1));
        assert!(versions.advance("a", 3));
        for i in 0..2_000 {
            versions.advance(&i.to_string(), 1);
        }
        assert!(versions.versions.len() <= RunVersions::CAPACITY);
    }

    #[test]
    fn recent_ids_stay_bounded_and_refuse_repeats() {
        let mut ids = RecentIds::default();
        assert!(ids.insert(1));
        assert!(!ids.insert(1));
        for i in 2..10_000 {
            assert!(ids.insert(i));
        }
        assert!(ids.ids.len() <= RecentIds::<i32>::CAPACITY);
        assert!(ids.insert(1), "the oldest ids are forgotten");
    }
}
