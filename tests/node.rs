//! Relay object identification: every entity with an id is a `Node`, and `node(id:)` /
//! `nodes(ids:)` find any object of the viewer's company again (isolation between companies
//! is in tests/isolation.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::{
    ScreenshotRow, create_workflow, insert_screenshot, new_id, ok, step_ids, step_input, team,
    update_step,
};
use common::lifecycle::{create_link, create_project, publish, set_visibility, share, versions};
use common::runs::{active_workflow, outcome, report_step, start_run};
use common::{Backend, PASSWORD, TestServer, assert_error_code, str_field};
use serde_json::{Value, json};

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

/// `node(id:)` as `token` sees it: the node, or null with NOT_FOUND (checked).
async fn node_as(server: &TestServer, token: &str, id: &str, selection: &str) -> Option<Value> {
    let resp = server
        .gql(
            &format!("query($id: ID!) {{ node(id: $id) {{ __typename id {selection} }} }}"),
            json!({ "id": id }),
            Some(token),
        )
        .await;
    let node = &resp["data"]["node"];
    if node.is_null() {
        assert_error_code(&resp, "NOT_FOUND", &format!("node({id}) answered null"));
        // Exactly like an id nobody issued.
        let missing = new_id();
        let control = server
            .gql(
                &format!("query($id: ID!) {{ node(id: $id) {{ __typename id {selection} }} }}"),
                json!({ "id": missing }),
                Some(token),
            )
            .await;
        assert_eq!(
            resp.to_string().replace(id, "<ID>"),
            control.to_string().replace(&missing, "<ID>"),
            "a hidden id must be answered like a missing one"
        );
        return None;
    }
    assert!(resp["errors"].is_null(), "node({id}): {resp:#}");
    assert_eq!(node["id"], id, "{resp:#}");
    Some(node.clone())
}

/// The `__typename` `token` gets for `id`, or `None` when it is null with NOT_FOUND.
async fn kind_as(server: &TestServer, token: &str, id: &str) -> Option<String> {
    node_as(server, token, id, "")
        .await
        .map(|node| str_field(&node, "__typename"))
}

both_backends!(later_entities_are_nodes_with_their_fields_rules);
/// The entities added after `node` landed (accounts, the run queue, the lifecycle) are
/// nodes too, each readable by `node` exactly as far as its ordinary field is.
async fn later_entities_are_nodes_with_their_fields_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let member = acme.member_token.as_str();
    let invite = server.invite_token(admin).await;
    let (carol, carol_payload) = server
        .join_company(&invite, "Carol", "carol@acme.test", PASSWORD)
        .await;
    let carol_id = str_field(&carol_payload["user"], "id");

    // A COMPANY-visible workflow with a step showing a screenshot, and a RESTRICTED one
    // shared with Carol only.
    let open = create_workflow(
        &server,
        admin,
        json!({ "name": "Open", "status": "ACTIVE", "steps": [step_input("click", "Go")] }),
    )
    .await;
    let open_id = str_field(&open, "id");
    let shot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &acme.company_id,
            workflow_id: &open_id,
            hash: "node-hash",
        },
    )
    .await;
    update_step(
        &server,
        admin,
        &step_ids(&open)[0],
        json!({ "screenshotId": shot }),
    )
    .await;
    let secret = create_workflow(&server, admin, json!({ "name": "Secret" })).await;
    let secret_id = str_field(&secret, "id");
    set_visibility(&server, admin, &secret_id, "RESTRICTED").await;
    share(&server, admin, &secret_id, &carol_id, "VIEW").await;
    let shares = ok(
        &server,
        admin,
        "query($w: ID!) { workflow(id: $w) { shares { id } } }",
        json!({ "w": secret_id }),
    )
    .await;
    let share_id = str_field(&shares["workflow"]["shares"][0], "id");
    let (_, secret_versions) = versions(&server, admin, &secret_id).await;
    let secret_version = str_field(&secret_versions[0], "id");
    let (_, open_versions) = versions(&server, admin, &open_id).await;
    let open_version = str_field(&open_versions[0], "id");
    let (link, _) = create_link(&server, admin, &open_id).await;

    let project = create_project(&server, member, "Billing").await;
    let schedule = ok(
        &server,
        member,
        "mutation($w: ID!) { createSchedule(input: { workflowId: $w, cron: \"0 0 1 1 *\", enabled: false }) { id } }",
        json!({ "w": open_id }),
    )
    .await;
    let schedule = str_field(&schedule["createSchedule"], "id");
    let webhook = ok(
        &server,
        admin,
        "mutation($w: ID!) { createWebhook(workflowId: $w, name: \"hook\") { webhook { id } } }",
        json!({ "w": open_id }),
    )
    .await;
    let webhook = str_field(&webhook["createWebhook"]["webhook"], "id");
    let key = ok(
        &server,
        admin,
        "mutation { createApiKey(name: \"runner\") { secret apiKey { id } } }",
        json!({}),
    )
    .await;
    let (key_id, key_secret) = (
        str_field(&key["createApiKey"]["apiKey"], "id"),
        str_field(&key["createApiKey"], "secret"),
    );
    let template = publish(
        &server,
        admin,
        json!({ "w": open_id, "name": "Open template", "v": "COMPANY", "shots": true }),
    )
    .await;
    let template_id = str_field(&template, "id");
    let template_shot = str_field(&template["steps"][0]["screenshot"], "id");
    let audit = ok(
        &server,
        admin,
        "{ auditLog(first: 1) { nodes { id action } } }",
        json!({}),
    )
    .await;
    let audit_id = str_field(&audit["auditLog"]["nodes"][0], "id");
    let session_of = |token: &str| {
        let token = token.to_owned();
        let server = &server;
        async move {
            let data = ok(server, &token, "{ sessions { id current } }", json!({})).await;
            let current: Vec<&Value> = data["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["current"] == true)
                .collect();
            str_field(current[0], "id")
        }
    };
    let admin_session = session_of(admin).await;
    let member_session = session_of(member).await;

    // Who gets what: (id, typename, admin, member, carol).
    let cases: Vec<(&str, &str, bool, bool, bool)> = vec![
        (&key_id, "ApiKey", true, false, false),
        (&audit_id, "AuditEntry", true, false, false),
        (&admin_session, "Session", true, false, false),
        (&member_session, "Session", false, true, false),
        (&schedule, "Schedule", true, true, true),
        (&webhook, "Webhook", true, true, true),
        (&open_version, "WorkflowVersion", true, true, true),
        (&secret_version, "WorkflowVersion", true, false, true),
        (&project, "Project", true, true, true),
        (&share_id, "WorkflowShare", true, false, true),
        (&link, "ShareLink", true, false, false),
        (&template_id, "WorkflowTemplate", true, true, true),
        (&template_shot, "TemplateScreenshot", true, true, true),
    ];
    for (id, typename, for_admin, for_member, for_carol) in &cases {
        for (who, token, expected) in [
            ("admin", admin, *for_admin),
            ("member", member, *for_member),
            ("carol", carol.as_str(), *for_carol),
        ] {
            let got = kind_as(&server, token, id).await;
            let want = expected.then(|| (*typename).to_owned());
            assert_eq!(got, want, "{who} asking for the {typename} {id}");
        }
    }

    // The object is the one its ordinary field gives.
    let by_node = node_as(
        &server,
        admin,
        &key_id,
        "... on ApiKey { name prefix active }",
    )
    .await
    .unwrap();
    assert_eq!(by_node["name"], "runner");
    assert_eq!(by_node["active"], true);
    let by_node = node_as(
        &server,
        carol.as_str(),
        &secret_version,
        "... on WorkflowVersion { number workflow { id name } }",
    )
    .await
    .unwrap();
    assert_eq!(by_node["workflow"]["name"], "Secret");
    let by_node = node_as(
        &server,
        member,
        &member_session,
        "... on Session { current }",
    )
    .await
    .unwrap();
    assert_eq!(by_node["current"], true);
    let by_node = node_as(
        &server,
        member,
        &template_id,
        "... on WorkflowTemplate { name steps { screenshot { id } } }",
    )
    .await
    .unwrap();
    assert_eq!(by_node["name"], "Open template");
    assert_eq!(
        by_node["steps"][0]["screenshot"]["id"],
        template_shot.as_str()
    );
    let by_node = node_as(&server, admin, &audit_id, "... on AuditEntry { action }")
        .await
        .unwrap();
    assert_eq!(by_node["action"], audit["auditLog"]["nodes"][0]["action"]);

    // A session that ended is gone, even for its owner.
    let (second, _) = server.login(&acme.member_email, PASSWORD).await;
    let second_session = session_of(&second).await;
    assert_eq!(
        kind_as(&server, member, &second_session).await.as_deref(),
        Some("Session")
    );
    ok(&server, &second, "mutation { logout }", json!({})).await;
    assert_eq!(kind_as(&server, member, &second_session).await, None);

    // Revealing a restricted workflow to the member reveals its versions and shares.
    share(&server, admin, &secret_id, &acme.member_id, "VIEW").await;
    assert_eq!(
        kind_as(&server, member, &secret_version).await.as_deref(),
        Some("WorkflowVersion")
    );
    assert_eq!(
        kind_as(&server, member, &share_id).await.as_deref(),
        Some("WorkflowShare")
    );

    // An EXECUTOR key cannot look anything up by id: `node` is not on its allow-list.
    for (query, vars) in [
        (NODE, json!({ "id": key_id })),
        (NODE, json!({ "id": open_id })),
        (NODES, json!({ "ids": [schedule] })),
    ] {
        let resp = server.gql(query, vars, Some(&key_secret)).await;
        assert_error_code(&resp, "FORBIDDEN", "an executor asking node");
        assert!(resp["data"].is_null(), "{resp:#}");
    }

    // nodes mixes kinds and rules: what the member may not read is null at its index.
    let resp = server
        .gql(
            NODES,
            json!({ "ids": [project, key_id, open_version, link, template_shot] }),
            Some(member),
        )
        .await;
    let nodes = resp["data"]["nodes"].as_array().unwrap();
    let kinds: Vec<Value> = nodes.iter().map(|n| n["__typename"].clone()).collect();
    assert_eq!(
        kinds,
        vec![
            json!("Project"),
            Value::Null,
            json!("WorkflowVersion"),
            Value::Null,
            json!("TemplateScreenshot")
        ],
        "{resp:#}"
    );
    let paths: Vec<Value> = resp["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(
        paths,
        vec![json!(["nodes", 1]), json!(["nodes", 3])],
        "{resp:#}"
    );
}

both_backends!(other_companies_templates_are_nodes_only_as_the_catalogue_shows_them);
async fn other_companies_templates_are_nodes_only_as_the_catalogue_shows_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let flow = create_workflow(
        &server,
        &globex.admin_token,
        json!({ "name": "Globex recipe", "steps": [step_input("click", "Go")] }),
    )
    .await;
    let flow_id = str_field(&flow, "id");
    let shot = insert_screenshot(
        &server,
        &ScreenshotRow {
            company_id: &globex.company_id,
            workflow_id: &flow_id,
            hash: "globex-hash",
        },
    )
    .await;
    update_step(
        &server,
        &globex.admin_token,
        &step_ids(&flow)[0],
        json!({ "screenshotId": shot }),
    )
    .await;
    let public = publish(
        &server,
        &globex.admin_token,
        json!({ "w": flow_id, "name": "Public recipe", "v": "PUBLIC", "shots": true }),
    )
    .await;
    let company_only = publish(
        &server,
        &globex.admin_token,
        json!({ "w": flow_id, "name": "Globex only", "v": "COMPANY", "shots": true }),
    )
    .await;
    let (public_id, public_shot) = (
        str_field(&public, "id"),
        str_field(&public["steps"][0]["screenshot"], "id"),
    );
    let (company_id, company_shot) = (
        str_field(&company_only, "id"),
        str_field(&company_only["steps"][0]["screenshot"], "id"),
    );
    let fields = "... on WorkflowTemplate { name isOwn createdBy { id } sourceWorkflow { id } \
                  steps { screenshot { id } } }";
    for token in [&acme.admin_token, &acme.member_token] {
        // The catalogue's template, as `template(id:)` shows it: nothing of Globex's inside.
        let node = node_as(&server, token, &public_id, fields).await.unwrap();
        let typed = ok(
            &server,
            token,
            &format!("query($id: ID!) {{ template(id: $id) {{ __typename id {fields} }} }}"),
            json!({ "id": public_id }),
        )
        .await;
        assert_eq!(node, typed["template"]);
        assert_eq!(node["isOwn"], false);
        assert!(
            node["createdBy"].is_null() && node["sourceWorkflow"].is_null(),
            "{node:#}"
        );
        assert_eq!(
            kind_as(&server, token, &public_shot).await.as_deref(),
            Some("TemplateScreenshot")
        );
        // Globex's own: like a missing id.
        for id in [
            &company_id,
            &company_shot,
            &flow_id,
            &shot,
            &globex.company_id,
        ] {
            assert_eq!(kind_as(&server, token, id).await, None, "Globex's {id}");
        }
    }
    // Unpublished, the PUBLIC one leaves the catalogue and `node` with it.
    ok(
        &server,
        &globex.admin_token,
        "mutation($id: ID!) { unpublishTemplate(id: $id) { id } }",
        json!({ "id": public_id }),
    )
    .await;
    assert_eq!(kind_as(&server, &acme.member_token, &public_id).await, None);
    assert_eq!(
        kind_as(&server, &acme.member_token, &public_shot).await,
        None
    );
    assert_eq!(
        kind_as(&server, &globex.member_token, &public_id)
            .await
            .as_deref(),
        Some("WorkflowTemplate")
    );
}
