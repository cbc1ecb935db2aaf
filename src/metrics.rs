//! Process metrics, exposed by `GET /metrics` in the Prometheus/OpenMetrics text format.
//!
//! One process-wide registry: everything that counts (the GraphQL transports, the event bus,
//! the database connections) reaches it without threading a handle through every layer.
//! Label values come from closed sets only (transport, operation type, the root fields of
//! *our* schema, outcome), so no client can grow the number of series. Only the registry
//! and the metrics' definitions live here, so every layer can count without depending on
//! the layers above it; which operation a request ran is worked out by the transports'
//! shared pipeline (`http/operation.rs`).

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// How a GraphQL request arrived.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    Http,
    Websocket,
    /// Server-Sent Events (graphql-sse).
    Sse,
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::Http => "http",
            Self::Websocket => "websocket",
            Self::Sse => "sse",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

/// How a GraphQL request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Data without errors.
    Ok,
    /// Executed, but some fields failed (NOT_FOUND, FORBIDDEN, ...).
    FieldError,
    /// Refused before execution: unparsable, invalid, over a limit, unauthenticated.
    RequestError,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::Ok => "ok",
            Self::FieldError => "field_error",
            Self::RequestError => "request_error",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub transport: Transport,
    /// `query`, `mutation`, `subscription`, or `unknown` when the request never parsed.
    pub operation: &'static str,
    /// The first root field, e.g. `workflows` or `reportStep`; `unknown` when the request
    /// was refused (its field names are then not known to be ours).
    pub field: String,
    pub outcome: Outcome,
}

/// Why an event from another instance was dropped (`unsigned`, `bad_signature`,
/// `malformed`): a closed set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedEventLabels {
    pub reason: &'static str,
}

/// A database server: `primary`, or a read replica's `host:port/database` (from the
/// configuration, a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

/// A read replica, by its `host:port/database`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub replica: String,
}

/// What the retention sweep removed (`runs`, `health_logs`, `notifications`): a closed set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub operation: &'static str,
    pub field: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<OperationLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram>,
    pub websocket_connections: Gauge,
    pub subscriptions: Gauge,
    pub events_published: Counter,
    pub events_received_remote: Counter,
    pub events_delivered: Counter,
    /// Subscription answers resolved through GraphQL: once per group and event when
    /// subscribers share an operation, once per subscriber otherwise.
    pub subscription_resolutions: Counter,
    /// Shared subscription answers handed to a subscriber (resolved once for its group).
    pub subscription_shared_deliveries: Counter,
    /// Groups of subscribers sharing one resolution per event.
    pub subscription_groups: Gauge,
    pub events_rejected: Family<RejectedEventLabels, Counter>,
    pub db_statements: Counter,
    pub db_server_statements: Family<ServerLabels, Counter>,
    pub db_replica_up: Family<ReplicaLabels, Gauge>,
    pub db_replica_lag_seconds: Family<ReplicaLabels, Gauge<f64, AtomicU64>>,
    pub event_bus_up: Gauge,
    pub events_lost: Counter,
    pub events_duplicate: Counter,
    pub db_pool_connections: Gauge,
    pub db_pool_idle: Gauge,
    pub parsed_documents: Gauge,
    pub parsed_documents_bytes: Gauge,
    pub sse_streams: Gauge,
    pub persisted_queries: Gauge,
    pub persisted_queries_bytes: Gauge,
    pub retention_removed_rows: Family<RetentionLabels, Counter>,
    pub retention_batches: Counter,
    pub credential_lookups: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("stepwise");
        let requests = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL operations by transport, operation type, root field and outcome",
            requests.clone(),
        );
        // 0.25 ms .. ~8 s: the hot reads are sub-millisecond, a slow mutation seconds.
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "graphql_request_duration_seconds",
            "Time to answer a GraphQL query or mutation over HTTP",
            latency.clone(),
        );
        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            websocket_connections.clone(),
        );
        let subscriptions = Gauge::default();
        registry.register(
            "subscriptions",
            "Operations running on WebSocket connections and event streams",
            subscriptions.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Events published by this instance after a commit",
            events_published.clone(),
        );
        let events_received_remote = Counter::default();
        registry.register(
            "events_received_remote",
            "Events received from other instances through LISTEN/NOTIFY",
            events_received_remote.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Events handed to a subscription of the company they belong to",
            events_delivered.clone(),
        );
        let subscription_resolutions = Counter::default();
        registry.register(
            "subscription_resolutions",
            "Subscription answers resolved through GraphQL (once per group of subscribers sharing an operation)",
            subscription_resolutions.clone(),
        );
        let subscription_shared_deliveries = Counter::default();
        registry.register(
            "subscription_shared_deliveries",
            "Subscription answers resolved once for a group and sent to one of its subscribers",
            subscription_shared_deliveries.clone(),
        );
        let subscription_groups = Gauge::default();
        registry.register(
            "subscription_groups",
            "Groups of subscribers sharing one resolution per event",
            subscription_groups.clone(),
        );
        let events_rejected = Family::<RejectedEventLabels, Counter>::default();
        // Every reason shows from the start, at 0, so a rise is visible to alert rules.
        for reason in ["unsigned", "bad_signature", "malformed"] {
            drop(events_rejected.get_or_create(&RejectedEventLabels { reason }));
        }
        registry.register(
            "events_rejected",
            "Event notifications from the database dropped because they were not envelopes \
             signed with the shared secret",
            events_rejected.clone(),
        );
        let db_statements = Counter::default();
        registry.register(
            "db_statements",
            "SQL statements started",
            db_statements.clone(),
        );
        let db_server_statements = Family::<ServerLabels, Counter>::default();
        registry.register(
            "db_server_statements",
            "SQL statements started, by database server (primary or read replica)",
            db_server_statements.clone(),
        );
        let db_replica_up = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "db_replica_up",
            "1 while a read replica serves reads; 0 while it is down or lags too far",
            db_replica_up.clone(),
        );
        let db_replica_lag_seconds = Family::<ReplicaLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "db_replica_lag_seconds",
            "How far a read replica's replay was behind at its last check",
            db_replica_lag_seconds.clone(),
        );
        let event_bus_up = Gauge::default();
        registry.register(
            "event_bus_up",
            "1 while this instance is connected to the event bus it shares with the others \
             (always 1 for an instance on its own)",
            event_bus_up.clone(),
        );
        let events_lost = Counter::default();
        registry.register(
            "events_lost",
            "Events that could not be sent to the other instances (bus down or too slow); \
             their subscribers resynchronise",
            events_lost.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Event envelopes from other instances received again and dropped",
            events_duplicate.clone(),
        );
        let db_pool_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Open pooled database connections",
            db_pool_connections.clone(),
        );
        let db_pool_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Pooled database connections not in use",
            db_pool_idle.clone(),
        );
        let parsed_documents = Gauge::default();
        registry.register(
            "parsed_documents",
            "Parsed GraphQL documents kept for reuse",
            parsed_documents.clone(),
        );
        let parsed_documents_bytes = Gauge::default();
        registry.register(
            "parsed_documents_bytes",
            "Estimated memory held by the parsed documents kept for reuse",
            parsed_documents_bytes.clone(),
        );
        let sse_streams = Gauge::default();
        registry.register(
            "sse_streams",
            "Open event streams (graphql-sse), and reservations waiting for theirs",
            sse_streams.clone(),
        );
        let persisted_queries = Gauge::default();
        registry.register(
            "persisted_queries",
            "Automatic persisted queries kept by their hash",
            persisted_queries.clone(),
        );
        let persisted_queries_bytes = Gauge::default();
        registry.register(
            "persisted_queries_bytes",
            "Memory held by the automatic persisted queries kept",
            persisted_queries_bytes.clone(),
        );
        let retention_removed_rows = Family::<RetentionLabels, Counter>::default();
        // Every kind shows from the start, at 0.
        for kind in ["runs", "health_logs", "notifications", "audit_entries"] {
            drop(retention_removed_rows.get_or_create(&RetentionLabels { kind }));
        }
        registry.register(
            "retention_removed",
            "Rows the retention sweep of this instance removed, by kind",
            retention_removed_rows.clone(),
        );
        let retention_batches = Counter::default();
        registry.register(
            "retention_batches",
            "Retention sweep batches (one transaction each) this instance committed",
            retention_batches.clone(),
        );
        let credential_lookups = Counter::default();
        registry.register(
            "credential_lookups",
            "Times this instance asked the database whether a session or API key still holds \
             (cache misses; concurrent misses of one credential share one lookup)",
            credential_lookups.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            websocket_connections,
            subscriptions,
            events_published,
            events_received_remote,
            events_delivered,
            subscription_resolutions,
            subscription_shared_deliveries,
            subscription_groups,
            events_rejected,
            db_statements,
            db_server_statements,
            db_replica_up,
            db_replica_lag_seconds,
            event_bus_up,
            events_lost,
            events_duplicate,
            db_pool_connections,
            db_pool_idle,
            parsed_documents,
            parsed_documents_bytes,
            sse_streams,
            persisted_queries,
            persisted_queries_bytes,
            retention_removed_rows,
            retention_batches,
            credential_lookups,
        }
    }

    /// Counts `removed` rows of `kind` removed by the retention sweep.
    pub fn retention_removed(&self, kind: &'static str, removed: usize) {
        self.retention_removed_rows
            .get_or_create(&RetentionLabels { kind })
            .inc_by(u64::try_from(removed).unwrap_or(u64::MAX));
    }

    /// Counts one GraphQL operation (and, over HTTP, how long it took).
    pub fn record(&self, labels: OperationLabels, elapsed: Option<Duration>) {
        if let Some(elapsed) = elapsed {
            self.latency
                .get_or_create(&LatencyLabels {
                    operation: labels.operation,
                    field: labels.field.clone(),
                })
                .observe(elapsed.as_secs_f64());
        }
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts an event notification dropped for `reason`.
    pub fn reject_event(&self, reason: &'static str) {
        self.events_rejected
            .get_or_create(&RejectedEventLabels { reason })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}

/// Holds a gauge up while alive: a WebSocket connection, a running subscription.
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn hold(gauge: &'static Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
