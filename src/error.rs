//! The one error boundary.
//!
//! Domain code returns [`AppError`]; resolvers turn it into a GraphQL error whose
//! `extensions.code` tells the client what went wrong. Anything unexpected (database,
//! pool, hashing, I/O) is logged here with full detail and reaches the client only as
//! `INTERNAL` with no detail — internals never leak.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql converts every
//! `Display` type into an error without a code, and we want the compiler to route every
//! error through [`From<AppError> for async_graphql::Error`].

use async_graphql::ErrorExtensions;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The stable error codes clients may branch on (`errors[].extensions.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    /// The server cannot take this on right now (pool exhausted, busy); retry later.
    Unavailable,
    /// Too many attempts from this client or for this account; retry after a while.
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::Unavailable => "UNAVAILABLE",
            Self::RateLimited => "RATE_LIMITED",
            Self::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug)]
pub enum AppError {
    /// No valid token where one is required. The message says which (missing / invalid).
    Unauthenticated(&'static str),
    /// Signed in, but the role does not allow this.
    Forbidden(&'static str),
    /// The entity does not exist *for this tenant* — another company's id lands here too.
    NotFound(&'static str),
    /// Input that can never succeed as sent; `field` names the argument at fault.
    BadUserInput {
        field: Option<String>,
        message: String,
    },
    /// A uniqueness rule was hit (duplicate email, ...).
    Conflict(String),
    /// A shared resource is exhausted for now (database connections, hashing slots, a
    /// deadlock that kept recurring). Nothing was changed; the client may retry after
    /// `retry_after`. The message says which resource, never internals.
    Unavailable {
        message: &'static str,
        retry_after: std::time::Duration,
    },
    /// The caller (client address or account) made too many attempts.
    RateLimited { retry_after: std::time::Duration },
    /// The database aborted the transaction to resolve a conflict with a concurrent one
    /// (deadlock, serialization failure). Nothing was written; the unit of work retries
    /// it a few times and then answers UNAVAILABLE.
    Contention(anyhow::Error),
    /// Something we did not expect. Logged, then reported without detail.
    Internal(anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// Whether this is a database refusing a row whose reference points at nothing: in a
    /// race, the referenced row was deleted meanwhile (callers answer it as missing).
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, Self::Internal(error) if matches!(
            error.downcast_ref::<DieselError>(),
            Some(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _))
        ))
    }

    /// Whether this is a database refusing a duplicate of a unique value.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }

    /// When a client may try again, for the retryable codes.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::RateLimited { retry_after } => {
                Some(*retry_after)
            }
            Self::Contention(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Contention(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The text a client sees.
    pub fn client_message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) => (*m).to_owned(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput { message, .. } | Self::Conflict(message) => message.clone(),
            Self::Unavailable { message, .. } => (*message).to_owned(),
            Self::Contention(_) => {
                "the change collided with concurrent changes too often; try again".to_owned()
            }
            Self::RateLimited { retry_after } => format!(
                "too many attempts; try again in {} seconds",
                retry_after.as_secs().max(1)
            ),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }
}

impl From<DieselError> for AppError {
    fn from(error: DieselError) -> Self {
        match error {
            // Unique violations that a caller did not map to a friendlier CONFLICT are still
            // conflicts, not crashes.
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                Self::Conflict("a record with the same unique value already exists".to_owned())
            }
            // PostgreSQL aborted the transaction to let a concurrent one through: worth
            // running again, not a bug. (diesel has a kind for serialization failures; a
            // deadlock arrives as an unknown error with PostgreSQL's message.)
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                Self::Contention(error.into())
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                if info.message().starts_with("deadlock detected") =>
            {
                Self::Contention(error.into())
            }
            // The connection broke under the query (the database restarted, the network
            // dropped): nothing the client did, and nothing was written. Retryable.
            DieselError::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
                ref info,
            ) => {
                tracing::warn!(error = info.message(), "the database connection broke");
                Self::Unavailable {
                    message: "the database is busy or unreachable; try again shortly",
                    retry_after: std::time::Duration::from_secs(1),
                }
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                if info.message().starts_with("terminating connection") =>
            {
                tracing::warn!(error = info.message(), "the database ended the connection");
                Self::Unavailable {
                    message: "the database is busy or unreachable; try again shortly",
                    retry_after: std::time::Duration::from_secs(1),
                }
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        let code = error.code();
        match &error {
            AppError::Internal(detail) => {
                tracing::error!(error = ?detail, "internal error while handling a request")
            }
            AppError::Contention(detail) => {
                tracing::warn!(error = ?detail, "a transaction kept colliding; gave up")
            }
            _ => {}
        }
        let field = match &error {
            AppError::BadUserInput { field, .. } => field.clone(),
            _ => None,
        };
        // Whole seconds, rounded up: what an HTTP `Retry-After` header can say.
        let retry_after = error
            .retry_after()
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        async_graphql::Error::new(error.client_message()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let Some(field) = &field {
                ext.set("field", field.as_str());
            }
            if let Some(seconds) = retry_after {
                ext.set("retryAfter", seconds.max(1));
            }
        })
    }
}
