//! Roles inside a company: what only admins may do, and managing members (promoting,
//! demoting, removing) without ever locking the company out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::{Backend, PASSWORD, TestServer, assert_error_code, error_code, jwt_claims, str_field};
use serde_json::{Value, json};

/// The admin-only mutations, each with arguments that would succeed for an admin.
struct AdminCase {
    name: &'static str,
    query: &'static str,
    vars: Value,
}

fn admin_cases(workflow: &str, notification: &str, target_user: &str) -> Vec<AdminCase> {
    vec![
        AdminCase {
            name: "deleteWorkflow",
            query: "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            vars: json!({ "id": workflow }),
        },
        AdminCase {
            name: "deleteNotification",
            query: "mutation($id: ID!) { deleteNotification(id: $id) }",
            vars: json!({ "id": notification }),
        },
        AdminCase {
            name: "changeUserRole",
            query: "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id role } }",
            vars: json!({ "id": target_user }),
        },
        AdminCase {
            name: "removeUser",
            query: "mutation($id: ID!) { removeUser(userId: $id) }",
            vars: json!({ "id": target_user }),
        },
        AdminCase {
            name: "renameCompany",
            query: "mutation { renameCompany(name: \"Renamed Inc\") { id name } }",
            vars: json!({}),
        },
        AdminCase {
            name: "updateCompanySettings",
            query: "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id settings } }",
            vars: json!({ "s": { "timezone": "Europe/Paris", "alerts": { "email": true } } }),
        },
        AdminCase {
            name: "rotateInviteToken",
            query: "mutation { rotateInviteToken { id inviteToken } }",
            vars: json!({}),
        },
    ]
}

both_backends!(admin_only_mutations_are_forbidden_to_members);
async fn admin_only_mutations_are_forbidden_to_members(backend: Backend) {
    let server = start_for_snapshots(backend).await;
    let acme = team(&server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let (_, other) = server
        .join_company(&invite, "Other Member", "other@acme.test", PASSWORD)
        .await;
    let other_id = str_field(&other["user"], "id");
    let wf = simple_workflow(&server, &acme.member_token, "Precious", 2).await;
    let wf_id = str_field(&wf, "id");
    let note = insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: None,
            severity: "warning",
            title: "Heads up",
            read_by: None,
            created_at: ts_at(1),
        },
    )
    .await;

    // Every attempt by a regular member is FORBIDDEN and changes nothing, whether the
    // target is the member's colleague, the member themselves, or does not exist.
    let mut cases = admin_cases(&wf_id, &note, &other_id);
    cases.extend([
        AdminCase {
            name: "changeUserRole (promoting oneself)",
            query: "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id role } }",
            vars: json!({ "id": acme.member_id }),
        },
        AdminCase {
            name: "changeUserRole (demoting the admin)",
            query: "mutation($id: ID!) { changeUserRole(userId: $id, role: REGULAR) { id role } }",
            vars: json!({ "id": acme.admin_id }),
        },
        AdminCase {
            name: "removeUser (the admin)",
            query: "mutation($id: ID!) { removeUser(userId: $id) }",
            vars: json!({ "id": acme.admin_id }),
        },
        AdminCase {
            name: "deleteWorkflow (unknown id)",
            query: "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            vars: json!({ "id": new_id() }),
        },
        AdminCase {
            name: "updateCompanySettings (invalid settings)",
            query: "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id } }",
            vars: json!({ "s": [1, 2, 3] }),
        },
    ]);
    let before = company_snapshot(&server, &acme.company_id, &acme.admin_token).await;
    for case in &cases {
        let resp = server
            .gql(case.query, case.vars.clone(), Some(&acme.member_token))
            .await;
        assert_error_code(
            &resp,
            "FORBIDDEN",
            &format!("{} by a regular member", case.name),
        );
        assert!(resp["data"].is_null(), "{}: {resp:#}", case.name);
        let after = company_snapshot(&server, &acme.company_id, &acme.admin_token).await;
        assert_unchanged(&before, &after, &format!("forbidden {}", case.name));
    }
    // The member's own token still works and still says regular.
    assert_eq!(server.me(&acme.member_token).await["role"], "REGULAR");

    // The same mutations work for the admin.
    for case in admin_cases(&wf_id, &note, &other_id) {
        let resp = server
            .gql(case.query, case.vars.clone(), Some(&acme.admin_token))
            .await;
        assert!(
            resp["errors"].is_null(),
            "{} by the admin failed: {resp:#}",
            case.name
        );
        let data = &resp["data"];
        match case.name {
            "deleteWorkflow" => {
                assert_eq!(data["deleteWorkflow"], wf_id.as_str());
                let resp = try_get_workflow(&server, &acme.admin_token, &wf_id).await;
                assert_error_code(&resp, "NOT_FOUND", "workflow after deleteWorkflow");
            }
            "deleteNotification" => {
                assert_eq!(data["deleteNotification"], note.as_str());
                let list = ok(
                    &server,
                    &acme.admin_token,
                    "{ notifications { totalCount } unreadNotificationCount }",
                    json!({}),
                )
                .await;
                assert_eq!(list["notifications"]["totalCount"], 0);
                assert_eq!(list["unreadNotificationCount"], 0);
            }
            "changeUserRole" => {
                assert_eq!(
                    data["changeUserRole"],
                    json!({ "id": other_id, "role": "ADMIN" })
                );
            }
            "removeUser" => {
                assert_eq!(data["removeUser"], other_id.as_str());
                let users = ok(&server, &acme.admin_token, "{ users { id } }", json!({})).await;
                assert!(!users.to_string().contains(&other_id), "{users:#}");
            }
            "renameCompany" => {
                assert_eq!(data["renameCompany"]["name"], "Renamed Inc");
                assert_eq!(
                    server.company(&acme.member_token).await["name"],
                    "Renamed Inc"
                );
            }
            "updateCompanySettings" => {
                let expected = json!({ "timezone": "Europe/Paris", "alerts": { "email": true } });
                assert_eq!(data["updateCompanySettings"]["settings"], expected);
                let seen = ok(
                    &server,
                    &acme.member_token,
                    "{ company { settings } }",
                    json!({}),
                )
                .await;
                assert_eq!(
                    seen["company"]["settings"], expected,
                    "members can read the settings"
                );
            }
            "rotateInviteToken" => {
                assert_ne!(str_field(&data["rotateInviteToken"], "inviteToken"), invite);
            }
            other => unreachable!("{other}"),
        }
    }
}

both_backends!(changing_roles_keeps_an_admin);
async fn changing_roles_keeps_an_admin(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let change = "mutation($id: ID!, $role: Role!) { changeUserRole(userId: $id, role: $role) { id email role company { id } } }";
    let role_of = |users: &Value, id: &str| {
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .map(|u| u["role"].clone())
            .unwrap_or(Value::Null)
    };

    // The only admin cannot demote themselves.
    let resp = server
        .gql(
            change,
            json!({ "id": acme.admin_id, "role": "REGULAR" }),
            Some(&acme.admin_token),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "demoting the last admin");
    let users = ok(
        &server,
        &acme.admin_token,
        "{ users { id role } }",
        json!({}),
    )
    .await;
    assert_eq!(role_of(&users, &acme.admin_id), "ADMIN");
    server.rotate_invite_token(&acme.admin_token).await; // still an admin in practice

    // Promote the member; after signing in again they act as an admin.
    let promoted = ok(
        &server,
        &acme.admin_token,
        change,
        json!({ "id": acme.member_id, "role": "ADMIN" }),
    )
    .await;
    assert_eq!(promoted["changeUserRole"]["role"], "ADMIN");
    assert_eq!(promoted["changeUserRole"]["id"], acme.member_id.as_str());
    assert_eq!(
        promoted["changeUserRole"]["company"]["id"],
        acme.company_id.as_str()
    );
    // Their old token claims the old role, so it stops working at once.
    assert_error_code(
        &server
            .gql("{ users { id role } }", json!({}), Some(&acme.member_token))
            .await,
        "UNAUTHENTICATED",
        "a token minted before the promotion",
    );
    let (new_token, login) = server.login(&acme.member_email, PASSWORD).await;
    let users = ok(&server, &new_token, "{ users { id role } }", json!({})).await;
    assert_eq!(role_of(&users, &acme.member_id), "ADMIN");
    assert_eq!(login["user"]["role"], "ADMIN");
    assert_eq!(jwt_claims(&new_token)["role"], "admin");
    server.rotate_invite_token(&new_token).await;

    // Promoting an admin again is harmless.
    let again = ok(
        &server,
        &acme.admin_token,
        change,
        json!({ "id": acme.member_id, "role": "ADMIN" }),
    )
    .await;
    assert_eq!(again["changeUserRole"]["role"], "ADMIN");

    // With two admins, one may step down; then the other is the last one.
    let demoted = ok(
        &server,
        &new_token,
        change,
        json!({ "id": acme.admin_id, "role": "REGULAR" }),
    )
    .await;
    assert_eq!(demoted["changeUserRole"]["role"], "REGULAR");
    let resp = server
        .gql(
            change,
            json!({ "id": acme.member_id, "role": "REGULAR" }),
            Some(&new_token),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "demoting the remaining last admin");
    let users = ok(&server, &new_token, "{ users { id role } }", json!({})).await;
    assert_eq!(role_of(&users, &acme.member_id), "ADMIN");
    assert_eq!(role_of(&users, &acme.admin_id), "REGULAR");
    let (_, login) = server.login(&acme.admin_email, PASSWORD).await;
    assert_eq!(login["user"]["role"], "REGULAR");

    let resp = server
        .gql(
            change,
            json!({ "id": new_id(), "role": "ADMIN" }),
            Some(&new_token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "changeUserRole of an unknown user");
}

both_backends!(removed_users_lose_access_but_their_work_stays);
async fn removed_users_lose_access_but_their_work_stays(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let remove = "mutation($id: ID!) { removeUser(userId: $id) }";

    // The member leaves traces everywhere.
    let wf = simple_workflow(&server, &acme.member_token, "Member's flow", 2).await;
    let wf_id = str_field(&wf, "id");
    let admin_wf = create_workflow(
        &server,
        &acme.admin_token,
        json!({ "name": "Admin's flow", "steps": [{ "actionType": "type", "fieldLabel": "Email", "aiModel": "m" }] }),
    )
    .await;
    let admin_step = str_field(&admin_wf["steps"][0], "id");
    let edited = update_step(
        &server,
        &acme.member_token,
        &admin_step,
        json!({ "fieldLabel": "Work email" }),
    )
    .await;
    assert_eq!(edited["editedBy"]["id"], acme.member_id.as_str());
    let run = insert_run(
        &server,
        &RunRow {
            company_id: &acme.company_id,
            workflow_id: &wf_id,
            started_by: Some(&acme.member_id),
            status: "succeeded",
            current_step_id: None,
            error: None,
            created_at: ts_at(5),
        },
    )
    .await;
    let note = insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: Some(&wf_id),
            severity: "info",
            title: "Read by member",
            read_by: Some(&acme.member_id),
            created_at: ts_at(6),
        },
    )
    .await;

    // The only admin cannot remove themselves.
    let resp = server
        .gql(
            remove,
            json!({ "id": acme.admin_id }),
            Some(&acme.admin_token),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "removing the last admin");
    assert_eq!(server.me(&acme.admin_token).await["role"], "ADMIN");

    let data = ok(
        &server,
        &acme.admin_token,
        remove,
        json!({ "id": acme.member_id }),
    )
    .await;
    assert_eq!(data["removeUser"], acme.member_id.as_str());

    // Their token and their password stop working, for every kind of request.
    let mut still_working = Vec::new();
    for query in [
        "{ me { id } }",
        "{ company { id name } }",
        "{ users { id } }",
        "{ workflows { totalCount } }",
        "{ notifications { totalCount } }",
        "{ unreadNotificationCount }",
        "mutation { createWorkflow(input: { name: \"ghost\" }) { id } }",
        "mutation { markAllNotificationsRead }",
    ] {
        let resp = server.gql(query, json!({}), Some(&acme.member_token)).await;
        if error_code(&resp).as_deref() != Some("UNAUTHENTICATED") {
            still_working.push(format!("{query} => {resp}"));
        }
    }
    assert!(
        still_working.is_empty(),
        "a removed user's token must be UNAUTHENTICATED everywhere, but:\n  {}",
        still_working.join("\n  ")
    );
    assert_error_code(
        &server.try_login(&acme.member_email, PASSWORD).await,
        "UNAUTHENTICATED",
        "login as a removed user",
    );

    // Their work stays, without them.
    let users = ok(&server, &acme.admin_token, "{ users { id } }", json!({})).await;
    assert_eq!(users["users"], json!([{ "id": acme.admin_id }]));
    let kept = get_workflow(&server, &acme.admin_token, &wf_id).await;
    assert!(
        kept["createdBy"].is_null(),
        "createdBy of a removed user must be null: {kept:#}"
    );
    assert_eq!(kept["name"], "Member's flow");
    assert_eq!(
        step_ids(&kept),
        step_ids(&wf),
        "their workflow keeps its steps"
    );
    let step =
        &get_workflow(&server, &acme.admin_token, &str_field(&admin_wf, "id")).await["steps"][0];
    assert!(step["editedBy"].is_null(), "{step:#}");
    assert_eq!(step["fieldLabel"], "Work email");
    assert_eq!(step["labelEdited"], true);
    let data = ok(
        &server,
        &acme.admin_token,
        "query($run: ID!) { run(id: $run) { id startedBy { id } } notifications { edges { node { id read readBy { id } } } } \
           workflows(filter: { search: \"member\" }) { totalCount edges { node { id createdBy { id } } } } }",
        json!({ "run": run }),
    )
    .await;
    assert!(data["run"]["startedBy"].is_null(), "{data:#}");
    assert_eq!(
        data["notifications"]["edges"][0]["node"]["id"],
        note.as_str()
    );
    assert_eq!(data["notifications"]["edges"][0]["node"]["read"], true);
    assert!(
        data["notifications"]["edges"][0]["node"]["readBy"].is_null(),
        "{data:#}"
    );
    assert_eq!(data["workflows"]["totalCount"], 1);

    // Gone is gone.
    let resp = server
        .gql(
            remove,
            json!({ "id": acme.member_id }),
            Some(&acme.admin_token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "removing a removed user");
    let resp = server
        .gql(remove, json!({ "id": new_id() }), Some(&acme.admin_token))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "removing an unknown user");

    // With a second admin, an admin can be removed, and then the other is the last.
    let invite = server.invite_token(&acme.admin_token).await;
    let (second_token, second) = server
        .join_company(&invite, "Second", "second@acme.test", PASSWORD)
        .await;
    let second_id = str_field(&second["user"], "id");
    ok(
        &server,
        &acme.admin_token,
        "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id } }",
        json!({ "id": second_id }),
    )
    .await;
    let (second_token_admin, _) = server.login("second@acme.test", PASSWORD).await;
    let data = ok(
        &server,
        &second_token_admin,
        remove,
        json!({ "id": acme.admin_id }),
    )
    .await;
    assert_eq!(data["removeUser"], acme.admin_id.as_str());
    assert_error_code(
        &server
            .gql("{ me { id } }", json!({}), Some(&acme.admin_token))
            .await,
        "UNAUTHENTICATED",
        "removed admin's token",
    );
    let resp = server
        .gql(
            remove,
            json!({ "id": second_id }),
            Some(&second_token_admin),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "removing the last remaining admin");
    assert_eq!(
        server.me(&second_token_admin).await["id"],
        second_id.as_str(),
        "the last admin keeps working"
    );
    assert_error_code(
        &server
            .gql("{ me { id } }", json!({}), Some(&second_token))
            .await,
        "UNAUTHENTICATED",
        "a token minted before the member's promotion",
    );
    let kept = get_workflow(&server, &second_token_admin, &str_field(&admin_wf, "id")).await;
    assert!(kept["createdBy"].is_null(), "{kept:#}");
}

both_backends!(company_name_and_settings);
async fn company_name_and_settings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let rename = "mutation($name: String!) { renameCompany(name: $name) { id name updatedAt } }";
    let settings = "mutation($s: JSON!) { updateCompanySettings(settings: $s) { id settings } }";

    let initial = ok(
        &server,
        &acme.member_token,
        "{ company { settings } }",
        json!({}),
    )
    .await;
    assert_eq!(
        initial["company"]["settings"],
        json!({}),
        "a new company has empty settings"
    );

    let data = ok(
        &server,
        &acme.admin_token,
        rename,
        json!({ "name": "  Acme Europe " }),
    )
    .await;
    assert_eq!(data["renameCompany"]["name"], "Acme Europe");
    assert_eq!(data["renameCompany"]["id"], acme.company_id.as_str());
    assert_eq!(
        server.me(&acme.member_token).await["company"]["name"],
        "Acme Europe"
    );
    for bad in [String::new(), "   ".to_owned(), "x".repeat(201)] {
        let resp = server
            .gql(rename, json!({ "name": bad }), Some(&acme.admin_token))
            .await;
        assert_error_code(&resp, "BAD_USER_INPUT", &format!("renameCompany({bad:?})"));
    }
    assert_eq!(
        server.company(&acme.member_token).await["name"],
        "Acme Europe"
    );

    let value = json!({ "theme": "dark", "limits": { "runs": 10, "ratio": 0.5 }, "flags": [true, false], "note": "ünïcødé" });
    let data = ok(&server, &acme.admin_token, settings, json!({ "s": value })).await;
    assert_eq!(data["updateCompanySettings"]["settings"], value);
    let seen = ok(
        &server,
        &acme.member_token,
        "{ company { settings } }",
        json!({}),
    )
    .await;
    assert_eq!(seen["company"]["settings"], value);
    let large = json!({ "blob": "x".repeat(17 * 1024) });
    for (what, bad) in [
        ("an array", json!([1, 2])),
        ("a string", json!("dark")),
        ("a number", json!(42)),
        ("over 16 KiB", large),
    ] {
        let resp = server
            .gql(settings, json!({ "s": bad }), Some(&acme.admin_token))
            .await;
        assert_error_code(
            &resp,
            "BAD_USER_INPUT",
            &format!("updateCompanySettings with {what}"),
        );
        let seen = ok(
            &server,
            &acme.member_token,
            "{ company { settings } }",
            json!({}),
        )
        .await;
        assert_eq!(
            seen["company"]["settings"], value,
            "rejected settings ({what}) changed the stored ones"
        );
    }
    // Just under the limit is fine.
    let fits = json!({ "blob": "x".repeat(15 * 1024) });
    let data = ok(&server, &acme.admin_token, settings, json!({ "s": fits })).await;
    assert_eq!(data["updateCompanySettings"]["settings"], fits);
}

both_backends!(users_lists_members_in_join_order);
async fn users_lists_members_in_join_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let (_, third) = server
        .join_company(&invite, "Third", "third@acme.test", PASSWORD)
        .await;
    server
        .signup("Elsewhere", "Else", "else@elsewhere.test", PASSWORD)
        .await;
    let query = format!("{{ users {{ {USER_FIELDS} company {{ id }} }} }}");
    for token in [&acme.admin_token, &acme.member_token] {
        let data = ok(&server, token, &query, json!({})).await;
        let users = data["users"].as_array().unwrap();
        let ids: Vec<String> = users.iter().map(|u| str_field(u, "id")).collect();
        assert_eq!(
            ids,
            vec![
                acme.admin_id.clone(),
                acme.member_id.clone(),
                str_field(&third["user"], "id")
            ],
            "users in join order"
        );
        let roles: Vec<&str> = users.iter().map(|u| u["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["ADMIN", "REGULAR", "REGULAR"]);
        assert_eq!(users[1]["email"], acme.member_email.as_str());
        assert_eq!(users[2]["name"], "Third");
        assert!(
            users
                .iter()
                .all(|u| u["company"]["id"] == acme.company_id.as_str())
        );
    }
    let resp = server.gql(&query, json!({}), None).await;
    assert_eq!(error_code(&resp).as_deref(), Some("UNAUTHENTICATED"));
}
