use crate::db::Actor;
use crate::domain::Tenant;
use crate::domain::user::{self, User};
use crate::error::{AppError, AppResult};

/// What a principal may do. Members are ADMIN or MEMBER (`domain::user::Role` `admin` /
/// `regular`); API keys have their own roles, today only EXECUTOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Member,
    /// An API key that runs workflows: the fields of `graphql::executor_access` only.
    Executor,
}

impl Role {
    /// A member's role as a principal's.
    pub fn of_user(role: user::Role) -> Self {
        match role {
            user::Role::Admin => Self::Admin,
            user::Role::Regular => Self::Member,
        }
    }

    /// An API key's role as a principal's.
    pub fn of_api_key(role: crate::domain::api_key::Role) -> Self {
        match role {
            crate::domain::api_key::Role::Executor => Self::Executor,
        }
    }
}

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A member signed in with a session (the access token names both).
    Member { user_id: String, session_id: String },
    /// An API key.
    ApiKey { key_id: String },
}

/// The caller of a request, built only from a verified access token or a recognised API
/// key, and re-checked against the database (cached a few seconds) on every request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub tenant: Tenant,
    pub role: Role,
    pub principal: Principal,
}

impl Viewer {
    /// The viewer a freshly signed-in member acts as (sign-up, join, login, refresh).
    pub fn of_member(user: &User, session_id: &str) -> Self {
        Self {
            tenant: Tenant::new(user.company_id.clone()),
            role: Role::of_user(user.role),
            principal: Principal::Member {
                user_id: user.id.clone(),
                session_id: session_id.to_owned(),
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn is_executor(&self) -> bool {
        self.role == Role::Executor
    }

    /// The member acting, if a member is.
    pub fn user_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Member { user_id, .. } => Some(user_id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// The member acting, or FORBIDDEN for an API key (for what only a person can do:
    /// author a workflow, read a notification, change their own account).
    pub fn member_id(&self) -> AppResult<&str> {
        self.user_id().ok_or(AppError::Forbidden(
            "only a signed-in member may do this, not an API key",
        ))
    }

    /// The member's session, if a member is acting.
    pub fn session_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Member { session_id, .. } => Some(session_id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// What the credential check caches by: the session's id or the key's.
    pub fn credential_id(&self) -> &str {
        match &self.principal {
            Principal::Member { session_id, .. } => session_id,
            Principal::ApiKey { key_id } => key_id,
        }
    }

    /// Whom per-principal limits count: the member (all their sessions) or the key.
    pub fn principal_id(&self) -> &str {
        match &self.principal {
            Principal::Member { user_id, .. } => user_id,
            Principal::ApiKey { key_id } => key_id,
        }
    }

    /// Whether a change announced for `id` (a user, a session or a key) may concern this
    /// viewer's credentials.
    pub fn concerns(&self, id: &str) -> bool {
        match &self.principal {
            Principal::Member {
                user_id,
                session_id,
            } => user_id == id || session_id == id,
            Principal::ApiKey { key_id } => key_id == id,
        }
    }

    /// The actor the audit log names for this viewer.
    pub fn actor(&self) -> Actor {
        match &self.principal {
            Principal::Member { user_id, .. } => Actor::User(user_id.clone()),
            Principal::ApiKey { key_id } => Actor::ApiKey(key_id.clone()),
        }
    }
}

/// What the transport learned about the caller, attached to every GraphQL request.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No credentials were sent.
    Anonymous,
    /// Credentials were sent but are not acceptable (expired, forged, malformed, ended).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_actor_is_the_member_or_the_key() {
        let key = Viewer {
            tenant: Tenant::new("c".into()),
            role: Role::Executor,
            principal: Principal::ApiKey { key_id: "k".into() },
        };
        assert_eq!(key.actor(), Actor::ApiKey("k".into()));
        assert!(key.member_id().is_err() && key.user_id().is_none());
        assert!(key.concerns("k") && !key.concerns("u"));
        let member = Viewer {
            tenant: Tenant::new("c".into()),
            role: Role::Member,
            principal: Principal::Member {
                user_id: "u".into(),
                session_id: "s".into(),
            },
        };
        assert_eq!(member.actor(), Actor::User("u".into()));
        assert!(member.concerns("u") && member.concerns("s") && !member.concerns("k"));
        assert_eq!(member.credential_id(), "s");
        assert_eq!(member.principal_id(), "u");
    }
}
