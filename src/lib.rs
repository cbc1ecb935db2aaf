//! Stepwise: a multi-tenant GraphQL backend for browser workflow automation.

pub mod auth;
pub mod backup;
pub mod blobs;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod seed;
pub mod server;
