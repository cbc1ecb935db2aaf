//! The raw-SQL ceilings: the statements Stepwise issues for Q1 and for one `reportStep`,
//! sent straight to PostgreSQL with tokio-postgres over the same number of connections.
//!
//! Q1 is two statements (`domain::workflow::list`, then
//! `domain::step::heads_of_workflows_with_screenshots` batched by the steps loader in
//! `graphql/step.rs`); their texts were copied from PostgreSQL's statement log
//! (`ALTER DATABASE stepwise_bench SET log_statement = 'all'`) while Stepwise answered Q1.
//! The write is the one statement `reportStep` sends on PostgreSQL for a SUCCESS outcome
//! of an admin (`db::report`, a data-modifying CTE prepared once per connection; its text
//! printed from `StepReport::statement`), then the `pg_notify` that publishes its event to
//! other instances (Stepwise sends it on another pooled connection once the statement
//! committed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{Client, NoTls, Statement};

use crate::load::Op;
use crate::servers::Result;

const WORKFLOW_COLUMNS: &str = r#""workflows"."id", "workflows"."company_id", "workflows"."created_by", "workflows"."name", "workflows"."description", "workflows"."status", "workflows"."success_rate", "workflows"."total_uses", "workflows"."consecutive_failures", "workflows"."last_success_at", "workflows"."last_failure_at", "workflows"."tags", "workflows"."created_at", "workflows"."updated_at""#;

/// The steps' statement of Q1: every step column but the JSON documents, with the
/// screenshot joined in.
const STEPS_WITH_SCREENSHOTS: &str = r#"SELECT "steps"."id", "steps"."company_id", "steps"."workflow_id", "steps"."step_number", "steps"."action_type", "steps"."screenshot_id", "steps"."field_label", "steps"."instruction", "steps"."ai_confidence", "steps"."ai_model", "steps"."label_edited", "steps"."instruction_edited", "steps"."edited_by", "steps"."edited_at", "steps"."healed_at", "steps"."healing_confidence", "steps"."healing_method", "steps"."created_at", "steps"."updated_at", "screenshots"."id", "screenshots"."company_id", "screenshots"."workflow_id", "screenshots"."hash", "screenshots"."storage_key", "screenshots"."content_type", "screenshots"."size_bytes", "screenshots"."width", "screenshots"."height", "screenshots"."created_at" FROM ("steps" LEFT OUTER JOIN "screenshots" ON (("screenshots"."id" = "steps"."screenshot_id") AND ("screenshots"."company_id" = "steps"."company_id"))) WHERE (("steps"."company_id" = $1) AND ("steps"."workflow_id" = ANY($2))) ORDER BY "steps"."workflow_id" ASC, "steps"."step_number" ASC"#;

/// `reportStep` on PostgreSQL for an admin (no visibility clause): `db::report`'s text.
const REPORT: &str = r#"WITH run AS MATERIALIZED (SELECT * FROM runs WHERE runs.company_id = $1 AND runs.id = $2 FOR NO KEY UPDATE), original AS (SELECT health_logs.* FROM health_logs, run WHERE health_logs.company_id = run.company_id AND health_logs.run_id = run.id AND health_logs.idempotency_key = $3), step AS (SELECT steps.workflow_id FROM steps WHERE steps.company_id = $4 AND steps.id = $5), verdict AS MATERIALIZED (SELECT CASE WHEN NOT TRUE THEN 'forbidden' WHEN $6::text IS NOT NULL AND run.lease_id IS DISTINCT FROM $7 THEN 'lease_lost' WHEN EXISTS (SELECT 1 FROM original) THEN 'duplicate' WHEN run.status NOT IN ('queued', 'running') THEN 'run_over' WHEN NOT EXISTS (SELECT 1 FROM step) THEN 'no_step' WHEN (SELECT step.workflow_id FROM step) <> run.workflow_id THEN 'other_workflow' ELSE 'counted' END AS verdict, GREATEST($8, run.updated_at) AS at FROM run), logged AS (INSERT INTO health_logs (id, company_id, workflow_id, run_id, step_id, idempotency_key, status, error_type, error_message, healing_confidence, deterministic_score, ai_score, page_url, execution_time_ms, created_at) SELECT $9, run.company_id, run.workflow_id, run.id, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, verdict.at FROM run, verdict WHERE verdict.verdict = 'counted' ON CONFLICT DO NOTHING RETURNING *), healed AS (UPDATE steps SET healed_at = logged.created_at, healing_confidence = $20, healing_method = $21, healed_selectors = COALESCE($22, steps.healed_selectors) FROM logged WHERE steps.company_id = logged.company_id AND steps.id = logged.step_id AND $23::text IS NOT NULL RETURNING steps.id), counted AS (UPDATE runs SET status = 'running', steps_completed = runs.steps_completed + $24, steps_healed = runs.steps_healed + $25, steps_failed = runs.steps_failed + $26, current_step_id = logged.step_id, updated_at = logged.created_at, version = runs.version + 1, started_at = CASE WHEN runs.status = 'queued' THEN logged.created_at ELSE runs.started_at END FROM logged WHERE runs.company_id = logged.company_id AND runs.id = logged.run_id RETURNING runs.*) SELECT verdict.verdict, now_run.*, log.id AS log_id, log.company_id AS log_company_id, log.workflow_id AS log_workflow_id, log.run_id AS log_run_id, log.step_id AS log_step_id, log.idempotency_key AS log_idempotency_key, log.status AS log_status, log.error_type AS log_error_type, log.error_message AS log_error_message, log.healing_confidence AS log_healing_confidence, log.deterministic_score AS log_deterministic_score, log.ai_score AS log_ai_score, log.page_url AS log_page_url, log.execution_time_ms AS log_execution_time_ms, log.created_at AS log_created_at FROM verdict CROSS JOIN (SELECT * FROM counted UNION ALL SELECT * FROM run WHERE NOT EXISTS (SELECT 1 FROM counted)) now_run LEFT JOIN (SELECT * FROM logged UNION ALL SELECT * FROM original) log ON TRUE"#;

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

/// One `reportStep` statement (SUCCESS outcome) on one connection, on its own run.
pub struct ReportSql {
    client: Client,
    company_id: String,
    run_id: String,
    step_ids: Vec<String>,
    report: Statement,
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
        let report = client.prepare(REPORT).await?;
        let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
        Ok(Self {
            client,
            company_id: company_id.to_owned(),
            run_id: run_id.to_owned(),
            step_ids,
            report,
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
        let none_text: Option<String> = None;
        let none_f64: Option<f64> = None;
        let row = self
            .client
            .query_one(
                &self.report,
                &[
                    &self.company_id,
                    &self.run_id,
                    &none_text,
                    &self.company_id,
                    step_id,
                    &none_text,
                    &none_text,
                    &std::time::SystemTime::now(),
                    &log_id,
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
                    &none_f64,
                    &none_text,
                    &none_text,
                    &none_text,
                    &Some(1i32),
                    &Some(0i32),
                    &Some(0i32),
                ],
            )
            .await
            .map_err(err)?;
        let verdict: String = row.get("verdict");
        if verdict != "counted" {
            return Err(format!("the report ceiling's statement answered {verdict}"));
        }
        let run = row;
        // The event, shaped and sized like Stepwise's (the run as it now is), on a channel
        // nobody listens to.
        let text = |c: &str| serde_json::json!(run.get::<_, Option<String>>(c));
        let count = |c: &str| serde_json::json!(run.get::<_, i32>(c));
        let fields = serde_json::json!({
            "id": text("id"), "company_id": text("company_id"), "workflow_id": text("workflow_id"), "started_by": text("started_by"),
            "status": text("status"), "steps_total": count("steps_total"), "steps_completed": count("steps_completed"),
            "steps_failed": count("steps_failed"), "steps_healed": count("steps_healed"), "current_step_id": text("current_step_id"),
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
