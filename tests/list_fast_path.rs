//! Lists answer their plain fields in one pass instead of a future per field per item:
//! `Workflow.steps` (with preloaded screenshots), `Workflow.screenshots`, and the edges and
//! nodes of the workflow, run and health-log connections. What a client sees must not
//! change: these tests ask the same questions through the fast path and through the
//! ordinary one (a single `step(id:)`, or the same server restarted with
//! `STEPWISE_FAST_LISTS=false`) and compare the answers — with aliases, named and inline
//! fragments, `@skip`/`@include`, `__typename`, fields that need loading mixed in, and a
//! field that fails inside a list. Every field of those types without arguments is asked
//! (read from the schema), as an admin and as a member, so a field given a guard or a role
//! check that the fast path would skip makes the answers differ. On SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::{Backend, ServerOptions, TestServer, str_field};
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

/// Sends every list down async-graphql's ordinary path from now on: the server restarts on
/// the same database with `STEPWISE_FAST_LISTS=false` (tokens stay valid).
async fn ordinary_path(server: &mut TestServer) {
    server.set_env("STEPWISE_FAST_LISTS", "false");
    server.restart().await;
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
    let mut server = TestServer::start(backend).await;
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

    // And the same lists down the ordinary path.
    ordinary_path(&mut server).await;
    let ordinary = ok(&server, token, &list_query, json!({ "id": workflow_id })).await;
    assert_same(&fast, &ordinary, "the list");
    let ordinary_shots = ok(&server, token, shots_query, json!({ "id": workflow_id })).await;
    assert_same(&fast_shots, &ordinary_shots, "the screenshots");
    assert_same(&page, &ok(&server, token, q1, json!({})).await, "Q1");
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
    let mut server = TestServer::start(backend).await;
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

    let fast_shapes = fast.clone();

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
    let fast_flipped = fast.clone();

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

    ordinary_path(&mut server).await;
    let ordinary = ok(&server, token, SHAPES, variables).await;
    assert_same(&fast_shapes, &ordinary, "aliases, fragments and directives");
    let ordinary = ok(&server, token, SHAPES, flipped).await;
    assert_same(&fast_flipped, &ordinary, "the directives flipped");
    let ordinary = ok(&server, token, twice, json!({ "id": workflow_id })).await;
    assert_same(&data, &ordinary, "the same list twice");
}

both_backends!(a_failing_field_inside_the_list);
async fn a_failing_field_inside_the_list(backend: Backend) {
    let mut server = TestServer::start(backend).await;
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

    // The ordinary path answers both the same, errors included.
    let page_query =
        "query { workflows(first: 5) { edges { node { steps { stepNumber selectors } } } } }";
    ordinary_path(&mut server).await;
    let ordinary = server
        .gql(query, json!({ "id": workflow_id }), Some(token))
        .await;
    assert_eq!(resp, ordinary, "fast and ordinary answers differ");
    let ordinary = server.gql(page_query, json!({}), Some(token)).await;
    assert_eq!(page, ordinary, "fast and ordinary answers differ");
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

    // Nor their runs and health logs, in any of the connections that list them.
    let steps = ok(
        &server,
        &acme.member_token,
        "query($id: ID!) { workflow(id: $id) { steps { id } } }",
        json!({ "id": workflow_id }),
    )
    .await;
    let step_id = str_field(&steps["workflow"]["steps"][0], "id");
    set_status(&server, &acme.member_token, &workflow_id, "ACTIVE").await;
    run_with_reports(
        &server,
        &acme.member_token,
        &workflow_id,
        &[step_id],
        &[json!({ "status": "SUCCESS" })],
    )
    .await;
    let theirs = ok(
        &server,
        &globex.member_token,
        "query { runs(first: 50) { totalCount nodes { id status } }            healthLogs(first: 50) { totalCount edges { node { id status } } }            workflows(first: 20) { edges { node { runs(first: 5) { totalCount nodes { id } }              healthLogs(first: 5) { totalCount nodes { id } } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        theirs["runs"],
        json!({ "totalCount": 0, "nodes": [] }),
        "{theirs:#}"
    );
    assert_eq!(
        theirs["healthLogs"],
        json!({ "totalCount": 0, "edges": [] }),
        "{theirs:#}"
    );
    assert_eq!(
        theirs["workflows"]["edges"][0]["node"],
        json!({ "runs": { "totalCount": 0, "nodes": [] },
                "healthLogs": { "totalCount": 0, "nodes": [] } }),
        "{theirs:#}"
    );
}

/// Every field of `type_name` without arguments whose values are scalars or enums (lists of
/// them included), but `except`: read from the schema, so a field added later is compared
/// too.
async fn argument_free_scalars(
    server: &TestServer,
    token: &str,
    type_name: &str,
    except: &[&str],
) -> String {
    let data = ok(
        server,
        token,
        "query($t: String!) { __type(name: $t) { fields { name args { name } \
           type { kind ofType { kind ofType { kind ofType { kind } } } } } } }",
        json!({ "t": type_name }),
    )
    .await;
    let fields = data["__type"]["fields"].as_array().expect("fields");
    let names: Vec<&str> = fields
        .iter()
        .filter(|field| field["args"].as_array().is_some_and(Vec::is_empty))
        .filter(|field| {
            let mut ty = &field["type"];
            while ty["kind"] == "NON_NULL" || ty["kind"] == "LIST" {
                ty = &ty["ofType"];
            }
            ty["kind"] == "SCALAR" || ty["kind"] == "ENUM"
        })
        .filter_map(|field| field["name"].as_str())
        .filter(|name| !except.contains(name))
        .collect();
    assert!(names.len() > 5, "{type_name}: {data:#}");
    names.join(" ")
}

/// Starts a run of `workflow_id` and reports `outcomes`, one per step in order.
async fn run_with_reports(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    step_ids: &[String],
    outcomes: &[Value],
) -> String {
    let run = ok(
        server,
        token,
        "mutation($w: ID!) { startRun(workflowId: $w) { id } }",
        json!({ "w": workflow_id }),
    )
    .await;
    let run_id = str_field(&run["startRun"], "id");
    for (step_id, outcome) in step_ids.iter().zip(outcomes) {
        ok(
            server,
            token,
            "mutation($r: ID!, $s: ID!, $o: StepOutcomeInput!) { \
               reportStep(runId: $r, stepId: $s, outcome: $o) { duplicate } }",
            json!({ "r": run_id, "s": step_id, "o": outcome }),
        )
        .await;
    }
    run_id
}

/// Errors in a stable order: the two paths may record them in different orders.
fn sorted_errors(resp: &Value) -> Vec<String> {
    let mut errors: Vec<String> = resp["errors"]
        .as_array()
        .map(|errors| errors.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    errors.sort();
    errors
}

both_backends!(connections_answer_like_the_ordinary_path);
async fn connections_answer_like_the_ordinary_path(backend: Backend) {
    let mut server = TestServer::start_with(
        backend,
        ServerOptions {
            // The comparison asks three nested connections at once.
            env: vec![("STEPWISE_MAX_QUERY_COMPLEXITY".into(), "10000000".into())],
            ..ServerOptions::default()
        },
    )
    .await;
    let acme = team(&server, "Acme").await;
    let member = acme.member_token.as_str();
    let (workflow_id, step_ids) = workflow_with_screenshots(&server, member).await;
    set_status(&server, member, &workflow_id, "ACTIVE").await;
    simple_workflow(&server, &acme.admin_token, "Second", 2).await;
    let finished = run_with_reports(
        &server,
        member,
        &workflow_id,
        &step_ids,
        &[
            json!({ "status": "SUCCESS", "pageUrl": "https://a.test/1", "executionTimeMs": 12 }),
            json!({ "status": "FAILED", "errorType": "element_not_found",
                    "errorMessage": "gone", "executionTimeMs": 40,
                    "deterministicScore": 0.4, "aiScore": 0.25 }),
        ],
    )
    .await;
    ok(
        &server,
        member,
        "mutation($r: ID!) { finishRun(runId: $r, status: FAILED, error: \"step 2\") { id } }",
        json!({ "r": finished }),
    )
    .await;
    let running = run_with_reports(
        &server,
        &acme.admin_token,
        &workflow_id,
        &step_ids[..1],
        &[json!({ "status": "SUCCESS" })],
    )
    .await;

    let workflow = argument_free_scalars(&server, member, "Workflow", &[]).await;
    let run = argument_free_scalars(&server, member, "Run", &[]).await;
    let log = argument_free_scalars(&server, member, "HealthLog", &[]).await;
    let step = argument_free_scalars(&server, member, "Step", &[]).await;
    // `url` is signed with the current time: two requests may differ.
    let shot = argument_free_scalars(&server, member, "Screenshot", &["url"]).await;
    let query = format!(
        "query($w: ID!) {{
          workflows(first: 5) {{
            __typename totalCount
            pageInfo {{ __typename hasNextPage hasPreviousPage startCursor endCursor }}
            edges {{ __typename cursor node {{ {workflow} createdBy {{ id }}
              steps {{ {step} screenshot {{ {shot} }} }} screenshots {{ {shot} }}
              runs(first: 5) {{ totalCount edges {{ cursor node {{ {run} workflow {{ id }}
                currentStep {{ id }}
                healthLogs(first: 10) {{ totalCount nodes {{ {log} step {{ id }} run {{ id }} }} }}
              }} }} }}
            }} }}
            nodes {{ id ... on Node {{ nodeId: id }} }}
          }}
          runs(first: 10) {{ pageInfo {{ endCursor }} nodes {{ {run} startedBy {{ id }} }}
            edges {{ node {{ id }} }} }}
          healthLogs(first: 10) {{ edges {{ node {{ {log} }} }} pageInfo {{ startCursor hasNextPage }} }}
          workflow(id: $w) {{
            healthLogs(first: 10) {{ ...Logs }}
            last: runs(last: 1) {{ ... on RunConnection {{ pageInfo {{ hasPreviousPage }}
              x: edges {{ c: cursor n: node {{ ... on Run {{ id status }} }} }} }} }}
          }}
        }}
        fragment Logs on HealthLogConnection {{ totalCount
          edges {{ ... on HealthLogEdge {{ cursor }} node {{ {log} }} }} }}"
    );
    let variables = json!({ "w": workflow_id });
    let mut fast = Vec::new();
    for token in [member, acme.admin_token.as_str()] {
        let answer = ok(&server, token, &query, variables.clone()).await;
        fast.push(answer);
    }

    // What the fast path answered is what the data says.
    let page = &fast[0]["workflows"];
    assert_eq!(page["__typename"], "WorkflowConnection");
    assert_eq!(page["totalCount"], 2, "{page:#}");
    assert_eq!(page["edges"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["pageInfo"]["endCursor"], page["edges"][1]["cursor"]);
    assert_eq!(page["edges"][0]["__typename"], "WorkflowEdge");
    assert_eq!(page["nodes"][1]["nodeId"], page["edges"][1]["node"]["id"]);
    let flow = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| &edge["node"])
        .find(|node| node["id"] == json!(workflow_id))
        .expect("the workflow with runs");
    assert_eq!(flow["runs"]["totalCount"], 2, "{flow:#}");
    let runs = flow["runs"]["edges"].as_array().unwrap();
    let finished_run = runs
        .iter()
        .map(|edge| &edge["node"])
        .find(|run| run["id"] == json!(finished))
        .expect("the finished run");
    assert_eq!(finished_run["status"], "FAILED");
    assert_eq!(finished_run["error"], "step 2");
    assert_eq!(finished_run["workflow"]["id"], json!(workflow_id));
    assert_eq!(finished_run["healthLogs"]["totalCount"], 2);
    let failed_log = &finished_run["healthLogs"]["nodes"][1];
    assert_eq!(failed_log["status"], "FAILED", "{finished_run:#}");
    assert_eq!(failed_log["errorType"], "element_not_found");
    assert_eq!(failed_log["aiScore"], 0.25);
    assert_eq!(failed_log["step"]["id"], json!(step_ids[1]));
    assert_eq!(failed_log["run"]["id"], json!(finished));
    assert_eq!(fast[0]["runs"]["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        fast[0]["healthLogs"]["edges"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(fast[0]["workflow"]["healthLogs"]["totalCount"], 3);
    assert_eq!(
        fast[0]["workflow"]["last"]["x"][0]["n"]["id"],
        json!(finished)
    );

    // Keys come in selection order, a field that waited included.
    let order = ok(
        &server,
        member,
        "query { workflows(first: 1) { edges { node { tags id } } totalCount \
           pageInfo { hasNextPage } } }",
        json!({}),
    )
    .await;
    let keys =
        |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&order["workflows"]),
        ["edges", "totalCount", "pageInfo"]
    );
    assert_eq!(
        keys(&order["workflows"]["edges"][0]["node"]),
        ["tags", "id"]
    );

    // A field that fails inside a connection names its edge or node, and only it is null.
    server
        .sql(&format!(
            "UPDATE runs SET input = 'not json' WHERE id = '{finished}'"
        ))
        .await;
    let failing = "query { runs(first: 10) { edges { node { id input } } nodes { id input } } }";
    let broken = server.gql(failing, json!({}), Some(member)).await;
    let index = broken["data"]["runs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|run| run["id"] == json!(finished))
        .expect("the broken run is listed");
    let mut paths: Vec<Value> = broken["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| {
            assert_eq!(error["extensions"]["code"], "INTERNAL", "{broken:#}");
            error["path"].clone()
        })
        .collect();
    paths.sort_by_key(Value::to_string);
    assert_eq!(
        paths,
        [
            json!(["runs", "edges", index, "node", "input"]),
            json!(["runs", "nodes", index, "input"]),
        ],
        "{broken:#}"
    );
    assert_eq!(
        broken["data"]["runs"]["edges"][index]["node"],
        json!({ "id": finished, "input": null })
    );
    assert_eq!(
        broken["data"]["runs"]["nodes"][1 - index],
        json!({ "id": running, "input": null })
    );

    // The ordinary path answers all of it the same.
    let corrupt = |input: &str| format!("UPDATE runs SET input = {input} WHERE id = '{finished}'");
    server.sql(&corrupt("NULL")).await;
    ordinary_path(&mut server).await;
    for (token, fast) in [member, acme.admin_token.as_str()].into_iter().zip(&fast) {
        let ordinary = ok(&server, token, &query, variables.clone()).await;
        assert_eq!(fast, &ordinary, "fast and ordinary answers differ");
    }
    server.sql(&corrupt("'not json'")).await;
    let ordinary = server.gql(failing, json!({}), Some(member)).await;
    assert_eq!(broken["data"], ordinary["data"], "{ordinary:#}");
    assert_eq!(sorted_errors(&broken), sorted_errors(&ordinary));
}
