//! Workflow versions: every change of a workflow's definition (its name, description,
//! tags, and its steps — added, removed, edited, reordered) is kept as an immutable,
//! numbered version (1, 2, ...) with its author, time and a short summary. Runs record the
//! version they ran; a version can be compared with another and restored.
//!
//! # What a version stores
//! A definition can be large (500 steps with five documents of up to 64 KiB each), and
//! most edits change one step. So a version stores the workflow's own fields and, for its
//! steps, an ordered list of (step id, snapshot hash); a *snapshot* is one step's whole
//! definition, stored once per workflow and named by the SHA-256 of its content
//! (`workflow_step_snapshots`). An edit of one step stores that step's new snapshot and a
//! list of at most 500 pairs (about 55 KB), never the unchanged steps again; a reorder
//! stores only the list. Healing results, edit bookkeeping and timestamps are not part of
//! a definition.
//!
//! # One version per unit of work
//! Write paths call [`changed`] for each workflow whose definition they change; the first
//! call registers work that runs before the unit of work commits, in the same transaction
//! (see `Tx::before_commit`), and writes one version per changed workflow from the
//! definition as it is then, whatever number of edits the unit of work made. A unit of
//! work whose edits cancel out (or change nothing) writes no version.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::page::{Page, PageRequest, Position, SortValue, int_key};
use super::step::{RENUMBER_OFFSET, Step};
use super::visibility::{self, Need};
use super::workflow::Workflow;
use super::{Tenant, new_id, now};
use crate::crypto::hex;
use crate::db::schema::{
    screenshots, steps, workflow_step_snapshots, workflow_versions, workflows,
};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx, Work};
use crate::error::{AppError, AppResult};

/// The longest summary a version keeps; longer ones are cut with an ellipsis.
pub const MAX_SUMMARY_CHARS: usize = 500;

/// Names the one ordering of version lists inside cursors.
pub const ORDERING: &str = "workflow_versions:number:desc";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_versions, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct Version {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub number: i32,
    pub name: String,
    pub description: Option<String>,
    /// A JSON array of tags, as the workflow stores them.
    pub tags: String,
    /// A JSON array of [`StepRef`]s, in step order.
    pub steps: String,
    pub summary: String,
    /// The version this one restored, when it was made by a restore.
    pub restored_from: Option<i32>,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
}

impl TenantRow for Version {
    type Table = workflow_versions::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// One step of a version: the step's id and the hash of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRef(pub String, pub String);

impl Version {
    pub fn tags(&self) -> AppResult<Vec<String>> {
        serde_json::from_str(&self.tags).map_err(|e| {
            AppError::internal(anyhow::anyhow!("version {} has invalid tags: {e}", self.id))
        })
    }

    pub fn step_refs(&self) -> AppResult<Vec<StepRef>> {
        serde_json::from_str(&self.steps).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "version {} has invalid steps: {e}",
                self.id
            ))
        })
    }

    pub fn position(&self) -> Position {
        Position {
            key: SortValue::Int(i64::from(self.number)),
            id: self.id.clone(),
        }
    }
}

/// One step's definition as a version keeps it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_step_snapshots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct Snapshot {
    pub company_id: String,
    pub workflow_id: String,
    pub hash: String,
    pub action_type: String,
    pub selectors: String,
    pub element_meta: String,
    pub page_context: String,
    pub action_data: String,
    pub dom_context: String,
    pub screenshot_id: Option<String>,
    pub field_label: Option<String>,
    pub instruction: Option<String>,
    pub ai_confidence: Option<f64>,
    pub ai_model: Option<String>,
    pub label_edited: bool,
    pub instruction_edited: bool,
    pub created_at: NaiveDateTime,
}

impl TenantRow for Snapshot {
    type Table = workflow_step_snapshots::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Snapshot {
    /// The definition of `step` as of now.
    pub fn of(step: &Step, at: NaiveDateTime) -> Self {
        let mut snapshot = Self {
            company_id: step.company_id.clone(),
            workflow_id: step.workflow_id.clone(),
            hash: String::new(),
            action_type: step.action_type.clone(),
            selectors: step.documents.selectors.clone(),
            element_meta: step.documents.element_meta.clone(),
            page_context: step.documents.page_context.clone(),
            action_data: step.documents.action_data.clone(),
            dom_context: step.documents.dom_context.clone(),
            screenshot_id: step.screenshot_id.clone(),
            field_label: step.field_label.clone(),
            instruction: step.instruction.clone(),
            ai_confidence: step.ai_confidence,
            ai_model: step.ai_model.clone(),
            label_edited: step.label_edited,
            instruction_edited: step.instruction_edited,
            created_at: at,
        };
        snapshot.hash = snapshot.content_hash();
        snapshot
    }

    /// SHA-256 of the definition: every field, length-prefixed, so no two definitions
    /// share an encoding.
    fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |value: Option<&str>| match value {
            None => hasher.update([0u8]),
            Some(text) => {
                hasher.update([1u8]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
        };
        let confidence = self.ai_confidence.map(|c| c.to_bits().to_string());
        for value in [
            Some(self.action_type.as_str()),
            Some(self.selectors.as_str()),
            Some(self.element_meta.as_str()),
            Some(self.page_context.as_str()),
            Some(self.action_data.as_str()),
            Some(self.dom_context.as_str()),
            self.screenshot_id.as_deref(),
            self.field_label.as_deref(),
            self.instruction.as_deref(),
            confidence.as_deref(),
            self.ai_model.as_deref(),
            Some(if self.label_edited { "1" } else { "0" }),
            Some(if self.instruction_edited { "1" } else { "0" }),
        ] {
            field(value);
        }
        hex(&hasher.finalize())
    }

    /// The names (as the API spells them) of the fields in which `other` differs.
    pub fn differences(&self, other: &Self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let mut differ = |name, a: bool| {
            if a {
                fields.push(name);
            }
        };
        differ("actionType", self.action_type != other.action_type);
        differ("selectors", self.selectors != other.selectors);
        differ("elementMeta", self.element_meta != other.element_meta);
        differ("pageContext", self.page_context != other.page_context);
        differ("actionData", self.action_data != other.action_data);
        differ("domContext", self.dom_context != other.dom_context);
        differ("screenshot", self.screenshot_id != other.screenshot_id);
        differ("fieldLabel", self.field_label != other.field_label);
        differ("instruction", self.instruction != other.instruction);
        differ(
            "aiConfidence",
            self.ai_confidence.map(f64::to_bits) != other.ai_confidence.map(f64::to_bits),
        );
        differ("aiModel", self.ai_model != other.ai_model);
        differ("labelEdited", self.label_edited != other.label_edited);
        differ(
            "instructionEdited",
            self.instruction_edited != other.instruction_edited,
        );
        fields
    }
}

/// What the unit of work changed, per workflow, for the versions written before commit.
#[derive(Default)]
struct Pending {
    workflows: BTreeMap<String, Change>,
}

#[derive(Default)]
struct Change {
    what: Vec<String>,
    restored_from: Option<i32>,
}

/// Records that the definition of the tenant's workflow `workflow_id` changed in this
/// unit of work (`what`: a short phrase for the version's summary, e.g. "edited step 3").
/// Before the commit, the workflow gets one new version with its definition as it is then.
pub fn changed<E: Send + 'static>(tx: &mut Tx<E>, workflow_id: &str, what: impl Into<String>) {
    let pending = tx.extension::<Pending>();
    let first = pending.workflows.is_empty();
    let change = pending.workflows.entry(workflow_id.to_owned()).or_default();
    let what = what.into();
    if !change.what.contains(&what) {
        change.what.push(what);
    }
    if first {
        tx.before_commit(write_pending::<E>);
    }
}

/// [`changed`] by a restore of version `from`.
fn restored<E: Send + 'static>(tx: &mut Tx<E>, workflow_id: &str, from: i32) {
    changed(tx, workflow_id, format!("restored version {from}"));
    if let Some(change) = tx.extension::<Pending>().workflows.get_mut(workflow_id) {
        change.restored_from = Some(from);
    }
}

fn write_pending<E: Send + 'static>(tx: &mut Tx<E>) -> Work<'static, '_, ()> {
    write_versions(tx).into_work()
}

async fn write_versions<E: Send + 'static>(tx: &mut Tx<E>) -> AppResult<()> {
    let pending = std::mem::take(tx.extension::<Pending>());
    // In id order: two units of work versioning the same workflows lock them alike.
    for (workflow_id, change) in pending.workflows {
        write_version(tx, &workflow_id, change).await?;
    }
    Ok(())
}

/// The summary of a version: the phrases of its changes, bounded.
fn summary(what: &[String]) -> String {
    let joined = what.join("; ");
    if joined.chars().count() <= MAX_SUMMARY_CHARS {
        return joined;
    }
    let mut cut: String = joined.chars().take(MAX_SUMMARY_CHARS - 1).collect();
    cut.push('…');
    cut
}

async fn write_version<E: Send + 'static>(
    tx: &mut Tx<E>,
    workflow_id: &str,
    change: Change,
) -> AppResult<()> {
    // Edits lock the workflow first (lock order of the `domain` docs); this is a no-op for
    // them and protects the version number of anything that did not.
    tx.lock(Lock::NoKeyUpdate, workflows::id, workflow_id)
        .await?;
    let Some(workflow): Option<Workflow> = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
    else {
        // Deleted by the same unit of work: its versions went with it.
        return Ok(());
    };
    let current_steps: Vec<Step> = tx
        .load(
            tx.steps()
                .filter(steps::workflow_id.eq(workflow_id))
                .order(steps::step_number.asc())
                .select(Step::columns()),
        )
        .await?;
    let at = now();
    let snapshots: Vec<Snapshot> = current_steps.iter().map(|s| Snapshot::of(s, at)).collect();
    let refs: Vec<StepRef> = current_steps
        .iter()
        .zip(&snapshots)
        .map(|(step, snapshot)| StepRef(step.id.clone(), snapshot.hash.clone()))
        .collect();
    let steps_text = serde_json::to_string(&refs).map_err(AppError::internal)?;
    if workflow.current_version > 0 {
        let last: Option<(String, Option<String>, String, String)> = tx
            .optional(
                tx.workflow_versions()
                    .filter(workflow_versions::workflow_id.eq(workflow_id))
                    .filter(workflow_versions::number.eq(workflow.current_version))
                    .select((
                        workflow_versions::name,
                        workflow_versions::description,
                        workflow_versions::tags,
                        workflow_versions::steps,
                    )),
            )
            .await?;
        let now_is = (
            workflow.name.clone(),
            workflow.description.clone(),
            workflow.tags.clone(),
            steps_text.clone(),
        );
        if last.as_ref() == Some(&now_is) {
            return Ok(());
        }
    }
    let hashes: Vec<String> = snapshots
        .iter()
        .map(|s| s.hash.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let known: HashSet<String> = if hashes.is_empty() {
        HashSet::new()
    } else {
        tx.load(
            tx.workflow_step_snapshots()
                .filter(workflow_step_snapshots::workflow_id.eq(workflow_id))
                .filter(workflow_step_snapshots::hash.eq_any(&hashes))
                .select(workflow_step_snapshots::hash),
        )
        .await?
        .into_iter()
        .collect()
    };
    let mut seen = known;
    let mut new: Vec<Snapshot> = snapshots
        .into_iter()
        .filter(|s| seen.insert(s.hash.clone()))
        .collect();
    tx.insert_all(&mut new).await?;
    let number = workflow.current_version + 1;
    let mut version = Version {
        id: new_id(),
        company_id: String::new(),
        workflow_id: workflow_id.to_owned(),
        number,
        name: workflow.name,
        description: workflow.description,
        tags: workflow.tags,
        steps: steps_text,
        summary: summary(&change.what),
        restored_from: change.restored_from,
        created_by: tx.tenant().user_id().map(str::to_owned),
        created_at: at,
    };
    tx.insert(&mut version).await.map_err(|error| {
        if error.is_foreign_key_violation() {
            AppError::Unauthenticated("this account no longer exists")
        } else {
            error
        }
    })?;
    tx.execute(
        tx.workflows()
            .filter(workflows::id.eq(workflow_id))
            .set(workflows::current_version.eq(number)),
    )
    .await?;
    Ok(())
}

/// One page of a workflow's versions, newest first. The workflow must be the tenant's and
/// visible (NOT_FOUND otherwise), which the caller checked by loading it.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    page: &PageRequest,
) -> AppResult<Page<Version>> {
    let keyset = page.keyset(true, int_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.workflow_versions()
                .filter(workflow_versions::workflow_id.eq(workflow_id))
                .select(Version::columns())
                .keyset(workflow_versions::number, workflow_versions::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many versions a workflow has.
pub async fn count(db: &Db, tenant: &Tenant, workflow_id: &str) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(
        tx.workflow_versions()
            .filter(workflow_versions::workflow_id.eq(workflow_id))
            .count(),
    )
    .await
}

/// The versions among `ids` of workflows the tenant's member sees (others are absent).
pub async fn find_by_ids(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Version>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflow_versions()
            .filter(workflow_versions::id.eq_any(ids))
            .select(Version::columns()),
    )
    .await
}

/// The versions named by (workflow id, number) among `keys` that the tenant sees.
pub async fn find_many(
    db: &Db,
    tenant: &Tenant,
    keys: &[(String, i32)],
) -> AppResult<Vec<Version>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let workflow_ids: Vec<&str> = keys.iter().map(|(w, _)| w.as_str()).collect();
    let numbers: Vec<i32> = keys.iter().map(|(_, n)| *n).collect();
    let mut tx = db.read(tenant).await?;
    let rows: Vec<Version> = tx
        .load(
            tx.workflow_versions()
                .filter(workflow_versions::workflow_id.eq_any(&workflow_ids))
                .filter(workflow_versions::number.eq_any(&numbers))
                .select(Version::columns()),
        )
        .await?;
    let wanted: HashSet<(&str, i32)> = keys.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    Ok(rows
        .into_iter()
        .filter(|v| wanted.contains(&(v.workflow_id.as_str(), v.number)))
        .collect())
}

/// The tenant's version `number` of workflow `workflow_id`, or NOT_FOUND.
pub async fn find(db: &Db, tenant: &Tenant, workflow_id: &str, number: i32) -> AppResult<Version> {
    find_many(db, tenant, &[(workflow_id.to_owned(), number)])
        .await?
        .pop()
        .ok_or(AppError::NotFound("version"))
}

/// One step of a version: its id then, its place (1-based) and its definition.
#[derive(Debug, Clone)]
pub struct VersionStep {
    pub step_id: String,
    pub number: i32,
    pub snapshot: Snapshot,
}

/// The steps of each of `versions`, in order, by version id.
pub async fn steps_of(
    db: &Db,
    tenant: &Tenant,
    versions: &[Version],
) -> AppResult<HashMap<String, Vec<VersionStep>>> {
    let mut refs: HashMap<String, Vec<StepRef>> = HashMap::new();
    let mut wanted: HashMap<&str, HashSet<String>> = HashMap::new();
    for version in versions {
        let steps = version.step_refs()?;
        let hashes = wanted.entry(version.workflow_id.as_str()).or_default();
        hashes.extend(steps.iter().map(|r| r.1.clone()));
        refs.insert(version.id.clone(), steps);
    }
    let mut snapshots: HashMap<(String, String), Snapshot> = HashMap::new();
    let mut tx = db.read(tenant).await?;
    for (workflow_id, hashes) in wanted {
        if hashes.is_empty() {
            continue;
        }
        let hashes: Vec<String> = hashes.into_iter().collect();
        let rows: Vec<Snapshot> = tx
            .load(
                tx.workflow_step_snapshots()
                    .filter(workflow_step_snapshots::workflow_id.eq(workflow_id))
                    .filter(workflow_step_snapshots::hash.eq_any(&hashes))
                    .select(Snapshot::columns()),
            )
            .await?;
        snapshots.extend(
            rows.into_iter()
                .map(|s| ((s.workflow_id.clone(), s.hash.clone()), s)),
        );
    }
    let mut out = HashMap::with_capacity(versions.len());
    for version in versions {
        let steps = refs.remove(&version.id).unwrap_or_default();
        let mut list = Vec::with_capacity(steps.len());
        for (StepRef(step_id, hash), number) in steps.into_iter().zip(1..) {
            let snapshot = snapshots
                .get(&(version.workflow_id.clone(), hash.clone()))
                .cloned()
                .ok_or_else(|| {
                    AppError::internal(anyhow::anyhow!(
                        "version {} names snapshot {hash}, which is not stored",
                        version.id
                    ))
                })?;
            list.push(VersionStep {
                step_id,
                number,
                snapshot,
            });
        }
        out.insert(version.id.clone(), list);
    }
    Ok(out)
}

/// How two versions of a workflow differ.
#[derive(Debug, Clone)]
pub struct VersionDiff {
    pub from: Version,
    pub to: Version,
    /// The workflow's own fields that differ (`name`, `description`, `tags`).
    pub changed_fields: Vec<&'static str>,
    /// Steps in `to` but not in `from`.
    pub added: Vec<VersionStep>,
    /// Steps in `from` but not in `to`.
    pub removed: Vec<VersionStep>,
    /// Steps in both that differ, with the fields that do (`stepNumber` when it moved).
    pub changed: Vec<StepDiff>,
}

#[derive(Debug, Clone)]
pub struct StepDiff {
    pub from: VersionStep,
    pub to: VersionStep,
    pub fields: Vec<&'static str>,
}

/// How version `to` of a workflow differs from version `from`.
pub async fn diff(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    from: i32,
    to: i32,
) -> AppResult<VersionDiff> {
    let versions = find_many(
        db,
        tenant,
        &[(workflow_id.to_owned(), from), (workflow_id.to_owned(), to)],
    )
    .await?;
    let pick = |number: i32, field: &str| {
        versions
            .iter()
            .find(|v| v.number == number)
            .cloned()
            .ok_or_else(|| {
                // An unknown workflow is NOT_FOUND; an unknown number of a known one names it.
                if versions.is_empty() {
                    AppError::NotFound("workflow")
                } else {
                    AppError::bad_input(
                        field,
                        format!("{field}: this workflow has no version {number}"),
                    )
                }
            })
    };
    let (from_version, to_version) = (pick(from, "from")?, pick(to, "to")?);
    // Only the steps that differ are read with their documents: a step with the same
    // definition in the same place is in neither list of the diff.
    let (before_refs, after_refs) = (from_version.step_refs()?, to_version.step_refs()?);
    let same: HashSet<usize> = before_refs
        .iter()
        .enumerate()
        .filter(|(i, r)| after_refs.get(*i) == Some(*r))
        .map(|(i, _)| i)
        .collect();
    let keep = |refs: &[StepRef]| -> Vec<(i32, StepRef)> {
        refs.iter()
            .enumerate()
            .filter(|(i, _)| !same.contains(i))
            .map(|(i, r)| (i32::try_from(i + 1).unwrap_or(i32::MAX), r.clone()))
            .collect()
    };
    let (before, after) = (keep(&before_refs), keep(&after_refs));
    let hashes: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|(_, r)| r.1.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let snapshots: HashMap<String, Snapshot> = if hashes.is_empty() {
        HashMap::new()
    } else {
        let mut tx = db.read(tenant).await?;
        tx.load(
            tx.workflow_step_snapshots()
                .filter(workflow_step_snapshots::workflow_id.eq(workflow_id))
                .filter(workflow_step_snapshots::hash.eq_any(&hashes))
                .select(Snapshot::columns()),
        )
        .await?
        .into_iter()
        .map(|s: Snapshot| (s.hash.clone(), s))
        .collect()
    };
    let resolve = |steps: Vec<(i32, StepRef)>| -> AppResult<Vec<VersionStep>> {
        steps
            .into_iter()
            .map(|(number, StepRef(step_id, hash))| {
                let snapshot = snapshots.get(&hash).cloned().ok_or_else(|| {
                    AppError::internal(anyhow::anyhow!("snapshot {hash} is not stored"))
                })?;
                Ok(VersionStep {
                    step_id,
                    number,
                    snapshot,
                })
            })
            .collect()
    };
    let (before, after) = (resolve(before)?, resolve(after)?);
    let mut changed_fields = Vec::new();
    if from_version.name != to_version.name {
        changed_fields.push("name");
    }
    if from_version.description != to_version.description {
        changed_fields.push("description");
    }
    if from_version.tags != to_version.tags {
        changed_fields.push("tags");
    }
    let before_by_id: HashMap<&str, &VersionStep> =
        before.iter().map(|s| (s.step_id.as_str(), s)).collect();
    let after_ids: HashSet<&str> = after.iter().map(|s| s.step_id.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for step in &after {
        match before_by_id.get(step.step_id.as_str()) {
            None => added.push(step.clone()),
            Some(old) => {
                let mut fields = Vec::new();
                if old.number != step.number {
                    fields.push("stepNumber");
                }
                fields.extend(old.snapshot.differences(&step.snapshot));
                if !fields.is_empty() {
                    changed.push(StepDiff {
                        from: (*old).clone(),
                        to: step.clone(),
                        fields,
                    });
                }
            }
        }
    }
    let removed = before
        .iter()
        .filter(|s| !after_ids.contains(s.step_id.as_str()))
        .cloned()
        .collect();
    Ok(VersionDiff {
        from: from_version,
        to: to_version,
        changed_fields,
        added,
        removed,
        changed,
    })
}

/// Restores version `number` of a workflow: its name, description, tags and steps become
/// what they were then (steps still there are changed in place, removed ones come back
/// with their ids, later ones go), and the restore is recorded as a new version. Runs
/// keep the version they ran; screenshots stay where they are and are shown again by the
/// steps that showed them (one that no longer exists is left out).
pub async fn restore(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    number: i32,
) -> AppResult<Workflow> {
    let version = find(db, tenant, workflow_id, number).await?;
    let mut steps = steps_of(db, tenant, std::slice::from_ref(&version)).await?;
    let steps = steps.remove(&version.id).unwrap_or_default();
    let (version, steps) = (&version, &steps);
    db.write(tenant, |tx| restored_to(tx, version, steps).into_work())
        .await?;
    // Read after the commit: the restore's version is written just before it.
    super::workflow::find(db, tenant, workflow_id).await
}

async fn restored_to(
    tx: &mut Tx<NoEvents>,
    version: &Version,
    target: &[VersionStep],
) -> AppResult<Workflow> {
    let workflow_id = version.workflow_id.as_str();
    let at = now();
    // The workflow first (lock order), and the viewer must be allowed to edit it.
    super::step::touch_workflow(tx, workflow_id, at).await?;
    visibility::require(tx, workflow_id, Need::Edit).await?;
    let current: Vec<Step> = tx
        .load(
            tx.steps()
                .filter(steps::workflow_id.eq(workflow_id))
                .select(Step::columns()),
        )
        .await?;
    let wanted: HashSet<&str> = target.iter().map(|s| s.step_id.as_str()).collect();
    let gone: Vec<&str> = current
        .iter()
        .filter(|s| !wanted.contains(s.id.as_str()))
        .map(|s| s.id.as_str())
        .collect();
    if !gone.is_empty() {
        tx.execute(
            tx.steps()
                .filter(steps::workflow_id.eq(workflow_id))
                .filter(steps::id.eq_any(&gone))
                .delete(),
        )
        .await?;
    }
    tx.execute(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .set(steps::step_number.eq(steps::step_number + RENUMBER_OFFSET)),
    )
    .await?;
    // Screenshots the version showed that still exist in the company (share-locked, so a
    // workflow deletion keeps them or has already removed them).
    let mut shown: Vec<String> = target
        .iter()
        .filter_map(|s| s.snapshot.screenshot_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    shown.sort();
    tx.lock_rows(Lock::Share, screenshots::id, &shown).await?;
    let existing: HashSet<String> = if shown.is_empty() {
        HashSet::new()
    } else {
        let mut company = tx.company_wide();
        company
            .load(
                company
                    .screenshots()
                    .filter(screenshots::id.eq_any(&shown))
                    .select(screenshots::id),
            )
            .await?
            .into_iter()
            .collect()
    };
    let by_id: HashMap<&str, &Step> = current.iter().map(|s| (s.id.as_str(), s)).collect();
    for step in target {
        let snapshot = &step.snapshot;
        let screenshot = snapshot
            .screenshot_id
            .clone()
            .filter(|id| existing.contains(id));
        match by_id.get(step.step_id.as_str()) {
            Some(old) => {
                let unchanged = Snapshot::of(old, at).hash == snapshot.hash;
                tx.execute(
                    tx.steps()
                        .filter(steps::id.eq(&step.step_id))
                        .set(RestoredStep::from(
                            snapshot,
                            screenshot,
                            step.number,
                            at,
                            unchanged,
                        )),
                )
                .await?;
            }
            None => {
                let mut row = super::step::NewStep {
                    action_type: snapshot.action_type.clone(),
                    field_label: snapshot.field_label.clone(),
                    instruction: snapshot.instruction.clone(),
                    ai_confidence: snapshot.ai_confidence,
                    ai_model: snapshot.ai_model.clone(),
                    screenshot_id: screenshot,
                    ..Default::default()
                }
                .into_row_named(
                    "number",
                    tx.tenant(),
                    workflow_id,
                    step.number,
                    at,
                )?;
                row.head.id = step.step_id.clone();
                row.head.label_edited = snapshot.label_edited;
                row.head.instruction_edited = snapshot.instruction_edited;
                row.documents.selectors = snapshot.selectors.clone();
                row.documents.element_meta = snapshot.element_meta.clone();
                row.documents.page_context = snapshot.page_context.clone();
                row.documents.action_data = snapshot.action_data.clone();
                row.documents.dom_context = snapshot.dom_context.clone();
                tx.insert(&mut row).await?;
            }
        }
    }
    let workflow: Workflow = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .set((
                    workflows::name.eq(&version.name),
                    workflows::search_name.eq(super::workflow::search_key(&version.name)),
                    workflows::description.eq(&version.description),
                    workflows::tags.eq(&version.tags),
                    workflows::updated_at.eq(at),
                ))
                .returning(Workflow::columns()),
        )
        .await?;
    restored(tx, workflow_id, version.number);
    super::audit::record(
        tx,
        super::audit::Action::WorkflowVersionRestored,
        super::audit::Target::workflow(workflow_id),
        serde_json::json!({ "number": version.number }),
    )
    .await?;
    Ok(workflow)
}

/// What a restore writes on a step still there (`Some(None)` writes NULL; `None` leaves a
/// column as it is).
#[derive(AsChangeset)]
#[diesel(table_name = steps)]
struct RestoredStep {
    step_number: i32,
    action_type: String,
    selectors: String,
    element_meta: String,
    page_context: String,
    action_data: String,
    dom_context: String,
    screenshot_id: Option<Option<String>>,
    field_label: Option<Option<String>>,
    instruction: Option<Option<String>>,
    ai_confidence: Option<Option<f64>>,
    ai_model: Option<Option<String>>,
    label_edited: bool,
    instruction_edited: bool,
    healed_selectors: Option<Option<String>>,
    healed_at: Option<Option<NaiveDateTime>>,
    healing_confidence: Option<Option<f64>>,
    healing_method: Option<Option<String>>,
    updated_at: NaiveDateTime,
}

impl RestoredStep {
    /// `unchanged`: the step already has this definition, so its healing still applies;
    /// otherwise the healing found for other selectors is dropped.
    fn from(
        snapshot: &Snapshot,
        screenshot_id: Option<String>,
        number: i32,
        at: NaiveDateTime,
        unchanged: bool,
    ) -> Self {
        Self {
            step_number: number,
            action_type: snapshot.action_type.clone(),
            selectors: snapshot.selectors.clone(),
            element_meta: snapshot.element_meta.clone(),
            page_context: snapshot.page_context.clone(),
            action_data: snapshot.action_data.clone(),
            dom_context: snapshot.dom_context.clone(),
            screenshot_id: Some(screenshot_id),
            field_label: Some(snapshot.field_label.clone()),
            instruction: Some(snapshot.instruction.clone()),
            ai_confidence: Some(snapshot.ai_confidence),
            ai_model: Some(snapshot.ai_model.clone()),
            label_edited: snapshot.label_edited,
            instruction_edited: snapshot.instruction_edited,
            healed_selectors: (!unchanged).then_some(None),
            healed_at: (!unchanged).then_some(None),
            healing_confidence: (!unchanged).then_some(None),
            healing_method: (!unchanged).then_some(None),
            updated_at: at,
        }
    }
}

/// Gives every workflow without a version its first one, the definition as found: run
/// once, right after the migration that introduced versions, for every company (so
/// unscoped to find them; each is versioned as its own company's).
pub async fn backfill(db: &Db) -> AppResult<usize> {
    const BATCH: i64 = 500;
    let mut after = String::new();
    let mut versioned = 0;
    loop {
        let rows: Vec<(String, String)> = {
            let mut tx = db.read_unscoped().await?;
            let mut all = tx.unscoped();
            all.load(
                all.workflows()
                    .filter(workflows::id.gt(&after))
                    .filter(workflows::current_version.eq(0))
                    .order(workflows::id.asc())
                    .limit(BATCH)
                    .select((workflows::id, workflows::company_id)),
            )
            .await?
        };
        let Some((last, _)) = rows.last() else {
            return Ok(versioned);
        };
        after = last.clone();
        for (id, company) in rows {
            let tenant = Tenant::new(company);
            let id = id.as_str();
            db.write(&tenant, |tx| first_version(tx, id).into_work())
                .await?;
            versioned += 1;
        }
    }
}

async fn first_version(tx: &mut Tx<NoEvents>, workflow_id: &str) -> AppResult<()> {
    changed(tx, workflow_id, "the definition when versions began");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_bounded() {
        assert_eq!(summary(&["a".into(), "b".into()]), "a; b");
        let long = summary(&["x".repeat(2_000)]);
        assert_eq!(long.chars().count(), MAX_SUMMARY_CHARS);
        assert!(long.ends_with('…'));
    }
}
