//! Restricted workflows: a member without a share must find a RESTRICTED workflow, and
//! everything hanging off it, exactly as absent as another company's, through every
//! query, list, count, nested field, loader and subscription; a member with only VIEW
//! must be refused the writes that need RUN or EDIT, and one without MANAGE the changes
//! of who sees it.
//!
//! Driven by the schema like tests/isolation.rs: `every_schema_field_has_a_visibility_case`
//! fails, naming the field, when a root field (queries, mutations, subscriptions) or an
//! entity-valued nested field has no case below, and each walk checks that every case it
//! owns really ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::lifecycle::*;
use common::realtime::*;
use common::runs::{
    active_workflow, finish_run, outcome, report_step, start_run, try_report_step, try_start_run,
};
use common::{Backend, PASSWORD, TestServer, assert_error_code, str_field};
use serde_json::{Value, json};

/// Every root field, with what the suite checks for it (as a member of the company who
/// is not shared the restricted workflow R, unless said otherwise).
const ROOT_CASES: &[(&str, &str)] = &[
    (
        "Query.me",
        "not workflow-reaching: the member's own account",
    ),
    ("Query.company", "not workflow-reaching: the company"),
    (
        "Query.users",
        "not workflow-reaching: members are company-wide",
    ),
    (
        "Query.workflows",
        "never R, whatever the filter; totalCount counts without it",
    ),
    (
        "Query.workflow",
        "R: null + NOT_FOUND, exactly like a missing id",
    ),
    ("Query.step", "R's steps: NOT_FOUND like missing ids"),
    (
        "Query.screenshot",
        "R's screenshot: NOT_FOUND like a missing id",
    ),
    ("Query.run", "R's runs: NOT_FOUND like missing ids"),
    (
        "Query.runs",
        "none of R's runs, also with workflowId: R; totalCount without them",
    ),
    (
        "Query.healthLogs",
        "none of R's logs, also filtered by R or its run",
    ),
    (
        "Query.notifications",
        "none of R's notifications; the company's own stay",
    ),
    (
        "Query.unreadNotificationCount",
        "R's unread notification does not count",
    ),
    (
        "Query.workflowVersionDiff",
        "R's versions: NOT_FOUND like a missing workflow",
    ),
    (
        "Query.projects",
        "the project holding R is listed; its counts leave R out",
    ),
    (
        "Query.project",
        "the project: its workflows and counts leave R out",
    ),
    (
        "Query.templates",
        "a COMPANY template of R is the company's (the publisher's choice); its source is hidden",
    ),
    (
        "Query.template",
        "as in templates: sourceWorkflow null for the member",
    ),
    (
        "Query.sharedWorkflow",
        "a link is a capability: it opens R for anyone holding its token, by design",
    ),
    ("Mutation.signup", "not workflow-reaching"),
    (
        "Mutation.joinCompany",
        "not workflow-reaching (a new member sees no restricted workflow)",
    ),
    ("Mutation.login", "not workflow-reaching"),
    ("Mutation.rotateInviteToken", "not workflow-reaching"),
    (
        "Mutation.createWorkflow",
        "a step showing R's screenshot: NOT_FOUND, nothing created",
    ),
    (
        "Mutation.updateWorkflow",
        "R: NOT_FOUND like missing; VIEW share: FORBIDDEN",
    ),
    (
        "Mutation.archiveWorkflow",
        "R: NOT_FOUND like missing; VIEW share: FORBIDDEN",
    ),
    (
        "Mutation.deleteWorkflow",
        "admins only: the member is FORBIDDEN for R as for any id",
    ),
    (
        "Mutation.duplicateWorkflow",
        "R: NOT_FOUND; VIEW share: allowed, the copy stays RESTRICTED",
    ),
    (
        "Mutation.addStep",
        "R: NOT_FOUND; R's screenshot on the member's workflow: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.updateStep",
        "R's step: NOT_FOUND; R's screenshot on a visible step: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.deleteStep",
        "R's step: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    ("Mutation.reorderSteps", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.uploadScreenshot",
        "R, or R's step on a visible workflow: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.markNotificationRead",
        "R's notification: NOT_FOUND like missing",
    ),
    (
        "Mutation.markAllNotificationsRead",
        "R's notification stays unread",
    ),
    (
        "Mutation.deleteNotification",
        "admins only: FORBIDDEN for the member as for any id",
    ),
    (
        "Mutation.changeUserRole",
        "not workflow-reaching (admins only)",
    ),
    ("Mutation.removeUser", "not workflow-reaching (admins only)"),
    (
        "Mutation.renameCompany",
        "not workflow-reaching (admins only)",
    ),
    (
        "Mutation.updateCompanySettings",
        "not workflow-reaching (admins only)",
    ),
    (
        "Mutation.startRun",
        "R: NOT_FOUND; VIEW: FORBIDDEN; RUN: allowed",
    ),
    (
        "Mutation.reportStep",
        "R's run: NOT_FOUND; R's step on a visible run: like an unknown step; VIEW: FORBIDDEN",
    ),
    ("Mutation.finishRun", "R's run: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.pauseRun", "R's run: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.resumeRun", "R's run: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.cancelRun", "R's run: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.restoreWorkflowVersion",
        "R: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.createProject",
        "not workflow-reaching: projects are company-wide",
    ),
    (
        "Mutation.updateProject",
        "not workflow-reaching (admins and the project's creator)",
    ),
    (
        "Mutation.deleteProject",
        "not workflow-reaching; deleting unassigns R too (checked by its creator)",
    ),
    ("Mutation.moveWorkflow", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.publishTemplate", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.instantiateTemplate",
        "a template is its own snapshot: usable per its visibility, R not touched",
    ),
    (
        "Mutation.rateTemplate",
        "templates are the company's, not R's",
    ),
    (
        "Mutation.unpublishTemplate",
        "templates are the company's (publisher and admins)",
    ),
    (
        "Mutation.deleteTemplate",
        "templates are the company's (publisher and admins)",
    ),
    (
        "Mutation.setWorkflowVisibility",
        "R: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    ("Mutation.shareWorkflow", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.unshareWorkflow", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    ("Mutation.createShareLink", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.revokeShareLink",
        "R's link: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Subscription.runUpdated",
        "R's run: NOT_FOUND like a missing one",
    ),
    (
        "Subscription.runsUpdated",
        "never R's runs, also with workflowId: R; shared: they arrive",
    ),
    (
        "Subscription.healthLogRecorded",
        "never R's logs, live or replayed; shared: they arrive",
    ),
    (
        "Subscription.notificationCreated",
        "never R's notifications",
    ),
    (
        "Subscription.workflowStatusChanged",
        "never R's status changes",
    ),
    (
        "Query.schedule",
        "R's schedule: NOT_FOUND like a missing one",
    ),
    ("Query.schedules", "of R: NOT_FOUND like a missing workflow"),
    ("Query.webhook", "R's webhook: NOT_FOUND like a missing one"),
    ("Query.webhooks", "of R: NOT_FOUND like a missing workflow"),
    (
        "Query.node",
        "R's ids of every kind (versions, shares, links, schedules, webhooks, queued runs too): like missing ids; links only for R's managers",
    ),
    ("Query.nodes", "R's ids of every kind: like missing ids"),
    ("Mutation.enqueueRun", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.claimRun",
        "never R's queued run, without a share or with VIEW; RUN claims it",
    ),
    (
        "Mutation.heartbeatRun",
        "R's claimed run: NOT_FOUND like missing",
    ),
    (
        "Mutation.retryRun",
        "R's finished run: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    ("Mutation.createSchedule", "R: NOT_FOUND; VIEW: FORBIDDEN"),
    (
        "Mutation.updateSchedule",
        "R's schedule: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.pauseSchedule",
        "R's schedule: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.resumeSchedule",
        "R's schedule: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.deleteSchedule",
        "R's schedule: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    (
        "Mutation.createWebhook",
        "admins only: FORBIDDEN for the member as for any id",
    ),
    (
        "Mutation.updateWebhook",
        "admins only: FORBIDDEN for the member as for any id",
    ),
    (
        "Mutation.rotateWebhookSecret",
        "admins only: FORBIDDEN for the member as for any id",
    ),
    (
        "Mutation.deleteWebhook",
        "admins only: FORBIDDEN for the member as for any id",
    ),
    (
        "Mutation.suggestStepText",
        "R's step: NOT_FOUND; VIEW: FORBIDDEN",
    ),
    ("Subscription.runQueued", "never R's queued runs"),
    ("Query.apiKeys", "not workflow-reaching (admins only)"),
    (
        "Query.sessions",
        "not workflow-reaching: the member's own sessions",
    ),
    (
        "Query.userSettings",
        "not workflow-reaching: the member's own settings",
    ),
    ("Query.auditLog", "admins only, who see every workflow"),
    ("Mutation.refreshSession", "not workflow-reaching"),
    ("Mutation.logout", "not workflow-reaching"),
    ("Mutation.logoutEverywhere", "not workflow-reaching"),
    ("Mutation.changePassword", "not workflow-reaching"),
    ("Mutation.updateProfile", "not workflow-reaching"),
    (
        "Mutation.createApiKey",
        "not workflow-reaching (admins only; a key sees the whole company)",
    ),
    (
        "Mutation.revokeApiKey",
        "not workflow-reaching (admins only)",
    ),
    ("Mutation.updateUserSettings", "not workflow-reaching"),
    (
        "Query.members",
        "not workflow-reaching: members are company-wide",
    ),
    (
        "Query.workflowStats",
        "R: NOT_FOUND like a missing id; a visible workflow's count only its runs",
    ),
    (
        "Query.companyStats",
        "counts none of R's runs, logs or error types",
    ),
    (
        "Query.retentionPolicy",
        "admins only, who see every workflow",
    ),
    (
        "Query.retentionPreview",
        "admins only, who see every workflow",
    ),
    (
        "Mutation.updateRetentionPolicy",
        "admins only, who see every workflow",
    ),
];

/// Entity-valued fields below the roots, with what the suite checks for them.
const NESTED_CASES: &[(&str, &str)] = &[
    ("Workflow.createdBy", "the visible workflow's creator"),
    ("Workflow.steps", "the visible workflow's steps only"),
    (
        "Workflow.screenshots",
        "the visible workflow's screenshots only",
    ),
    ("Workflow.runs", "the visible workflow's runs only"),
    (
        "Workflow.healthLogs",
        "the visible workflow's logs; filtered by R's run: nothing",
    ),
    ("Workflow.project", "the visible workflow's project"),
    ("Workflow.versions", "the visible workflow's versions only"),
    ("Workflow.version", "the visible workflow's version"),
    ("Workflow.shares", "VIEW member: R's shares, which they see"),
    (
        "Workflow.shareLinks",
        "VIEW member: empty (links are for managers)",
    ),
    ("Step.workflow", "the visible step's workflow"),
    (
        "Step.screenshot",
        "the visible step's screenshot (one it shows is visible: duplicates show their source's)",
    ),
    ("Step.editedBy", "the visible step's editor"),
    ("Screenshot.workflow", "the visible screenshot's workflow"),
    ("Run.workflow", "the visible run's workflow"),
    ("Run.startedBy", "the visible run's starter"),
    (
        "Run.currentStep",
        "the visible run's step; pointing at R's step: null",
    ),
    ("Run.healthLogs", "the visible run's logs"),
    ("Run.version", "the visible run's version"),
    ("HealthLog.workflow", "the visible log's workflow"),
    ("HealthLog.run", "the visible log's run"),
    (
        "HealthLog.step",
        "the visible log's step; pointing at R's step: null",
    ),
    (
        "Notification.workflow",
        "the visible notification's workflow",
    ),
    ("Notification.readBy", "the visible notification's reader"),
    (
        "StepReport.run",
        "a report on the visible run answers with it",
    ),
    (
        "StepReport.healthLog",
        "a report on the visible run answers with its log",
    ),
    ("Project.createdBy", "the project's creator"),
    ("Project.workflows", "leaves R out"),
    ("Project.workflowCountsByStatus", "leaves R out"),
    ("WorkflowVersion.workflow", "the visible workflow"),
    ("WorkflowVersion.createdBy", "the visible version's author"),
    ("WorkflowVersion.steps", "the visible version's steps"),
    (
        "VersionStep.screenshot",
        "the visible version's; naming R's screenshot: null",
    ),
    ("WorkflowVersionDiff.from", "diff of the visible workflow"),
    ("WorkflowVersionDiff.to", "diff of the visible workflow"),
    ("WorkflowVersionDiff.added", "diff of the visible workflow"),
    (
        "WorkflowVersionDiff.removed",
        "diff of the visible workflow",
    ),
    (
        "WorkflowVersionDiff.changed",
        "diff of the visible workflow",
    ),
    ("StepDiff.from", "diff of the visible workflow"),
    ("StepDiff.to", "diff of the visible workflow"),
    (
        "WorkflowTemplate.createdBy",
        "the template's publisher (a member)",
    ),
    (
        "WorkflowTemplate.sourceWorkflow",
        "R as a template's source: null for the member",
    ),
    ("WorkflowTemplate.steps", "the template's own snapshot"),
    (
        "WorkflowTemplate.parameters",
        "the template's own parameters",
    ),
    ("TemplateStep.screenshot", "the template's own copy"),
    ("WorkflowShare.workflow", "VIEW member: R"),
    ("WorkflowShare.user", "VIEW member: a member"),
    ("WorkflowShare.sharedBy", "VIEW member: R's creator"),
    ("ShareLink.workflow", "R's creator: R"),
    ("ShareLink.createdBy", "R's creator"),
    (
        "CreatedShareLink.link",
        "R's creator makes one; the member cannot",
    ),
    (
        "SharedWorkflow.steps",
        "a link shows R's steps (capability)",
    ),
    (
        "SharedStep.screenshot",
        "a link shows R's screenshot (capability)",
    ),
    ("RunUpdate.run", "never one of R's runs"),
    ("RunUpdate.healthLog", "never one of R's logs"),
    ("HealthLogEvent.healthLog", "never one of R's logs"),
    ("WorkflowStatusChange.workflow", "never R"),
    ("Run.retryOf", "a visible run naming R's run: null"),
    ("Run.retries", "a visible run's retries leave R's out"),
    ("Run.fromStep", "a visible run naming R's step: null"),
    ("Run.schedule", "a visible run naming R's schedule: null"),
    ("Run.webhook", "a visible run naming R's webhook: null"),
    ("Schedule.workflow", "the visible schedule's workflow"),
    (
        "Schedule.lastRun",
        "a visible schedule naming R's run: null",
    ),
    ("Webhook.workflow", "the visible webhook's workflow"),
    ("WebhookWithSecret.webhook", "the admin's new webhook"),
    ("StepTextSuggestion.step", "a suggestion on a visible step"),
    ("RunLease.run", "the member's claim of a visible run"),
    ("RunStats.runsByStatus", "counts leave R's runs out"),
    ("RunStats.stepsHealed", "counts leave R's logs out"),
    ("RunStats.failuresByErrorType", "never R's error types"),
    ("RunStats.duration", "leaves R's runs out"),
    ("RunStats.series", "buckets leave R out"),
    ("RunStatsBucket.runsByStatus", "counts leave R's runs out"),
    ("RunStatsBucket.stepsHealed", "counts leave R's logs out"),
    ("RunStatsBucket.duration", "leaves R's runs out"),
];

/// Entity-valued nested fields that reach no workflow, and why.
const NESTED_EXEMPT: &[(&str, &str, &str)] = &[
    (
        "User",
        "company",
        "members and their company are company-wide",
    ),
    ("AuthPayload", "user", "sign-in answers reach no workflow"),
    (
        "AuthPayload",
        "company",
        "sign-in answers reach no workflow",
    ),
    ("ApiKey", "createdBy", "API keys reach no workflow"),
    ("CreatedApiKey", "apiKey", "API keys reach no workflow"),
];

/// An introspected type: its kind and its fields as (name, target kind, target name).
type TypeInfo = (String, Vec<(String, String, String)>);

fn named_type(type_ref: &Value) -> (String, String) {
    let mut t = type_ref;
    while t["name"].is_null() && !t["ofType"].is_null() {
        t = &t["ofType"];
    }
    (
        t["kind"].as_str().unwrap_or_default().to_owned(),
        t["name"].as_str().unwrap_or_default().to_owned(),
    )
}

fn is_connection_plumbing(type_name: &str) -> bool {
    type_name.ends_with("Connection") || type_name.ends_with("Edge") || type_name == "PageInfo"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schema_field_has_a_visibility_case() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (token, _) = server
        .signup("Acme", "Ada", "ada@acme.test", PASSWORD)
        .await;
    let data = ok(
        &server,
        &token,
        "{ __schema { queryType { name } mutationType { name } subscriptionType { name } \
             types { name kind fields(includeDeprecated: true) { name type { ...T } } } } } \
         fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }",
        json!({}),
    )
    .await;
    let schema = &data["__schema"];
    let mut types: BTreeMap<String, TypeInfo> = BTreeMap::new();
    for t in schema["types"].as_array().unwrap() {
        let fields = t["fields"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        let (kind, name) = named_type(&f["type"]);
                        (str_field(f, "name"), kind, name)
                    })
                    .collect()
            })
            .unwrap_or_default();
        types.insert(str_field(t, "name"), (str_field(t, "kind"), fields));
    }
    let roots = [
        ("Query", str_field(&schema["queryType"], "name")),
        ("Mutation", str_field(&schema["mutationType"], "name")),
        (
            "Subscription",
            str_field(&schema["subscriptionType"], "name"),
        ),
    ];
    let root_cases: BTreeSet<&str> = ROOT_CASES.iter().map(|(k, _)| *k).collect();
    let nested_cases: BTreeSet<(&str, &str)> = NESTED_CASES
        .iter()
        .map(|(k, _)| k.split_once('.').unwrap())
        .chain(NESTED_EXEMPT.iter().map(|(t, f, _)| (*t, *f)))
        .collect();
    let mut missing = Vec::new();
    let mut schema_fields = BTreeSet::new();
    let mut queue: Vec<String> = Vec::new();
    for (label, type_name) in &roots {
        for (field, _, target) in &types[type_name].1 {
            let key = format!("{label}.{field}");
            if !root_cases.contains(key.as_str()) {
                missing.push(format!("root field {key} has no visibility case"));
            }
            schema_fields.insert(key);
            queue.push(target.clone());
        }
    }
    let mut seen: BTreeSet<String> = roots.iter().map(|(_, n)| n.clone()).collect();
    while let Some(type_name) = queue.pop() {
        if !seen.insert(type_name.clone()) {
            continue;
        }
        let Some((kind, fields)) = types.get(&type_name) else {
            continue;
        };
        if kind != "OBJECT" || type_name.starts_with("__") {
            continue;
        }
        for (field, target_kind, target) in fields {
            queue.push(target.clone());
            if !matches!(target_kind.as_str(), "OBJECT" | "INTERFACE" | "UNION")
                || is_connection_plumbing(&type_name)
            {
                continue;
            }
            schema_fields.insert(format!("{type_name}.{field}"));
            if !nested_cases.contains(&(type_name.as_str(), field.as_str())) {
                missing.push(format!(
                    "nested field {type_name}.{field} (-> {target}) has no visibility case"
                ));
            }
        }
    }
    for key in root_cases
        .iter()
        .map(|k| (*k).to_owned())
        .chain(NESTED_CASES.iter().map(|(k, _)| (*k).to_owned()))
    {
        if !schema_fields.contains(&key) {
            missing.push(format!(
                "{key} is in the visibility tables but not in the schema"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "visibility coverage gaps:\n  {}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// One company, one restricted workflow
// ---------------------------------------------------------------------------

/// A member who joined the company: token and id.
struct Member {
    token: String,
    id: String,
}

async fn join(server: &TestServer, invite: &str, name: &str) -> Member {
    let email = format!("{}@acme.test", name.to_lowercase());
    let (token, payload) = server.join_company(invite, name, &email, PASSWORD).await;
    Member {
        token,
        id: str_field(&payload["user"], "id"),
    }
}

struct World {
    acme: Team,
    /// R's creator, a regular member.
    creator: Member,
    /// Shared R with VIEW.
    viewer: Member,
    /// Shared R with RUN.
    runner: Member,
    /// The restricted workflow.
    restricted: String,
    r_steps: Vec<String>,
    r_screenshot: String,
    /// A running run of R, and a finished one.
    r_runs: Vec<String>,
    r_logs: Vec<String>,
    r_note: String,
    r_versions: Vec<String>,
    r_link: String,
    r_link_token: String,
    r_shares: Vec<String>,
    /// A COMPANY template published from R by its creator.
    template: String,
    /// A project holding R and the open workflow.
    project: String,
    /// A COMPANY-visible workflow (the admin's), with its step, run and log.
    open: String,
    open_steps: Vec<String>,
    open_run: String,
    open_log: String,
    open_note: String,
    open_screenshot: String,
    company_note: String,
}

impl World {
    /// Every id of R and of what hangs off it.
    fn r_ids(&self) -> Vec<&str> {
        let mut ids = vec![
            self.restricted.as_str(),
            self.r_screenshot.as_str(),
            self.r_note.as_str(),
            self.r_link.as_str(),
        ];
        for list in [
            &self.r_steps,
            &self.r_runs,
            &self.r_logs,
            &self.r_versions,
            &self.r_shares,
        ] {
            ids.extend(list.iter().map(String::as_str));
        }
        ids
    }

    /// Asserts `resp` shows nothing of R but the ids in `sent`.
    #[track_caller]
    fn assert_no_leak(&self, resp: &Value, sent: &[&str], context: &str) {
        let text = resp.to_string();
        assert!(
            !text.contains("R-SECRET"),
            "{context}: the response shows R's content: {resp:#}"
        );
        self.assert_no_ids(resp, sent, context);
    }

    /// Asserts `resp` names none of R's ids but those in `sent`.
    #[track_caller]
    fn assert_no_ids(&self, resp: &Value, sent: &[&str], context: &str) {
        let text = resp.to_string();
        for id in self.r_ids() {
            if !sent.contains(&id) {
                assert!(
                    !text.contains(id),
                    "{context}: the response leaks R's id {id}: {resp:#}"
                );
            }
        }
    }
}

async fn world(server: &TestServer) -> World {
    let acme = team(server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let creator = join(server, &invite, "Creator").await;
    let viewer = join(server, &invite, "Viewer").await;
    let runner = join(server, &invite, "Runner").await;
    let c = creator.token.as_str();

    let created = create_workflow(
        server,
        c,
        json!({
            "name": "R-SECRET payroll",
            "description": "R-SECRET description",
            "tags": ["r-secret"],
            "status": "ACTIVE",
            "steps": [
                { "actionType": "type", "fieldLabel": "R-SECRET label", "instruction": "R-SECRET instruction" },
                step_input("click", "R-SECRET step 2"),
            ],
        }),
    )
    .await;
    let restricted = str_field(&created, "id");
    let r_steps = step_ids(&created);
    let upload = multipart_request(
        server,
        &server.client,
        Some(c),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": restricted, "s": r_steps[0] }),
        png(6, 6, 66),
    )
    .await;
    let r_screenshot = str_field(&upload["data"]["uploadScreenshot"], "id");
    update_step(
        server,
        c,
        &r_steps[1],
        json!({ "instruction": "R-SECRET edited" }),
    )
    .await;
    let running = str_field(&start_run(server, c, &restricted).await, "id");
    let log1 = str_field(
        &report_step(server, c, &running, &r_steps[0], outcome("SUCCESS")).await["healthLog"],
        "id",
    );
    let finished = str_field(&start_run(server, c, &restricted).await, "id");
    let log2 = str_field(
        &report_step(
            server,
            c,
            &finished,
            &r_steps[0],
            json!({ "status": "FAILED", "errorType": "R-SECRET-timeout" }),
        )
        .await["healthLog"],
        "id",
    );
    finish_run(server, c, &finished, "FAILED", Some("R-SECRET failure")).await;
    let r_note = insert_notification(
        server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: Some(&restricted),
            severity: "error",
            title: "R-SECRET alert",
            read_by: None,
            created_at: ts_at(100),
        },
    )
    .await;
    let company_note = insert_notification(
        server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: None,
            severity: "info",
            title: "Company news",
            read_by: None,
            created_at: ts_at(101),
        },
    )
    .await;

    let project = create_project(server, &acme.admin_token, "Shared project").await;
    try_move_workflow(server, c, &restricted, Some(&project)).await;
    let template = str_field(
        &publish(
            server,
            c,
            json!({ "w": restricted, "name": "Payroll template", "v": "COMPANY" }),
        )
        .await,
        "id",
    );
    let (r_link, r_link_token) = create_link(server, c, &restricted).await;

    let (open, open_steps) = active_workflow(server, &acme.admin_token, "Open flow", 2).await;
    try_move_workflow(server, &acme.admin_token, &open, Some(&project)).await;
    let open_run = str_field(&start_run(server, &acme.admin_token, &open).await, "id");
    let open_log = str_field(
        &report_step(
            server,
            &acme.admin_token,
            &open_run,
            &open_steps[0],
            outcome("SUCCESS"),
        )
        .await["healthLog"],
        "id",
    );
    let upload = multipart_request(
        server,
        &server.client,
        Some(&acme.admin_token),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": open, "s": open_steps[1] }),
        png(6, 6, 67),
    )
    .await;
    let open_screenshot = str_field(&upload["data"]["uploadScreenshot"], "id");
    let open_note = insert_notification(
        server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: Some(&open),
            severity: "warning",
            title: "Open alert",
            read_by: None,
            created_at: ts_at(102),
        },
    )
    .await;

    set_visibility(server, c, &restricted, "RESTRICTED").await;
    let mut r_shares = Vec::new();
    for (member, permission) in [(&viewer, "VIEW"), (&runner, "RUN")] {
        let resp = try_share(server, c, &restricted, &member.id, permission).await;
        r_shares.push(str_field(&resp["data"]["shareWorkflow"], "id"));
    }
    let (_, r_versions) = versions(server, c, &restricted).await;
    World {
        r_versions: r_versions.iter().map(|v| str_field(v, "id")).collect(),
        acme,
        creator,
        viewer,
        runner,
        restricted,
        r_steps,
        r_screenshot,
        r_runs: vec![running, finished],
        r_logs: vec![log1, log2],
        r_note,
        r_link,
        r_link_token,
        r_shares,
        template,
        project,
        open,
        open_steps,
        open_run,
        open_log,
        open_note,
        open_screenshot,
        company_note,
    }
}

/// Runs `query` as `token` with R's `hidden` id and with a never-issued id: both must be
/// refused with `code` (NOT_FOUND, or the role guard's FORBIDDEN that any id gets), show
/// nothing of R, and look exactly alike apart from the id sent.
async fn like_missing(
    server: &TestServer,
    world: &World,
    token: &str,
    query: &str,
    vars_for: impl Fn(&str) -> Value,
    hidden: &str,
    code: &str,
) {
    let context = format!("{query} with R's id {hidden}");
    let resp = server.gql(query, vars_for(hidden), Some(token)).await;
    assert_error_code(&resp, code, &context);
    world.assert_no_leak(&resp, &[hidden], &context);
    let missing = new_id();
    let control = server.gql(query, vars_for(&missing), Some(token)).await;
    assert_eq!(
        resp.to_string().replace(hidden, "<ID>"),
        control.to_string().replace(&missing, "<ID>"),
        "{context}: a restricted workflow's id must be answered like a missing one"
    );
}

/// A read the member makes: no errors, and nothing of R.
async fn member_reads(
    server: &TestServer,
    world: &World,
    query: &str,
    vars: Value,
    context: &str,
) -> Value {
    let resp = server
        .gql(query, vars, Some(&world.acme.member_token))
        .await;
    assert!(resp["errors"].is_null(), "{context}: {resp:#}");
    world.assert_no_leak(&resp, &[], context);
    resp["data"].clone()
}

fn ids_of(connection: &Value) -> BTreeSet<String> {
    node_ids(connection).into_iter().collect()
}

/// Asserts a write of the VIEW-only member is FORBIDDEN and changes nothing.
#[track_caller]
fn assert_forbidden(resp: &Value, context: &str) {
    assert_error_code(resp, "FORBIDDEN", context);
}

both_backends!(a_member_without_a_share_cannot_see_or_touch_a_restricted_workflow);
async fn a_member_without_a_share_cannot_see_or_touch_a_restricted_workflow(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let m = w.acme.member_token.clone();
    let m = m.as_str();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let before = company_snapshot(&server, &w.acme.company_id, &w.acme.admin_token).await;
    assert_eq!(
        before.api["workflows"]["totalCount"], 2,
        "precondition: the admin sees R"
    );

    // ----- Not workflow-reaching -----------------------------------------------------
    member_reads(
        &server,
        &w,
        "{ me { id company { id } } company { id name } users { id } }",
        json!({}),
        "me/company/users",
    )
    .await;
    covered.extend(["Query.me", "Query.company", "Query.users"]);

    // ----- Root reads ----------------------------------------------------------------
    let visible: BTreeSet<String> = [w.open.clone()].into_iter().collect();
    let list = "query($f: WorkflowFilter) { workflows(filter: $f, first: 100) { totalCount nodes { id name } } }";
    for (what, filter) in [
        ("no filter", json!(null)),
        ("search R's name", json!({ "search": "R-SECRET" })),
        ("R's tag", json!({ "tag": "r-secret" })),
        (
            "created by R's creator",
            json!({ "createdBy": w.creator.id }),
        ),
        ("in R's project", json!({ "projectId": w.project })),
        (
            "every status",
            json!({ "status": ["DRAFT", "PROCESSING", "ACTIVE", "NEEDS_REVIEW", "BROKEN", "ARCHIVED"] }),
        ),
    ] {
        let data = member_reads(
            &server,
            &w,
            list,
            json!({ "f": filter }),
            &format!("workflows, {what}"),
        )
        .await;
        let ids = ids_of(&data["workflows"]);
        assert!(ids.is_subset(&visible), "workflows ({what}): {data:#}");
        assert_eq!(
            data["workflows"]["totalCount"].as_u64(),
            Some(ids.len() as u64),
            "totalCount ({what})"
        );
    }
    covered.insert("Query.workflows");

    let by_id = |field: &str, fields: &str| {
        format!("query($id: ID!) {{ {field}(id: $id) {{ {fields} }} }}")
    };
    let wf_query = by_id(
        "workflow",
        &format!(
            "{} visibility currentVersion versions {{ totalCount }} shares {{ id }} shareLinks {{ id }}",
            workflow_fields()
        ),
    );
    like_missing(
        &server,
        &w,
        m,
        &wf_query,
        |id| json!({ "id": id }),
        &w.restricted,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Query.workflow");
    for step in &w.r_steps {
        like_missing(
            &server,
            &w,
            m,
            &by_id("step", STEP_FIELDS),
            |id| json!({ "id": id }),
            step,
            "NOT_FOUND",
        )
        .await;
    }
    covered.insert("Query.step");
    like_missing(
        &server,
        &w,
        m,
        &by_id("screenshot", SCREENSHOT_FIELDS),
        |id| json!({ "id": id }),
        &w.r_screenshot,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Query.screenshot");
    let run_query = by_id(
        "run",
        &format!("{RUN_FIELDS} version {{ number }} healthLogs {{ nodes {{ id }} }}"),
    );
    for run in &w.r_runs {
        like_missing(
            &server,
            &w,
            m,
            &run_query,
            |id| json!({ "id": id }),
            run,
            "NOT_FOUND",
        )
        .await;
    }
    covered.insert("Query.run");

    let runs = format!(
        "query($wf: ID, $st: [RunStatus!]) {{ runs(workflowId: $wf, status: $st, first: 100) {{ totalCount nodes {{ {RUN_FIELDS} }} }} }}"
    );
    for (what, vars) in [
        ("all", json!({})),
        ("of R", json!({ "wf": w.restricted })),
        ("by status", json!({ "st": ["RUNNING", "FAILED"] })),
    ] {
        let resp = server.gql(&runs, vars, Some(m)).await;
        w.assert_no_leak(&resp, &[&w.restricted], &format!("runs {what}"));
        let ids = ids_of(&resp["data"]["runs"]);
        assert!(
            ids.iter().all(|id| *id == w.open_run),
            "runs {what}: {resp:#}"
        );
        assert_eq!(
            resp["data"]["runs"]["totalCount"].as_u64(),
            Some(ids.len() as u64)
        );
    }
    covered.insert("Query.runs");

    let logs = format!(
        "query($f: HealthLogFilter) {{ healthLogs(filter: $f, first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} }}"
    );
    for (what, filter, sent) in [
        ("all", json!(null), ""),
        (
            "of R",
            json!({ "workflowId": w.restricted }),
            w.restricted.as_str(),
        ),
        (
            "of R's run",
            json!({ "runId": w.r_runs[0] }),
            w.r_runs[0].as_str(),
        ),
    ] {
        let resp = server.gql(&logs, json!({ "f": filter }), Some(m)).await;
        w.assert_no_leak(&resp, &[sent], &format!("healthLogs {what}"));
        let ids = ids_of(&resp["data"]["healthLogs"]);
        assert!(
            ids.iter().all(|id| *id == w.open_log),
            "healthLogs {what}: {resp:#}"
        );
        assert_eq!(
            resp["data"]["healthLogs"]["totalCount"].as_u64(),
            Some(ids.len() as u64)
        );
    }
    covered.insert("Query.healthLogs");

    let notes = format!(
        "query($u: Boolean) {{ notifications(unreadOnly: $u, first: 100) {{ totalCount nodes {{ {NOTIFICATION_FIELDS} }} }} unreadNotificationCount }}"
    );
    for unread in [false, true] {
        let data = member_reads(&server, &w, &notes, json!({ "u": unread }), "notifications").await;
        assert_eq!(
            ids_of(&data["notifications"]),
            [w.open_note.clone(), w.company_note.clone()]
                .into_iter()
                .collect(),
            "{data:#}"
        );
        assert_eq!(data["notifications"]["totalCount"], 2);
        assert_eq!(
            data["unreadNotificationCount"], 2,
            "R's unread notification does not count"
        );
    }
    covered.extend(["Query.notifications", "Query.unreadNotificationCount"]);

    let diff = "query($w: ID!) { workflowVersionDiff(workflowId: $w, from: 1, to: 2) { changedFields added { stepId } } }";
    like_missing(
        &server,
        &w,
        m,
        diff,
        |id| json!({ "w": id }),
        &w.restricted,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Query.workflowVersionDiff");

    let project_fields =
        format!("{PROJECT_FIELDS} workflows(first: 100) {{ totalCount nodes {{ id }} }}");
    let data = member_reads(
        &server,
        &w,
        &format!("{{ projects {{ totalCount nodes {{ {project_fields} }} }} }}"),
        json!({}),
        "projects",
    )
    .await;
    let project = &data["projects"]["nodes"][0];
    assert_eq!(project["id"], w.project.as_str());
    assert_eq!(ids_of(&project["workflows"]), visible);
    assert_eq!(project["workflows"]["totalCount"], 1);
    assert_eq!(project["workflowCount"], 1);
    assert_eq!(
        project["workflowCountsByStatus"],
        json!([{ "status": "ACTIVE", "count": 1 }])
    );
    assert_eq!(project["createdBy"]["id"], w.acme.admin_id.as_str());
    let data = member_reads(
        &server,
        &w,
        &by_id("project", &project_fields),
        json!({ "id": w.project }),
        "project",
    )
    .await;
    assert_eq!(data["project"]["workflowCount"], 1);
    // The admin sees both.
    let data = ok(
        &server,
        &w.acme.admin_token,
        &by_id("project", &project_fields),
        json!({ "id": w.project }),
    )
    .await;
    assert_eq!(data["project"]["workflowCount"], 2);
    covered.extend([
        "Query.projects",
        "Query.project",
        "Project.createdBy",
        "Project.workflows",
        "Project.workflowCountsByStatus",
    ]);

    // A COMPANY template of R holds R's definition as published (the publisher's choice,
    // made while R was the company's), but names nothing of R.
    let template_query = by_id("template", TEMPLATE_FIELDS);
    let resp = server
        .gql(&template_query, json!({ "id": w.template }), Some(m))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    w.assert_no_ids(&resp, &[], "template");
    let template = &resp["data"]["template"];
    assert!(template["sourceVersion"].is_null(), "{template:#}");
    assert!(
        template["sourceWorkflow"].is_null(),
        "R as a template's source is hidden: {template:#}"
    );
    assert_eq!(template["createdBy"]["id"], w.creator.id.as_str());
    assert_eq!(template["parameters"], json!([]));
    assert!(template["steps"][0]["screenshot"].is_null());
    let data = member_reads(
        &server,
        &w,
        "{ templates { totalCount nodes { id sourceWorkflow { id } } } }",
        json!({}),
        "templates",
    )
    .await;
    assert_eq!(
        data["templates"]["nodes"],
        json!([{ "id": w.template, "sourceWorkflow": null }])
    );
    let data = ok(
        &server,
        &w.creator.token,
        &template_query,
        json!({ "id": w.template }),
    )
    .await;
    assert_eq!(
        data["template"]["sourceWorkflow"]["id"],
        w.restricted.as_str(),
        "its creator sees the source"
    );
    covered.extend([
        "Query.template",
        "Query.templates",
        "WorkflowTemplate.createdBy",
        "WorkflowTemplate.sourceWorkflow",
        "WorkflowTemplate.steps",
        "WorkflowTemplate.parameters",
        "TemplateStep.screenshot",
    ]);

    // A link is a capability: whoever holds its token reads R, the member too.
    let resp = shared(&server, &w.r_link_token, Some(m)).await;
    assert_eq!(
        resp["data"]["sharedWorkflow"]["name"], "R-SECRET payroll",
        "{resp:#}"
    );
    assert!(!resp["data"]["sharedWorkflow"]["steps"][0]["screenshot"]["url"].is_null());
    covered.extend([
        "Query.sharedWorkflow",
        "SharedWorkflow.steps",
        "SharedStep.screenshot",
    ]);

    // ----- Nested fields of what the member sees -------------------------------------
    let nested = format!(
        "query($id: ID!, $ar: ID) {{ workflow(id: $id) {{ {wf} project {{ id }} \
           screenshots {{ {SCREENSHOT_FIELDS} }} \
           runs(first: 100) {{ totalCount nodes {{ {RUN_FIELDS} version {{ number }} healthLogs {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} }} }} \
           healthLogs(first: 100) {{ totalCount nodes {{ {HEALTH_LOG_FIELDS} }} }} \
           byRRun: healthLogs(filter: {{ runId: $ar }}) {{ totalCount nodes {{ id }} }} \
           versions {{ totalCount nodes {{ number workflow {{ id }} createdBy {{ id }} steps {{ stepId screenshot {{ id }} }} }} }} \
           version(number: 1) {{ number }} shares {{ id }} shareLinks {{ id }} viewerPermission viewerCanManage }} }}",
        wf = workflow_fields()
    );
    let resp = server
        .gql(&nested, json!({ "id": w.open, "ar": w.r_runs[0] }), Some(m))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    w.assert_no_leak(
        &resp,
        &[&w.r_runs[0]],
        "the open workflow with everything under it",
    );
    let open = &resp["data"]["workflow"];
    assert_eq!(step_ids(open), w.open_steps);
    assert_eq!(
        ids_of(&open["runs"]),
        [w.open_run.clone()].into_iter().collect()
    );
    assert_eq!(
        ids_of(&open["healthLogs"]),
        [w.open_log.clone()].into_iter().collect()
    );
    assert_eq!(open["byRRun"]["totalCount"], 0);
    assert_eq!(open["project"]["id"], w.project.as_str());
    assert_eq!(
        open["versions"]["totalCount"], 2,
        "created, then its screenshot"
    );
    assert_eq!(open["viewerPermission"], "EDIT");
    assert_eq!(open["viewerCanManage"], false);
    covered.extend([
        "Workflow.createdBy",
        "Workflow.steps",
        "Workflow.screenshots",
        "Workflow.runs",
        "Workflow.healthLogs",
        "Workflow.project",
        "Workflow.versions",
        "Workflow.version",
        "Step.workflow",
        "Step.screenshot",
        "Step.editedBy",
        "Run.workflow",
        "Run.startedBy",
        "Run.currentStep",
        "Run.healthLogs",
        "Run.version",
        "HealthLog.workflow",
        "HealthLog.run",
        "HealthLog.step",
        "WorkflowVersion.workflow",
        "WorkflowVersion.createdBy",
        "WorkflowVersion.steps",
        "VersionStep.screenshot",
    ]);
    let data = member_reads(
        &server,
        &w,
        "query($id: ID!) { screenshot(id: $id) { workflow { id } } }",
        json!({ "id": w.open_screenshot }),
        "screenshot",
    )
    .await;
    assert_eq!(data["screenshot"]["workflow"]["id"], w.open.as_str());
    let data = member_reads(
        &server,
        &w,
        "{ notifications { nodes { id workflow { id } readBy { id } } } }",
        json!({}),
        "notification nested",
    )
    .await;
    let with_workflow: Vec<&Value> = data["notifications"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["workflow"].is_null())
        .collect();
    assert_eq!(with_workflow.len(), 1);
    assert_eq!(with_workflow[0]["workflow"]["id"], w.open.as_str());
    covered.extend([
        "Notification.workflow",
        "Notification.readBy",
        "Screenshot.workflow",
    ]);

    // A diff of the visible workflow after an edit.
    update_step(
        &server,
        m,
        &w.open_steps[0],
        json!({ "fieldLabel": "changed" }),
    )
    .await;
    let data = member_reads(
        &server,
        &w,
        "query($w: ID!) { workflowVersionDiff(workflowId: $w, from: 2, to: 3) { from { number } to { number } added { stepId } removed { stepId } changed { changedFields from { stepId } to { stepId } } } }",
        json!({ "w": w.open }),
        "diff of the open workflow",
    )
    .await;
    assert_eq!(
        data["workflowVersionDiff"]["changed"][0]["changedFields"],
        json!(["fieldLabel"])
    );
    covered.extend([
        "WorkflowVersionDiff.from",
        "WorkflowVersionDiff.to",
        "WorkflowVersionDiff.added",
        "WorkflowVersionDiff.removed",
        "WorkflowVersionDiff.changed",
        "StepDiff.from",
        "StepDiff.to",
    ]);
    let before = company_snapshot(&server, &w.acme.company_id, &w.acme.admin_token).await;

    // ----- Writes without a share: like missing ids ----------------------------------
    let r = w.restricted.clone();
    let update =
        "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"pwned\" }) { id } }";
    let archive = "mutation($id: ID!) { archiveWorkflow(id: $id) { id } }";
    let duplicate =
        "mutation($id: ID!) { duplicateWorkflow(id: $id) { id visibility createdBy { id } } }";
    let add =
        "mutation($id: ID!) { addStep(workflowId: $id, input: { actionType: \"click\" }) { id } }";
    let edit_step =
        "mutation($id: ID!) { updateStep(id: $id, input: { fieldLabel: \"pwned\" }) { id } }";
    let delete_step = "mutation($id: ID!) { deleteStep(id: $id) }";
    let start = "mutation($id: ID!) { startRun(workflowId: $id) { id } }";
    let restore =
        "mutation($id: ID!) { restoreWorkflowVersion(workflowId: $id, number: 1) { id } }";
    let move_ = "mutation($id: ID!) { moveWorkflow(workflowId: $id, projectId: null) { id } }";
    let publish_ = "mutation($id: ID!) { publishTemplate(workflowId: $id, name: \"x\", visibility: COMPANY) { id } }";
    let visibility =
        "mutation($id: ID!) { setWorkflowVisibility(workflowId: $id, visibility: COMPANY) { id } }";
    let link = "mutation($id: ID!) { createShareLink(workflowId: $id) { token link { id } } }";
    for (query, key) in [
        (update, "Mutation.updateWorkflow"),
        (archive, "Mutation.archiveWorkflow"),
        (duplicate, "Mutation.duplicateWorkflow"),
        (add, "Mutation.addStep"),
        (start, "Mutation.startRun"),
        (restore, "Mutation.restoreWorkflowVersion"),
        (move_, "Mutation.moveWorkflow"),
        (publish_, "Mutation.publishTemplate"),
        (visibility, "Mutation.setWorkflowVisibility"),
        (link, "Mutation.createShareLink"),
    ] {
        like_missing(
            &server,
            &w,
            m,
            query,
            |id| json!({ "id": id }),
            &r,
            "NOT_FOUND",
        )
        .await;
        covered.insert(key);
    }
    covered.insert("CreatedShareLink.link");
    let share_q = "mutation($id: ID!, $u: ID!) { shareWorkflow(workflowId: $id, userId: $u, permission: EDIT) { id } }";
    like_missing(
        &server,
        &w,
        m,
        share_q,
        |id| json!({ "id": id, "u": w.acme.member_id }),
        &r,
        "NOT_FOUND",
    )
    .await;
    let unshare_q =
        "mutation($id: ID!, $u: ID!) { unshareWorkflow(workflowId: $id, userId: $u) { id } }";
    like_missing(
        &server,
        &w,
        m,
        unshare_q,
        |id| json!({ "id": id, "u": w.viewer.id }),
        &r,
        "NOT_FOUND",
    )
    .await;
    covered.extend(["Mutation.shareWorkflow", "Mutation.unshareWorkflow"]);
    like_missing(
        &server,
        &w,
        m,
        "mutation($id: ID!) { revokeShareLink(id: $id) { id } }",
        |id| json!({ "id": id }),
        &w.r_link,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Mutation.revokeShareLink");
    for step in &w.r_steps {
        like_missing(
            &server,
            &w,
            m,
            edit_step,
            |id| json!({ "id": id }),
            step,
            "NOT_FOUND",
        )
        .await;
        like_missing(
            &server,
            &w,
            m,
            delete_step,
            |id| json!({ "id": id }),
            step,
            "NOT_FOUND",
        )
        .await;
    }
    covered.extend(["Mutation.updateStep", "Mutation.deleteStep"]);
    let reorder =
        "mutation($id: ID!, $ids: [ID!]!) { reorderSteps(workflowId: $id, stepIds: $ids) { id } }";
    let r_steps = w.r_steps.clone();
    like_missing(
        &server,
        &w,
        m,
        reorder,
        |id| json!({ "id": id, "ids": r_steps }),
        &r,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Mutation.reorderSteps");
    // R's screenshot, shown by the member's own steps: like a missing screenshot.
    let shot = w.r_screenshot.clone();
    like_missing(&server, &w, m, "mutation($s: ID!) { createWorkflow(input: { name: \"x\", steps: [{ actionType: \"click\", screenshotId: $s }] }) { id } }", |id| json!({ "s": id }), &shot, "NOT_FOUND").await;
    let open_id = w.open.clone();
    like_missing(&server, &w, m, "mutation($w: ID!, $s: ID!) { addStep(workflowId: $w, input: { actionType: \"click\", screenshotId: $s }) { id } }", |id| json!({ "w": open_id, "s": id }), &shot, "NOT_FOUND").await;
    let open_step = w.open_steps[1].clone();
    like_missing(
        &server,
        &w,
        m,
        "mutation($id: ID!, $s: ID) { updateStep(id: $id, input: { screenshotId: $s }) { id } }",
        |id| json!({ "id": open_step, "s": id }),
        &shot,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Mutation.createWorkflow");
    for run in &w.r_runs {
        for (query, key) in [
            (
                "mutation($id: ID!) { finishRun(runId: $id, status: SUCCEEDED) { id } }",
                "Mutation.finishRun",
            ),
            (
                "mutation($id: ID!) { pauseRun(runId: $id) { id } }",
                "Mutation.pauseRun",
            ),
            (
                "mutation($id: ID!) { resumeRun(runId: $id) { id } }",
                "Mutation.resumeRun",
            ),
            (
                "mutation($id: ID!) { cancelRun(runId: $id) { id } }",
                "Mutation.cancelRun",
            ),
        ] {
            like_missing(
                &server,
                &w,
                m,
                query,
                |id| json!({ "id": id }),
                run,
                "NOT_FOUND",
            )
            .await;
            covered.insert(key);
        }
    }
    let report = "mutation($run: ID!, $step: ID!) { reportStep(runId: $run, stepId: $step, outcome: { status: SUCCESS }) { duplicate run { id } healthLog { id } } }";
    let r_step = w.r_steps[0].clone();
    like_missing(
        &server,
        &w,
        m,
        report,
        |id| json!({ "run": id, "step": r_step }),
        &w.r_runs[0],
        "NOT_FOUND",
    )
    .await;
    let open_run = w.open_run.clone();
    let resp = server
        .gql(
            report,
            json!({ "run": open_run, "step": w.r_steps[0] }),
            Some(m),
        )
        .await;
    let unknown = new_id();
    let control = server
        .gql(report, json!({ "run": open_run, "step": unknown }), Some(m))
        .await;
    assert_eq!(
        resp.to_string().replace(&w.r_steps[0], "<ID>"),
        control.to_string().replace(&unknown, "<ID>"),
        "R's step on a visible run"
    );
    covered.insert("Mutation.reportStep");
    // Uploads: R, or R's step named on the member's own workflow.
    let upload_q = "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }";
    for (vars, hidden) in [
        (json!({ "w": r }), r.as_str()),
        (
            json!({ "w": w.open, "s": w.r_steps[0] }),
            w.r_steps[0].as_str(),
        ),
    ] {
        let resp = multipart_request(
            &server,
            &server.client,
            Some(m),
            upload_q,
            vars.clone(),
            png(2, 2, 99),
        )
        .await;
        assert_error_code(&resp, "NOT_FOUND", "uploadScreenshot");
        w.assert_no_leak(&resp, &[hidden], "uploadScreenshot");
    }
    covered.insert("Mutation.uploadScreenshot");
    like_missing(
        &server,
        &w,
        m,
        "mutation($id: ID!) { markNotificationRead(id: $id) { id } }",
        |id| json!({ "id": id }),
        &w.r_note,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Mutation.markNotificationRead");
    // Admin-only mutations: the member's answer is the role's, for any id.
    like_missing(
        &server,
        &w,
        m,
        "mutation($id: ID!) { deleteWorkflow(id: $id) }",
        |id| json!({ "id": id }),
        &r,
        "FORBIDDEN",
    )
    .await;
    like_missing(
        &server,
        &w,
        m,
        "mutation($id: ID!) { deleteNotification(id: $id) }",
        |id| json!({ "id": id }),
        &w.r_note,
        "FORBIDDEN",
    )
    .await;
    covered.extend(["Mutation.deleteWorkflow", "Mutation.deleteNotification"]);

    // Nothing changed (the member's one edit of the open workflow was before the snapshot).
    let after = company_snapshot(&server, &w.acme.company_id, &w.acme.admin_token).await;
    assert_unchanged(&before, &after, "after the member tried every write on R");
    let data = member_reads(
        &server,
        &w,
        "mutation { markAllNotificationsRead }",
        json!({}),
        "markAllNotificationsRead",
    )
    .await;
    assert_eq!(
        data["markAllNotificationsRead"], 2,
        "the open and the company notification"
    );
    let admin_view = ok(&server, &w.acme.admin_token, "query($id: ID!) { notifications(first: 100) { nodes { id read } } workflow(id: $id) { id } }", json!({ "id": r })).await;
    let r_note = admin_view["notifications"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == w.r_note.as_str())
        .unwrap()
        .clone();
    assert_eq!(r_note["read"], false, "R's notification stays unread");
    covered.insert("Mutation.markAllNotificationsRead");

    // ----- A VIEW share: reads yes, writes no ----------------------------------------
    let v = w.viewer.token.as_str();
    let data = ok(&server, v, &format!("query($id: ID!) {{ workflow(id: $id) {{ id viewerPermission viewerCanManage shareLinks {{ id }} shares {{ {SHARE_FIELDS} }} runs {{ totalCount }} steps {{ id }} }} }}"), json!({ "id": r })).await;
    let seen = &data["workflow"];
    assert_eq!(seen["viewerPermission"], "VIEW");
    assert_eq!(seen["viewerCanManage"], false);
    assert_eq!(seen["shareLinks"], json!([]));
    assert_eq!(seen["runs"]["totalCount"], 2);
    let shared_with: BTreeSet<String> = seen["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(&s["user"], "id"))
        .collect();
    assert_eq!(
        shared_with,
        [w.viewer.id.clone(), w.runner.id.clone()]
            .into_iter()
            .collect()
    );
    assert_eq!(seen["shares"][0]["sharedBy"]["id"], w.creator.id.as_str());
    assert_eq!(seen["shares"][0]["workflow"]["id"], r.as_str());
    covered.extend([
        "Workflow.shares",
        "Workflow.shareLinks",
        "WorkflowShare.workflow",
        "WorkflowShare.user",
        "WorkflowShare.sharedBy",
    ]);
    let before = company_snapshot(&server, &w.acme.company_id, &w.acme.admin_token).await;
    for (query, vars, what) in [
        (update, json!({ "id": r }), "updateWorkflow"),
        (archive, json!({ "id": r }), "archiveWorkflow"),
        (add, json!({ "id": r }), "addStep"),
        (edit_step, json!({ "id": w.r_steps[0] }), "updateStep"),
        (delete_step, json!({ "id": w.r_steps[0] }), "deleteStep"),
        (
            reorder,
            json!({ "id": r, "ids": [w.r_steps[1], w.r_steps[0]] }),
            "reorderSteps",
        ),
        (restore, json!({ "id": r }), "restoreWorkflowVersion"),
        (move_, json!({ "id": r }), "moveWorkflow"),
        (publish_, json!({ "id": r }), "publishTemplate"),
        (start, json!({ "id": r }), "startRun"),
        (
            report,
            json!({ "run": w.r_runs[0], "step": w.r_steps[1] }),
            "reportStep",
        ),
        (
            "mutation($id: ID!) { pauseRun(runId: $id) { id } }",
            json!({ "id": w.r_runs[0] }),
            "pauseRun",
        ),
        (
            "mutation($id: ID!) { finishRun(runId: $id, status: SUCCEEDED) { id } }",
            json!({ "id": w.r_runs[0] }),
            "finishRun",
        ),
        (
            "mutation($id: ID!) { cancelRun(runId: $id) { id } }",
            json!({ "id": w.r_runs[0] }),
            "cancelRun",
        ),
        (
            "mutation($id: ID!) { resumeRun(runId: $id) { id } }",
            json!({ "id": w.r_runs[0] }),
            "resumeRun",
        ),
        (visibility, json!({ "id": r }), "setWorkflowVisibility"),
        (
            share_q,
            json!({ "id": r, "u": w.acme.member_id }),
            "shareWorkflow",
        ),
        (
            unshare_q,
            json!({ "id": r, "u": w.runner.id }),
            "unshareWorkflow",
        ),
        (link, json!({ "id": r }), "createShareLink"),
        (
            "mutation($id: ID!) { revokeShareLink(id: $id) { id } }",
            json!({ "id": w.r_link }),
            "revokeShareLink",
        ),
    ] {
        let resp = server.gql(query, vars, Some(v)).await;
        assert_forbidden(&resp, &format!("{what} with only VIEW"));
    }
    let resp = multipart_request(
        &server,
        &server.client,
        Some(v),
        upload_q,
        json!({ "w": r }),
        png(2, 2, 98),
    )
    .await;
    assert_forbidden(&resp, "uploadScreenshot with only VIEW");
    let after = company_snapshot(&server, &w.acme.company_id, &w.acme.admin_token).await;
    assert_unchanged(
        &before,
        &after,
        "after the VIEW member tried every write on R",
    );

    // VIEW may copy; the copy stays restricted (to admins and the copier).
    let data = ok(&server, v, duplicate, json!({ "id": r })).await;
    let copy = &data["duplicateWorkflow"];
    assert_eq!(copy["visibility"], "RESTRICTED");
    assert_eq!(copy["createdBy"]["id"], w.viewer.id.as_str());
    let copy_id = str_field(copy, "id");
    like_missing(
        &server,
        &w,
        m,
        &wf_query,
        |id| json!({ "id": id }),
        &copy_id,
        "NOT_FOUND",
    )
    .await;

    // RUN may run, not edit; the run records the version.
    let rn = w.runner.token.as_str();
    let resp = try_start_run(&server, rn, &r).await;
    assert!(resp["errors"].is_null(), "RUN starts a run: {resp:#}");
    let run = str_field(&resp["data"]["startRun"], "id");
    let resp = try_report_step(&server, rn, &run, &w.r_steps[0], outcome("SUCCESS")).await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    assert_eq!(resp["data"]["reportStep"]["run"]["id"], run.as_str());
    let resp = server.gql(update, json!({ "id": r }), Some(rn)).await;
    assert_forbidden(&resp, "updateWorkflow with RUN");
    covered.extend(["StepReport.run", "StepReport.healthLog"]);

    // The creator manages: links, shares; the admin sees everything.
    let resp = try_create_link(&server, &w.creator.token, &r, None).await;
    assert_eq!(
        resp["data"]["createShareLink"]["link"]["workflow"]["id"],
        r.as_str(),
        "{resp:#}"
    );
    assert_eq!(
        resp["data"]["createShareLink"]["link"]["createdBy"]["id"],
        w.creator.id.as_str()
    );
    covered.extend(["ShareLink.workflow", "ShareLink.createdBy"]);

    // Sharing with the member makes R appear for them, and unsharing takes it away.
    share(&server, &w.creator.token, &r, &w.acme.member_id, "VIEW").await;
    let data = ok(&server, m, &wf_query, json!({ "id": r })).await;
    assert_eq!(data["workflow"]["id"], r.as_str());
    let data = ok(&server, m, list, json!({})).await;
    assert!(ids_of(&data["workflows"]).contains(&r));
    ok(
        &server,
        &w.creator.token,
        unshare_q,
        json!({ "id": r, "u": w.acme.member_id }),
    )
    .await;
    like_missing(
        &server,
        &w,
        m,
        &wf_query,
        |id| json!({ "id": id }),
        &r,
        "NOT_FOUND",
    )
    .await;
    // Made COMPANY-visible again, everyone sees it.
    set_visibility(&server, &w.creator.token, &r, "COMPANY").await;
    let data = ok(&server, m, &wf_query, json!({ "id": r })).await;
    assert_eq!(data["workflow"]["visibility"], "COMPANY");

    // Not workflow-reaching, or the company's rather than R's.
    covered.extend([
        "Mutation.signup",
        "Mutation.joinCompany",
        "Mutation.login",
        "Mutation.rotateInviteToken",
        "Mutation.changeUserRole",
        "Mutation.removeUser",
        "Mutation.renameCompany",
        "Mutation.updateCompanySettings",
        "Mutation.createProject",
        "Mutation.updateProject",
        "Mutation.deleteProject",
        "Mutation.instantiateTemplate",
        "Mutation.rateTemplate",
        "Mutation.unpublishTemplate",
        "Mutation.deleteTemplate",
        "Query.apiKeys",
        "Query.sessions",
        "Query.userSettings",
        "Query.auditLog",
        "Mutation.refreshSession",
        "Mutation.logout",
        "Mutation.logoutEverywhere",
        "Mutation.changePassword",
        "Mutation.updateProfile",
        "Mutation.createApiKey",
        "Mutation.revokeApiKey",
        "Mutation.updateUserSettings",
    ]);

    // Every case this walk owns ran (subscriptions have their own walk).
    let expected: BTreeSet<&str> = ROOT_CASES
        .iter()
        .chain(NESTED_CASES)
        .map(|(k, _)| *k)
        .filter(|k| {
            !SUBSCRIPTION_CASES.contains(k)
                && !QUEUE_CASES.contains(k)
                && !STATISTICS_CASES.contains(k)
        })
        .collect();
    let not_run: Vec<&&str> = expected.difference(&covered).collect();
    let unlisted: Vec<&&str> = covered.difference(&expected).collect();
    assert!(
        not_run.is_empty() && unlisted.is_empty(),
        "visibility cases not run: {not_run:?}; run but not listed: {unlisted:?}"
    );
}

/// The cases the run-queue walk owns.
const QUEUE_CASES: &[&str] = &[
    "Query.schedule",
    "Query.schedules",
    "Query.webhook",
    "Query.webhooks",
    "Query.node",
    "Query.nodes",
    "Mutation.enqueueRun",
    "Mutation.claimRun",
    "Mutation.heartbeatRun",
    "Mutation.retryRun",
    "Mutation.createSchedule",
    "Mutation.updateSchedule",
    "Mutation.pauseSchedule",
    "Mutation.resumeSchedule",
    "Mutation.deleteSchedule",
    "Mutation.createWebhook",
    "Mutation.updateWebhook",
    "Mutation.rotateWebhookSecret",
    "Mutation.deleteWebhook",
    "Mutation.suggestStepText",
    "Subscription.runQueued",
    "Run.retryOf",
    "Run.retries",
    "Run.fromStep",
    "Run.schedule",
    "Run.webhook",
    "Schedule.workflow",
    "Schedule.lastRun",
    "Webhook.workflow",
    "WebhookWithSecret.webhook",
    "StepTextSuggestion.step",
    "RunLease.run",
];

/// The cases the statistics walk owns.
const STATISTICS_CASES: &[&str] = &[
    "Query.members",
    "Query.workflowStats",
    "Query.companyStats",
    "Query.retentionPolicy",
    "Query.retentionPreview",
    "Mutation.updateRetentionPolicy",
    "RunStats.runsByStatus",
    "RunStats.stepsHealed",
    "RunStats.failuresByErrorType",
    "RunStats.duration",
    "RunStats.series",
    "RunStatsBucket.runsByStatus",
    "RunStatsBucket.stepsHealed",
    "RunStatsBucket.duration",
];

const STATS_TALLY: &str = "runs runsByStatus { status count } successRate \
     stepsHealed { deterministic ai total } stepsFailed duration { runs p50Ms p95Ms }";

fn stats_fields() -> String {
    format!(
        "{STATS_TALLY} failuresByErrorType {{ errorType count }} series {{ start {STATS_TALLY} }}"
    )
}

both_backends!(statistics_leave_out_a_restricted_workflow);
/// Statistics are computed in SQL over runs and health logs rather than through the
/// scoped sources, so they get their own walk: a member without a share counts none of
/// R's runs, logs or error types, and R's own statistics are NOT_FOUND like a missing
/// workflow's; the members who see R count it.
async fn statistics_leave_out_a_restricted_workflow(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let m = w.acme.member_token.as_str();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let now = chrono::Utc::now();
    let from = (now - chrono::TimeDelta::days(1)).to_rfc3339();
    let to = (now + chrono::TimeDelta::days(1)).to_rfc3339();
    let range = json!({ "from": from, "to": to, "bucket": "HOUR" });
    let company_q = format!(
        "query($from: DateTime!, $to: DateTime!, $bucket: StatsBucket!) {{ \
           companyStats(from: $from, to: $to, bucket: $bucket) {{ {} }} }}",
        stats_fields()
    );
    let workflow_q = format!(
        "query($id: ID!, $from: DateTime!, $to: DateTime!, $bucket: StatsBucket!) {{ \
           workflowStats(workflowId: $id, from: $from, to: $to, bucket: $bucket) {{ {} }} }}",
        stats_fields()
    );
    let with_id = |id: &str| {
        let mut vars = range.clone();
        vars["id"] = json!(id);
        vars
    };
    let series_runs = |stats: &Value| -> i64 {
        stats["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["runs"].as_i64().unwrap())
            .sum()
    };

    // Those who see R count its two runs, its failed step and its error type.
    for (who, token) in [
        ("the admin", w.acme.admin_token.as_str()),
        ("R's creator", w.creator.token.as_str()),
        ("a VIEW member", w.viewer.token.as_str()),
    ] {
        let stats = ok(&server, token, &company_q, range.clone()).await["companyStats"].clone();
        assert_eq!(stats["runs"], 3, "{who}: {stats:#}");
        assert_eq!(series_runs(&stats), 3, "{who}: {stats:#}");
        assert_eq!(stats["stepsFailed"], 1, "{who}: {stats:#}");
        assert!(
            stats.to_string().contains("R-SECRET-timeout"),
            "{who}: {stats:#}"
        );
        let stats =
            ok(&server, token, &workflow_q, with_id(&w.restricted)).await["workflowStats"].clone();
        assert_eq!(stats["runs"], 2, "{who}: {stats:#}");
    }

    // The member without a share counts only the open workflow's run.
    let stats =
        member_reads(&server, &w, &company_q, range.clone(), "companyStats").await["companyStats"]
            .clone();
    assert_eq!(stats["runs"], 1, "{stats:#}");
    assert_eq!(series_runs(&stats), 1, "{stats:#}");
    assert_eq!(stats["stepsFailed"], 0, "{stats:#}");
    assert_eq!(stats["failuresByErrorType"], json!([]), "{stats:#}");
    let by_status: i64 = stats["runsByStatus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_i64().unwrap())
        .sum();
    assert_eq!(by_status, 1, "{stats:#}");
    assert_eq!(
        stats["duration"]["runs"], 0,
        "R's finished run has no duration here"
    );
    covered.extend([
        "Query.companyStats",
        "RunStats.runsByStatus",
        "RunStats.stepsHealed",
        "RunStats.failuresByErrorType",
        "RunStats.duration",
        "RunStats.series",
        "RunStatsBucket.runsByStatus",
        "RunStatsBucket.stepsHealed",
        "RunStatsBucket.duration",
    ]);
    let stats = member_reads(
        &server,
        &w,
        &workflow_q,
        with_id(&w.open),
        "workflowStats(open)",
    )
    .await["workflowStats"]
        .clone();
    assert_eq!(stats["runs"], 1, "{stats:#}");
    like_missing(
        &server,
        &w,
        m,
        &workflow_q,
        with_id,
        &w.restricted,
        "NOT_FOUND",
    )
    .await;
    covered.insert("Query.workflowStats");

    // Not workflow-reaching.
    member_reads(
        &server,
        &w,
        "{ members(first: 100) { totalCount edges { node { id } } } }",
        json!({}),
        "members",
    )
    .await;
    covered.insert("Query.members");

    // Retention is the admins', who see every workflow.
    let preview =
        "query($p: RetentionPolicyInput) { retentionPreview(policy: $p) { runs healthLogs } }";
    let policy = json!({ "runsKeptPerWorkflow": 1 });
    for (query, vars, what) in [
        (
            "{ retentionPolicy { runMaxAgeDays } }",
            json!({}),
            "retentionPolicy",
        ),
        (preview, json!({ "p": policy }), "retentionPreview"),
        (
            "mutation($p: RetentionPolicyInput!) { updateRetentionPolicy(policy: $p) { runMaxAgeDays } }",
            json!({ "p": policy }),
            "updateRetentionPolicy",
        ),
    ] {
        let resp = server.gql(query, vars, Some(m)).await;
        assert_forbidden(&resp, &format!("{what} as a member"));
        w.assert_no_leak(&resp, &[], what);
    }
    let data = ok(
        &server,
        &w.acme.admin_token,
        preview,
        json!({ "p": policy }),
    )
    .await;
    assert!(data["retentionPreview"]["runs"].is_i64(), "{data:#}");
    covered.extend([
        "Query.retentionPolicy",
        "Query.retentionPreview",
        "Mutation.updateRetentionPolicy",
    ]);

    let expected: BTreeSet<&str> = STATISTICS_CASES.iter().copied().collect();
    assert_eq!(covered, expected, "statistics cases run vs listed");
}

/// The cases the subscription walk owns.
const SUBSCRIPTION_CASES: &[&str] = &[
    "Subscription.runUpdated",
    "Subscription.runsUpdated",
    "Subscription.healthLogRecorded",
    "Subscription.notificationCreated",
    "Subscription.workflowStatusChanged",
    "RunUpdate.run",
    "RunUpdate.healthLog",
    "HealthLogEvent.healthLog",
    "WorkflowStatusChange.workflow",
];

both_backends!(references_from_visible_rows_into_a_restricted_workflow_resolve_to_nothing);
/// Visible rows pointing at R's rows through references no key ties to a workflow (a
/// run's current step, a log's step, a version's screenshot) must not pull R's rows in.
async fn references_from_visible_rows_into_a_restricted_workflow_resolve_to_nothing(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let w = world(&server).await;
    let m = w.acme.member_token.as_str();
    server
        .sql(&format!(
            "UPDATE runs SET current_step_id = {rs} WHERE id = {run};\n\
             UPDATE health_logs SET step_id = {rs} WHERE id = {log};\n\
             UPDATE workflow_step_snapshots SET screenshot_id = {shot} WHERE workflow_id = {open};",
            rs = lit(&w.r_steps[0]),
            run = lit(&w.open_run),
            log = lit(&w.open_log),
            shot = lit(&w.r_screenshot),
            open = lit(&w.open),
        ))
        .await;
    let query = "query($id: ID!, $run: ID!) { \
        workflow(id: $id) { runs { nodes { id currentStep { id fieldLabel } } } \
          healthLogs { nodes { id step { id fieldLabel } } } \
          versions { nodes { steps { stepId screenshot { id hash } } } } } \
        run(id: $run) { currentStep { id } healthLogs { nodes { step { id } } } } \
        healthLogs { nodes { id step { id } } } }";
    let resp = server
        .gql(query, json!({ "id": w.open, "run": w.open_run }), Some(m))
        .await;
    w.assert_no_leak(&resp, &[], "visible rows pointing into R");
    assert!(resp["errors"].is_null(), "{resp:#}");
    let data = &resp["data"];
    assert!(data["workflow"]["runs"]["nodes"][0]["currentStep"].is_null());
    assert!(data["run"]["currentStep"].is_null());
    for log in data["healthLogs"]["nodes"].as_array().unwrap() {
        assert!(log["step"].is_null(), "{resp:#}");
    }
    for version in data["workflow"]["versions"]["nodes"].as_array().unwrap() {
        for step in version["steps"].as_array().unwrap() {
            assert!(step["screenshot"].is_null(), "{resp:#}");
        }
    }
    // The admin, who sees R, sees what they point at.
    let resp = server
        .gql(
            query,
            json!({ "id": w.open, "run": w.open_run }),
            Some(&w.acme.admin_token),
        )
        .await;
    assert_eq!(
        resp["data"]["run"]["currentStep"]["id"],
        w.r_steps[0].as_str(),
        "{resp:#}"
    );

    // A step the member sees that shows R's screenshot (set by someone who sees R) shows
    // it to the member too: a screenshot is visible with the steps showing it.
    let resp = try_update_step(
        &server,
        &w.acme.admin_token,
        &w.open_steps[0],
        json!({ "screenshotId": w.r_screenshot }),
    )
    .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let data = ok(
        &server,
        m,
        "query($id: ID!) { step(id: $id) { screenshot { id } } }",
        json!({ "id": w.open_steps[0] }),
    )
    .await;
    assert_eq!(data["step"]["screenshot"]["id"], w.r_screenshot.as_str());
}

both_backends!(subscriptions_never_carry_a_restricted_workflow_to_a_member_without_a_share);
async fn subscriptions_never_carry_a_restricted_workflow_to_a_member_without_a_share(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let creator = join(&server, &invite, "Creator").await;
    let admin = acme.admin_token.as_str();
    let c = creator.token.as_str();
    let (restricted, r_steps) = active_workflow(&server, c, "R-SECRET flow", 1).await;
    set_visibility(&server, c, &restricted, "RESTRICTED").await;
    let r_run = str_field(&start_run(&server, c, &restricted).await, "id");
    let (open, open_steps) = active_workflow(&server, admin, "Open flow", 1).await;
    let open_run = str_field(&start_run(&server, admin, &open).await, "id");
    let (last, last_steps) = active_workflow(&server, admin, "Last flow", 1).await;
    let last_run = str_field(&start_run(&server, admin, &last).await, "id");

    let ops = ["runs", "logs", "notes", "status", "r-runs"];
    let mut sub = Subscriber::start(
        &server,
        Some(&acme.member_token),
        &[
            ("runs", &runs_updated_query(), json!({})),
            ("logs", &health_log_recorded_query(), json!({})),
            ("notes", &notification_created_query(), json!({})),
            ("status", &workflow_status_changed_query(), json!({})),
            (
                "r-runs",
                &runs_updated_query(),
                json!({ "workflowId": restricted }),
            ),
        ],
    );
    let low_confidence = json!({ "status": "HEALED_AI", "healingConfidence": 0.1 });
    sub.until_live(&ops[..4], async || {
        report_step(
            &server,
            admin,
            &open_run,
            &open_steps[0],
            low_confidence.clone(),
        )
        .await;
        set_status(&server, admin, &open, "ACTIVE").await;
    })
    .await;

    // R's runs report, fail and break R; none of it may reach the member.
    report_step(&server, c, &r_run, &r_steps[0], low_confidence.clone()).await;
    set_status(&server, c, &restricted, "ACTIVE").await;
    finish_run(&server, c, &r_run, "FAILED", Some("R-SECRET")).await;
    // Three failed runs in a row break it (the default rule).
    for _ in 0..2 {
        let run = str_field(&start_run(&server, c, &restricted).await, "id");
        report_step(&server, c, &run, &r_steps[0], outcome("FAILED")).await;
        finish_run(&server, c, &run, "FAILED", None).await;
    }
    assert_eq!(
        common::runs::workflow_health(&server, c, &restricted).await["status"],
        "BROKEN"
    );
    // Then an event of a visible workflow proves the streams flow: all they carried up to
    // it must be the visible workflows'.
    let marker = report_step(
        &server,
        admin,
        &last_run,
        &last_steps[0],
        low_confidence.clone(),
    )
    .await;
    let marker = str_field(&marker["healthLog"], "id");
    let visible = [open.as_str(), last.as_str()];
    for op in &ops[..4] {
        loop {
            let data = sub.expect_data(op).await;
            let text = data.to_string();
            assert!(
                !text.contains(&restricted) && !text.contains("R-SECRET") && !text.contains(&r_run),
                "the member's `{op}` stream carried R: {data:#}"
            );
            let (workflow, done) = match *op {
                "runs" => (
                    &data["runsUpdated"]["run"]["workflow"]["id"],
                    data["runsUpdated"]["healthLog"]["id"] == marker.as_str(),
                ),
                "logs" => (
                    &data["healthLogRecorded"]["healthLog"]["workflow"]["id"],
                    data["healthLogRecorded"]["healthLog"]["id"] == marker.as_str(),
                ),
                "notes" => (
                    &data["notificationCreated"]["workflow"]["id"],
                    data["notificationCreated"]["workflow"]["id"] == last.as_str(),
                ),
                _ => (
                    &data["workflowStatusChanged"]["workflow"]["id"],
                    data["workflowStatusChanged"]["workflow"]["id"] == last.as_str(),
                ),
            };
            assert!(visible.iter().any(|v| workflow == v), "`{op}`: {data:#}");
            if done {
                break;
            }
        }
    }
    sub.expect_quiet("r-runs").await;

    // Replaying from a cursor does not bring R's logs either: a cursor from an admin's
    // stream, then R's logs and a visible one after it.
    let mut admin_sub = Subscriber::start(
        &server,
        Some(&acme.admin_token),
        &[("logs", &health_log_recorded_query(), json!({}))],
    );
    let warm = admin_sub
        .until_live(&["logs"], async || {
            report_step(
                &server,
                admin,
                &open_run,
                &open_steps[0],
                outcome("SUCCESS"),
            )
            .await;
        })
        .await;
    let start_cursor = str_field(&warm[0]["payload"]["data"]["healthLogRecorded"], "cursor");
    admin_sub.disconnect().await;
    set_status(&server, c, &restricted, "ACTIVE").await;
    let r_run2 = str_field(&start_run(&server, c, &restricted).await, "id");
    report_step(&server, c, &r_run2, &r_steps[0], outcome("SUCCESS")).await;
    let after_marker = report_step(
        &server,
        admin,
        &last_run,
        &last_steps[0],
        outcome("SUCCESS"),
    )
    .await;
    let after_marker = str_field(&after_marker["healthLog"], "id");
    sub.subscribe(
        "replay",
        &health_log_recorded_query(),
        json!({ "after": start_cursor }),
    );
    loop {
        let data = sub.expect_data("replay").await;
        let log = &data["healthLogRecorded"]["healthLog"];
        assert_ne!(
            log["workflow"]["id"],
            restricted.as_str(),
            "a replay carried R's log: {data:#}"
        );
        if log["id"] == after_marker.as_str() {
            break;
        }
    }

    // R's run is answered like a missing one.
    sub.subscribe("spy", &run_updated_query(), json!({ "runId": r_run2 }));
    let hidden = sub.expect_error_code("spy", "NOT_FOUND").await;
    sub.subscribe("ghost", &run_updated_query(), json!({ "runId": new_id() }));
    let missing = sub.expect_error_code("ghost", "NOT_FOUND").await;
    assert_eq!(hidden["message"], missing["message"]);

    // Shared with the member, R's events reach them (the instance forgets at once)...
    share(&server, c, &restricted, &acme.member_id, "VIEW").await;
    let shared_log = report_step(&server, c, &r_run2, &r_steps[0], outcome("SUCCESS")).await;
    let shared_log = str_field(&shared_log["healthLog"], "id");
    loop {
        let data = sub.expect_data("logs").await;
        if data["healthLogRecorded"]["healthLog"]["id"] == shared_log.as_str() {
            break;
        }
    }
    // ...and stop once it is unshared.
    ok(
        &server,
        c,
        "mutation($w: ID!, $u: ID!) { unshareWorkflow(workflowId: $w, userId: $u) { id } }",
        json!({ "w": restricted, "u": acme.member_id }),
    )
    .await;
    report_step(&server, c, &r_run2, &r_steps[0], outcome("SUCCESS")).await;
    let marker = report_step(
        &server,
        admin,
        &last_run,
        &last_steps[0],
        outcome("SUCCESS"),
    )
    .await;
    let marker = str_field(&marker["healthLog"], "id");
    loop {
        let data = sub.expect_data("logs").await;
        let log = &data["healthLogRecorded"]["healthLog"];
        assert_ne!(
            log["workflow"]["id"],
            restricted.as_str(),
            "an unshared workflow's log: {data:#}"
        );
        if log["id"] == marker.as_str() {
            break;
        }
    }
    sub.disconnect().await;
    let _ = SUBSCRIPTION_CASES;
}

both_backends!(the_run_queue_respects_restriction);
/// The run queue, schedules, webhooks, AI step text and `node` (issues 13 and 18) with a
/// restricted workflow: a member without a share finds none of R's queue items, claims
/// none of its runs and hears of none; VIEW may not queue, retry, schedule or write text.
async fn the_run_queue_respects_restriction(backend: Backend) {
    let server = TestServer::start(backend).await;
    let w = world(&server).await;
    let m = w.acme.member_token.as_str();
    let c = w.creator.token.as_str();
    let admin = w.acme.admin_token.as_str();
    let v = w.viewer.token.as_str();
    let r = w.restricted.clone();
    let mut covered: BTreeSet<&str> = BTreeSet::new();

    let mut queued = Subscriber::start(
        &server,
        Some(m),
        &[(
            "queued",
            "subscription { runQueued { id workflow { id } } }",
            json!({}),
        )],
    );
    let enqueue =
        "mutation($w: ID!, $p: Int) { enqueueRun(input: { workflowId: $w, priority: $p }) { id } }";
    // Warm up with the open workflow's runs, which the member hears of.
    queued
        .until_live(&["queued"], async || {
            ok(&server, admin, enqueue, json!({ "w": w.open, "p": -1000 })).await;
        })
        .await;
    let r_queued = str_field(
        &ok(&server, c, enqueue, json!({ "w": r, "p": 1000 })).await["enqueueRun"],
        "id",
    );
    let schedule = ok(&server, c, "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false }) { id } }", json!({ "w": r })).await;
    let r_schedule = str_field(&schedule["createSchedule"], "id");
    let hook = ok(
        &server,
        admin,
        "mutation($w: ID!) { createWebhook(workflowId: $w) { webhook { id workflow { id } } } }",
        json!({ "w": r }),
    )
    .await;
    let r_webhook = str_field(&hook["createWebhook"]["webhook"], "id");
    let retry = ok(
        &server,
        c,
        "mutation($r: ID!) { retryRun(runId: $r) { id } }",
        json!({ "r": w.r_runs[1] }),
    )
    .await;
    let r_retry = str_field(&retry["retryRun"], "id");
    let open_queued = str_field(
        &ok(&server, admin, enqueue, json!({ "w": w.open, "p": 0 })).await["enqueueRun"],
        "id",
    );
    // The member hears the open workflow's run, never R's.
    loop {
        let data = queued.expect_data("queued").await;
        assert_ne!(
            data["runQueued"]["workflow"]["id"],
            r.as_str(),
            "runQueued carried R: {data:#}"
        );
        assert!(!data.to_string().contains(&r_queued) && !data.to_string().contains(&r_retry));
        if data["runQueued"]["id"] == open_queued.as_str() {
            break;
        }
    }
    queued.disconnect().await;
    covered.insert("Subscription.runQueued");
    let hidden: Vec<String> = [
        r_queued.clone(),
        r_schedule.clone(),
        r_webhook.clone(),
        r_retry.clone(),
    ]
    .into_iter()
    .collect();
    let no_leak = |resp: &Value, sent: &[&str], context: &str| {
        w.assert_no_leak(resp, sent, context);
        let text = resp.to_string();
        for id in &hidden {
            if !sent.contains(&id.as_str()) {
                assert!(
                    !text.contains(id.as_str()),
                    "{context}: leaks R's {id}: {resp:#}"
                );
            }
        }
    };
    let like_missing_q =
        async |query: &str, vars_for: &dyn Fn(&str) -> Value, id: &str, code: &str| {
            let resp = server.gql(query, vars_for(id), Some(m)).await;
            assert_error_code(&resp, code, query);
            no_leak(&resp, &[id], query);
            let missing = new_id();
            let control = server.gql(query, vars_for(&missing), Some(m)).await;
            assert_eq!(
                resp.to_string().replace(id, "<ID>"),
                control.to_string().replace(&missing, "<ID>"),
                "{query}"
            );
        };
    let by = |id: &str| json!({ "id": id });

    // ----- Lookups -----
    like_missing_q(
        "query($id: ID!) { schedule(id: $id) { id cron } }",
        &by,
        &r_schedule,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "query($id: ID!) { schedules(workflowId: $id) { id } }",
        &by,
        &r,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "query($id: ID!) { webhook(id: $id) { id url } }",
        &by,
        &r_webhook,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "query($id: ID!) { webhooks(workflowId: $id) { id } }",
        &by,
        &r,
        "NOT_FOUND",
    )
    .await;
    covered.extend([
        "Query.schedule",
        "Query.schedules",
        "Query.webhook",
        "Query.webhooks",
    ]);
    for id in [
        r.as_str(),
        &w.r_steps[0],
        &w.r_screenshot,
        &w.r_runs[0],
        &w.r_logs[0],
        &w.r_note,
    ] {
        like_missing_q(
            "query($id: ID!) { node(id: $id) { id __typename } }",
            &by,
            id,
            "NOT_FOUND",
        )
        .await;
    }
    // What hangs off R and came with the lifecycle and the queue: like missing ids too.
    for id in w.r_versions.iter().chain(&w.r_shares).chain([
        &w.r_link,
        &r_schedule,
        &r_webhook,
        &r_queued,
        &r_retry,
    ]) {
        like_missing_q(
            "query($id: ID!) { node(id: $id) { id __typename } }",
            &by,
            id,
            "NOT_FOUND",
        )
        .await;
    }
    // Shared with VIEW, R's versions and shares are there; its public links only for those
    // who manage R (its creator, admins), as `Workflow.shareLinks` shows them.
    let kind = async |token: &str, id: &str| {
        let resp = server
            .gql(
                "query($id: ID!) { node(id: $id) { id __typename } }",
                by(id),
                Some(token),
            )
            .await;
        resp["data"]["node"]["__typename"]
            .as_str()
            .map(str::to_owned)
    };
    for id in w.r_versions.iter().take(2) {
        assert_eq!(kind(v, id).await.as_deref(), Some("WorkflowVersion"));
    }
    assert_eq!(
        kind(v, &w.r_shares[0]).await.as_deref(),
        Some("WorkflowShare")
    );
    assert_eq!(kind(v, &r_schedule).await.as_deref(), Some("Schedule"));
    assert_eq!(
        kind(v, &w.r_link).await,
        None,
        "a VIEW share does not manage R"
    );
    assert_eq!(kind(c, &w.r_link).await.as_deref(), Some("ShareLink"));
    assert_eq!(kind(admin, &w.r_link).await.as_deref(), Some("ShareLink"));
    // The template published from R stays readable, as `template(id:)` shows it.
    let template = ok(
        &server,
        m,
        "query($id: ID!) { node(id: $id) { ... on WorkflowTemplate { id sourceWorkflow { id } sourceVersion } } }",
        by(&w.template),
    )
    .await;
    assert_eq!(
        template["node"],
        json!({ "id": w.template, "sourceWorkflow": null, "sourceVersion": null })
    );
    let nodes = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }";
    let resp = server
        .gql(nodes, json!({ "ids": [r, w.open] }), Some(m))
        .await;
    no_leak(&resp, &[&r], "nodes");
    assert!(resp["data"]["nodes"][0].is_null(), "{resp:#}");
    assert_eq!(resp["data"]["nodes"][1]["id"], w.open.as_str());
    covered.extend(["Query.node", "Query.nodes"]);

    // ----- Writes without a share -----
    like_missing_q(enqueue, &|id| json!({ "w": id }), &r, "NOT_FOUND").await;
    like_missing_q(
        "mutation($id: ID!) { retryRun(runId: $id) { id } }",
        &by,
        &w.r_runs[1],
        "NOT_FOUND",
    )
    .await;
    like_missing_q("mutation($id: ID!) { createSchedule(input: { workflowId: $id, cron: \"0 0 1 1 *\" }) { id } }", &by, &r, "NOT_FOUND").await;
    like_missing_q(
        "mutation($id: ID!) { updateSchedule(id: $id, input: { name: \"x\" }) { id } }",
        &by,
        &r_schedule,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { pauseSchedule(id: $id) { id } }",
        &by,
        &r_schedule,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { resumeSchedule(id: $id) { id } }",
        &by,
        &r_schedule,
        "NOT_FOUND",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { deleteSchedule(id: $id) }",
        &by,
        &r_schedule,
        "NOT_FOUND",
    )
    .await;
    like_missing_q("mutation($id: ID!) { suggestStepText(stepId: $id, fieldLabel: \"x\", aiModel: \"m\") { step { id } } }", &by, &w.r_steps[0], "NOT_FOUND").await;
    like_missing_q(
        "mutation($id: ID!) { createWebhook(workflowId: $id) { webhook { id } } }",
        &by,
        &r,
        "FORBIDDEN",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: false }) { id } }",
        &by,
        &r_webhook,
        "FORBIDDEN",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
        &by,
        &r_webhook,
        "FORBIDDEN",
    )
    .await;
    like_missing_q(
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        &by,
        &r_webhook,
        "FORBIDDEN",
    )
    .await;
    covered.extend([
        "Mutation.enqueueRun",
        "Mutation.retryRun",
        "Mutation.createSchedule",
        "Mutation.updateSchedule",
        "Mutation.pauseSchedule",
        "Mutation.resumeSchedule",
        "Mutation.deleteSchedule",
        "Mutation.suggestStepText",
        "Mutation.createWebhook",
        "Mutation.updateWebhook",
        "Mutation.rotateWebhookSecret",
        "Mutation.deleteWebhook",
    ]);

    // ----- Claims: the member never gets R's queued runs (R's outranks the open one) -----
    let claim = "mutation { claimRun(leaseSeconds: 60) { leaseId run { id workflow { id } } } }";
    let mut claimed_open = None;
    for _ in 0..4 {
        let data = ok(&server, m, claim, json!({})).await;
        if data["claimRun"].is_null() {
            break;
        }
        no_leak(&data, &[], "claimRun");
        assert_eq!(data["claimRun"]["run"]["workflow"]["id"], w.open.as_str());
        claimed_open = Some((
            str_field(&data["claimRun"]["run"], "id"),
            str_field(&data["claimRun"], "leaseId"),
        ));
    }
    let (open_run, open_lease) = claimed_open.expect("the member claimed the open workflow's runs");
    // VIEW may not run R either.
    let data = ok(&server, v, claim, json!({})).await;
    assert!(
        data["claimRun"].is_null(),
        "a VIEW share claimed a run: {data:#}"
    );
    covered.extend(["Mutation.claimRun", "RunLease.run"]);
    // RUN claims R's run; a heartbeat on it by the member is like one on a missing run.
    let data = ok(&server, &w.runner.token, claim, json!({})).await;
    assert_eq!(
        data["claimRun"]["run"]["workflow"]["id"],
        r.as_str(),
        "{data:#}"
    );
    let r_claimed = str_field(&data["claimRun"]["run"], "id");
    let r_lease = str_field(&data["claimRun"], "leaseId");
    let heartbeat =
        "mutation($id: ID!, $l: ID!) { heartbeatRun(runId: $id, leaseId: $l) { leaseId } }";
    like_missing_q(
        heartbeat,
        &|id| json!({ "id": id, "l": r_lease }),
        &r_claimed,
        "NOT_FOUND",
    )
    .await;
    let data = ok(
        &server,
        m,
        heartbeat,
        json!({ "id": open_run, "l": open_lease }),
    )
    .await;
    assert_eq!(data["heartbeatRun"]["leaseId"], open_lease.as_str());
    covered.insert("Mutation.heartbeatRun");

    // ----- VIEW: no queueing, retrying, scheduling or writing text -----
    for (query, vars, what) in [
        (enqueue, json!({ "w": r }), "enqueueRun"),
        (
            "mutation($id: ID!) { retryRun(runId: $id) { id } }",
            json!({ "id": w.r_runs[1] }),
            "retryRun",
        ),
        (
            "mutation($id: ID!) { createSchedule(input: { workflowId: $id, cron: \"0 0 1 1 *\" }) { id } }",
            json!({ "id": r }),
            "createSchedule",
        ),
        (
            "mutation($id: ID!) { pauseSchedule(id: $id) { id } }",
            json!({ "id": r_schedule }),
            "pauseSchedule",
        ),
        (
            "mutation($id: ID!) { resumeSchedule(id: $id) { id } }",
            json!({ "id": r_schedule }),
            "resumeSchedule",
        ),
        (
            "mutation($id: ID!) { updateSchedule(id: $id, input: { name: \"x\" }) { id } }",
            json!({ "id": r_schedule }),
            "updateSchedule",
        ),
        (
            "mutation($id: ID!) { deleteSchedule(id: $id) }",
            json!({ "id": r_schedule }),
            "deleteSchedule",
        ),
        (
            "mutation($id: ID!) { suggestStepText(stepId: $id, fieldLabel: \"x\", aiModel: \"m\") { step { id } } }",
            json!({ "id": w.r_steps[0] }),
            "suggestStepText",
        ),
    ] {
        let resp = server.gql(query, vars, Some(v)).await;
        assert_forbidden(&resp, &format!("{what} with only VIEW"));
    }

    // ----- Nested fields of visible rows pointing into R -----
    let open_schedule = ok(&server, m, "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false }) { id workflow { id } } }", json!({ "w": w.open })).await;
    assert_eq!(
        open_schedule["createSchedule"]["workflow"]["id"],
        w.open.as_str()
    );
    let open_schedule = str_field(&open_schedule["createSchedule"], "id");
    let open_hook = ok(
        &server,
        admin,
        "mutation($w: ID!) { createWebhook(workflowId: $w) { webhook { id workflow { id } } } }",
        json!({ "w": w.open }),
    )
    .await;
    assert_eq!(
        open_hook["createWebhook"]["webhook"]["workflow"]["id"],
        w.open.as_str()
    );
    let text = ok(&server, m, "mutation($id: ID!) { suggestStepText(stepId: $id, instruction: \"do it\", aiModel: \"m\") { step { id instruction } } }", json!({ "id": w.open_steps[1] })).await;
    assert_eq!(
        text["suggestStepText"]["step"]["id"],
        w.open_steps[1].as_str()
    );
    covered.extend([
        "Schedule.workflow",
        "Webhook.workflow",
        "WebhookWithSecret.webhook",
        "StepTextSuggestion.step",
    ]);
    server
        .sql(&format!(
            "UPDATE runs SET retry_of = {rr}, from_step_id = {rs}, trigger_kind = 'schedule', trigger_id = {sch} WHERE id = {run};\n\
             UPDATE runs SET trigger_kind = 'webhook', trigger_id = {hook} WHERE id = {open_queued};\n\
             UPDATE schedules SET last_run_id = {rr} WHERE id = {os};\n\
             UPDATE runs SET retry_of = {run} WHERE id = {r_retry};",
            rr = lit(&w.r_runs[1]),
            rs = lit(&w.r_steps[0]),
            sch = lit(&r_schedule),
            run = lit(&open_run),
            hook = lit(&r_webhook),
            open_queued = lit(&w.open_run),
            os = lit(&open_schedule),
            r_retry = lit(&r_retry),
        ))
        .await;
    let nested = "query($a: ID!, $b: ID!, $s: ID!) { \
        a: run(id: $a) { retryOf { id } fromStep { id } schedule { id } retries { totalCount nodes { id } } } \
        b: run(id: $b) { webhook { id } } schedule(id: $s) { lastRun { id } workflow { id } } }";
    let resp = server
        .gql(
            nested,
            json!({ "a": open_run, "b": w.open_run, "s": open_schedule }),
            Some(m),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    no_leak(&resp, &[], "visible runs and schedules pointing into R");
    assert!(
        resp["data"]["a"]["retryOf"].is_null()
            && resp["data"]["a"]["fromStep"].is_null()
            && resp["data"]["a"]["schedule"].is_null(),
        "{resp:#}"
    );
    assert_eq!(resp["data"]["a"]["retries"]["totalCount"], 0);
    assert!(resp["data"]["b"]["webhook"].is_null(), "{resp:#}");
    assert!(resp["data"]["schedule"]["lastRun"].is_null(), "{resp:#}");
    // The admin sees what they point at.
    let resp = server
        .gql(
            nested,
            json!({ "a": open_run, "b": w.open_run, "s": open_schedule }),
            Some(admin),
        )
        .await;
    assert_eq!(resp["data"]["a"]["retries"]["totalCount"], 1, "{resp:#}");
    assert_eq!(
        resp["data"]["schedule"]["lastRun"]["id"],
        w.r_runs[1].as_str()
    );
    covered.extend([
        "Run.retryOf",
        "Run.retries",
        "Run.fromStep",
        "Run.schedule",
        "Run.webhook",
        "Schedule.lastRun",
    ]);

    let expected: BTreeSet<&str> = QUEUE_CASES.iter().copied().collect();
    let not_run: Vec<&&str> = expected.difference(&covered).collect();
    let unlisted: Vec<&&str> = covered.difference(&expected).collect();
    assert!(
        not_run.is_empty() && unlisted.is_empty(),
        "queue cases not run: {not_run:?}; run but not listed: {unlisted:?}"
    );
}
