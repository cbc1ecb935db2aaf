//! Data work that SQL migrations cannot do, run right after them (by `serve` and by
//! `migrate run`): what needs the server's own rules, such as Unicode case folding.

use crate::db::Db;
use crate::db::migrations::MigrationState;

/// The migration that added `workflows.search_name`, which only the server can fill in
/// properly (Unicode case folding).
const WORKFLOW_NAME_SEARCH: &str = "2026-12-01-000003_workflow_name_search_and_order";

/// The migration that added `users.search_name` (member search), likewise.
const MEMBER_SEARCH: &str = "2026-12-06-600002_member_search";
/// The migration that introduced workflow versions: every workflow then gets its first
/// version, its definition as found (versions are hashed by the server).
const WORKFLOW_VERSIONS: &str = "2026-12-06-300001_workflow_versions";

/// Data work that SQL migrations cannot do, after `applied` were applied (by `serve` or by
/// `migrate run`).
pub async fn complete(db: &Db, applied: &[MigrationState]) -> anyhow::Result<()> {
    if applied.iter().any(|m| m.name == WORKFLOW_NAME_SEARCH) {
        let folded = super::workflow::refold_search_names(db)
            .await
            .map_err(|e| anyhow::anyhow!("folding workflow names for search: {e:?}"))?;
        tracing::info!(folded, "folded workflow names for search");
    }
    if applied.iter().any(|m| m.name == WORKFLOW_VERSIONS) {
        let versioned = super::version::backfill(db)
            .await
            .map_err(|e| anyhow::anyhow!("writing the first version of every workflow: {e:?}"))?;
        tracing::info!(versioned, "wrote the first version of existing workflows");
    }
    if applied.iter().any(|m| m.name == MEMBER_SEARCH) {
        let folded = super::user::refold_search_names(db)
            .await
            .map_err(|e| anyhow::anyhow!("folding member names for search: {e:?}"))?;
        tracing::info!(folded, "folded member names for search");
    }
    Ok(())
}
