//! Statements written in SQL, for what diesel's DSL cannot say: window functions and
//! per-workflow boundaries (statistics, retention), time buckets. Each is written here
//! once, in the SQL both backends speak; only the placeholders and the few expressions in
//! `Dialect` differ.
//!
//! A [`TenantStatement`] is handed the scope of the unit of work that runs it
//! ([`Tx::load_statement`](super::Tx::load_statement)): it filters every tenant table it
//! reads by that company, and the rows of tables that reach workflows by what a limited
//! member may see ([`TenantScope::visible`]). The trait is sealed: only `db` writes raw SQL, so the rule that
//! a query reaches a tenant's rows through the tenant holds here by construction too.

use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamp};

use super::Backend;
use super::partition::Bind;

/// SQL text and its bind values, with each placeholder written for the backend as the
/// statement is built (`$1, $2, ...` on PostgreSQL, `?` on SQLite).
#[derive(Debug)]
pub struct Statement {
    backend: Backend,
    text: String,
    binds: Vec<Bind>,
    /// Where each placeholder is in `text` (start and end), for [`Statement::into_prepared`].
    marks: Vec<(usize, usize)>,
}

impl Statement {
    pub(super) fn new(backend: Backend) -> Self {
        Self {
            backend,
            text: String::with_capacity(512),
            binds: Vec::new(),
            marks: Vec::new(),
        }
    }

    pub(super) fn backend(&self) -> Backend {
        self.backend
    }

    /// Appends SQL text (never a value: values are bound).
    pub(super) fn sql(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(super) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        let start = self.text.len();
        match self.backend {
            Backend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.len().to_string());
            }
            Backend::Sqlite => self.text.push('?'),
        }
        self.marks.push((start, self.text.len()));
        self
    }

    /// Appends `text` bound as text.
    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        self.bind(Bind::Text(value.to_owned()))
    }

    /// Appends one placeholder per value, separated by commas (the inside of `IN (...)`).
    pub(super) fn texts(&mut self, values: &[&str]) -> &mut Self {
        for (n, value) in values.iter().enumerate() {
            if n > 0 {
                self.sql(", ");
            }
            self.text(value);
        }
        self
    }

    pub(super) fn into_parts(self) -> (String, Vec<Bind>) {
        (self.text, self.binds)
    }

    /// The statement as a query the connection prepares once and then reuses (see
    /// [`Prepared`]).
    pub(super) fn into_prepared(self) -> Prepared {
        let mut pieces = Vec::with_capacity(self.marks.len() + 1);
        let mut from = 0;
        for (start, end) in &self.marks {
            pieces.push(self.text[from..*start].to_owned());
            from = *end;
        }
        pieces.push(self.text[from..].to_owned());
        Prepared {
            pieces,
            binds: self.binds,
        }
    }
}

/// SQL text with its bound values, as a diesel query the connection caches as a
/// prepared statement by its text. `diesel::sql_query` never is (diesel cannot know what
/// raw SQL does), so each run of one costs a round trip to prepare it before the one that
/// executes it: for a statement run on every request (a step report) that doubles the
/// round trips. The text is the same for every run of such a statement; only the binds
/// differ.
#[derive(Debug)]
pub struct Prepared {
    /// The SQL between the placeholders: one more piece than binds.
    pieces: Vec<String>,
    binds: Vec<Bind>,
}

impl diesel::query_builder::QueryId for Prepared {
    type QueryId = ();
    // Cached by its text, like any query whose type does not fix its SQL.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Prepared {
    type SqlType = diesel::sql_types::Untyped;
}

impl<DB> diesel::query_builder::QueryFragment<DB> for Prepared
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<Timestamp>
        + diesel::sql_types::HasSqlType<BigInt>
        + diesel::sql_types::HasSqlType<Double>
        + diesel::sql_types::HasSqlType<Integer>,
    String: diesel::serialize::ToSql<Text, DB>,
    chrono::NaiveDateTime: diesel::serialize::ToSql<Timestamp, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    f64: diesel::serialize::ToSql<Double, DB>,
    i32: diesel::serialize::ToSql<Integer, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        for (n, piece) in self.pieces.iter().enumerate() {
            out.push_sql(piece);
            let Some(bind) = self.binds.get(n) else {
                continue;
            };
            match bind {
                Bind::Text(text) => out.push_bind_param::<Text, String>(text)?,
                Bind::Time(at) => out.push_bind_param::<Timestamp, _>(at)?,
                Bind::Int(value) => out.push_bind_param::<BigInt, i64>(value)?,
                Bind::OptText(text) => out.push_bind_param::<Nullable<Text>, _>(text)?,
                Bind::OptDouble(value) => out.push_bind_param::<Nullable<Double>, _>(value)?,
                Bind::OptInt(value) => out.push_bind_param::<Nullable<Integer>, _>(value)?,
            }
        }
        Ok(())
    }
}

/// A statement over tenant tables that filters every one of them by `company_id`, and
/// the rows of workflow-reaching tables by what the unit of work's viewer may see
/// ([`TenantScope::visible`]).
pub trait TenantStatement: sealed::Sealed + Send + Sync {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement;
}

/// Whose rows a [`TenantStatement`] reads: the unit of work's company, and the member
/// whose view limits it when it is limited (see `db::visibility`).
#[derive(Debug, Clone, Copy)]
pub struct TenantScope<'a> {
    pub company: &'a str,
    pub(super) member: Option<&'a str>,
}

impl TenantScope<'_> {
    /// Appends ` AND <the row named `name` (a table or its alias), whose table reaches
    /// workflows as `reach`, is one the member may see>` when the viewer's view is limited;
    /// nothing otherwise.
    pub(super) fn visible(
        &self,
        s: &mut Statement,
        name: &str,
        reach: super::visibility::Reach,
    ) -> &Self {
        if self.member.is_none() {
            return self;
        }
        s.sql(" AND ");
        self.condition(s, super::visibility::condition(name, reach))
    }

    /// Appends a visibility condition (SQL with `{}` standing for each bound value in
    /// turn, as `db::visibility` writes them) with its values bound.
    pub(super) fn condition(
        &self,
        s: &mut Statement,
        (sql, bounds): (String, Vec<super::visibility::Bound>),
    ) -> &Self {
        let member = self.member.unwrap_or_default();
        let mut bounds = bounds.into_iter();
        let mut pieces = sql.split("{}").peekable();
        while let Some(piece) = pieces.next() {
            s.sql(piece);
            if pieces.peek().is_some() {
                match bounds.next() {
                    Some(super::visibility::Bound::Company) => s.text(self.company),
                    Some(super::visibility::Bound::Member) | None => s.text(member),
                };
            }
        }
        self
    }
}

pub(super) mod sealed {
    /// Only `db` implements [`TenantStatement`](super::TenantStatement).
    pub trait Sealed {}
}

/// The expressions that differ between the backends.
pub(super) struct Dialect(pub Backend);

impl Dialect {
    /// The start of the UTC hour or day `column` falls in, as a timestamp. SQLite's text
    /// reads back as one.
    pub fn truncate(&self, column: &str, day: bool) -> String {
        match (self.0, day) {
            (Backend::Postgres, false) => format!("date_trunc('hour', {column})"),
            (Backend::Postgres, true) => format!("date_trunc('day', {column})"),
            (Backend::Sqlite, false) => format!("strftime('%Y-%m-%d %H:00:00', {column})"),
            (Backend::Sqlite, true) => format!("strftime('%Y-%m-%d 00:00:00', {column})"),
        }
    }

    /// Whole milliseconds from `start` to `end`. (SQLite keeps times to the millisecond
    /// in its date functions; PostgreSQL's microseconds are rounded to the same unit.
    /// `date_part` answers a double, several times cheaper than `EXTRACT`'s numeric.)
    pub fn milliseconds_between(&self, start: &str, end: &str) -> String {
        match self.0 {
            Backend::Postgres => {
                format!("CAST(ROUND(date_part('epoch', {end} - {start}) * 1000) AS BIGINT)")
            }
            Backend::Sqlite => format!(
                "CAST(ROUND((julianday({end}) - julianday({start})) * 86400000.0) AS BIGINT)"
            ),
        }
    }

    /// `column` compared by code point, whatever the database's locale (SQLite's default
    /// BINARY collation already is).
    pub fn by_code_point(&self, column: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("{column} COLLATE \"C\""),
            Backend::Sqlite => column.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        let mut pg = Statement::new(Backend::Postgres);
        pg.sql("a = ")
            .text("x")
            .sql(" AND b IN (")
            .texts(&["y", "z"])
            .sql(")");
        let (text, binds) = pg.into_parts();
        assert_eq!(text, "a = $1 AND b IN ($2, $3)");
        assert_eq!(binds.len(), 3);
        let mut sqlite = Statement::new(Backend::Sqlite);
        sqlite.sql("a = ").bind(Bind::Int(3));
        assert_eq!(sqlite.into_parts().0, "a = ?");
    }

    #[test]
    fn a_prepared_statement_is_cut_at_its_placeholders() {
        use diesel::query_builder::QueryFragment as _;
        let mut pg = Statement::new(Backend::Postgres);
        pg.sql("SELECT ")
            .text("x")
            .sql(" WHERE b IN (")
            .texts(&["y", "z"])
            .sql(")");
        let prepared = pg.into_prepared();
        assert_eq!(prepared.pieces, ["SELECT ", " WHERE b IN (", ", ", ")"]);
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&prepared).to_string();
        assert!(sql.starts_with("SELECT $1 WHERE b IN ($2, $3)"), "{sql}");
        assert!(
            prepared
                .is_safe_to_cache_prepared(&diesel::pg::Pg)
                .unwrap_or(false)
        );
    }
}
