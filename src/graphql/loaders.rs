//! Batch loading for nested fields, so a page of workflows with their steps, screenshots
//! and authors costs a fixed number of statements whatever the page size.
//!
//! One [`TenantLoader`] is built per request (or per WebSocket connection) for the
//! verified viewer's company: every key is looked up *inside that company*, so a loader
//! can never return another tenant's row. It does not cache across requests.
//!
//! Each area adds `impl Loader<Key> for TenantLoader` beside its resolvers, with a key
//! newtype naming what is loaded (`UserById`, `StepsOfWorkflow`, ...).

use std::time::Duration;

use async_graphql::dataloader::DataLoader;

use crate::db::Db;
use crate::domain::Tenant;

pub struct TenantLoader {
    pub db: Db,
    pub tenant: Tenant,
}

impl TenantLoader {
    /// `window` is how long the loader waits after the first key for the rest of a level's
    /// keys: every sibling resolver must enqueue its key within it, or the level costs a
    /// second query.
    pub fn for_request(db: Db, tenant: Tenant, window: Duration) -> DataLoader<Self> {
        DataLoader::new(Self { db, tenant }, tokio::spawn).delay(window)
    }
}

/// Loader errors must be `Clone`; the error boundary has already logged internals.
pub type LoadError = async_graphql::Error;

/// Converts a domain error at the loader boundary.
pub fn load_error(error: crate::error::AppError) -> LoadError {
    error.into()
}
