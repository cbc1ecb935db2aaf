//! Who is calling: password hashing, JSON Web Tokens, and the [`Viewer`] built from a
//! verified token. A company id is only ever taken from a verified token, never from input.

pub mod jwt;
pub mod mac;
pub mod membership;
pub mod password;
pub mod rate_limit;
pub mod signed_url;
mod viewer;

pub use viewer::{Authentication, Role, Viewer};
