//! The GraphQL API: one file per area, merged into one schema.
//!
//! Resolvers are thin: they read the viewer from the context, call `domain::`, and wrap the
//! rows in GraphQL object types. Every object carries the [`Viewer`](crate::auth::Viewer)
//! it was loaded for, so nested fields stay inside that viewer's company.

mod account;
mod company;
mod context;
mod guards;
mod user;

use async_graphql::{EmptySubscription, MergedObject, Schema, SchemaBuilder};

pub use context::Services;

/// Everything a client can read.
#[derive(MergedObject, Default)]
pub struct Query(user::UserQuery, company::CompanyQuery);

/// Everything a client can change.
#[derive(MergedObject, Default)]
pub struct Mutation(account::AccountMutation, company::CompanyMutation);

pub type StepwiseSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema without any runtime data: `serve` adds [`Services`], `schema` prints it.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query::default(), Mutation::default(), EmptySubscription)
}

/// The SDL that `schema.graphql` must equal.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}
