//! Workflows: recorded browser automations, their status lifecycle and health figures.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use super::event::{EventKind, Events};
use super::page::{Page, PageRequest, Position, SortValue, float_key, text_key, time_key};
use super::step::{self, NewStep, Step, StepHead};
use super::visibility::{self, Need, Visibility};
use super::{Tenant, new_id, now, required_name, version};
use crate::db::expr::{Combined, Maybe};
use crate::db::schema::{projects, runs, screenshots, steps, workflow_step_snapshots, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 50;
pub const MAX_STEPS: usize = 500;

crate::text_enum! {
    /// Where a workflow is in its life.
    pub enum Status {
        Draft = "draft",
        Processing = "processing",
        Active = "active",
        NeedsReview = "needs_review",
        Broken = "broken",
        Archived = "archived",
    }
}

impl Status {
    /// The lifecycle: an archived workflow must be restored to draft before anything else,
    /// and nothing goes back to `processing` (that is the recorder's state on upload).
    pub fn can_become(self, next: Self) -> bool {
        use Status::*;
        self == next
            || match self {
                Draft => matches!(next, Processing | Active | Archived),
                Processing => matches!(next, Draft | Active | NeedsReview | Broken | Archived),
                Active => matches!(next, NeedsReview | Broken | Draft | Archived),
                NeedsReview => matches!(next, Active | Broken | Draft | Archived),
                Broken => matches!(next, Active | NeedsReview | Draft | Archived),
                Archived => next == Draft,
            }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = workflows, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
// Every column is written explicitly: None means NULL, not "use the column default".
#[diesel(treat_none_as_default_value = false)]
pub struct Workflow {
    pub id: String,
    pub company_id: String,
    pub created_by: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub status: Status,
    pub success_rate: f64,
    pub total_uses: i32,
    pub consecutive_failures: i32,
    pub last_success_at: Option<NaiveDateTime>,
    pub last_failure_at: Option<NaiveDateTime>,
    /// A JSON array of tags, stored as text.
    pub tags: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The name case-folded by [`search_key`], what name search compares against.
    pub search_name: String,
    /// The number of its newest version (0 before the first one is written).
    pub current_version: i32,
    /// The project it belongs to, if any.
    pub project_id: Option<String>,
    /// Who sees it.
    pub visibility: Visibility,
}

/// The case-folded form of a name that search compares: Unicode lower-casing, done here
/// because SQLite's `lower()` folds ASCII only.
pub fn search_key(name: &str) -> String {
    name.to_lowercase()
}

impl TenantRow for Workflow {
    type Table = workflows::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Workflow {
    pub fn tags(&self) -> AppResult<Vec<String>> {
        serde_json::from_str(&self.tags).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "workflow {} has invalid tags: {e}",
                self.id
            ))
        })
    }
}

/// Which workflows a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub statuses: Vec<Status>,
    pub tag: Option<String>,
    pub search: Option<String>,
    pub created_by: Option<String>,
    pub updated_since: Option<NaiveDateTime>,
    /// In this project.
    pub project_id: Option<String>,
    /// Tags as [`normalize_tags`] leaves them; carrying any (or all) of them.
    pub tags: Vec<String>,
    pub tags_match: TagsMatch,
}

/// How a list of tags filters: a workflow carrying any of them, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagsMatch {
    #[default]
    Any,
    All,
}

/// A condition matching workflows that carry `tag` (normalised).
fn carries(tag: &str) -> dsl::Escape<dsl::Like<workflows::tags, String>> {
    // Tags are stored as a JSON array of validated strings, so `"tag"` matches one
    // element exactly.
    let pattern = format!("%\"{}\"%", like_literal(tag));
    workflows::tags.like(pattern).escape('\\')
}

/// The condition of a [`WorkflowFilter`].
type Matching = dsl::And<
    dsl::And<
        dsl::And<
            dsl::And<
                dsl::And<
                    dsl::And<
                        Maybe<dsl::EqAny<workflows::status, Vec<Status>>>,
                        Maybe<dsl::Escape<dsl::Like<workflows::tags, String>>>,
                    >,
                    Maybe<dsl::Escape<dsl::Like<workflows::search_name, String>>>,
                >,
                Maybe<dsl::Eq<workflows::created_by, String>>,
            >,
            Maybe<dsl::GtEq<workflows::updated_at, NaiveDateTime>>,
        >,
        Maybe<Combined<dsl::Escape<dsl::Like<workflows::tags, String>>>>,
    >,
    Maybe<dsl::Eq<workflows::project_id, String>>,
>;

impl WorkflowFilter {
    fn condition(&self) -> Matching {
        let statuses = Maybe::when(!self.statuses.is_empty(), || {
            workflows::status.eq_any(self.statuses.clone())
        });
        let tag = Maybe::from_option(
            self.tag
                .as_deref()
                .map(|tag| carries(&tag.trim().to_lowercase())),
        );
        let tags = Maybe::when(!self.tags.is_empty(), || Combined {
            conditions: self.tags.iter().map(|tag| carries(tag)).collect(),
            all: self.tags_match == TagsMatch::All,
        });
        let search = Maybe::from_option(
            self.search
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|search| {
                    let pattern = format!("%{}%", like_literal(&search_key(search)));
                    workflows::search_name.like(pattern).escape('\\')
                }),
        );
        let created_by = Maybe::from_option(
            self.created_by
                .clone()
                .map(|user| workflows::created_by.eq(user)),
        );
        let updated_since =
            Maybe::from_option(self.updated_since.map(|at| workflows::updated_at.ge(at)));
        let project = Maybe::from_option(
            self.project_id
                .clone()
                .map(|project| workflows::project_id.eq(project)),
        );
        statuses
            .and(tag)
            .and(search)
            .and(created_by)
            .and(updated_since)
            .and(tags)
            .and(project)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    CreatedAt,
    UpdatedAt,
    Name,
    SuccessRate,
}

#[derive(Debug, Clone, Copy)]
pub struct WorkflowOrder {
    pub field: OrderField,
    pub descending: bool,
}

impl WorkflowOrder {
    /// Names the ordering inside cursors, so a cursor only works for the ordering it came from.
    pub fn tag(&self) -> &'static str {
        match (self.field, self.descending) {
            (OrderField::CreatedAt, false) => "workflows:created_at:asc",
            (OrderField::CreatedAt, true) => "workflows:created_at:desc",
            (OrderField::UpdatedAt, false) => "workflows:updated_at:asc",
            (OrderField::UpdatedAt, true) => "workflows:updated_at:desc",
            (OrderField::Name, false) => "workflows:name:asc",
            (OrderField::Name, true) => "workflows:name:desc",
            (OrderField::SuccessRate, false) => "workflows:success_rate:asc",
            (OrderField::SuccessRate, true) => "workflows:success_rate:desc",
        }
    }

    pub fn position(&self, workflow: &Workflow) -> Position {
        let key = match self.field {
            OrderField::CreatedAt => SortValue::time(workflow.created_at),
            OrderField::UpdatedAt => SortValue::time(workflow.updated_at),
            OrderField::Name => SortValue::Text(workflow.name.clone()),
            OrderField::SuccessRate => SortValue::Float(workflow.success_rate),
        };
        Position {
            key,
            id: workflow.id.clone(),
        }
    }
}

/// A workflow as a recorder uploads it, with its steps.
#[derive(Debug, Clone, Default)]
pub struct NewWorkflow {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub status: Option<Status>,
    pub steps: Vec<NewStep>,
    /// The project it starts in.
    pub project_id: Option<String>,
}

/// An edit of a workflow; `None` leaves a field as it is, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct WorkflowChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub status: Option<Status>,
}

#[derive(AsChangeset)]
#[diesel(table_name = workflows)]
struct WorkflowPatch {
    name: Option<String>,
    search_name: Option<String>,
    description: Option<Option<String>>,
    tags: Option<String>,
    status: Option<Status>,
    updated_at: NaiveDateTime,
}

fn validate_description(description: Option<String>) -> AppResult<Option<String>> {
    let description = description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(AppError::bad_input(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters long"),
        ));
    }
    if let Some(description) = &description {
        super::refuse_nul("description", description)?;
    }
    Ok(description)
}

/// Tags are trimmed, lower-cased and de-duplicated. Quotes, backslashes and control
/// characters are refused, which also keeps the stored JSON array searchable with LIKE.
///
/// The count is checked on the list as sent, before any per-tag work, and duplicates are
/// found with a set: a megabyte of tiny tags is refused at once instead of being compared
/// pairwise (which once held a runtime thread for 39 s per request).
pub fn normalize_tags(tags: Vec<String>) -> AppResult<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(AppError::bad_input(
            "tags",
            format!("a workflow has at most {MAX_TAGS} tags"),
        ));
    }
    let mut seen = HashSet::with_capacity(tags.len());
    let mut normalized: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim();
        // Bytes bound chars from above: a huge tag is refused before it is lower-cased.
        if tag.is_empty() || tag.len() > 4 * MAX_TAG_CHARS {
            return Err(tag_length_error());
        }
        let tag = tag.to_lowercase();
        if tag.chars().count() > MAX_TAG_CHARS {
            return Err(tag_length_error());
        }
        if tag.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(AppError::bad_input(
                "tags",
                "tags must not contain quotes, backslashes or control characters",
            ));
        }
        if seen.insert(tag.clone()) {
            normalized.push(tag);
        }
    }
    Ok(normalized)
}

fn tag_length_error() -> AppError {
    AppError::bad_input(
        "tags",
        format!("each tag must be 1 to {MAX_TAG_CHARS} characters long"),
    )
}

fn tags_text(tags: &[String]) -> AppResult<String> {
    serde_json::to_string(tags).map_err(AppError::internal)
}

/// A LIKE pattern matching `text` literally: `%`, `_` and `\` are escaped with `\`.
pub(super) fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// One page of the tenant's workflows.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &WorkflowFilter,
    order: WorkflowOrder,
    page: &PageRequest,
) -> AppResult<Page<Workflow>> {
    let desc = order.descending;
    let mut tx = db.read(tenant).await?;
    let matching = tx
        .workflows()
        .filter(filter.condition())
        .select(Workflow::columns());
    let rows: Vec<Workflow> = match order.field {
        OrderField::CreatedAt => {
            let keyset = page.keyset(desc, time_key)?;
            tx.load(matching.keyset(workflows::created_at, workflows::id, keyset))
                .await?
        }
        OrderField::UpdatedAt => {
            let keyset = page.keyset(desc, time_key)?;
            tx.load(matching.keyset(workflows::updated_at, workflows::id, keyset))
                .await?
        }
        OrderField::Name => {
            let keyset = page.keyset(desc, text_key)?;
            tx.load(matching.keyset(workflows::name, workflows::id, keyset))
                .await?
        }
        OrderField::SuccessRate => {
            let keyset = page.keyset(desc, float_key)?;
            tx.load(matching.keyset(workflows::success_rate, workflows::id, keyset))
                .await?
        }
    };
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's workflows match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &WorkflowFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.workflows().filter(filter.condition()).count())
        .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Workflow> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("workflow"))
}

/// The tenant's workflows among `ids`; ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Workflow>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflows()
            .filter(workflows::id.eq_any(ids))
            .select(Workflow::columns()),
    )
    .await
}

/// Creates a workflow and its steps, all or nothing.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    created_by: &str,
    new: NewWorkflow,
) -> AppResult<Workflow> {
    // Counts first: nothing proportional to the lists runs before they are known bounded.
    if new.steps.len() > MAX_STEPS {
        return Err(AppError::bad_input(
            "steps",
            format!("a workflow has at most {MAX_STEPS} steps"),
        ));
    }
    let tags = tags_text(&normalize_tags(new.tags)?)?;
    let name = required_name("name", &new.name, MAX_NAME_CHARS)?;
    let description = validate_description(new.description)?;
    let status = new.status.unwrap_or(Status::Draft);
    if !matches!(status, Status::Draft | Status::Processing | Status::Active) {
        return Err(AppError::bad_input(
            "status",
            format!(
                "a new workflow starts as draft, processing or active, not {}",
                status.as_str()
            ),
        ));
    }
    let at = now();
    let workflow = Workflow {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        created_by: Some(created_by.to_owned()),
        search_name: search_key(&name),
        name,
        description,
        status,
        success_rate: 0.0,
        total_uses: 0,
        consecutive_failures: 0,
        last_success_at: None,
        last_failure_at: None,
        tags,
        created_at: at,
        updated_at: at,
        current_version: 0,
        project_id: new.project_id,
        visibility: Visibility::Company,
    };
    let rows = new
        .steps
        .into_iter()
        .zip(1..)
        .map(|(step, number)| step.into_row(tenant, &workflow.id, number, at))
        .collect::<AppResult<Vec<Step>>>()?;
    let screenshot_ids: Vec<String> = rows
        .iter()
        .filter_map(|s| s.screenshot_id.clone())
        .collect();
    let (workflow_ref, rows, screenshot_ids) = (&workflow, &rows, &screenshot_ids);
    db.write(tenant, |tx| {
        created(tx, workflow_ref, rows, screenshot_ids, "created").into_work()
    })
    .await?;
    Ok(Workflow {
        current_version: 1,
        ..workflow
    })
}

/// Inserts a new workflow with its steps, once the screenshots they show are known to be
/// the tenant's (and share-locked) and its project too; `what` is its first version's
/// summary.
pub(crate) async fn created(
    tx: &mut Tx<NoEvents>,
    workflow: &Workflow,
    rows: &[Step],
    screenshot_ids: &[String],
    what: &str,
) -> AppResult<()> {
    step::check_screenshots(tx, screenshot_ids).await?;
    if let Some(project) = &workflow.project_id {
        check_project(tx, project).await?;
    }
    // Copies: the unit of work may run again, and each attempt inserts the rows afresh.
    let mut workflow = workflow.clone();
    tx.insert(&mut workflow).await?;
    let mut rows = rows.to_vec();
    tx.insert_all(&mut rows).await?;
    version::changed(tx, &workflow.id, what);
    Ok(())
}

/// Fails with NOT_FOUND unless `project_id` is a project of the tenant (share-locked on
/// PostgreSQL until commit, so a concurrent deletion of the project waits for this).
pub(crate) async fn check_project<E: Send>(tx: &mut Tx<E>, project_id: &str) -> AppResult<()> {
    tx.lock(Lock::Share, projects::id, project_id).await?;
    let found: Option<String> = tx
        .optional(
            tx.projects()
                .filter(projects::id.eq(project_id))
                .select(projects::id),
        )
        .await?;
    found.map(|_| ()).ok_or(AppError::NotFound("project"))
}

/// An edit of a workflow, validated.
struct Edit {
    name: Option<String>,
    description: Option<Option<String>>,
    tags: Option<String>,
    status: Option<Status>,
}

/// Applies an edit; status changes must follow [`Status::can_become`]. A status change is
/// announced to `workflowStatusChanged` subscribers once committed.
pub async fn update(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    id: &str,
    changes: WorkflowChanges,
) -> AppResult<Workflow> {
    let edit = Edit {
        name: changes
            .name
            .map(|n| required_name("name", &n, MAX_NAME_CHARS))
            .transpose()?,
        description: changes.description.map(validate_description).transpose()?,
        tags: changes
            .tags
            .map(|t| normalize_tags(t).and_then(|t| tags_text(&t)))
            .transpose()?,
        status: changes.status,
    };
    let edit = &edit;
    let updated = db
        .write_with_events(tenant, events, |tx| edited(tx, id, edit).into_work())
        .await?;
    if edit.name.is_none() && edit.description.is_none() && edit.tags.is_none() {
        return Ok(updated);
    }
    // Read again: the version the edit made is written just before the commit, after the
    // row above was read.
    find(db, tenant, &updated.id).await
}

async fn edited(tx: &mut Tx<EventKind>, id: &str, edit: &Edit) -> AppResult<Workflow> {
    let current: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    visibility::check(tx, &current, Need::Edit).await?;
    if let Some(next) = edit.status
        && !current.status.can_become(next)
    {
        return Err(AppError::bad_input(
            "status",
            format!(
                "cannot change status from {} to {}",
                current.status.as_str(),
                next.as_str()
            ),
        ));
    }
    let patch = WorkflowPatch {
        search_name: edit.name.as_deref().map(search_key),
        name: edit.name.clone(),
        description: edit.description.clone(),
        tags: edit.tags.clone(),
        status: edit.status,
        updated_at: now(),
    };
    let updated: Workflow = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(&current.id))
                .set(&patch)
                .returning(Workflow::columns()),
        )
        .await?;
    if current.status != updated.status {
        tx.publish(EventKind::WorkflowStatusChanged {
            workflow: Box::new(updated.clone()),
            previous: current.status,
        });
    }
    let definition_changes: Vec<&str> = [
        (edit.name.is_some(), "name"),
        (edit.description.is_some(), "description"),
        (edit.tags.is_some(), "tags"),
    ]
    .into_iter()
    .filter_map(|(changed, field)| changed.then_some(field))
    .collect();
    if !definition_changes.is_empty() {
        version::changed(
            tx,
            &updated.id,
            format!("changed {}", definition_changes.join(", ")),
        );
    }
    Ok(updated)
}

/// Deletes a workflow with its steps, screenshots, runs, health logs and notifications.
///
/// Screenshots are de-duplicated per company, so a step of *another* workflow (a duplicate,
/// or one that uploaded the same bytes) may show one of this workflow's screenshots. Those
/// screenshots move to that workflow instead of disappearing from under it.
///
/// Answers the blob keys of the screenshot rows that went, for
/// [`screenshot::release_blobs`](super::screenshot::release_blobs) after the commit.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Vec<String>> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<Vec<String>> {
    // In the lock order of the module docs: the company (uploads decide about its
    // screenshots under it), the workflow's runs (reports lock their run first), the
    // workflow, then its screenshots, which other steps may be referencing right now:
    // such a reference share-locks them, so this waits for it and then sees it below.
    tx.lock_company(Lock::NoKeyUpdate).await?;
    tx.lock(Lock::Update, runs::workflow_id, id).await?;
    tx.lock(Lock::Update, workflows::id, id).await?;
    tx.lock(Lock::Update, screenshots::workflow_id, id).await?;
    let own: Vec<(String, String)> = tx
        .load(
            tx.screenshots()
                .filter(screenshots::workflow_id.eq(id))
                .select((screenshots::id, screenshots::storage_key)),
        )
        .await?;
    let own_ids: Vec<&String> = own.iter().map(|(sid, _)| sid).collect();
    let borrowers: Vec<(Option<String>, String)> = if own_ids.is_empty() {
        Vec::new()
    } else {
        tx.load(
            tx.steps()
                .filter(steps::workflow_id.ne(id))
                .filter(steps::screenshot_id.eq_any(&own_ids))
                .order(steps::id.asc())
                .select((steps::screenshot_id, steps::workflow_id)),
        )
        .await?
    };
    // Then the versions of other workflows that show them (a restore shows them again).
    let version_borrowers: Vec<(Option<String>, String)> = if own_ids.is_empty() {
        Vec::new()
    } else {
        tx.load(
            tx.workflow_step_snapshots()
                .filter(workflow_step_snapshots::workflow_id.ne(id))
                .filter(workflow_step_snapshots::screenshot_id.eq_any(&own_ids))
                .order((
                    workflow_step_snapshots::workflow_id.asc(),
                    workflow_step_snapshots::hash.asc(),
                ))
                .select((
                    workflow_step_snapshots::screenshot_id,
                    workflow_step_snapshots::workflow_id,
                )),
        )
        .await?
    };
    let mut kept: HashSet<String> = HashSet::new();
    for (screenshot_id, new_owner) in borrowers.into_iter().chain(version_borrowers) {
        let Some(screenshot_id) = screenshot_id else {
            continue;
        };
        if kept.contains(&screenshot_id) {
            continue;
        }
        tx.execute(
            tx.screenshots()
                .filter(screenshots::id.eq(&screenshot_id))
                .set(screenshots::workflow_id.eq(&new_owner)),
        )
        .await?;
        kept.insert(screenshot_id);
    }
    let released: Vec<String> = own
        .iter()
        .filter(|(sid, _)| !kept.contains(sid))
        .map(|(_, key)| key.clone())
        .collect();
    let name: Option<String> = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(id))
                .select(workflows::name),
        )
        .await?;
    let deleted = tx
        .execute(tx.workflows().filter(workflows::id.eq(id)).delete())
        .await?;
    if deleted == 0 {
        Err(AppError::NotFound("workflow"))
    } else {
        super::audit::record(
            tx,
            super::audit::Action::WorkflowDeleted,
            super::audit::Target::workflow(id),
            serde_json::json!({ "name": name }),
        )
        .await?;
        Ok(released)
    }
}

/// Copies a workflow and its steps into a new draft with fresh statistics.
pub async fn duplicate(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    created_by: &str,
    name: Option<String>,
) -> AppResult<Workflow> {
    let name = name
        .map(|n| required_name("name", &n, MAX_NAME_CHARS))
        .transpose()?;
    let name = name.as_deref();
    db.write(tenant, |tx| {
        duplicated(tx, id, created_by, name).into_work()
    })
    .await
}

async fn duplicated(
    tx: &mut Tx<NoEvents>,
    id: &str,
    created_by: &str,
    name: Option<&str>,
) -> AppResult<Workflow> {
    // Share-locked, so a deletion cannot remove the source's screenshots from under
    // the copy's steps (it waits for this copy, then keeps what the copy shows).
    tx.lock(Lock::Share, workflows::id, id).await?;
    let source: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    visibility::check(tx, &source, Need::View).await?;
    let source_steps: Vec<Step> = tx
        .load(
            tx.steps()
                .filter(steps::workflow_id.eq(&source.id))
                .order(steps::step_number.asc())
                .select(Step::columns()),
        )
        .await?;
    let at = now();
    let what = format!(
        "copied from version {} of \"{}\"",
        source.current_version, source.name
    );
    let copy_name = name.map_or_else(
        || {
            let suffix = " (copy)";
            let keep = MAX_NAME_CHARS - suffix.chars().count();
            format!(
                "{}{suffix}",
                source.name.chars().take(keep).collect::<String>()
            )
        },
        str::to_owned,
    );
    let mut copy = Workflow {
        id: new_id(),
        created_by: Some(created_by.to_owned()),
        search_name: search_key(&copy_name),
        name: copy_name,
        status: Status::Draft,
        success_rate: 0.0,
        total_uses: 0,
        consecutive_failures: 0,
        last_success_at: None,
        last_failure_at: None,
        created_at: at,
        updated_at: at,
        current_version: 0,
        // A copy of a restricted workflow stays restricted (to admins and the copier,
        // whose copy it is); its shares are not copied.
        ..source
    };
    let mut copied_steps: Vec<Step> = source_steps
        .into_iter()
        .map(|s| Step {
            head: StepHead {
                id: new_id(),
                workflow_id: copy.id.clone(),
                created_at: at,
                updated_at: at,
                ..s.head
            },
            documents: s.documents,
        })
        .collect();
    tx.insert(&mut copy).await?;
    tx.insert_all(&mut copied_steps).await?;
    version::changed(tx, &copy.id, what);
    copy.current_version = 1;
    Ok(copy)
}

/// Folds the names of workflows whose `search_name` predates the server's folding (the
/// migration that added it could only use the database's `lower()`), in batches. Unscoped
/// on purpose: it runs once, right after that migration, for every company.
pub async fn refold_search_names(db: &Db) -> AppResult<usize> {
    const BATCH: i64 = 1_000;
    let mut after = String::new();
    let mut changed = 0;
    loop {
        let rows: Vec<(String, String, String)> = {
            let mut tx = db.read_unscoped().await?;
            let mut all = tx.unscoped();
            all.load(
                all.workflows()
                    .filter(workflows::id.gt(&after))
                    .order(workflows::id.asc())
                    .limit(BATCH)
                    .select((workflows::id, workflows::name, workflows::search_name)),
            )
            .await?
        };
        let Some((last, _, _)) = rows.last() else {
            return Ok(changed);
        };
        after = last.clone();
        let stale: Vec<(String, String)> = rows
            .into_iter()
            .filter(|(_, name, folded)| search_key(name) != *folded)
            .map(|(id, name, _)| (id, search_key(&name)))
            .collect();
        changed += stale.len();
        let stale = &stale;
        db.write_unscoped(|tx| refolded(tx, stale).into_work())
            .await?;
    }
}

/// Writes the folded names of one batch, across companies (see [`refold_search_names`]).
async fn refolded(tx: &mut Tx<NoEvents>, stale: &[(String, String)]) -> AppResult<()> {
    let mut all = tx.unscoped();
    for (id, folded) in stale {
        all.execute(
            all.workflows()
                .filter(workflows::id.eq(id))
                .set(workflows::search_name.eq(folded)),
        )
        .await?;
    }
    Ok(())
}

/// Workflow rows by id in *any* company, for events arriving from another instance: the event
/// names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<Workflow>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.workflows()
            .filter(workflows::id.eq_any(ids))
            .select(Workflow::columns()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_workflows_only_return_to_draft() {
        assert!(Status::Archived.can_become(Status::Draft));
        assert!(!Status::Archived.can_become(Status::Active));
        assert!(Status::Active.can_become(Status::Archived));
        assert!(!Status::Active.can_become(Status::Processing));
        assert!(Status::Broken.can_become(Status::Broken));
    }

    #[test]
    fn tags_are_normalised_and_checked() {
        let tags = normalize_tags(vec![" Billing ".into(), "billing".into(), "ops".into()]).ok();
        assert_eq!(tags, Some(vec!["billing".to_owned(), "ops".to_owned()]));
        assert!(normalize_tags(vec!["a\"b".into()]).is_err());
        assert!(normalize_tags(vec!["".into()]).is_err());
        assert!(normalize_tags((0..21).map(|i| format!("t{i}")).collect()).is_err());
        assert!(normalize_tags(vec!["x".repeat(51)]).is_err());
        assert!(normalize_tags(vec!["é".repeat(50)]).is_ok());
        assert!(normalize_tags(vec!["x".repeat(1 << 20)]).is_err());
    }

    #[test]
    fn a_huge_tag_list_is_refused_before_any_per_tag_work() {
        // 135,000 tags made normalisation quadratic (39 s); the count is checked first.
        let tags: Vec<String> = (0..135_000).map(|i| format!("t{i}")).collect();
        let refused = normalize_tags(tags).err().map(|e| e.client_message());
        assert_eq!(refused.as_deref(), Some("a workflow has at most 20 tags"));
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_literal("50%_off\\"), "50\\%\\_off\\\\");
    }
}
