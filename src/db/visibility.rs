//! Restricted workflows, as the unit of work applies them.
//!
//! A workflow is COMPANY-visible (every member sees it) or RESTRICTED (admins, its creator
//! and the members it is shared with see it). A regular member's unit of work sees only
//! the workflows they may see, and only the rows hanging off those: steps, screenshots,
//! runs, health logs, notifications, versions, shares, links. That condition is part of
//! the tenant's scoped source ([`InCompany`]), so every query, count, loader and
//! subscription read built on `tx.workflows()`, `tx.runs()`, ... gets it without writing
//! it: a restricted workflow is then as absent to that member as another company's.
//!
//! The condition is written here once, as SQL both backends speak, for diesel queries
//! ([`InCompany`]) and for the few statements written as SQL text (one page per parent,
//! read-and-lock), through [`condition`].

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::{Bool, Text};

/// How the rows of a tenant table reach a workflow, which decides what a member who may
/// not see every workflow sees of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The `workflows` table itself.
    Workflow,
    /// Every row belongs to one workflow (`workflow_id`).
    Child,
    /// A row may name a workflow (`workflow_id`, nullable); rows naming none are the
    /// company's (notifications).
    OptionalChild,
    /// Screenshots: seen when their own workflow is, or when a step of a workflow the
    /// member sees shows them (a duplicate shows its source's screenshots).
    Screenshot,
}

/// A value bound into the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The unit of work's company.
    Company,
    /// The member whose view it is.
    Member,
}

/// `alias` is a workflow the member may see (`runnable`: and run: shared with RUN or
/// EDIT, when restricted).
fn visible_workflow(alias: &str, runnable: bool) -> (String, Vec<Bound>) {
    let permission = if runnable {
        " AND \"vis_share\".\"permission\" IN ('run', 'edit')"
    } else {
        ""
    };
    (
        format!(
            "({alias}.\"visibility\" = 'company' OR {alias}.\"created_by\" = {{}} OR EXISTS \
             (SELECT 1 FROM \"workflow_shares\" \"vis_share\" \
              WHERE \"vis_share\".\"company_id\" = {alias}.\"company_id\" \
              AND \"vis_share\".\"workflow_id\" = {alias}.\"id\" \
              AND \"vis_share\".\"user_id\" = {{}}{permission}))"
        ),
        vec![Bound::Member, Bound::Member],
    )
}

/// `(SELECT id FROM workflows WHERE <visible to the member>)`.
fn visible_ids() -> (String, Vec<Bound>) {
    visible_ids_with(false)
}

fn visible_ids_with(runnable: bool) -> (String, Vec<Bound>) {
    let (condition, binds) = visible_workflow("\"vis_wf\"", runnable);
    let mut all = vec![Bound::Company];
    all.extend(binds);
    (
        format!(
            "(SELECT \"vis_wf\".\"id\" FROM \"workflows\" \"vis_wf\" \
             WHERE \"vis_wf\".\"company_id\" = {{}} AND {condition})"
        ),
        all,
    )
}

/// The condition a row of `table` (reaching workflows as `reach`) must meet to be seen by
/// the member: SQL with `{}` standing for each bound value in turn, and what each is.
pub fn condition(table: &str, reach: Reach) -> (String, Vec<Bound>) {
    let t = format!("\"{table}\"");
    match reach {
        Reach::Workflow => visible_workflow(&t, false),
        Reach::Child => {
            let (ids, binds) = visible_ids();
            (format!("{t}.\"workflow_id\" IN {ids}"), binds)
        }
        Reach::OptionalChild => {
            let (ids, binds) = visible_ids();
            (
                format!("({t}.\"workflow_id\" IS NULL OR {t}.\"workflow_id\" IN {ids})"),
                binds,
            )
        }
        Reach::Screenshot => {
            let (ids, mut binds) = visible_ids();
            let (shown_by, shown_binds) = visible_ids();
            binds.push(Bound::Company);
            binds.extend(shown_binds);
            (
                format!(
                    "({t}.\"workflow_id\" IN {ids} OR {t}.\"id\" IN \
                     (SELECT \"vis_step\".\"screenshot_id\" FROM \"steps\" \"vis_step\" \
                      WHERE \"vis_step\".\"company_id\" = {{}} \
                      AND \"vis_step\".\"workflow_id\" IN {shown_by}))"
                ),
                binds,
            )
        }
    }
}

/// The condition a run (of table `runs`) must meet for the member to claim it: its
/// workflow is one they may run (COMPANY-visible, theirs, or shared with RUN or EDIT).
pub fn runnable_runs() -> (String, Vec<Bound>) {
    let (ids, binds) = visible_ids_with(true);
    (format!("\"runs\".\"workflow_id\" IN {ids}"), binds)
}

/// `column` (a workflow id, e.g. `"run"."workflow_id"`) names a workflow the member may
/// run: COMPANY-visible, theirs, or shared with RUN or EDIT.
pub fn runnable_workflow(column: &str) -> (String, Vec<Bound>) {
    let (ids, binds) = visible_ids_with(true);
    (format!("{column} IN {ids}"), binds)
}

/// The scoped source's condition: `table.company_id = <company>`, and for a member who
/// may not see every workflow, the [`condition`] of the table's reach.
#[derive(Debug, Clone)]
pub struct InCompany {
    table: &'static str,
    company: String,
    restriction: Option<(Reach, String)>,
}

impl InCompany {
    pub(super) fn new(
        table: &'static str,
        company: String,
        reach: Option<Reach>,
        member: Option<&str>,
    ) -> Self {
        Self {
            table,
            company,
            restriction: reach.zip(member.map(str::to_owned)),
        }
    }
}

impl Expression for InCompany {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for InCompany {}

impl<QS> SelectableExpression<QS> for InCompany {}

impl<GB> ValidGrouping<GB> for InCompany {
    type IsAggregate = diesel::expression::is_aggregate::No;
}

impl QueryId for InCompany {
    type QueryId = ();
    // The SQL differs with the viewer: statements are cached by their text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for InCompany
where
    DB: Backend + diesel::sql_types::HasSqlType<Text>,
    String: diesel::serialize::ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(&format!("\"{}\".\"company_id\" = ", self.table));
        out.push_bind_param::<Text, String>(&self.company)?;
        let Some((reach, member)) = &self.restriction else {
            return Ok(());
        };
        let (sql, binds) = condition(self.table, *reach);
        out.push_sql(" AND ");
        let mut binds = binds.into_iter();
        let mut pieces = sql.split("{}").peekable();
        while let Some(piece) = pieces.next() {
            out.push_sql(piece);
            if pieces.peek().is_some() {
                match binds.next() {
                    Some(Bound::Company) => out.push_bind_param::<Text, String>(&self.company)?,
                    Some(Bound::Member) | None => out.push_bind_param::<Text, String>(member)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_has_a_bound_value() {
        for reach in [
            Reach::Workflow,
            Reach::Child,
            Reach::OptionalChild,
            Reach::Screenshot,
        ] {
            let (sql, binds) = condition("t", reach);
            assert_eq!(sql.matches("{}").count(), binds.len(), "{reach:?}: {sql}");
            assert_eq!(
                sql.matches('(').count(),
                sql.matches(')').count(),
                "{reach:?}: {sql}"
            );
        }
        let (sql, _) = condition("notifications", Reach::OptionalChild);
        assert!(sql.starts_with("(\"notifications\".\"workflow_id\" IS NULL OR"));
    }
}
