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

use crate::metrics::METRICS;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use async_graphql::{Context, ID, Object, SimpleObject, Subscription};
use chrono::NaiveDateTime;
use futures_util::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::context::{ContextExt as _, Services};
use super::health_log::HealthLog;
use super::notification::Notification;
use super::pagination::{PageArgs, encode_cursor};
use super::run::Run;
use super::workflow::{Workflow, WorkflowStatus};
use crate::auth::Viewer;
use crate::domain;
use crate::domain::health_log::{HealthLogFilter, LogOrder};
use crate::domain::page::{
    DEFAULT_PAGE_SIZE, Direction, MAX_PAGE_SIZE, PageRequest, Position, SortValue,
};
use crate::domain::run::{RunFilter, Status as RunStatus};
use crate::error::AppResult;
use crate::events::{Event, EventKind};

/// What a stream learned from the bus.
enum Heard {
    Event(Arc<Event>),
    /// Events were missed: re-read the current state.
    CatchUp,
    Closed,
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
    !matches!(
        run.status(),
        Ok(RunStatus::Queued | RunStatus::Running | RunStatus::Paused)
    )
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
    log: domain::health_log::HealthLog,
    viewer: Viewer,
}

/// A step report, with the cursor to resume from after a reconnect.
#[Object]
impl HealthLogEvent {
    /// Pass as `after` to `healthLogRecorded` to receive everything recorded since.
    async fn cursor(&self) -> String {
        encode_cursor(LogOrder::OldestFirst.tag(), self.log.position())
    }

    /// The report.
    async fn health_log(&self) -> HealthLog {
        HealthLog {
            row: self.log.clone(),
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
        let mut events = services.events.subscribe();
        let run = domain::run::find(&services.db, &viewer.tenant, &run_id).await?;
        Ok(async_stream::stream! {
            let mut last_change = run.updated_at;
            let mut finished = is_finished(&run);
            yield RunUpdate { run, health_log: None, viewer: viewer.clone() };
            while !finished {
                let update = match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => match &event.kind {
                        EventKind::RunChanged { run, health_log } if run.id == run_id.as_str() => {
                            Some(((**run).clone(), health_log.as_deref().cloned()))
                        }
                        _ => None,
                    },
                    Heard::CatchUp => domain::run::find(&services.db, &viewer.tenant, &run_id).await.ok().map(|r| (r, None)),
                    Heard::Closed => break,
                };
                // Events from other instances can arrive out of order; never go back in time.
                if let Some((run, health_log)) = update.filter(|(run, _)| run.updated_at >= last_change) {
                    last_change = run.updated_at;
                    finished = is_finished(&run);
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
        let mut events = services.events.subscribe();
        let workflow_id = workflow_id.map(|id| id.0);
        Ok(async_stream::stream! {
            loop {
                match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => {
                        if let EventKind::RunChanged { run, health_log } = &event.kind
                            && workflow_id.as_ref().is_none_or(|w| *w == run.workflow_id)
                        {
                            let (run, health_log) = ((**run).clone(), health_log.as_deref().cloned());
                            yield RunUpdate { run, health_log, viewer: viewer.clone() };
                        }
                    }
                    Heard::CatchUp => {
                        for run in active_runs(&services, &viewer, workflow_id.clone()).await.unwrap_or_default() {
                            yield RunUpdate { run, health_log: None, viewer: viewer.clone() };
                        }
                    }
                    Heard::Closed => break,
                }
            }
        })
    }

    /// Step reports as they are recorded, oldest first. With `after` (the cursor of the
    /// last event a client saw) it first replays everything recorded since, so a client
    /// that reconnects misses nothing and sees nothing twice.
    async fn health_log_recorded(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only reports for this workflow.")] workflow_id: Option<ID>,
        #[graphql(desc = "Resume after this `HealthLogEvent.cursor`.")] after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = HealthLogEvent>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let mut events = services.events.subscribe();
        let filter = HealthLogFilter {
            workflow_id: workflow_id.map(|id| id.0),
            ..Default::default()
        };
        let started = domain::now();
        let mut replay_from = after
            .map(|cursor| {
                PageArgs::forward(None, Some(cursor)).into_request(LogOrder::OldestFirst.tag())
            })
            .transpose()?;
        Ok(async_stream::stream! {
            let mut delivered = Delivered::since(started);
            loop {
                if let Some(request) = replay_from.take() {
                    let replayed = replay_logs(&services, &viewer, &filter, request).await.unwrap_or_default();
                    for log in replayed {
                        if delivered.insert(&log) {
                            yield HealthLogEvent { log, viewer: viewer.clone() };
                        }
                    }
                }
                match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => {
                        if let EventKind::HealthLogRecorded { health_log } = &event.kind {
                            let wanted = filter.workflow_id.as_ref().is_none_or(|w| *w == health_log.workflow_id);
                            if wanted && delivered.insert(health_log) {
                                yield HealthLogEvent { log: (**health_log).clone(), viewer: viewer.clone() };
                            }
                        }
                    }
                    // Replay from the newest report this stream delivered (or from when it
                    // started, if it delivered none yet).
                    Heard::CatchUp => replay_from = Some(delivered.resume_point()),
                    Heard::Closed => break,
                }
            }
        })
    }

    /// Notifications as they are created for the company. After catching up it sends the
    /// newest ones it had not sent yet.
    async fn notification_created(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Notification>> {
        let viewer = ctx.viewer()?.clone();
        let services = ctx.services().clone();
        let mut events = services.events.subscribe();
        let since = domain::now();
        Ok(async_stream::stream! {
            let mut delivered = HashSet::new();
            loop {
                match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => {
                        if let EventKind::NotificationCreated { notification } = &event.kind
                            && delivered.insert(notification.id.clone())
                        {
                            yield Notification { row: (**notification).clone(), viewer: viewer.clone() };
                        }
                    }
                    Heard::CatchUp => {
                        let missed = recent_notifications(&services, &viewer, since).await.unwrap_or_default();
                        for row in missed.into_iter().rev() {
                            if delivered.insert(row.id.clone()) {
                                yield Notification { row, viewer: viewer.clone() };
                            }
                        }
                    }
                    Heard::Closed => break,
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
        let mut events = services.events.subscribe();
        let workflow_id = workflow_id.map(|id| id.0);
        let since = domain::now();
        Ok(async_stream::stream! {
            let mut last_heard = since;
            loop {
                match next_event(&mut events, &viewer).await {
                    Heard::Event(event) => {
                        let EventKind::WorkflowStatusChanged { workflow_id: changed, previous, .. } = &event.kind else {
                            continue;
                        };
                        if workflow_id.as_ref().is_some_and(|w| w != changed) {
                            continue;
                        }
                        let previous = domain::workflow::Status::parse(previous).map(WorkflowStatus::from);
                        if let Ok(row) = domain::workflow::find(&services.db, &viewer.tenant, changed).await {
                            last_heard = last_heard.max(row.updated_at);
                            if let Some(change) = status_change(row, previous, &viewer) {
                                yield change;
                            }
                        }
                    }
                    Heard::CatchUp => {
                        let changed = recently_changed_workflows(&services, &viewer, workflow_id.clone(), last_heard).await;
                        for row in changed.unwrap_or_default() {
                            last_heard = last_heard.max(row.updated_at);
                            if let Some(change) = status_change(row, None, &viewer) {
                                yield change;
                            }
                        }
                    }
                    Heard::Closed => break,
                }
            }
        })
    }
}

fn status_change(
    row: domain::workflow::Workflow,
    previous_status: Option<WorkflowStatus>,
    viewer: &Viewer,
) -> Option<WorkflowStatusChange> {
    let status = row.status().ok()?.into();
    Some(WorkflowStatusChange {
        workflow: Workflow {
            row,
            viewer: viewer.clone(),
        },
        status,
        previous_status,
    })
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
    };
    let page = domain::run::list(
        &services.db,
        &viewer.tenant,
        &filter,
        &PageRequest::first(MAX_PAGE_SIZE),
    )
    .await?;
    Ok(page.items)
}

/// Every log after the request's cursor, oldest first, page by page.
async fn replay_logs(
    services: &Services,
    viewer: &Viewer,
    filter: &HealthLogFilter,
    mut request: PageRequest,
) -> AppResult<Vec<domain::health_log::HealthLog>> {
    request.limit = MAX_PAGE_SIZE;
    let mut replayed = Vec::new();
    loop {
        let page = domain::health_log::list(
            &services.db,
            &viewer.tenant,
            filter,
            LogOrder::OldestFirst,
            &request,
        )
        .await?;
        request.cursor = page
            .items
            .last()
            .map(domain::health_log::HealthLog::position);
        let more = page.has_next_page;
        replayed.extend(page.items);
        if !more {
            return Ok(replayed);
        }
    }
}

/// The newest notifications created since `since`, newest first.
async fn recent_notifications(
    services: &Services,
    viewer: &Viewer,
    since: NaiveDateTime,
) -> AppResult<Vec<domain::notification::Notification>> {
    let filter = domain::notification::NotificationFilter {
        unread_only: false,
        severity: None,
    };
    let page = domain::notification::list(
        &services.db,
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
        let row = domain::workflow::find(&services.db, &viewer.tenant, &id).await?;
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
        &services.db,
        &viewer.tenant,
        &filter,
        order,
        &PageRequest::first(MAX_PAGE_SIZE),
    )
    .await?;
    Ok(page.items)
}

/// What a `healthLogRecorded` stream delivered: recent ids, so replay and live events
/// never send a report twice (bounded: only recent reports can come back twice), and the
/// newest position, to replay from after missing events.
struct Delivered {
    ids: HashSet<String>,
    order: VecDeque<String>,
    newest: Position,
}

impl Delivered {
    const CAPACITY: usize = 4_096;

    /// Starts at `since`: a catch-up before anything was delivered replays from there.
    fn since(since: NaiveDateTime) -> Self {
        // The empty id sorts before every real id, so logs of that very instant replay too.
        let newest = Position {
            key: SortValue::time(since),
            id: String::new(),
        };
        Self {
            ids: HashSet::new(),
            order: VecDeque::new(),
            newest,
        }
    }

    /// Records a log; false when it was delivered already.
    fn insert(&mut self, log: &domain::health_log::HealthLog) -> bool {
        if !self.ids.insert(log.id.clone()) {
            return false;
        }
        self.order.push_back(log.id.clone());
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        let position = log.position();
        if (log.created_at, log.id.as_str()) > (self.newest_time(), self.newest.id.as_str()) {
            self.newest = position;
        }
        true
    }

    fn newest_time(&self) -> NaiveDateTime {
        self.newest.key.as_time().unwrap_or_default()
    }

    /// The replay that catches up with what this stream may have missed.
    fn resume_point(&self) -> PageRequest {
        PageRequest {
            direction: Direction::Forward,
            limit: MAX_PAGE_SIZE,
            cursor: Some(self.newest.clone()),
        }
    }
}
