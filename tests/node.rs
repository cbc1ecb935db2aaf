//! Relay object identification: every entity with an id is a `Node`, and `node(id:)` /
//! `nodes(ids:)` find any object of the viewer's company again (isolation between companies
//! is in tests/isolation.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::{new_id, team};
use common::runs::{active_workflow, outcome, report_step, start_run};
use common::{Backend, TestServer, assert_error_code, str_field};
use serde_json::json;

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename id } }";
const NODES: &str = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }";

both_backends!(every_kind_of_object_is_found_again_by_its_id);
async fn every_kind_of_object_is_found_again_by_its_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Refetch", 2).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let report = report_step(&server, token, &run, &steps[0], outcome("FAILED")).await;
    let log = str_field(&report["healthLog"], "id");
    let shot = common::fixtures::insert_screenshot(
        &server,
        &common::fixtures::ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &workflow,
            hash: "refetch-hash",
        },
    )
    .await;
    let note = common::fixtures::insert_notification(
        &server,
        &common::fixtures::NotificationRow {
            company_id: &acme.company_id,
            workflow_id: Some(&workflow),
            severity: "info",
            title: "Refetch me",
            read_by: None,
            created_at: common::fixtures::ts_at(10),
        },
    )
    .await;
    let expected = [
        (acme.company_id.as_str(), "Company"),
        (acme.member_id.as_str(), "User"),
        (workflow.as_str(), "Workflow"),
        (steps[1].as_str(), "Step"),
        (shot.as_str(), "Screenshot"),
        (run.as_str(), "Run"),
        (log.as_str(), "HealthLog"),
        (note.as_str(), "Notification"),
    ];
    for (id, typename) in expected {
        let data = server.gql_ok(NODE, json!({ "id": id }), Some(token)).await;
        assert_eq!(data["node"]["__typename"], typename, "{id}: {data}");
        assert_eq!(data["node"]["id"], id);
    }
    // The object is the same one its typed field gives (a fragment reads its own fields).
    let data = server
        .gql_ok(
            "query($id: ID!) { node(id: $id) { ... on Workflow { name steps { id } } } }",
            json!({ "id": workflow }),
            Some(token),
        )
        .await;
    assert_eq!(data["node"]["name"], "Refetch");
    assert_eq!(data["node"]["steps"].as_array().unwrap().len(), 2);

    // nodes: in the order asked, repeats answered again, missing ones null with NOT_FOUND
    // at their index.
    let missing = new_id();
    let ids = json!([run, missing, acme.company_id, run, "not-even-a-uuid"]);
    let resp = server.gql(NODES, json!({ "ids": ids }), Some(token)).await;
    let nodes = resp["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["__typename"], "Run", "{resp:#}");
    assert!(nodes[1].is_null());
    assert_eq!(nodes[2]["__typename"], "Company");
    assert_eq!(nodes[3]["id"], run.as_str());
    assert!(nodes[4].is_null());
    let paths: Vec<_> = resp["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].clone(), e["extensions"]["code"].clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            (json!(["nodes", 1]), json!("NOT_FOUND")),
            (json!(["nodes", 4]), json!("NOT_FOUND"))
        ],
        "{resp:#}"
    );

    // Bounded, and only for a signed-in viewer.
    let too_many: Vec<String> = (0..101).map(|_| new_id()).collect();
    let resp = server
        .gql(NODES, json!({ "ids": too_many }), Some(token))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "101 ids");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "ids", "{resp:#}");
    let resp = server.gql(NODE, json!({ "id": workflow }), None).await;
    assert_error_code(&resp, "UNAUTHENTICATED", "node without a token");
}
