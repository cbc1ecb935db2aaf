//! Object identification (Relay's `node`): which kind of entity a bare id names. Ids are
//! UUIDv7 strings the server generates for every table, unique across all of them, so an
//! id needs no type prefix; a lookup probes each table's primary key within the company in
//! one statement ([`Tx::tables_holding`](crate::db::Tx::tables_holding)), then the caller
//! loads the object through the same lookup its typed field uses, so whatever that lookup
//! enforces (the company, restricted visibility, admins only, the member's own sessions)
//! holds for `node` too. The probe only says where an id lives; it never decides what the
//! viewer may read.
//!
//! One read path crosses companies: the public template catalogue. An id the company does
//! not hold may still be a published PUBLIC template of another company (or a screenshot
//! one includes), found through the catalogue's own lookups, which read nothing else.
//!
//! Adding an entity: one line in [`KINDS`] (and its variant in [`Kind`]), and one arm in
//! `graphql/node.rs`.

use std::collections::HashMap;

use super::Tenant;
use crate::db::schema::{
    api_keys, audit_log, health_logs, notifications, projects, runs, schedules, screenshots,
    sessions, steps, template_screenshots, users, webhooks, workflow_share_links, workflow_shares,
    workflow_templates, workflow_versions, workflows,
};
use crate::db::{Db, TableName};
use crate::error::AppResult;

/// The kinds of entity a bare id can name (the company itself aside: its id is the
/// tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Workflow,
    Step,
    Screenshot,
    Run,
    HealthLog,
    Notification,
    ApiKey,
    Session,
    AuditEntry,
    Schedule,
    Webhook,
    Version,
    Project,
    Share,
    ShareLink,
    Template,
    TemplateScreenshot,
}

/// Each kind with the tenant table its rows live in.
const KINDS: &[(Kind, TableName)] = &[
    (Kind::User, TableName::of::<users::table>()),
    (Kind::Workflow, TableName::of::<workflows::table>()),
    (Kind::Step, TableName::of::<steps::table>()),
    (Kind::Screenshot, TableName::of::<screenshots::table>()),
    (Kind::Run, TableName::of::<runs::table>()),
    (Kind::HealthLog, TableName::of::<health_logs::table>()),
    (Kind::Notification, TableName::of::<notifications::table>()),
    (Kind::ApiKey, TableName::of::<api_keys::table>()),
    (Kind::Session, TableName::of::<sessions::table>()),
    (Kind::AuditEntry, TableName::of::<audit_log::table>()),
    (Kind::Schedule, TableName::of::<schedules::table>()),
    (Kind::Webhook, TableName::of::<webhooks::table>()),
    (Kind::Version, TableName::of::<workflow_versions::table>()),
    (Kind::Project, TableName::of::<projects::table>()),
    (Kind::Share, TableName::of::<workflow_shares::table>()),
    (
        Kind::ShareLink,
        TableName::of::<workflow_share_links::table>(),
    ),
    (Kind::Template, TableName::of::<workflow_templates::table>()),
    (
        Kind::TemplateScreenshot,
        TableName::of::<template_screenshots::table>(),
    ),
];

/// The kind of each of `ids` the tenant has, or may read in the public template
/// catalogue; others (missing, or another company's) are absent alike.
pub async fn kinds_of(
    db: &Db,
    tenant: &Tenant,
    ids: &[String],
) -> AppResult<HashMap<String, Kind>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let tables: Vec<TableName> = KINDS.iter().map(|(_, table)| *table).collect();
    let held = {
        let mut tx = db.read(tenant).await?;
        tx.tables_holding(&tables, ids).await?
    };
    let mut kinds: HashMap<String, Kind> = held
        .into_iter()
        .filter_map(|(index, id)| Some((id, KINDS.get(index)?.0)))
        .collect();
    let elsewhere: Vec<String> = ids
        .iter()
        .filter(|id| !kinds.contains_key(*id))
        .cloned()
        .collect();
    if !elsewhere.is_empty() {
        for template in super::template::find_many(db, tenant, &elsewhere).await? {
            kinds.insert(template.id, Kind::Template);
        }
        for shot in super::template::screenshots_of(db, tenant, &elsewhere).await? {
            kinds.insert(shot.id, Kind::TemplateScreenshot);
        }
    }
    Ok(kinds)
}
