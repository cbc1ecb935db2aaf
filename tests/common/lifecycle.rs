//! Helpers for the workflow lifecycle (issue 14): versions, projects, templates, shares
//! and public links, over HTTP like a client.

use serde_json::{Value, json};

use super::{TestServer, str_field};

/// Every field of a `WorkflowVersion` a test looks at, with its steps.
pub const VERSION_FIELDS: &str = "id number summary restoredFrom name description tags \
     stepCount createdAt createdBy { id } workflow { id } \
     steps { stepId stepNumber actionType fieldLabel instruction selectors actionData \
             screenshot { id } }";

pub const PROJECT_FIELDS: &str = "id name description createdAt updatedAt createdBy { id } \
     workflowCount workflowCountsByStatus { status count }";

pub const TEMPLATE_FIELDS: &str = "id name description tags visibility published isOwn \
     stepCount usageCount ratingAverage ratingCount viewerRating includesScreenshots \
     createdAt updatedAt sourceVersion createdBy { id } sourceWorkflow { id } \
     parameters { name type description default required } \
     steps { stepNumber actionType fieldLabel instruction aiConfidence aiModel selectors \
             elementMeta pageContext actionData domContext \
             screenshot { id contentType width height url } }";

pub const SHARE_FIELDS: &str =
    "id permission createdAt updatedAt user { id } sharedBy { id } workflow { id }";

pub const LINK_FIELDS: &str = "id active accessCount lastAccessedAt createdAt expiresAt \
     revokedAt createdBy { id } workflow { id }";

pub const SHARED_WORKFLOW_FIELDS: &str = "name description tags stepCount expiresAt \
     steps { stepNumber actionType fieldLabel instruction pageContext \
             screenshot { contentType width height url } }";

/// Fails with the response unless it has no errors; returns `data`.
#[track_caller]
fn data_of(resp: Value, what: &str) -> Value {
    assert!(resp["errors"].is_null(), "{what} failed: {resp:#}");
    resp["data"].clone()
}

/// A workflow's current version number and its versions, newest first.
pub async fn versions(server: &TestServer, token: &str, workflow_id: &str) -> (i64, Vec<Value>) {
    let resp = server
        .gql(
            &format!(
                "query($id: ID!) {{ workflow(id: $id) {{ currentVersion \
                   versions(first: 100) {{ totalCount nodes {{ {VERSION_FIELDS} }} }} }} }}"
            ),
            json!({ "id": workflow_id }),
            Some(token),
        )
        .await;
    let data = data_of(resp, "versions");
    let workflow = &data["workflow"];
    let nodes = workflow["versions"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        workflow["versions"]["totalCount"].as_u64(),
        Some(nodes.len() as u64),
        "totalCount of versions: {workflow:#}"
    );
    (workflow["currentVersion"].as_i64().unwrap_or(-1), nodes)
}

/// The version numbers of a workflow, newest first.
pub async fn version_numbers(server: &TestServer, token: &str, workflow_id: &str) -> Vec<i64> {
    versions(server, token, workflow_id)
        .await
        .1
        .iter()
        .map(|v| v["number"].as_i64().unwrap_or(-1))
        .collect()
}

pub async fn try_create_project(
    server: &TestServer,
    token: &str,
    name: &str,
    description: Option<&str>,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($name: String!, $d: String) {{ createProject(name: $name, description: $d) {{ {PROJECT_FIELDS} }} }}"
            ),
            json!({ "name": name, "d": description }),
            Some(token),
        )
        .await
}

/// Creates a project; returns its id.
pub async fn create_project(server: &TestServer, token: &str, name: &str) -> String {
    let data = data_of(
        try_create_project(server, token, name, None).await,
        "createProject",
    );
    str_field(&data["createProject"], "id")
}

pub async fn try_move_workflow(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    project_id: Option<&str>,
) -> Value {
    server
        .gql(
            "mutation($w: ID!, $p: ID) { moveWorkflow(workflowId: $w, projectId: $p) { id project { id } } }",
            json!({ "w": workflow_id, "p": project_id }),
            Some(token),
        )
        .await
}

/// The `publishTemplate` mutation with every argument as a variable.
pub fn publish_mutation() -> String {
    format!(
        "mutation($w: ID!, $name: String!, $d: String, $p: [TemplateParameterInput!], \
           $v: TemplateVisibility!, $tags: [String!], $version: Int, $shots: Boolean) {{ \
           publishTemplate(workflowId: $w, name: $name, description: $d, parameters: $p, \
             visibility: $v, tags: $tags, version: $version, includeScreenshots: $shots) \
           {{ {TEMPLATE_FIELDS} }} }}"
    )
}

pub async fn try_publish(server: &TestServer, token: &str, variables: Value) -> Value {
    server
        .gql(&publish_mutation(), variables, Some(token))
        .await
}

/// Publishes a template; returns it.
pub async fn publish(server: &TestServer, token: &str, variables: Value) -> Value {
    data_of(
        try_publish(server, token, variables).await,
        "publishTemplate",
    )["publishTemplate"]
        .clone()
}

pub async fn try_instantiate(
    server: &TestServer,
    token: &str,
    template_id: &str,
    parameters: Value,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($t: ID!, $p: JSON, $name: String) {{ instantiateTemplate(templateId: $t, parameters: $p, name: $name) {{ {} currentVersion project {{ id }} }} }}",
                super::fixtures::workflow_fields()
            ),
            json!({ "t": template_id, "p": parameters }),
            Some(token),
        )
        .await
}

pub async fn try_create_link(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    expires_at: Option<&str>,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($w: ID!, $e: DateTime) {{ createShareLink(workflowId: $w, expiresAt: $e) {{ token link {{ {LINK_FIELDS} }} }} }}"
            ),
            json!({ "w": workflow_id, "e": expires_at }),
            Some(token),
        )
        .await
}

/// Creates a public link; returns (link id, token).
pub async fn create_link(server: &TestServer, token: &str, workflow_id: &str) -> (String, String) {
    let data = data_of(
        try_create_link(server, token, workflow_id, None).await,
        "createShareLink",
    );
    let created = &data["createShareLink"];
    (
        str_field(&created["link"], "id"),
        str_field(created, "token"),
    )
}

/// `sharedWorkflow(token)` with or without a bearer token.
pub async fn shared(server: &TestServer, link_token: &str, bearer: Option<&str>) -> Value {
    server
        .gql(
            &format!(
                "query($t: String!) {{ sharedWorkflow(token: $t) {{ {SHARED_WORKFLOW_FIELDS} }} }}"
            ),
            json!({ "t": link_token }),
            bearer,
        )
        .await
}

pub async fn try_set_visibility(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    visibility: &str,
) -> Value {
    server
        .gql(
            "mutation($w: ID!, $v: WorkflowVisibility!) { setWorkflowVisibility(workflowId: $w, visibility: $v) { id visibility } }",
            json!({ "w": workflow_id, "v": visibility }),
            Some(token),
        )
        .await
}

/// Makes a workflow RESTRICTED (or COMPANY-visible again).
pub async fn set_visibility(server: &TestServer, token: &str, workflow_id: &str, visibility: &str) {
    data_of(
        try_set_visibility(server, token, workflow_id, visibility).await,
        "setWorkflowVisibility",
    );
}

pub async fn try_share(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    user_id: &str,
    permission: &str,
) -> Value {
    server
        .gql(
            &format!(
                "mutation($w: ID!, $u: ID!, $p: WorkflowPermission!) {{ shareWorkflow(workflowId: $w, userId: $u, permission: $p) {{ {SHARE_FIELDS} }} }}"
            ),
            json!({ "w": workflow_id, "u": user_id, "p": permission }),
            Some(token),
        )
        .await
}

/// Shares a workflow with a member.
pub async fn share(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    user_id: &str,
    permission: &str,
) {
    data_of(
        try_share(server, token, workflow_id, user_id, permission).await,
        "shareWorkflow",
    );
}
