//! Role guards, attached to fields with `#[graphql(guard = "...")]` so role rules live in the
//! schema definition rather than scattered through resolver bodies.

use async_graphql::{Context, Guard};

use super::context::ContextExt as _;
use crate::error::AppError;

/// Only a company admin may use this field; anyone else gets FORBIDDEN (or UNAUTHENTICATED
/// without a valid token).
pub struct AdminOnly;

impl Guard for AdminOnly {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let viewer = ctx.viewer()?;
        if viewer.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden("only company admins may do this").into())
        }
    }
}
