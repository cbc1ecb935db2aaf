//! One page per parent in one statement: the connection under a list (each workflow's
//! runs, each run's logs) is read for every parent of the list at once, instead of one
//! round trip per parent.
//!
//! The statement is a `UNION ALL` of one `ORDER BY key, id LIMIT n` subquery per parent, so
//! each walks its index and stops after its page, however many rows the parent has (a
//! `ROW_NUMBER() OVER (PARTITION BY ...)` would number every row of every parent first).
//! diesel's DSL cannot put a limited subquery in `FROM`, so it is written here, once, in
//! SQL both backends speak; only the bind placeholders differ. Rows come back grouped by
//! parent in no promised order: callers sort each page.

use chrono::NaiveDateTime;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamp};

use super::Backend;

/// A value bound into the statement.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Time(NaiveDateTime),
    /// A whole number (a limit, an offset), bound as `BigInt`.
    Int(i64),
    /// Text or NULL.
    OptText(Option<String>),
    /// A double or NULL.
    OptDouble(Option<f64>),
    /// A 32-bit whole number or NULL, bound as `Integer`.
    OptInt(Option<i32>),
}

/// A condition on the child table, with `{}` standing for each bound value in turn.
#[derive(Debug, Clone)]
pub struct Condition {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl Condition {
    /// `column = value`.
    pub fn equals(column: &str, value: &str) -> Self {
        Self {
            sql: format!("{column} = {{}}"),
            binds: vec![Bind::Text(value.to_owned())],
        }
    }

    /// `column IN (values)`; `None` for an empty list (no condition).
    pub fn any_of(column: &str, values: &[&str]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let marks = vec!["{}"; values.len()].join(", ");
        Some(Self {
            sql: format!("{column} IN ({marks})"),
            binds: values.iter().map(|v| Bind::Text((*v).to_owned())).collect(),
        })
    }

    /// `column <op> time`.
    pub fn time(column: &str, op: &str, at: NaiveDateTime) -> Self {
        Self {
            sql: format!("{column} {op} {{}}"),
            binds: vec![Bind::Time(at)],
        }
    }

    /// The keyset condition of a page: rows after (or before) `(key, id)` in scan order.
    pub fn after(key: &str, id: &str, at: NaiveDateTime, row_id: &str, backward: bool) -> Self {
        let op = if backward { "<" } else { ">" };
        Self {
            sql: format!("({key} {op} {{}} OR ({key} = {{}} AND {id} {op} {{}}))"),
            binds: vec![
                Bind::Time(at),
                Bind::Time(at),
                Bind::Text(row_id.to_owned()),
            ],
        }
    }
}

/// The statement for one page per parent.
#[derive(Debug, Clone)]
pub struct PartitionedPage {
    /// The child table, e.g. `runs`.
    pub table: &'static str,
    /// The column naming the parent, e.g. `workflow_id`.
    pub parent: &'static str,
    /// The sort key (the id breaks ties).
    pub key: &'static str,
    /// Scan direction: descending keys first when true.
    pub descending: bool,
    /// Rows to keep per parent (the page size plus one, to learn about a next page).
    pub limit: i64,
    pub parents: Vec<String>,
    pub conditions: Vec<Condition>,
}

impl PartitionedPage {
    /// The SQL text and its binds, in order, for `backend`, within `company_id`'s rows.
    /// The limit is written inline into each subquery, so every bind is in the returned
    /// list. Run through [`Tx::partitioned_pages`](super::Tx::partitioned_pages), which
    /// supplies the company.
    pub(super) fn sql(&self, company_id: &str, backend: Backend) -> (String, Vec<Bind>) {
        let direction = if self.descending { "DESC" } else { "ASC" };
        let mut template = String::new();
        let mut binds = Vec::new();
        for (n, parent) in self.parents.iter().enumerate() {
            if n > 0 {
                template.push_str(" UNION ALL ");
            }
            let mut conditions = format!("company_id = {{}} AND {} = {{}}", self.parent);
            binds.push(Bind::Text(company_id.to_owned()));
            binds.push(Bind::Text(parent.clone()));
            for condition in &self.conditions {
                conditions.push_str(" AND ");
                conditions.push_str(&condition.sql);
                binds.extend(condition.binds.iter().cloned());
            }
            template.push_str(&format!(
                "SELECT * FROM (SELECT * FROM {table} WHERE {conditions} \
                 ORDER BY {key} {direction}, id {direction} LIMIT {limit}) AS parent_{n}",
                table = self.table,
                key = self.key,
                limit = self.limit.max(0),
            ));
        }
        (with_placeholders(&template, backend), binds)
    }
}

/// `template` with each `{}` replaced by the backend's next bind placeholder (`$1, $2, ...`
/// on PostgreSQL, `?` on SQLite).
pub fn with_placeholders(template: &str, backend: Backend) -> String {
    let mut sql = String::with_capacity(template.len() + 16);
    let mut pieces = template.split("{}").peekable();
    let mut n = 0;
    while let Some(piece) = pieces.next() {
        sql.push_str(piece);
        if pieces.peek().is_some() {
            n += 1;
            match backend {
                Backend::Postgres => sql.push_str(&format!("${n}")),
                Backend::Sqlite => sql.push('?'),
            }
        }
    }
    sql
}

/// Binds `binds` to a boxed raw query.
pub fn bind_all<'f, DB>(
    mut query: BoxedSqlQuery<'f, DB, diesel::query_builder::SqlQuery>,
    binds: Vec<Bind>,
) -> BoxedSqlQuery<'f, DB, diesel::query_builder::SqlQuery>
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<Text>,
    DB: diesel::sql_types::HasSqlType<Timestamp> + diesel::sql_types::HasSqlType<BigInt>,
    DB: diesel::sql_types::HasSqlType<Double> + diesel::sql_types::HasSqlType<Integer>,
    String: diesel::serialize::ToSql<Text, DB>,
    NaiveDateTime: diesel::serialize::ToSql<Timestamp, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    f64: diesel::serialize::ToSql<Double, DB>,
    i32: diesel::serialize::ToSql<Integer, DB>,
{
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind::<Text, _>(text),
            Bind::Time(at) => query.bind::<Timestamp, _>(at),
            Bind::Int(value) => query.bind::<BigInt, _>(value),
            Bind::OptText(text) => query.bind::<Nullable<Text>, _>(text),
            Bind::OptDouble(value) => query.bind::<Nullable<Double>, _>(value),
            Bind::OptInt(value) => query.bind::<Nullable<Integer>, _>(value),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        let page = PartitionedPage {
            table: "runs",
            parent: "workflow_id",
            key: "created_at",
            descending: true,
            limit: 21,
            parents: vec!["w1".into(), "w2".into()],
            conditions: Condition::any_of("status", &["running"])
                .into_iter()
                .collect(),
        };
        let (pg, binds) = page.sql("c", Backend::Postgres);
        assert_eq!(binds.len(), 6);
        assert!(pg.contains("company_id = $1 AND workflow_id = $2 AND status IN ($3)"));
        assert!(pg.contains("company_id = $4 AND workflow_id = $5 AND status IN ($6)"));
        assert!(pg.contains("LIMIT 21) AS parent_1"));
        let (sqlite, _) = page.sql("c", Backend::Sqlite);
        assert!(sqlite.contains("workflow_id = ? AND") && !sqlite.contains('$'));
    }
}
