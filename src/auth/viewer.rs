use crate::domain::Tenant;
use crate::domain::user::{Role, User};
use crate::error::{AppError, AppResult};

/// The signed-in user of a request, built only from a verified token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: String,
    pub tenant: Tenant,
    pub role: Role,
}

impl Viewer {
    /// The viewer a freshly authenticated member acts as (sign-up, join, login).
    pub fn of_member(user: &User) -> Self {
        Self {
            user_id: user.id.clone(),
            tenant: Tenant::new(user.company_id.clone()),
            role: user.role,
        }
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
