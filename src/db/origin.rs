//! Where a unit of work comes from: who acts (a member, an API key, nobody yet, the server
//! itself) and from which client. A request's [`Db`](super::Db) handle carries its origin
//! ([`Db::with_origin`](super::Db::with_origin)), every unit of work made through that
//! handle knows it ([`Tx::origin`](super::Tx::origin)), and what a write path records about
//! itself (the audit log, a session's client) is read from there, so no domain function
//! takes the actor, address and user agent as parameters of its own.

use std::sync::Arc;

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The server itself: sweepers, migrations, start-up.
    System,
    /// A client that has not signed in (sign-ins, refreshes).
    Anonymous,
    /// A member, by user id.
    User(String),
    /// An API key, by key id.
    ApiKey(String),
}

/// Who acts and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    /// The client's network address, as the transport determined it.
    pub client_address: Option<String>,
    /// The client's `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`] printable characters.
    pub user_agent: Option<String>,
}

/// Longest user agent kept; real ones are a few hundred characters at most.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// The origin of work no request asked for.
pub static SYSTEM: Origin = Origin {
    actor: Actor::System,
    client_address: None,
    user_agent: None,
};

impl Origin {
    /// A user agent as stored: printable characters only, at most
    /// [`MAX_USER_AGENT_CHARS`]; `None` when nothing printable is left.
    pub fn clean_user_agent(raw: &str) -> Option<String> {
        let cleaned: String = raw
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT_CHARS)
            .collect();
        let cleaned = cleaned.trim();
        (!cleaned.is_empty()).then(|| cleaned.to_owned())
    }
}

/// An origin shared by every unit of work of one request.
pub type SharedOrigin = Arc<Origin>;

#[cfg(test)]
mod tests {
    use super::Origin;

    #[test]
    fn user_agents_are_cleaned_and_bounded() {
        assert_eq!(
            Origin::clean_user_agent(" curl/8.0\n\u{1b}[31m ").as_deref(),
            Some("curl/8.0[31m")
        );
        assert_eq!(Origin::clean_user_agent("\n\t"), None);
        let long = "x".repeat(10_000);
        assert_eq!(
            Origin::clean_user_agent(&long).map(|s| s.len()),
            Some(super::MAX_USER_AGENT_CHARS)
        );
    }
}
