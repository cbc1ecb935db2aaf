//! Story helpers for the workflow-era tests: teams, workflows and steps through the API,
//! and rows inserted straight into the database with the column lists of
//! `migrations/*/up.sql` where a test needs a state no client can reach quickly
//! (screenshots without image bytes, runs and health logs at chosen times, notifications
//! without their cause). Runs and their reports also have mutations: see `common::runs`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Backend, PASSWORD, ServerOptions, TestServer, error_code, str_field};

// ---------------------------------------------------------------------------
// Selection sets
// ---------------------------------------------------------------------------

pub const USER_FIELDS: &str = "id email name role createdAt";

pub const SCREENSHOT_FIELDS: &str =
    "id workflow { id } hash contentType sizeBytes width height createdAt";

pub const STEP_FIELDS: &str = "id workflow { id } stepNumber actionType selectors elementMeta \
     pageContext actionData domContext screenshot { id hash } fieldLabel instruction aiConfidence \
     aiModel labelEdited instructionEdited editedBy { id name } editedAt healedSelectors healedAt \
     healingConfidence healingMethod createdAt updatedAt";

pub const RUN_FIELDS: &str = "id workflow { id } startedBy { id } status stepsTotal \
     stepsCompleted stepsFailed stepsHealed currentStep { id } error startedAt finishedAt \
     createdAt updatedAt";

pub const HEALTH_LOG_FIELDS: &str = "id workflow { id } run { id } step { id } status errorType \
     errorMessage healingConfidence deterministicScore aiScore pageUrl executionTimeMs createdAt";

pub const NOTIFICATION_FIELDS: &str =
    "id workflow { id } kind severity title message read readAt readBy { id } createdAt";

/// Every scalar of a workflow plus its creator and its steps.
pub fn workflow_fields() -> String {
    format!(
        "id name description status tags successRate totalUses consecutiveFailures \
         lastSuccessAt lastFailureAt createdAt updatedAt createdBy {{ id name }} stepCount \
         steps {{ {STEP_FIELDS} }}"
    )
}

// ---------------------------------------------------------------------------
// Teams
// ---------------------------------------------------------------------------

/// A company with an admin and a regular member, both signed in.
#[derive(Debug, Clone)]
pub struct Team {
    pub company_id: String,
    pub company_name: String,
    pub admin_id: String,
    pub admin_email: String,
    pub admin_token: String,
    pub member_id: String,
    pub member_email: String,
    pub member_token: String,
}

/// Only what a team needs from a sign-up or join: ids and the token. (The full
/// `AuthPayload` is the subject of tests/auth.rs.)
const SESSION_FIELDS: &str = "token user { id } company { id }";

async fn session(server: &TestServer, mutation: &str, vars: Value) -> (String, String, String) {
    let resp = server
        .gql(
            &format!(
                "mutation({}) {{ {mutation} {{ {SESSION_FIELDS} }} }}",
                session_args(mutation)
            ),
            vars,
            None,
        )
        .await;
    let payload = &resp["data"][mutation.split('(').next().unwrap_or_default()];
    assert!(
        resp["errors"].is_null() && payload.is_object(),
        "{mutation} failed: {resp:#}"
    );
    (
        str_field(payload, "token"),
        str_field(&payload["user"], "id"),
        str_field(&payload["company"], "id"),
    )
}

fn session_args(mutation: &str) -> &'static str {
    if mutation.starts_with("signup") {
        "$companyName: String!, $name: String!, $email: String!, $password: String!"
    } else {
        "$inviteToken: String!, $name: String!, $email: String!, $password: String!"
    }
}

/// Signs up `company` (admin `admin@<slug>.test`) and joins `member@<slug>.test`.
pub async fn team(server: &TestServer, company: &str) -> Team {
    let slug: String = company
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let admin_email = format!("admin@{slug}.test");
    let member_email = format!("member@{slug}.test");
    let (admin_token, admin_id, company_id) = session(
        server,
        "signup(companyName: $companyName, name: $name, email: $email, password: $password)",
        json!({ "companyName": company, "name": format!("{company} Admin"), "email": admin_email, "password": PASSWORD }),
    )
    .await;
    let invite = server.invite_token(&admin_token).await;
    let (member_token, member_id, member_company) = session(
        server,
        "joinCompany(inviteToken: $inviteToken, name: $name, email: $email, password: $password)",
        json!({ "inviteToken": invite, "name": format!("{company} Member"), "email": member_email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(member_company, company_id, "joined the wrong company");
    Team {
        company_id,
        company_name: company.to_owned(),
        admin_id,
        admin_email,
        admin_token,
        member_id,
        member_email,
        member_token,
    }
}

// ---------------------------------------------------------------------------
// Workflows and steps through the API
// ---------------------------------------------------------------------------

/// A minimal `StepInput` with a distinguishable selector.
pub fn step_input(action: &str, label: &str) -> Value {
    json!({
        "actionType": action,
        "selectors": { "css": format!("#{label}") },
        "fieldLabel": label,
    })
}

/// `count` simple steps labelled `<prefix>1..=count`.
pub fn step_inputs(prefix: &str, count: usize) -> Vec<Value> {
    (1..=count)
        .map(|i| step_input("click", &format!("{prefix}{i}")))
        .collect()
}

/// Runs a mutation or query and panics (with the response) if it has errors.
pub async fn ok(server: &TestServer, token: &str, query: &str, variables: Value) -> Value {
    server.gql_ok(query, variables, Some(token)).await
}

pub async fn try_create_workflow(server: &TestServer, token: &str, input: Value) -> Value {
    let query = format!(
        "mutation($input: CreateWorkflowInput!) {{ createWorkflow(input: $input) {{ {} }} }}",
        workflow_fields()
    );
    server
        .gql(&query, json!({ "input": input }), Some(token))
        .await
}

/// Creates a workflow and returns it (all of [`workflow_fields`]).
pub async fn create_workflow(server: &TestServer, token: &str, input: Value) -> Value {
    let resp = try_create_workflow(server, token, input.clone()).await;
    assert!(
        error_code(&resp).is_none() && resp["errors"].is_null(),
        "createWorkflow failed\ninput: {input:#}\nresponse: {resp:#}"
    );
    resp["data"]["createWorkflow"].clone()
}

/// Creates a workflow named `name` with `steps` simple steps; returns it.
pub async fn simple_workflow(server: &TestServer, token: &str, name: &str, steps: usize) -> Value {
    create_workflow(
        server,
        token,
        json!({ "name": name, "steps": step_inputs(&format!("{name} step "), steps) }),
    )
    .await
}

/// `workflow(id)` with every field; `Value::Null` plus the response when not found.
pub async fn try_get_workflow(server: &TestServer, token: &str, id: &str) -> Value {
    let query = format!(
        "query($id: ID!) {{ workflow(id: $id) {{ {} }} }}",
        workflow_fields()
    );
    server.gql(&query, json!({ "id": id }), Some(token)).await
}

pub async fn get_workflow(server: &TestServer, token: &str, id: &str) -> Value {
    let resp = try_get_workflow(server, token, id).await;
    assert!(
        resp["errors"].is_null() && resp["data"]["workflow"].is_object(),
        "workflow({id}) failed: {resp:#}"
    );
    resp["data"]["workflow"].clone()
}

/// The ids of a workflow's steps, in stepNumber order as returned.
pub fn step_ids(workflow: &Value) -> Vec<String> {
    workflow["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("workflow has no steps array: {workflow:#}"))
        .iter()
        .map(|s| str_field(s, "id"))
        .collect()
}

/// Asserts the steps are numbered 1..n in the order returned.
#[track_caller]
pub fn assert_dense(workflow: &Value) {
    let numbers: Vec<i64> = workflow["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("workflow has no steps array: {workflow:#}"))
        .iter()
        .map(|s| s["stepNumber"].as_i64().unwrap_or(-1))
        .collect();
    let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
    assert_eq!(
        numbers, expected,
        "steps must come back ordered and numbered 1..n: {workflow:#}"
    );
    assert_eq!(
        workflow["stepCount"].as_i64(),
        Some(numbers.len() as i64),
        "stepCount must equal the number of steps: {workflow:#}"
    );
}

pub async fn try_add_step(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    input: Value,
    position: Option<i64>,
) -> Value {
    let query = format!(
        "mutation($workflowId: ID!, $input: StepInput!, $position: Int) {{ \
           addStep(workflowId: $workflowId, input: $input, position: $position) {{ {STEP_FIELDS} }} }}"
    );
    server
        .gql(
            &query,
            json!({ "workflowId": workflow_id, "input": input, "position": position }),
            Some(token),
        )
        .await
}

pub async fn add_step(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    input: Value,
    position: Option<i64>,
) -> Value {
    let resp = try_add_step(server, token, workflow_id, input, position).await;
    assert!(resp["errors"].is_null(), "addStep failed: {resp:#}");
    resp["data"]["addStep"].clone()
}

pub async fn try_update_step(server: &TestServer, token: &str, id: &str, input: Value) -> Value {
    let query = format!(
        "mutation($id: ID!, $input: UpdateStepInput!) {{ updateStep(id: $id, input: $input) {{ {STEP_FIELDS} }} }}"
    );
    server
        .gql(&query, json!({ "id": id, "input": input }), Some(token))
        .await
}

pub async fn update_step(server: &TestServer, token: &str, id: &str, input: Value) -> Value {
    let resp = try_update_step(server, token, id, input).await;
    assert!(resp["errors"].is_null(), "updateStep failed: {resp:#}");
    resp["data"]["updateStep"].clone()
}

pub async fn try_update_workflow(
    server: &TestServer,
    token: &str,
    id: &str,
    input: Value,
) -> Value {
    let query = format!(
        "mutation($id: ID!, $input: UpdateWorkflowInput!) {{ updateWorkflow(id: $id, input: $input) {{ {} }} }}",
        workflow_fields()
    );
    server
        .gql(&query, json!({ "id": id, "input": input }), Some(token))
        .await
}

pub async fn update_workflow(server: &TestServer, token: &str, id: &str, input: Value) -> Value {
    let resp = try_update_workflow(server, token, id, input.clone()).await;
    assert!(
        resp["errors"].is_null(),
        "updateWorkflow({input}) failed: {resp:#}"
    );
    resp["data"]["updateWorkflow"].clone()
}

/// Sets a workflow's status through `updateWorkflow`.
pub async fn set_status(server: &TestServer, token: &str, id: &str, status: &str) -> Value {
    update_workflow(server, token, id, json!({ "status": status })).await
}

// ---------------------------------------------------------------------------
// Rows without a mutation yet: inserted with SQL
// ---------------------------------------------------------------------------

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An SQL string literal.
pub fn lit(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// An SQL string literal or NULL.
pub fn opt_lit(value: Option<&str>) -> String {
    value.map_or_else(|| "NULL".to_owned(), lit)
}

/// A timestamp literal both backends accept: `'YYYY-MM-DD HH:MM:SS'`.
pub fn ts(at: chrono::DateTime<chrono::Utc>) -> String {
    lit(&at.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `'2026-01-01 00:00:00'` plus `seconds`.
pub fn ts_at(seconds: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("base time")
        .with_timezone(&chrono::Utc);
    ts(base + chrono::Duration::seconds(seconds))
}

pub struct ScreenshotRow<'a> {
    pub company_id: &'a str,
    pub workflow_id: &'a str,
    pub hash: &'a str,
}

/// The INSERT for a screenshot; returns (id, statement).
pub fn screenshot_sql(row: &ScreenshotRow<'_>) -> (String, String) {
    let id = new_id();
    let sql = format!(
        "INSERT INTO screenshots (id, company_id, workflow_id, hash, storage_key, content_type, \
           size_bytes, width, height, created_at) \
         VALUES ({}, {}, {}, {}, {}, 'image/png', 2048, 1280, 800, {});\n",
        lit(&id),
        lit(row.company_id),
        lit(row.workflow_id),
        lit(row.hash),
        lit(&format!("screenshots/{}/{}.png", row.company_id, row.hash)),
        ts(chrono::Utc::now()),
    );
    (id, sql)
}

pub async fn insert_screenshot(server: &TestServer, row: &ScreenshotRow<'_>) -> String {
    let (id, sql) = screenshot_sql(row);
    server.sql(&sql).await;
    id
}

/// `UPDATE steps SET screenshot_id` statement.
pub fn attach_screenshot_sql(step_id: &str, screenshot_id: &str) -> String {
    format!(
        "UPDATE steps SET screenshot_id = {} WHERE id = {};\n",
        lit(screenshot_id),
        lit(step_id)
    )
}

pub async fn attach_screenshot(server: &TestServer, step_id: &str, screenshot_id: &str) {
    server
        .sql(&attach_screenshot_sql(step_id, screenshot_id))
        .await;
}

pub struct RunRow<'a> {
    pub company_id: &'a str,
    pub workflow_id: &'a str,
    pub started_by: Option<&'a str>,
    /// Lower-case, as stored: `running`, `succeeded`, ...
    pub status: &'a str,
    pub current_step_id: Option<&'a str>,
    pub error: Option<&'a str>,
    /// An SQL timestamp literal (see [`ts_at`]).
    pub created_at: String,
}

pub async fn insert_run(server: &TestServer, row: &RunRow<'_>) -> String {
    let id = new_id();
    server
        .sql(&format!(
            "INSERT INTO runs (id, company_id, workflow_id, started_by, status, steps_total, \
               steps_completed, steps_failed, steps_healed, current_step_id, error, started_at, \
               finished_at, created_at, updated_at) \
             VALUES ({}, {}, {}, {}, {}, 3, 1, 1, 0, {}, {}, {c}, NULL, {c}, {c});",
            lit(&id),
            lit(row.company_id),
            lit(row.workflow_id),
            opt_lit(row.started_by),
            lit(row.status),
            opt_lit(row.current_step_id),
            opt_lit(row.error),
            c = row.created_at,
        ))
        .await;
    id
}

pub struct HealthLogRow<'a> {
    pub company_id: &'a str,
    pub workflow_id: &'a str,
    pub run_id: &'a str,
    pub step_id: Option<&'a str>,
    /// Lower-case, as stored: `success`, `failed`, `healed_ai`, ...
    pub status: &'a str,
    pub error_message: Option<&'a str>,
    pub created_at: String,
}

pub async fn insert_health_log(server: &TestServer, row: &HealthLogRow<'_>) -> String {
    let id = new_id();
    server
        .sql(&format!(
            "INSERT INTO health_logs (id, company_id, workflow_id, run_id, step_id, \
               idempotency_key, status, error_type, error_message, healing_confidence, \
               deterministic_score, ai_score, page_url, execution_time_ms, created_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, 0.75, 0.5, 0.25, \
               'https://app.example/form', 321, {});",
            lit(&id),
            lit(row.company_id),
            lit(row.workflow_id),
            lit(row.run_id),
            opt_lit(row.step_id),
            lit(&new_id()),
            lit(row.status),
            opt_lit(row.error_message.map(|_| "ElementNotFound")),
            opt_lit(row.error_message),
            row.created_at,
        ))
        .await;
    id
}

pub struct NotificationRow<'a> {
    pub company_id: &'a str,
    pub workflow_id: Option<&'a str>,
    /// `info`, `warning` or `error`.
    pub severity: &'a str,
    pub title: &'a str,
    /// `Some(user id)` inserts the notification already read by that user.
    pub read_by: Option<&'a str>,
    pub created_at: String,
}

pub fn notification_sql(row: &NotificationRow<'_>) -> (String, String) {
    let id = new_id();
    let (read, read_at) = match row.read_by {
        Some(_) => ("TRUE", row.created_at.clone()),
        None => ("FALSE", "NULL".to_owned()),
    };
    let sql = format!(
        "INSERT INTO notifications (id, company_id, workflow_id, kind, severity, title, message, \
           read, read_at, read_by, created_at) \
         VALUES ({}, {}, {}, 'workflow_broken', {}, {}, {}, {read}, {read_at}, {}, {});\n",
        lit(&id),
        lit(row.company_id),
        opt_lit(row.workflow_id),
        lit(row.severity),
        lit(row.title),
        lit(&format!("{} (details)", row.title)),
        opt_lit(row.read_by),
        row.created_at,
    );
    (id, sql)
}

pub async fn insert_notification(server: &TestServer, row: &NotificationRow<'_>) -> String {
    let (id, sql) = notification_sql(row);
    server.sql(&sql).await;
    id
}

// ---------------------------------------------------------------------------
// Snapshots: "nothing changed"
// ---------------------------------------------------------------------------

/// Every column of every tenant table, as in `migrations/*/up.sql`.
const TABLES: &[(&str, &str)] = &[
    (
        "companies",
        "id, name, invite_token, settings, created_at, updated_at",
    ),
    (
        "users",
        "id, company_id, email, password_hash, name, role, created_at, updated_at",
    ),
    (
        "workflows",
        "id, company_id, created_by, name, description, status, success_rate, total_uses, \
         consecutive_failures, last_success_at, last_failure_at, tags, created_at, updated_at",
    ),
    (
        "screenshots",
        "id, company_id, workflow_id, hash, storage_key, content_type, size_bytes, width, height, \
         created_at",
    ),
    (
        "steps",
        "id, company_id, workflow_id, step_number, action_type, selectors, element_meta, \
         page_context, action_data, dom_context, screenshot_id, field_label, instruction, \
         ai_confidence, ai_model, label_edited, instruction_edited, edited_by, edited_at, \
         healed_selectors, healed_at, healing_confidence, healing_method, created_at, updated_at",
    ),
    (
        "runs",
        "id, company_id, workflow_id, started_by, status, steps_total, steps_completed, \
         steps_failed, steps_healed, current_step_id, error, started_at, finished_at, created_at, \
         updated_at",
    ),
    (
        "health_logs",
        "id, company_id, workflow_id, run_id, step_id, idempotency_key, status, error_type, \
         error_message, healing_confidence, deterministic_score, ai_score, page_url, \
         execution_time_ms, created_at",
    ),
    (
        "notifications",
        "id, company_id, workflow_id, kind, severity, title, message, read, read_at, read_by, \
         created_at",
    ),
    // `last_used_at` is left out of keys and sessions: using a credential may write it
    // (about once a minute), and reading is not touching.
    (
        "api_keys",
        "id, company_id, name, role, prefix, secret_hash, created_by, created_at, expires_at, \
         revoked_at, revoked_by",
    ),
    (
        "sessions",
        "id, company_id, user_id, created_at, expires_at, user_agent, client_address",
    ),
    (
        "refresh_tokens",
        "token_hash, company_id, session_id, created_at, rotated_at",
    ),
    (
        "user_settings",
        "user_id, company_id, time_zone, locale, notification_severities, \
         muted_notification_kinds, updated_at",
    ),
    (
        "audit_log",
        "id, company_id, created_at, actor_type, actor_id, actor_label, action, target_type, \
         target_id, client_address, user_agent, summary",
    ),
    (
        "schedules",
        "id, company_id, workflow_id, name, cron, timezone, input, priority, enabled, \
         next_fire_at, last_fired_at, last_run_id, last_error, created_at, updated_at",
    ),
    (
        "webhooks",
        "id, company_id, workflow_id, name, enabled, secret_salt, previous_secret_salt, \
         previous_secret_expires_at, secret_rotated_at, last_used_at, created_at, updated_at",
    ),
    (
        "workflow_versions",
        "id, company_id, workflow_id, number, name, description, tags, steps, summary, \
         restored_from, created_by, created_at",
    ),
    (
        "projects",
        "id, company_id, name, description, created_by, created_at, updated_at",
    ),
    (
        "workflow_shares",
        "id, company_id, workflow_id, user_id, permission, created_by, created_at, updated_at",
    ),
    (
        "workflow_share_links",
        "id, company_id, workflow_id, token_hash, created_by, created_at, expires_at, \
         revoked_at, access_count, last_accessed_at",
    ),
    (
        "workflow_templates",
        "id, company_id, name, search_name, description, tags, visibility, published, \
         parameters, steps, step_count, includes_screenshots, source_workflow_id, \
         source_version, created_by, usage_count, created_at, updated_at",
    ),
    (
        "template_screenshots",
        "id, company_id, template_id, hash, storage_key, content_type, size_bytes, width, \
         height, created_at",
    ),
    // The policy only: the sweep's bookkeeping (next_sweep_at, claims) moves on its own.
    (
        "retention_policies",
        "company_id, run_max_age_days, runs_kept_per_workflow, notification_max_age_days, \
         version, updated_at",
    ),
];

/// Every stored row of one company, each rendered as text column by column.
pub async fn db_snapshot(server: &TestServer, company_id: &str) -> BTreeMap<String, Vec<String>> {
    let mut snapshot = BTreeMap::new();
    for (table, columns) in TABLES {
        let row = columns
            .split(',')
            .map(|c| format!("COALESCE(CAST({} AS TEXT), '<null>')", c.trim()))
            .collect::<Vec<_>>()
            .join(" || ' | ' || ");
        let filter = if *table == "companies" {
            "id"
        } else {
            "company_id"
        };
        let rows = server
            .sql_strings(&format!(
                "SELECT {row} AS v FROM {table} WHERE {filter} = {} ORDER BY v",
                lit(company_id)
            ))
            .await;
        snapshot.insert((*table).to_owned(), rows);
    }
    snapshot
}

/// A server for tests that take [`api_snapshot`]s. The snapshot reads a whole company in
/// one request (three nested pages of 100), far past the complexity a production client
/// is allowed, so these servers raise that one limit; every other setting is the default.
pub async fn start_for_snapshots(backend: Backend) -> TestServer {
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_MAX_QUERY_COMPLEXITY".to_owned(),
            "1000000000".to_owned(),
        )],
        ..ServerOptions::default()
    };
    TestServer::start_with(backend, options).await
}

/// Everything an admin can read about their company through the API, in one response.
pub async fn api_snapshot(server: &TestServer, admin_token: &str) -> Value {
    let query = format!(
        "{{ me {{ {USER_FIELDS} company {{ id }} }} \
           company {{ id name inviteToken settings createdAt updatedAt }} \
           users {{ {USER_FIELDS} company {{ id name }} }} \
           workflows(first: 100, orderBy: {{ field: CREATED_AT, direction: ASC }}) {{ totalCount \
             pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} \
             edges {{ cursor node {{ {wf} \
               screenshots {{ {SCREENSHOT_FIELDS} }} \
               runs(first: 100) {{ totalCount nodes {{ {RUN_FIELDS} \
                 healthLogs(first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} }} }} \
               healthLogs(first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} }} }} }} \
           runs(first: 100) {{ totalCount nodes {{ {RUN_FIELDS} }} }} \
           healthLogs(first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} \
           notifications(first: 100) {{ totalCount nodes {{ {NOTIFICATION_FIELDS} }} }} \
           unreadNotificationCount }}",
        wf = workflow_fields()
    );
    server.gql_ok(&query, json!({}), Some(admin_token)).await
}

/// Both views of a company: what the API shows its admin, and what is stored.
#[derive(Debug, PartialEq)]
pub struct CompanySnapshot {
    pub api: Value,
    pub db: BTreeMap<String, Vec<String>>,
}

pub async fn company_snapshot(
    server: &TestServer,
    company_id: &str,
    admin_token: &str,
) -> CompanySnapshot {
    CompanySnapshot {
        api: api_snapshot(server, admin_token).await,
        db: db_snapshot(server, company_id).await,
    }
}

/// Asserts two snapshots are identical, naming the first table or API path that differs.
#[track_caller]
pub fn assert_unchanged(before: &CompanySnapshot, after: &CompanySnapshot, context: &str) {
    for (table, rows) in &before.db {
        let now = after.db.get(table).cloned().unwrap_or_default();
        assert_eq!(
            rows, &now,
            "{context}: stored rows of `{table}` changed\nbefore: {rows:#?}\nafter: {now:#?}"
        );
    }
    if before.api != after.api {
        let path = first_difference(&before.api, &after.api, String::new());
        panic!(
            "{context}: the company's API view changed at `{path}`\nbefore: {:#}\nafter: {:#}",
            before.api, after.api
        );
    }
}

fn first_difference(a: &Value, b: &Value, path: String) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let w = y.get(k).unwrap_or(&Value::Null);
                if v != w {
                    return first_difference(v, w, format!("{path}.{k}"));
                }
            }
            for k in y.keys() {
                if !x.contains_key(k) {
                    return format!("{path}.{k}");
                }
            }
            path
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                if v != w {
                    return first_difference(v, w, format!("{path}[{i}]"));
                }
            }
            path
        }
        _ => format!("{path} ({a} -> {b})"),
    }
}

/// The ids of a connection's nodes (`edges[].node.id`).
#[track_caller]
pub fn edge_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("not a connection: {connection:#}"))
        .iter()
        .map(|e| str_field(&e["node"], "id"))
        .collect()
}

/// The ids of a connection's `nodes`.
#[track_caller]
pub fn node_ids(connection: &Value) -> Vec<String> {
    connection["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("connection without nodes: {connection:#}"))
        .iter()
        .map(|n| str_field(n, "id"))
        .collect()
}
