//! Who is calling: access tokens (JSON Web Tokens) and API keys, the [`Viewer`] built from
//! either, the credential check every request makes (session not ended, key not revoked,
//! member still there with that role), sign-in limits and signed screenshot URLs. A company
//! id is only ever taken from a verified token or a recognised key, never from input.
//! Members, sessions and keys are read through `domain`; the primitives (password hashing,
//! MACs, secret tokens) are in `crypto`.

pub mod credential;
pub mod jwt;
pub mod rate_limit;
pub mod signed_url;
mod viewer;

pub use viewer::{Authentication, Principal, Role, Viewer};
