//! `Workflow.steps` answers its plain fields (and preloaded screenshots) in one pass instead
//! of a future per field per step. What a client sees must not change: these tests ask the
//! same questions through the fast path and through the ordinary one (a single `step(id:)`,
//! or the same list with a field that needs loading, which sends the whole list down the
//! ordinary path) and compare the answers, key order included — with aliases, named and
//! inline fragments, `@skip`/`@include`, `__typename`, and a field that fails inside the
//! list. On SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::{Backend, TestServer, str_field};
use serde_json::{Value, json};

/// Every field of a step a list answers in one pass, and of its screenshot but `url`
/// (signed with the current time, so two requests may differ).
const PLAIN_STEP: &str = "id stepNumber actionType fieldLabel instruction aiConfidence aiModel \
    labelEdited instructionEdited editedAt healedAt healingConfidence healingMethod createdAt \
    updatedAt __typename \
    screenshot { id hash contentType sizeBytes width height createdAt __typename }";

/// A workflow of three steps, screenshots on the first and last, the first one's label edited
/// (so the edit fields are not null). Returns the workflow id and its step ids in order.
async fn workflow_with_screenshots(server: &TestServer, token: &str) -> (String, Vec<String>) {
    let workflow = simple_workflow(server, token, "Flow", 3).await;
    let id = str_field(&workflow, "id");
    let steps = ok(
        server,
        token,
        "query($id: ID!) { workflow(id: $id) { steps { id } } }",
        json!({ "id": id }),
    )
    .await["workflow"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "id"))
        .collect::<Vec<_>>();
    for (step, seed) in [(&steps[0], 1), (&steps[2], 2)] {
        let resp = multipart_request(
            server,
            &server.client,
            Some(token),
            "mutation($w: ID!, $s: ID, $file: Upload!) { \
               uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
            json!({ "w": id, "s": step }),
            png(4, 3, seed),
        )
        .await;
        assert!(resp["errors"].is_null(), "upload failed: {resp:#}");
    }
    ok(
        server,
        token,
        "mutation($id: ID!) { updateStep(id: $id, input: { fieldLabel: \"Edited\", \
           aiConfidence: 0.75, aiModel: \"m1\" }) { id } }",
        json!({ "id": steps[0] }),
    )
    .await;
    (id, steps)
}

/// The keys of every object in `value`, recursively, in order: `Value` equality ignores
/// key order, clients reading the text do not.
fn key_order(value: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    fn walk(value: &Value, path: &str, keys: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    keys.push(format!("{path}.{key}"));
                    walk(value, &format!("{path}.{key}"), keys);
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{index}]"), keys);
                }
            }
            _ => {}
        }
    }
    walk(value, "", &mut keys);
    keys
}

/// `steps` as the ordinary path gives them: the same selection plus `workflow { id }` (a
/// lookup, so not plain), which is then removed again.
async fn ordinary_steps(server: &TestServer, token: &str, query: &str, variables: Value) -> Value {
    let ordinary = query.replacen("steps {", "steps { workflow { id } ", 1);
    assert_ne!(ordinary, query, "the query has no `steps {{`");
    let mut data = ok(server, token, &ordinary, variables).await;
    for step in data["workflow"]["steps"].as_array_mut().unwrap() {
        step.as_object_mut().unwrap().shift_remove("workflow");
    }
    data
}

fn assert_same(fast: &Value, ordinary: &Value, what: &str) {
    assert_eq!(fast, ordinary, "{what}: fast and ordinary answers differ");
    assert_eq!(
        key_order(fast),
        key_order(ordinary),
        "{what}: fast and ordinary answers order their keys differently"
    );
}

both_backends!(a_list_answers_like_single_steps);
async fn a_list_answers_like_single_steps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    let (workflow_id, step_ids) = workflow_with_screenshots(&server, token).await;

    let list_query =
        format!("query($id: ID!) {{ workflow(id: $id) {{ steps {{ {PLAIN_STEP} }} }} }}");
    let fast = ok(&server, token, &list_query, json!({ "id": workflow_id })).await;
    let steps = fast["workflow"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{fast:#}");
    assert_eq!(steps[0]["fieldLabel"], "Edited");
    assert_eq!(steps[0]["aiConfidence"], 0.75);
    assert!(steps[0]["editedAt"].is_string(), "{fast:#}");
    assert_eq!(steps[0]["screenshot"]["__typename"], "Screenshot");
    assert_eq!(steps[0]["screenshot"]["width"], 4);
    assert!(steps[1]["screenshot"].is_null(), "{fast:#}");
    assert!(steps[2]["screenshot"]["id"].is_string(), "{fast:#}");

    // Each step read alone (`step(id:)` is the ordinary path) answers the same, in order.
    for (index, step_id) in step_ids.iter().enumerate() {
        let alone = ok(
            &server,
            token,
            &format!("query($id: ID!) {{ step(id: $id) {{ {PLAIN_STEP} }} }}"),
            json!({ "id": step_id }),
        )
        .await;
        assert_same(&steps[index], &alone["step"], &format!("step {index}"));
    }

    // And the whole list down the ordinary path.
    let ordinary = ordinary_steps(&server, token, &list_query, json!({ "id": workflow_id })).await;
    assert_same(&fast, &ordinary, "the list");

    // `Workflow.screenshots` is answered in one pass too.
    let shots_query = "query($id: ID!) { workflow(id: $id) { screenshots { id hash \
        contentType sizeBytes width height createdAt __typename ... on Node { nodeId: id } } } }";
    let fast_shots = ok(&server, token, shots_query, json!({ "id": workflow_id })).await;
    assert_eq!(
        fast_shots["workflow"]["screenshots"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{fast_shots:#}"
    );
    let ordinary_query = shots_query.replacen("screenshots {", "screenshots { workflow { id } ", 1);
    let mut ordinary_shots = ok(
        &server,
        token,
        &ordinary_query,
        json!({ "id": workflow_id }),
    )
    .await;
    for shot in ordinary_shots["workflow"]["screenshots"]
        .as_array_mut()
        .unwrap()
    {
        assert_eq!(shot["workflow"]["id"], json!(workflow_id));
        shot.as_object_mut().unwrap().shift_remove("workflow");
    }
    assert_same(&fast_shots, &ordinary_shots, "the screenshots");

    // The signed URL is answered too, and it serves the image.
    let with_url = ok(
        &server,
        token,
        "query($id: ID!) { workflow(id: $id) { steps { screenshot { id url } } } }",
        json!({ "id": workflow_id }),
    )
    .await;
    let shot = &with_url["workflow"]["steps"][0]["screenshot"];
    let url = str_field(shot, "url");
    assert!(
        url.starts_with(&format!("/screenshots/{}?expires=", str_field(shot, "id"))),
        "{url}"
    );
    let image = server.get(&url).await;
    assert_eq!(image.status(), reqwest::StatusCode::OK, "GET {url}");

    // The benchmark's Q1 shape: a page of workflows, each with its steps and screenshots.
    let q1 = "query { workflows(first: 20) { edges { node { id name status \
              steps { id stepNumber actionType screenshot { id } } } } } }";
    let page = ok(&server, token, q1, json!({})).await;
    let node = &page["workflows"]["edges"][0]["node"];
    assert_eq!(
        node["steps"],
        json!([
            { "id": step_ids[0], "stepNumber": 1, "actionType": "click",
              "screenshot": { "id": steps[0]["screenshot"]["id"] } },
            { "id": step_ids[1], "stepNumber": 2, "actionType": "click", "screenshot": null },
            { "id": step_ids[2], "stepNumber": 3, "actionType": "click",
              "screenshot": { "id": steps[2]["screenshot"]["id"] } },
        ]),
        "{page:#}"
    );
}

const SHAPES: &str = "query($id: ID!, $yes: Boolean!, $no: Boolean!) {
  workflow(id: $id) {
    steps {
      first: id
      n: stepNumber
      id
      ...StepParts
      ... on Step { kind: actionType }
      ... on Node { nodeId: id }
      ... { label: fieldLabel }
      ... on Step @include(if: $no) { hidden: id }
      ...Skipped @skip(if: $yes)
      skipped: instruction @skip(if: $yes)
      kept: aiModel @include(if: $yes)
      dropped: aiModel @include(if: $no)
      __typename
      t: __typename
      screenshot { id ... on Screenshot { size: sizeBytes } ...ShotParts }
      screenshot { hash first: id }
      pic: screenshot @include(if: $yes) { __typename }
      gone: screenshot @skip(if: $yes) { id }
      n: stepNumber
    }
  }
}
fragment StepParts on Step { actionType num: stepNumber ... on Step { deep: id } }
fragment Skipped on Step { never: id }
fragment ShotParts on Screenshot { w: width h: height }";

both_backends!(aliases_fragments_and_directives);
async fn aliases_fragments_and_directives(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    let (workflow_id, step_ids) = workflow_with_screenshots(&server, token).await;
    let variables = json!({ "id": workflow_id, "yes": true, "no": false });

    let fast = ok(&server, token, SHAPES, variables.clone()).await;
    let steps = fast["workflow"]["steps"].as_array().unwrap();
    let first = steps[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "first",
            "n",
            "id",
            "actionType",
            "num",
            "deep",
            "kind",
            "nodeId",
            "label",
            "kept",
            "__typename",
            "t",
            "screenshot",
            "pic"
        ],
        "{fast:#}"
    );
    assert_eq!(first["first"], json!(step_ids[0]));
    assert_eq!(first["nodeId"], json!(step_ids[0]));
    assert_eq!(first["deep"], json!(step_ids[0]));
    assert_eq!(first["num"], 1);
    assert_eq!(first["kind"], "click");
    assert_eq!(first["label"], "Edited");
    assert_eq!(first["kept"], "m1");
    assert_eq!(first["t"], "Step");
    let shot = first["screenshot"].as_object().unwrap();
    let shot_keys: Vec<&str> = shot.keys().map(String::as_str).collect();
    assert_eq!(
        shot_keys,
        ["id", "size", "w", "h", "hash", "first"],
        "{fast:#}"
    );
    assert_eq!(shot["w"], 4);
    assert_eq!(first["pic"], json!({ "__typename": "Screenshot" }));
    assert!(steps[1]["screenshot"].is_null());
    assert!(steps[1]["pic"].is_null());

    let ordinary = ordinary_steps(&server, token, SHAPES, variables.clone()).await;
    assert_same(&fast, &ordinary, "aliases, fragments and directives");

    // The other way round: what was skipped is included and the other way round.
    let flipped = json!({ "id": workflow_id, "yes": false, "no": true });
    let fast = ok(&server, token, SHAPES, flipped.clone()).await;
    let first = &fast["workflow"]["steps"][0];
    assert_eq!(first["hidden"], json!(step_ids[0]), "{fast:#}");
    assert_eq!(first["never"], json!(step_ids[0]), "{fast:#}");
    assert!(first.get("kept").is_none(), "{fast:#}");
    assert!(first.get("pic").is_none(), "{fast:#}");
    assert_eq!(first["gone"]["id"], first["screenshot"]["id"], "{fast:#}");
    assert!(first["skipped"].is_null() && first.get("skipped").is_some());
    let ordinary = ordinary_steps(&server, token, SHAPES, flipped).await;
    assert_same(&fast, &ordinary, "the directives flipped");

    // The same list twice under one key merges item by item; under two keys, each its own.
    let twice = "query($id: ID!) { workflow(id: $id) { \
                 steps { id } steps { stepNumber screenshot { id } } \
                 a: steps { stepNumber } b: steps { __typename } } }";
    let data = ok(&server, token, twice, json!({ "id": workflow_id })).await;
    let workflow = &data["workflow"];
    assert_eq!(
        workflow["steps"][2],
        json!({ "id": step_ids[2], "stepNumber": 3,
                "screenshot": { "id": workflow["steps"][2]["screenshot"]["id"] } }),
        "{data:#}"
    );
    assert_eq!(workflow["a"][1], json!({ "stepNumber": 2 }));
    assert_eq!(workflow["b"][0], json!({ "__typename": "Step" }));
}

both_backends!(a_failing_field_inside_the_list);
async fn a_failing_field_inside_the_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    let (workflow_id, step_ids) = workflow_with_screenshots(&server, token).await;
    // A stored document that no longer parses: reading it fails (INTERNAL), and it is a
    // non-null field of a non-null item of a non-null list.
    server
        .sql(&format!(
            "UPDATE steps SET selectors = 'not json' WHERE id = '{}'",
            step_ids[1]
        ))
        .await;

    let query = "query($id: ID!) {
      workflow(id: $id) { id steps { id selectors screenshot { id } } }
      plain: workflow(id: $id) { id steps { id stepNumber screenshot { id } } }
    }";
    let resp = server
        .gql(query, json!({ "id": workflow_id }), Some(token))
        .await;
    let errors = resp["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{resp:#}");
    assert_eq!(
        errors[0]["path"],
        json!(["workflow", "steps", 1, "selectors"]),
        "the error names the item's index: {resp:#}"
    );
    assert_eq!(errors[0]["extensions"]["code"], "INTERNAL", "{resp:#}");
    // As everywhere in this server (async-graphql 7 does not propagate `null` up through
    // non-null types; `null_failed_fields` puts `null` where the field failed): the failed
    // field is null, its item and the rest of the list stay.
    let steps = resp["data"]["workflow"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{resp:#}");
    assert_eq!(steps[1]["id"], json!(step_ids[1]), "{resp:#}");
    assert!(
        steps[1].get("selectors").is_some_and(Value::is_null),
        "{resp:#}"
    );
    assert_eq!(steps[0]["selectors"], json!({ "css": "#Flow step 1" }));
    assert!(steps[2]["screenshot"]["id"].is_string(), "{resp:#}");
    // The same items in another field of the same request (answered in one pass) are
    // unaffected.
    let plain = &resp["data"]["plain"];
    assert_eq!(plain["steps"].as_array().unwrap().len(), 3, "{resp:#}");
    assert_eq!(plain["steps"][1]["id"], json!(step_ids[1]));
    assert_eq!(plain["steps"][1]["stepNumber"], 2);
    assert!(
        plain["steps"][0]["screenshot"]["id"].is_string(),
        "{resp:#}"
    );

    // Inside a page of workflows the path carries both indexes.
    let page = server
        .gql(
            "query { workflows(first: 5) { edges { node { steps { stepNumber selectors } } } } }",
            json!({}),
            Some(token),
        )
        .await;
    assert_eq!(page["errors"].as_array().map(Vec::len), Some(1), "{page:#}");
    assert_eq!(
        page["errors"][0]["path"],
        json!(["workflows", "edges", 0, "node", "steps", 1, "selectors"]),
        "{page:#}"
    );
    let steps = &page["data"]["workflows"]["edges"][0]["node"]["steps"];
    assert_eq!(
        steps[1],
        json!({ "stepNumber": 2, "selectors": null }),
        "{page:#}"
    );
    assert_eq!(steps[2]["stepNumber"], 3, "{page:#}");
}

both_backends!(another_company_sees_none_of_it);
async fn another_company_sees_none_of_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let (workflow_id, _) = workflow_with_screenshots(&server, &acme.member_token).await;
    simple_workflow(&server, &globex.member_token, "Theirs", 2).await;

    let resp = server
        .gql(
            &format!("query($id: ID!) {{ workflow(id: $id) {{ steps {{ {PLAIN_STEP} }} }} }}"),
            json!({ "id": workflow_id }),
            Some(&globex.member_token),
        )
        .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{resp:#}"
    );
    assert!(resp["data"]["workflow"].is_null(), "{resp:#}");

    let page = ok(
        &server,
        &globex.member_token,
        "query { workflows(first: 20) { edges { node { name steps { id screenshot { id } } } } } }",
        json!({}),
    )
    .await;
    let edges = page["workflows"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{page:#}");
    assert_eq!(edges[0]["node"]["name"], "Theirs");
    assert_eq!(edges[0]["node"]["steps"].as_array().unwrap().len(), 2);
}
