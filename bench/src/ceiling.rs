//! The raw-SQL ceilings: the statements Stepwise issues for Q1 and for one `reportStep`,
//! sent straight to PostgreSQL with tokio-postgres over the same number of connections.
//!
//! Q1 is two statements (`domain::workflow::list`, then
//! `domain::step::heads_of_workflows_with_screenshots` batched by the steps loader in
//! `graphql/step.rs`); their texts were copied from PostgreSQL's statement log
//! (`ALTER DATABASE stepwise_bench SET log_statement = 'all'`) while Stepwise answered Q1.
//! The write is the transaction of `domain::run::report_step` for a SUCCESS outcome, then
//! the `pg_notify` that publishes its event to other instances (Stepwise sends it on another
//! pooled connection once the transaction committed), as the statement log shows them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{Client, NoTls, Statement};

use crate::load::Op;
use crate::servers::Result;

const WORKFLOW_COLUMNS: &str = r#""workflows"."id", "workflows"."company_id", "workflows"."created_by", "workflows"."name", "workflows"."description", "workflows"."status", "workflows"."success_rate", "workflows"."total_uses", "workflows"."consecutive_failures", "workflows"."last_success_at", "workflows"."last_failure_at", "workflows"."tags", "workflows"."created_at", "workflows"."updated_at""#;

const STEP_HEAD_COLUMNS: &str = r#""steps"."id", "steps"."company_id", "steps"."workflow_id", "steps"."step_number", "steps"."action_type", "steps"."screenshot_id", "steps"."field_label", "steps"."instruction", "steps"."ai_confidence", "steps"."ai_model", "steps"."label_edited", "steps"."instruction_edited", "steps"."edited_by", "steps"."edited_at", "steps"."healed_at", "steps"."healing_confidence", "steps"."healing_method", "steps"."created_at", "steps"."updated_at""#;

/// The steps' statement of Q1: every step column but the JSON documents, with the
/// screenshot joined in.
const STEPS_WITH_SCREENSHOTS: &str = r#"SELECT "steps"."id", "steps"."company_id", "steps"."workflow_id", "steps"."step_number", "steps"."action_type", "steps"."screenshot_id", "steps"."field_label", "steps"."instruction", "steps"."ai_confidence", "steps"."ai_model", "steps"."label_edited", "steps"."instruction_edited", "steps"."edited_by", "steps"."edited_at", "steps"."healed_at", "steps"."healing_confidence", "steps"."healing_method", "steps"."created_at", "steps"."updated_at", "screenshots"."id", "screenshots"."company_id", "screenshots"."workflow_id", "screenshots"."hash", "screenshots"."storage_key", "screenshots"."content_type", "screenshots"."size_bytes", "screenshots"."width", "screenshots"."height", "screenshots"."created_at" FROM ("steps" LEFT OUTER JOIN "screenshots" ON (("screenshots"."id" = "steps"."screenshot_id") AND ("screenshots"."company_id" = "steps"."company_id"))) WHERE (("steps"."company_id" = $1) AND ("steps"."workflow_id" = ANY($2))) ORDER BY "steps"."workflow_id" ASC, "steps"."step_number" ASC"#;

const RUN_COLUMNS: &str = r#""runs"."id", "runs"."company_id", "runs"."workflow_id", "runs"."started_by", "runs"."status", "runs"."steps_total", "runs"."steps_completed", "runs"."steps_failed", "runs"."steps_healed", "runs"."current_step_id", "runs"."error", "runs"."started_at", "runs"."finished_at", "runs"."created_at", "runs"."updated_at""#;

pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The two statements of Q1 on one connection.
pub struct Q1Sql {
    client: Client,
    company_id: String,
    workflows: Statement,
    steps: Statement,
}

impl Q1Sql {
    pub async fn new(url: &str, company_id: &str) -> Result<Self> {
        let client = connect(url).await?;
        let workflows = client
            .prepare(&format!(
                r#"SELECT {WORKFLOW_COLUMNS} FROM "workflows" WHERE ("workflows"."company_id" = $1) ORDER BY "workflows"."created_at" DESC, "workflows"."id" DESC LIMIT $2"#
            ))
            .await?;
        let steps = client.prepare(STEPS_WITH_SCREENSHOTS).await?;
        Ok(Self {
            client,
            company_id: company_id.to_owned(),
            workflows,
            steps,
        })
    }
}

impl Op for Q1Sql {
    async fn call(&mut self, _iteration: u64) -> std::result::Result<(), String> {
        let err = |e: tokio_postgres::Error| e.to_string();
        // The page asks for one more row than it shows, to know whether there is a next page.
        let rows = self
            .client
            .query(&self.workflows, &[&self.company_id, &21i64])
            .await
            .map_err(err)?;
        let ids: Vec<String> = rows.iter().take(20).map(|r| r.get(0)).collect();
        let steps = self
            .client
            .query(&self.steps, &[&self.company_id, &ids])
            .await
            .map_err(err)?;
        if ids.is_empty() || steps.is_empty() {
            return Err("Q1 ceiling read no rows".into());
        }
        Ok(())
    }
}

/// One `reportStep` transaction (SUCCESS outcome) on one connection, on its own run.
pub struct ReportSql {
    client: Client,
    company_id: String,
    run_id: String,
    step_ids: Vec<String>,
    select_run: Statement,
    select_step: Statement,
    insert_log: Statement,
    update_run: Statement,
    notify: Statement,
    counter: Arc<AtomicU64>,
}

impl ReportSql {
    pub async fn new(
        url: &str,
        company_id: &str,
        run_id: &str,
        step_ids: Vec<String>,
        counter: Arc<AtomicU64>,
    ) -> Result<Self> {
        let client = connect(url).await?;
        let select_run = client
            .prepare(&format!(
                r#"SELECT {RUN_COLUMNS} FROM "runs" WHERE (("runs"."company_id" = $1) AND ("runs"."id" = $2)) LIMIT $3"#
            ))
            .await?;
        let select_step = client
            .prepare(&format!(
                r#"SELECT {STEP_HEAD_COLUMNS} FROM "steps" WHERE (("steps"."company_id" = $1) AND ("steps"."id" = $2)) LIMIT $3"#
            ))
            .await?;
        let insert_log = client
            .prepare(
                r#"INSERT INTO "health_logs" ("id", "company_id", "workflow_id", "run_id", "step_id", "idempotency_key", "status", "error_type", "error_message", "healing_confidence", "deterministic_score", "ai_score", "page_url", "execution_time_ms", "created_at") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, (now() AT TIME ZONE 'utc')) ON CONFLICT DO NOTHING"#,
            )
            .await?;
        let update_run = client
            .prepare(&format!(
                r#"UPDATE "runs" SET "status" = $1, "steps_completed" = ("runs"."steps_completed" + $2), "steps_healed" = ("runs"."steps_healed" + $3), "steps_failed" = ("runs"."steps_failed" + $4), "current_step_id" = $5, "updated_at" = (now() AT TIME ZONE 'utc') WHERE ((("runs"."company_id" = $6) AND ("runs"."id" = $7)) AND ("runs"."status" = ANY($8))) RETURNING {RUN_COLUMNS}"#
            ))
            .await?;
        let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
        Ok(Self {
            client,
            company_id: company_id.to_owned(),
            run_id: run_id.to_owned(),
            step_ids,
            select_run,
            select_step,
            insert_log,
            update_run,
            notify,
            counter,
        })
    }
}

impl Op for ReportSql {
    async fn call(&mut self, iteration: u64) -> std::result::Result<(), String> {
        let err = |e: tokio_postgres::Error| e.to_string();
        let step_id = &self.step_ids[iteration as usize % self.step_ids.len()];
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let log_id = format!("ceiling-{:012x}-{n:016x}", std::process::id());
        let tx = self.client.transaction().await.map_err(err)?;
        let run = tx
            .query_one(&self.select_run, &[&self.company_id, &self.run_id, &1i64])
            .await
            .map_err(err)?;
        let workflow_id: String = run.get(2);
        tx.query_one(&self.select_step, &[&self.company_id, step_id, &1i64])
            .await
            .map_err(err)?;
        let none_text: Option<String> = None;
        let none_f64: Option<f64> = None;
        tx.execute(
            &self.insert_log,
            &[
                &log_id,
                &self.company_id,
                &workflow_id,
                &self.run_id,
                step_id,
                &none_text,
                &"success",
                &none_text,
                &none_text,
                &none_f64,
                &none_f64,
                &none_f64,
                &Some("https://app.example.com/bench"),
                &Some(420i32),
            ],
        )
        .await
        .map_err(err)?;
        let allowed = vec!["queued".to_owned(), "running".to_owned()];
        let run = tx
            .query_one(
                &self.update_run,
                &[
                    &"running",
                    &1i32,
                    &0i32,
                    &0i32,
                    &Some(step_id.clone()),
                    &self.company_id,
                    &self.run_id,
                    &allowed,
                ],
            )
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        // The event, shaped and sized like Stepwise's (the run as it now is), on a channel
        // nobody listens to.
        // Positions in RUN_COLUMNS.
        let text = |i: usize| serde_json::json!(run.get::<_, Option<String>>(i));
        let count = |i: usize| serde_json::json!(run.get::<_, i32>(i));
        let fields = serde_json::json!({
            "id": text(0), "company_id": text(1), "workflow_id": text(2), "started_by": text(3),
            "status": text(4), "steps_total": count(5), "steps_completed": count(6),
            "steps_failed": count(7), "steps_healed": count(8), "current_step_id": text(9),
        });
        let payload = serde_json::json!({ "o": "ceiling", "e": [{ "company_id": self.company_id,
            "kind": { "type": "run_changed", "run": fields } }] })
        .to_string();
        self.client
            .query_one(&self.notify, &[&"stepwise_bench_ceiling", &payload])
            .await
            .map_err(err)?;
        Ok(())
    }
}
