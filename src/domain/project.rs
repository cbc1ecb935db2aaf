//! Projects: named groups of a company's workflows. A workflow belongs to at most one;
//! deleting a project leaves its workflows in place, unassigned.
//!
//! Every member sees every project and may create one; changing or deleting one is for
//! admins and its creator. What a project shows of its workflows (lists, counts) is what
//! the viewer sees of them: a restricted workflow counts only for those who see it.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use super::page::{Page, PageRequest, Position, SortValue, text_key};
use super::visibility::{self, Need};
use super::workflow::{self, Status, Workflow};
use super::{Tenant, new_id, now, required_name};
use crate::db::schema::{projects, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;

/// Names the one ordering of project lists inside cursors.
pub const ORDERING: &str = "projects:name:asc";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = projects, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct Project {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantRow for Project {
    type Table = projects::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Project {
    pub fn position(&self) -> Position {
        Position {
            key: SortValue::Text(self.name.clone()),
            id: self.id.clone(),
        }
    }
}

/// A change of a project; `None` leaves a field, `Some(None)` clears the description.
#[derive(Debug, Clone, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
}

fn description(value: Option<String>) -> AppResult<Option<String>> {
    let value = value.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if let Some(text) = &value {
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(AppError::bad_input(
                "description",
                format!("description must be at most {MAX_DESCRIPTION_CHARS} characters long"),
            ));
        }
        super::refuse_nul("description", text)?;
    }
    Ok(value)
}

/// Creates a project, made by the tenant's member.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    name: &str,
    description_text: Option<String>,
) -> AppResult<Project> {
    let at = now();
    let mut row = Project {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        name: required_name("name", name, MAX_NAME_CHARS)?,
        description: description(description_text)?,
        created_by: tenant.user_id().map(str::to_owned),
        created_at: at,
        updated_at: at,
    };
    let row_ref = &row;
    db.write(tenant, |tx| inserted(tx, row_ref).into_work())
        .await?;
    row.company_id = tenant.id().to_owned();
    Ok(row)
}

async fn inserted(tx: &mut Tx<NoEvents>, row: &Project) -> AppResult<()> {
    let mut row = row.clone();
    tx.insert(&mut row).await.map_err(|error| {
        if error.is_foreign_key_violation() {
            AppError::Unauthenticated("this account no longer exists")
        } else {
            error
        }
    })
}

/// The project `id`, locked, after checking the tenant's viewer may change it (admins
/// and its creator). Callers that also lock workflows lock them first (the lock order).
async fn managed(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<Project> {
    tx.lock(Lock::Update, projects::id, id).await?;
    let project: Project = tx
        .optional(
            tx.projects()
                .filter(projects::id.eq(id))
                .select(Project::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("project"))?;
    if let Some(member) = tx.tenant().restricted_to()
        && project.created_by.as_deref() != Some(member)
    {
        return Err(AppError::Forbidden(
            "only admins and the project's creator may change it",
        ));
    }
    Ok(project)
}

/// Renames a project or changes its description.
pub async fn update(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    changes: ProjectChanges,
) -> AppResult<Project> {
    let name = changes
        .name
        .map(|n| required_name("name", &n, MAX_NAME_CHARS))
        .transpose()?;
    let description = changes.description.map(description).transpose()?;
    let (name, description) = (&name, &description);
    db.write(tenant, |tx| updated(tx, id, name, description).into_work())
        .await
}

#[derive(AsChangeset)]
#[diesel(table_name = projects)]
struct ProjectPatch {
    name: Option<String>,
    description: Option<Option<String>>,
    updated_at: NaiveDateTime,
}

async fn updated(
    tx: &mut Tx<NoEvents>,
    id: &str,
    name: &Option<String>,
    description: &Option<Option<String>>,
) -> AppResult<Project> {
    let project = managed(tx, id).await?;
    let patch = ProjectPatch {
        name: name.clone(),
        description: description.clone(),
        updated_at: now(),
    };
    tx.one(
        tx.projects()
            .filter(projects::id.eq(&project.id))
            .set(&patch)
            .returning(Project::columns()),
    )
    .await
}

/// Deletes a project; its workflows stay, in no project.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<()> {
    // Its workflows before the project (workflow → project, as a move locks them): a
    // workflow moved in meanwhile holds the project's share lock until it commits, and
    // is then seen by the update below.
    tx.lock_rows(Lock::NoKeyUpdate, workflows::project_id, &[id])
        .await?;
    let project = managed(tx, id).await?;
    // Every workflow of the project, also those the deleting member does not see: none
    // may keep pointing at it.
    let mut company = tx.company_wide();
    company
        .execute(
            company
                .workflows()
                .filter(workflows::project_id.eq(&project.id))
                .set(workflows::project_id.eq(None::<String>)),
        )
        .await?;
    tx.execute(tx.projects().filter(projects::id.eq(&project.id)).delete())
        .await?;
    Ok(())
}

/// Moves a workflow into a project (`None`: out of any). Needs EDIT on the workflow.
pub async fn move_workflow(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    project_id: Option<&str>,
) -> AppResult<Workflow> {
    db.write(tenant, |tx| moved(tx, workflow_id, project_id).into_work())
        .await
}

async fn moved(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    project_id: Option<&str>,
) -> AppResult<Workflow> {
    tx.lock(Lock::NoKeyUpdate, workflows::id, workflow_id)
        .await?;
    let current: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    visibility::check(tx, &current, Need::Edit).await?;
    if let Some(project) = project_id {
        workflow::check_project(tx, project).await?;
    }
    tx.one(
        tx.workflows()
            .filter(workflows::id.eq(&current.id))
            .set((
                workflows::project_id.eq(project_id),
                workflows::updated_at.eq(now()),
            ))
            .returning(Workflow::columns()),
    )
    .await
}

/// One page of the company's projects, by name.
pub async fn list(db: &Db, tenant: &Tenant, page: &PageRequest) -> AppResult<Page<Project>> {
    let keyset = page.keyset(false, text_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.projects()
                .select(Project::columns())
                .keyset(projects::name, projects::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many projects the company has.
pub async fn count(db: &Db, tenant: &Tenant) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.projects().count()).await
}

/// The tenant's projects among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Project>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.projects()
            .filter(projects::id.eq_any(ids))
            .select(Project::columns()),
    )
    .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Project> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("project"))
}

/// How many of each project's workflows the viewer sees are in each status (statuses
/// without workflows left out).
pub async fn status_counts(
    db: &Db,
    tenant: &Tenant,
    project_ids: &[String],
) -> AppResult<HashMap<String, Vec<(Status, i64)>>> {
    let mut tx = db.read(tenant).await?;
    let rows: Vec<(Option<String>, Status, i64)> = tx
        .load(
            tx.workflows()
                .filter(workflows::project_id.eq_any(project_ids))
                .group_by((workflows::project_id, workflows::status))
                .select((workflows::project_id, workflows::status, dsl::count_star())),
        )
        .await?;
    let mut counts: HashMap<String, Vec<(Status, i64)>> = HashMap::new();
    for (project, status, count) in rows {
        if let Some(project) = project {
            counts.entry(project).or_default().push((status, count));
        }
    }
    for list in counts.values_mut() {
        list.sort_by_key(|(status, _)| Status::ALL.iter().position(|s| s == status));
    }
    Ok(counts)
}
