//! Templates: a workflow version snapshotted for reuse, with typed parameters
//! ([`parameters`]). Published to the company or to every company (PUBLIC, the
//! catalogue); instantiated into a new workflow of the caller's company with the values
//! substituted; counted (`usage_count`), rated (1–5 stars per member), tagged and
//! searched; unpublished and deleted by admins and the publisher.
//!
//! A template holds its whole definition (steps with their documents, at most
//! [`MAX_DEFINITION_BYTES`]) and nothing that points back into its company: no step,
//! user, run or log ids, and screenshots only when the publisher chose to include them,
//! then as copies with ids of their own ([`Self`] keeps the blob referenced). What another
//! company reads of a PUBLIC template is exactly that; the publisher's company also sees
//! who published it and from which workflow and version.
//!
//! # Reading across companies
//! The catalogue is the one read path of templates that is not the caller's company:
//! [`catalogue`] (explicit, unscoped) finds the caller's own templates and every
//! published PUBLIC one. Usage counts are bumped on the publisher's row from the
//! instantiating company's unit of work, and rating averages are read across the raters'
//! companies: both explicitly unscoped, both touching numbers only.

pub mod parameters;

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::parameters::{Parameter, ParameterInput, Values};
use super::json::{MAX_STEP_JSON_BYTES, object_text, parse};
use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::screenshot::Screenshot;
use super::step::{MAX_TEXT_CHARS, NewStep, Step};
use super::version::{self, Snapshot};
use super::visibility::{self, Need};
use super::workflow::{self, MAX_STEPS, Status, Workflow, normalize_tags, search_key};
use super::{Tenant, new_id, now, required_name};
use crate::db::expr::Maybe;
use crate::db::schema::{
    screenshots, steps, template_ratings, template_screenshots, workflow_templates,
};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
/// The largest definition a template holds (its steps, serialised): a workflow larger
/// than this cannot be published.
pub const MAX_DEFINITION_BYTES: usize = 8 * 1024 * 1024;
/// The most an instantiation may write (every substituted text and document together).
pub const MAX_INSTANTIATED_BYTES: usize = 16 * 1024 * 1024;

/// Names the one ordering of template lists inside cursors.
pub const ORDERING: &str = "workflow_templates:created_at:desc";

crate::text_enum! {
    /// Who may read and use a template.
    pub enum TemplateVisibility {
        /// The publisher's company.
        Company = "company",
        /// Every company (the catalogue).
        Public = "public",
    }
}

/// A template without its steps (lists show many; the steps are read when asked for).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workflow_templates, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Template {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: String,
    pub visibility: TemplateVisibility,
    pub published: bool,
    pub parameters: String,
    pub step_count: i32,
    pub includes_screenshots: bool,
    pub source_workflow_id: Option<String>,
    pub source_version: Option<i32>,
    pub created_by: Option<String>,
    pub usage_count: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// The row as inserted.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = workflow_templates)]
#[diesel(treat_none_as_default_value = false)]
struct NewTemplate {
    id: String,
    company_id: String,
    name: String,
    search_name: String,
    description: Option<String>,
    tags: String,
    visibility: TemplateVisibility,
    published: bool,
    parameters: String,
    steps: String,
    step_count: i32,
    includes_screenshots: bool,
    source_workflow_id: Option<String>,
    source_version: Option<i32>,
    created_by: Option<String>,
    usage_count: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TenantRow for NewTemplate {
    type Table = workflow_templates::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Template {
    pub fn tags(&self) -> AppResult<Vec<String>> {
        serde_json::from_str(&self.tags).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "template {} has invalid tags: {e}",
                self.id
            ))
        })
    }

    pub fn parameters(&self) -> AppResult<Vec<Parameter>> {
        serde_json::from_str(&self.parameters).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "template {} has invalid parameters: {e}",
                self.id
            ))
        })
    }

    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }

    /// Whether `tenant`'s company published it.
    pub fn is_own(&self, tenant: &Tenant) -> bool {
        self.company_id == tenant.id()
    }
}

/// A screenshot a template includes: a copy of the publisher's row with an id of its own.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = template_screenshots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TemplateScreenshot {
    pub id: String,
    pub company_id: String,
    pub template_id: String,
    pub hash: String,
    pub storage_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub width: i32,
    pub height: i32,
    pub created_at: NaiveDateTime,
}

impl TenantRow for TemplateScreenshot {
    type Table = template_screenshots::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// One step of a template's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStep {
    pub action_type: String,
    pub field_label: Option<String>,
    pub instruction: Option<String>,
    pub ai_confidence: Option<f64>,
    pub ai_model: Option<String>,
    pub selectors: Value,
    pub element_meta: Value,
    pub page_context: Value,
    pub action_data: Value,
    pub dom_context: Value,
    /// A [`TemplateScreenshot`] id, when the publisher included screenshots.
    pub screenshot: Option<String>,
}

/// What `publishTemplate` asks for.
#[derive(Debug, Clone)]
pub struct Publication {
    pub workflow_id: String,
    /// The version to snapshot; the newest when absent.
    pub version: Option<i32>,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub parameters: Vec<ParameterInput>,
    pub visibility: TemplateVisibility,
    pub include_screenshots: bool,
}

fn validate_description(value: Option<String>) -> AppResult<Option<String>> {
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

/// Publishes a version of a workflow as a template. A COMPANY template needs EDIT on the
/// workflow; a PUBLIC one (the definition leaves the company) needs to manage it (admins
/// and its creator). Every `{{placeholder}}` the definition uses must be a declared
/// parameter.
pub async fn publish(db: &Db, tenant: &Tenant, publication: Publication) -> AppResult<Template> {
    let parameters = parameters::declare(publication.parameters)?;
    let name = required_name("name", &publication.name, MAX_NAME_CHARS)?;
    let description = validate_description(publication.description)?;
    let tags =
        serde_json::to_string(&normalize_tags(publication.tags)?).map_err(AppError::internal)?;
    let source = workflow::find(db, tenant, &publication.workflow_id).await?;
    let number = publication.version.unwrap_or(source.current_version);
    let chosen = version::find(db, tenant, &source.id, number)
        .await
        .map_err(|error| match error {
            AppError::NotFound(_) => AppError::bad_input(
                "version",
                format!("version: the workflow has no version {number}"),
            ),
            other => other,
        })?;
    let mut steps = version::steps_of(db, tenant, std::slice::from_ref(&chosen)).await?;
    let steps = steps.remove(&chosen.id).unwrap_or_default();
    let snapshots: Vec<Snapshot> = steps.into_iter().map(|s| s.snapshot).collect();

    let mut used = BTreeSet::new();
    for snapshot in &snapshots {
        for text in [&snapshot.field_label, &snapshot.instruction]
            .into_iter()
            .flatten()
        {
            parameters::collect_names(text, &mut used);
        }
        for document in [
            &snapshot.selectors,
            &snapshot.element_meta,
            &snapshot.page_context,
            &snapshot.action_data,
            &snapshot.dom_context,
        ] {
            parameters::collect_json_names(&parse("step document", document)?, &mut used);
        }
    }
    let declared: BTreeSet<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
    if let Some(missing) = used.iter().find(|name| !declared.contains(name.as_str())) {
        return Err(AppError::bad_input(
            "parameters",
            format!("the workflow uses {{{{{missing}}}}}, which is not a declared parameter"),
        ));
    }

    let at = now();
    let template_id = new_id();
    // The screenshots to include, copied with ids of their own (read company-wide: the
    // steps the publisher sees show them).
    let mut copies: HashMap<String, TemplateScreenshot> = HashMap::new();
    if publication.include_screenshots {
        let shown: Vec<String> = snapshots
            .iter()
            .filter_map(|s| s.screenshot_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !shown.is_empty() {
            let mut tx = db.read(tenant).await?;
            let mut company = tx.company_wide();
            let rows: Vec<Screenshot> = company
                .load(
                    company
                        .screenshots()
                        .filter(screenshots::id.eq_any(&shown))
                        .select(Screenshot::columns()),
                )
                .await?;
            for row in rows {
                copies.insert(
                    row.id.clone(),
                    TemplateScreenshot {
                        id: new_id(),
                        company_id: tenant.id().to_owned(),
                        template_id: template_id.clone(),
                        hash: row.hash,
                        storage_key: row.storage_key,
                        content_type: row.content_type,
                        size_bytes: row.size_bytes,
                        width: row.width,
                        height: row.height,
                        created_at: at,
                    },
                );
            }
        }
    }
    let definition: Vec<TemplateStep> = snapshots
        .iter()
        .map(|s| {
            Ok(TemplateStep {
                action_type: s.action_type.clone(),
                field_label: s.field_label.clone(),
                instruction: s.instruction.clone(),
                ai_confidence: s.ai_confidence,
                ai_model: s.ai_model.clone(),
                selectors: parse("selectors", &s.selectors)?,
                element_meta: parse("element_meta", &s.element_meta)?,
                page_context: parse("page_context", &s.page_context)?,
                action_data: parse("action_data", &s.action_data)?,
                dom_context: parse("dom_context", &s.dom_context)?,
                screenshot: s
                    .screenshot_id
                    .as_ref()
                    .and_then(|id| copies.get(id))
                    .map(|copy| copy.id.clone()),
            })
        })
        .collect::<AppResult<_>>()?;
    let steps_text = serde_json::to_string(&definition).map_err(AppError::internal)?;
    if steps_text.len() > MAX_DEFINITION_BYTES {
        return Err(AppError::bad_input(
            "workflowId",
            format!(
                "the workflow's definition is larger than a template holds ({} MiB)",
                MAX_DEFINITION_BYTES / (1024 * 1024)
            ),
        ));
    }
    let row = NewTemplate {
        id: template_id,
        company_id: tenant.id().to_owned(),
        search_name: search_key(&name),
        name,
        description,
        tags,
        visibility: publication.visibility,
        published: true,
        parameters: serde_json::to_string(&parameters).map_err(AppError::internal)?,
        steps: steps_text,
        step_count: i32::try_from(definition.len()).unwrap_or(i32::MAX),
        includes_screenshots: publication.include_screenshots,
        source_workflow_id: Some(source.id.clone()),
        source_version: Some(chosen.number),
        created_by: tenant.user_id().map(str::to_owned),
        usage_count: 0,
        created_at: at,
        updated_at: at,
    };
    let copies: Vec<TemplateScreenshot> = copies.into_values().collect();
    let need = match publication.visibility {
        TemplateVisibility::Company => Need::Edit,
        TemplateVisibility::Public => Need::Manage,
    };
    let (row_ref, copies_ref, source_id) = (&row, &copies, source.id.as_str());
    db.write(tenant, |tx| {
        published(tx, source_id, need, row_ref, copies_ref).into_work()
    })
    .await?;
    find(db, tenant, &row.id).await
}

async fn published(
    tx: &mut Tx<NoEvents>,
    source_id: &str,
    need: Need,
    row: &NewTemplate,
    copies: &[TemplateScreenshot],
) -> AppResult<()> {
    visibility::require(tx, source_id, need).await?;
    let mut row = row.clone();
    tx.insert(&mut row).await.map_err(account_gone)?;
    let mut copies = copies.to_vec();
    tx.insert_all(&mut copies).await?;
    super::audit::record(
        tx,
        super::audit::Action::TemplatePublished,
        super::audit::Target::workflow(source_id),
        serde_json::json!({
            "templateId": row.id,
            "name": row.name,
            "visibility": row.visibility.as_str(),
            "version": row.source_version,
        }),
    )
    .await
}

fn account_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::Unauthenticated("this account no longer exists")
    } else {
        error
    }
}

/// Which templates a list shows, besides being readable by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The caller's company's templates and the catalogue.
    #[default]
    All,
    /// Only the caller's company's templates (any visibility, published or not).
    Company,
    /// Only the catalogue: published PUBLIC templates of every company (the caller's too).
    Catalogue,
}

#[derive(Debug, Clone, Default)]
pub struct TemplateFilter {
    pub scope: Scope,
    /// Name contains this, ignoring case.
    pub search: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
}

/// What the caller may read: their company's templates, and every published PUBLIC one.
type Readable = dsl::Or<
    dsl::Eq<workflow_templates::company_id, String>,
    dsl::And<
        dsl::Eq<workflow_templates::visibility, TemplateVisibility>,
        dsl::Eq<workflow_templates::published, bool>,
    >,
>;

fn readable(tenant: &Tenant) -> Readable {
    workflow_templates::company_id
        .eq(tenant.id().to_owned())
        .or(workflow_templates::visibility
            .eq(TemplateVisibility::Public)
            .and(workflow_templates::published.eq(true)))
}

/// A LIKE pattern matching `text` literally.
fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

type Matching = dsl::And<
    dsl::And<
        dsl::And<Readable, Maybe<dsl::Eq<workflow_templates::company_id, String>>>,
        Maybe<
            dsl::And<
                dsl::Eq<workflow_templates::visibility, TemplateVisibility>,
                dsl::Eq<workflow_templates::published, bool>,
            >,
        >,
    >,
    dsl::And<
        Maybe<dsl::Escape<dsl::Like<workflow_templates::search_name, String>>>,
        Maybe<dsl::Escape<dsl::Like<workflow_templates::tags, String>>>,
    >,
>;

impl TemplateFilter {
    fn condition(&self, tenant: &Tenant) -> Matching {
        let own = Maybe::when(self.scope == Scope::Company, || {
            workflow_templates::company_id.eq(tenant.id().to_owned())
        });
        let catalogue = Maybe::when(self.scope == Scope::Catalogue, || {
            workflow_templates::visibility
                .eq(TemplateVisibility::Public)
                .and(workflow_templates::published.eq(true))
        });
        let search = Maybe::from_option(
            self.search
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    workflow_templates::search_name
                        .like(format!("%{}%", like_literal(&search_key(s))))
                        .escape('\\')
                }),
        );
        let tag = Maybe::from_option(self.tag.as_deref().map(|tag| {
            workflow_templates::tags
                .like(format!(
                    "%\"{}\"%",
                    like_literal(&tag.trim().to_lowercase())
                ))
                .escape('\\')
        }));
        readable(tenant)
            .and(own)
            .and(catalogue)
            .and(search.and(tag))
    }
}

/// One page of the templates the caller may read, newest first. Across companies on
/// purpose: the catalogue is every company's published PUBLIC templates.
pub async fn catalogue(
    db: &Db,
    tenant: &Tenant,
    filter: &TemplateFilter,
    page: &PageRequest,
) -> AppResult<Page<Template>> {
    let keyset = page.keyset(true, time_key)?;
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let rows = all
        .load(
            all.workflow_templates()
                .filter(filter.condition(tenant))
                .select(Template::columns())
                .keyset(
                    workflow_templates::created_at,
                    workflow_templates::id,
                    keyset,
                ),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many templates the caller may read match `filter` (see [`catalogue`]).
pub async fn count(db: &Db, tenant: &Tenant, filter: &TemplateFilter) -> AppResult<i64> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.workflow_templates()
            .filter(filter.condition(tenant))
            .count(),
    )
    .await
    .map(|rows: Vec<i64>| rows.into_iter().next().unwrap_or(0))
}

/// The templates among `ids` the caller may read (others are silently absent).
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Template>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.workflow_templates()
            .filter(readable(tenant))
            .filter(workflow_templates::id.eq_any(ids))
            .select(Template::columns()),
    )
    .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Template> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("template"))
}

/// The definitions of the given templates the caller may read, by id.
pub async fn steps_of(
    db: &Db,
    tenant: &Tenant,
    ids: &[String],
) -> AppResult<HashMap<String, Vec<TemplateStep>>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let rows: Vec<(String, String)> = all
        .load(
            all.workflow_templates()
                .filter(readable(tenant))
                .filter(workflow_templates::id.eq_any(ids))
                .select((workflow_templates::id, workflow_templates::steps)),
        )
        .await?;
    rows.into_iter()
        .map(|(id, text)| {
            let steps = serde_json::from_str(&text).map_err(|e| {
                AppError::internal(anyhow::anyhow!("template {id} has invalid steps: {e}"))
            })?;
            Ok((id, steps))
        })
        .collect()
}

/// The screenshots among `ids` that templates the caller may read include.
pub async fn screenshots_of(
    db: &Db,
    tenant: &Tenant,
    ids: &[String],
) -> AppResult<Vec<TemplateScreenshot>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let readable_templates = all
        .workflow_templates()
        .filter(readable(tenant))
        .select(workflow_templates::id)
        .into_subquery();
    all.load(
        all.template_screenshots()
            .filter(template_screenshots::id.eq_any(ids))
            .filter(template_screenshots::template_id.eq_any(readable_templates))
            .select(TemplateScreenshot::columns()),
    )
    .await
}

/// Each template's ratings: (average stars, how many), across every rater's company (only
/// the numbers leave them).
pub async fn ratings_of(db: &Db, ids: &[String]) -> AppResult<HashMap<String, (f64, i64)>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let rows: Vec<(String, i64, Option<i64>)> = all
        .load(
            all.template_ratings()
                .filter(template_ratings::template_id.eq_any(ids))
                .group_by(template_ratings::template_id)
                .select((
                    template_ratings::template_id,
                    dsl::count_star(),
                    dsl::sum(template_ratings::stars),
                )),
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, count, _)| *count > 0)
        .map(|(id, count, sum)| {
            // Both at most a few billion: exact in an f64.
            let average = sum.unwrap_or(0) as f64 / count as f64;
            (id, (average, count))
        })
        .collect())
}

/// The stars the tenant's member gave each of `ids`.
pub async fn my_ratings(
    db: &Db,
    tenant: &Tenant,
    ids: &[String],
) -> AppResult<HashMap<String, i32>> {
    let Some(user) = tenant.user_id() else {
        return Ok(HashMap::new());
    };
    let mut tx = db.read(tenant).await?;
    let rows: Vec<(String, i32)> = tx
        .load(
            tx.template_ratings()
                .filter(template_ratings::template_id.eq_any(ids))
                .filter(template_ratings::user_id.eq(user))
                .select((template_ratings::template_id, template_ratings::stars)),
        )
        .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = template_ratings)]
struct Rating {
    company_id: String,
    template_id: String,
    user_id: String,
    stars: i32,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TenantRow for Rating {
    type Table = template_ratings::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// The tenant's member rates a template they may read (1–5 stars; rating again replaces
/// their rating).
pub async fn rate(db: &Db, tenant: &Tenant, template_id: &str, stars: i32) -> AppResult<Template> {
    if !(1..=5).contains(&stars) {
        return Err(AppError::bad_input("stars", "stars must be 1 to 5"));
    }
    let user = tenant
        .user_id()
        .ok_or(AppError::Unauthenticated("only members rate templates"))?
        .to_owned();
    let template = find(db, tenant, template_id).await?;
    let at = now();
    let rating = Rating {
        company_id: tenant.id().to_owned(),
        template_id: template.id.clone(),
        user_id: user,
        stars,
        created_at: at,
        updated_at: at,
    };
    let rating = &rating;
    db.write(tenant, |tx| rated(tx, rating).into_work()).await?;
    Ok(template)
}

async fn rated(tx: &mut Tx<NoEvents>, rating: &Rating) -> AppResult<()> {
    let mut row = rating.clone();
    let (stars, at) = (rating.stars, rating.updated_at);
    tx.insert_with(&mut row, |insert| {
        insert
            .on_conflict((template_ratings::template_id, template_ratings::user_id))
            .do_update()
            .set((
                template_ratings::stars.eq(stars),
                template_ratings::updated_at.eq(at),
            ))
    })
    .await
    .map_err(|error| {
        // The template (or the member) was deleted meanwhile.
        if error.is_foreign_key_violation() {
            AppError::NotFound("template")
        } else {
            error
        }
    })?;
    Ok(())
}

/// The tenant's own template `id`, after checking the viewer may change it (admins and
/// the publisher).
async fn managed(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<Template> {
    let template: Template = tx
        .optional(
            tx.workflow_templates()
                .filter(workflow_templates::id.eq(id))
                .select(Template::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("template"))?;
    if let Some(member) = tx.tenant().restricted_to()
        && template.created_by.as_deref() != Some(member)
    {
        return Err(AppError::Forbidden(
            "only admins and the template's publisher may change it",
        ));
    }
    Ok(template)
}

/// Takes a template out of use: no longer in the catalogue nor instantiable; its company
/// still sees it.
pub async fn unpublish(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Template> {
    db.write(tenant, |tx| unpublished(tx, id).into_work())
        .await?;
    find(db, tenant, id).await
}

async fn unpublished(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<()> {
    let template = managed(tx, id).await?;
    tx.execute(
        tx.workflow_templates()
            .filter(workflow_templates::id.eq(&template.id))
            .set((
                workflow_templates::published.eq(false),
                workflow_templates::updated_at.eq(now()),
            )),
    )
    .await?;
    Ok(())
}

/// Deletes a template with its ratings and screenshot copies. Answers the blob keys its
/// copies named, for [`release_blobs`](super::screenshot::release_blobs) after the commit.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Vec<String>> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<Vec<String>> {
    let template = managed(tx, id).await?;
    let keys: Vec<String> = tx
        .load(
            tx.template_screenshots()
                .filter(template_screenshots::template_id.eq(&template.id))
                .select(template_screenshots::storage_key),
        )
        .await?;
    tx.execute(
        tx.workflow_templates()
            .filter(workflow_templates::id.eq(&template.id))
            .delete(),
    )
    .await?;
    Ok(keys)
}

/// What `instantiateTemplate` asks for.
#[derive(Debug, Clone)]
pub struct Instantiation {
    pub template_id: String,
    /// A JSON object of parameter values.
    pub parameters: Option<Value>,
    /// The new workflow's name; the template's when absent.
    pub name: Option<String>,
    pub project_id: Option<String>,
}

/// Creates a new DRAFT workflow in the caller's company from a template they may read,
/// with the parameter values substituted. Missing required values and wrong types are
/// BAD_USER_INPUT naming the parameter. Screenshots the template includes come along when
/// the template is the caller's company's own (another company's images stay with the
/// template, where its members can still see them).
pub async fn instantiate(
    db: &Db,
    tenant: &Tenant,
    instantiation: Instantiation,
) -> AppResult<Workflow> {
    let created_by = tenant
        .user_id()
        .ok_or(AppError::Unauthenticated("only members create workflows"))?
        .to_owned();
    let template = find(db, tenant, &instantiation.template_id).await?;
    if !template.published {
        return Err(AppError::bad_input(
            "templateId",
            "this template is unpublished and cannot be used",
        ));
    }
    let values = Values::check(&template.parameters()?, instantiation.parameters)?;
    let definition = steps_of(db, tenant, std::slice::from_ref(&template.id))
        .await?
        .remove(&template.id)
        .unwrap_or_default();
    if definition.len() > MAX_STEPS {
        return Err(AppError::internal(anyhow::anyhow!(
            "template {} has more steps than a workflow may",
            template.id
        )));
    }
    let name = match instantiation.name {
        Some(name) => required_name("name", &name, workflow::MAX_NAME_CHARS)?,
        None => template
            .name
            .chars()
            .take(workflow::MAX_NAME_CHARS)
            .collect(),
    };
    let own = template.is_own(tenant);
    // Same company: each included screenshot is the company's screenshot of those bytes.
    let mut images: HashMap<String, TemplateScreenshot> = HashMap::new();
    if own && template.includes_screenshots {
        let ids: Vec<String> = definition
            .iter()
            .filter_map(|s| s.screenshot.clone())
            .collect();
        for row in screenshots_of(db, tenant, &ids).await? {
            images.insert(row.id.clone(), row);
        }
    }

    let at = now();
    let workflow_id = new_id();
    let mut written = 0usize;
    let mut rows = Vec::with_capacity(definition.len());
    for (step, number) in definition.iter().zip(1..) {
        let field = |f: &str| format!("step {number}'s {f}");
        let text = |f: &str,
                    value: &Option<String>,
                    written: &mut usize|
         -> AppResult<Option<String>> {
            let Some(value) = value else {
                return Ok(None);
            };
            let text = values.substitute_text(&field(f), value, 4 * MAX_TEXT_CHARS)?;
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(AppError::bad_input(
                    "parameters",
                    format!(
                        "with these parameters, {} would be longer than {MAX_TEXT_CHARS} characters",
                        field(f)
                    ),
                ));
            }
            *written += text.len();
            Ok(Some(text))
        };
        let document = |f: &str, value: &Value, written: &mut usize| -> AppResult<Value> {
            let value = values.substitute_json(&field(f), value, MAX_STEP_JSON_BYTES)?;
            let stored = object_text("parameters", &value, MAX_STEP_JSON_BYTES).map_err(|_| {
                AppError::bad_input(
                    "parameters",
                    format!(
                        "with these parameters, {} would be larger than 64 KiB",
                        field(f)
                    ),
                )
            })?;
            *written += stored.len();
            Ok(value)
        };
        let new = NewStep {
            action_type: step.action_type.clone(),
            field_label: text("fieldLabel", &step.field_label, &mut written)?,
            instruction: text("instruction", &step.instruction, &mut written)?,
            ai_confidence: step.ai_confidence,
            ai_model: step.ai_model.clone(),
            selectors: Some(document("selectors", &step.selectors, &mut written)?),
            element_meta: Some(document("elementMeta", &step.element_meta, &mut written)?),
            page_context: Some(document("pageContext", &step.page_context, &mut written)?),
            action_data: Some(document("actionData", &step.action_data, &mut written)?),
            dom_context: Some(document("domContext", &step.dom_context, &mut written)?),
            screenshot_id: None,
        };
        if written > MAX_INSTANTIATED_BYTES {
            return Err(AppError::bad_input(
                "parameters",
                format!(
                    "with these parameters, the workflow would be larger than {} MiB",
                    MAX_INSTANTIATED_BYTES / (1024 * 1024)
                ),
            ));
        }
        let row: Step = new.into_row(tenant, &workflow_id, number, at)?;
        rows.push((
            row,
            step.screenshot
                .clone()
                .and_then(|id| images.get(&id).cloned()),
        ));
    }
    let workflow = Workflow {
        id: workflow_id,
        company_id: tenant.id().to_owned(),
        created_by: Some(created_by),
        search_name: search_key(&name),
        name,
        description: template.description.clone(),
        status: Status::Draft,
        success_rate: 0.0,
        total_uses: 0,
        consecutive_failures: 0,
        last_success_at: None,
        last_failure_at: None,
        tags: template.tags.clone(),
        created_at: at,
        updated_at: at,
        current_version: 0,
        project_id: instantiation.project_id,
        visibility: visibility::Visibility::Company,
    };
    let what = format!("created from template \"{}\"", template.name);
    let (workflow_ref, rows_ref, what_ref, template_id) =
        (&workflow, &rows, what.as_str(), template.id.as_str());
    db.write(tenant, |tx| {
        instantiated(tx, workflow_ref, rows_ref, what_ref, template_id).into_work()
    })
    .await?;
    Ok(Workflow {
        current_version: 1,
        ..workflow
    })
}

async fn instantiated(
    tx: &mut Tx<NoEvents>,
    workflow: &Workflow,
    rows: &[(Step, Option<TemplateScreenshot>)],
    what: &str,
    template_id: &str,
) -> AppResult<()> {
    let with_images = rows.iter().any(|(_, image)| image.is_some());
    if with_images {
        // Decisions about the company's screenshots and blobs are taken under its lock,
        // the first of the lock order (see `domain::screenshot`).
        tx.lock_company(Lock::NoKeyUpdate).await?;
    }
    let steps: Vec<Step> = rows.iter().map(|(step, _)| step.clone()).collect();
    workflow::created(tx, workflow, &steps, &[], what).await?;
    if with_images {
        let mut by_hash: HashMap<&str, String> = HashMap::new();
        for (step, image) in rows {
            let Some(image) = image else {
                continue;
            };
            let id = match by_hash.get(image.hash.as_str()) {
                Some(id) => id.clone(),
                None => {
                    let id = company_screenshot(tx, &workflow.id, image).await?;
                    by_hash.insert(&image.hash, id.clone());
                    id
                }
            };
            tx.execute(
                tx.steps()
                    .filter(steps::id.eq(&step.id))
                    .set(steps::screenshot_id.eq(&id)),
            )
            .await?;
        }
    }
    // The publisher's count, from this company's unit of work: a number, nothing else.
    let mut all = tx.unscoped();
    all.execute(
        all.workflow_templates()
            .filter(workflow_templates::id.eq(template_id))
            .set(workflow_templates::usage_count.eq(workflow_templates::usage_count + 1)),
    )
    .await?;
    Ok(())
}

/// The company's screenshot of `image`'s bytes (share-locked): the existing one, or a new
/// row for the new workflow naming the same blob, which the template keeps referenced.
async fn company_screenshot(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    image: &TemplateScreenshot,
) -> AppResult<String> {
    let existing: Option<String> = {
        let mut company = tx.company_wide();
        company
            .optional(
                company
                    .screenshots()
                    .filter(screenshots::hash.eq(&image.hash))
                    .select(screenshots::id),
            )
            .await?
    };
    if let Some(id) = existing {
        tx.lock(Lock::Share, screenshots::id, &id).await?;
        return Ok(id);
    }
    let mut row = Screenshot {
        id: new_id(),
        company_id: String::new(),
        workflow_id: workflow_id.to_owned(),
        hash: image.hash.clone(),
        storage_key: image.storage_key.clone(),
        content_type: image.content_type.clone(),
        size_bytes: image.size_bytes,
        width: image.width,
        height: image.height,
        created_at: now(),
    };
    tx.insert(&mut row).await?;
    Ok(row.id)
}
