//! Object identification (Relay's `node`): which kind of entity a bare id names. Ids are
//! UUIDv7 strings the server generates for every table, unique across all of them, so an
//! id needs no type prefix; a lookup probes each table's primary key within the company in
//! one statement ([`Tx::tables_holding`](crate::db::Tx::tables_holding)), then the caller
//! loads the object through the same lookup its typed field uses, so whatever that lookup
//! enforces (the company, restricted visibility) holds for `node` too.
//!
//! Adding an entity: one line in [`KINDS`] (and its variant in [`Kind`]), and one arm in
//! `graphql/node.rs`.

use std::collections::HashMap;

use super::Tenant;
use crate::db::schema::{health_logs, notifications, runs, screenshots, steps, users, workflows};
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
];

/// The kind of each of `ids` the tenant has; others (missing, or another company's) are
/// absent alike.
pub async fn kinds_of(
    db: &Db,
    tenant: &Tenant,
    ids: &[String],
) -> AppResult<HashMap<String, Kind>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let tables: Vec<TableName> = KINDS.iter().map(|(_, table)| *table).collect();
    let mut tx = db.read(tenant).await?;
    let held = tx.tables_holding(&tables, ids).await?;
    Ok(held
        .into_iter()
        .filter_map(|(index, id)| Some((id, KINDS.get(index)?.0)))
        .collect())
}
