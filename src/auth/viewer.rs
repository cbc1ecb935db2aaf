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
    /// A member of `company_id` with `role`. Admins see the whole company; a regular
    /// member's tenant sees RESTRICTED workflows only where they are the creator or the
    /// workflow is shared with them (see `db::visibility`). A principal acting for the
    /// company rather than as a person (an executor's API key) is meant to see what the
    /// company runs, restricted workflows included: build its tenant with
    /// `Tenant::member(company, key_creator, false)` (or `Tenant::new`) and let its role
    /// guard limit which mutations it may call.
    pub fn member(user_id: String, company_id: String, role: Role) -> Self {
        let tenant = Tenant::member(company_id, user_id.clone(), role != Role::Admin);
        Self {
            user_id,
            tenant,
            role,
        }
    }

    /// The viewer a freshly authenticated member acts as (sign-up, join, login).
    pub fn of_member(user: &User) -> Self {
        Self::member(user.id.clone(), user.company_id.clone(), user.role)
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
