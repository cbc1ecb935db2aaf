//! The unit of work: how domain code reads and writes, the same for both backends and
//! always inside one company.
//!
//! ```text
//! let run = db.write(&tenant, events, async |tx| {
//!     let run: Run = tx.one(tx.runs().filter(runs::id.eq(run_id)).set(changes)
//!         .returning(Run::as_returning())).await?;
//!     tx.publish(Event::run_changed(&run));
//!     Ok(run)
//! }).await?;
//! ```
//!
//! - **Backend dispatch lives here, once.** A [`Tx`] holds a connection of either backend;
//!   domain code builds ordinary diesel queries (their types do not depend on the backend)
//!   and hands them to `tx.load` / `tx.optional` / `tx.one` / `tx.execute`, which run them
//!   on whichever connection it is: each query is type-checked for both. Conditions and
//!   orderings that vary at run time use [`Maybe`](super::expr::Maybe) and
//!   [`Either`](super::expr::Either) instead of boxing (a boxed query names its backend).
//! - **A tenant table is reached through the tenant.** `tx.runs()`, `tx.workflows()`, ...
//!   are the tables already filtered by the unit of work's company, wrapped in [`Scoped`];
//!   the execution methods take only a `Scoped` query, and its methods add clauses but
//!   never replace the source. [`Tx::insert`] writes the unit of work's company into the
//!   row. A query on a table built any other way does not compile (see below). Reaching
//!   across companies is explicit and rare: [`Db::read_unscoped`](super::Db::read_unscoped)
//!   / [`Db::write_unscoped`](super::Db::write_unscoped) and [`Tx::unscoped`], for sign-in,
//!   sweepers and events from other instances — grep for `unscoped`. Joins name the
//!   joined table directly; their `ON` clause must match `company_id` too.
//! - **Events leave only after commit.** [`Tx::publish`] records an event on the unit of
//!   work; [`Db::write`](super::Db::write) hands them to the [`Outbox`] after the commit,
//!   never after a rollback, nor for an attempt that was retried.
//! - **Row locks** (PostgreSQL's `FOR UPDATE` and friends; SQLite's single writer needs
//!   none) are taken with [`Tx::lock`] and [`Tx::lock_rows`], in the order written in the
//!   `domain` docs. Their SQL is written here, the only backend-specific SQL outside the
//!   migrations and the event bridge.
//! - **A member's view.** A [`Tenant`] is the company as a whole (admins, executors, the
//!   server itself) or as a regular member sees it: then the scoped sources of the tables
//!   whose rows reach a workflow also leave out RESTRICTED workflows the member may not
//!   see, and everything hanging off them ([`visibility`](super::visibility)). Written
//!   once into the source, so no query can forget it. The few decisions the company makes
//!   as a whole on a member's behalf go through [`Tx::company_wide`] (grep for it).
//! - **Work before commit.** A rule that must act once per unit of work, however many
//!   edits the body made, gathers what it needs in a typed [`Tx::extension`] and registers
//!   [`Tx::before_commit`] work, which runs after the body succeeded and before the commit,
//!   in the same transaction (workflow versions: every changed workflow gets one version).
//!   Both belong to the attempt: a retried attempt starts without them.
//! - **SQL the DSL cannot write** (window functions, per-workflow boundaries, time
//!   buckets) is a [`TenantStatement`] built in `db` (see `db::sql`), run with
//!   [`Tx::load_statement`], which hands it the unit of work's company; the trait is
//!   sealed, so raw SQL stays in `db` and still reads a tenant's rows only. A hot write
//!   that fits in one such statement (a step report on PostgreSQL, `db::report`) runs
//!   with [`Db::write_statement`](super::Db::write_statement), on its own without
//!   BEGIN/COMMIT; its caller publishes the events its answer names.
//!
//! A query on a tenant table that does not come from the tenant does not compile (the
//! unit of work only runs a `Scoped` query; a bare table is a mismatched type, E0308):
//!
//! ```compile_fail,E0308
//! # use diesel::prelude::*;
//! # use stepwise::db::schema::runs;
//! # async fn runs_of(tx: &mut stepwise::db::Tx) -> stepwise::error::AppResult<Vec<String>> {
//! tx.load(runs::table.select(runs::id)).await
//! # }
//! ```
//!
//! while the same query through the tenant does. The two examples differ only in where
//! the query starts, so the first fails for that reason alone (stable rustdoc does not
//! check the error code; this twin is what proves the reason):
//!
//! ```no_run
//! # use diesel::prelude::*;
//! # use stepwise::db::schema::runs;
//! # async fn runs_of(tx: &mut stepwise::db::Tx) -> stepwise::error::AppResult<Vec<String>> {
//! tx.load(tx.runs().select(runs::id)).await
//! # }
//! ```

use diesel::associations::HasTable;
use diesel::dsl;
use diesel::expression::Expression;
use diesel::query_builder::{
    AsChangeset, AsQuery, InsertStatement, IntoUpdateTarget, UpdateStatement,
};
use diesel::query_dsl::methods::{
    DistinctDsl, FilterDsl, GroupByDsl, LimitDsl, OffsetDsl, OrderDsl, SelectDsl, ThenOrderDsl,
};
use diesel::query_source::{Column, QuerySource};
use diesel::sql_types::{BigInt, Text};
use diesel::{ExpressionMethods as _, Insertable, QueryableByName, Selectable, Table};
use diesel_async::methods::{ExecuteDsl, LoadQuery};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;

use super::expr::{After, KeysetOrder, Maybe};
use super::partition::{Bind, PartitionedPage, bind_all};
use super::schema::{
    api_keys, audit_log, companies, health_logs, notifications, projects, refresh_tokens,
    retention_policies, runs, schedules, screenshots, sessions, steps, template_ratings,
    template_screenshots, user_settings, users, webhooks, workflow_share_links, workflow_shares,
    workflow_step_snapshots, workflow_templates, workflow_versions, workflows,
};
use super::sql::TenantStatement;
use super::visibility::{self, InCompany, Reach};
use super::{Backend, Held, SqliteConn};
use crate::error::{AppError, AppResult};
use diesel_async::pooled_connection::deadpool::Object;

/// The company whose data a unit of work may see and change, and whose view of it: the
/// company's own (every row; admins, executors, the server's sweepers) or a regular
/// member's, who sees RESTRICTED workflows only where they are the creator or shared with
/// (see [`visibility`](super::visibility)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    company: String,
    /// The member acting, if a member is.
    user: Option<String>,
    /// Whether the member sees only the workflows shared with them.
    restricted: bool,
}

impl Tenant {
    /// Only for a company id the server vouches for: the `company_id` claim of a token
    /// whose signature was verified, a row read from the database, a company being created.
    /// The unit of work sees the whole company.
    pub(crate) fn new(company_id: String) -> Self {
        Self {
            company: company_id,
            user: None,
            restricted: false,
        }
    }

    /// A member of the company acting (from a verified token): `restricted` when they see
    /// only the workflows they may (regular members), not when they see the whole company
    /// (admins).
    pub(crate) fn member(company_id: String, user_id: String, restricted: bool) -> Self {
        Self {
            company: company_id,
            user: Some(user_id),
            restricted,
        }
    }

    /// No company: the tenant of an unscoped unit of work. No company's id is empty, so
    /// every scoped table of such a unit of work is empty.
    pub(super) fn nobody() -> Self {
        Self::new(String::new())
    }

    pub fn id(&self) -> &str {
        &self.company
    }

    /// The member acting, when one is (the author of what they change).
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The member whose view limits what this tenant sees, when it is limited.
    pub fn restricted_to(&self) -> Option<&str> {
        self.user.as_deref().filter(|_| self.restricted)
    }
}

/// Where committed events go (the instance's event bus). Every event of a unit of work
/// belongs to its tenant, who is handed over with them.
pub trait Outbox<E>: Send + Sync {
    fn publish(&self, tenant: &Tenant, events: Vec<E>);

    /// Resolves once the events published so far have left this instance for the others
    /// (or cannot now); a write is answered only then, so a client that got its answer
    /// knows every instance will hear of it even if this one dies the next moment. The
    /// default has nothing to wait for.
    fn handed_over(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The future of one attempt at a write unit of work, boxed: see [`IntoWork`].
///
/// A write runs a closure over its unit of work (`|tx| f(tx, ..).into_work()`), which
/// it may call again to retry. Were that closure an `async` closure, its future would
/// be typed by the unit of work's lifetime for every lifetime at once, and the compiler
/// cannot prove such futures `Send` (rustc's "implementation of `Send` is not general
/// enough"). A boxed future is `Send` by its type; the second lifetime says that what
/// the closure captured (`'o`) outlives the unit of work it is given (`'t`).
pub struct Work<'o, 't, T> {
    future: std::pin::Pin<Box<dyn std::future::Future<Output = AppResult<T>> + Send + 't>>,
    _outlives: std::marker::PhantomData<&'t &'o ()>,
}

impl<T> Work<'_, '_, T> {
    pub(super) async fn run(self) -> AppResult<T> {
        self.future.await
    }
}

/// Turns the future of a domain function over a unit of work into [`Work`].
pub trait IntoWork<T>: std::future::Future<Output = AppResult<T>> + Send + Sized {
    fn into_work<'o, 't>(self) -> Work<'o, 't, T>
    where
        Self: 't,
    {
        Work {
            future: Box::pin(self),
            _outlives: std::marker::PhantomData,
        }
    }
}

impl<T, F> IntoWork<T> for F where F: std::future::Future<Output = AppResult<T>> + Send {}

/// Events of a unit of work that only reads: none can be made.
#[derive(Debug, Clone, Copy)]
pub enum NoEvents {}

/// A query on a tenant table through the tenant (or explicitly across companies through
/// `unscoped`). Its methods add clauses; the source it was built from stays.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until a unit of work runs it"]
pub struct Scoped<Q>(Q);

impl<Q> Scoped<Q> {
    pub fn filter<P>(self, predicate: P) -> Scoped<dsl::Filter<Q, P>>
    where
        Q: FilterDsl<P>,
    {
        Scoped(FilterDsl::filter(self.0, predicate))
    }

    /// A condition that applies only when present (`None`: no condition).
    pub fn filter_maybe<P>(self, predicate: Option<P>) -> Scoped<dsl::Filter<Q, Maybe<P>>>
    where
        Q: FilterDsl<Maybe<P>>,
    {
        Scoped(FilterDsl::filter(self.0, Maybe::from_option(predicate)))
    }

    pub fn select<S>(self, selection: S) -> Scoped<dsl::Select<Q, S>>
    where
        S: Expression,
        Q: SelectDsl<S>,
    {
        Scoped(SelectDsl::select(self.0, selection))
    }

    pub fn count(self) -> Scoped<dsl::Select<Q, dsl::CountStar>>
    where
        Q: SelectDsl<dsl::CountStar>,
    {
        Scoped(SelectDsl::select(self.0, dsl::count_star()))
    }

    pub fn distinct(self) -> Scoped<dsl::Distinct<Q>>
    where
        Q: DistinctDsl,
    {
        Scoped(DistinctDsl::distinct(self.0))
    }

    pub fn order<O>(self, order: O) -> Scoped<dsl::Order<Q, O>>
    where
        O: Expression,
        Q: OrderDsl<O>,
    {
        Scoped(OrderDsl::order(self.0, order))
    }

    pub fn then_order_by<O>(self, order: O) -> Scoped<dsl::ThenOrderBy<Q, O>>
    where
        O: Expression,
        Q: ThenOrderDsl<O>,
    {
        Scoped(ThenOrderDsl::then_order_by(self.0, order))
    }

    pub fn limit(self, limit: i64) -> Scoped<dsl::Limit<Q>>
    where
        Q: LimitDsl,
    {
        Scoped(LimitDsl::limit(self.0, limit))
    }

    pub fn offset(self, offset: i64) -> Scoped<dsl::Offset<Q>>
    where
        Q: OffsetDsl,
    {
        Scoped(OffsetDsl::offset(self.0, offset))
    }

    pub fn group_by<G>(self, group: G) -> Scoped<dsl::GroupBy<Q, G>>
    where
        G: Expression,
        Q: GroupByDsl<G>,
    {
        Scoped(GroupByDsl::group_by(self.0, group))
    }

    /// One keyset page: `limit` rows after `after` (a sort key and the id that breaks
    /// ties) in `(key, id)` order, ascending or `backward`.
    pub fn keyset<K, I, V>(self, key: K, id: I, page: Keyset<V>) -> Scoped<KeysetPage<Q, K, I, V>>
    where
        Q: FilterDsl<Maybe<After<K, I, V>>>,
        dsl::Filter<Q, Maybe<After<K, I, V>>>: OrderDsl<KeysetOrder<K, I>>,
        dsl::Order<dsl::Filter<Q, Maybe<After<K, I, V>>>, KeysetOrder<K, I>>: LimitDsl,
        K: Copy,
        I: Copy,
    {
        let Keyset {
            backward,
            after,
            limit,
        } = page;
        let condition = after.map(|(value, row_id)| After {
            key,
            id,
            value,
            row_id,
            backward,
        });
        let order = KeysetOrder {
            key,
            id,
            descending: backward,
        };
        Scoped(LimitDsl::limit(
            OrderDsl::order(
                FilterDsl::filter(self.0, Maybe::from_option(condition)),
                order,
            ),
            limit,
        ))
    }

    /// `UPDATE` of the rows this query selects.
    pub fn set<V>(self, changes: V) -> Scoped<dsl::Update<Q, V>>
    where
        Q: IntoUpdateTarget,
        V: AsChangeset<Target = <Q as HasTable>::Table>,
        dsl::Update<Q, V>: AsQuery,
    {
        Scoped(diesel::update(self.0).set(changes))
    }

    /// `DELETE` of the rows this query selects.
    pub fn delete(self) -> Scoped<dsl::delete<Q>>
    where
        Q: IntoUpdateTarget,
    {
        Scoped(diesel::delete(self.0))
    }

    /// The query itself, to embed as a subquery (`column.eq_any(tx.steps().select(..))`).
    pub fn into_subquery(self) -> Q {
        self.0
    }
}

impl<T, U, V> Scoped<UpdateStatement<T, U, V>>
where
    T: Table + QuerySource,
{
    pub fn returning<E>(self, returned: E) -> Scoped<dsl::Returning<UpdateStatement<T, U, V>, E>>
    where
        E: diesel::SelectableExpression<T>,
        UpdateStatement<T, U, V, diesel::query_builder::ReturningClause<E>>:
            diesel::query_builder::Query,
    {
        Scoped(self.0.returning(returned))
    }
}

/// A keyset page request as the database sees it.
#[derive(Debug, Clone)]
pub struct Keyset<V> {
    /// Scan towards smaller keys.
    pub backward: bool,
    /// The last row seen: its sort key and id.
    pub after: Option<(V, String)>,
    /// Rows to fetch.
    pub limit: i64,
}

/// A query limited to one keyset page (see [`Scoped::keyset`]).
pub type KeysetPage<Q, K, I, V> =
    dsl::Limit<dsl::Order<dsl::Filter<Q, Maybe<After<K, I, V>>>, KeysetOrder<K, I>>>;

/// A row type read by its columns, the same selection on both backends.
///
/// diesel's `as_select()` names the backend in its type, so a query using it could only
/// run on one; the column tuple a row derives `Selectable` from is the same for both, and
/// `Queryable` reads it back in field order. Write `Run::columns()` where diesel's docs
/// write `Run::as_select()` (also in `returning`).
pub trait Columns:
    Selectable<diesel::pg::Pg>
    + Selectable<
        diesel::sqlite::Sqlite,
        SelectExpression = <Self as Selectable<diesel::pg::Pg>>::SelectExpression,
    > + Sized
{
    /// The columns the row is read from, in field order.
    fn columns() -> <Self as Selectable<diesel::pg::Pg>>::SelectExpression {
        <Self as Selectable<diesel::pg::Pg>>::construct_selection()
    }
}

impl<T> Columns for T where
    T: Selectable<diesel::pg::Pg>
        + Selectable<
            diesel::sqlite::Sqlite,
            SelectExpression = <T as Selectable<diesel::pg::Pg>>::SelectExpression,
        >
{
}

/// A row of a tenant table: [`Tx::insert`] writes the unit of work's company into it.
pub trait TenantRow {
    type Table: Table + Default;
    fn set_company_id(&mut self, company_id: &str);
}

/// The `INSERT` of a [`TenantRow`] (for any row whose struct derives `Insertable`).
pub trait InsertRow<'a>: TenantRow + Sync + 'a {
    type Insert: Send + 'a;
    fn insert(&'a self) -> Self::Insert;
}

impl<'a, R> InsertRow<'a> for R
where
    R: TenantRow + Sync + 'a,
    &'a R: Insertable<R::Table>,
    InsertStatement<R::Table, <&'a R as Insertable<R::Table>>::Values>: Send,
{
    type Insert = InsertStatement<R::Table, <&'a R as Insertable<R::Table>>::Values>;

    fn insert(&'a self) -> Self::Insert {
        diesel::insert_into(R::Table::default()).values(self)
    }
}

/// A table whose rows belong to one company each (`company_id`).
pub trait TenantTable: Table {
    /// The table's name in SQL.
    const NAME: &'static str;
    /// How its rows reach a workflow, if they do (what a restricted member sees of it).
    const REACH: Option<Reach>;
}

/// The row lock a statement takes on PostgreSQL (see the lock order in `domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// For rows about to be deleted, or whose key changes.
    Update,
    /// What an `UPDATE` takes anyway: it does not block the foreign-key checks of rows
    /// being inserted that reference the locked one.
    NoKeyUpdate,
    /// For rows that must stay while this transaction adds a reference to them.
    Share,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Self::Update => "FOR UPDATE",
            Self::NoKeyUpdate => "FOR NO KEY UPDATE",
            Self::Share => "FOR SHARE",
        }
    }
}

/// The connection of a unit of work, with what it holds while it has it (SQLite's
/// writer permit, the request's share of the pool).
// One per unit of work, on the stack; boxing the larger variant would allocate per unit
// (as for `db::Conn`).
#[allow(clippy::large_enum_variant)]
pub(super) enum TxConn {
    Sqlite(Object<SqliteConn>),
    Postgres(Object<AsyncPgConnection>),
}

/// One unit of work for one company: its connection, queries, locks and events. Made by
/// [`Db::read`](super::Db::read) and [`Db::write`](super::Db::write); it owns its
/// pooled connection, so it borrows nothing from the code that made it.
pub struct Tx<E = NoEvents> {
    conn: TxConn,
    /// Released with the connection: the writer permit (SQLite) and the request's share.
    _held: Held,
    tenant: Tenant,
    events: Vec<E>,
    /// What the attempt's rules keep while it runs (see [`Tx::extension`]).
    extensions: Vec<Box<dyn std::any::Any + Send>>,
    /// Work to do once the attempt's own work succeeded, before it commits (see
    /// [`Tx::before_commit`]).
    before_commit: Vec<BeforeCommit<E>>,
    /// Who acts and from where; `None`: the server itself.
    origin: Option<super::origin::SharedOrigin>,
}

/// Work a unit of work runs just before it commits, in the same transaction.
pub type BeforeCommit<E> = Box<dyn for<'t> FnOnce(&'t mut Tx<E>) -> Work<'static, 't, ()> + Send>;

/// Runs `$run` with `$c` bound to the unit of work's connection, whichever backend it is:
/// the one place where a query is compiled once per backend.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $run:expr) => {
        match $conn {
            TxConn::Postgres(pooled) => {
                let $c: &mut AsyncPgConnection = pooled;
                $run
            }
            TxConn::Sqlite(pooled) => {
                let $c: &mut SqliteConn = pooled;
                $run
            }
        }
    };
}

impl<E: Send> Tx<E> {
    pub(super) fn new(
        conn: TxConn,
        held: Held,
        tenant: Tenant,
        origin: Option<super::origin::SharedOrigin>,
    ) -> Self {
        Self {
            conn,
            _held: held,
            tenant,
            events: Vec::new(),
            extensions: Vec::new(),
            before_commit: Vec::new(),
            origin,
        }
    }

    /// Forgets what an earlier attempt of the same unit of work left (it was rolled back).
    pub(super) fn start_attempt(&mut self) {
        self.events.clear();
        self.extensions.clear();
        self.before_commit.clear();
    }

    /// The next piece of work registered with [`Tx::before_commit`], if any is left.
    pub(super) fn next_before_commit(&mut self) -> Option<BeforeCommit<E>> {
        (!self.before_commit.is_empty()).then(|| self.before_commit.remove(0))
    }

    /// The attempt's value of type `T` (its default the first time it is asked for):
    /// state a domain rule gathers while the unit of work runs and acts on before the
    /// commit (e.g. which workflows' definitions changed, so each gets one new version
    /// however many edits the unit of work made). Gone with the attempt; a retried
    /// attempt starts without it.
    pub fn extension<T: Default + Send + 'static>(&mut self) -> &mut T {
        let index = match self.extensions.iter().position(|e| e.is::<T>()) {
            Some(index) => index,
            None => {
                self.extensions.push(Box::new(T::default()));
                self.extensions.len() - 1
            }
        };
        match self.extensions[index].downcast_mut::<T>() {
            Some(value) => value,
            None => unreachable!("the extension at this index was found by its type"),
        }
    }

    /// Runs `work` after the unit of work's own body succeeded and before it commits, in
    /// the same transaction, in the order registered (work may register more). An error
    /// rolls everything back like an error of the body. Registered work belongs to the
    /// attempt: a retried attempt registers its own.
    pub fn before_commit(
        &mut self,
        work: impl for<'t> FnOnce(&'t mut Tx<E>) -> Work<'static, 't, ()> + Send + 'static,
    ) {
        self.before_commit.push(Box::new(work));
    }

    /// Who this unit of work acts for and from where (see [`origin`](super::origin)).
    pub fn origin(&self) -> &super::Origin {
        self.origin.as_deref().unwrap_or(&super::origin::SYSTEM)
    }

    pub(super) fn conn(&mut self) -> &mut TxConn {
        &mut self.conn
    }

    pub(super) fn take_events(&mut self) -> Vec<E> {
        std::mem::take(&mut self.events)
    }

    /// The company this unit of work acts for.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Records an event, published once the unit of work has committed.
    pub fn publish(&mut self, event: E) {
        self.events.push(event);
    }

    /// The company's own row.
    pub fn company(&self) -> Scoped<dsl::Filter<companies::table, dsl::Eq<companies::id, String>>> {
        Scoped(FilterDsl::filter(
            companies::table,
            companies::id.eq(self.tenant.company.clone()),
        ))
    }

    /// Reaching across companies, for the few places that must (sign-in, sweepers, events
    /// from other instances). Explicit so that it can be found: grep for `unscoped`.
    pub fn unscoped(&mut self) -> Unscoped<'_, E> {
        Unscoped { tx: self }
    }

    /// All rows of `query`.
    //
    // The query methods answer boxed futures, as diesel-async's own do: the future of an
    // `async fn` generic over a query that borrows would carry the query's lifetime
    // bounds into every caller's future, and the compiler cannot prove such futures
    // `Send` (the "not general enough" family of errors); a boxed future is `Send` by
    // its type.
    pub fn load<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Vec<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        Box::pin(async move { Ok(on_conn!(&mut self.conn, |c| query.0.load(c).await?)) })
    }

    /// The first row of `query`, if there is one (the query should limit itself).
    pub fn optional<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Option<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        Box::pin(async move {
            Ok(on_conn!(&mut self.conn, |c| query.0.load(c).await?)
                .into_iter()
                .next())
        })
    }

    /// The one row of `query` (an `UPDATE ... RETURNING` of a row known to exist, a
    /// count); its absence is a bug, reported as INTERNAL.
    pub fn one<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<U>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        Box::pin(async move {
            let rows: Vec<U> = on_conn!(&mut self.conn, |c| query.0.load(c).await?);
            rows.into_iter().next().ok_or_else(|| {
                AppError::internal(anyhow::anyhow!(
                    "a query expected to return a row returned none"
                ))
            })
        })
    }

    /// Runs an `UPDATE` or `DELETE`; answers how many rows it changed.
    pub fn execute<'a, Q>(&'a mut self, statement: Scoped<Q>) -> BoxFuture<'a, AppResult<usize>>
    where
        Q: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn> + Send + 'a,
    {
        Box::pin(async move { Ok(on_conn!(&mut self.conn, |c| statement.0.execute(c).await?)) })
    }

    /// Inserts `row` with the unit of work's company as its `company_id`.
    pub fn insert<'a, R>(&'a mut self, row: &'a mut R) -> BoxFuture<'a, AppResult<()>>
    where
        R: InsertRow<'a>,
        R::Insert: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn>,
    {
        let inserted = self.insert_with(row, |insert| insert);
        Box::pin(async move { inserted.await.map(|_| ()) })
    }

    /// Inserts each of `rows` (one statement each: diesel-async cannot run SQLite's
    /// multi-row inserts; inside one transaction that costs little).
    pub fn insert_all<'a, R>(&'a mut self, rows: &'a mut [R]) -> BoxFuture<'a, AppResult<()>>
    where
        R: InsertRow<'a>,
        R::Insert: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn>,
    {
        for row in rows.iter_mut() {
            row.set_company_id(&self.tenant.company);
        }
        let rows: &'a [R] = rows;
        Box::pin(async move {
            for row in rows {
                let statement = row.insert();
                on_conn!(&mut self.conn, |c| statement.execute(c).await?);
            }
            Ok(())
        })
    }

    /// Inserts `row` with the unit of work's company as its `company_id`, through a
    /// statement that `finish` completes (e.g. `|insert| insert.on_conflict_do_nothing()`);
    /// answers how many rows it inserted.
    pub fn insert_with<'a, R, S>(
        &'a mut self,
        row: &'a mut R,
        finish: impl FnOnce(R::Insert) -> S,
    ) -> BoxFuture<'a, AppResult<usize>>
    where
        R: InsertRow<'a>,
        S: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn> + Send + 'a,
    {
        row.set_company_id(&self.tenant.company);
        let row: &'a R = row;
        let statement = finish(row.insert());
        Box::pin(async move { Ok(on_conn!(&mut self.conn, |c| statement.execute(c).await?)) })
    }

    /// Locks the rows of the tenant's table whose `column` is one of `values`, in id
    /// order (so two transactions locking overlapping sets cannot deadlock), and answers
    /// how many it locked. PostgreSQL only: SQLite's single writer already excludes every
    /// other writer, and the call does nothing there (`None`).
    pub async fn lock_rows<C>(
        &mut self,
        lock: Lock,
        column: C,
        values: &[impl AsRef<str>],
    ) -> AppResult<Option<usize>>
    where
        C: Column,
        C::Table: TenantTable,
    {
        let _ = column;
        let TxConn::Postgres(conn) = &mut self.conn else {
            return Ok(None);
        };
        let conn: &mut AsyncPgConnection = conn;
        if values.is_empty() {
            return Ok(Some(0));
        }
        let sql = format!(
            "SELECT id FROM {table} WHERE company_id = $1 AND {column} IN ({marks}) \
             ORDER BY id {clause}",
            table = <C::Table as TenantTable>::NAME,
            column = C::NAME,
            marks = super::placeholders(2, values.len()),
            clause = lock.clause(),
        );
        let mut query = diesel::sql_query(sql)
            .into_boxed()
            .bind::<Text, _>(self.tenant.company.clone());
        for value in values {
            query = query.bind::<Text, _>(value.as_ref().to_owned());
        }
        Ok(Some(query.execute(conn).await?))
    }

    /// [`Tx::lock_rows`] for one row.
    pub async fn lock<C>(&mut self, lock: Lock, column: C, value: &str) -> AppResult<Option<usize>>
    where
        C: Column,
        C::Table: TenantTable,
    {
        self.lock_rows(lock, column, &[value]).await
    }

    /// Locks the company's own row (PostgreSQL; nothing on SQLite, answering `None`): the
    /// first lock of the lock order in the `domain` docs, taken by write paths that decide
    /// about the company's screenshots and blobs.
    pub async fn lock_company(&mut self, lock: Lock) -> AppResult<Option<usize>> {
        let company = self.tenant.company.clone();
        let TxConn::Postgres(conn) = &mut self.conn else {
            return Ok(None);
        };
        let conn: &mut AsyncPgConnection = conn;
        let sql = format!("SELECT id FROM companies WHERE id = $1 {}", lock.clause());
        Ok(Some(
            diesel::sql_query(sql)
                .bind::<Text, _>(company)
                .execute(conn)
                .await?,
        ))
    }

    /// The tenant's row of `column`'s table whose `column` equals `value`, read and (on
    /// PostgreSQL) locked in one statement: a write path that starts from a row it must
    /// lock saves a round trip.
    pub async fn lock_and_read<R, C>(
        &mut self,
        lock: Lock,
        _column: C,
        value: &str,
    ) -> AppResult<Option<R>>
    where
        C: Column,
        C::Table: TenantTable,
        R: QueryableByName<diesel::pg::Pg>
            + QueryableByName<diesel::sqlite::Sqlite>
            + Send
            + 'static,
    {
        let table = <C::Table as TenantTable>::NAME;
        let column = C::NAME;
        let mut binds = vec![
            Bind::Text(self.tenant.company.clone()),
            Bind::Text(value.to_owned()),
        ];
        let mut template =
            format!("SELECT * FROM {table} WHERE company_id = {{}} AND {column} = {{}}");
        // A member who may not see every workflow reads only what they may see.
        if let Some(condition) = self.visibility_condition(table, <C::Table as TenantTable>::REACH)
        {
            template.push_str(" AND ");
            template.push_str(&condition.sql);
            binds.extend(condition.binds);
        }
        if self.backend() == Backend::Postgres {
            template.push(' ');
            template.push_str(lock.clause());
        }
        let sql = super::partition::with_placeholders(&template, self.backend());
        let rows: Vec<R> = self.raw_load(sql, binds).await?;
        Ok(rows.into_iter().next())
    }

    /// The visibility condition of `table` for this unit of work's viewer, as SQL text with
    /// `{}` marks: `None` when the viewer sees the whole company or the table reaches no
    /// workflow.
    fn visibility_condition(
        &self,
        table: &str,
        reach: Option<Reach>,
    ) -> Option<super::partition::Condition> {
        let member = self.tenant.restricted_to()?;
        let (sql, bounds) = visibility::condition(table, reach?);
        let binds = bounds
            .into_iter()
            .map(|bound| match bound {
                visibility::Bound::Company => Bind::Text(self.tenant.company.clone()),
                visibility::Bound::Member => Bind::Text(member.to_owned()),
            })
            .collect();
        Some(super::partition::Condition { sql, binds })
    }

    /// The run queue's claim: the id of the tenant's next claimable run — `queued`,
    /// `not_before` reached, of one of `workflow_ids` (any workflow when empty), highest
    /// priority first, then the longest waiting, then by id — locked until commit.
    ///
    /// On PostgreSQL `FOR UPDATE SKIP LOCKED`: a run another claimer holds is passed over,
    /// not waited for, so concurrent claimers each take a different run and none blocks
    /// behind another. A run claimed and committed meanwhile is re-checked against the
    /// condition and skipped too. SQLite's single writer excludes every other claimer
    /// already.
    pub async fn next_queued_run(
        &mut self,
        workflow_ids: &[String],
        now: chrono::NaiveDateTime,
    ) -> AppResult<Option<String>> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = Text)]
            id: String,
        }
        let backend = self.backend();
        let mark = |n: usize| match backend {
            Backend::Postgres => format!("${n}"),
            Backend::Sqlite => "?".to_owned(),
        };
        let mut binds = vec![Bind::Text(self.tenant.company.clone()), Bind::Time(now)];
        let mut sql = format!(
            "SELECT id FROM runs WHERE company_id = {} AND status = 'queued' \
             AND not_before <= {}",
            mark(1),
            mark(2)
        );
        if !workflow_ids.is_empty() {
            let marks: Vec<String> = (0..workflow_ids.len()).map(|i| mark(3 + i)).collect();
            sql.push_str(&format!(" AND workflow_id IN ({})", marks.join(", ")));
            binds.extend(workflow_ids.iter().cloned().map(Bind::Text));
        }
        // A member who may not see every workflow claims only runs of those they may run.
        if let Some(member) = self.tenant.restricted_to() {
            let (condition_sql, bounds) = visibility::runnable_runs();
            let condition = super::partition::Condition {
                sql: condition_sql,
                binds: bounds
                    .into_iter()
                    .map(|bound| match bound {
                        visibility::Bound::Company => Bind::Text(self.tenant.company.clone()),
                        visibility::Bound::Member => Bind::Text(member.to_owned()),
                    })
                    .collect(),
            };
            let mut pieces = condition.sql.split("{}").peekable();
            let mut n = binds.len();
            sql.push_str(" AND ");
            while let Some(piece) = pieces.next() {
                sql.push_str(piece);
                if pieces.peek().is_some() {
                    n += 1;
                    sql.push_str(&mark(n));
                }
            }
            binds.extend(condition.binds);
        }
        sql.push_str(" ORDER BY priority DESC, not_before, id LIMIT 1");
        if backend == Backend::Postgres {
            sql.push_str(" FOR UPDATE SKIP LOCKED");
        }
        let rows: Vec<Id> = self.raw_load(sql, binds).await?;
        Ok(rows.into_iter().next().map(|row| row.id))
    }

    /// Whether the database answers a trivial statement (`/readyz`).
    pub async fn ping(&mut self) -> AppResult<()> {
        on_conn!(&mut self.conn, |c| {
            diesel::sql_query("SELECT 1").execute(c).await?
        });
        Ok(())
    }

    /// One page per parent in one statement (see [`PartitionedPage`]), within the tenant.
    pub async fn partitioned_pages<R>(&mut self, page: &PartitionedPage) -> AppResult<Vec<R>>
    where
        R: QueryableByName<diesel::pg::Pg>
            + QueryableByName<diesel::sqlite::Sqlite>
            + Send
            + 'static,
    {
        // The children of a workflow the viewer may not see are not there for them.
        let reach = match page.table {
            "workflows" => Some(Reach::Workflow),
            "notifications" => Some(Reach::OptionalChild),
            "screenshots" => Some(Reach::Screenshot),
            "companies"
            | "users"
            | "projects"
            | "workflow_templates"
            | "template_screenshots"
            | "template_ratings" => None,
            _ => Some(Reach::Child),
        };
        let mut page = page.clone();
        if let Some(condition) = self.visibility_condition(page.table, reach) {
            page.conditions.push(condition);
        }
        let (sql, binds) = page.sql(&self.tenant.company, self.backend());
        self.raw_load(sql, binds).await
    }

    /// The rows of a statement written in SQL (see [`super::sql`]), within the tenant.
    pub async fn load_statement<R>(&mut self, statement: &impl TenantStatement) -> AppResult<Vec<R>>
    where
        R: QueryableByName<diesel::pg::Pg>
            + QueryableByName<diesel::sqlite::Sqlite>
            + Send
            + 'static,
    {
        let scope = super::sql::TenantScope {
            company: &self.tenant.company,
            member: self.tenant.restricted_to(),
        };
        let (sql, binds) = statement.statement(&scope, self.backend()).into_parts();
        self.raw_load(sql, binds).await
    }

    async fn raw_load<R>(&mut self, sql: String, binds: Vec<Bind>) -> AppResult<Vec<R>>
    where
        R: QueryableByName<diesel::pg::Pg>
            + QueryableByName<diesel::sqlite::Sqlite>
            + Send
            + 'static,
    {
        Ok(on_conn!(&mut self.conn, |c| {
            bind_all(diesel::sql_query(sql).into_boxed(), binds)
                .load(c)
                .await?
        }))
    }

    /// A condition on a commit-ordered stream's position column (`health_logs.commit_seq`):
    /// only positions below the point where no transaction can still commit. PostgreSQL
    /// stamps positions with the writing transaction's id, so that point is the oldest
    /// transaction still running; SQLite's single writer commits in stamping order and
    /// needs no fence.
    pub fn commit_fence<C>(
        &self,
        position: C,
    ) -> Maybe<dsl::Lt<C, diesel::expression::SqlLiteral<BigInt>>>
    where
        C: Expression<SqlType = BigInt> + diesel::ExpressionMethods,
    {
        Maybe::when(self.backend() == Backend::Postgres, || {
            position.lt(dsl::sql::<BigInt>(
                // The oldest transaction id still running: a stream stamped with its writers'
                // transaction ids is read only below it, where nothing can appear later.
                "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            ))
        })
    }
}

/// Tenant tables through the tenant: each is the table filtered by the unit of work's
/// company and, for a member who may not see every workflow, by what they may see (for
/// tables whose rows reach a workflow: `=> Reach`).
macro_rules! tenant_tables {
    ($($(#[$doc:meta])* $name:ident $(=> $reach:ident)?),* $(,)?) => {
        impl<E: Send> Tx<E> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Scoped<dsl::Filter<$name::table, InCompany>> {
                    Scoped(FilterDsl::filter(
                        $name::table,
                        InCompany::new(
                            stringify!($name),
                            self.tenant.company.clone(),
                            <$name::table as TenantTable>::REACH,
                            self.tenant.restricted_to(),
                        ),
                    ))
                }
            )*
        }

        impl<E: Send> CompanyWide<'_, E> {
            $(
                /// The whole company's rows, whatever the viewer may see.
                pub fn $name(&self) -> Scoped<dsl::Filter<$name::table, InCompany>> {
                    Scoped(FilterDsl::filter(
                        $name::table,
                        InCompany::new(stringify!($name), self.tx.tenant.company.clone(), None, None),
                    ))
                }
            )*
        }

        impl<E: Send> Unscoped<'_, E> {
            $(
                /// The whole table: every company's rows.
                pub fn $name(&self) -> Scoped<$name::table> {
                    Scoped($name::table)
                }
            )*
        }

        $(
            impl TenantTable for $name::table {
                const NAME: &'static str = stringify!($name);
                const REACH: Option<Reach> = tenant_tables!(@reach $($reach)?);
            }
        )*
    };
    (@reach) => { None };
    (@reach $reach:ident) => { Some(Reach::$reach) };
}

tenant_tables!(
    /// The company's members.
    users,
    /// The company's workflows.
    workflows => Workflow,
    /// The steps of the company's workflows.
    steps => Child,
    /// The company's screenshots.
    screenshots => Screenshot,
    /// The company's runs.
    runs => Child,
    /// The company's health logs.
    health_logs => Child,
    /// The company's notifications.
    notifications => OptionalChild,
    /// The company's API keys (revoked ones too).
    api_keys,
    /// The sessions of the company's members.
    sessions,
    /// The refresh tokens of those sessions (rotated ones too, for reuse detection).
    refresh_tokens,
    /// Members' own settings.
    user_settings,
    /// The company's audit log.
    audit_log,
    /// The company's run schedules.
    schedules => Child,
    /// The company's webhooks.
    webhooks => Child,
    /// The step definitions the company's workflow versions name.
    workflow_step_snapshots => Child,
    /// The versions of the company's workflows.
    workflow_versions => Child,
    /// The company's projects.
    projects,
    /// Who the company's restricted workflows are shared with.
    workflow_shares => Child,
    /// The public links to the company's workflows.
    workflow_share_links => Child,
    /// The templates the company published.
    workflow_templates,
    /// The screenshots the company's templates include.
    template_screenshots,
    /// The template ratings the company's members gave.
    template_ratings,
    /// The company's retention policy (one row at most).
    retention_policies,
);

/// `steps LEFT JOIN screenshots`, the join matching the company too (see
/// [`Tx::steps_with_screenshots`]).
type StepsWithScreenshots =
    dsl::Filter<dsl::LeftJoinOn<steps::table, screenshots::table, StepScreenshot>, InCompany>;

/// The `ON` clause of [`StepsWithScreenshots`].
type StepScreenshot = dsl::And<
    dsl::Eq<dsl::Nullable<screenshots::id>, steps::screenshot_id>,
    dsl::Eq<screenshots::company_id, steps::company_id>,
>;

impl<E: Send> Tx<E> {
    /// The company's steps, each with its screenshot joined in when it has one: `steps
    /// LEFT JOIN screenshots ON screenshots.id = steps.screenshot_id AND
    /// screenshots.company_id = steps.company_id`, filtered by the tenant. Select the
    /// screenshot's columns as nullable (`Option::<Screenshot>::columns()`).
    pub fn steps_with_screenshots(&self) -> Scoped<StepsWithScreenshots> {
        use diesel::{BoolExpressionMethods as _, JoinOnDsl as _, NullableExpressionMethods as _};
        let on = screenshots::id
            .nullable()
            .eq(steps::screenshot_id)
            .and(screenshots::company_id.eq(steps::company_id));
        Scoped(FilterDsl::filter(
            diesel::QueryDsl::left_join(steps::table, screenshots::table.on(on)),
            InCompany::new(
                "steps",
                self.tenant.company.clone(),
                Some(Reach::Child),
                self.tenant.restricted_to(),
            ),
        ))
    }

    /// The whole company, whatever this unit of work's viewer may see: for the few
    /// decisions the company makes as a whole on a member's behalf (a screenshot's bytes
    /// are stored once per company, whichever workflow holds them). Explicit so that it
    /// can be found: grep for `company_wide`.
    pub fn company_wide(&mut self) -> CompanyWide<'_, E> {
        CompanyWide { tx: self }
    }
}

/// A unit of work's view of its whole company; see [`Tx::company_wide`].
pub struct CompanyWide<'t, E> {
    tx: &'t mut Tx<E>,
}

impl<E: Send> CompanyWide<'_, E> {
    pub fn execute<'a, Q>(&'a mut self, statement: Scoped<Q>) -> BoxFuture<'a, AppResult<usize>>
    where
        Q: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn> + Send + 'a,
    {
        self.tx.execute(statement)
    }

    pub fn optional<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Option<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        self.tx.optional(query)
    }

    pub fn load<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Vec<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        self.tx.load(query)
    }

    pub fn one<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<U>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        self.tx.one(query)
    }
}

/// A unit of work's view across companies; see [`Tx::unscoped`].
pub struct Unscoped<'t, E> {
    tx: &'t mut Tx<E>,
}

impl<E: Send> Unscoped<'_, E> {
    /// Every company's row.
    pub fn companies(&self) -> Scoped<companies::table> {
        Scoped(companies::table)
    }

    /// A row of any company: a new company and its first member at sign-up, a member
    /// joining by invite.
    pub fn insert<'a, T, R>(&'a mut self, table: T, row: R) -> BoxFuture<'a, AppResult<()>>
    where
        T: Table,
        R: Insertable<T>,
        InsertStatement<T, <R as Insertable<T>>::Values>:
            ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn> + Send + 'a,
    {
        let statement = diesel::insert_into(table).values(row);
        Box::pin(async move {
            on_conn!(&mut self.tx.conn, |c| statement.execute(c).await?);
            Ok(())
        })
    }

    pub fn load<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Vec<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        self.tx.load(query)
    }

    pub fn optional<'a, Q, U>(&'a mut self, query: Scoped<Q>) -> BoxFuture<'a, AppResult<Option<U>>>
    where
        Q: LoadQuery<'a, AsyncPgConnection, U> + LoadQuery<'a, SqliteConn, U> + Send + 'a,
        U: Send + 'a,
    {
        self.tx.optional(query)
    }

    pub fn execute<'a, Q>(&'a mut self, statement: Scoped<Q>) -> BoxFuture<'a, AppResult<usize>>
    where
        Q: ExecuteDsl<AsyncPgConnection> + ExecuteDsl<SqliteConn> + Send + 'a,
    {
        self.tx.execute(statement)
    }

    /// [`Tx::commit_fence`], for a stream read across companies.
    pub fn commit_fence<C>(
        &self,
        position: C,
    ) -> Maybe<dsl::Lt<C, diesel::expression::SqlLiteral<BigInt>>>
    where
        C: Expression<SqlType = BigInt> + diesel::ExpressionMethods,
    {
        self.tx.commit_fence(position)
    }
}
