use crate::domain::Tenant;
use crate::error::{AppError, AppResult};

/// A member's role inside their company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum Role {
    /// Manages the company: members, invite token, settings, destructive actions.
    Admin,
    /// Reads everything in the company and records and edits workflows.
    Regular,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Regular => "regular",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "regular" => Some(Self::Regular),
            _ => None,
        }
    }
}

/// The signed-in user of a request, built only from a verified token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: String,
    pub tenant: Tenant,
    pub role: Role,
}

impl Viewer {
    /// The viewer a freshly authenticated member acts as (sign-up, join, login).
    pub fn of_member(user: &crate::domain::user::User) -> AppResult<Self> {
        Ok(Self {
            user_id: user.id.clone(),
            tenant: Tenant::new(user.company_id.clone()),
            role: user.role()?,
        })
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// What the transport learned about the caller, attached to every GraphQL request.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No credentials were sent.
    Anonymous,
    /// Credentials were sent but are not acceptable (expired, forged, malformed).
    Invalid,
    Verified(Viewer),
}

impl Authentication {
    /// The viewer, or the UNAUTHENTICATED error a field that needs one reports.
    pub fn viewer(&self) -> AppResult<&Viewer> {
        match self {
            Self::Verified(viewer) => Ok(viewer),
            Self::Anonymous => Err(AppError::Unauthenticated("authentication required")),
            Self::Invalid => Err(AppError::Unauthenticated("invalid or expired token")),
        }
    }
}
