//! Embedded migrations: the binary carries both trees, so a deployment needs no files.
//!
//! Both trees hold the same migration names; the tests apply and revert each of them.

use anyhow::{Context as _, anyhow};
use diesel::backend::Backend as DieselBackend;
use diesel::migration::MigrationSource;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{SQLITE_PRAGMAS, SqliteConn};
use crate::config::DatabaseUrl;

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// What to do with the migrations of one database.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    RunPending,
    RevertLast,
    RevertAll,
    Status,
}

/// One line of `migrate status`, or one migration that an action applied or reverted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// Performs `action` on the database at `url` over a dedicated (unpooled) connection.
///
/// Runs diesel's synchronous migration harness through `block_in_place`, so it needs the
/// multi-threaded runtime, which `main` uses.
pub async fn perform(url: &DatabaseUrl, action: Action) -> anyhow::Result<Vec<MigrationState>> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            super::create_sqlite_file(path)?;
            let mut conn = SqliteConn::establish(&path.to_string_lossy())
                .await
                .with_context(|| format!("opening SQLite database {}", path.display()))?;
            conn.batch_execute(SQLITE_PRAGMAS).await?;
            apply(&mut AsyncMigrationHarness::new(conn), SQLITE, action)
        }
        DatabaseUrl::Postgres(url) => {
            let conn = super::PgConnector::parse(url)?
                .connect()
                .await
                .context("connecting to PostgreSQL")?;
            apply(&mut AsyncMigrationHarness::new(conn), POSTGRES, action)
        }
    }
}

fn apply<DB, H>(
    harness: &mut H,
    source: EmbeddedMigrations,
    action: Action,
) -> anyhow::Result<Vec<MigrationState>>
where
    DB: DieselBackend,
    H: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    // Versions are what the harness reports; people read the folder names.
    let names: Vec<(String, String)> = MigrationSource::<DB>::migrations(&source)
        .map_err(|e| anyhow!(e))?
        .iter()
        .map(|m| (m.name().version().to_string(), m.name().to_string()))
        .collect();
    let name_of = |version: String| {
        names
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, name)| name.clone())
            .unwrap_or(version)
    };
    let touched = |versions: Vec<diesel::migration::MigrationVersion<'_>>, applied| {
        versions
            .into_iter()
            .map(|v| MigrationState {
                name: name_of(v.to_string()),
                applied,
            })
            .collect::<Vec<_>>()
    };
    Ok(match action {
        Action::RunPending => touched(
            harness
                .run_pending_migrations(source)
                .map_err(|e| anyhow!(e))?,
            true,
        ),
        Action::RevertLast => {
            let applied = harness.applied_migrations().map_err(|e| anyhow!(e))?;
            if applied.is_empty() {
                Vec::new()
            } else {
                touched(
                    vec![
                        harness
                            .revert_last_migration(source)
                            .map_err(|e| anyhow!(e))?,
                    ],
                    false,
                )
            }
        }
        Action::RevertAll => touched(
            harness
                .revert_all_migrations(source)
                .map_err(|e| anyhow!(e))?,
            false,
        ),
        Action::Status => {
            let applied: Vec<String> = harness
                .applied_migrations()
                .map_err(|e| anyhow!(e))?
                .into_iter()
                .map(|v| v.to_string())
                .collect();
            names
                .iter()
                .map(|(version, name)| MigrationState {
                    name: name.clone(),
                    applied: applied.contains(version),
                })
                .collect()
        }
    })
}
