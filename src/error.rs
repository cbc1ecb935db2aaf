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

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The text a client sees.
    pub fn client_message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) => (*m).to_owned(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput { message, .. } | Self::Conflict(message) => message.clone(),
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
            other => Self::Internal(other.into()),
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        let code = error.code();
        if let AppError::Internal(detail) = &error {
            tracing::error!(error = ?detail, "internal error while handling a request");
        }
        let field = match &error {
            AppError::BadUserInput { field, .. } => field.clone(),
            _ => None,
        };
        async_graphql::Error::new(error.client_message()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let Some(field) = &field {
                ext.set("field", field.as_str());
            }
        })
    }
}
