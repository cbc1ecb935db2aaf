//! Who may see and change a workflow.
//!
//! A workflow is COMPANY-visible (today's behaviour and the default: every member sees,
//! runs and edits it) or RESTRICTED: then only admins, its creator and the members it is
//! shared with see it, each share with a permission (VIEW < RUN < EDIT, each including
//! the ones before). What a member may *see* is enforced by the unit of work itself (its
//! scoped sources leave the rest out: [`crate::db::visibility`]); what they may *do* with
//! a workflow they see is checked here by every write ([`require`]): a member who sees a
//! workflow but may not do this with it gets FORBIDDEN, one who does not see it NOT_FOUND,
//! exactly as for another company's.
//!
//! Managing a workflow (its visibility, shares and public links) is for admins and its
//! creator. A tenant that sees the whole company (admins, the server itself, executors
//! acting for the company) may do everything here; the role guards of the API decide
//! which mutations such a principal may call at all.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::audit::{self, Action, Target};
use super::workflow::Workflow;
use super::{Tenant, new_id, now};
use crate::db::schema::{users, workflow_shares, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Most members one workflow may be shared with: bounds what a subscriber's visibility
/// check holds per workflow (`Readers`).
pub const MAX_SHARES_PER_WORKFLOW: usize = 1_000;

crate::text_enum! {
    /// Who sees a workflow.
    pub enum Visibility {
        /// Every member of the company.
        Company = "company",
        /// Admins, the creator and the members it is shared with.
        Restricted = "restricted",
    }
}

crate::text_enum! {
    /// What a share lets a member do with a restricted workflow; each includes the ones
    /// before it.
    pub enum Permission {
        View = "view",
        Run = "run",
        Edit = "edit",
    }
}

impl Permission {
    fn rank(self) -> u8 {
        match self {
            Self::View => 0,
            Self::Run => 1,
            Self::Edit => 2,
        }
    }

    /// Whether this permission allows what `needed` asks.
    pub fn includes(self, needed: Self) -> bool {
        self.rank() >= needed.rank()
    }
}

/// What the viewer of a unit of work may do with one workflow they see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything, including its visibility, shares and public links: admins, the
    /// creator, the company itself.
    Manage,
    /// What the permission allows.
    Granted(Permission),
}

impl Access {
    /// The permission this access amounts to (managing includes editing).
    pub fn permission(self) -> Permission {
        match self {
            Self::Manage => Permission::Edit,
            Self::Granted(permission) => permission,
        }
    }

    pub fn can_manage(self) -> bool {
        self == Self::Manage
    }
}

/// What a write needs to be allowed to do with a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read it (copy it, publish a template of it... what seeing it allows).
    View,
    /// Start and drive its runs.
    Run,
    /// Change its definition, status or project.
    Edit,
    /// Change its visibility, shares and public links.
    Manage,
}

impl Need {
    pub(crate) fn refusal(self) -> AppError {
        AppError::Forbidden(match self {
            Self::View => "you may not see this workflow",
            Self::Run => "you may view this workflow but not run it",
            Self::Edit => "you may not edit this workflow",
            Self::Manage => {
                "only admins and the workflow's creator may change who sees this workflow"
            }
        })
    }
}

/// The access of `tenant`'s viewer to `workflow` (which they see), given the permission
/// of their share of it, if any.
pub fn access_to(tenant: &Tenant, workflow: &Workflow, share: Option<Permission>) -> Access {
    let Some(member) = tenant.restricted_to() else {
        return Access::Manage;
    };
    if workflow.created_by.as_deref() == Some(member) {
        return Access::Manage;
    }
    match workflow.visibility {
        Visibility::Company => Access::Granted(Permission::Edit),
        // Seen at all, so shared (a restricted member sees no other restricted workflow).
        Visibility::Restricted => Access::Granted(share.unwrap_or(Permission::View)),
    }
}

/// The share permission the tenant's member has on the workflow, if any.
async fn share_of<E: Send>(tx: &mut Tx<E>, workflow_id: &str) -> AppResult<Option<Permission>> {
    let Some(member) = tx.tenant().restricted_to().map(str::to_owned) else {
        return Ok(None);
    };
    tx.optional(
        tx.workflow_shares()
            .filter(workflow_shares::workflow_id.eq(workflow_id))
            .filter(workflow_shares::user_id.eq(member))
            .select(workflow_shares::permission),
    )
    .await
    .map(|p: Option<Permission>| p)
}

/// Fails unless the unit of work's viewer sees the workflow (NOT_FOUND) and may do what
/// `needed` asks with it (FORBIDDEN). Costs nothing for a viewer of the whole company
/// (the caller still finds the workflow, or not, by its own query); for a member, one
/// read of the workflow, and of their share when it is restricted.
pub async fn require<E: Send>(tx: &mut Tx<E>, workflow_id: &str, needed: Need) -> AppResult<()> {
    if tx.tenant().restricted_to().is_none() {
        return Ok(());
    }
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    check(tx, &workflow, needed).await
}

/// [`require`] for a workflow row the caller has just read through the tenant.
pub async fn check<E: Send>(tx: &mut Tx<E>, workflow: &Workflow, needed: Need) -> AppResult<()> {
    if tx.tenant().restricted_to().is_none() {
        return Ok(());
    }
    let share = match workflow.visibility {
        Visibility::Restricted => share_of(tx, &workflow.id).await?,
        Visibility::Company => None,
    };
    let access = access_to(tx.tenant(), workflow, share);
    let allowed = match needed {
        Need::Manage => access.can_manage(),
        Need::View => true,
        Need::Run => access.permission().includes(Permission::Run),
        Need::Edit => access.permission().includes(Permission::Edit),
    };
    if allowed {
        Ok(())
    } else {
        Err(needed.refusal())
    }
}

/// What the tenant's viewer may do with each of `workflows` (rows they see).
pub async fn access_of(
    db: &Db,
    tenant: &Tenant,
    workflows: &[Workflow],
) -> AppResult<HashMap<String, Access>> {
    let mut shares: HashMap<String, Permission> = HashMap::new();
    if let Some(member) = tenant.restricted_to() {
        let restricted: Vec<&str> = workflows
            .iter()
            .filter(|w| w.visibility == Visibility::Restricted)
            .map(|w| w.id.as_str())
            .collect();
        if !restricted.is_empty() {
            let mut tx = db.read(tenant).await?;
            let rows: Vec<(String, Permission)> = tx
                .load(
                    tx.workflow_shares()
                        .filter(workflow_shares::workflow_id.eq_any(&restricted))
                        .filter(workflow_shares::user_id.eq(member))
                        .select((workflow_shares::workflow_id, workflow_shares::permission)),
                )
                .await?;
            shares.extend(rows);
        }
    }
    Ok(workflows
        .iter()
        .map(|w| {
            let access = access_to(tenant, w, shares.get(&w.id).copied());
            (w.id.clone(), access)
        })
        .collect())
}

/// A member a restricted workflow is shared with.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_shares, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Share {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub user_id: String,
    pub permission: Permission,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantRow for Share {
    type Table = workflow_shares::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// The workflow `id` locked for a change of who sees it, after checking the viewer may
/// manage it.
async fn managed(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<Workflow> {
    tx.lock(Lock::NoKeyUpdate, workflows::id, id).await?;
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    check(tx, &workflow, Need::Manage).await?;
    Ok(workflow)
}

/// Makes a workflow COMPANY-visible or RESTRICTED. Admins and its creator only.
pub async fn set_visibility(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    visibility: Visibility,
) -> AppResult<Workflow> {
    db.write(tenant, |tx| {
        visibility_set(tx, workflow_id, visibility).into_work()
    })
    .await
}

async fn visibility_set(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    visibility: Visibility,
) -> AppResult<Workflow> {
    let workflow = managed(tx, workflow_id).await?;
    let updated: Workflow = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(&workflow.id))
                .set((
                    workflows::visibility.eq(visibility),
                    workflows::updated_at.eq(now()),
                ))
                .returning(Workflow::columns()),
        )
        .await?;
    if workflow.visibility != visibility {
        audit::record(
            tx,
            Action::WorkflowVisibilityChanged,
            Target::workflow(&workflow.id),
            serde_json::json!({ "before": workflow.visibility.as_str(), "after": visibility.as_str() }),
        )
        .await?;
    }
    Ok(updated)
}

/// Shares a workflow with a member of the company (or changes the permission of an
/// existing share). Admins and the workflow's creator only; another company's member is
/// NOT_FOUND. The share matters while the workflow is RESTRICTED.
pub async fn share(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    user_id: &str,
    permission: Permission,
) -> AppResult<Share> {
    db.write(tenant, |tx| {
        shared(tx, workflow_id, user_id, permission).into_work()
    })
    .await
}

async fn shared(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    user_id: &str,
    permission: Permission,
) -> AppResult<Share> {
    let workflow = managed(tx, workflow_id).await?;
    let member: Option<String> = tx
        .optional(tx.users().filter(users::id.eq(user_id)).select(users::id))
        .await?;
    let member = member.ok_or(AppError::NotFound("user"))?;
    let at = now();
    let existing: Option<Share> = tx
        .optional(
            tx.workflow_shares()
                .filter(workflow_shares::workflow_id.eq(&workflow.id))
                .filter(workflow_shares::user_id.eq(&member))
                .select(Share::columns()),
        )
        .await?;
    let summary = serde_json::json!({ "userId": member, "permission": permission.as_str() });
    if let Some(existing) = existing {
        let share: Share = tx
            .one(
                tx.workflow_shares()
                    .filter(workflow_shares::id.eq(&existing.id))
                    .set((
                        workflow_shares::permission.eq(permission),
                        workflow_shares::updated_at.eq(at),
                    ))
                    .returning(Share::columns()),
            )
            .await?;
        if existing.permission != permission {
            audit::record(
                tx,
                Action::WorkflowShared,
                Target::workflow(&workflow.id),
                summary,
            )
            .await?;
        }
        return Ok(share);
    }
    let count: i64 = tx
        .one(
            tx.workflow_shares()
                .filter(workflow_shares::workflow_id.eq(&workflow.id))
                .count(),
        )
        .await?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_SHARES_PER_WORKFLOW {
        return Err(AppError::bad_input(
            "userId",
            format!("a workflow is shared with at most {MAX_SHARES_PER_WORKFLOW} members"),
        ));
    }
    let mut row = Share {
        id: new_id(),
        company_id: String::new(),
        workflow_id: workflow.id.clone(),
        user_id: member,
        permission,
        created_by: tx.tenant().user_id().map(str::to_owned),
        created_at: at,
        updated_at: at,
    };
    tx.insert(&mut row).await.map_err(account_gone)?;
    audit::record(
        tx,
        Action::WorkflowShared,
        Target::workflow(&workflow.id),
        summary,
    )
    .await?;
    Ok(row)
}

/// A user removed while the share was written (the member, or the one sharing).
fn account_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::NotFound("user")
    } else {
        error
    }
}

/// Stops sharing a workflow with a member; nothing to stop is no error. Admins and the
/// workflow's creator only.
pub async fn unshare(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    user_id: &str,
) -> AppResult<Workflow> {
    db.write(tenant, |tx| unshared(tx, workflow_id, user_id).into_work())
        .await
}

async fn unshared(tx: &mut Tx<NoEvents>, workflow_id: &str, user_id: &str) -> AppResult<Workflow> {
    let workflow = managed(tx, workflow_id).await?;
    let removed = tx
        .execute(
            tx.workflow_shares()
                .filter(workflow_shares::workflow_id.eq(&workflow.id))
                .filter(workflow_shares::user_id.eq(user_id))
                .delete(),
        )
        .await?;
    if removed > 0 {
        audit::record(
            tx,
            Action::WorkflowUnshared,
            Target::workflow(&workflow.id),
            serde_json::json!({ "userId": user_id }),
        )
        .await?;
    }
    Ok(workflow)
}

/// The shares of the given workflows the tenant sees, oldest first.
pub async fn shares_of(db: &Db, tenant: &Tenant, workflow_ids: &[String]) -> AppResult<Vec<Share>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflow_shares()
            .filter(workflow_shares::workflow_id.eq_any(workflow_ids))
            .order((workflow_shares::created_at.asc(), workflow_shares::id.asc()))
            .select(Share::columns()),
    )
    .await
}

/// The shares among `ids` of workflows the tenant's member sees (others are absent).
pub async fn find_shares(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Share>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflow_shares()
            .filter(workflow_shares::id.eq_any(ids))
            .select(Share::columns()),
    )
    .await
}

/// Who sees one workflow, for deciding whether an event about it may reach a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readers {
    pub visibility: Visibility,
    pub created_by: Option<String>,
    /// The members it is shared with (at most [`MAX_SHARES_PER_WORKFLOW`]).
    pub shared_with: HashSet<String>,
}

impl Readers {
    /// Whether `tenant`'s viewer sees the workflow.
    pub fn can_view(&self, tenant: &Tenant) -> bool {
        match tenant.restricted_to() {
            None => true,
            Some(member) => {
                self.visibility == Visibility::Company
                    || self.created_by.as_deref() == Some(member)
                    || self.shared_with.contains(member)
            }
        }
    }
}

/// Who sees the company's workflow `workflow_id` (`None`: there is none). `company` is the
/// company as a whole: the answer is about every member, not the caller's view.
pub async fn readers_of(
    db: &Db,
    company: &Tenant,
    workflow_id: &str,
) -> AppResult<Option<Readers>> {
    let mut tx = db.read(company).await?;
    let mut all = tx.company_wide();
    let row: Option<(Visibility, Option<String>)> = all
        .optional(
            all.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select((workflows::visibility, workflows::created_by)),
        )
        .await?;
    let Some((visibility, created_by)) = row else {
        return Ok(None);
    };
    let shared_with: Vec<String> = match visibility {
        Visibility::Company => Vec::new(),
        Visibility::Restricted => {
            all.load(
                all.workflow_shares()
                    .filter(workflow_shares::workflow_id.eq(workflow_id))
                    .select(workflow_shares::user_id)
                    .limit(i64::try_from(MAX_SHARES_PER_WORKFLOW).unwrap_or(i64::MAX)),
            )
            .await?
        }
    };
    Ok(Some(Readers {
        visibility,
        created_by,
        shared_with: shared_with.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_include_the_lesser_ones() {
        assert!(Permission::Edit.includes(Permission::Run));
        assert!(Permission::Run.includes(Permission::View));
        assert!(!Permission::View.includes(Permission::Run));
        assert!(!Permission::Run.includes(Permission::Edit));
    }

    #[test]
    fn readers_decide_per_viewer() {
        let readers = Readers {
            visibility: Visibility::Restricted,
            created_by: Some("creator".into()),
            shared_with: ["friend".to_owned()].into_iter().collect(),
        };
        let member = |id: &str| Tenant::member("c".into(), id.into(), true);
        assert!(readers.can_view(&member("creator")));
        assert!(readers.can_view(&member("friend")));
        assert!(!readers.can_view(&member("stranger")));
        assert!(readers.can_view(&Tenant::member("c".into(), "admin".into(), false)));
        assert!(readers.can_view(&Tenant::new("c".into())));
    }
}
