//! Two SQL expression nodes that let one query be written once for both backends.
//!
//! diesel builds conditions and orderings that vary at run time by boxing the query, and a
//! boxed query names its backend, so it would have to be written once per backend. These
//! nodes keep the query's type the same whatever the values are: [`Maybe`] is a condition
//! that may be absent (it renders `1 = 1` then), [`Either`] one of two expressions of the
//! same type (`ASC` or `DESC`, `>` or `<`). Their SQL differs with the value, so they never
//! claim a static query id: statements are cached by their SQL text instead.

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::{BoolOrNullableBool, SqlType, Text};

/// A condition that applies only when present.
#[derive(Debug, Clone, Copy)]
pub struct Maybe<E>(Option<E>);

impl<E> Maybe<E> {
    /// `condition` when `Some`, no condition at all when `None`.
    pub fn from_option(condition: Option<E>) -> Self {
        Self(condition)
    }

    /// `condition` only `when` it applies.
    pub fn when(when: bool, condition: impl FnOnce() -> E) -> Self {
        Self(when.then(condition))
    }
}

impl<E> Expression for Maybe<E>
where
    E: Expression,
    E::SqlType: BoolOrNullableBool,
{
    type SqlType = E::SqlType;
}

impl<E, QS> AppearsOnTable<QS> for Maybe<E>
where
    E: AppearsOnTable<QS>,
    Self: Expression,
{
}

impl<E, QS> SelectableExpression<QS> for Maybe<E>
where
    E: SelectableExpression<QS>,
    Self: AppearsOnTable<QS>,
{
}

impl<E, GB> ValidGrouping<GB> for Maybe<E>
where
    E: ValidGrouping<GB>,
{
    type IsAggregate = E::IsAggregate;
}

impl<E> QueryId for Maybe<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<E, DB> QueryFragment<DB> for Maybe<E>
where
    DB: Backend,
    E: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match &self.0 {
            Some(condition) => {
                out.push_sql("(");
                condition.walk_ast(out.reborrow())?;
                out.push_sql(")");
            }
            None => out.push_sql("1 = 1"),
        }
        Ok(())
    }
}

/// One of two expressions with the same SQL type, chosen at run time.
#[derive(Debug, Clone, Copy)]
pub enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<L, R> Either<L, R> {
    /// `left` when `choose_left`, else `right`.
    pub fn choose(choose_left: bool, left: impl FnOnce() -> L, right: impl FnOnce() -> R) -> Self {
        if choose_left {
            Self::Left(left())
        } else {
            Self::Right(right())
        }
    }
}

impl<L, R, ST> Expression for Either<L, R>
where
    L: Expression<SqlType = ST>,
    R: Expression<SqlType = ST>,
    ST: SqlType + diesel::expression::TypedExpressionType,
{
    type SqlType = ST;
}

impl<L, R, QS> AppearsOnTable<QS> for Either<L, R>
where
    L: AppearsOnTable<QS>,
    R: AppearsOnTable<QS>,
    Self: Expression,
{
}

impl<L, R, QS> SelectableExpression<QS> for Either<L, R>
where
    L: SelectableExpression<QS>,
    R: SelectableExpression<QS>,
    Self: AppearsOnTable<QS>,
{
}

impl<L, R, GB> ValidGrouping<GB> for Either<L, R>
where
    L: ValidGrouping<GB>,
    R: ValidGrouping<GB, IsAggregate = L::IsAggregate>,
{
    type IsAggregate = L::IsAggregate;
}

impl<L, R> QueryId for Either<L, R> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<L, R, DB> QueryFragment<DB> for Either<L, R>
where
    DB: Backend,
    L: QueryFragment<DB>,
    R: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match self {
            Self::Left(left) => left.walk_ast(out),
            Self::Right(right) => right.walk_ast(out),
        }
    }
}

/// The keyset condition of a page: rows after `(value, row_id)` in `(key, id)` order, or
/// before it when scanning `backward`. Renders
/// `(key > $v OR (key = $v AND id > $row_id))` (`<` backward).
#[derive(Debug, Clone)]
pub struct After<K, I, V> {
    pub key: K,
    pub id: I,
    pub value: V,
    pub row_id: String,
    pub backward: bool,
}

impl<K, I, V> Expression for After<K, I, V> {
    type SqlType = diesel::sql_types::Bool;
}

impl<K, I, V, QS> AppearsOnTable<QS> for After<K, I, V>
where
    K: AppearsOnTable<QS>,
    I: AppearsOnTable<QS>,
{
}

impl<K, I, V, QS> SelectableExpression<QS> for After<K, I, V>
where
    K: SelectableExpression<QS>,
    I: SelectableExpression<QS>,
{
}

impl<K, I, V, GB> ValidGrouping<GB> for After<K, I, V> {
    type IsAggregate = diesel::expression::is_aggregate::No;
}

impl<K, I, V> QueryId for After<K, I, V> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<K, I, V, DB> QueryFragment<DB> for After<K, I, V>
where
    DB: Backend + diesel::sql_types::HasSqlType<K::SqlType> + diesel::sql_types::HasSqlType<Text>,
    K: Expression + QueryFragment<DB>,
    I: QueryFragment<DB>,
    V: diesel::serialize::ToSql<K::SqlType, DB>,
    String: diesel::serialize::ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let op = if self.backward { " < " } else { " > " };
        out.push_sql("(");
        self.key.walk_ast(out.reborrow())?;
        out.push_sql(op);
        out.push_bind_param::<K::SqlType, V>(&self.value)?;
        out.push_sql(" OR (");
        self.key.walk_ast(out.reborrow())?;
        out.push_sql(" = ");
        out.push_bind_param::<K::SqlType, V>(&self.value)?;
        out.push_sql(" AND ");
        self.id.walk_ast(out.reborrow())?;
        out.push_sql(op);
        out.push_bind_param::<Text, String>(&self.row_id)?;
        out.push_sql("))");
        Ok(())
    }
}

/// The ordering of a keyset page: `key, id`, both ascending or both descending.
#[derive(Debug, Clone, Copy)]
pub struct KeysetOrder<K, I> {
    pub key: K,
    pub id: I,
    pub descending: bool,
}

impl<K, I> Expression for KeysetOrder<K, I> {
    type SqlType = diesel::expression::expression_types::NotSelectable;
}

impl<K, I, QS> AppearsOnTable<QS> for KeysetOrder<K, I>
where
    K: AppearsOnTable<QS>,
    I: AppearsOnTable<QS>,
{
}

impl<K, I, GB> ValidGrouping<GB> for KeysetOrder<K, I>
where
    K: ValidGrouping<GB>,
    I: ValidGrouping<GB>,
{
    type IsAggregate = diesel::expression::is_aggregate::No;
}

impl<K, I> QueryId for KeysetOrder<K, I> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<K, I, DB> QueryFragment<DB> for KeysetOrder<K, I>
where
    DB: Backend,
    K: QueryFragment<DB>,
    I: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let direction = if self.descending { " DESC" } else { " ASC" };
        self.key.walk_ast(out.reborrow())?;
        out.push_sql(direction);
        out.push_sql(", ");
        self.id.walk_ast(out.reborrow())?;
        out.push_sql(direction);
        Ok(())
    }
}

/// Conditions joined by `AND` (`all`) or by `OR`, as many as a request brings (a list
/// filter's values, bounded before they get here). With none, `AND` holds and `OR` does
/// not (`1 = 1` / `1 = 0`); a filter that means "no condition" then wraps it in [`Maybe`].
#[derive(Debug, Clone)]
pub struct Combined<E> {
    pub conditions: Vec<E>,
    pub all: bool,
}

impl<E> Expression for Combined<E>
where
    E: Expression,
    E::SqlType: BoolOrNullableBool,
{
    type SqlType = E::SqlType;
}

impl<E, QS> AppearsOnTable<QS> for Combined<E>
where
    E: AppearsOnTable<QS>,
    Self: Expression,
{
}

impl<E, QS> SelectableExpression<QS> for Combined<E>
where
    E: SelectableExpression<QS>,
    Self: AppearsOnTable<QS>,
{
}

impl<E, GB> ValidGrouping<GB> for Combined<E>
where
    E: ValidGrouping<GB>,
{
    type IsAggregate = E::IsAggregate;
}

impl<E> QueryId for Combined<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<E, DB> QueryFragment<DB> for Combined<E>
where
    DB: Backend,
    E: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.conditions.is_empty() {
            out.push_sql(if self.all { "1 = 1" } else { "1 = 0" });
            return Ok(());
        }
        let joiner = if self.all { " AND " } else { " OR " };
        out.push_sql("(");
        for (n, condition) in self.conditions.iter().enumerate() {
            if n > 0 {
                out.push_sql(joiner);
            }
            out.push_sql("(");
            condition.walk_ast(out.reborrow())?;
            out.push_sql(")");
        }
        out.push_sql(")");
        Ok(())
    }
}
