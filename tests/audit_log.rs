//! The audit log (issue 15, item 3): every audited action writes exactly one entry, in its
//! own transaction, with the right actor, client address and user agent and no secret;
//! `auditLog` is for admins, filtered and keyset-paginated; nothing edits or deletes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::{Backend, PASSWORD, TestServer, assert_error_code, jwt_claims, str_field};
use serde_json::{Value, json};

const ENTRY: &str = "id createdAt action actorType actorId actorLabel targetType targetId \
     clientAddress userAgent summary";

/// Every entry, newest first.
async fn entries(server: &TestServer, admin: &str) -> Vec<Value> {
    let data = ok(
        server,
        admin,
        &format!("{{ auditLog(first: 100) {{ totalCount nodes {{ {ENTRY} }} }} }}"),
        json!({}),
    )
    .await;
    data["auditLog"]["nodes"].as_array().unwrap().clone()
}

/// Runs `step`, then asserts it added exactly one entry, of `action`; returns it.
async fn one_entry<F>(server: &TestServer, admin: &str, action: &str, step: F) -> Value
where
    F: AsyncFnOnce(),
{
    let before = entries(server, admin).await;
    step().await;
    let after = entries(server, admin).await;
    let new: Vec<&Value> = after
        .iter()
        .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "{action}: expected one new entry, got {new:#?}"
    );
    assert_eq!(new[0]["action"], action, "{:#}", new[0]);
    new[0].clone()
}

/// POSTs as a client with a user agent.
async fn gql_as_client(
    server: &TestServer,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> Value {
    let mut request = server
        .client
        .post(server.url("/graphql"))
        .header("user-agent", "AuditTest/2.0")
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

both_backends!(each_audited_action_writes_one_entry_with_its_actor_and_no_secret);
async fn each_audited_action_writes_one_entry_with_its_actor_and_no_secret(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.clone();
    let admin = admin.as_str();
    let mut secrets: Vec<String> = vec![
        PASSWORD.to_owned(),
        acme.admin_token.clone(),
        acme.member_token.clone(),
    ];

    // team(): the sign-up and the join.
    let log = entries(&server, admin).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["MEMBER_JOINED", "SIGNED_UP"]);
    assert_eq!(log[1]["actorType"], "USER");
    assert_eq!(log[1]["actorId"], acme.admin_id.as_str());
    assert_eq!(log[1]["actorLabel"], acme.admin_email.as_str());
    assert_eq!(log[1]["targetType"], "COMPANY");
    assert_eq!(log[1]["summary"]["companyName"], "Acme");
    assert_eq!(log[0]["actorId"], acme.member_id.as_str());

    // Sign-ins: success by the member; failure anonymous, on the member; unknown email: none.
    let entry = one_entry(&server, admin, "SIGN_IN_SUCCEEDED", async || {
        let resp = gql_as_client(
            &server,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token refreshToken } }",
            json!({ "e": acme.member_email, "p": PASSWORD }),
            None,
        )
        .await;
        secrets.push(str_field(&resp["data"]["login"], "token"));
        secrets.push(str_field(&resp["data"]["login"], "refreshToken"));
    })
    .await;
    assert_eq!(entry["actorType"], "USER");
    assert_eq!(entry["actorId"], acme.member_id.as_str());
    assert_eq!(entry["clientAddress"], "127.0.0.1");
    assert_eq!(entry["userAgent"], "AuditTest/2.0");
    let entry = one_entry(&server, admin, "SIGN_IN_FAILED", async || {
        assert_error_code(
            &server.try_login(&acme.member_email, "wrong guess!").await,
            "UNAUTHENTICATED",
            "wrong password",
        );
    })
    .await;
    assert_eq!(entry["actorType"], "ANONYMOUS");
    assert!(entry["actorId"].is_null());
    assert_eq!(entry["targetId"], acme.member_id.as_str());
    let before = entries(&server, admin).await.len();
    server.try_login("nobody@acme.test", "wrong guess!").await;
    assert_eq!(
        entries(&server, admin).await.len(),
        before,
        "an unknown email has no company"
    );

    // Members and the company.
    let entry = one_entry(&server, admin, "MEMBER_ROLE_CHANGED", async || {
        ok(
            &server,
            admin,
            "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id } }",
            json!({ "id": acme.member_id }),
        )
        .await;
    })
    .await;
    assert_eq!(entry["actorId"], acme.admin_id.as_str());
    assert_eq!(
        entry["summary"],
        json!({ "email": acme.member_email, "before": "regular", "after": "admin" })
    );
    // Not a change: no entry.
    let before = entries(&server, admin).await.len();
    ok(
        &server,
        admin,
        "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id } }",
        json!({ "id": acme.member_id }),
    )
    .await;
    assert_eq!(entries(&server, admin).await.len(), before);
    let entry = one_entry(&server, admin, "INVITE_TOKEN_ROTATED", async || {
        secrets.push(server.rotate_invite_token(admin).await);
    })
    .await;
    assert_eq!(entry["targetType"], "COMPANY");
    secrets.push(server.invite_token(admin).await);
    let entry = one_entry(&server, admin, "COMPANY_RENAMED", async || {
        ok(
            &server,
            admin,
            "mutation { renameCompany(name: \"Acme Inc\") { id } }",
            json!({}),
        )
        .await;
    })
    .await;
    assert_eq!(
        entry["summary"],
        json!({ "before": "Acme", "after": "Acme Inc" })
    );
    let entry = one_entry(&server, admin, "COMPANY_SETTINGS_UPDATED", async || {
        ok(
            &server,
            admin,
            "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id } }",
            json!({ "s": { "webhookSecret": "s3cr3t-value", "theme": "dark" } }),
        )
        .await;
    })
    .await;
    assert_eq!(
        entry["summary"],
        json!({ "changedKeys": ["theme", "webhookSecret"] })
    );
    secrets.push("s3cr3t-value".to_owned());

    // API keys, by the admin.
    let mut key_id = String::new();
    let entry = one_entry(&server, admin, "API_KEY_CREATED", async || {
        let data = ok(
            &server,
            admin,
            "mutation { createApiKey(name: \"runner\") { secret apiKey { id } } }",
            json!({}),
        )
        .await;
        key_id = str_field(&data["createApiKey"]["apiKey"], "id");
        secrets.push(str_field(&data["createApiKey"], "secret"));
    })
    .await;
    assert_eq!(entry["targetId"], key_id.as_str());
    assert_eq!(entry["summary"]["name"], "runner");
    assert_eq!(entry["summary"]["role"], "executor");
    let entry = one_entry(&server, admin, "API_KEY_REVOKED", async || {
        ok(
            &server,
            admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({ "id": key_id }),
        )
        .await;
    })
    .await;
    assert_eq!(entry["targetType"], "API_KEY");

    // A workflow deleted.
    let workflow = str_field(&simple_workflow(&server, admin, "Payroll", 1).await, "id");
    let entry = one_entry(&server, admin, "WORKFLOW_DELETED", async || {
        ok(
            &server,
            admin,
            "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            json!({ "id": workflow }),
        )
        .await;
    })
    .await;
    assert_eq!(entry["targetId"], workflow.as_str());
    assert_eq!(entry["summary"], json!({ "name": "Payroll" }));
    assert_eq!(entry["actorId"], acme.admin_id.as_str());
    assert_eq!(entry["clientAddress"], "127.0.0.1");

    // A member's own account: profile, password, sessions.
    let (token, _) = server.login(&acme.member_email, PASSWORD).await;
    let entry = one_entry(&server, admin, "PROFILE_UPDATED", async || {
        ok(
            &server,
            &token,
            "mutation { updateProfile(name: \"Marge\") { id } }",
            json!({}),
        )
        .await;
    })
    .await;
    assert_eq!(entry["actorId"], acme.member_id.as_str());
    assert_eq!(entry["summary"]["after"]["name"], "Marge");
    let entry = one_entry(&server, admin, "PASSWORD_CHANGED", async || {
        ok(&server, &token, "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }", json!({ "c": PASSWORD, "n": "another long passphrase" })).await;
    })
    .await;
    assert!(entry["summary"]["sessionsEnded"].as_i64().unwrap() >= 1);
    secrets.push("another long passphrase".to_owned());
    let entry = one_entry(&server, admin, "LOGGED_OUT", async || {
        ok(&server, &token, "mutation { logout }", json!({})).await;
    })
    .await;
    assert_eq!(
        entry["targetId"],
        str_field(&jwt_claims(&token), "sid").as_str()
    );
    let (token, _) = server
        .login(&acme.member_email, "another long passphrase")
        .await;
    one_entry(&server, admin, "LOGGED_OUT_EVERYWHERE", async || {
        ok(&server, &token, "mutation { logoutEverywhere }", json!({})).await;
    })
    .await;
    let login =
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { refreshToken } }";
    let first = server
        .gql(
            login,
            json!({ "e": acme.member_email, "p": "another long passphrase" }),
            None,
        )
        .await;
    let first = str_field(&first["data"]["login"], "refreshToken");
    let refresh = "mutation($t: String!) { refreshSession(refreshToken: $t) { refreshToken } }";
    let second = server.gql(refresh, json!({ "t": first }), None).await;
    secrets.push(str_field(&second["data"]["refreshSession"], "refreshToken"));
    let entry = one_entry(&server, admin, "REFRESH_TOKEN_REUSED", async || {
        assert_error_code(
            &server.gql(refresh, json!({ "t": first }), None).await,
            "UNAUTHENTICATED",
            "reuse",
        );
    })
    .await;
    assert_eq!(entry["actorType"], "ANONYMOUS");
    assert_eq!(entry["targetType"], "SESSION");

    // The member removed (the member is an admin now; removed by the first admin).
    let entry = one_entry(&server, admin, "MEMBER_REMOVED", async || {
        ok(
            &server,
            admin,
            "mutation($id: ID!) { removeUser(userId: $id) }",
            json!({ "id": acme.member_id }),
        )
        .await;
    })
    .await;
    assert_eq!(
        entry["summary"],
        json!({ "email": acme.member_email, "role": "admin" })
    );
    // The member's entries keep their label after the account is gone.
    let log = entries(&server, admin).await;
    assert!(log.iter().any(|e| e["actorId"] == acme.member_id.as_str()
        && e["actorLabel"] == acme.member_email.as_str()));

    // Nothing secret anywhere in the log, nor in the stored rows.
    let text = Value::Array(log).to_string();
    let stored = server
        .sql_strings("SELECT summary AS v FROM audit_log")
        .await
        .join("\n");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()) && !stored.contains(secret.as_str()),
            "the audit log holds a secret: {secret}"
        );
    }
    // (An API key's public prefix, `swk_` and eight characters, is in its entries on purpose.)
    for needle in ["$argon2", "password_hash", "swr_"] {
        assert!(
            !text.contains(needle),
            "the audit log holds {needle}: {text}"
        );
    }
}

both_backends!(the_log_is_for_admins_filtered_paged_and_append_only);
async fn the_log_is_for_admins_filtered_paged_and_append_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    for name in ["One", "Two", "Three"] {
        ok(
            &server,
            admin,
            "mutation($n: String!) { renameCompany(name: $n) { id } }",
            json!({ "n": name }),
        )
        .await;
    }
    server.try_login(&acme.member_email, "wrong guess!").await;

    let resp = server
        .gql(
            "{ auditLog { totalCount } }",
            json!({}),
            Some(&acme.member_token),
        )
        .await;
    assert_error_code(&resp, "FORBIDDEN", "a member reading the audit log");
    assert_error_code(
        &server
            .gql("{ auditLog { totalCount } }", json!({}), None)
            .await,
        "UNAUTHENTICATED",
        "anonymous",
    );

    let list = format!(
        "query($f: AuditLogFilter, $first: Int, $after: String) {{ auditLog(filter: $f, first: $first, after: $after) {{ totalCount pageInfo {{ hasNextPage endCursor }} nodes {{ {ENTRY} }} }} }}"
    );
    let all = ok(&server, admin, &list, json!({})).await;
    assert_eq!(all["auditLog"]["totalCount"], 6, "{all:#}");
    // Pages of two, newest first, nothing twice or missed.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ok(&server, admin, &list, json!({ "first": 2, "after": after })).await;
        for node in page["auditLog"]["nodes"].as_array().unwrap() {
            seen.push(node.clone());
        }
        if page["auditLog"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["auditLog"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(Value::Array(seen.clone()), all["auditLog"]["nodes"]);
    let times: Vec<String> = seen.iter().map(|e| str_field(e, "createdAt")).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    let count = |filter: Value| {
        let (server, list) = (&server, &list);
        async move {
            ok(server, admin, list, json!({ "f": filter })).await["auditLog"]["totalCount"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(count(json!({ "action": "COMPANY_RENAMED" })).await, 3);
    assert_eq!(
        count(json!({ "actorId": acme.admin_id })).await,
        4,
        "signup and three renames"
    );
    assert_eq!(
        count(json!({ "targetId": acme.member_id })).await,
        2,
        "joined, failed sign-in"
    );
    assert_eq!(
        count(json!({ "actorId": acme.member_id, "action": "SIGN_IN_FAILED" })).await,
        0,
        "anonymous"
    );
    let newest = str_field(&seen[0], "createdAt");
    assert_eq!(count(json!({ "from": newest })).await, 1);
    assert_eq!(count(json!({ "to": newest })).await, 5);
    assert_eq!(
        count(json!({ "from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z" })).await,
        0
    );
    let resp = server
        .gql(&list, json!({ "first": 101 }), Some(admin))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a page too large");
    let resp = server
        .gql(&list, json!({ "after": "garbage" }), Some(admin))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a forged cursor");

    // No field of the API edits or deletes entries.
    let schema = ok(
        &server,
        admin,
        "{ __schema { mutationType { fields { name } } } }",
        json!({}),
    )
    .await;
    let mutations = schema["__schema"]["mutationType"]["fields"]
        .to_string()
        .to_lowercase();
    assert!(!mutations.contains("audit"), "{mutations}");
}
