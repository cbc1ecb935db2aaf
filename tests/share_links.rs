//! Public share links: a token that shows one workflow read-only without signing in,
//! counts its uses, and stops working when it expires or is revoked (answered exactly like
//! an unknown token).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::lifecycle::*;
use common::runs::{active_workflow, start_run};
use common::{Backend, ServerOptions, TestServer, assert_error_code, error_code, str_field};
use serde_json::{Value, json};

/// A response with the token replaced, to compare answers to different tokens.
fn masked(resp: &Value, token: &str) -> String {
    resp.to_string().replace(token, "<TOKEN>")
}

both_backends!(a_share_link_shows_the_workflow_without_signing_in_and_counts_its_uses);
async fn a_share_link_shows_the_workflow_without_signing_in_and_counts_its_uses(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let other = team(&server, "Other").await;
    let admin = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, admin, "Shared flow", 2).await;
    update_step(
        &server,
        admin,
        &steps[0],
        json!({ "pageContext": { "url": "https://app.test/login" }, "instruction": "Log in" }),
    )
    .await;
    let upload = multipart_request(
        &server,
        &server.client,
        Some(admin),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": workflow, "s": steps[0] }),
        png(5, 4, 3),
    )
    .await;
    assert!(upload["errors"].is_null(), "{upload:#}");
    let run = str_field(&start_run(&server, admin, &workflow).await, "id");

    // Only admins and the creator make links; another company's workflow is not found.
    let resp = try_create_link(&server, &acme.member_token, &workflow, None).await;
    assert_error_code(
        &resp,
        "FORBIDDEN",
        "a member who did not create the workflow",
    );
    let resp = try_create_link(&server, &other.admin_token, &workflow, None).await;
    assert_error_code(&resp, "NOT_FOUND", "another company's workflow");
    for (expires, what) in [
        ("2000-01-01T00:00:00Z", "in the past"),
        (
            &*(chrono::Utc::now() + chrono::TimeDelta::days(366)).to_rfc3339(),
            "over a year ahead",
        ),
    ] {
        let resp = try_create_link(&server, admin, &workflow, Some(expires)).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
        assert_eq!(resp["errors"][0]["extensions"]["field"], "expiresAt");
    }
    let in_a_week = (chrono::Utc::now() + chrono::TimeDelta::days(7)).to_rfc3339();
    let resp = try_create_link(&server, admin, &workflow, Some(&in_a_week)).await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let created = &resp["data"]["createShareLink"];
    let token = str_field(created, "token");
    let link_id = str_field(&created["link"], "id");
    assert_eq!(token.len(), 43, "256 random bits");
    assert_eq!(created["link"]["active"], true);
    assert_eq!(created["link"]["accessCount"], 0);
    assert_eq!(created["link"]["createdBy"]["id"], acme.admin_id.as_str());
    assert_eq!(
        server
            .sql_count(&format!(
                "workflow_share_links WHERE token_hash = {}",
                lit(&token)
            ))
            .await,
        0,
        "the token itself is not stored"
    );

    // Without any token, and with another company's.
    let resp = shared(&server, &token, None).await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let view = &resp["data"]["sharedWorkflow"];
    assert_eq!(view["name"], "Shared flow");
    assert_eq!(view["stepCount"], 2);
    assert_eq!(view["steps"][0]["instruction"], "Log in");
    assert_eq!(
        view["steps"][0]["pageContext"],
        json!({ "url": "https://app.test/login" })
    );
    assert!(view["steps"][1]["screenshot"].is_null());
    let image = server
        .get(&str_field(&view["steps"][0]["screenshot"], "url"))
        .await;
    assert_eq!(image.status(), 200);
    assert_eq!(image.bytes().await.unwrap().to_vec(), png(5, 4, 3));
    let text = resp.to_string();
    for id in [
        &acme.company_id,
        &acme.admin_id,
        &acme.member_id,
        &workflow,
        &steps[0],
        &steps[1],
        &run,
        &link_id,
    ] {
        assert!(
            !text.contains(id.as_str()),
            "the shared view leaks {id}: {resp:#}"
        );
    }
    let resp = shared(&server, &token, Some(&other.member_token)).await;
    assert_eq!(
        resp["data"]["sharedWorkflow"]["name"], "Shared flow",
        "{resp:#}"
    );
    // GET works too (a read-only query).
    let query = "query($t: String!) { sharedWorkflow(token: $t) { name } }";
    let get = server
        .client
        .get(server.url("/graphql"))
        .query(&[
            ("query", query),
            ("variables", &json!({ "t": token }).to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let body: Value = get.json().await.unwrap();
    assert_eq!(
        body["data"]["sharedWorkflow"]["name"], "Shared flow",
        "{body:#}"
    );

    // Three uses counted; only managers see the links.
    let links = "query($id: ID!) { workflow(id: $id) { shareLinks { id accessCount lastAccessedAt active } } }";
    let data = ok(&server, admin, links, json!({ "id": workflow })).await;
    let seen = &data["workflow"]["shareLinks"][0];
    assert_eq!(seen["id"], link_id.as_str());
    assert_eq!(seen["accessCount"], 3);
    assert!(!seen["lastAccessedAt"].is_null());
    let data = ok(
        &server,
        &acme.member_token,
        links,
        json!({ "id": workflow }),
    )
    .await;
    assert_eq!(data["workflow"]["shareLinks"], json!([]));

    // Unknown, malformed, revoked and expired tokens: one answer, and nothing counted.
    let unknown = "A".repeat(43);
    let unknown_resp = shared(&server, &unknown, None).await;
    assert_error_code(&unknown_resp, "NOT_FOUND", "an unknown token");
    assert!(unknown_resp["data"]["sharedWorkflow"].is_null());
    let malformed = shared(&server, "not a token", None).await;
    assert_eq!(
        masked(&malformed, "not a token"),
        masked(&unknown_resp, &unknown)
    );

    let (expiring_id, expiring) = create_link(&server, admin, &workflow).await;
    server
        .sql(&format!(
            "UPDATE workflow_share_links SET expires_at = {} WHERE id = {}",
            ts_at(0),
            lit(&expiring_id)
        ))
        .await;
    let expired = shared(&server, &expiring, None).await;
    assert_eq!(
        masked(&expired, &expiring),
        masked(&unknown_resp, &unknown),
        "expired: {expired:#}"
    );

    let revoke = format!("mutation($id: ID!) {{ revokeShareLink(id: $id) {{ {LINK_FIELDS} }} }}");
    let resp = server
        .gql(&revoke, json!({ "id": link_id }), Some(&acme.member_token))
        .await;
    assert_error_code(&resp, "FORBIDDEN", "a member revoking the admin's link");
    let resp = server
        .gql(&revoke, json!({ "id": link_id }), Some(&other.admin_token))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "another company revoking");
    let data = ok(&server, admin, &revoke, json!({ "id": link_id })).await;
    assert_eq!(data["revokeShareLink"]["active"], false);
    assert!(!data["revokeShareLink"]["revokedAt"].is_null());
    let revoked = shared(&server, &token, None).await;
    assert_eq!(
        masked(&revoked, &token),
        masked(&unknown_resp, &unknown),
        "revoked: {revoked:#}"
    );
    let data = ok(&server, admin, links, json!({ "id": workflow })).await;
    let counts: Vec<(String, i64)> = data["workflow"]["shareLinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (str_field(l, "id"), l["accessCount"].as_i64().unwrap()))
        .collect();
    assert!(
        counts.contains(&(link_id.clone(), 3)),
        "a refused token counts nothing: {counts:?}"
    );
    assert!(counts.contains(&(expiring_id, 0)), "{counts:?}");

    // Deleting the workflow takes its links with it.
    let (_, last) = create_link(&server, admin, &workflow).await;
    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteWorkflow(id: $id) }",
        json!({ "id": workflow }),
    )
    .await;
    let gone = shared(&server, &last, None).await;
    assert_eq!(masked(&gone, &last), masked(&unknown_resp, &unknown));
}

both_backends!(reads_of_share_links_are_limited_per_client_address);
async fn reads_of_share_links_are_limited_per_client_address(backend: Backend) {
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_SHARE_LINK_READS_PER_ADDRESS".to_owned(),
            "3".to_owned(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let workflow = str_field(
        &simple_workflow(&server, &acme.admin_token, "Limited", 1).await,
        "id",
    );
    let (_, token) = create_link(&server, &acme.admin_token, &workflow).await;
    for _ in 0..3 {
        let resp = shared(&server, &token, None).await;
        assert!(resp["errors"].is_null(), "{resp:#}");
    }
    // Guessing costs the same as reading.
    let resp = shared(&server, &"B".repeat(43), None).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("RATE_LIMITED"),
        "{resp:#}"
    );
    assert!(
        resp["errors"][0]["extensions"]["retryAfter"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let resp = shared(&server, &token, Some(&acme.member_token)).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("RATE_LIMITED"),
        "{resp:#}"
    );
}

/// Every audit entry of the company, newest first.
async fn audit_entries(server: &TestServer, admin: &str) -> Vec<Value> {
    let data = ok(
        server,
        admin,
        "{ auditLog(first: 100) { nodes { id action actorId targetType targetId summary } } }",
        json!({}),
    )
    .await;
    data["auditLog"]["nodes"].as_array().unwrap().clone()
}

both_backends!(restores_visibility_shares_links_and_publications_are_audited);
/// Each change of who sees a workflow, each restore and each publication writes one audit
/// entry naming its actor and the workflow, and never a link's token.
async fn restores_visibility_shares_links_and_publications_are_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let member = acme.member_token.as_str();
    let workflow = str_field(&simple_workflow(&server, member, "Audited", 1).await, "id");
    update_workflow(&server, member, &workflow, json!({ "name": "Audited 2" })).await;
    let mut tokens = Vec::new();
    let steps: Vec<(&str, &str)> = vec![
        (
            "WORKFLOW_VERSION_RESTORED",
            "mutation($w: ID!) { restoreWorkflowVersion(workflowId: $w, number: 1) { id } }",
        ),
        (
            "WORKFLOW_VISIBILITY_CHANGED",
            "mutation($w: ID!) { setWorkflowVisibility(workflowId: $w, visibility: RESTRICTED) { id } }",
        ),
        (
            "WORKFLOW_SHARED",
            "mutation($w: ID!, $u: ID!) { shareWorkflow(workflowId: $w, userId: $u, permission: RUN) { id } }",
        ),
        (
            "WORKFLOW_UNSHARED",
            "mutation($w: ID!, $u: ID!) { unshareWorkflow(workflowId: $w, userId: $u) { id } }",
        ),
        (
            "SHARE_LINK_CREATED",
            "mutation($w: ID!) { createShareLink(workflowId: $w) { token link { id } } }",
        ),
        (
            "TEMPLATE_PUBLISHED",
            "mutation($w: ID!) { publishTemplate(workflowId: $w, name: \"T\", visibility: PUBLIC) { id } }",
        ),
    ];
    for (action, query) in steps {
        let before = audit_entries(&server, admin).await;
        let resp = server
            .gql(
                query,
                json!({ "w": workflow, "u": acme.admin_id }),
                Some(member),
            )
            .await;
        assert!(resp["errors"].is_null(), "{action}: {resp:#}");
        if let Some(token) = resp["data"]["createShareLink"]["token"].as_str() {
            tokens.push(token.to_owned());
        }
        let after = audit_entries(&server, admin).await;
        let new: Vec<&Value> = after
            .iter()
            .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
            .collect();
        assert_eq!(new.len(), 1, "{action}: {new:#?}");
        assert_eq!(new[0]["action"], action);
        assert_eq!(new[0]["actorId"], acme.member_id.as_str(), "{action}");
        assert_eq!(new[0]["targetType"], "WORKFLOW");
        assert_eq!(new[0]["targetId"], workflow.as_str());
    }
    let links = ok(
        &server,
        member,
        "query($w: ID!) { workflow(id: $w) { shareLinks { id } } }",
        json!({ "w": workflow }),
    )
    .await;
    let link = str_field(&links["workflow"]["shareLinks"][0], "id");
    let before = audit_entries(&server, admin).await;
    ok(
        &server,
        member,
        "mutation($id: ID!) { revokeShareLink(id: $id) { id } }",
        json!({ "id": link }),
    )
    .await;
    let after = audit_entries(&server, admin).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[0]["action"], "SHARE_LINK_REVOKED");
    assert_eq!(after[0]["summary"]["linkId"], link.as_str());
    // Nothing changed, nothing logged: revoking again, unsharing someone not shared with.
    ok(
        &server,
        member,
        "mutation($id: ID!) { revokeShareLink(id: $id) { id } }",
        json!({ "id": link }),
    )
    .await;
    ok(
        &server,
        member,
        "mutation($w: ID!, $u: ID!) { unshareWorkflow(workflowId: $w, userId: $u) { id } }",
        json!({ "w": workflow, "u": acme.admin_id }),
    )
    .await;
    assert_eq!(audit_entries(&server, admin).await.len(), after.len());
    let text = Value::Array(after).to_string();
    for token in tokens {
        assert!(!text.contains(&token), "the audit log holds a link's token");
    }
}
