//! What resolvers find in the GraphQL context.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::Context;
use async_graphql::dataloader::DataLoader;

use crate::auth::jwt::TokenKeys;
use crate::auth::membership::Memberships;
use crate::auth::rate_limit::SignInLimits;
use crate::auth::signed_url::UrlSigner;
use crate::auth::{Authentication, Viewer};
use crate::blobs::BlobStore;
use crate::crypto::password::Passwords;
use crate::db::Db;
use crate::domain::health::HealthRules;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::events::log_stream::LogStream;
use crate::graphql::loaders::TenantLoader;
use crate::graphql::stream_cursor::StreamCursors;

/// Process-wide services, added to the schema once at start-up.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub tokens: Arc<TokenKeys>,
    /// Confirms that a token's user is still a member with the token's role.
    pub memberships: Arc<Memberships>,
    /// Hashes and checks passwords, a bounded number at a time.
    pub passwords: Arc<Passwords>,
    /// Attempts left for `login`, `signup` and `joinCompany`, per client and per email.
    pub sign_in_limits: Arc<SignInLimits>,
    /// Where committed writes announce themselves to subscriptions.
    pub events: EventBus,
    /// The instance's tail of the health-log stream (`healthLogRecorded`).
    pub log_stream: LogStream,
    /// Signs and checks `healthLogRecorded` resume cursors.
    pub stream_cursors: StreamCursors,
    pub health: HealthRules,
    /// Where screenshot bytes are kept.
    pub blobs: BlobStore,
    /// Signs and checks screenshot URLs.
    pub url_signer: Arc<UrlSigner>,
    pub screenshots: ScreenshotSettings,
    /// How long a request's batch loader collects keys before it queries.
    pub batch_window: std::time::Duration,
    /// Database connections one request (or one WebSocket) may hold at once.
    pub request_connections: usize,
    /// Turns at computing run statistics, a bounded number at a time.
    pub statistics: crate::domain::statistics::StatisticsGate,
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

/// The network address a request came from (see `http::client_address`), for per-client
/// limits.
#[derive(Debug, Clone, Copy)]
struct ClientAddress(IpAddr);

/// The per-request data every transport attaches: who is calling, from where, the
/// request's share of the database pool and, for a verified viewer, the batch loader of
/// their company.
pub struct RequestData {
    authentication: Authentication,
    db: RequestDb,
    loader: Option<DataLoader<TenantLoader>>,
    client_address: Option<IpAddr>,
}

/// The database handle of one request: its queries share a few connections (see
/// [`Db::for_request`]), so one request cannot occupy the whole pool.
pub struct RequestDb(pub Db);

impl RequestData {
    pub fn new(services: &Services, authentication: Authentication) -> Self {
        let db = services.db.for_request(services.request_connections);
        let loader = match &authentication {
            Authentication::Verified(viewer) => Some(TenantLoader::for_request(
                db.clone(),
                viewer.tenant.clone(),
                services.batch_window,
            )),
            _ => None,
        };
        Self {
            authentication,
            db: RequestDb(db),
            loader,
            client_address: None,
        }
    }

    /// Where the request came from, when the transport knows.
    pub fn from_address(mut self, address: Option<IpAddr>) -> Self {
        self.client_address = address;
        self
    }

    /// For one HTTP request.
    pub fn attach(self, request: async_graphql::Request) -> async_graphql::Request {
        let mut request = request.data(self.authentication).data(self.db);
        if let Some(address) = self.client_address {
            request = request.data(ClientAddress(address));
        }
        match self.loader {
            Some(loader) => request.data(loader),
            None => request,
        }
    }

    /// For a WebSocket connection (`connection_init`).
    pub fn into_data(self) -> async_graphql::Data {
        let mut data = async_graphql::Data::default();
        data.insert(self.authentication);
        data.insert(self.db);
        if let Some(address) = self.client_address {
            data.insert(ClientAddress(address));
        }
        if let Some(loader) = self.loader {
            data.insert(loader);
        }
        data
    }
}

pub trait ContextExt {
    fn services(&self) -> &Services;
    /// The request's database handle (its share of the pool).
    fn db(&self) -> &Db;
    /// The batch loader for the viewer's company, or UNAUTHENTICATED.
    fn loader(&self) -> AppResult<&DataLoader<TenantLoader>>;
    fn authentication(&self) -> &Authentication;
    /// The client's network address, when the transport knows it.
    fn client_address(&self) -> Option<IpAddr>;
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

    fn db(&self) -> &Db {
        // Every transport attaches a RequestDb; without one (the schema printed by
        // `stepwise schema`, never executed) the shared pool is the only handle there is.
        match self.data_opt::<RequestDb>() {
            Some(RequestDb(db)) => db,
            None => &self.services().db,
        }
    }

    fn client_address(&self) -> Option<IpAddr> {
        self.data_opt::<ClientAddress>().map(|address| address.0)
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
