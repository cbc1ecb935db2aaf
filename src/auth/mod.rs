//! Who is calling: JSON Web Tokens, the [`Viewer`] built from a verified token, membership
//! checks, sign-in limits and signed screenshot URLs. A company id is only ever taken from a
//! verified token, never from input. Members are read through `domain`; the primitives
//! (password hashing, MACs) are in `crypto`.

pub mod jwt;
pub mod membership;
pub mod rate_limit;
pub mod share_link_limits;
pub mod signed_url;
mod viewer;

pub use viewer::{Authentication, Viewer};
