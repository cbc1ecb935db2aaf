//! Projects: grouping workflows, filtering by project, counts by status, and deletion that
//! leaves the workflows in place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::lifecycle::*;
use common::{Backend, TestServer, assert_error_code, str_field};
use serde_json::json;

both_backends!(projects_group_filter_count_and_survive_deletion);
async fn projects_group_filter_count_and_survive_deletion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let member = acme.member_token.as_str();

    let resp = try_create_project(&server, member, "Billing", Some("  money things ")).await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let billing = &resp["data"]["createProject"];
    assert_eq!(billing["name"], "Billing");
    assert_eq!(billing["description"], "money things");
    assert_eq!(billing["createdBy"]["id"], acme.member_id.as_str());
    assert_eq!(billing["workflowCount"], 0);
    let billing = str_field(billing, "id");
    let ops = create_project(&server, admin, "Ops").await;

    let draft = str_field(
        &simple_workflow(&server, member, "Draft one", 1).await,
        "id",
    );
    let active = str_field(
        &simple_workflow(&server, member, "Active one", 1).await,
        "id",
    );
    set_status(&server, member, &active, "ACTIVE").await;
    let loose = str_field(&simple_workflow(&server, member, "Loose", 1).await, "id");
    for id in [&draft, &active] {
        let resp = try_move_workflow(&server, member, id, Some(&billing)).await;
        assert_eq!(
            resp["data"]["moveWorkflow"]["project"]["id"],
            billing.as_str(),
            "{resp:#}"
        );
    }
    // Created straight into a project.
    let created = ok(
        &server,
        member,
        "mutation($p: ID) { createWorkflow(input: { name: \"Ops flow\", projectId: $p }) { id project { id name } } }",
        json!({ "p": ops }),
    )
    .await;
    assert_eq!(created["createWorkflow"]["project"]["name"], "Ops");
    let ops_flow = str_field(&created["createWorkflow"], "id");

    // Filtering by project, at the root and under the project.
    let list = "query($p: ID) { workflows(filter: { projectId: $p }, first: 100) { totalCount nodes { id } } }";
    let data = ok(&server, member, list, json!({ "p": billing })).await;
    let ids: std::collections::BTreeSet<String> =
        node_ids(&data["workflows"]).into_iter().collect();
    assert_eq!(ids, [draft.clone(), active.clone()].into_iter().collect());
    assert_eq!(data["workflows"]["totalCount"], 2);
    let data = ok(
        &server,
        member,
        &format!(
            "query($id: ID!) {{ project(id: $id) {{ {PROJECT_FIELDS} workflows(filter: {{ status: [ACTIVE] }}) {{ totalCount nodes {{ id }} }} }} }}"
        ),
        json!({ "id": billing }),
    )
    .await;
    let project = &data["project"];
    assert_eq!(project["workflowCount"], 2);
    assert_eq!(
        project["workflowCountsByStatus"],
        json!([{ "status": "DRAFT", "count": 1 }, { "status": "ACTIVE", "count": 1 }])
    );
    assert_eq!(
        node_ids(&project["workflows"]),
        std::slice::from_ref(&active)
    );
    let data = ok(
        &server,
        admin,
        "{ projects(first: 10) { totalCount nodes { name workflowCount } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data["projects"]["nodes"],
        json!([{ "name": "Billing", "workflowCount": 2 }, { "name": "Ops", "workflowCount": 1 }])
    );
    assert_eq!(data["projects"]["totalCount"], 2);

    // Out of a project again.
    let resp = try_move_workflow(&server, member, &active, None).await;
    assert!(
        resp["data"]["moveWorkflow"]["project"].is_null(),
        "{resp:#}"
    );
    try_move_workflow(&server, member, &active, Some(&billing)).await;

    // Renaming: admins and the creator only.
    let rename = "mutation($id: ID!, $name: String, $d: String) { updateProject(id: $id, name: $name, description: $d) { id name description } }";
    let resp = server
        .gql(
            rename,
            json!({ "id": ops, "name": "Mine now" }),
            Some(member),
        )
        .await;
    assert_error_code(&resp, "FORBIDDEN", "a member renaming the admin's project");
    let data = ok(
        &server,
        member,
        rename,
        json!({ "id": billing, "name": "Billing 2", "d": null }),
    )
    .await;
    assert_eq!(
        data["updateProject"],
        json!({ "id": billing, "name": "Billing 2", "description": null })
    );

    // Deleting keeps the workflows, unassigned.
    let resp = server
        .gql(
            "mutation($id: ID!) { deleteProject(id: $id) }",
            json!({ "id": ops }),
            Some(member),
        )
        .await;
    assert_error_code(&resp, "FORBIDDEN", "a member deleting the admin's project");
    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteProject(id: $id) }",
        json!({ "id": billing }),
    )
    .await;
    for id in [&draft, &active, &loose] {
        let workflow = ok(
            &server,
            member,
            "query($id: ID!) { workflow(id: $id) { id project { id } } }",
            json!({ "id": id }),
        )
        .await;
        assert!(workflow["workflow"]["project"].is_null(), "{workflow:#}");
    }
    let resp = server
        .gql(
            "query($id: ID!) { project(id: $id) { id } }",
            json!({ "id": billing }),
            Some(admin),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "a deleted project");
    let data = ok(&server, member, list, json!({ "p": billing })).await;
    assert_eq!(data["workflows"]["totalCount"], 0);
    let data = ok(&server, member, list, json!({ "p": ops })).await;
    assert_eq!(node_ids(&data["workflows"]), [ops_flow]);
}

both_backends!(project_input_is_checked);
async fn project_input_is_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let other = team(&server, "Other").await;
    let admin = acme.admin_token.as_str();
    for (name, description, field) in [
        ("  ", None, "name"),
        (&*"n".repeat(201), None, "name"),
        ("ok", Some(&*"d".repeat(5_001)), "description"),
        ("bad\u{0}name", None, "name"),
    ] {
        let resp = try_create_project(&server, admin, name, description).await;
        assert_error_code(&resp, "BAD_USER_INPUT", field);
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{resp:#}");
    }
    let project = create_project(&server, admin, "Real").await;
    let workflow = str_field(&simple_workflow(&server, admin, "W", 1).await, "id");
    // Unknown and foreign projects look alike.
    let foreign = create_project(&server, &other.admin_token, "Theirs").await;
    let resp = try_move_workflow(&server, admin, &workflow, Some(&foreign)).await;
    assert_error_code(&resp, "NOT_FOUND", "moving into another company's project");
    let missing = try_move_workflow(&server, admin, &workflow, Some(&new_id())).await;
    assert_eq!(
        resp["errors"][0]["message"], missing["errors"][0]["message"],
        "another company's project is answered like a missing one"
    );
    // Another company's workflow cannot be moved into one's own project.
    let theirs = str_field(
        &simple_workflow(&server, &other.admin_token, "T", 1).await,
        "id",
    );
    let resp = try_move_workflow(&server, admin, &theirs, Some(&project)).await;
    assert_error_code(&resp, "NOT_FOUND", "moving another company's workflow");
    let resp = server
        .gql(
            "mutation($p: ID) { createWorkflow(input: { name: \"x\", projectId: $p }) { id } }",
            json!({ "p": foreign }),
            Some(admin),
        )
        .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "creating into another company's project",
    );
}

both_backends!(deleting_a_project_while_workflows_move_into_it_leaves_none_pointing_at_it);
/// Moves into a project racing its deletion (side by side on PostgreSQL) either land
/// before it and are unassigned with it, or come after and find it gone (NOT_FOUND);
/// never a workflow pointing at a deleted project, never a server error.
async fn deleting_a_project_while_workflows_move_into_it_leaves_none_pointing_at_it(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let mut workflows = Vec::new();
    for i in 0..6 {
        workflows.push(str_field(
            &simple_workflow(&server, admin, &format!("W{i}"), 1).await,
            "id",
        ));
    }
    for round in 0..3 {
        let project = create_project(&server, admin, &format!("Doomed {round}")).await;
        let moves = workflows.iter().map(|id| {
            let (server, project) = (&server, project.as_str());
            async move { try_move_workflow(server, admin, id, Some(project)).await }
        });
        let delete = server.gql(
            "mutation($id: ID!) { deleteProject(id: $id) }",
            json!({ "id": project }),
            Some(admin),
        );
        let (moved, deleted) = futures_util::join!(futures_util::future::join_all(moves), delete);
        assert!(deleted["errors"].is_null(), "{deleted:#}");
        for resp in moved {
            if let Some(code) = common::error_code(&resp) {
                assert_eq!(code, "NOT_FOUND", "{resp:#}");
            }
        }
        let dangling = server
            .sql_count(&format!("workflows WHERE project_id = {}", lit(&project)))
            .await;
        assert_eq!(
            dangling, 0,
            "round {round}: workflows point at a deleted project"
        );
    }
}
