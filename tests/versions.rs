//! Workflow versions: every change of a definition makes one immutable version; versions
//! can be listed, compared and restored, and runs remember the version they ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::lifecycle::*;
use common::runs::{active_workflow, start_run};
use common::{Backend, TestServer, assert_error_code, error_code, str_field};
use serde_json::{Value, json};

fn summary(version: &Value) -> String {
    str_field(version, "summary")
}

fn labels(version: &Value) -> Vec<String> {
    version["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fieldLabel"].as_str().unwrap_or("").to_owned())
        .collect()
}

both_backends!(each_edit_kind_makes_one_version);
async fn each_edit_kind_makes_one_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let member = acme.member_token.as_str();
    let created = create_workflow(
        &server,
        admin,
        json!({ "name": "Invoices", "steps": step_inputs("Invoices step ", 2) }),
    )
    .await;
    let id = str_field(&created, "id");
    let steps = step_ids(&created);
    let (current, list) = versions(&server, admin, &id).await;
    assert_eq!(current, 1, "a new workflow is version 1");
    assert_eq!(list.len(), 1);
    assert_eq!(summary(&list[0]), "created");
    assert_eq!(list[0]["createdBy"]["id"], acme.admin_id.as_str());
    assert_eq!(list[0]["stepCount"], 2);
    assert_eq!(
        labels(&list[0]),
        ["Invoices step 1", "Invoices step 2"],
        "version 1 holds the steps as created"
    );

    // Each kind of edit, one at a time: exactly one more version each, by its author.
    let mut expected = 1;
    let mut edit = async |what: &str, token: &str, author: &str| {
        expected += 1;
        let (current, list) = versions(&server, token, &id).await;
        assert_eq!(current, expected, "{what}: currentVersion");
        assert_eq!(list.len() as i64, expected, "{what}: one version more");
        assert_eq!(list[0]["number"], expected);
        assert_eq!(list[0]["createdBy"]["id"], author, "{what}: author");
        summary(&list[0])
    };

    update_workflow(&server, member, &id, json!({ "name": "Invoices v2" })).await;
    assert_eq!(
        edit("rename", member, &acme.member_id).await,
        "changed name"
    );

    add_step(&server, member, &id, step_input("click", "Third"), None).await;
    assert_eq!(
        edit("addStep", member, &acme.member_id).await,
        "added step 3"
    );

    update_step(
        &server,
        admin,
        &steps[0],
        json!({ "fieldLabel": "First, edited" }),
    )
    .await;
    assert_eq!(
        edit("updateStep", admin, &acme.admin_id).await,
        "edited step 1"
    );

    let reordered = ok(
        &server,
        admin,
        "mutation($w: ID!, $ids: [ID!]!) { reorderSteps(workflowId: $w, stepIds: $ids) { id } }",
        json!({ "w": id, "ids": [steps[1], steps[0], step_ids(&get_workflow(&server, admin, &id).await)[2]] }),
    )
    .await;
    assert_eq!(reordered["reorderSteps"].as_array().unwrap().len(), 3);
    assert_eq!(
        edit("reorderSteps", admin, &acme.admin_id).await,
        "reordered steps"
    );

    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteStep(id: $id) }",
        json!({ "id": steps[1] }),
    )
    .await;
    assert_eq!(
        edit("deleteStep", admin, &acme.admin_id).await,
        "deleted step 1"
    );

    let upload = multipart_request(
        &server,
        &server.client,
        Some(admin),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": id, "s": steps[0] }),
        png(3, 3, 7),
    )
    .await;
    assert!(upload["errors"].is_null(), "{upload:#}");
    assert_eq!(
        edit("uploadScreenshot on a step", admin, &acme.admin_id).await,
        "changed the screenshot of step 1"
    );

    // Several fields in one edit: one version.
    update_workflow(
        &server,
        admin,
        &id,
        json!({ "description": "monthly", "tags": ["billing", "finance"] }),
    )
    .await;
    assert_eq!(
        edit("description and tags at once", admin, &acme.admin_id).await,
        "changed description, tags"
    );

    // Not definition changes: a status change, an edit that changes nothing, an upload
    // without a step.
    set_status(&server, admin, &id, "ACTIVE").await;
    update_workflow(&server, admin, &id, json!({ "name": "Invoices v2" })).await;
    update_step(
        &server,
        admin,
        &steps[0],
        json!({ "fieldLabel": "First, edited" }),
    )
    .await;
    let upload = multipart_request(
        &server,
        &server.client,
        Some(admin),
        "mutation($w: ID!, $file: Upload!) { uploadScreenshot(workflowId: $w, file: $file) { id } }",
        json!({ "w": id }),
        png(3, 3, 8),
    )
    .await;
    assert!(upload["errors"].is_null(), "{upload:#}");
    let (current, list) = versions(&server, admin, &id).await;
    assert_eq!(
        current, expected,
        "no version for edits that change no definition"
    );
    assert_eq!(list.len() as i64, expected);

    // The newest version is the definition as it is now.
    let now = get_workflow(&server, admin, &id).await;
    let newest = &list[0];
    assert_eq!(newest["name"], now["name"]);
    assert_eq!(newest["description"], "monthly");
    assert_eq!(newest["tags"], json!(["billing", "finance"]));
    let version_steps: Vec<String> = newest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "stepId"))
        .collect();
    assert_eq!(version_steps, step_ids(&now));
    assert!(!newest["steps"][0]["screenshot"].is_null(), "{newest:#}");
    // Older versions are as they were.
    let v1 = list.iter().find(|v| v["number"] == 1).unwrap();
    assert_eq!(v1["name"], "Invoices");
    assert_eq!(labels(v1), ["Invoices step 1", "Invoices step 2"]);

    // Duplicating starts the copy's history.
    let copy = ok(
        &server,
        member,
        "mutation($id: ID!) { duplicateWorkflow(id: $id) { id currentVersion } }",
        json!({ "id": id }),
    )
    .await;
    let copy_id = str_field(&copy["duplicateWorkflow"], "id");
    let (current, list) = versions(&server, member, &copy_id).await;
    assert_eq!(current, 1);
    assert_eq!(copy["duplicateWorkflow"]["currentVersion"], 1);
    assert_eq!(
        summary(&list[0]),
        format!("copied from version {expected} of \"Invoices v2\"")
    );
}

both_backends!(a_diff_names_the_changed_step_fields);
async fn a_diff_names_the_changed_step_fields(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let other = team(&server, "Other").await;
    let admin = acme.admin_token.as_str();
    let created = create_workflow(
        &server,
        admin,
        json!({ "name": "Diffed", "steps": [step_input("click", "A"), step_input("type", "B"), step_input("click", "C")] }),
    )
    .await;
    let id = str_field(&created, "id");
    let [a, b, c] = <[String; 3]>::try_from(step_ids(&created)).unwrap();
    update_step(
        &server,
        admin,
        &b,
        json!({ "selectors": { "css": "#changed" }, "instruction": "type here now" }),
    )
    .await;
    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteStep(id: $id) }",
        json!({ "id": c }),
    )
    .await;
    let d = str_field(
        &add_step(&server, admin, &id, step_input("submit", "D"), None).await,
        "id",
    );
    update_workflow(&server, admin, &id, json!({ "name": "Diffed again" })).await;
    ok(
        &server,
        admin,
        "mutation($w: ID!, $ids: [ID!]!) { reorderSteps(workflowId: $w, stepIds: $ids) { id } }",
        json!({ "w": id, "ids": [b, a, d] }),
    )
    .await;
    assert_eq!(
        version_numbers(&server, admin, &id).await,
        [6, 5, 4, 3, 2, 1]
    );

    let diff = "query($w: ID!, $from: Int!, $to: Int!) { workflowVersionDiff(workflowId: $w, from: $from, to: $to) { \
        from { number } to { number } changedFields \
        added { stepId stepNumber fieldLabel } removed { stepId stepNumber fieldLabel } \
        changed { stepId changedFields from { stepNumber selectors instruction } to { stepNumber selectors instruction } } } }";
    let data = ok(&server, admin, diff, json!({ "w": id, "from": 1, "to": 6 })).await;
    let d16 = &data["workflowVersionDiff"];
    assert_eq!(d16["from"]["number"], 1);
    assert_eq!(d16["to"]["number"], 6);
    assert_eq!(d16["changedFields"], json!(["name"]));
    assert_eq!(
        d16["added"],
        json!([{ "stepId": d, "stepNumber": 3, "fieldLabel": "D" }])
    );
    assert_eq!(
        d16["removed"],
        json!([{ "stepId": c, "stepNumber": 3, "fieldLabel": "C" }])
    );
    let changed: Vec<(String, Value)> = d16["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (str_field(s, "stepId"), s["changedFields"].clone()))
        .collect();
    assert_eq!(
        changed,
        [
            (b.clone(), json!(["stepNumber", "selectors", "instruction"])),
            (a.clone(), json!(["stepNumber"])),
        ],
        "{d16:#}"
    );
    let b_change = &d16["changed"][0];
    assert_eq!(b_change["from"]["stepNumber"], 2);
    assert_eq!(b_change["to"]["stepNumber"], 1);
    assert_eq!(b_change["to"]["selectors"], json!({ "css": "#changed" }));
    assert_eq!(b_change["to"]["instruction"], "type here now");

    // Only the step edit: one changed step with exactly the edited fields.
    let data = ok(&server, admin, diff, json!({ "w": id, "from": 1, "to": 2 })).await;
    let d12 = &data["workflowVersionDiff"];
    assert_eq!(d12["changedFields"], json!([]));
    assert_eq!(d12["added"], json!([]));
    assert_eq!(d12["removed"], json!([]));
    assert_eq!(
        d12["changed"][0]["changedFields"],
        json!(["selectors", "instruction"])
    );
    // The other way round, additions and removals swap.
    let data = ok(&server, admin, diff, json!({ "w": id, "from": 6, "to": 1 })).await;
    assert_eq!(
        data["workflowVersionDiff"]["added"][0]["stepId"],
        c.as_str()
    );
    assert_eq!(
        data["workflowVersionDiff"]["removed"][0]["stepId"],
        d.as_str()
    );

    // A number the workflow has no version of names the argument.
    let resp = server
        .gql(diff, json!({ "w": id, "from": 1, "to": 60 }), Some(admin))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "diff to an unknown version");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "to", "{resp:#}");
    // Another company's workflow is not found, whatever the numbers.
    let resp = server
        .gql(
            diff,
            json!({ "w": id, "from": 1, "to": 2 }),
            Some(&other.admin_token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "diff of another company's workflow");
    assert!(!resp.to_string().contains("Diffed"), "{resp:#}");
}

both_backends!(restore_brings_back_the_old_definition_and_runs_keep_their_version);
async fn restore_brings_back_the_old_definition_and_runs_keep_their_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let (id, steps) = active_workflow(&server, admin, "Restorable", 2).await;
    let upload = multipart_request(
        &server,
        &server.client,
        Some(admin),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": id, "s": steps[0] }),
        png(2, 2, 1),
    )
    .await;
    let screenshot = str_field(&upload["data"]["uploadScreenshot"], "id");
    // Version 2: the screenshot on step 1. A run of it.
    let run_v2 = str_field(&start_run(&server, admin, &id).await, "id");

    update_step(
        &server,
        admin,
        &steps[0],
        json!({ "fieldLabel": "changed", "screenshotId": null, "actionData": { "n": 1 } }),
    )
    .await;
    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteStep(id: $id) }",
        json!({ "id": steps[1] }),
    )
    .await;
    update_workflow(
        &server,
        admin,
        &id,
        json!({ "name": "Renamed", "description": "later", "tags": ["x"] }),
    )
    .await;
    let run_v5 = str_field(&start_run(&server, admin, &id).await, "id");
    assert_eq!(version_numbers(&server, admin, &id).await, [5, 4, 3, 2, 1]);

    let restore = format!(
        "mutation($w: ID!, $n: Int!) {{ restoreWorkflowVersion(workflowId: $w, number: $n) {{ {} currentVersion }} }}",
        workflow_fields()
    );
    let data = ok(&server, admin, &restore, json!({ "w": id, "n": 2 })).await;
    let restored = &data["restoreWorkflowVersion"];
    assert_eq!(restored["name"], "Restorable");
    assert_eq!(restored["description"], Value::Null);
    assert_eq!(restored["tags"], json!([]));
    assert_eq!(restored["currentVersion"], 6);
    assert_eq!(
        step_ids(restored),
        steps,
        "the deleted step is back, with its id"
    );
    assert_eq!(restored["steps"][0]["fieldLabel"], "Restorable step 1");
    assert_eq!(restored["steps"][0]["actionData"], json!({}));
    assert_eq!(
        restored["steps"][0]["screenshot"]["id"],
        screenshot.as_str(),
        "the screenshot is shown again"
    );
    assert_dense(restored);
    let (current, list) = versions(&server, admin, &id).await;
    assert_eq!(current, 6);
    assert_eq!(list[0]["restoredFrom"], 2);
    assert_eq!(summary(&list[0]), "restored version 2");
    assert_eq!(
        list[0]["steps"],
        list.iter().find(|v| v["number"] == 2).unwrap()["steps"]
    );

    // Runs keep the version they ran.
    let run_versions = ok(
        &server,
        admin,
        "query($a: ID!, $b: ID!) { a: run(id: $a) { version { number name } } b: run(id: $b) { version { number name workflow { id } } } }",
        json!({ "a": run_v2, "b": run_v5 }),
    )
    .await;
    assert_eq!(
        run_versions["a"]["version"],
        json!({ "number": 2, "name": "Restorable" })
    );
    assert_eq!(run_versions["b"]["version"]["number"], 5);
    assert_eq!(run_versions["b"]["version"]["name"], "Renamed");
    assert_eq!(run_versions["b"]["version"]["workflow"]["id"], id.as_str());

    // Restoring what the workflow already is records nothing.
    ok(&server, admin, &restore, json!({ "w": id, "n": 6 })).await;
    assert_eq!(versions(&server, admin, &id).await.0, 6);
    // A number without a version names the argument; another company's workflow is not found.
    let resp = server
        .gql(&restore, json!({ "w": id, "n": 99 }), Some(admin))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "restore of an unknown version");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "number");
    let other = team(&server, "Other").await;
    let resp = server
        .gql(
            &restore,
            json!({ "w": id, "n": 1 }),
            Some(&other.admin_token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "restore of another company's workflow");
    assert_eq!(versions(&server, admin, &id).await.0, 6, "nothing recorded");
}

both_backends!(versions_page_newest_first);
async fn versions_page_newest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let id = str_field(&simple_workflow(&server, admin, "Paged", 1).await, "id");
    for n in 2..=5 {
        update_workflow(&server, admin, &id, json!({ "name": format!("Paged {n}") })).await;
    }
    let page = "query($id: ID!, $after: String) { workflow(id: $id) { versions(first: 2, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { number } } } }";
    let mut numbers = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = ok(&server, admin, page, json!({ "id": id, "after": after })).await;
        let versions = &data["workflow"]["versions"];
        assert_eq!(versions["totalCount"], 5);
        numbers.extend(
            versions["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["number"].as_i64().unwrap()),
        );
        if versions["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = versions["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(numbers, [5, 4, 3, 2, 1]);
    let resp = server
        .gql(
            "query($id: ID!) { workflow(id: $id) { id version(number: 9) { number } } }",
            json!({ "id": id }),
            Some(admin),
        )
        .await;
    assert_eq!(error_code(&resp).as_deref(), Some("NOT_FOUND"), "{resp:#}");
    assert!(resp["data"]["workflow"]["version"].is_null());
    let data = ok(
        &server,
        admin,
        "query($id: ID!) { workflow(id: $id) { version(number: 3) { number name } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(
        data["workflow"]["version"],
        json!({ "number": 3, "name": "Paged 3" })
    );
}

both_backends!(concurrent_edits_each_make_one_numbered_version);
/// Edits of one workflow racing each other (PostgreSQL runs them side by side) each make
/// one version, numbered without gaps or repeats, each holding its own edit.
async fn concurrent_edits_each_make_one_numbered_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.clone();
    let workflow = simple_workflow(&server, &token, "Raced", 8).await;
    let id = str_field(&workflow, "id");
    let steps = step_ids(&workflow);
    let edits = steps.iter().enumerate().map(|(i, step)| {
        let (server, token) = (&server, token.as_str());
        async move {
            let resp = try_update_step(
                server,
                token,
                step,
                json!({ "fieldLabel": format!("raced {i}") }),
            )
            .await;
            assert!(resp["errors"].is_null(), "{resp:#}");
        }
    });
    futures_util::future::join_all(edits).await;
    let (current, list) = versions(&server, &token, &id).await;
    assert_eq!(current, 9);
    let numbers: Vec<i64> = list.iter().map(|v| v["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (1..=9).rev().collect::<Vec<i64>>());
    // Each version adds exactly one edited label to the one before.
    for pair in list.windows(2) {
        let (newer, older) = (labels(&pair[0]), labels(&pair[1]));
        let changed = newer.iter().zip(&older).filter(|(a, b)| a != b).count();
        assert_eq!(
            changed, 1,
            "version {} vs {}",
            pair[0]["number"], pair[1]["number"]
        );
    }
    let newest = labels(&list[0]);
    assert!(newest.iter().all(|l| l.starts_with("raced ")), "{newest:?}");
}
