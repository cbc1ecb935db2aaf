//! What resolvers find in the GraphQL context.

use std::sync::Arc;

use async_graphql::Context;
use async_graphql::dataloader::DataLoader;

use crate::auth::jwt::TokenKeys;
use crate::auth::membership::Memberships;
use crate::auth::signed_url::UrlSigner;
use crate::auth::{Authentication, Viewer};
use crate::blobs::BlobStore;
use crate::db::Db;
use crate::domain::health::HealthRules;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::graphql::loaders::TenantLoader;

/// Process-wide services, added to the schema once at start-up.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub tokens: Arc<TokenKeys>,
    /// Confirms that a token's user is still a member with the token's role.
    pub memberships: Arc<Memberships>,
    /// Where committed writes announce themselves to subscriptions.
    pub events: EventBus,
    pub health: HealthRules,
    /// Where screenshot bytes are kept.
    pub blobs: BlobStore,
    /// Signs and checks screenshot URLs.
    pub url_signer: Arc<UrlSigner>,
    pub screenshots: ScreenshotSettings,
    /// How long a request's batch loader collects keys before it queries.
    pub batch_window: std::time::Duration,
}

/// Limits and URL shape for screenshots.
#[derive(Debug, Clone)]
pub struct ScreenshotSettings {
    /// Largest upload accepted, in bytes.
    pub max_bytes: usize,
    /// Largest image accepted, in pixels (width × height).
    pub max_pixels: u64,
    /// Put in front of `/screenshots/...` in `Screenshot.url`, without a trailing slash.
    pub public_url: Option<String>,
}

static ANONYMOUS: Authentication = Authentication::Anonymous;

/// The per-request data every transport attaches: who is calling and, for a verified
/// viewer, the batch loader of their company.
pub struct RequestData {
    authentication: Authentication,
    loader: Option<DataLoader<TenantLoader>>,
}

impl RequestData {
    pub fn new(services: &Services, authentication: Authentication) -> Self {
        let loader = match &authentication {
            Authentication::Verified(viewer) => Some(TenantLoader::for_request(
                services.db.clone(),
                viewer.tenant.clone(),
                services.batch_window,
            )),
            _ => None,
        };
        Self {
            authentication,
            loader,
        }
    }

    /// For one HTTP request.
    pub fn attach(self, request: async_graphql::Request) -> async_graphql::Request {
        let request = request.data(self.authentication);
        match self.loader {
            Some(loader) => request.data(loader),
            None => request,
        }
    }

    /// For a WebSocket connection (`connection_init`).
    pub fn into_data(self) -> async_graphql::Data {
        let mut data = async_graphql::Data::default();
        data.insert(self.authentication);
        if let Some(loader) = self.loader {
            data.insert(loader);
        }
        data
    }
}

pub trait ContextExt {
    fn services(&self) -> &Services;
    /// The batch loader for the viewer's company, or UNAUTHENTICATED.
    fn loader(&self) -> AppResult<&DataLoader<TenantLoader>>;
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

    fn loader(&self) -> AppResult<&DataLoader<TenantLoader>> {
        match self.data_opt::<DataLoader<TenantLoader>>() {
            Some(loader) => Ok(loader),
            None => Err(self
                .viewer()
                .err()
                .unwrap_or(AppError::Unauthenticated("authentication required"))),
        }
    }
}
