//! Tenant isolation: company B, holding valid tokens, tries every query and mutation with
//! company A's ids and must learn nothing and change nothing.
//!
//! The suite is driven by the schema: `every_schema_field_has_an_isolation_case` fails,
//! naming the field, when a root field or an entity-valued nested field is added without
//! a case here, and `company_b_cannot_see_or_touch_company_a` checks that every case in
//! the tables below really ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::blobs::multipart_request;
use common::fixtures::*;
use common::{Backend, PASSWORD, TestServer, assert_error_code, error_code, jwt_claims, str_field};
use serde_json::{Value, json};

/// Every root field, with what the suite checks for it.
const ROOT_CASES: &[(&str, &str)] = &[
    ("Query.me", "B's me is B's own user in B's company"),
    ("Query.company", "B's company is B's, with B's settings"),
    ("Query.users", "B's members only"),
    (
        "Query.workflows",
        "none of A's workflows, whatever the filter (createdBy/search/tag/status)",
    ),
    (
        "Query.workflow",
        "A's workflow ids: null + NOT_FOUND, same as a missing id",
    ),
    (
        "Query.step",
        "A's step ids: null + NOT_FOUND, same as a missing id",
    ),
    (
        "Query.screenshot",
        "A's screenshot (same hash as B's): null + NOT_FOUND",
    ),
    ("Query.run", "A's run id: null + NOT_FOUND"),
    (
        "Query.runs",
        "none of A's runs; workflowId of A's workflow gives nothing",
    ),
    (
        "Query.healthLogs",
        "none of A's logs; workflowId/runId of A's give nothing",
    ),
    (
        "Query.notifications",
        "none of A's notifications, with every filter",
    ),
    (
        "Query.unreadNotificationCount",
        "counts B's unread notifications only",
    ),
    (
        "Mutation.signup",
        "a new company named like A sees nothing of A",
    ),
    (
        "Mutation.joinCompany",
        "joining B makes a member of B who sees nothing of A",
    ),
    (
        "Mutation.login",
        "B's login yields B's company in payload and token",
    ),
    (
        "Mutation.rotateInviteToken",
        "rotates B's token; A's invite token unchanged",
    ),
    (
        "Mutation.createWorkflow",
        "a step with A's screenshotId is NOT_FOUND; new workflows stay in B",
    ),
    (
        "Mutation.updateWorkflow",
        "A's workflow id: NOT_FOUND, nothing changes",
    ),
    ("Mutation.archiveWorkflow", "A's workflow id: NOT_FOUND"),
    (
        "Mutation.deleteWorkflow",
        "A's workflow id (B admin): NOT_FOUND",
    ),
    (
        "Mutation.duplicateWorkflow",
        "A's workflow id: NOT_FOUND, nothing copied",
    ),
    (
        "Mutation.addStep",
        "A's workflow id, or A's screenshotId on B's workflow: NOT_FOUND",
    ),
    (
        "Mutation.updateStep",
        "A's step id, or A's screenshotId on B's step: NOT_FOUND",
    ),
    ("Mutation.deleteStep", "A's step id: NOT_FOUND"),
    (
        "Mutation.reorderSteps",
        "A's workflow: NOT_FOUND; A's step ids in B's list: rejected",
    ),
    (
        "Mutation.uploadScreenshot",
        "A's workflow id, or A's step id on B's workflow: NOT_FOUND, nothing stored",
    ),
    (
        "Mutation.markNotificationRead",
        "A's notification id: NOT_FOUND",
    ),
    (
        "Mutation.markAllNotificationsRead",
        "marks B's only (count) and none of A's",
    ),
    (
        "Mutation.deleteNotification",
        "A's notification id (B admin): NOT_FOUND",
    ),
    (
        "Mutation.changeUserRole",
        "A's user ids (B admin): NOT_FOUND",
    ),
    ("Mutation.removeUser", "A's user ids (B admin): NOT_FOUND"),
    ("Mutation.renameCompany", "renames B only"),
    (
        "Mutation.updateCompanySettings",
        "changes B's settings only",
    ),
    (
        "Mutation.startRun",
        "A's workflow ids: NOT_FOUND, no run started",
    ),
    (
        "Mutation.reportStep",
        "A's run: NOT_FOUND; A's step on B's run: same answer as an unknown step",
    ),
    (
        "Mutation.finishRun",
        "A's run ids: NOT_FOUND, nothing finished",
    ),
    ("Mutation.pauseRun", "A's run ids: NOT_FOUND"),
    ("Mutation.resumeRun", "A's run ids: NOT_FOUND"),
    (
        "Mutation.cancelRun",
        "A's run ids: NOT_FOUND, nothing cancelled",
    ),
    ("Query.apiKeys", "B's keys only, never A's"),
    ("Query.sessions", "B's own sessions only"),
    ("Query.userSettings", "B's own settings, not A's"),
    (
        "Query.auditLog",
        "B's entries only; filters by A's actor/target ids give nothing",
    ),
    (
        "Mutation.createApiKey",
        "the key is B's: it reads B's workflows, A's ids are NOT_FOUND to it",
    ),
    (
        "Mutation.revokeApiKey",
        "A's key id (B admin): NOT_FOUND like a missing id; A's key keeps working",
    ),
    (
        "Mutation.refreshSession",
        "B's refresh token yields B's user and company (a token is a secret, not an id)",
    ),
    (
        "Mutation.logout",
        "ends B's session; A's tokens keep working",
    ),
    (
        "Mutation.logoutEverywhere",
        "ends B's sessions only; A's tokens keep working",
    ),
    (
        "Mutation.changePassword",
        "changes B's password only; A's sessions untouched",
    ),
    ("Mutation.updateProfile", "changes B's own account only"),
    (
        "Mutation.updateUserSettings",
        "changes B's own settings only",
    ),
    // The run queue (issue 13).
    ("Query.schedule", "A's schedule id: null + NOT_FOUND"),
    ("Query.schedules", "A's workflow id: NOT_FOUND"),
    ("Query.webhook", "A's webhook id: null + NOT_FOUND"),
    ("Query.webhooks", "A's workflow id: NOT_FOUND"),
    (
        "Mutation.enqueueRun",
        "A's workflow id: NOT_FOUND, nothing queued",
    ),
    (
        "Mutation.claimRun",
        "A's workflow ids, or none: never A's queued run, which stays queued",
    ),
    ("Mutation.heartbeatRun", "A's run id: NOT_FOUND"),
    (
        "Mutation.retryRun",
        "A's run: NOT_FOUND; A's step as fromStep of B's run: like an unknown step",
    ),
    ("Mutation.createSchedule", "A's workflow id: NOT_FOUND"),
    ("Mutation.updateSchedule", "A's schedule id: NOT_FOUND"),
    ("Mutation.pauseSchedule", "A's schedule id: NOT_FOUND"),
    ("Mutation.resumeSchedule", "A's schedule id: NOT_FOUND"),
    ("Mutation.deleteSchedule", "A's schedule id: NOT_FOUND"),
    (
        "Mutation.createWebhook",
        "A's workflow id (B admin): NOT_FOUND",
    ),
    (
        "Mutation.updateWebhook",
        "A's webhook id (B admin): NOT_FOUND",
    ),
    (
        "Mutation.rotateWebhookSecret",
        "A's webhook id (B admin): NOT_FOUND, A's secret unchanged",
    ),
    (
        "Mutation.deleteWebhook",
        "A's webhook id (B admin): NOT_FOUND",
    ),
    (
        "Mutation.suggestStepText",
        "A's step id: NOT_FOUND, nothing written",
    ),
    (
        "Query.node",
        "every id of A's (every Node type, see NODE_CASES): null + NOT_FOUND, same as a missing id; A's PUBLIC template only as the catalogue shows it",
    ),
    (
        "Query.nodes",
        "A's ids among B's: null + NOT_FOUND at their index, B's resolve",
    ),
    (
        "Query.members",
        "B's members only, whatever the search (A's names and emails find nothing)",
    ),
    (
        "Query.workflowStats",
        "A's workflow ids: null + NOT_FOUND, same as a missing id",
    ),
    (
        "Query.companyStats",
        "counts B's runs and logs only, with A's in the same range",
    ),
    ("Query.retentionPolicy", "B's policy, not A's"),
    (
        "Query.retentionPreview",
        "counts B's rows only, with A's older rows around",
    ),
    (
        "Mutation.updateRetentionPolicy",
        "changes B's policy only; A's stays as A set it",
    ),
];

/// Entity-valued fields below the root, with what the suite checks for them (they are
/// read from B's own data, which also lives next to look-alike data of A; the
/// `references_into_another_company_resolve_to_nothing` test adds dangling references).
const NESTED_CASES: &[(&str, &str)] = &[
    ("User.company", "every user B sees is in company B"),
    (
        "AuthPayload.user",
        "login/joinCompany/signup payload user is the new/B user",
    ),
    (
        "AuthPayload.company",
        "login/joinCompany/signup payload company is B / the new one",
    ),
    (
        "Workflow.createdBy",
        "B's workflow was created by B's admin",
    ),
    ("Workflow.steps", "exactly B's steps"),
    (
        "Workflow.screenshots",
        "exactly B's screenshot, not A's with the same hash",
    ),
    ("Workflow.runs", "exactly B's run, with status filters"),
    (
        "Workflow.healthLogs",
        "exactly B's log; filter by A's workflowId/runId gives nothing",
    ),
    ("Step.workflow", "B's workflow"),
    ("Step.screenshot", "B's screenshot"),
    ("Step.editedBy", "B's member"),
    ("Screenshot.workflow", "B's workflow"),
    ("Run.workflow", "B's workflow"),
    ("Run.startedBy", "B's admin"),
    ("Run.currentStep", "B's step"),
    ("Run.healthLogs", "exactly B's log"),
    ("HealthLog.workflow", "B's workflow"),
    ("HealthLog.run", "B's run"),
    ("HealthLog.step", "B's step"),
    ("Notification.workflow", "B's workflow"),
    ("Notification.readBy", "B's admin"),
    ("StepReport.run", "B's report answers with B's run"),
    (
        "StepReport.healthLog",
        "B's report answers with B's new log",
    ),
    ("ApiKey.createdBy", "B's admin"),
    ("CreatedApiKey.apiKey", "B's new key"),
    // The run queue (issue 13).
    ("RunLease.run", "B's claim answers with B's run"),
    ("Run.retryOf", "B's retry points at B's run"),
    ("Run.retries", "exactly B's retry"),
    ("Run.fromStep", "B's step"),
    ("Run.schedule", "B's schedule"),
    ("Run.webhook", "B's webhook"),
    ("Schedule.workflow", "B's workflow"),
    ("Schedule.lastRun", "B's run"),
    ("Webhook.workflow", "B's workflow"),
    ("WebhookWithSecret.webhook", "B's new webhook"),
    ("StepTextSuggestion.step", "B's step"),
];

/// What `node`/`nodes` cases select: every kind's own fields, so a leak of any shows.
const NODE_FIELDS: &str = "__typename id \
     ... on Company { name settings } ... on User { email name } \
     ... on Workflow { name description tags } ... on Step { fieldLabel instruction selectors } \
     ... on Screenshot { hash } ... on Run { status error } \
     ... on HealthLog { status errorMessage } ... on Notification { title message } \
     ... on ApiKey { name prefix } ... on Session { userAgent clientAddress } \
     ... on AuditEntry { actorLabel targetId summary } ... on Schedule { name cron } \
     ... on Webhook { name url } ... on WorkflowVersion { name tags } \
     ... on Project { name description } ... on WorkflowShare { permission } \
     ... on ShareLink { accessCount } ... on WorkflowTemplate { name description } \
     ... on TemplateScreenshot { contentType width }";

/// Every type implementing `Node`, with the test that asks `node(id:)` for one of A's
/// objects of that type as company B (null + NOT_FOUND like a missing id; for the public
/// template catalogue, what `template(id:)` shows and no more). The schema test fails when
/// a `Node` type is missing here, and each test checks that it met every type it lists.
const NODE_CASES: &[(&str, &str)] = &[
    ("Company", MAIN),
    ("User", MAIN),
    ("Workflow", MAIN),
    ("Step", MAIN),
    ("Screenshot", MAIN),
    ("Run", MAIN),
    ("HealthLog", MAIN),
    ("Notification", MAIN),
    ("ApiKey", MAIN),
    ("Session", MAIN),
    ("AuditEntry", MAIN),
    ("Schedule", MAIN),
    ("Webhook", MAIN),
    ("WorkflowVersion", LIFECYCLE),
    ("Project", LIFECYCLE),
    ("WorkflowShare", LIFECYCLE),
    ("ShareLink", LIFECYCLE),
    ("WorkflowTemplate", LIFECYCLE),
    ("TemplateScreenshot", LIFECYCLE),
];
const MAIN: &str = "company_b_cannot_see_or_touch_company_a";
const LIFECYCLE: &str = "company_b_cannot_see_or_touch_company_a_lifecycle";

/// Asks `node(id:)` for A's `id` as its owner (`owner_token`), which must find it, and as
/// B, which must get null + NOT_FOUND exactly like a missing id; answers the type found.
async fn a_node_like_missing(
    server: &TestServer,
    world: &World,
    owner_token: &str,
    id: &str,
) -> String {
    let owner = server
        .gql(
            "query($id: ID!) { node(id: $id) { __typename id } }",
            json!({ "id": id }),
            Some(owner_token),
        )
        .await;
    assert_eq!(
        owner["data"]["node"]["id"], id,
        "A finds its own {id}: {owner:#}"
    );
    let node_query = format!("query($id: ID!) {{ node(id: $id) {{ {NODE_FIELDS} }} }}");
    like_missing(
        server,
        world,
        &world.b.admin_token,
        &node_query,
        "node",
        |id| json!({ "id": id }),
        id,
    )
    .await;
    str_field(&owner["data"]["node"], "__typename")
}

/// Fails unless `met` holds every `Node` type [`NODE_CASES`] gives to `test`.
#[track_caller]
fn assert_node_types_met(test: &str, met: &BTreeSet<String>) {
    let missing: Vec<&str> = NODE_CASES
        .iter()
        .filter(|(t, owner)| *owner == test && !met.contains(*t))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: node(id:) never tried with A's {missing:?}"
    );
}

/// The root fields of the workflow lifecycle (issue 14), run by
/// `company_b_cannot_see_or_touch_company_a_lifecycle`.
const LIFECYCLE_ROOT_CASES: &[(&str, &str)] = &[
    (
        "Query.workflowVersionDiff",
        "A's workflow: NOT_FOUND like a missing one",
    ),
    ("Query.projects", "B's projects only"),
    ("Query.project", "A's project: NOT_FOUND like a missing one"),
    (
        "Query.templates",
        "B's own and the PUBLIC catalogue; never A's COMPANY template",
    ),
    (
        "Query.template",
        "A's COMPANY template: NOT_FOUND; A's PUBLIC one: no A id in it",
    ),
    (
        "Query.sharedWorkflow",
        "a token is a capability; the view names no A id",
    ),
    (
        "Mutation.restoreWorkflowVersion",
        "A's workflow: NOT_FOUND, nothing restored",
    ),
    ("Mutation.createProject", "a project of B"),
    ("Mutation.updateProject", "A's project: NOT_FOUND"),
    ("Mutation.deleteProject", "A's project: NOT_FOUND"),
    (
        "Mutation.moveWorkflow",
        "A's workflow, or B's into A's project: NOT_FOUND",
    ),
    ("Mutation.publishTemplate", "A's workflow: NOT_FOUND"),
    (
        "Mutation.instantiateTemplate",
        "A's COMPANY template: NOT_FOUND; A's PUBLIC one makes a workflow of B",
    ),
    ("Mutation.rateTemplate", "A's COMPANY template: NOT_FOUND"),
    (
        "Mutation.unpublishTemplate",
        "A's templates, even PUBLIC: NOT_FOUND",
    ),
    (
        "Mutation.deleteTemplate",
        "A's templates, even PUBLIC: NOT_FOUND",
    ),
    ("Mutation.setWorkflowVisibility", "A's workflow: NOT_FOUND"),
    (
        "Mutation.shareWorkflow",
        "A's workflow, or A's member on B's workflow: NOT_FOUND",
    ),
    ("Mutation.unshareWorkflow", "A's workflow: NOT_FOUND"),
    ("Mutation.createShareLink", "A's workflow: NOT_FOUND"),
    ("Mutation.revokeShareLink", "A's link: NOT_FOUND"),
];

/// The nested fields of the workflow lifecycle (issue 14), read from B's own data.
const LIFECYCLE_NESTED_CASES: &[(&str, &str)] = &[
    ("Workflow.project", "B's project"),
    ("Workflow.versions", "B's versions only"),
    ("Workflow.version", "B's version"),
    ("Workflow.shares", "B's share with B's member"),
    ("Workflow.shareLinks", "B's link"),
    ("Run.version", "B's version"),
    ("WorkflowVersion.workflow", "B's workflow"),
    ("WorkflowVersion.createdBy", "B's member"),
    ("WorkflowVersion.steps", "B's steps"),
    ("VersionStep.screenshot", "B's screenshot; naming A's: null"),
    ("WorkflowVersionDiff.from", "B's version"),
    ("WorkflowVersionDiff.to", "B's version"),
    ("WorkflowVersionDiff.added", "B's step"),
    ("WorkflowVersionDiff.removed", "B's step"),
    ("WorkflowVersionDiff.changed", "B's step"),
    ("StepDiff.from", "B's step"),
    ("StepDiff.to", "B's step"),
    ("Project.createdBy", "B's admin"),
    ("Project.workflows", "B's workflows only"),
    ("Project.workflowCountsByStatus", "B's workflows only"),
    (
        "WorkflowTemplate.createdBy",
        "B's admin for B's template; null for A's PUBLIC one",
    ),
    (
        "WorkflowTemplate.sourceWorkflow",
        "B's workflow; null for A's PUBLIC one",
    ),
    ("WorkflowTemplate.steps", "the template's own steps"),
    (
        "WorkflowTemplate.parameters",
        "the template's own parameters",
    ),
    (
        "TemplateStep.screenshot",
        "a copy with its own id, never A's screenshot id",
    ),
    ("WorkflowShare.workflow", "B's workflow"),
    ("WorkflowShare.user", "B's member"),
    ("WorkflowShare.sharedBy", "B's admin"),
    ("ShareLink.workflow", "B's workflow"),
    ("ShareLink.createdBy", "B's admin"),
    ("CreatedShareLink.link", "B's link"),
    ("SharedWorkflow.steps", "B's steps through B's link"),
    ("SharedStep.screenshot", "B's screenshot through B's link"),
];

/// Entity-valued nested fields that need no case of their own, and why.
const NESTED_EXEMPT: &[(&str, &str, &str)] = &[
    (
        "RunStats",
        "runsByStatus",
        "numbers of the RunStats they belong to (Query.workflowStats/companyStats)",
    ),
    ("RunStats", "stepsHealed", "numbers of their RunStats"),
    (
        "RunStats",
        "failuresByErrorType",
        "numbers of their RunStats",
    ),
    ("RunStats", "duration", "numbers of their RunStats"),
    (
        "RunStats",
        "series",
        "numbers of their RunStats, per bucket",
    ),
    (
        "RunStatsBucket",
        "runsByStatus",
        "numbers of their RunStats",
    ),
    ("RunStatsBucket", "stepsHealed", "numbers of their RunStats"),
    ("RunStatsBucket", "duration", "numbers of their RunStats"),
];

/// An introspected type: its kind and its fields as (name, target kind, target name).
type TypeInfo = (String, Vec<(String, String, String)>);

/// The named type under NON_NULL / LIST wrappers.
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

/// Connection plumbing: what it holds comes from the field that returned the connection.
fn is_connection_plumbing(type_name: &str) -> bool {
    type_name.ends_with("Connection") || type_name.ends_with("Edge") || type_name == "PageInfo"
}

// The schema is the same on both backends; one is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schema_field_has_an_isolation_case() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (token, _) = server
        .signup("Acme", "Ada", "ada@acme.test", PASSWORD)
        .await;
    let data = ok(
        &server,
        &token,
        "{ __schema { queryType { name } mutationType { name } \
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
    ];

    let root_cases: BTreeSet<&str> = ROOT_CASES
        .iter()
        .chain(LIFECYCLE_ROOT_CASES)
        .map(|(k, _)| *k)
        .collect();
    let nested_cases: BTreeSet<(&str, &str)> = NESTED_CASES
        .iter()
        .chain(LIFECYCLE_NESTED_CASES)
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
                missing.push(format!(
                    "root field {key} has no isolation case (add one to ROOT_CASES and the test)"
                ));
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
            let entity_valued = matches!(target_kind.as_str(), "OBJECT" | "INTERFACE" | "UNION");
            if !entity_valued {
                // Scalars and enums of an object that is itself only reachable through a
                // covered (tenant-checked) field are isolated with it.
                continue;
            }
            if is_connection_plumbing(&type_name) {
                continue;
            }
            schema_fields.insert(format!("{type_name}.{field}"));
            if !nested_cases.contains(&(type_name.as_str(), field.as_str())) {
                missing.push(format!(
                    "nested field {type_name}.{field} (-> {target}) has no isolation case (add one to NESTED_CASES and the test, or to NESTED_EXEMPT with a reason)"
                ));
            }
        }
    }
    // The tables must not promise cases for fields the schema does not have (the contract
    // names them all, so a missing one is also a missing feature).
    for key in root_cases.iter().map(|k| (*k).to_owned()).chain(
        NESTED_CASES
            .iter()
            .chain(LIFECYCLE_NESTED_CASES)
            .map(|(k, _)| (*k).to_owned()),
    ) {
        if !schema_fields.contains(&key) {
            missing.push(format!(
                "{key} is in the isolation tables but not reachable in the schema"
            ));
        }
    }
    // Every object with an id is a Node, and every Node type has its node(id:) case.
    let node_types: BTreeSet<String> = ok(
        &server,
        &token,
        "{ __type(name: \"Node\") { possibleTypes { name } } }",
        json!({}),
    )
    .await["__type"]["possibleTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| str_field(t, "name"))
        .collect();
    for (name, (kind, fields)) in &types {
        let has_id = fields.iter().any(|(field, target_kind, target)| {
            field == "id" && target_kind == "SCALAR" && target == "ID"
        });
        if kind == "OBJECT" && has_id && !name.starts_with("__") && !node_types.contains(name) {
            missing.push(format!("{name} has an id but does not implement Node"));
        }
    }
    let node_cases: BTreeSet<String> = NODE_CASES.iter().map(|(t, _)| (*t).to_owned()).collect();
    for name in node_types.symmetric_difference(&node_cases) {
        missing.push(format!(
            "Node type {name} is not in NODE_CASES, or NODE_CASES names a type that is not a Node"
        ));
    }
    assert!(
        missing.is_empty(),
        "isolation coverage gaps:\n  {}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Two companies with full data
// ---------------------------------------------------------------------------

struct World {
    a: Team,
    b: Team,
    a_workflows: Vec<String>,
    a_steps: Vec<String>,
    a_screenshots: Vec<String>,
    a_runs: Vec<String>,
    a_logs: Vec<String>,
    a_notes: Vec<String>,
    b_workflow: String,
    b_steps: Vec<String>,
    b_screenshot: String,
    b_run: String,
    b_log: String,
    b_notes: Vec<String>,
    /// A's executor key: (id, secret).
    a_api_key: (String, String),
}

impl World {
    /// Every id of A's (users included).
    fn a_ids(&self) -> Vec<String> {
        let mut ids = vec![
            self.a.company_id.clone(),
            self.a.admin_id.clone(),
            self.a.member_id.clone(),
        ];
        for list in [
            &self.a_workflows,
            &self.a_steps,
            &self.a_screenshots,
            &self.a_runs,
            &self.a_logs,
            &self.a_notes,
            &vec![self.a_api_key.0.clone()],
        ] {
            ids.extend(list.iter().cloned());
        }
        ids
    }

    /// Asserts `resp` mentions nothing of A except the id `sent` in the request.
    #[track_caller]
    fn assert_no_leak(&self, resp: &Value, sent: &[&str], context: &str) {
        let text = resp.to_string();
        for marker in [
            "A-SECRET",
            "a-secret",
            "aardvark",
            "Aardvark",
            "a-only-hash",
        ] {
            assert!(
                !text.contains(marker),
                "{context}: response leaks `{marker}` of company A: {resp:#}"
            );
        }
        for id in self.a_ids() {
            if !sent.contains(&id.as_str()) {
                assert!(
                    !text.contains(&id),
                    "{context}: response leaks A's id {id}: {resp:#}"
                );
            }
        }
    }
}

async fn world(server: &TestServer) -> World {
    let a = team(server, "Aardvark").await;
    let b = team(server, "Bison").await;

    // Company A.
    let a1 = create_workflow(
        server,
        &a.admin_token,
        json!({
            "name": "A-SECRET payroll",
            "description": "A-SECRET description",
            "tags": ["a-secret"],
            "status": "ACTIVE",
            "steps": [
                { "actionType": "type", "fieldLabel": "A-SECRET label", "instruction": "A-SECRET instruction",
                  "aiModel": "gpt-a", "aiConfidence": 0.8, "selectors": { "css": "#a-secret" } },
                step_input("click", "A-SECRET step 2"),
                step_input("click", "A-SECRET step 3"),
            ],
        }),
    )
    .await;
    let a2 = create_workflow(
        server,
        &a.member_token,
        json!({ "name": "A-SECRET onboarding", "steps": step_inputs("A-SECRET onboarding ", 2) }),
    )
    .await;
    let a1_id = str_field(&a1, "id");
    let a2_id = str_field(&a2, "id");
    let a1_steps = step_ids(&a1);
    let a2_steps = step_ids(&a2);
    update_step(
        server,
        &a.member_token,
        &a1_steps[0],
        json!({ "fieldLabel": "A-SECRET edited label" }),
    )
    .await;
    ok(
        server,
        &a.admin_token,
        "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id } }",
        json!({ "s": { "theme": "A-SECRET settings" } }),
    )
    .await;
    let a_shot1 = insert_screenshot(
        server,
        &ScreenshotRow {
            company_id: &a.company_id,
            workflow_id: &a1_id,
            hash: "shared-hash",
        },
    )
    .await;
    let a_shot2 = insert_screenshot(
        server,
        &ScreenshotRow {
            company_id: &a.company_id,
            workflow_id: &a1_id,
            hash: "a-only-hash",
        },
    )
    .await;
    attach_screenshot(server, &a1_steps[0], &a_shot1).await;
    let a_run1 = insert_run(
        server,
        &RunRow {
            company_id: &a.company_id,
            workflow_id: &a1_id,
            started_by: Some(&a.admin_id),
            status: "running",
            current_step_id: Some(&a1_steps[1]),
            error: Some("A-SECRET error"),
            created_at: ts_at(100),
        },
    )
    .await;
    let a_run2 = insert_run(
        server,
        &RunRow {
            company_id: &a.company_id,
            workflow_id: &a2_id,
            started_by: Some(&a.member_id),
            status: "succeeded",
            current_step_id: None,
            error: None,
            created_at: ts_at(110),
        },
    )
    .await;
    let a_log1 = insert_health_log(
        server,
        &HealthLogRow {
            company_id: &a.company_id,
            workflow_id: &a1_id,
            run_id: &a_run1,
            step_id: Some(&a1_steps[0]),
            status: "success",
            error_message: None,
            created_at: ts_at(101),
        },
    )
    .await;
    let a_log2 = insert_health_log(
        server,
        &HealthLogRow {
            company_id: &a.company_id,
            workflow_id: &a1_id,
            run_id: &a_run1,
            step_id: Some(&a1_steps[1]),
            status: "failed",
            error_message: Some("A-SECRET failure"),
            created_at: ts_at(102),
        },
    )
    .await;
    let mut a_notes = Vec::new();
    for (workflow, severity, title, read_by, at) in [
        (Some(a1_id.as_str()), "error", "A-SECRET alert", None, 120),
        (None, "info", "A-SECRET news", None, 121),
        (
            Some(a2_id.as_str()),
            "warning",
            "A-SECRET warning",
            Some(a.admin_id.as_str()),
            122,
        ),
    ] {
        a_notes.push(
            insert_notification(
                server,
                &NotificationRow {
                    company_id: &a.company_id,
                    workflow_id: workflow,
                    severity,
                    title,
                    read_by,
                    created_at: ts_at(at),
                },
            )
            .await,
        );
    }

    // Company B.
    let b1 = create_workflow(
        server,
        &b.admin_token,
        json!({
            "name": "Bison invoices",
            "steps": [
                { "actionType": "type", "fieldLabel": "Bison label", "aiModel": "gpt-b", "selectors": { "css": "#b" } },
                step_input("click", "Bison step 2"),
            ],
        }),
    )
    .await;
    let b_workflow = str_field(&b1, "id");
    let b_steps = step_ids(&b1);
    update_step(
        server,
        &b.member_token,
        &b_steps[0],
        json!({ "fieldLabel": "Bison edited label" }),
    )
    .await;
    let b_screenshot = insert_screenshot(
        server,
        &ScreenshotRow {
            company_id: &b.company_id,
            workflow_id: &b_workflow,
            hash: "shared-hash",
        },
    )
    .await;
    attach_screenshot(server, &b_steps[0], &b_screenshot).await;
    let b_run = insert_run(
        server,
        &RunRow {
            company_id: &b.company_id,
            workflow_id: &b_workflow,
            started_by: Some(&b.admin_id),
            status: "running",
            current_step_id: Some(&b_steps[1]),
            error: None,
            created_at: ts_at(200),
        },
    )
    .await;
    let b_log = insert_health_log(
        server,
        &HealthLogRow {
            company_id: &b.company_id,
            workflow_id: &b_workflow,
            run_id: &b_run,
            step_id: Some(&b_steps[0]),
            status: "success",
            error_message: None,
            created_at: ts_at(201),
        },
    )
    .await;
    let b_note1 = insert_notification(
        server,
        &NotificationRow {
            company_id: &b.company_id,
            workflow_id: Some(&b_workflow),
            severity: "error",
            title: "Bison alert",
            read_by: None,
            created_at: ts_at(220),
        },
    )
    .await;
    let b_note2 = insert_notification(
        server,
        &NotificationRow {
            company_id: &b.company_id,
            workflow_id: None,
            severity: "info",
            title: "Bison news",
            read_by: Some(&b.admin_id),
            created_at: ts_at(221),
        },
    )
    .await;

    // A's executor key and A's own settings.
    let key = ok(
        server,
        &a.admin_token,
        "mutation { createApiKey(name: \"A-SECRET runner\") { secret apiKey { id } } }",
        json!({}),
    )
    .await;
    let a_api_key = (
        str_field(&key["createApiKey"]["apiKey"], "id"),
        str_field(&key["createApiKey"], "secret"),
    );
    ok(
        server,
        &a.admin_token,
        "mutation { updateUserSettings(input: { timeZone: \"Asia/Tokyo\", locale: \"ja\" }) { timeZone } }",
        json!({}),
    )
    .await;

    World {
        a_api_key,
        a_workflows: vec![a1_id, a2_id],
        a_steps: a1_steps.into_iter().chain(a2_steps).collect(),
        a_screenshots: vec![a_shot1, a_shot2],
        a_runs: vec![a_run1, a_run2],
        a_logs: vec![a_log1, a_log2],
        a_notes,
        b_workflow,
        b_steps,
        b_screenshot,
        b_run,
        b_log,
        b_notes: vec![b_note1, b_note2],
        a,
        b,
    }
}

/// Runs `query` with A's `foreign` id and with a never-issued id; both must fail with
/// NOT_FOUND, give a null `field`, and look exactly alike apart from the id sent.
async fn like_missing(
    server: &TestServer,
    world: &World,
    token: &str,
    query: &str,
    field: &str,
    vars_for: impl Fn(&str) -> Value,
    foreign: &str,
) {
    let context = format!("{field} with A's id {foreign}");
    let resp = server.gql(query, vars_for(foreign), Some(token)).await;
    assert_error_code(&resp, "NOT_FOUND", &context);
    assert!(
        resp["data"].is_null() || resp["data"][field].is_null(),
        "{context}: {resp:#}"
    );
    world.assert_no_leak(&resp, &[foreign], &context);
    let missing = new_id();
    let control = server.gql(query, vars_for(&missing), Some(token)).await;
    assert_eq!(
        resp.to_string().replace(foreign, "<ID>"),
        control.to_string().replace(&missing, "<ID>"),
        "{context}: another company's id must be answered exactly like a missing one"
    );
}

/// A list query B runs: it must succeed (or, when it names A's ids in a filter, may be
/// NOT_FOUND) and mention nothing of A. Returns the response.
async fn b_list(
    server: &TestServer,
    world: &World,
    query: &str,
    vars: Value,
    context: &str,
    filter_sent: &[&str],
) -> Value {
    let resp = server.gql(query, vars, Some(&world.b.admin_token)).await;
    if filter_sent.is_empty() {
        assert!(resp["errors"].is_null(), "{context}: {resp:#}");
    } else if let Some(code) = error_code(&resp) {
        assert_eq!(
            code, "NOT_FOUND",
            "{context}: a filter on A's id may only be NOT_FOUND: {resp:#}"
        );
    }
    world.assert_no_leak(&resp, filter_sent, context);
    resp
}

async fn count_workflows(server: &TestServer, company_id: &str) -> i64 {
    server
        .sql_count(&format!("workflows WHERE company_id = {}", lit(company_id)))
        .await
}

fn ids_at(conn: &Value) -> BTreeSet<String> {
    if conn.is_null() {
        return BTreeSet::new();
    }
    edge_ids(conn).into_iter().collect()
}

fn ids_at_nodes(conn: &Value) -> BTreeSet<String> {
    conn["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| str_field(n, "id"))
        .collect()
}

fn set_of(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

both_backends!(company_b_cannot_see_or_touch_company_a);
async fn company_b_cannot_see_or_touch_company_a(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let q = queue_world(&server, &w).await;
    // A keeps everything for ten years; B's policy and preview must not see it.
    ok(
        &server,
        &w.a.admin_token,
        "mutation { updateRetentionPolicy(policy: { runMaxAgeDays: 3650, notificationMaxAgeDays: 3650 }) { runMaxAgeDays } }",
        json!({}),
    )
    .await;
    let before = company_snapshot(&server, &w.a.company_id, &w.a.admin_token).await;
    assert_eq!(
        before.api["workflows"]["totalCount"], 2,
        "precondition: A's data is visible to A"
    );
    assert_eq!(before.api["unreadNotificationCount"], 2, "precondition");
    let stored: Vec<(&str, usize)> = before
        .db
        .iter()
        .map(|(t, rows)| (t.as_str(), rows.len()))
        .collect();
    assert_eq!(
        stored,
        [
            ("api_keys", 1),
            ("audit_log", 5),
            ("companies", 1),
            ("health_logs", 2),
            ("notifications", 3),
            ("projects", 0),
            ("refresh_tokens", 2),
            ("retention_policies", 1),
            ("runs", 3),
            ("schedules", 1),
            ("screenshots", 2),
            ("sessions", 2),
            ("steps", 5),
            ("template_screenshots", 0),
            ("user_settings", 1),
            ("users", 2),
            ("webhooks", 1),
            ("workflow_share_links", 0),
            ("workflow_shares", 0),
            ("workflow_templates", 0),
            ("workflow_versions", 3),
            ("workflows", 2)
        ],
        "precondition: the snapshot holds all of A's stored rows"
    );
    let tb = w.b.admin_token.clone();
    let tb = tb.as_str();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let (a1, a2) = (w.a_workflows[0].clone(), w.a_workflows[1].clone());

    // ----- Queries -----------------------------------------------------------------

    let resp = b_list(
        &server,
        &w,
        "{ me { id email company { id name } } }",
        json!({}),
        "me",
        &[],
    )
    .await;
    assert_eq!(resp["data"]["me"]["id"], w.b.admin_id.as_str());
    assert_eq!(resp["data"]["me"]["company"]["id"], w.b.company_id.as_str());
    covered.extend(["Query.me", "User.company"]);

    let resp = b_list(
        &server,
        &w,
        "{ company { id name inviteToken settings } }",
        json!({}),
        "company",
        &[],
    )
    .await;
    assert_eq!(resp["data"]["company"]["id"], w.b.company_id.as_str());
    assert_eq!(resp["data"]["company"]["name"], "Bison");
    assert_eq!(resp["data"]["company"]["settings"], json!({}));
    covered.insert("Query.company");

    let resp = b_list(
        &server,
        &w,
        "{ users { id company { id } } }",
        json!({}),
        "users",
        &[],
    )
    .await;
    let users: BTreeSet<String> = resp["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| str_field(u, "id"))
        .collect();
    assert_eq!(users, set_of(&[&w.b.admin_id, &w.b.member_id]));
    for u in resp["data"]["users"].as_array().unwrap() {
        assert_eq!(u["company"]["id"], w.b.company_id.as_str());
    }
    covered.insert("Query.users");

    let list = "query($f: WorkflowFilter) { workflows(filter: $f, first: 100) { totalCount edges { node { id name } } } }";
    for (what, filter, sent) in [
        ("no filter", json!(null), vec![]),
        (
            "createdBy A's admin",
            json!({ "createdBy": w.a.admin_id }),
            vec![w.a.admin_id.as_str()],
        ),
        (
            "createdBy A's member",
            json!({ "createdBy": w.a.member_id }),
            vec![w.a.member_id.as_str()],
        ),
        ("search A's name", json!({ "search": "A-SECRET" }), vec![]),
        ("search 'payroll'", json!({ "search": "payroll" }), vec![]),
        ("A's tag", json!({ "tag": "a-secret" }), vec![]),
        (
            "every status",
            json!({ "status": ["DRAFT", "PROCESSING", "ACTIVE", "NEEDS_REVIEW", "BROKEN", "ARCHIVED"] }),
            vec![],
        ),
    ] {
        let resp = b_list(
            &server,
            &w,
            list,
            json!({ "f": filter }),
            &format!("workflows, {what}"),
            &sent,
        )
        .await;
        let ids = ids_at(&resp["data"]["workflows"]);
        assert!(
            ids.is_subset(&set_of(&[&w.b_workflow])),
            "workflows ({what}) lists rows that are not B's: {resp:#}"
        );
        if !resp["data"]["workflows"].is_null() {
            assert_eq!(
                resp["data"]["workflows"]["totalCount"].as_u64(),
                Some(ids.len() as u64),
                "totalCount ({what}) counts other rows: {resp:#}"
            );
        }
    }
    let resp = b_list(&server, &w, list, json!({}), "workflows", &[]).await;
    assert_eq!(
        ids_at(&resp["data"]["workflows"]),
        set_of(&[&w.b_workflow]),
        "B sees its own workflow"
    );
    covered.insert("Query.workflows");

    let by_id = |field: &str, fields: &str| {
        format!("query($id: ID!) {{ {field}(id: $id) {{ {fields} }} }}")
    };
    let wf_query = by_id("workflow", &workflow_fields());
    for id in &w.a_workflows {
        like_missing(
            &server,
            &w,
            tb,
            &wf_query,
            "workflow",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Query.workflow");
    let step_query = by_id("step", STEP_FIELDS);
    for id in &w.a_steps {
        like_missing(
            &server,
            &w,
            tb,
            &step_query,
            "step",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Query.step");
    let shot_query = by_id("screenshot", SCREENSHOT_FIELDS);
    for id in &w.a_screenshots {
        like_missing(
            &server,
            &w,
            tb,
            &shot_query,
            "screenshot",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    let own = ok(&server, tb, &shot_query, json!({ "id": w.b_screenshot })).await;
    assert_eq!(
        own["screenshot"]["id"],
        w.b_screenshot.as_str(),
        "B's own screenshot with the shared hash"
    );
    assert_eq!(own["screenshot"]["workflow"]["id"], w.b_workflow.as_str());
    covered.extend(["Query.screenshot", "Screenshot.workflow"]);
    let run_query = by_id(
        "run",
        &format!(
            "{RUN_FIELDS} healthLogs(first: 100) {{ edges {{ node {{ {HEALTH_LOG_FIELDS} }} }} }}"
        ),
    );
    for id in &w.a_runs {
        like_missing(
            &server,
            &w,
            tb,
            &run_query,
            "run",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Query.run");

    let runs = format!(
        "query($wf: ID, $st: [RunStatus!]) {{ runs(workflowId: $wf, status: $st, first: 100) {{ totalCount edges {{ node {{ {RUN_FIELDS} }} }} }} }}"
    );
    let resp = b_list(&server, &w, &runs, json!({}), "runs", &[]).await;
    assert_eq!(ids_at(&resp["data"]["runs"]), set_of(&[&w.b_run]));
    assert_eq!(resp["data"]["runs"]["totalCount"], 1);
    for a_wf in &w.a_workflows {
        let resp = b_list(
            &server,
            &w,
            &runs,
            json!({ "wf": a_wf }),
            "runs(workflowId: A's)",
            &[a_wf.as_str()],
        )
        .await;
        assert!(ids_at(&resp["data"]["runs"]).is_empty(), "{resp:#}");
    }
    let resp = b_list(
        &server,
        &w,
        &runs,
        json!({ "st": ["RUNNING", "SUCCEEDED"] }),
        "runs(status)",
        &[],
    )
    .await;
    assert_eq!(ids_at(&resp["data"]["runs"]), set_of(&[&w.b_run]));
    covered.insert("Query.runs");

    let logs = format!(
        "query($f: HealthLogFilter) {{ healthLogs(filter: $f, first: 100) {{ totalCount edges {{ node {{ {HEALTH_LOG_FIELDS} }} }} }} }}"
    );
    let resp = b_list(&server, &w, &logs, json!({}), "healthLogs", &[]).await;
    assert_eq!(ids_at(&resp["data"]["healthLogs"]), set_of(&[&w.b_log]));
    assert_eq!(resp["data"]["healthLogs"]["totalCount"], 1);
    for (what, filter, sent) in [
        (
            "workflowId of A's",
            json!({ "workflowId": a1 }),
            a1.as_str(),
        ),
        (
            "runId of A's",
            json!({ "runId": w.a_runs[0] }),
            w.a_runs[0].as_str(),
        ),
    ] {
        let resp = b_list(
            &server,
            &w,
            &logs,
            json!({ "f": filter }),
            &format!("healthLogs({what})"),
            &[sent],
        )
        .await;
        assert!(ids_at(&resp["data"]["healthLogs"]).is_empty(), "{resp:#}");
    }
    let resp = b_list(
        &server,
        &w,
        &logs,
        json!({ "f": { "status": ["FAILED", "SUCCESS"], "since": "2000-01-01T00:00:00Z" } }),
        "healthLogs(status)",
        &[],
    )
    .await;
    assert_eq!(ids_at(&resp["data"]["healthLogs"]), set_of(&[&w.b_log]));
    covered.insert("Query.healthLogs");

    let notes = format!(
        "query($u: Boolean, $s: NotificationSeverity) {{ notifications(unreadOnly: $u, severity: $s, first: 100) {{ totalCount edges {{ node {{ {NOTIFICATION_FIELDS} }} }} }} }}"
    );
    for (what, vars, expected) in [
        ("all", json!({}), set_of(&[&w.b_notes[0], &w.b_notes[1]])),
        ("unreadOnly", json!({ "u": true }), set_of(&[&w.b_notes[0]])),
        ("ERROR", json!({ "s": "ERROR" }), set_of(&[&w.b_notes[0]])),
        ("WARNING", json!({ "s": "WARNING" }), set_of(&[])),
    ] {
        let resp = b_list(
            &server,
            &w,
            &notes,
            vars,
            &format!("notifications {what}"),
            &[],
        )
        .await;
        assert_eq!(
            ids_at(&resp["data"]["notifications"]),
            expected,
            "notifications {what}"
        );
        assert_eq!(
            resp["data"]["notifications"]["totalCount"].as_u64(),
            Some(expected.len() as u64)
        );
    }
    covered.insert("Query.notifications");
    let resp = b_list(
        &server,
        &w,
        "{ unreadNotificationCount }",
        json!({}),
        "unreadNotificationCount",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["unreadNotificationCount"], 1,
        "B has one unread notification; A's two must not count"
    );
    covered.insert("Query.unreadNotificationCount");

    // ----- Filters, statistics and retention (issue 15) -------------------------------

    let filtered_runs = format!(
        "query($f: RunFilter) {{ runs(filter: $f, order: OLDEST, first: 100) {{ totalCount edges {{ node {{ {RUN_FIELDS} }} }} }} }}"
    );
    for (what, filter, sent) in [
        (
            "startedBy A's admin",
            json!({ "startedBy": w.a.admin_id }),
            w.a.admin_id.as_str(),
        ),
        (
            "startedBy A's member",
            json!({ "startedBy": w.a.member_id }),
            w.a.member_id.as_str(),
        ),
        (
            "filter.workflowId of A's",
            json!({ "workflowId": a1 }),
            a1.as_str(),
        ),
    ] {
        let resp = b_list(
            &server,
            &w,
            &filtered_runs,
            json!({ "f": filter }),
            &format!("runs({what})"),
            &[sent],
        )
        .await;
        assert!(ids_at(&resp["data"]["runs"]).is_empty(), "{resp:#}");
    }
    let resp = b_list(
        &server,
        &w,
        &filtered_runs,
        json!({ "f": { "startedAfter": "2000-01-01T00:00:00Z", "status": ["RUNNING", "SUCCEEDED"] } }),
        "runs(startedAfter)",
        &[],
    )
    .await;
    assert_eq!(ids_at(&resp["data"]["runs"]), set_of(&[&w.b_run]));
    let notes_of = format!(
        "query($w: ID) {{ notifications(workflowId: $w, last: 100) {{ totalCount edges {{ node {{ {NOTIFICATION_FIELDS} }} }} }} }}"
    );
    for a_wf in &w.a_workflows {
        let resp = b_list(
            &server,
            &w,
            &notes_of,
            json!({ "w": a_wf }),
            "notifications(workflowId: A's)",
            &[a_wf.as_str()],
        )
        .await;
        assert!(
            ids_at(&resp["data"]["notifications"]).is_empty(),
            "{resp:#}"
        );
    }
    let resp = b_list(
        &server,
        &w,
        &notes_of,
        json!({ "w": w.b_workflow }),
        "notifications(workflowId: B's)",
        &[],
    )
    .await;
    assert_eq!(
        ids_at(&resp["data"]["notifications"]),
        set_of(&[&w.b_notes[0]])
    );
    for step in &w.a_steps {
        let resp = b_list(
            &server,
            &w,
            &logs,
            json!({ "f": { "stepId": step } }),
            "healthLogs(stepId: A's)",
            &[step.as_str()],
        )
        .await;
        assert!(ids_at(&resp["data"]["healthLogs"]).is_empty(), "{resp:#}");
    }

    let members = "query($s: String) { members(search: $s, first: 100) { totalCount edges { node { id email company { id } } } } }";
    for search in [json!(null), json!("aardvark"), json!("admin"), json!("@")] {
        let resp = b_list(
            &server,
            &w,
            members,
            json!({ "s": search }),
            &format!("members({search})"),
            &[],
        )
        .await;
        let ids = ids_at(&resp["data"]["members"]);
        assert!(
            ids.is_subset(&set_of(&[&w.b.admin_id, &w.b.member_id])),
            "members({search}) lists someone not in B: {resp:#}"
        );
        assert_eq!(
            resp["data"]["members"]["totalCount"].as_u64(),
            Some(ids.len() as u64)
        );
    }
    covered.insert("Query.members");

    let stats_fields = "runs runsByStatus { status count } successRate stepsHealed { deterministic ai total }          stepsFailed failuresByErrorType { errorType count } duration { runs p50Ms p95Ms }          series { start runs stepsFailed }";
    let workflow_stats = format!(
        "query($id: ID!) {{ workflowStats(workflowId: $id, from: \"2025-12-31T00:00:00Z\",            to: \"2026-01-02T00:00:00Z\", bucket: HOUR) {{ {stats_fields} }} }}"
    );
    for id in &w.a_workflows {
        like_missing(
            &server,
            &w,
            tb,
            &workflow_stats,
            "workflowStats",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Query.workflowStats");
    let resp = b_list(
        &server,
        &w,
        &format!(
            "{{ companyStats(from: \"2025-12-31T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") {{ {stats_fields} }} }}"
        ),
        json!({}),
        "companyStats",
        &[],
    )
    .await;
    let stats = &resp["data"]["companyStats"];
    assert_eq!(stats["runs"], 1, "only B's one run: {stats:#}");
    assert_eq!(
        stats["stepsFailed"], 0,
        "A's failed step must not count: {stats:#}"
    );
    assert_eq!(stats["failuresByErrorType"], json!([]), "{stats:#}");
    assert_eq!(
        stats["duration"]["runs"], 0,
        "A's succeeded run must not count: {stats:#}"
    );
    covered.insert("Query.companyStats");

    let resp = b_list(
        &server,
        &w,
        "{ retentionPolicy { runMaxAgeDays runsKeptPerWorkflow notificationMaxAgeDays updatedAt } }",
        json!({}),
        "retentionPolicy",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["retentionPolicy"],
        json!({ "runMaxAgeDays": null, "runsKeptPerWorkflow": null, "notificationMaxAgeDays": null, "updatedAt": null }),
        "B has no policy of its own; A's must not show"
    );
    covered.insert("Query.retentionPolicy");
    let resp = b_list(
        &server,
        &w,
        "{ retentionPreview(policy: { runMaxAgeDays: 1, runsKeptPerWorkflow: 1, notificationMaxAgeDays: 1 }) { runs healthLogs notifications } }",
        json!({}),
        "retentionPreview",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["retentionPreview"],
        json!({ "runs": 0, "healthLogs": 0, "notifications": 2 }),
        "B's running run stays, B's two old notifications go; A's old finished run must not count"
    );
    covered.insert("Query.retentionPreview");

    // ----- Nested fields of B's own data, next to A's look-alikes ----------------------

    let nested = format!(
        "query($id: ID!, $aw: ID, $ar: ID) {{ workflow(id: $id) {{ {wf} \
           screenshots {{ {SCREENSHOT_FIELDS} }} \
           runs(first: 100) {{ totalCount edges {{ node {{ {RUN_FIELDS} healthLogs(first: 100) {{ totalCount edges {{ node {{ {HEALTH_LOG_FIELDS} }} }} }} }} }} }} \
           succeeded: runs(status: [SUCCEEDED], first: 100) {{ totalCount edges {{ node {{ id }} }} }} \
           healthLogs(first: 100) {{ totalCount edges {{ node {{ {HEALTH_LOG_FIELDS} }} }} }} \
           byAWorkflow: healthLogs(filter: {{ workflowId: $aw }}, first: 100) {{ totalCount edges {{ node {{ id }} }} }} \
           byARun: healthLogs(filter: {{ runId: $ar }}, first: 100) {{ totalCount edges {{ node {{ id }} }} }} }} }}",
        wf = workflow_fields()
    );
    let resp = server
        .gql(
            &nested,
            json!({ "id": w.b_workflow, "aw": a1, "ar": w.a_runs[0] }),
            Some(tb),
        )
        .await;
    if let Some(code) = error_code(&resp) {
        // Only the sub-lists filtered by A's ids may complain, and only as NOT_FOUND.
        assert_eq!(code, "NOT_FOUND", "{resp:#}");
    }
    w.assert_no_leak(
        &resp,
        &[a1.as_str(), w.a_runs[0].as_str()],
        "B's workflow with every nested field",
    );
    let wf = &resp["data"]["workflow"];
    assert_eq!(wf["id"], w.b_workflow.as_str(), "{resp:#}");
    assert_eq!(wf["createdBy"]["id"], w.b.admin_id.as_str());
    assert_eq!(step_ids(wf), w.b_steps);
    for s in wf["steps"].as_array().unwrap() {
        assert_eq!(s["workflow"]["id"], w.b_workflow.as_str());
    }
    assert_eq!(wf["steps"][0]["screenshot"]["id"], w.b_screenshot.as_str());
    assert_eq!(wf["steps"][0]["editedBy"]["id"], w.b.member_id.as_str());
    let shots: Vec<String> = wf["screenshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "id"))
        .collect();
    assert_eq!(shots, vec![w.b_screenshot.clone()], "Workflow.screenshots");
    assert_eq!(ids_at(&wf["runs"]), set_of(&[&w.b_run]));
    assert!(
        ids_at(&wf["succeeded"]).is_empty(),
        "A's SUCCEEDED run must not show under B's workflow: {resp:#}"
    );
    let run = &wf["runs"]["edges"][0]["node"];
    assert_eq!(run["workflow"]["id"], w.b_workflow.as_str());
    assert_eq!(run["startedBy"]["id"], w.b.admin_id.as_str());
    assert_eq!(run["currentStep"]["id"], w.b_steps[1].as_str());
    assert_eq!(ids_at(&run["healthLogs"]), set_of(&[&w.b_log]));
    assert_eq!(ids_at(&wf["healthLogs"]), set_of(&[&w.b_log]));
    // Under B's workflow, a filter naming A's workflow or run may be ignored in favour of
    // the parent (the contract does not say), but it must never bring A's logs in.
    assert!(
        ids_at(&wf["byAWorkflow"]).is_subset(&set_of(&[&w.b_log]))
            && ids_at(&wf["byARun"]).is_subset(&set_of(&[&w.b_log])),
        "{resp:#}"
    );
    let log = &wf["healthLogs"]["edges"][0]["node"];
    assert_eq!(log["workflow"]["id"], w.b_workflow.as_str());
    assert_eq!(log["run"]["id"], w.b_run.as_str());
    assert_eq!(log["step"]["id"], w.b_steps[0].as_str());
    covered.extend([
        "Workflow.createdBy",
        "Workflow.steps",
        "Workflow.screenshots",
        "Workflow.runs",
        "Workflow.healthLogs",
        "Step.workflow",
        "Step.screenshot",
        "Step.editedBy",
        "Run.workflow",
        "Run.startedBy",
        "Run.currentStep",
        "Run.healthLogs",
        "HealthLog.workflow",
        "HealthLog.run",
        "HealthLog.step",
    ]);
    let resp = b_list(&server, &w, &notes, json!({}), "notifications nested", &[]).await;
    for edge in resp["data"]["notifications"]["edges"].as_array().unwrap() {
        let node = &edge["node"];
        if node["id"] == w.b_notes[0].as_str() {
            assert_eq!(node["workflow"]["id"], w.b_workflow.as_str());
        } else {
            assert_eq!(node["readBy"]["id"], w.b.admin_id.as_str());
        }
    }
    covered.extend(["Notification.workflow", "Notification.readBy"]);

    // ----- Mutations ---------------------------------------------------------------

    let b_count = count_workflows(&server, &w.b.company_id).await;

    let create = format!(
        "mutation($input: CreateWorkflowInput!) {{ createWorkflow(input: $input) {{ {} }} }}",
        workflow_fields()
    );
    like_missing(
        &server,
        &w,
        tb,
        &create,
        "createWorkflow",
        |id| json!({ "input": { "name": "Steal", "steps": [{ "actionType": "click" }, { "actionType": "click", "screenshotId": id }] } }),
        &w.a_screenshots[0],
    )
    .await;
    assert_eq!(
        count_workflows(&server, &w.b.company_id).await,
        b_count,
        "a rejected createWorkflow left a workflow behind"
    );
    let created = ok(
        &server,
        tb,
        &create,
        json!({ "input": { "name": "Bison new" } }),
    )
    .await;
    assert_eq!(
        created["createWorkflow"]["createdBy"]["id"],
        w.b.admin_id.as_str()
    );
    let b_new = str_field(&created["createWorkflow"], "id");
    covered.insert("Mutation.createWorkflow");

    let update = format!(
        "mutation($id: ID!, $input: UpdateWorkflowInput!) {{ updateWorkflow(id: $id, input: $input) {{ {} }} }}",
        workflow_fields()
    );
    like_missing(&server, &w, tb, &update, "updateWorkflow", |id| json!({ "id": id, "input": { "name": "pwned", "description": null, "tags": [], "status": "ARCHIVED" } }), &a1).await;
    covered.insert("Mutation.updateWorkflow");
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { archiveWorkflow(id: $id) { id status } }",
        "archiveWorkflow",
        |id| json!({ "id": id }),
        &a1,
    )
    .await;
    covered.insert("Mutation.archiveWorkflow");
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { deleteWorkflow(id: $id) }",
        "deleteWorkflow",
        |id| json!({ "id": id }),
        &a2,
    )
    .await;
    covered.insert("Mutation.deleteWorkflow");
    let count = count_workflows(&server, &w.b.company_id).await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { duplicateWorkflow(id: $id) { id name steps { id } } }",
        "duplicateWorkflow",
        |id| json!({ "id": id }),
        &a1,
    )
    .await;
    assert_eq!(
        count_workflows(&server, &w.b.company_id).await,
        count,
        "a rejected duplicateWorkflow created something"
    );
    covered.insert("Mutation.duplicateWorkflow");

    let add = format!(
        "mutation($wf: ID!, $input: StepInput!) {{ addStep(workflowId: $wf, input: $input, position: 1) {{ {STEP_FIELDS} }} }}"
    );
    like_missing(
        &server,
        &w,
        tb,
        &add,
        "addStep",
        |id| json!({ "wf": id, "input": { "actionType": "click" } }),
        &a1,
    )
    .await;
    let b_wf = w.b_workflow.clone();
    like_missing(
        &server,
        &w,
        tb,
        &add,
        "addStep",
        |id| json!({ "wf": b_wf, "input": { "actionType": "click", "screenshotId": id } }),
        &w.a_screenshots[0],
    )
    .await;
    covered.insert("Mutation.addStep");

    let upd_step = format!(
        "mutation($id: ID!, $input: UpdateStepInput!) {{ updateStep(id: $id, input: $input) {{ {STEP_FIELDS} }} }}"
    );
    like_missing(
        &server,
        &w,
        tb,
        &upd_step,
        "updateStep",
        |id| json!({ "id": id, "input": { "fieldLabel": "pwned", "selectors": {} } }),
        &w.a_steps[0],
    )
    .await;
    let b_step = w.b_steps[1].clone();
    like_missing(
        &server,
        &w,
        tb,
        &upd_step,
        "updateStep",
        |id| json!({ "id": b_step, "input": { "screenshotId": id } }),
        &w.a_screenshots[1],
    )
    .await;
    covered.insert("Mutation.updateStep");
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { deleteStep(id: $id) }",
        "deleteStep",
        |id| json!({ "id": id }),
        &w.a_steps[1],
    )
    .await;
    covered.insert("Mutation.deleteStep");

    // Uploads are multipart requests, so `like_missing` is spelled out here.
    let upload = format!(
        "mutation($workflowId: ID!, $stepId: ID, $file: Upload!) {{ uploadScreenshot(workflowId: $workflowId, stepId: $stepId, file: $file) {{ {SCREENSHOT_FIELDS} }} }}"
    );
    let b_wf = w.b_workflow.clone();
    // (A's id, whether it is sent as the step of B's own workflow)
    for (foreign, as_step) in [(a1.as_str(), false), (w.a_steps[0].as_str(), true)] {
        let vars_for = |id: &str| {
            if as_step {
                json!({ "workflowId": b_wf, "stepId": id })
            } else {
                json!({ "workflowId": id })
            }
        };
        let context = format!("uploadScreenshot with A's id {foreign}");
        let image = common::blobs::png(4, 4, 42);
        let resp = multipart_request(
            &server,
            &server.client,
            Some(tb),
            &upload,
            vars_for(foreign),
            image.clone(),
        )
        .await;
        assert_error_code(&resp, "NOT_FOUND", &context);
        assert!(
            resp["data"].is_null() || resp["data"]["uploadScreenshot"].is_null(),
            "{context}: {resp:#}"
        );
        w.assert_no_leak(&resp, &[foreign], &context);
        let missing = new_id();
        let control = multipart_request(
            &server,
            &server.client,
            Some(tb),
            &upload,
            vars_for(&missing),
            image,
        )
        .await;
        assert_eq!(
            resp.to_string().replace(foreign, "<ID>"),
            control.to_string().replace(&missing, "<ID>"),
            "{context}: another company's id must be answered exactly like a missing one"
        );
    }
    covered.insert("Mutation.uploadScreenshot");

    let reorder = "mutation($wf: ID!, $ids: [ID!]!) { reorderSteps(workflowId: $wf, stepIds: $ids) { id stepNumber } }";
    let a1_steps_reversed: Vec<String> = w.a_steps[..3].iter().rev().cloned().collect();
    like_missing(
        &server,
        &w,
        tb,
        reorder,
        "reorderSteps",
        |id| json!({ "wf": id, "ids": a1_steps_reversed }),
        &a1,
    )
    .await;
    let b_order_before = step_ids(&get_workflow(&server, tb, &w.b_workflow).await);
    for (what, ids) in [
        (
            "B's steps plus one of A's",
            vec![
                w.b_steps[1].clone(),
                w.b_steps[0].clone(),
                w.a_steps[0].clone(),
            ],
        ),
        (
            "one of B's steps swapped for one of A's",
            vec![w.b_steps[1].clone(), w.a_steps[0].clone()],
        ),
        ("only A's steps", w.a_steps[..2].to_vec()),
    ] {
        let sent: Vec<&str> = ids.iter().map(String::as_str).collect();
        let resp = server
            .gql(reorder, json!({ "wf": w.b_workflow, "ids": ids }), Some(tb))
            .await;
        let code = error_code(&resp);
        assert!(
            matches!(code.as_deref(), Some("BAD_USER_INPUT" | "NOT_FOUND")),
            "reorderSteps of B's workflow with {what}: expected BAD_USER_INPUT or NOT_FOUND: {resp:#}"
        );
        w.assert_no_leak(&resp, &sent, &format!("reorderSteps with {what}"));
        assert_eq!(
            step_ids(&get_workflow(&server, tb, &w.b_workflow).await),
            b_order_before,
            "B's order changed by a rejected reorder ({what})"
        );
    }
    covered.insert("Mutation.reorderSteps");

    let mark = format!(
        "mutation($id: ID!) {{ markNotificationRead(id: $id) {{ {NOTIFICATION_FIELDS} }} }}"
    );
    for id in &w.a_notes {
        like_missing(
            &server,
            &w,
            tb,
            &mark,
            "markNotificationRead",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Mutation.markNotificationRead");
    let resp = b_list(
        &server,
        &w,
        "mutation { markAllNotificationsRead }",
        json!({}),
        "markAllNotificationsRead",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["markAllNotificationsRead"], 1,
        "B had exactly one unread notification"
    );
    covered.insert("Mutation.markAllNotificationsRead");
    for id in &w.a_notes {
        like_missing(
            &server,
            &w,
            tb,
            "mutation($id: ID!) { deleteNotification(id: $id) }",
            "deleteNotification",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Mutation.deleteNotification");

    let role = "mutation($id: ID!, $role: Role!) { changeUserRole(userId: $id, role: $role) { id role company { id } } }";
    like_missing(
        &server,
        &w,
        tb,
        role,
        "changeUserRole",
        |id| json!({ "id": id, "role": "ADMIN" }),
        &w.a.member_id,
    )
    .await;
    like_missing(
        &server,
        &w,
        tb,
        role,
        "changeUserRole",
        |id| json!({ "id": id, "role": "REGULAR" }),
        &w.a.admin_id,
    )
    .await;
    covered.insert("Mutation.changeUserRole");
    for id in [&w.a.member_id, &w.a.admin_id] {
        like_missing(
            &server,
            &w,
            tb,
            "mutation($id: ID!) { removeUser(userId: $id) }",
            "removeUser",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Mutation.removeUser");

    let resp = b_list(
        &server,
        &w,
        "mutation { renameCompany(name: \"Bison Renamed\") { id name } }",
        json!({}),
        "renameCompany",
        &[],
    )
    .await;
    assert_eq!(resp["data"]["renameCompany"]["id"], w.b.company_id.as_str());
    assert_eq!(resp["data"]["renameCompany"]["name"], "Bison Renamed");
    covered.insert("Mutation.renameCompany");
    let resp = b_list(
        &server,
        &w,
        "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id settings } }",
        json!({ "s": { "theme": "bison" } }),
        "updateCompanySettings",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["updateCompanySettings"]["id"],
        w.b.company_id.as_str()
    );
    assert_eq!(
        resp["data"]["updateCompanySettings"]["settings"],
        json!({ "theme": "bison" })
    );
    covered.insert("Mutation.updateCompanySettings");
    let resp = b_list(
        &server,
        &w,
        "mutation { rotateInviteToken { id inviteToken } }",
        json!({}),
        "rotateInviteToken",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["rotateInviteToken"]["id"],
        w.b.company_id.as_str()
    );
    let b_invite = str_field(&resp["data"]["rotateInviteToken"], "inviteToken");
    covered.insert("Mutation.rotateInviteToken");

    // Sessions: everything a token grants stays inside its company.
    let (token, payload) = server.login(&w.b.member_email, PASSWORD).await;
    w.assert_no_leak(&payload, &[], "login");
    assert_eq!(payload["user"]["id"], w.b.member_id.as_str());
    assert_eq!(payload["company"]["id"], w.b.company_id.as_str());
    assert_eq!(jwt_claims(&token)["company_id"], w.b.company_id.as_str());
    let seen = ok(&server, &token, list, json!({})).await;
    assert_eq!(ids_at(&seen["workflows"]), set_of(&[&w.b_workflow, &b_new]));
    covered.extend(["Mutation.login", "AuthPayload.user", "AuthPayload.company"]);

    let (token, payload) = server
        .join_company(&b_invite, "Bison Newbie", "newbie@bison.test", PASSWORD)
        .await;
    assert_eq!(payload["company"]["id"], w.b.company_id.as_str());
    let seen = ok(&server, &token, "{ users { id } workflows(first: 100) { totalCount edges { node { id } } } notifications { totalCount } }", json!({})).await;
    w.assert_no_leak(&seen, &[], "a new member of B");
    assert_eq!(seen["workflows"]["totalCount"], 2);
    assert_eq!(seen["users"].as_array().unwrap().len(), 3);
    covered.insert("Mutation.joinCompany");

    // A company named exactly like A is still not A.
    let (token, payload) = server
        .signup("Aardvark", "Copy Cat", "copycat@elsewhere.test", PASSWORD)
        .await;
    assert_ne!(payload["company"]["id"], w.a.company_id.as_str());
    let seen = ok(
        &server,
        &token,
        "{ users { id } workflows { totalCount } runs { totalCount } healthLogs { totalCount } notifications { totalCount } unreadNotificationCount company { settings } }",
        json!({}),
    )
    .await;
    assert_eq!(
        seen,
        json!({
            "users": [{ "id": payload["user"]["id"] }],
            "workflows": { "totalCount": 0 }, "runs": { "totalCount": 0 }, "healthLogs": { "totalCount": 0 },
            "notifications": { "totalCount": 0 }, "unreadNotificationCount": 0, "company": { "settings": {} },
        }),
        "a brand-new company named like A sees nothing"
    );
    covered.insert("Mutation.signup");

    let resp = b_list(
        &server,
        &w,
        "mutation { updateRetentionPolicy(policy: { runMaxAgeDays: 3000 }) { runMaxAgeDays notificationMaxAgeDays } }",
        json!({}),
        "updateRetentionPolicy",
        &[],
    )
    .await;
    assert_eq!(
        resp["data"]["updateRetentionPolicy"],
        json!({ "runMaxAgeDays": 3000, "notificationMaxAgeDays": null })
    );
    let a_policy = ok(
        &server,
        &w.a.admin_token,
        "{ retentionPolicy { runMaxAgeDays notificationMaxAgeDays } }",
        json!({}),
    )
    .await;
    assert_eq!(
        a_policy["retentionPolicy"],
        json!({ "runMaxAgeDays": 3650, "notificationMaxAgeDays": 3650 }),
        "A's policy is A's"
    );
    covered.insert("Mutation.updateRetentionPolicy");

    // ----- Runs: every lifecycle mutation with A's ids ------------------------------

    let start = format!("mutation($id: ID!) {{ startRun(workflowId: $id) {{ {RUN_FIELDS} }} }}");
    for id in &w.a_workflows {
        like_missing(
            &server,
            &w,
            tb,
            &start,
            "startRun",
            |id| json!({ "id": id }),
            id,
        )
        .await;
    }
    covered.insert("Mutation.startRun");
    for (mutation, field, extra) in [
        ("finishRun", "finishRun", ", status: SUCCEEDED"),
        ("pauseRun", "pauseRun", ""),
        ("resumeRun", "resumeRun", ""),
        ("cancelRun", "cancelRun", ", reason: \"B was here\""),
    ] {
        let query =
            format!("mutation($id: ID!) {{ {mutation}(runId: $id{extra}) {{ {RUN_FIELDS} }} }}");
        for id in &w.a_runs {
            like_missing(&server, &w, tb, &query, field, |id| json!({ "id": id }), id).await;
        }
        covered.insert(match mutation {
            "finishRun" => "Mutation.finishRun",
            "pauseRun" => "Mutation.pauseRun",
            "resumeRun" => "Mutation.resumeRun",
            _ => "Mutation.cancelRun",
        });
    }

    let report = format!(
        "mutation($run: ID!, $step: ID!) {{ reportStep(runId: $run, stepId: $step, \
           outcome: {{ status: SUCCESS, idempotencyKey: \"k1\" }}) {{ duplicate \
           run {{ {RUN_FIELDS} }} healthLog {{ {HEALTH_LOG_FIELDS} }} }} }}"
    );
    // A's running run, with A's own step.
    like_missing(
        &server,
        &w,
        tb,
        &report,
        "reportStep",
        |id| json!({ "run": id, "step": w.a_steps[1] }),
        &w.a_runs[0],
    )
    .await;
    // B's own running run, with a step of A's: answered exactly like an unknown step.
    let foreign_step = server
        .gql(
            &report,
            json!({ "run": w.b_run, "step": w.a_steps[1] }),
            Some(tb),
        )
        .await;
    let unknown = new_id();
    let unknown_step = server
        .gql(
            &report,
            json!({ "run": w.b_run, "step": unknown }),
            Some(tb),
        )
        .await;
    assert!(error_code(&foreign_step).is_some(), "{foreign_step:#}");
    assert_eq!(
        foreign_step
            .to_string()
            .replace(w.a_steps[1].as_str(), "<ID>"),
        unknown_step.to_string().replace(&unknown, "<ID>"),
        "reportStep: A's step id must be answered exactly like a missing one"
    );
    w.assert_no_leak(&foreign_step, &[&w.a_steps[1]], "reportStep with A's step");
    covered.insert("Mutation.reportStep");

    // B's own report answers with B's run and B's new log.
    let data = ok(
        &server,
        tb,
        &report,
        json!({ "run": w.b_run, "step": w.b_steps[0] }),
    )
    .await;
    let answer = &data["reportStep"];
    w.assert_no_leak(answer, &[], "reportStep on B's run");
    assert_eq!(answer["run"]["id"], w.b_run.as_str());
    assert_eq!(answer["run"]["workflow"]["id"], w.b_workflow.as_str());
    assert_eq!(answer["healthLog"]["run"]["id"], w.b_run.as_str());
    assert_eq!(answer["healthLog"]["step"]["id"], w.b_steps[0].as_str());
    assert_eq!(answer["healthLog"]["workflow"]["id"], w.b_workflow.as_str());
    covered.extend(["StepReport.run", "StepReport.healthLog"]);

    // ----- Principals: keys, sessions, settings, audit -----------------------------

    let keys = b_list(
        &server,
        &w,
        "{ apiKeys(includeRevoked: true) { id name createdBy { id } } }",
        json!({}),
        "apiKeys",
        &[],
    )
    .await;
    assert_eq!(keys["data"]["apiKeys"], json!([]), "B has no key yet");
    covered.insert("Query.apiKeys");
    let created = ok(
        &server,
        tb,
        "mutation { createApiKey(name: \"Bison runner\") { secret apiKey { id name createdBy { id } } } }",
        json!({}),
    )
    .await;
    w.assert_no_leak(&created, &[], "createApiKey");
    let b_key = str_field(&created["createApiKey"], "secret");
    assert_eq!(
        created["createApiKey"]["apiKey"]["createdBy"]["id"],
        w.b.admin_id.as_str()
    );
    covered.extend([
        "Mutation.createApiKey",
        "CreatedApiKey.apiKey",
        "ApiKey.createdBy",
    ]);
    let seen = ok(
        &server,
        &b_key,
        "{ workflows(first: 100) { nodes { id } } }",
        json!({}),
    )
    .await;
    w.assert_no_leak(&seen, &[], "B's key listing workflows");
    assert!(
        ids_at_nodes(&seen["workflows"]).contains(&w.b_workflow),
        "{seen:#}"
    );
    for id in &w.a_workflows {
        let resp = server
            .gql(
                "query($id: ID!) { workflow(id: $id) { id } }",
                json!({ "id": id }),
                Some(&b_key),
            )
            .await;
        assert_error_code(&resp, "NOT_FOUND", "B's key reading A's workflow");
        w.assert_no_leak(&resp, &[id], "B's key reading A's workflow");
    }
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        "revokeApiKey",
        |id| json!({ "id": id }),
        &w.a_api_key.0,
    )
    .await;
    let still = server
        .gql(
            "{ workflows { totalCount } }",
            json!({}),
            Some(&w.a_api_key.1),
        )
        .await;
    assert!(still["errors"].is_null(), "A's key still works: {still:#}");
    covered.insert("Mutation.revokeApiKey");

    let settings = b_list(
        &server,
        &w,
        "{ userSettings { timeZone locale } }",
        json!({}),
        "userSettings",
        &[],
    )
    .await;
    assert_eq!(
        settings["data"]["userSettings"],
        json!({ "timeZone": "UTC", "locale": "en" })
    );
    let changed = ok(
        &server,
        tb,
        "mutation { updateUserSettings(input: { locale: \"de\" }) { locale } }",
        json!({}),
    )
    .await;
    assert_eq!(changed["updateUserSettings"]["locale"], "de");
    covered.extend(["Query.userSettings", "Mutation.updateUserSettings"]);

    let audit = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 100) { totalCount nodes { id actorId targetId actorLabel summary } } }";
    b_list(&server, &w, audit, json!({}), "auditLog", &[]).await;
    for (filter, sent) in [
        (json!({ "actorId": w.a.admin_id }), w.a.admin_id.as_str()),
        (json!({ "targetId": w.a.member_id }), w.a.member_id.as_str()),
        (json!({ "targetId": w.a_api_key.0 }), w.a_api_key.0.as_str()),
    ] {
        let resp = b_list(
            &server,
            &w,
            audit,
            json!({ "f": filter }),
            "auditLog by A's id",
            &[sent],
        )
        .await;
        assert_eq!(resp["data"]["auditLog"]["totalCount"], 0, "{resp:#}");
    }
    covered.insert("Query.auditLog");

    let profile = ok(
        &server,
        tb,
        "mutation { updateProfile(name: \"Bison Boss\") { id name } }",
        json!({}),
    )
    .await;
    assert_eq!(profile["updateProfile"]["id"], w.b.admin_id.as_str());
    covered.insert("Mutation.updateProfile");

    // Session mutations on sessions of B's member, so B's admin token stays usable.
    let pair = "token refreshToken user { id } company { id }";
    let login = format!(
        "mutation($e: String!) {{ login(email: $e, password: \"{PASSWORD}\") {{ {pair} }} }}"
    );
    let signed = ok(&server, "", &login, json!({ "e": w.b.member_email })).await;
    let refreshed = ok(
        &server,
        "",
        &format!("mutation($t: String!) {{ refreshSession(refreshToken: $t) {{ {pair} }} }}"),
        json!({ "t": signed["login"]["refreshToken"] }),
    )
    .await;
    w.assert_no_leak(&refreshed, &[], "refreshSession");
    assert_eq!(
        refreshed["refreshSession"]["user"]["id"],
        w.b.member_id.as_str()
    );
    assert_eq!(
        refreshed["refreshSession"]["company"]["id"],
        w.b.company_id.as_str()
    );
    covered.insert("Mutation.refreshSession");
    let member = str_field(&refreshed["refreshSession"], "token");
    let sessions = b_list(
        &server,
        &w,
        "{ sessions { id current } }",
        json!({}),
        "sessions",
        &[],
    )
    .await;
    assert!(
        !sessions["data"]["sessions"]
            .to_string()
            .contains(&str_field(&jwt_claims(&member), "sid")),
        "B's admin sees only their own sessions"
    );
    covered.insert("Query.sessions");
    ok(&server, &member, "mutation { logout }", json!({})).await;
    covered.insert("Mutation.logout");
    let member = ok(&server, "", &login, json!({ "e": w.b.member_email })).await;
    let member = str_field(&member["login"], "token");
    let change = format!(
        "mutation {{ changePassword(currentPassword: \"{PASSWORD}\", newPassword: \"{PASSWORD}\") }}"
    );
    ok(&server, &member, &change, json!({})).await;
    covered.insert("Mutation.changePassword");
    ok(&server, &member, "mutation { logoutEverywhere }", json!({})).await;
    covered.insert("Mutation.logoutEverywhere");
    for token in [&w.a.admin_token, &w.a.member_token] {
        assert!(
            server.gql("{ me { id } }", json!({}), Some(token)).await["errors"].is_null(),
            "A's sessions keep working"
        );
    }
    queue_cases(&server, &w, &q, &mut covered).await;
    // ----- Relay's node lookup --------------------------------------------------------

    let mut node_types = BTreeSet::new();
    for id in w.a_ids() {
        node_types.insert(a_node_like_missing(&server, &w, &w.a.admin_token, &id).await);
    }
    // A's sessions (each only its owner finds), audit entries and run-queue objects.
    for token in [&w.a.admin_token, &w.a.member_token] {
        let sessions = ok(&server, token, "{ sessions { id current } }", json!({})).await;
        for session in sessions["sessions"].as_array().unwrap() {
            let id = str_field(session, "id");
            node_types.insert(a_node_like_missing(&server, &w, token, &id).await);
        }
    }
    let a_audit = ok(
        &server,
        &w.a.admin_token,
        "{ auditLog(first: 3) { nodes { id } } }",
        json!({}),
    )
    .await;
    for entry in a_audit["auditLog"]["nodes"].as_array().unwrap() {
        let id = str_field(entry, "id");
        node_types.insert(a_node_like_missing(&server, &w, &w.a.admin_token, &id).await);
    }
    for id in [&q.a_queued, &q.a_schedule, &q.a_webhook] {
        node_types.insert(a_node_like_missing(&server, &w, &w.a.admin_token, id).await);
    }
    assert_node_types_met(MAIN, &node_types);
    covered.insert("Query.node");
    let b_ids = [
        w.b.company_id.as_str(),
        w.b.admin_id.as_str(),
        w.b_workflow.as_str(),
        w.b_steps[0].as_str(),
        w.b_screenshot.as_str(),
        w.b_run.as_str(),
        w.b_log.as_str(),
        w.b_notes[0].as_str(),
    ];
    let a_ids = w.a_ids();
    let mut mixed: Vec<&str> = Vec::new();
    for (b_id, a_id) in b_ids.iter().zip(a_ids.iter()) {
        mixed.push(b_id);
        mixed.push(a_id);
    }
    let nodes_query = format!("query($ids: [ID!]!) {{ nodes(ids: $ids) {{ {NODE_FIELDS} }} }}");
    let resp = server
        .gql(&nodes_query, json!({ "ids": mixed }), Some(tb))
        .await;
    let a_sent: Vec<&str> = a_ids.iter().map(String::as_str).collect();
    w.assert_no_leak(&resp, &a_sent, "nodes with A's ids among B's");
    let nodes = resp["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), mixed.len(), "{resp:#}");
    let errors = resp["errors"].as_array().unwrap();
    assert_eq!(
        errors.len(),
        b_ids.len(),
        "one NOT_FOUND per A's id: {resp:#}"
    );
    for (index, id) in mixed.iter().enumerate() {
        if index % 2 == 0 {
            assert_eq!(
                nodes[index]["id"], *id,
                "B's own object at {index}: {resp:#}"
            );
        } else {
            assert!(nodes[index].is_null(), "A's object at {index}: {resp:#}");
            assert!(
                errors.iter().any(|e| e["path"] == json!(["nodes", index])
                    && e["extensions"]["code"] == "NOT_FOUND"),
                "no NOT_FOUND at nodes[{index}]: {resp:#}"
            );
        }
    }
    covered.insert("Query.nodes");

    // ----- A is untouched ----------------------------------------------------------

    let after = company_snapshot(&server, &w.a.company_id, &w.a.admin_token).await;
    assert_unchanged(
        &before,
        &after,
        "after company B tried everything with A's ids",
    );
    server.login(&w.a.member_email, PASSWORD).await;

    // Every case in the tables ran.
    let expected: BTreeSet<&str> = ROOT_CASES
        .iter()
        .chain(NESTED_CASES)
        .map(|(k, _)| *k)
        .collect();
    let not_run: Vec<&&str> = expected.difference(&covered).collect();
    let unlisted: Vec<&&str> = covered.difference(&expected).collect();
    assert!(
        not_run.is_empty() && unlisted.is_empty(),
        "isolation cases not run: {not_run:?}; run but not listed: {unlisted:?}"
    );
}

both_backends!(references_into_another_company_resolve_to_nothing);
/// Rows of B that point at A's rows through references the database does not tie to a
/// company (screenshot, editor, starter, current step, logged step, reader, creator) must
/// not pull A's rows into B's responses.
async fn references_into_another_company_resolve_to_nothing(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let before = company_snapshot(&server, &w.a.company_id, &w.a.admin_token).await;
    server
        .sql(&format!(
            "UPDATE steps SET screenshot_id = {shot}, edited_by = {am} WHERE id = {bs0};\n\
             UPDATE runs SET started_by = {aa}, current_step_id = {as0} WHERE id = {run};\n\
             UPDATE health_logs SET step_id = {as1} WHERE id = {log};\n\
             UPDATE notifications SET read_by = {aa} WHERE id = {note};\n\
             UPDATE workflows SET created_by = {am} WHERE id = {wf};",
            shot = lit(&w.a_screenshots[0]),
            am = lit(&w.a.member_id),
            aa = lit(&w.a.admin_id),
            bs0 = lit(&w.b_steps[0]),
            as0 = lit(&w.a_steps[0]),
            as1 = lit(&w.a_steps[1]),
            run = lit(&w.b_run),
            log = lit(&w.b_log),
            note = lit(&w.b_notes[1]),
            wf = lit(&w.b_workflow),
        ))
        .await;

    let query = format!(
        "query($wf: ID!, $step: ID!, $run: ID!) {{ \
           workflow(id: $wf) {{ id createdBy {{ {USER_FIELDS} }} steps {{ id screenshot {{ {SCREENSHOT_FIELDS} }} editedBy {{ {USER_FIELDS} }} }} \
             runs {{ edges {{ node {{ id startedBy {{ {USER_FIELDS} }} currentStep {{ id fieldLabel }} }} }} }} \
             healthLogs {{ edges {{ node {{ id step {{ id fieldLabel }} }} }} }} }} \
           step(id: $step) {{ id screenshot {{ id hash }} editedBy {{ id name }} }} \
           run(id: $run) {{ id startedBy {{ id name }} currentStep {{ id fieldLabel }} healthLogs {{ edges {{ node {{ id step {{ id }} }} }} }} }} \
           healthLogs {{ edges {{ node {{ id step {{ id fieldLabel }} }} }} }} \
           notifications {{ edges {{ node {{ id readBy {{ id name email }} }} }} }} }}"
    );
    let resp = server
        .gql(
            &query,
            json!({ "wf": w.b_workflow, "step": w.b_steps[0], "run": w.b_run }),
            Some(&w.b.admin_token),
        )
        .await;
    w.assert_no_leak(&resp, &[], "B's rows pointing into A");
    for error in resp["errors"].as_array().into_iter().flatten() {
        assert_eq!(
            error["extensions"]["code"], "NOT_FOUND",
            "only NOT_FOUND may be reported for a dangling reference: {resp:#}"
        );
    }
    let data = &resp["data"];
    assert_eq!(data["workflow"]["id"], w.b_workflow.as_str(), "{resp:#}");
    let nulls = [
        ("Workflow.createdBy", &data["workflow"]["createdBy"]),
        (
            "Step.screenshot (via workflow)",
            &data["workflow"]["steps"][0]["screenshot"],
        ),
        (
            "Step.editedBy (via workflow)",
            &data["workflow"]["steps"][0]["editedBy"],
        ),
        (
            "Run.startedBy (via workflow)",
            &data["workflow"]["runs"]["edges"][0]["node"]["startedBy"],
        ),
        (
            "Run.currentStep (via workflow)",
            &data["workflow"]["runs"]["edges"][0]["node"]["currentStep"],
        ),
        (
            "HealthLog.step (via workflow)",
            &data["workflow"]["healthLogs"]["edges"][0]["node"]["step"],
        ),
        ("Step.screenshot", &data["step"]["screenshot"]),
        ("Step.editedBy", &data["step"]["editedBy"]),
        ("Run.startedBy", &data["run"]["startedBy"]),
        ("Run.currentStep", &data["run"]["currentStep"]),
        (
            "Run.healthLogs.step",
            &data["run"]["healthLogs"]["edges"][0]["node"]["step"],
        ),
        (
            "HealthLog.step",
            &data["healthLogs"]["edges"][0]["node"]["step"],
        ),
    ];
    for (what, value) in nulls {
        assert!(
            value.is_null(),
            "{what} resolved a row of company A: {value:#}\n{resp:#}"
        );
    }
    let notes: HashSet<String> = data["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_field(&e["node"], "id"))
        .collect();
    assert_eq!(notes, w.b_notes.iter().cloned().collect::<HashSet<_>>());
    for edge in data["notifications"]["edges"].as_array().unwrap() {
        assert!(
            edge["node"]["readBy"].is_null(),
            "Notification.readBy resolved A's user: {resp:#}"
        );
    }

    let after = company_snapshot(&server, &w.a.company_id, &w.a.admin_token).await;
    assert_unchanged(&before, &after, "after B's dangling references were read");
}

// ---------------------------------------------------------------------------
// The run queue (issue 13)
// ---------------------------------------------------------------------------

/// A's queued run, paused schedule and webhook (made before the snapshot).
struct QueueWorld {
    a_queued: String,
    a_schedule: String,
    a_webhook: String,
}

/// B's own workflow that can run (made after B's workflow lists were checked).
struct BFlow {
    b_flow: String,
    b_flow_steps: Vec<String>,
}

async fn b_queue_flow(server: &TestServer, w: &World) -> BFlow {
    let b_flow = create_workflow(
        server,
        &w.b.admin_token,
        json!({ "name": "Bison queue", "status": "ACTIVE", "steps": step_inputs("Bison q ", 2) }),
    )
    .await;
    BFlow {
        b_flow_steps: step_ids(&b_flow),
        b_flow: str_field(&b_flow, "id"),
    }
}

async fn queue_world(server: &TestServer, w: &World) -> QueueWorld {
    let a_flow = &w.a_workflows[0];
    let queued = ok(
        server,
        &w.a.member_token,
        "mutation($w: ID!) { enqueueRun(input: { workflowId: $w, input: { secret: \"A-SECRET\" } }) { id } }",
        json!({ "w": a_flow }),
    )
    .await;
    let schedule = ok(
        server,
        &w.a.member_token,
        "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false, name: \"A-SECRET schedule\" }) { id } }",
        json!({ "w": a_flow }),
    )
    .await;
    let webhook = ok(
        server,
        &w.a.admin_token,
        "mutation($w: ID!) { createWebhook(workflowId: $w, name: \"A-SECRET hook\") { webhook { id } } }",
        json!({ "w": a_flow }),
    )
    .await;
    QueueWorld {
        a_queued: str_field(&queued["enqueueRun"], "id"),
        a_schedule: str_field(&schedule["createSchedule"], "id"),
        a_webhook: str_field(&webhook["createWebhook"]["webhook"], "id"),
    }
}

fn by_id(id: &str) -> Value {
    json!({ "id": id })
}

async fn queue_cases(
    server: &TestServer,
    w: &World,
    q: &QueueWorld,
    covered: &mut BTreeSet<&'static str>,
) {
    let tb = w.b.admin_token.as_str();
    let a_flow = w.a_workflows[0].as_str();
    let b = b_queue_flow(server, w).await;

    // Queries.
    for (query, field, id, key) in [
        (
            "query($id: ID!) { schedule(id: $id) { id name } }",
            "schedule",
            &q.a_schedule,
            "Query.schedule",
        ),
        (
            "query($id: ID!) { webhook(id: $id) { id name url } }",
            "webhook",
            &q.a_webhook,
            "Query.webhook",
        ),
        (
            "query($id: ID!) { schedules(workflowId: $id) { id } }",
            "schedules",
            &w.a_workflows[0],
            "Query.schedules",
        ),
        (
            "query($id: ID!) { webhooks(workflowId: $id) { id } }",
            "webhooks",
            &w.a_workflows[0],
            "Query.webhooks",
        ),
    ] {
        like_missing(server, w, tb, query, field, by_id, id).await;
        covered.insert(key);
    }

    // Mutations naming A's ids: answered like missing ones.
    let cases: [(&str, &str, &String, &'static str); 11] = [
        (
            "mutation($id: ID!) { enqueueRun(input: { workflowId: $id }) { id } }",
            "enqueueRun",
            &w.a_workflows[0],
            "Mutation.enqueueRun",
        ),
        (
            "mutation($id: ID!) { heartbeatRun(runId: $id, leaseId: \"L\") { leaseId } }",
            "heartbeatRun",
            &q.a_queued,
            "Mutation.heartbeatRun",
        ),
        (
            "mutation($id: ID!) { retryRun(runId: $id) { id } }",
            "retryRun",
            &w.a_runs[1],
            "Mutation.retryRun",
        ),
        (
            "mutation($id: ID!) { createSchedule(input: { workflowId: $id, cron: \"* * * * *\" }) { id } }",
            "createSchedule",
            &w.a_workflows[0],
            "Mutation.createSchedule",
        ),
        (
            "mutation($id: ID!) { updateSchedule(id: $id, input: { name: \"B\" }) { id } }",
            "updateSchedule",
            &q.a_schedule,
            "Mutation.updateSchedule",
        ),
        (
            "mutation($id: ID!) { pauseSchedule(id: $id) { id } }",
            "pauseSchedule",
            &q.a_schedule,
            "Mutation.pauseSchedule",
        ),
        (
            "mutation($id: ID!) { resumeSchedule(id: $id) { id } }",
            "resumeSchedule",
            &q.a_schedule,
            "Mutation.resumeSchedule",
        ),
        (
            "mutation($id: ID!) { deleteSchedule(id: $id) }",
            "deleteSchedule",
            &q.a_schedule,
            "Mutation.deleteSchedule",
        ),
        (
            "mutation($id: ID!) { createWebhook(workflowId: $id) { secret } }",
            "createWebhook",
            &w.a_workflows[0],
            "Mutation.createWebhook",
        ),
        (
            "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: false }) { id } }",
            "updateWebhook",
            &q.a_webhook,
            "Mutation.updateWebhook",
        ),
        (
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
            "rotateWebhookSecret",
            &q.a_webhook,
            "Mutation.rotateWebhookSecret",
        ),
    ];
    for (query, field, id, key) in cases {
        like_missing(server, w, tb, query, field, by_id, id).await;
        covered.insert(key);
    }
    like_missing(
        server,
        w,
        tb,
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        "deleteWebhook",
        |id| json!({ "id": id }),
        &q.a_webhook,
    )
    .await;
    covered.insert("Mutation.deleteWebhook");
    like_missing(
        server,
        w,
        tb,
        "mutation($id: ID!) { suggestStepText(stepId: $id, fieldLabel: \"B\", aiModel: \"m\") { applied } }",
        "suggestStepText",
        |id| json!({ "id": id }),
        &w.a_steps[0],
    )
    .await;

    // claimRun never hands B A's run, whatever the filter.
    let claim = "mutation($ids: [ID!]) { claimRun(workflowIds: $ids, leaseSeconds: 600) { leaseId run { id workflow { id } } } }";
    let resp = b_list(
        server,
        w,
        claim,
        json!({ "ids": [a_flow] }),
        "claimRun(A's workflow)",
        &[a_flow],
    )
    .await;
    assert!(resp["data"]["claimRun"].is_null(), "{resp:#}");
    let resp = b_list(server, w, claim, json!({}), "claimRun()", &[]).await;
    assert!(
        resp["data"]["claimRun"].is_null(),
        "B has nothing queued: {resp:#}"
    );

    // B's own queue: every nested field resolves to B's rows.
    let queued = ok(
        server,
        tb,
        "mutation($w: ID!) { enqueueRun(input: { workflowId: $w }) { id } }",
        json!({ "w": b.b_flow }),
    )
    .await;
    let b_queued = str_field(&queued["enqueueRun"], "id");
    let resp = b_list(server, w, claim, json!({}), "claimRun() of B's", &[]).await;
    let lease = &resp["data"]["claimRun"];
    assert_eq!(lease["run"]["id"], b_queued.as_str(), "{resp:#}");
    assert_eq!(lease["run"]["workflow"]["id"], b.b_flow.as_str());
    covered.extend(["Mutation.claimRun", "RunLease.run"]);
    ok(
        server,
        tb,
        "mutation($id: ID!) { finishRun(runId: $id, status: FAILED) { id } }",
        json!({ "id": b_queued }),
    )
    .await;
    // B's own run with A's step as fromStep: like an unknown step.
    let retry = "mutation($id: ID!, $from: ID) { retryRun(runId: $id, fromStep: $from) { id } }";
    let foreign = server
        .gql(
            retry,
            json!({ "id": b_queued, "from": w.a_steps[0] }),
            Some(tb),
        )
        .await;
    let unknown = new_id();
    let missing = server
        .gql(retry, json!({ "id": b_queued, "from": unknown }), Some(tb))
        .await;
    assert_eq!(
        foreign.to_string().replace(w.a_steps[0].as_str(), "<ID>"),
        missing.to_string().replace(&unknown, "<ID>"),
        "retryRun: A's step must look like a missing one"
    );
    covered.insert("Mutation.retryRun");
    let retried = ok(
        server,
        tb,
        retry,
        json!({ "id": b_queued, "from": b.b_flow_steps[1] }),
    )
    .await;
    let b_retry = str_field(&retried["retryRun"], "id");
    let schedule = ok(
        server,
        tb,
        "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false }) { id workflow { id } lastRun { id } } }",
        json!({ "w": b.b_flow }),
    )
    .await;
    assert_eq!(
        schedule["createSchedule"]["workflow"]["id"],
        b.b_flow.as_str()
    );
    let b_schedule = str_field(&schedule["createSchedule"], "id");
    let hook = ok(
        server,
        tb,
        "mutation($w: ID!) { createWebhook(workflowId: $w) { secret webhook { id workflow { id } } } }",
        json!({ "w": b.b_flow }),
    )
    .await;
    let b_hook = str_field(&hook["createWebhook"]["webhook"], "id");
    assert_eq!(
        hook["createWebhook"]["webhook"]["workflow"]["id"],
        b.b_flow.as_str()
    );
    covered.extend([
        "Mutation.createSchedule",
        "Mutation.createWebhook",
        "WebhookWithSecret.webhook",
        "Schedule.workflow",
    ]);
    // A run of B's schedule and one of B's webhook, written as the scheduler and the hook
    // endpoint write them.
    server
        .sql(&format!(
            "UPDATE runs SET trigger_kind = 'schedule', trigger_id = {s} WHERE id = {r};\n\
             UPDATE schedules SET last_run_id = {r} WHERE id = {s};",
            s = lit(&b_schedule),
            r = lit(&b_queued),
        ))
        .await;
    server
        .sql(&format!(
            "UPDATE runs SET trigger_kind = 'webhook', trigger_id = {h} WHERE id = {r};",
            h = lit(&b_hook),
            r = lit(&b_retry),
        ))
        .await;
    let nested = b_list(
        server,
        w,
        "query($run: ID!, $retry: ID!, $s: ID!, $h: ID!) { \
           run(id: $run) { id schedule { id } retries { totalCount nodes { id } } } \
           retry: run(id: $retry) { retryOf { id } fromStep { id } webhook { id workflow { id } } } \
           schedule(id: $s) { lastRun { id } workflow { id } } \
           webhook(id: $h) { workflow { id } } }",
        json!({ "run": b_queued, "retry": b_retry, "s": b_schedule, "h": b_hook }),
        "B's queue nested",
        &[],
    )
    .await;
    let data = &nested["data"];
    assert_eq!(
        data["run"]["schedule"]["id"],
        b_schedule.as_str(),
        "{nested:#}"
    );
    assert_eq!(data["run"]["retries"]["totalCount"], 1);
    assert_eq!(data["run"]["retries"]["nodes"][0]["id"], b_retry.as_str());
    assert_eq!(data["retry"]["retryOf"]["id"], b_queued.as_str());
    assert_eq!(data["retry"]["fromStep"]["id"], b.b_flow_steps[1].as_str());
    assert_eq!(data["retry"]["webhook"]["id"], b_hook.as_str());
    assert_eq!(data["schedule"]["lastRun"]["id"], b_queued.as_str());
    assert_eq!(data["webhook"]["workflow"]["id"], b.b_flow.as_str());
    covered.extend([
        "Run.schedule",
        "Run.retries",
        "Run.retryOf",
        "Run.fromStep",
        "Run.webhook",
        "Schedule.lastRun",
        "Webhook.workflow",
    ]);
    for (query, key) in [
        (
            "mutation($id: ID!) { updateSchedule(id: $id, input: { name: \"B\" }) { id } }",
            "Mutation.updateSchedule",
        ),
        (
            "mutation($id: ID!) { pauseSchedule(id: $id) { id } }",
            "Mutation.pauseSchedule",
        ),
        (
            "mutation($id: ID!) { resumeSchedule(id: $id) { id } }",
            "Mutation.resumeSchedule",
        ),
        (
            "mutation($id: ID!) { deleteSchedule(id: $id) }",
            "Mutation.deleteSchedule",
        ),
    ] {
        ok(server, tb, query, json!({ "id": b_schedule })).await;
        covered.insert(key);
    }
    for (query, key) in [
        (
            "mutation($id: ID!) { updateWebhook(id: $id, input: { name: \"B\" }) { id } }",
            "Mutation.updateWebhook",
        ),
        (
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
            "Mutation.rotateWebhookSecret",
        ),
        (
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            "Mutation.deleteWebhook",
        ),
    ] {
        ok(server, tb, query, json!({ "id": b_hook })).await;
        covered.insert(key);
    }
    let suggested = ok(
        server,
        tb,
        "mutation($id: ID!) { suggestStepText(stepId: $id, instruction: \"Click\", aiModel: \"m\") { step { id workflow { id } } } }",
        json!({ "id": b.b_flow_steps[0] }),
    )
    .await;
    assert_eq!(
        suggested["suggestStepText"]["step"]["id"],
        b.b_flow_steps[0].as_str()
    );
    assert_eq!(
        suggested["suggestStepText"]["step"]["workflow"]["id"],
        b.b_flow.as_str()
    );
    covered.extend(["Mutation.suggestStepText", "StepTextSuggestion.step"]);

    // A's webhook still takes A's requests: its secret did not change.
    let status = server
        .client
        .post(server.url(&format!("/hooks/{}", q.a_webhook)))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status.as_u16(),
        401,
        "A's hook is there, unsigned requests refused"
    );
}

both_backends!(queue_references_into_another_company_resolve_to_nothing);
/// B's runs and schedules pointing at A's rows through the queue's plain references
/// (retry_of, from_step_id, trigger_id, last_run_id) must not pull A's rows in.
async fn queue_references_into_another_company_resolve_to_nothing(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let q = queue_world(&server, &w).await;
    let b = b_queue_flow(&server, &w).await;
    let tb = w.b.admin_token.as_str();
    let schedule = ok(
        &server,
        tb,
        "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false }) { id } }",
        json!({ "w": b.b_flow }),
    )
    .await;
    let b_schedule = str_field(&schedule["createSchedule"], "id");
    server
        .sql(&format!(
            "UPDATE runs SET retry_of = {ar}, from_step_id = {astep}, trigger_kind = 'schedule', trigger_id = {asch} WHERE id = {br};\n\
             UPDATE schedules SET last_run_id = {ar} WHERE id = {bs};",
            ar = lit(&w.a_runs[0]),
            astep = lit(&w.a_steps[0]),
            asch = lit(&q.a_schedule),
            br = lit(&w.b_run),
            bs = lit(&b_schedule),
        ))
        .await;
    let resp = server
        .gql(
            "query($run: ID!, $s: ID!) { run(id: $run) { id retryOf { id } fromStep { id } schedule { id name } } \
               schedule(id: $s) { lastRun { id } } }",
            json!({ "run": w.b_run, "s": b_schedule }),
            Some(tb),
        )
        .await;
    w.assert_no_leak(&resp, &[], "B's queue references pointing into A");
    let data = &resp["data"];
    for (what, value) in [
        ("Run.retryOf", &data["run"]["retryOf"]),
        ("Run.fromStep", &data["run"]["fromStep"]),
        ("Run.schedule", &data["run"]["schedule"]),
        ("Schedule.lastRun", &data["schedule"]["lastRun"]),
    ] {
        assert!(
            value.is_null(),
            "{what} resolved a row of company A: {resp:#}"
        );
    }
    server
        .sql(&format!(
            "UPDATE runs SET trigger_kind = 'webhook', trigger_id = {ah} WHERE id = {br};",
            ah = lit(&q.a_webhook),
            br = lit(&w.b_run),
        ))
        .await;
    let resp = server
        .gql(
            "query($run: ID!) { run(id: $run) { webhook { id name } } }",
            json!({ "run": w.b_run }),
            Some(tb),
        )
        .await;
    w.assert_no_leak(&resp, &[], "B's run pointing at A's webhook");
    assert!(resp["data"]["run"]["webhook"].is_null(), "{resp:#}");
}

both_backends!(company_b_cannot_see_or_touch_company_a_lifecycle);
/// The workflow lifecycle (issue 14) across companies: B tries every new field with A's
/// versions, projects, templates, shares and links, and reads its own next to A's.
async fn company_b_cannot_see_or_touch_company_a_lifecycle(backend: Backend) {
    use common::lifecycle::*;
    let server = start_for_snapshots(backend).await;
    let w = world(&server).await;
    let (ta, tb) = (w.a.admin_token.clone(), w.b.admin_token.clone());
    let (ta, tb) = (ta.as_str(), tb.as_str());
    let a1 = w.a_workflows[0].clone();
    let a2 = w.a_workflows[1].clone();
    let mut covered: BTreeSet<&str> = BTreeSet::new();

    // A's lifecycle data.
    let a_project = create_project(&server, ta, "A-SECRET project").await;
    try_move_workflow(&server, ta, &a1, Some(&a_project)).await;
    let recipe = create_workflow(
        &server,
        ta,
        json!({ "name": "Recipe", "steps": [step_input("click", "Go")] }),
    )
    .await;
    let recipe_id = str_field(&recipe, "id");
    let recipe_step = step_ids(&recipe)[0].clone();
    let recipe_shot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &w.a.company_id,
            workflow_id: &recipe_id,
            hash: "recipe-hash",
        },
    )
    .await;
    update_step(
        &server,
        ta,
        &recipe_step,
        json!({ "screenshotId": recipe_shot }),
    )
    .await;
    let public = publish(
        &server,
        ta,
        json!({ "w": recipe_id, "name": "Recipe template", "v": "PUBLIC", "shots": true }),
    )
    .await;
    let public_id = str_field(&public, "id");
    let company_template = str_field(
        &publish(
            &server,
            ta,
            json!({ "w": a1, "name": "A-SECRET template", "v": "COMPANY" }),
        )
        .await,
        "id",
    );
    set_visibility(&server, ta, &a2, "RESTRICTED").await;
    let a_share = try_share(&server, ta, &a2, &w.a.admin_id, "EDIT").await;
    let a_share = str_field(&a_share["data"]["shareWorkflow"], "id");
    let (a_link, a_token) = create_link(&server, ta, &a1).await;
    let (_, a1_versions) = versions(&server, ta, &a1).await;
    let a_extra: Vec<String> = [
        a_project.clone(),
        recipe_id.clone(),
        recipe_step.clone(),
        recipe_shot.clone(),
        company_template.clone(),
        a_share,
        a_link.clone(),
    ]
    .into_iter()
    .chain(a1_versions.iter().map(|v| str_field(v, "id")))
    .collect();
    let no_leak = |resp: &Value, sent: &[&str], context: &str| {
        w.assert_no_leak(resp, sent, context);
        let text = resp.to_string();
        for id in &a_extra {
            if !sent.contains(&id.as_str()) {
                assert!(
                    !text.contains(id.as_str()),
                    "{context}: leaks A's {id}: {resp:#}"
                );
            }
        }
    };

    // B's own lifecycle data.
    set_status(&server, tb, &w.b_workflow, "ACTIVE").await;
    // B's screenshot was attached in SQL after version 2: clearing it changes nothing of
    // version 2's definition, showing it again makes version 3.
    update_step(&server, tb, &w.b_steps[0], json!({ "screenshotId": null })).await;
    update_step(
        &server,
        tb,
        &w.b_steps[0],
        json!({ "screenshotId": w.b_screenshot }),
    )
    .await;
    let b_run = str_field(
        &common::runs::start_run(&server, tb, &w.b_workflow).await,
        "id",
    );
    let resp = try_create_project(&server, tb, "Bison project", None).await;
    let b_project = str_field(&resp["data"]["createProject"], "id");
    no_leak(&resp, &[], "createProject");
    covered.insert("Mutation.createProject");
    try_move_workflow(&server, tb, &w.b_workflow, Some(&b_project)).await;
    share(&server, tb, &w.b_workflow, &w.b.member_id, "VIEW").await;
    let resp = try_create_link(&server, tb, &w.b_workflow, None).await;
    no_leak(&resp, &[], "createShareLink");
    assert_eq!(
        resp["data"]["createShareLink"]["link"]["workflow"]["id"],
        w.b_workflow.as_str()
    );
    let b_token = str_field(&resp["data"]["createShareLink"], "token");
    covered.insert("CreatedShareLink.link");
    let b_template = publish(
        &server,
        tb,
        json!({ "w": w.b_workflow, "name": "Bison template", "v": "COMPANY", "shots": true }),
    )
    .await;
    let b_template_id = str_field(&b_template, "id");
    // One of B's version steps names A's screenshot: it must resolve to nothing.
    server.sql(&format!(
        "UPDATE workflow_step_snapshots SET screenshot_id = {} WHERE workflow_id = {} AND screenshot_id IS NULL",
        lit(&w.a_screenshots[0]), lit(&w.b_workflow)
    )).await;

    let before = company_snapshot(&server, &w.a.company_id, ta).await;

    // ----- Queries -----
    let diff = "query($w: ID!, $f: Int!, $t: Int!) { workflowVersionDiff(workflowId: $w, from: $f, to: $t) { \
        from { number workflow { id } } to { number } changedFields added { stepId } removed { stepId } \
        changed { stepId changedFields from { stepId screenshot { id } } to { stepId screenshot { id } } } } }";
    like_missing(
        &server,
        &w,
        tb,
        diff,
        "workflowVersionDiff",
        |id| json!({ "w": id, "f": 1, "t": 2 }),
        &a1,
    )
    .await;
    let resp = b_list(
        &server,
        &w,
        diff,
        json!({ "w": w.b_workflow, "f": 2, "t": 3 }),
        "diff of B's workflow",
        &[],
    )
    .await;
    no_leak(&resp, &[], "diff of B's workflow");
    let changed = &resp["data"]["workflowVersionDiff"]["changed"][0];
    assert_eq!(changed["changedFields"], json!(["screenshot"]), "{resp:#}");
    assert_eq!(changed["to"]["screenshot"]["id"], w.b_screenshot.as_str());
    assert!(
        changed["from"]["screenshot"].is_null(),
        "B's version naming A's screenshot: {resp:#}"
    );
    covered.extend([
        "Query.workflowVersionDiff",
        "WorkflowVersionDiff.from",
        "WorkflowVersionDiff.to",
        "WorkflowVersionDiff.added",
        "WorkflowVersionDiff.removed",
        "WorkflowVersionDiff.changed",
        "StepDiff.from",
        "StepDiff.to",
        "VersionStep.screenshot",
    ]);

    let projects = format!(
        "{{ projects {{ totalCount nodes {{ {PROJECT_FIELDS} workflows {{ totalCount nodes {{ id }} }} }} }} }}"
    );
    let resp = b_list(&server, &w, &projects, json!({}), "projects", &[]).await;
    no_leak(&resp, &[], "projects");
    let node = &resp["data"]["projects"]["nodes"][0];
    assert_eq!(resp["data"]["projects"]["totalCount"], 1);
    assert_eq!(node["id"], b_project.as_str());
    assert_eq!(node["createdBy"]["id"], w.b.admin_id.as_str());
    assert_eq!(
        node_ids(&node["workflows"]),
        std::slice::from_ref(&w.b_workflow)
    );
    assert_eq!(
        node["workflowCountsByStatus"],
        json!([{ "status": "ACTIVE", "count": 1 }])
    );
    let project_q = format!("query($id: ID!) {{ project(id: $id) {{ {PROJECT_FIELDS} }} }}");
    like_missing(
        &server,
        &w,
        tb,
        &project_q,
        "project",
        |id| json!({ "id": id }),
        &a_project,
    )
    .await;
    covered.extend([
        "Query.projects",
        "Query.project",
        "Project.createdBy",
        "Project.workflows",
        "Project.workflowCountsByStatus",
    ]);

    let templates = format!("{{ templates {{ totalCount nodes {{ {TEMPLATE_FIELDS} }} }} }}");
    let resp = b_list(&server, &w, &templates, json!({}), "templates", &[]).await;
    no_leak(&resp, &[], "templates");
    let listed: BTreeSet<String> = node_ids(&resp["data"]["templates"]).into_iter().collect();
    assert_eq!(
        listed,
        [public_id.clone(), b_template_id.clone()]
            .into_iter()
            .collect()
    );
    let template_q = format!("query($id: ID!) {{ template(id: $id) {{ {TEMPLATE_FIELDS} }} }}");
    let resp = b_list(
        &server,
        &w,
        &template_q,
        json!({ "id": public_id }),
        "A's PUBLIC template",
        &[],
    )
    .await;
    no_leak(&resp, &[], "A's PUBLIC template");
    let seen = &resp["data"]["template"];
    assert!(
        seen["createdBy"].is_null() && seen["sourceWorkflow"].is_null(),
        "{seen:#}"
    );
    let copy = &seen["steps"][0]["screenshot"];
    assert!(
        !copy["id"].is_null() && copy["id"] != recipe_shot.as_str(),
        "{seen:#}"
    );
    like_missing(
        &server,
        &w,
        tb,
        &template_q,
        "template",
        |id| json!({ "id": id }),
        &company_template,
    )
    .await;
    let resp = b_list(
        &server,
        &w,
        &template_q,
        json!({ "id": b_template_id }),
        "B's template",
        &[],
    )
    .await;
    let own = &resp["data"]["template"];
    assert_eq!(own["createdBy"]["id"], w.b.admin_id.as_str());
    assert_eq!(own["sourceWorkflow"]["id"], w.b_workflow.as_str());
    assert_eq!(own["parameters"], json!([]));
    assert!(!own["steps"][0]["screenshot"]["id"].is_null());
    covered.extend([
        "Query.templates",
        "Query.template",
        "WorkflowTemplate.createdBy",
        "WorkflowTemplate.sourceWorkflow",
        "WorkflowTemplate.steps",
        "WorkflowTemplate.parameters",
        "TemplateStep.screenshot",
    ]);

    // B's workflow with everything new under it.
    let nested = format!(
        "query($id: ID!, $run: ID!) {{ workflow(id: $id) {{ id project {{ id }} currentVersion \
           versions {{ totalCount nodes {{ {VERSION_FIELDS} }} }} version(number: 1) {{ number workflow {{ id }} }} \
           shares {{ {SHARE_FIELDS} }} shareLinks {{ {LINK_FIELDS} }} }} \
           run(id: $run) {{ version {{ number workflow {{ id }} }} }} }}"
    );
    let resp = b_list(
        &server,
        &w,
        &nested,
        json!({ "id": w.b_workflow, "run": b_run }),
        "B's workflow, lifecycle fields",
        &[],
    )
    .await;
    no_leak(&resp, &[], "B's workflow, lifecycle fields");
    let wf = &resp["data"]["workflow"];
    assert_eq!(wf["project"]["id"], b_project.as_str());
    assert_eq!(wf["versions"]["totalCount"], wf["currentVersion"]);
    for v in wf["versions"]["nodes"].as_array().unwrap() {
        assert_eq!(v["workflow"]["id"], w.b_workflow.as_str());
        assert!(
            v["createdBy"]["id"] == w.b.admin_id.as_str()
                || v["createdBy"]["id"] == w.b.member_id.as_str(),
            "{v:#}"
        );
        for step in v["steps"].as_array().unwrap() {
            assert!(w.b_steps.contains(&str_field(step, "stepId")), "{v:#}");
        }
    }
    assert_eq!(wf["shares"][0]["user"]["id"], w.b.member_id.as_str());
    assert_eq!(wf["shares"][0]["sharedBy"]["id"], w.b.admin_id.as_str());
    assert_eq!(wf["shares"][0]["workflow"]["id"], w.b_workflow.as_str());
    assert_eq!(wf["shareLinks"][0]["workflow"]["id"], w.b_workflow.as_str());
    assert_eq!(
        wf["shareLinks"][0]["createdBy"]["id"],
        w.b.admin_id.as_str()
    );
    assert_eq!(
        resp["data"]["run"]["version"]["workflow"]["id"],
        w.b_workflow.as_str()
    );
    covered.extend([
        "Workflow.project",
        "Workflow.versions",
        "Workflow.version",
        "Workflow.shares",
        "Workflow.shareLinks",
        "Run.version",
        "WorkflowVersion.workflow",
        "WorkflowVersion.createdBy",
        "WorkflowVersion.steps",
        "WorkflowShare.workflow",
        "WorkflowShare.user",
        "WorkflowShare.sharedBy",
        "ShareLink.workflow",
        "ShareLink.createdBy",
    ]);

    // ----- Mutations with A's ids -----
    for (query, vars_for, key) in [
        (
            "mutation($id: ID!) { restoreWorkflowVersion(workflowId: $id, number: 1) { id } }",
            &(|id: &str| json!({ "id": id })) as &dyn Fn(&str) -> Value,
            "Mutation.restoreWorkflowVersion",
        ),
        (
            "mutation($id: ID!) { publishTemplate(workflowId: $id, name: \"x\", visibility: PUBLIC) { id } }",
            &|id: &str| json!({ "id": id }),
            "Mutation.publishTemplate",
        ),
        (
            "mutation($id: ID!) { setWorkflowVisibility(workflowId: $id, visibility: RESTRICTED) { id } }",
            &|id: &str| json!({ "id": id }),
            "Mutation.setWorkflowVisibility",
        ),
        (
            "mutation($id: ID!, $u: ID!) { shareWorkflow(workflowId: $id, userId: $u, permission: EDIT) { id } }",
            &|id: &str| json!({ "id": id, "u": w.b.member_id }),
            "Mutation.shareWorkflow",
        ),
        (
            "mutation($id: ID!, $u: ID!) { unshareWorkflow(workflowId: $id, userId: $u) { id } }",
            &|id: &str| json!({ "id": id, "u": w.a.admin_id }),
            "Mutation.unshareWorkflow",
        ),
        (
            "mutation($id: ID!) { createShareLink(workflowId: $id) { token } }",
            &|id: &str| json!({ "id": id }),
            "Mutation.createShareLink",
        ),
        (
            "mutation($id: ID!, $p: ID) { moveWorkflow(workflowId: $id, projectId: $p) { id } }",
            &|id: &str| json!({ "id": id, "p": b_project }),
            "Mutation.moveWorkflow",
        ),
    ] {
        let field = query
            .split_once('{')
            .unwrap()
            .1
            .trim()
            .split('(')
            .next()
            .unwrap();
        for target in [&a1, &a2] {
            like_missing(&server, &w, tb, query, field, vars_for, target).await;
        }
        covered.insert(key);
    }
    like_missing(
        &server,
        &w,
        tb,
        "mutation($w: ID!, $p: ID) { moveWorkflow(workflowId: $w, projectId: $p) { id } }",
        "moveWorkflow",
        |id| json!({ "w": w.b_workflow, "p": id }),
        &a_project,
    )
    .await;
    like_missing(&server, &w, tb, "mutation($w: ID!, $u: ID!) { shareWorkflow(workflowId: $w, userId: $u, permission: VIEW) { id } }", "shareWorkflow", |id| json!({ "w": w.b_workflow, "u": id }), &w.a.member_id).await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { updateProject(id: $id, name: \"pwned\") { id } }",
        "updateProject",
        |id| json!({ "id": id }),
        &a_project,
    )
    .await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { deleteProject(id: $id) }",
        "deleteProject",
        |id| json!({ "id": id }),
        &a_project,
    )
    .await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { revokeShareLink(id: $id) { id } }",
        "revokeShareLink",
        |id| json!({ "id": id }),
        &a_link,
    )
    .await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { instantiateTemplate(templateId: $id) { id } }",
        "instantiateTemplate",
        |id| json!({ "id": id }),
        &company_template,
    )
    .await;
    like_missing(
        &server,
        &w,
        tb,
        "mutation($id: ID!) { rateTemplate(templateId: $id, stars: 1) { id } }",
        "rateTemplate",
        |id| json!({ "id": id }),
        &company_template,
    )
    .await;
    for template in [&company_template, &public_id] {
        like_missing(
            &server,
            &w,
            tb,
            "mutation($id: ID!) { unpublishTemplate(id: $id) { id } }",
            "unpublishTemplate",
            |id| json!({ "id": id }),
            template,
        )
        .await;
        like_missing(
            &server,
            &w,
            tb,
            "mutation($id: ID!) { deleteTemplate(id: $id) }",
            "deleteTemplate",
            |id| json!({ "id": id }),
            template,
        )
        .await;
    }
    covered.extend([
        "Mutation.updateProject",
        "Mutation.deleteProject",
        "Mutation.revokeShareLink",
        "Mutation.unpublishTemplate",
        "Mutation.deleteTemplate",
    ]);

    let after = company_snapshot(&server, &w.a.company_id, ta).await;
    assert_unchanged(
        &before,
        &after,
        "after company B tried every lifecycle field with A's ids",
    );

    // A token is a capability of its holder, whatever their company (reading counts an
    // access of A's link, hence after the snapshot); it names no A id.
    let resp = shared(&server, &a_token, Some(tb)).await;
    assert!(!resp["data"]["sharedWorkflow"].is_null(), "{resp:#}");
    let text = resp.to_string();
    for id in w
        .a_ids()
        .iter()
        .chain(&a_extra)
        .filter(|id| **id != w.a_screenshots[0])
    {
        assert!(
            !text.contains(id.as_str()),
            "the shared view names A's {id}: {resp:#}"
        );
    }
    let resp = shared(&server, &b_token, None).await;
    assert_eq!(
        resp["data"]["sharedWorkflow"]["steps"][0]["screenshot"]["contentType"], "image/png",
        "{resp:#}"
    );
    covered.extend([
        "Query.sharedWorkflow",
        "SharedWorkflow.steps",
        "SharedStep.screenshot",
    ]);

    // Using and rating A's PUBLIC template makes B's own rows, with nothing of A in them.
    let resp = try_instantiate(&server, tb, &public_id, json!({})).await;
    no_leak(&resp, &[], "instantiating A's PUBLIC template");
    let made = &resp["data"]["instantiateTemplate"];
    assert_eq!(made["createdBy"]["id"], w.b.admin_id.as_str());
    assert!(made["steps"][0]["screenshot"].is_null());
    covered.insert("Mutation.instantiateTemplate");
    let resp = b_list(&server, &w, "mutation($id: ID!) { rateTemplate(templateId: $id, stars: 4) { viewerRating ratingCount } }", json!({ "id": public_id }), "rating A's PUBLIC template", &[]).await;
    assert_eq!(resp["data"]["rateTemplate"]["viewerRating"], 4);
    covered.insert("Mutation.rateTemplate");

    // Relay's node lookup with A's lifecycle ids: like missing ones, except A's PUBLIC
    // template and the screenshot copies it includes, which B reads exactly as the
    // catalogue (`template(id:)`) shows them.
    let mut node_types = BTreeSet::new();
    for id in &a_extra {
        if *id == recipe_shot || *id == recipe_step || *id == recipe_id {
            continue; // a workflow, step and screenshot: the main test's kinds
        }
        node_types.insert(a_node_like_missing(&server, &w, ta, id).await);
    }
    let template_fields = "__typename id ... on WorkflowTemplate { name isOwn createdBy { id } \
         sourceWorkflow { id } sourceVersion steps { fieldLabel screenshot { id contentType } } }";
    let by_node = ok(
        &server,
        tb,
        &format!("query($id: ID!) {{ node(id: $id) {{ {template_fields} }} }}"),
        json!({ "id": public_id }),
    )
    .await;
    let by_field = ok(
        &server,
        tb,
        &format!("query($id: ID!) {{ template(id: $id) {{ {template_fields} }} }}"),
        json!({ "id": public_id }),
    )
    .await;
    assert_eq!(
        by_node["node"], by_field["template"],
        "A's PUBLIC template by node"
    );
    no_leak(
        &json!({ "data": by_node }),
        &[],
        "A's PUBLIC template by node",
    );
    node_types.insert(str_field(&by_node["node"], "__typename"));
    let public_shot = str_field(&by_node["node"]["steps"][0]["screenshot"], "id");
    let shot_node = ok(
        &server,
        tb,
        &format!("query($id: ID!) {{ node(id: $id) {{ {NODE_FIELDS} }} }}"),
        json!({ "id": public_shot }),
    )
    .await;
    no_leak(
        &json!({ "data": shot_node }),
        &[],
        "A's PUBLIC template's screenshot by node",
    );
    assert_eq!(shot_node["node"]["id"], public_shot.as_str());
    node_types.insert(str_field(&shot_node["node"], "__typename"));
    assert_node_types_met(LIFECYCLE, &node_types);

    let expected: BTreeSet<&str> = LIFECYCLE_ROOT_CASES
        .iter()
        .chain(LIFECYCLE_NESTED_CASES)
        .map(|(k, _)| *k)
        .collect();
    let not_run: Vec<&&str> = expected.difference(&covered).collect();
    let unlisted: Vec<&&str> = covered.difference(&expected).collect();
    assert!(
        not_run.is_empty() && unlisted.is_empty(),
        "lifecycle isolation cases not run: {not_run:?}; run but not listed: {unlisted:?}"
    );
}
