//! Workflows and their steps as a frontend developer sees them: create, read, update,
//! archive, delete, duplicate, and editing, adding, removing and reordering steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::{
    Backend, TestServer, assert_error_code, error_code, error_message, parse_datetime, str_field,
};
use serde_json::{Value, json};

/// Asserts the response is BAD_USER_INPUT.
#[track_caller]
fn assert_bad_input(resp: &Value, context: &str) {
    assert_error_code(resp, "BAD_USER_INPUT", context);
}

/// Asserts the response is NOT_FOUND with `data.<field>` null.
#[track_caller]
fn assert_not_found(resp: &Value, field: &str, context: &str) {
    assert_error_code(resp, "NOT_FOUND", context);
    assert!(
        resp["data"].is_null() || resp["data"][field].is_null(),
        "{context}: expected null `{field}`: {resp:#}"
    );
}

/// How many workflows and steps the database holds in total.
async fn stored_counts(server: &TestServer) -> (i64, i64) {
    (
        server.sql_count("workflows").await,
        server.sql_count("steps").await,
    )
}

// ---------------------------------------------------------------------------
// Create and read
// ---------------------------------------------------------------------------

both_backends!(create_with_steps_round_trips);
async fn create_with_steps_round_trips(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let other = simple_workflow(&server, &acme.admin_token, "Other", 1).await;
    let screenshot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &str_field(&other, "id"),
            hash: "abc123",
        },
    )
    .await;

    let selectors = json!({ "css": "#email", "xpath": "//input[@name='email']", "alternatives": ["input.email", "[data-test=email]"] });
    let element_meta = json!({ "tag": "input", "attributes": { "type": "email", "required": true }, "rect": { "x": 10.5, "y": 20, "w": 300, "h": 32 } });
    let page_context = json!({ "url": "https://app.example/signup?step=1", "title": "Sign up — Ünïcødé ✓", "viewport": [1280, 800] });
    let action_data = json!({ "value": "ada@example.com", "delayMs": 120, "nested": { "deep": { "deeper": [null, false, 0.1, -7] } } });
    let dom_context = json!({ "parents": ["form#signup", "main"], "siblings": 3, "empty": {} });
    let input = json!({
        "name": "  Monthly invoice run  ",
        "description": "Logs in and downloads the invoices.",
        "tags": ["billing", "eu", "billing"],
        "steps": [
            {
                "actionType": "navigate",
                "pageContext": { "url": "https://app.example/login" },
            },
            {
                "actionType": "type",
                "selectors": selectors,
                "elementMeta": element_meta,
                "pageContext": page_context,
                "actionData": action_data,
                "domContext": dom_context,
                "fieldLabel": "Email",
                "instruction": "Type the account email",
                "aiConfidence": 0.87,
                "aiModel": "gpt-4o-mini",
                "screenshotId": screenshot,
            },
            {
                "actionType": "click",
                "selectors": { "css": "button[type=submit]" },
                "fieldLabel": "Sign in",
                "aiConfidence": 1.0,
            },
        ],
    });
    let created = create_workflow(&server, &acme.member_token, input).await;

    assert_eq!(created["name"], "Monthly invoice run", "name is trimmed");
    assert_eq!(
        created["description"],
        "Logs in and downloads the invoices."
    );
    assert_eq!(
        created["tags"],
        json!(["billing", "eu"]),
        "tags are de-duplicated"
    );
    assert_eq!(created["status"], "DRAFT", "default status");
    assert_eq!(created["successRate"], json!(0.0));
    assert_eq!(created["totalUses"], 0);
    assert_eq!(created["consecutiveFailures"], 0);
    assert!(created["lastSuccessAt"].is_null() && created["lastFailureAt"].is_null());
    assert_eq!(created["createdBy"]["id"], acme.member_id.as_str());
    assert_eq!(created["createdBy"]["name"], "Acme Member");
    let created_at = parse_datetime(&created["createdAt"]);
    assert!((chrono::Utc::now() - created_at).num_seconds().abs() < 60);
    assert!(parse_datetime(&created["updatedAt"]) >= created_at);

    assert_dense(&created);
    let steps = created["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    let actions: Vec<&str> = steps
        .iter()
        .map(|s| s["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["navigate", "type", "click"],
        "steps keep the order they were sent in"
    );
    for step in steps {
        assert_eq!(step["workflow"]["id"], created["id"]);
        assert_eq!(step["labelEdited"], false);
        assert_eq!(step["instructionEdited"], false);
        assert!(
            step["editedBy"].is_null() && step["editedAt"].is_null(),
            "{step:#}"
        );
        assert!(step["healedSelectors"].is_null() && step["healedAt"].is_null());
    }
    // Omitted JSON fields are empty objects, never null.
    for field in ["selectors", "elementMeta", "actionData", "domContext"] {
        assert_eq!(
            steps[0][field],
            json!({}),
            "omitted {field} of step 1: {:#}",
            steps[0]
        );
    }
    assert_eq!(
        steps[0]["pageContext"],
        json!({ "url": "https://app.example/login" })
    );
    assert!(steps[0]["fieldLabel"].is_null() && steps[0]["aiModel"].is_null());
    assert!(steps[0]["screenshot"].is_null());

    let typed = &steps[1];
    assert_eq!(typed["selectors"], selectors, "selectors round-trip");
    assert_eq!(
        typed["elementMeta"], element_meta,
        "elementMeta round-trips"
    );
    assert_eq!(
        typed["pageContext"], page_context,
        "pageContext round-trips"
    );
    assert_eq!(typed["actionData"], action_data, "actionData round-trips");
    assert_eq!(typed["domContext"], dom_context, "domContext round-trips");
    assert_eq!(typed["fieldLabel"], "Email");
    assert_eq!(typed["instruction"], "Type the account email");
    assert_eq!(typed["aiConfidence"], json!(0.87));
    assert_eq!(typed["aiModel"], "gpt-4o-mini");
    assert_eq!(typed["screenshot"]["id"], screenshot.as_str());
    assert_eq!(typed["screenshot"]["hash"], "abc123");
    assert_eq!(steps[2]["aiConfidence"], json!(1.0));

    // Reading it back gives the same thing, to anyone in the company.
    let id = str_field(&created, "id");
    let read = get_workflow(&server, &acme.admin_token, &id).await;
    assert_eq!(
        read, created,
        "workflow(id) must return what createWorkflow returned"
    );

    // Each step can be looked up by id.
    let query = format!("query($id: ID!) {{ step(id: $id) {{ {STEP_FIELDS} }} }}");
    for step in steps {
        let data = ok(
            &server,
            &acme.admin_token,
            &query,
            json!({ "id": step["id"] }),
        )
        .await;
        assert_eq!(
            &data["step"], step,
            "step(id) must match the workflow's step"
        );
    }

    // And it is listed.
    let data = ok(
        &server,
        &acme.admin_token,
        "{ workflows { totalCount edges { node { id name stepCount } } } }",
        json!({}),
    )
    .await;
    assert_eq!(data["workflows"]["totalCount"], 2);
    let listed = edge_ids(&data["workflows"]);
    assert!(listed.contains(&id), "{data:#}");
}

both_backends!(lists_show_step_documents_however_they_are_selected);
/// Lists load steps without their JSON documents and fetch those only when the query asks,
/// once per list. Whether asked directly, through a named fragment or an inline one, each
/// step must show exactly its own documents, the same as when read alone.
async fn lists_show_step_documents_however_they_are_selected(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let step = |n: u32| {
        json!({ "actionType": "click", "selectors": { "css": format!("#b{n}") },
                "elementMeta": { "tag": "button", "n": n }, "pageContext": { "url": format!("https://a.example/{n}") },
                "actionData": { "n": n }, "domContext": { "html": format!("<button id=b{n}>") } })
    };
    for name in ["One", "Two"] {
        create_workflow(
            &server,
            &acme.member_token,
            json!({ "name": name, "steps": [step(1), step(2), step(3)] }),
        )
        .await;
    }
    const DOCUMENTS: &str =
        "selectors elementMeta pageContext actionData domContext healedSelectors";
    let queries = [
        format!(
            "{{ workflows(first: 5) {{ edges {{ node {{ steps {{ id {DOCUMENTS} }} }} }} }} }}"
        ),
        format!(
            "{{ workflows(first: 5) {{ edges {{ node {{ steps {{ id ...Docs }} }} }} }} }} \
             fragment Docs on Step {{ {DOCUMENTS} }}"
        ),
        format!(
            "{{ workflows(first: 5) {{ edges {{ node {{ steps {{ id ... on Step {{ {DOCUMENTS} }} }} }} }} }} }}"
        ),
        // Only one document, next to the screenshot join.
        "{ workflows(first: 5) { edges { node { steps { id domContext screenshot { id } } } } } }"
            .to_owned(),
    ];
    for query in &queries {
        let list = ok(&server, &acme.member_token, query, json!({})).await;
        let edges = list["workflows"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2, "{list:#}");
        let mut seen = 0;
        for edge in edges {
            for shown in edge["node"]["steps"].as_array().unwrap() {
                let alone = ok(
                    &server,
                    &acme.member_token,
                    &format!("query($id: ID!) {{ step(id: $id) {{ stepNumber {DOCUMENTS} }} }}"),
                    json!({ "id": shown["id"] }),
                )
                .await;
                let n = alone["step"]["stepNumber"].as_u64().unwrap();
                assert_eq!(
                    shown["domContext"],
                    json!({ "html": format!("<button id=b{n}>") }),
                    "{query}: {shown:#}"
                );
                for (field, value) in shown.as_object().unwrap() {
                    if field != "id" && field != "screenshot" {
                        assert_eq!(
                            value, &alone["step"][field],
                            "{query}: {field} of {shown:#}"
                        );
                    }
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 6, "{query}");
    }
}

both_backends!(create_rejects_bad_input_and_leaves_nothing_behind);
async fn create_rejects_bad_input_and_leaves_nothing_behind(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let good_step = step_input("click", "ok");
    // The bad part is always in the third step, after two good ones, so a half-written
    // workflow would show up.
    let with_bad_step =
        |bad: Value| json!({ "name": "Bad", "steps": [good_step.clone(), good_step.clone(), bad] });
    let bad_step = |field: &str, value: Value| {
        let mut step = step_input("click", "bad");
        step[field] = value;
        with_bad_step(step)
    };
    let many_tags: Vec<String> = (0..21).map(|i| format!("tag{i}")).collect();
    let many_steps: Vec<Value> = (0..501)
        .map(|i| step_input("click", &format!("s{i}")))
        .collect();

    let cases: Vec<(&str, Value)> = vec![
        ("empty name", json!({ "name": "" })),
        ("blank name", json!({ "name": "   " })),
        ("201-character name", json!({ "name": "n".repeat(201) })),
        (
            "5001-character description",
            json!({ "name": "Ok", "description": "d".repeat(5001) }),
        ),
        ("21 tags", json!({ "name": "Ok", "tags": many_tags })),
        ("empty tag", json!({ "name": "Ok", "tags": ["fine", ""] })),
        (
            "51-character tag",
            json!({ "name": "Ok", "tags": ["t".repeat(51)] }),
        ),
        (
            "tag with a double quote",
            json!({ "name": "Ok", "tags": ["say \"hi\""] }),
        ),
        (
            "tag with a backslash",
            json!({ "name": "Ok", "tags": ["back\\slash"] }),
        ),
        (
            "tag with a control character",
            json!({ "name": "Ok", "tags": ["bell\u{7}"] }),
        ),
        (
            "tag with a newline",
            json!({ "name": "Ok", "tags": ["two\nlines"] }),
        ),
        (
            "status NEEDS_REVIEW at creation",
            json!({ "name": "Ok", "status": "NEEDS_REVIEW" }),
        ),
        (
            "status BROKEN at creation",
            json!({ "name": "Ok", "status": "BROKEN" }),
        ),
        (
            "status ARCHIVED at creation",
            json!({ "name": "Ok", "status": "ARCHIVED" }),
        ),
        (
            "selectors is a string",
            bad_step("selectors", json!("#email")),
        ),
        (
            "elementMeta is an array",
            bad_step("elementMeta", json!([1, 2])),
        ),
        (
            "pageContext is a number",
            bad_step("pageContext", json!(42)),
        ),
        (
            "actionData is a boolean",
            bad_step("actionData", json!(true)),
        ),
        (
            "domContext is a string",
            bad_step("domContext", json!("<div>")),
        ),
        (
            "selectors over 64 KiB",
            bad_step("selectors", json!({ "blob": "x".repeat(70 * 1024) })),
        ),
        ("aiConfidence 1.5", bad_step("aiConfidence", json!(1.5))),
        ("aiConfidence -0.1", bad_step("aiConfidence", json!(-0.1))),
        ("501 steps", json!({ "name": "Ok", "steps": many_steps })),
    ];
    for (what, input) in cases {
        let resp = try_create_workflow(&server, &acme.member_token, input).await;
        assert_bad_input(&resp, &format!("createWorkflow with {what}"));
        assert!(
            resp["data"].is_null() || resp["data"]["createWorkflow"].is_null(),
            "{resp:#}"
        );
        assert_eq!(
            stored_counts(&server).await,
            (0, 0),
            "createWorkflow with {what} was rejected but left rows behind"
        );
    }

    // A screenshot id that does not exist is NOT_FOUND, and leaves nothing either.
    let resp = try_create_workflow(
        &server,
        &acme.member_token,
        bad_step("screenshotId", json!(new_id())),
    )
    .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "createWorkflow with an unknown screenshotId",
    );
    assert_eq!(
        stored_counts(&server).await,
        (0, 0),
        "unknown screenshotId left rows behind"
    );

    let data = ok(
        &server,
        &acme.admin_token,
        "{ workflows { totalCount edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(data["workflows"]["totalCount"], 0, "{data:#}");

    // The limits themselves are accepted.
    let tags: Vec<String> = (0..20)
        .map(|i| format!("{i:02}-{}", "t".repeat(47)))
        .collect();
    let created = create_workflow(
        &server,
        &acme.member_token,
        json!({
            "name": "n".repeat(200),
            "description": "d".repeat(5000),
            "tags": tags,
            "status": "ACTIVE",
            "steps": [
                { "actionType": "click", "aiConfidence": 0.0 },
                { "actionType": "click", "aiConfidence": 1.0 },
            ],
        }),
    )
    .await;
    assert_eq!(created["name"].as_str().unwrap().chars().count(), 200);
    assert_eq!(created["tags"].as_array().unwrap().len(), 20);
    assert_eq!(created["status"], "ACTIVE");
    for status in ["DRAFT", "PROCESSING"] {
        let wf = create_workflow(
            &server,
            &acme.member_token,
            json!({ "name": status, "status": status }),
        )
        .await;
        assert_eq!(wf["status"], status);
    }
    assert_eq!(stored_counts(&server).await, (3, 2));
}

both_backends!(requests_without_a_token_are_refused);
async fn requests_without_a_token_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.admin_token, "Mine", 1).await;
    let cases = [
        ("{ workflows { totalCount } }".to_owned(), json!({})),
        (
            "query($id: ID!) { workflow(id: $id) { id } }".to_owned(),
            json!({ "id": wf["id"] }),
        ),
        (
            "query($id: ID!) { step(id: $id) { id } }".to_owned(),
            json!({ "id": wf["steps"][0]["id"] }),
        ),
        (
            "mutation { createWorkflow(input: { name: \"x\" }) { id } }".to_owned(),
            json!({}),
        ),
        (
            "mutation($id: ID!) { archiveWorkflow(id: $id) { id } }".to_owned(),
            json!({ "id": wf["id"] }),
        ),
    ];
    for (query, vars) in cases {
        let resp = server.gql(&query, vars, None).await;
        assert_error_code(
            &resp,
            "UNAUTHENTICATED",
            &format!("{query} without a token"),
        );
    }
    assert_eq!(stored_counts(&server).await, (1, 1));
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &str_field(&wf, "id")).await["status"],
        "DRAFT"
    );
}

both_backends!(unknown_ids_are_not_found);
async fn unknown_ids_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.admin_token, "Real", 2).await;
    let real_step = wf["steps"][0]["id"].clone();
    for missing in [new_id(), "not-a-uuid".to_owned(), String::new()] {
        let cases: Vec<(&str, String, Value)> = vec![
            ("workflow", "query($id: ID!) { workflow(id: $id) { id } }".into(), json!({ "id": missing })),
            ("step", "query($id: ID!) { step(id: $id) { id } }".into(), json!({ "id": missing })),
            (
                "updateWorkflow",
                "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"x\" }) { id } }".into(),
                json!({ "id": missing }),
            ),
            ("archiveWorkflow", "mutation($id: ID!) { archiveWorkflow(id: $id) { id } }".into(), json!({ "id": missing })),
            ("deleteWorkflow", "mutation($id: ID!) { deleteWorkflow(id: $id) }".into(), json!({ "id": missing })),
            ("duplicateWorkflow", "mutation($id: ID!) { duplicateWorkflow(id: $id) { id } }".into(), json!({ "id": missing })),
            (
                "addStep",
                "mutation($id: ID!) { addStep(workflowId: $id, input: { actionType: \"click\" }) { id } }".into(),
                json!({ "id": missing }),
            ),
            (
                "updateStep",
                "mutation($id: ID!) { updateStep(id: $id, input: { fieldLabel: \"x\" }) { id } }".into(),
                json!({ "id": missing }),
            ),
            ("deleteStep", "mutation($id: ID!) { deleteStep(id: $id) }".into(), json!({ "id": missing })),
            (
                "reorderSteps",
                "mutation($id: ID!, $steps: [ID!]!) { reorderSteps(workflowId: $id, stepIds: $steps) { id } }".into(),
                json!({ "id": missing, "steps": [real_step] }),
            ),
        ];
        for (field, query, vars) in cases {
            let resp = server.gql(&query, vars, Some(&acme.admin_token)).await;
            let context = format!("{field} with id {missing:?}");
            if uuid::Uuid::parse_str(&missing).is_ok() {
                assert_not_found(&resp, field, &context);
            } else {
                // A malformed id may be called missing or bad input, but never a server error.
                let code = error_code(&resp);
                assert!(
                    matches!(code.as_deref(), Some("NOT_FOUND" | "BAD_USER_INPUT")),
                    "{context}: expected NOT_FOUND or BAD_USER_INPUT: {resp:#}"
                );
                assert!(
                    resp["data"].is_null() || resp["data"][field].is_null(),
                    "{resp:#}"
                );
            }
        }
    }
    assert_eq!(stored_counts(&server).await, (1, 2));
}

// ---------------------------------------------------------------------------
// Update, status, archive
// ---------------------------------------------------------------------------

both_backends!(update_changes_only_what_is_sent);
async fn update_changes_only_what_is_sent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let created = create_workflow(
        &server,
        &acme.admin_token,
        json!({ "name": "Payroll", "description": "Pays people", "tags": ["hr"], "steps": step_inputs("s", 2) }),
    )
    .await;
    let id = str_field(&created, "id");

    let renamed = update_workflow(
        &server,
        &acme.member_token,
        &id,
        json!({ "name": "  Payroll EU  " }),
    )
    .await;
    assert_eq!(renamed["name"], "Payroll EU");
    assert_eq!(
        renamed["description"], "Pays people",
        "omitted description is kept"
    );
    assert_eq!(renamed["tags"], json!(["hr"]), "omitted tags are kept");
    assert_eq!(renamed["status"], "DRAFT");
    assert_eq!(renamed["steps"], created["steps"], "steps are untouched");
    assert_eq!(
        renamed["createdBy"]["id"],
        acme.admin_id.as_str(),
        "the creator stays the creator"
    );
    assert!(parse_datetime(&renamed["updatedAt"]) >= parse_datetime(&created["updatedAt"]));
    assert_eq!(renamed["createdAt"], created["createdAt"]);

    let retagged = update_workflow(
        &server,
        &acme.member_token,
        &id,
        json!({ "tags": ["hr", "eu", "eu"] }),
    )
    .await;
    assert_eq!(retagged["tags"], json!(["hr", "eu"]));
    assert_eq!(retagged["name"], "Payroll EU");

    let cleared = update_workflow(
        &server,
        &acme.member_token,
        &id,
        json!({ "description": null }),
    )
    .await;
    assert!(
        cleared["description"].is_null(),
        "explicit null clears the description: {cleared:#}"
    );
    assert_eq!(cleared["tags"], json!(["hr", "eu"]));

    let untagged = update_workflow(&server, &acme.member_token, &id, json!({ "tags": [] })).await;
    assert_eq!(untagged["tags"], json!([]));

    // Invalid updates change nothing.
    let before = get_workflow(&server, &acme.admin_token, &id).await;
    let many_tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    for (what, input) in [
        ("empty name", json!({ "name": "" })),
        ("blank name", json!({ "name": "  " })),
        ("201-character name", json!({ "name": "x".repeat(201) })),
        (
            "5001-character description",
            json!({ "description": "x".repeat(5001) }),
        ),
        ("21 tags", json!({ "tags": many_tags })),
        (
            "tag with a quote",
            json!({ "name": "Fine", "tags": ["a'b\"c"] }),
        ),
    ] {
        let resp = try_update_workflow(&server, &acme.member_token, &id, input).await;
        assert_bad_input(&resp, &format!("updateWorkflow with {what}"));
        assert_eq!(
            get_workflow(&server, &acme.admin_token, &id).await,
            before,
            "a rejected update ({what}) changed the workflow"
        );
    }
}

const STATUSES: [&str; 6] = [
    "DRAFT",
    "PROCESSING",
    "ACTIVE",
    "NEEDS_REVIEW",
    "BROKEN",
    "ARCHIVED",
];

/// The contract's legal transitions (same status is a no-op and always allowed).
fn legal(from: &str, to: &str) -> bool {
    from == to
        || match from {
            "DRAFT" => ["PROCESSING", "ACTIVE", "ARCHIVED"].contains(&to),
            "PROCESSING" => ["DRAFT", "ACTIVE", "NEEDS_REVIEW", "BROKEN", "ARCHIVED"].contains(&to),
            "ACTIVE" | "NEEDS_REVIEW" | "BROKEN" => to != "PROCESSING",
            "ARCHIVED" => to == "DRAFT",
            _ => unreachable!("unknown status {from}"),
        }
}

/// A fresh workflow in `status`, reached through legal transitions.
async fn workflow_in(server: &TestServer, token: &str, status: &str) -> String {
    let initial = match status {
        "DRAFT" | "PROCESSING" | "ACTIVE" => status,
        "NEEDS_REVIEW" | "BROKEN" => "ACTIVE",
        _ => "DRAFT",
    };
    let wf = create_workflow(
        server,
        token,
        json!({ "name": format!("In {status}"), "status": initial }),
    )
    .await;
    let id = str_field(&wf, "id");
    if initial != status {
        let wf = set_status(server, token, &id, status).await;
        assert_eq!(wf["status"], status);
    }
    id
}

both_backends!(status_transitions_follow_the_rules);
async fn status_transitions_follow_the_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    for from in STATUSES {
        for to in STATUSES {
            let id = workflow_in(&server, token, from).await;
            let resp = try_update_workflow(&server, token, &id, json!({ "status": to })).await;
            if legal(from, to) {
                assert!(
                    resp["errors"].is_null(),
                    "{from} -> {to} is legal but failed: {resp:#}"
                );
                assert_eq!(
                    resp["data"]["updateWorkflow"]["status"], to,
                    "{from} -> {to}"
                );
            } else {
                assert_bad_input(&resp, &format!("illegal transition {from} -> {to}"));
                let message = error_message(&resp)
                    .unwrap_or_default()
                    .to_lowercase()
                    .replace(' ', "_");
                assert!(
                    message.contains(&from.to_lowercase()),
                    "the error for {from} -> {to} must name the current status: {resp:#}"
                );
            }
            let expected = if legal(from, to) { to } else { from };
            assert_eq!(
                get_workflow(&server, token, &id).await["status"],
                expected,
                "status after attempting {from} -> {to}"
            );
        }
    }
}

/// The ids `workflows(filter:)` lists (first page of 100).
async fn listed_ids(server: &TestServer, token: &str, filter: Value) -> Vec<String> {
    let data = ok(
        server,
        token,
        "query($filter: WorkflowFilter) { workflows(filter: $filter, first: 100) { totalCount edges { node { id status } } } }",
        json!({ "filter": filter }),
    )
    .await;
    edge_ids(&data["workflows"])
}

both_backends!(archive_keeps_the_workflow_listed);
async fn archive_keeps_the_workflow_listed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = create_workflow(
        &server,
        &acme.member_token,
        json!({ "name": "Old", "status": "ACTIVE", "steps": step_inputs("s", 2) }),
    )
    .await;
    let id = str_field(&wf, "id");
    let keep = create_workflow(
        &server,
        &acme.member_token,
        json!({ "name": "Keep", "status": "ACTIVE" }),
    )
    .await;

    let query = format!(
        "mutation($id: ID!) {{ archiveWorkflow(id: $id) {{ {} }} }}",
        workflow_fields()
    );
    let archived =
        ok(&server, &acme.member_token, &query, json!({ "id": id })).await["archiveWorkflow"]
            .clone();
    assert_eq!(archived["status"], "ARCHIVED");
    assert_eq!(archived["id"], id.as_str());
    assert_eq!(archived["steps"], wf["steps"], "archiving keeps the steps");
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &id).await["status"],
        "ARCHIVED"
    );

    // Archiving again is a no-op.
    let again = ok(&server, &acme.member_token, &query, json!({ "id": id })).await;
    assert_eq!(again["archiveWorkflow"]["status"], "ARCHIVED");

    let all = listed_ids(&server, &acme.admin_token, Value::Null).await;
    assert!(
        all.contains(&id),
        "archived workflows are listed unless filtered out: {all:?}"
    );
    assert_eq!(all.len(), 2);
    assert_eq!(
        listed_ids(&server, &acme.admin_token, json!({ "status": ["ACTIVE"] })).await,
        vec![str_field(&keep, "id")]
    );
    assert_eq!(
        listed_ids(
            &server,
            &acme.admin_token,
            json!({ "status": ["ARCHIVED"] })
        )
        .await,
        vec![id.clone()]
    );

    // An archived workflow can only go back to draft, and the error says why.
    let resp = try_update_workflow(
        &server,
        &acme.member_token,
        &id,
        json!({ "status": "ACTIVE" }),
    )
    .await;
    assert_bad_input(&resp, "ARCHIVED -> ACTIVE");
    assert!(
        error_message(&resp)
            .unwrap_or_default()
            .to_lowercase()
            .contains("archived"),
        "{resp:#}"
    );
    let restored = set_status(&server, &acme.member_token, &id, "DRAFT").await;
    assert_eq!(restored["status"], "DRAFT");
    assert_eq!(restored["steps"], wf["steps"]);
}

// ---------------------------------------------------------------------------
// Delete and duplicate
// ---------------------------------------------------------------------------

both_backends!(delete_is_admin_only_and_cascades);
async fn delete_is_admin_only_and_cascades(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let doomed = simple_workflow(&server, &acme.member_token, "Doomed", 3).await;
    let survivor = simple_workflow(&server, &acme.member_token, "Survivor", 2).await;
    let id = str_field(&doomed, "id");
    let steps = step_ids(&doomed);
    let screenshot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &id,
            hash: "h1",
        },
    )
    .await;
    attach_screenshot(&server, &steps[0], &screenshot).await;
    let run = insert_run(
        &server,
        &RunRow {
            company_id: &acme.company_id,
            workflow_id: &id,
            started_by: Some(&acme.member_id),
            status: "failed",
            current_step_id: Some(&steps[1]),
            error: Some("boom"),
            created_at: ts_at(10),
        },
    )
    .await;
    let log = insert_health_log(
        &server,
        &HealthLogRow {
            company_id: &acme.company_id,
            workflow_id: &id,
            run_id: &run,
            step_id: Some(&steps[1]),
            status: "failed",
            error_message: Some("no such element"),
            created_at: ts_at(11),
        },
    )
    .await;
    let note = insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: Some(&id),
            severity: "error",
            title: "Doomed broke",
            read_by: None,
            created_at: ts_at(12),
        },
    )
    .await;
    let general = insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: None,
            severity: "info",
            title: "Hello",
            read_by: None,
            created_at: ts_at(13),
        },
    )
    .await;

    let delete = "mutation($id: ID!) { deleteWorkflow(id: $id) }";
    let before = get_workflow(&server, &acme.admin_token, &id).await;
    assert_eq!(before["steps"][0]["screenshot"]["id"], screenshot.as_str());
    let resp = server
        .gql(delete, json!({ "id": id }), Some(&acme.member_token))
        .await;
    assert_error_code(&resp, "FORBIDDEN", "a regular member deleting a workflow");
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &id).await,
        before,
        "a forbidden delete changed the workflow"
    );
    assert_eq!(
        server
            .sql_count(&format!("runs WHERE workflow_id = '{id}'"))
            .await,
        1,
        "a forbidden delete removed runs"
    );

    let data = ok(&server, &acme.admin_token, delete, json!({ "id": id })).await;
    assert_eq!(data["deleteWorkflow"], id.as_str());

    let resp = try_get_workflow(&server, &acme.admin_token, &id).await;
    assert_not_found(&resp, "workflow", "workflow(id) after delete");
    for step in &steps {
        let resp = server
            .gql(
                "query($id: ID!) { step(id: $id) { id } }",
                json!({ "id": step }),
                Some(&acme.admin_token),
            )
            .await;
        assert_not_found(&resp, "step", "step(id) of a deleted workflow");
    }
    let resp = server
        .gql(
            "query($id: ID!) { screenshot(id: $id) { id } }",
            json!({ "id": screenshot }),
            Some(&acme.admin_token),
        )
        .await;
    assert_not_found(&resp, "screenshot", "screenshot of a deleted workflow");
    let resp = server
        .gql(
            "query($id: ID!) { run(id: $id) { id } }",
            json!({ "id": run }),
            Some(&acme.admin_token),
        )
        .await;
    assert_not_found(&resp, "run", "run of a deleted workflow");
    let data = ok(
        &server,
        &acme.admin_token,
        "{ runs { totalCount edges { node { id } } } healthLogs { totalCount edges { node { id } } } \
           notifications { totalCount edges { node { id } } } workflows { totalCount edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(data["runs"]["totalCount"], 0, "{data:#}");
    assert_eq!(
        data["healthLogs"]["totalCount"], 0,
        "health log {log} survived: {data:#}"
    );
    assert_eq!(
        edge_ids(&data["notifications"]),
        vec![general.clone()],
        "notification {note} must go with its workflow"
    );
    assert_eq!(
        edge_ids(&data["workflows"]),
        vec![str_field(&survivor, "id")]
    );
    for table in [
        "steps",
        "screenshots",
        "runs",
        "health_logs",
        "notifications",
    ] {
        assert_eq!(
            server
                .sql_count(&format!("{table} WHERE workflow_id = '{id}'"))
                .await,
            0,
            "{table} rows of the deleted workflow remain"
        );
    }
    // The other workflow is untouched.
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &str_field(&survivor, "id")).await,
        survivor
    );

    let resp = server
        .gql(delete, json!({ "id": id }), Some(&acme.admin_token))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "deleting a deleted workflow");
}

both_backends!(duplicate_copies_steps_and_resets_stats);
async fn duplicate_copies_steps_and_resets_stats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let source = create_workflow(
        &server,
        &acme.admin_token,
        json!({
            "name": "Invoices",
            "description": "Downloads invoices",
            "tags": ["billing", "eu"],
            "status": "ACTIVE",
            "steps": [
                { "actionType": "navigate", "pageContext": { "url": "https://x.example" } },
                { "actionType": "type", "selectors": { "css": "#q" }, "actionData": { "value": "inv" },
                  "fieldLabel": "Search", "instruction": "Search invoices", "aiConfidence": 0.66, "aiModel": "m1" },
                { "actionType": "click", "selectors": { "css": "#go" }, "fieldLabel": "Go" },
            ],
        }),
    )
    .await;
    let source_id = str_field(&source, "id");
    let screenshot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &source_id,
            hash: "shot",
        },
    )
    .await;
    attach_screenshot(&server, &step_ids(&source)[1], &screenshot).await;
    server
        .sql(&format!(
            "UPDATE workflows SET success_rate = 0.75, total_uses = 8, consecutive_failures = 2, \
               last_success_at = {}, last_failure_at = {} WHERE id = {};",
            ts_at(100),
            ts_at(200),
            lit(&source_id)
        ))
        .await;
    let source = get_workflow(&server, &acme.admin_token, &source_id).await;
    assert_eq!(source["totalUses"], 8, "precondition: stats were set");

    let query = format!(
        "mutation($id: ID!, $name: String) {{ duplicateWorkflow(id: $id, name: $name) {{ {} }} }}",
        workflow_fields()
    );
    let copy = ok(
        &server,
        &acme.member_token,
        &query,
        json!({ "id": source_id }),
    )
    .await["duplicateWorkflow"]
        .clone();
    let copy_id = str_field(&copy, "id");
    assert_ne!(copy_id, source_id);
    assert_eq!(copy["name"], "Invoices (copy)");
    assert_eq!(copy["description"], "Downloads invoices");
    assert_eq!(copy["tags"], json!(["billing", "eu"]));
    assert_eq!(copy["status"], "DRAFT");
    assert_eq!(copy["successRate"], json!(0.0));
    assert_eq!(copy["totalUses"], 0);
    assert_eq!(copy["consecutiveFailures"], 0);
    assert!(
        copy["lastSuccessAt"].is_null() && copy["lastFailureAt"].is_null(),
        "{copy:#}"
    );
    assert_eq!(
        copy["createdBy"]["id"],
        acme.member_id.as_str(),
        "the copy belongs to whoever duplicated it"
    );
    assert_dense(&copy);

    let source_steps = source["steps"].as_array().unwrap();
    let copy_steps = copy["steps"].as_array().unwrap();
    assert_eq!(copy_steps.len(), source_steps.len());
    for (original, copied) in source_steps.iter().zip(copy_steps) {
        assert_ne!(original["id"], copied["id"], "copied steps get new ids");
        assert_eq!(copied["workflow"]["id"], copy_id.as_str());
        for field in [
            "stepNumber",
            "actionType",
            "selectors",
            "elementMeta",
            "pageContext",
            "actionData",
            "domContext",
            "fieldLabel",
            "instruction",
            "aiConfidence",
            "aiModel",
        ] {
            assert_eq!(copied[field], original[field], "copied step field {field}");
        }
        assert_eq!(
            copied["screenshot"]["id"], original["screenshot"]["id"],
            "the copy references the same screenshots"
        );
    }
    assert_eq!(copy_steps[1]["screenshot"]["id"], screenshot.as_str());

    // The source is unchanged, and editing the copy does not touch it.
    update_step(
        &server,
        &acme.member_token,
        &str_field(&copy_steps[2], "id"),
        json!({ "fieldLabel": "Go now" }),
    )
    .await;
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &source_id).await,
        source
    );

    let named = ok(
        &server,
        &acme.member_token,
        &query,
        json!({ "id": source_id, "name": "  Invoices v2 " }),
    )
    .await;
    assert_eq!(named["duplicateWorkflow"]["name"], "Invoices v2");
    let resp = server
        .gql(
            &query,
            json!({ "id": source_id, "name": "" }),
            Some(&acme.member_token),
        )
        .await;
    assert_bad_input(&resp, "duplicateWorkflow with an empty name");
    let data = ok(
        &server,
        &acme.admin_token,
        "{ workflows { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data["workflows"]["totalCount"], 3,
        "source, copy and named copy"
    );
}

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

both_backends!(add_step_inserts_at_a_position);
async fn add_step_inserts_at_a_position(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.member_token, "Flow", 3).await;
    let id = str_field(&wf, "id");
    let original = step_ids(&wf);
    let token = &acme.member_token;

    let at_end = add_step(
        &server,
        token,
        &id,
        json!({ "actionType": "submit", "fieldLabel": "end", "actionData": { "k": [1, 2] } }),
        None,
    )
    .await;
    assert_eq!(at_end["stepNumber"], 4);
    assert_eq!(at_end["workflow"]["id"], id.as_str());
    assert_eq!(at_end["actionType"], "submit");
    assert_eq!(at_end["actionData"], json!({ "k": [1, 2] }));
    let end_id = str_field(&at_end, "id");

    let first = add_step(&server, token, &id, step_input("scroll", "first"), Some(1)).await;
    assert_eq!(first["stepNumber"], 1);
    let first_id = str_field(&first, "id");

    let third = add_step(&server, token, &id, step_input("hover", "third"), Some(3)).await;
    assert_eq!(third["stepNumber"], 3);
    let third_id = str_field(&third, "id");

    let wf = get_workflow(&server, token, &id).await;
    assert_dense(&wf);
    assert_eq!(
        step_ids(&wf),
        vec![
            first_id,
            original[0].clone(),
            third_id,
            original[1].clone(),
            original[2].clone(),
            end_id
        ],
        "later steps shift down by one"
    );
    let labels: Vec<&str> = wf["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fieldLabel"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "first",
            "Flow step 1",
            "third",
            "Flow step 2",
            "Flow step 3",
            "end"
        ]
    );

    // Bad positions and bad input leave the steps alone.
    for (what, input, position) in [
        ("position 0", step_input("click", "x"), Some(0)),
        ("position -1", step_input("click", "x"), Some(-1)),
        (
            "non-object selectors",
            json!({ "actionType": "click", "selectors": "#x" }),
            None,
        ),
        (
            "aiConfidence 2",
            json!({ "actionType": "click", "aiConfidence": 2.0 }),
            Some(2),
        ),
    ] {
        let resp = try_add_step(&server, token, &id, input, position).await;
        assert_bad_input(&resp, &format!("addStep with {what}"));
        assert_eq!(
            get_workflow(&server, token, &id).await,
            wf,
            "addStep with {what} changed the workflow"
        );
    }

    // Past the end: either refused or appended, but never a gap.
    let resp = try_add_step(&server, token, &id, step_input("click", "far"), Some(20)).await;
    let after = get_workflow(&server, token, &id).await;
    assert_dense(&after);
    match error_code(&resp) {
        Some(code) => {
            assert_eq!(code, "BAD_USER_INPUT", "{resp:#}");
            assert_eq!(after, wf);
        }
        None => {
            assert_eq!(resp["data"]["addStep"]["stepNumber"], 7, "{resp:#}");
            assert_eq!(step_ids(&after).len(), 7);
        }
    }

    // A workflow without steps gets step 1.
    let empty = create_workflow(&server, token, json!({ "name": "Empty" })).await;
    assert_eq!(empty["steps"], json!([]));
    assert_eq!(empty["stepCount"], 0);
    let only = add_step(
        &server,
        token,
        &str_field(&empty, "id"),
        step_input("click", "only"),
        None,
    )
    .await;
    assert_eq!(only["stepNumber"], 1);
}

both_backends!(update_step_records_who_edited_ai_text);
async fn update_step_records_who_edited_ai_text(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = create_workflow(
        &server,
        &acme.admin_token,
        json!({
            "name": "Signup",
            "steps": [
                { "actionType": "type", "fieldLabel": "Email", "instruction": "Type the email",
                  "aiConfidence": 0.9, "aiModel": "gpt-4o-mini", "selectors": { "css": "#email" } },
                { "actionType": "type", "fieldLabel": "Name", "instruction": "Type the name", "selectors": { "css": "#name" } },
            ],
        }),
    )
    .await;
    let wf_id = str_field(&wf, "id");
    let ai_step = str_field(&wf["steps"][0], "id");
    let human_step = str_field(&wf["steps"][1], "id");
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);

    let edited = update_step(
        &server,
        &acme.member_token,
        &ai_step,
        json!({ "fieldLabel": "Work email" }),
    )
    .await;
    assert_eq!(edited["fieldLabel"], "Work email");
    assert_eq!(
        edited["instruction"], "Type the email",
        "omitted fields are kept"
    );
    assert_eq!(edited["aiModel"], "gpt-4o-mini");
    assert_eq!(edited["aiConfidence"], json!(0.9));
    assert_eq!(edited["selectors"], json!({ "css": "#email" }));
    assert_eq!(
        edited["labelEdited"], true,
        "an AI-generated label was edited by a person"
    );
    assert_eq!(edited["instructionEdited"], false);
    assert_eq!(edited["editedBy"]["id"], acme.member_id.as_str());
    let first_edit = parse_datetime(&edited["editedAt"]);
    assert!(
        first_edit >= started && first_edit <= chrono::Utc::now() + chrono::Duration::seconds(5),
        "editedAt {first_edit}"
    );
    assert_eq!(edited["stepNumber"], 1);

    let edited = update_step(
        &server,
        &acme.admin_token,
        &ai_step,
        json!({ "instruction": "Type the work email" }),
    )
    .await;
    assert_eq!(edited["instruction"], "Type the work email");
    assert_eq!(edited["instructionEdited"], true);
    assert_eq!(edited["labelEdited"], true, "stays true");
    assert_eq!(
        edited["editedBy"]["id"],
        acme.admin_id.as_str(),
        "the last editor is recorded"
    );
    assert!(parse_datetime(&edited["editedAt"]) >= first_edit);

    // A label no AI wrote: the edit is recorded, but it is not an "edited AI label".
    let human = update_step(
        &server,
        &acme.member_token,
        &human_step,
        json!({ "fieldLabel": "Full name" }),
    )
    .await;
    assert_eq!(human["fieldLabel"], "Full name");
    assert_eq!(human["labelEdited"], false, "{human:#}");
    assert_eq!(human["instructionEdited"], false);
    assert_eq!(human["editedBy"]["id"], acme.member_id.as_str());
    assert!(!human["editedAt"].is_null());

    // Other fields, explicit nulls and screenshots.
    let shot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &wf_id,
            hash: "s",
        },
    )
    .await;
    let changed = update_step(
        &server,
        &acme.member_token,
        &human_step,
        json!({ "actionType": "select", "selectors": { "css": "select#name" }, "domContext": { "a": 1 }, "screenshotId": shot }),
    )
    .await;
    assert_eq!(changed["actionType"], "select");
    assert_eq!(changed["selectors"], json!({ "css": "select#name" }));
    assert_eq!(changed["domContext"], json!({ "a": 1 }));
    assert_eq!(changed["screenshot"]["id"], shot.as_str());
    assert_eq!(changed["fieldLabel"], "Full name");
    let cleared = update_step(
        &server,
        &acme.member_token,
        &human_step,
        json!({ "fieldLabel": null, "instruction": null, "screenshotId": null }),
    )
    .await;
    assert!(
        cleared["fieldLabel"].is_null()
            && cleared["instruction"].is_null()
            && cleared["screenshot"].is_null(),
        "{cleared:#}"
    );
    assert_eq!(cleared["actionType"], "select");

    // Bad input changes nothing.
    let before = get_workflow(&server, &acme.admin_token, &wf_id).await;
    for (what, input) in [
        ("aiConfidence 1.5", json!({ "aiConfidence": 1.5 })),
        ("aiConfidence -1", json!({ "aiConfidence": -1 })),
        (
            "string selectors",
            json!({ "selectors": "#x", "fieldLabel": "changed" }),
        ),
        ("array pageContext", json!({ "pageContext": [] })),
    ] {
        let resp = try_update_step(&server, &acme.member_token, &ai_step, input).await;
        assert_bad_input(&resp, &format!("updateStep with {what}"));
        assert_eq!(
            get_workflow(&server, &acme.admin_token, &wf_id).await,
            before,
            "rejected updateStep ({what}) changed something"
        );
    }
    let resp = try_update_step(
        &server,
        &acme.member_token,
        &ai_step,
        json!({ "screenshotId": new_id() }),
    )
    .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "updateStep with an unknown screenshotId",
    );
    assert_eq!(
        get_workflow(&server, &acme.admin_token, &wf_id).await,
        before
    );
}

both_backends!(delete_step_renumbers_densely);
async fn delete_step_renumbers_densely(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.member_token, "Flow", 4).await;
    let id = str_field(&wf, "id");
    let s = step_ids(&wf);
    let delete = "mutation($id: ID!) { deleteStep(id: $id) }";

    let data = ok(&server, &acme.member_token, delete, json!({ "id": s[1] })).await;
    assert_eq!(data["deleteStep"], s[1].as_str());
    let after = get_workflow(&server, &acme.member_token, &id).await;
    assert_dense(&after);
    assert_eq!(
        step_ids(&after),
        vec![s[0].clone(), s[2].clone(), s[3].clone()]
    );

    let resp = server
        .gql(
            "query($id: ID!) { step(id: $id) { id } }",
            json!({ "id": s[1] }),
            Some(&acme.member_token),
        )
        .await;
    assert_not_found(&resp, "step", "step(id) after deleteStep");
    let resp = server
        .gql(delete, json!({ "id": s[1] }), Some(&acme.member_token))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "deleting a deleted step");

    ok(&server, &acme.member_token, delete, json!({ "id": s[0] })).await;
    ok(&server, &acme.member_token, delete, json!({ "id": s[3] })).await;
    let after = get_workflow(&server, &acme.member_token, &id).await;
    assert_dense(&after);
    assert_eq!(step_ids(&after), vec![s[2].clone()]);
    assert_eq!(after["steps"][0]["fieldLabel"], "Flow step 3");

    // Numbers are reused cleanly afterwards.
    let added = add_step(
        &server,
        &acme.member_token,
        &id,
        step_input("click", "new"),
        None,
    )
    .await;
    assert_eq!(added["stepNumber"], 2);
    let added = add_step(
        &server,
        &acme.member_token,
        &id,
        step_input("click", "newer"),
        Some(1),
    )
    .await;
    assert_eq!(added["stepNumber"], 1);
    assert_dense(&get_workflow(&server, &acme.member_token, &id).await);
}

both_backends!(reorder_steps_takes_exactly_a_permutation);
async fn reorder_steps_takes_exactly_a_permutation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    let wf = simple_workflow(&server, token, "Flow", 4).await;
    let other = simple_workflow(&server, token, "Other", 2).await;
    let id = str_field(&wf, "id");
    let s = step_ids(&wf);
    let foreign = step_ids(&other)[0].clone();
    let query = format!(
        "mutation($id: ID!, $steps: [ID!]!) {{ reorderSteps(workflowId: $id, stepIds: $steps) {{ {STEP_FIELDS} }} }}"
    );

    let order = vec![s[2].clone(), s[0].clone(), s[3].clone(), s[1].clone()];
    let data = ok(&server, token, &query, json!({ "id": id, "steps": order })).await;
    let returned = data["reorderSteps"].as_array().unwrap();
    let returned_ids: Vec<String> = returned.iter().map(|st| str_field(st, "id")).collect();
    assert_eq!(
        returned_ids, order,
        "reorderSteps returns the steps in their new order"
    );
    let numbers: Vec<i64> = returned
        .iter()
        .map(|st| st["stepNumber"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let after = get_workflow(&server, token, &id).await;
    assert_dense(&after);
    assert_eq!(step_ids(&after), order);
    let labels: Vec<&str> = after["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["fieldLabel"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["Flow step 3", "Flow step 1", "Flow step 4", "Flow step 2"],
        "steps keep their content"
    );

    // Reversing (every step moves) works too.
    let reversed: Vec<String> = order.iter().rev().cloned().collect();
    ok(
        &server,
        token,
        &query,
        json!({ "id": id, "steps": reversed }),
    )
    .await;
    let current = get_workflow(&server, token, &id).await;
    assert_eq!(step_ids(&current), reversed);
    assert_dense(&current);

    let r = &reversed;
    let bad: Vec<(&str, Vec<String>)> = vec![
        (
            "a missing step",
            vec![r[0].clone(), r[1].clone(), r[2].clone()],
        ),
        (
            "a step twice",
            vec![
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
                r[3].clone(),
            ],
        ),
        (
            "a duplicate instead of a step",
            vec![r[0].clone(), r[1].clone(), r[2].clone(), r[2].clone()],
        ),
        (
            "another workflow's step instead of one",
            vec![r[0].clone(), r[1].clone(), r[2].clone(), foreign.clone()],
        ),
        (
            "another workflow's step in addition",
            vec![
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
                foreign.clone(),
            ],
        ),
        (
            "an unknown id",
            vec![r[0].clone(), r[1].clone(), r[2].clone(), new_id()],
        ),
        ("no ids at all", vec![]),
    ];
    for (what, ids) in bad {
        let resp = server
            .gql(&query, json!({ "id": id, "steps": ids }), Some(token))
            .await;
        assert_bad_input(&resp, &format!("reorderSteps with {what}"));
        assert_eq!(
            get_workflow(&server, token, &id).await,
            current,
            "reorderSteps with {what} changed the steps"
        );
    }
    assert_eq!(
        get_workflow(&server, token, &str_field(&other, "id")).await,
        other,
        "the other workflow is untouched"
    );
}
