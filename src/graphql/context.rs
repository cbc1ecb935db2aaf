//! What resolvers find in the GraphQL context.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::Context;
use async_graphql::dataloader::DataLoader;

use crate::auth::credential::Credentials;
use crate::auth::jwt::TokenKeys;
use crate::auth::rate_limit::SignInLimits;
use crate::auth::signed_url::UrlSigner;
use crate::auth::{Authentication, Viewer};
use crate::blobs::BlobStore;
use crate::crypto::password::Passwords;
use crate::crypto::secret_token::SecretTokens;
use crate::db::{Actor, Db, Origin, Reads};
use crate::domain::health::HealthRules;
use crate::domain::session::SessionRules;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::events::log_stream::LogStream;
use crate::graphql::loaders::TenantLoader;
use crate::graphql::stream_cursor::StreamCursors;

/// Process-wide services, added to the schema once at start-up.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    /// Issues and verifies access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Confirms that a credential (a session's access token, an API key) still speaks for
    /// someone with its role.
    pub credentials: Arc<Credentials>,
    /// Mints and recognises API keys and refresh tokens.
    pub secrets: Arc<SecretTokens>,
    /// How sessions are kept (refresh-token lifetime).
    pub sessions: SessionRules,
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
    /// The run queue's limits, schedules' cron rules and webhooks' keys and limits.
    pub queue: Arc<QueueSettings>,
    /// Turns at computing run statistics and retention previews, a bounded number at a time.
    pub statistics: crate::domain::statistics::StatisticsGate,
    /// Who sees which workflow, for subscriptions (restricted workflows).
    pub readers: Arc<super::readers::WorkflowReaders>,
    /// `sharedWorkflow` reads per client address.
    pub share_link_limits: Arc<crate::auth::share_link_limits::ShareLinkLimits>,
}

/// The run queue's settings (issue 13).
pub struct QueueSettings {
    /// Largest run input or output (and webhook body), in bytes of JSON.
    pub max_json_bytes: usize,
    pub cron: crate::domain::schedule::CronRules,
    /// Derives webhooks' signing secrets.
    pub webhook_keys: crate::domain::webhook::WebhookKeys,
    /// How far a signed timestamp may be from now, in seconds.
    pub webhook_tolerance_seconds: i64,
    /// Requests per minute per hook id on this instance.
    pub(crate) webhook_limits: crate::auth::rate_limit::KeyedBuckets,
    /// Put in front of `/hooks/...` in `Webhook.url`, without a trailing slash.
    pub public_url: Option<String>,
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

impl Services {
    /// The shared pool, reading from a replica when there is a usable one: for the
    /// snapshots subscriptions send (their live events come from the bus).
    pub fn snapshots(&self) -> Db {
        self.db.reading_from(Reads::Replica)
    }
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
    scope: OperationScope,
    client_address: Option<IpAddr>,
    user_agent: Option<String>,
}

/// What each operation of a request (or of a WebSocket connection) gets on its own: the
/// request's database handle, reading from where the operation's type says
/// ([`Reads`]), and a batch loader on that handle for a verified viewer's company.
#[derive(Clone)]
pub struct OperationScope {
    db: Db,
    tenant: Option<crate::domain::Tenant>,
    batch_window: std::time::Duration,
}

impl OperationScope {
    /// `request` with the operation's database handle and loader attached.
    pub fn attach(&self, request: async_graphql::Request, reads: Reads) -> async_graphql::Request {
        let db = self.db.reading_from(reads);
        let loader = self
            .tenant
            .as_ref()
            .map(|tenant| TenantLoader::for_request(db.clone(), tenant.clone(), self.batch_window));
        let request = request.data(RequestDb(db));
        match loader {
            Some(loader) => request.data(loader),
            None => request,
        }
    }
}

/// The database handle of one request: its queries share a few connections (see
/// [`Db::for_request`]), so one request cannot occupy the whole pool.
pub struct RequestDb(pub Db);

impl RequestData {
    pub fn new(services: &Services, authentication: Authentication) -> Self {
        let db = services.db.for_request(services.request_connections);
        let tenant = match &authentication {
            Authentication::Verified(viewer) => Some(viewer.tenant.clone()),
            _ => None,
        };
        Self {
            authentication,
            scope: OperationScope {
                db,
                tenant,
                batch_window: services.batch_window,
            },
            client_address: None,
            user_agent: None,
        }
    }

    /// Where the request came from, when the transport knows.
    pub fn from_address(mut self, address: Option<IpAddr>) -> Self {
        self.client_address = address;
        self
    }

    /// The client's `User-Agent`, when it sent one.
    pub fn from_user_agent(mut self, user_agent: Option<&str>) -> Self {
        self.user_agent = user_agent.and_then(Origin::clean_user_agent);
        self
    }

    /// The request's database handle carries who acts and from where, so that what the
    /// request writes knows it (the audit log, a new session's client).
    fn with_origin(mut self) -> Self {
        let actor = match &self.authentication {
            Authentication::Verified(viewer) => viewer.actor(),
            Authentication::Anonymous | Authentication::Invalid => Actor::Anonymous,
        };
        self.scope.db = self.scope.db.with_origin(Origin {
            actor,
            client_address: self.client_address.map(|a| a.to_string()),
            user_agent: self.user_agent.clone(),
        });
        self
    }

    /// For one HTTP request running one operation whose reads go to `reads`.
    pub fn attach(self, request: async_graphql::Request, reads: Reads) -> async_graphql::Request {
        let this = self.with_origin();
        let mut request = this.scope.attach(request.data(this.authentication), reads);
        if let Some(address) = this.client_address {
            request = request.data(ClientAddress(address));
        }
        request
    }

    /// For a WebSocket connection (`connection_init`): the connection's data, and the
    /// scope each of its operations is attached to ([`OperationScope::attach`]).
    pub fn into_session(self) -> (async_graphql::Data, OperationScope) {
        let this = self.with_origin();
        let mut data = async_graphql::Data::default();
        data.insert(this.authentication);
        if let Some(address) = this.client_address {
            data.insert(ClientAddress(address));
        }
        (data, this.scope)
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
