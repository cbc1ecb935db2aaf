//! What resolvers find in the GraphQL context.

use std::sync::Arc;

use async_graphql::Context;

use crate::auth::jwt::TokenKeys;
use crate::auth::{Authentication, Viewer};
use crate::db::Db;
use crate::error::AppResult;

/// Process-wide services, added to the schema once at start-up.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub tokens: Arc<TokenKeys>,
}

static ANONYMOUS: Authentication = Authentication::Anonymous;

pub trait ContextExt {
    fn services(&self) -> &Services;
    fn authentication(&self) -> &Authentication;
    /// The signed-in viewer, or UNAUTHENTICATED.
    fn viewer(&self) -> AppResult<&Viewer> {
        self.authentication().viewer()
    }
}

impl ContextExt for Context<'_> {
    #[allow(clippy::expect_used)] // Services is added at start-up; without it nothing works.
    fn services(&self) -> &Services {
        self.data::<Services>()
            .expect("Services are added to the schema at start-up")
    }

    fn authentication(&self) -> &Authentication {
        self.data_opt::<Authentication>().unwrap_or(&ANONYMOUS)
    }
}
