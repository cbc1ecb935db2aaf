//! A member's own settings (issue 15, item 2): time zone, locale and notification
//! preferences, typed and validated, and honoured by `notificationCreated`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::*;
use common::realtime::{Subscriber, field, notification_created_query, runs_updated_query};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, PASSWORD, TestServer, assert_error_code};
use serde_json::json;

const SETTINGS: &str = "timeZone locale notificationSeverities mutedNotificationKinds updatedAt";

fn update_query() -> String {
    format!(
        "mutation($input: UserSettingsInput!) {{ updateUserSettings(input: $input) {{ {SETTINGS} }} }}"
    )
}

both_backends!(settings_are_typed_validated_and_per_member);
async fn settings_are_typed_validated_and_per_member(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let read = format!("{{ userSettings {{ {SETTINGS} }} }}");
    let defaults = ok(&server, &acme.member_token, &read, json!({})).await;
    assert_eq!(
        defaults["userSettings"],
        json!({
            "timeZone": "UTC", "locale": "en",
            "notificationSeverities": ["INFO", "WARNING", "ERROR"],
            "mutedNotificationKinds": [], "updatedAt": null
        })
    );

    let changed = ok(
        &server,
        &acme.member_token,
        &update_query(),
        json!({ "input": { "timeZone": "Europe/Paris", "locale": "fr_ca",
                           "notificationSeverities": ["ERROR", "ERROR", "WARNING"],
                           "mutedNotificationKinds": ["WORKFLOW_RECOVERED"] } }),
    )
    .await;
    let settings = &changed["updateUserSettings"];
    assert_eq!(settings["timeZone"], "Europe/Paris");
    assert_eq!(settings["locale"], "fr-CA");
    assert_eq!(
        settings["notificationSeverities"],
        json!(["WARNING", "ERROR"])
    );
    assert_eq!(
        settings["mutedNotificationKinds"],
        json!(["WORKFLOW_RECOVERED"])
    );
    assert!(settings["updatedAt"].is_string());
    // A partial change keeps the rest; the admin's settings are their own.
    let changed = ok(
        &server,
        &acme.member_token,
        &update_query(),
        json!({ "input": { "locale": "en-GB" } }),
    )
    .await;
    assert_eq!(changed["updateUserSettings"]["timeZone"], "Europe/Paris");
    assert_eq!(
        changed["updateUserSettings"]["notificationSeverities"],
        json!(["WARNING", "ERROR"])
    );
    let admin = ok(&server, &acme.admin_token, &read, json!({})).await;
    assert_eq!(admin["userSettings"]["timeZone"], "UTC");
    server.login(&acme.member_email, PASSWORD).await;
    let again = ok(&server, &acme.member_token, &read, json!({})).await;
    assert_eq!(again["userSettings"]["locale"], "en-GB");

    // Bad input names its field and changes nothing.
    for (input, field) in [
        (json!({ "timeZone": "Mars/Olympus_Mons" }), "timeZone"),
        (json!({ "timeZone": "" }), "timeZone"),
        (json!({ "locale": "not a locale" }), "locale"),
        (
            json!({ "notificationSeverities": vec!["ERROR"; 33] }),
            "notificationSeverities",
        ),
        (
            json!({ "mutedNotificationKinds": vec!["WORKFLOW_BROKEN"; 33] }),
            "mutedNotificationKinds",
        ),
    ] {
        let resp = server
            .gql(
                &update_query(),
                json!({ "input": input }),
                Some(&acme.member_token),
            )
            .await;
        assert_error_code(&resp, "BAD_USER_INPUT", field);
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{resp:#}");
    }
    let resp = server
        .gql(
            &update_query(),
            json!({ "input": { "notificationSeverities": ["LOUD"] } }),
            Some(&acme.member_token),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "an unknown severity");
    let unchanged = ok(&server, &acme.member_token, &read, json!({})).await;
    assert_eq!(unchanged, again);
    assert_error_code(
        &server.gql(&read, json!({}), None).await,
        "UNAUTHENTICATED",
        "anonymous",
    );
}

both_backends!(notification_preferences_filter_pushes);
async fn notification_preferences_filter_pushes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let invite = server.invite_token(admin).await;
    let (muter, _) = server
        .join_company(&invite, "Muter", "muter@acme.test", PASSWORD)
        .await;
    // The member wants errors only; the muter everything but broken workflows; the admin
    // keeps the defaults.
    ok(
        &server,
        &acme.member_token,
        &update_query(),
        json!({ "input": { "notificationSeverities": ["ERROR"] } }),
    )
    .await;
    ok(
        &server,
        &muter,
        &update_query(),
        json!({ "input": { "mutedNotificationKinds": ["WORKFLOW_BROKEN"] } }),
    )
    .await;
    let (workflow, steps) = active_workflow(&server, admin, "Flaky", 1).await;

    let mut subscribers = Vec::new();
    for token in [admin, acme.member_token.as_str(), muter.as_str()] {
        // Notifications first, then runs on the same connection: once `runs` is live, the
        // notification subscription registered before it is too.
        let mut subscriber = Subscriber::start(
            &server,
            Some(token),
            &[
                ("notes", &notification_created_query(), json!({})),
                (
                    "runs",
                    &runs_updated_query(),
                    json!({ "workflowId": workflow }),
                ),
            ],
        );
        subscriber
            .until_live(&["runs"], async || {
                start_run(&server, admin, &workflow).await;
            })
            .await;
        subscribers.push(subscriber);
    }

    // A warning (a low-confidence healing), then an error (three failed runs in a row).
    let run = common::str_field(&start_run(&server, admin, &workflow).await, "id");
    report_step(
        &server,
        admin,
        &run,
        &steps[0],
        json!({ "status": "HEALED_AI", "healingConfidence": 0.2 }),
    )
    .await;
    for _ in 0..3 {
        let run = common::str_field(&start_run(&server, admin, &workflow).await, "id");
        report_step(&server, admin, &run, &steps[0], outcome("FAILED")).await;
        finish_run(&server, admin, &run, "FAILED", Some("boom")).await;
    }

    let mut kinds = Vec::new();
    for subscriber in &mut subscribers {
        let mut seen = Vec::new();
        while let Some(event) = subscriber
            .try_event_for("notes", std::time::Duration::from_secs(3))
            .await
        {
            let data = &event["payload"]["data"];
            let note = field(data, "notificationCreated");
            seen.push((
                note["kind"].as_str().unwrap_or_default().to_owned(),
                note["severity"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        kinds.push(seen);
    }
    let pair = |k: &str, s: &str| (k.to_owned(), s.to_owned());
    assert_eq!(
        kinds[0],
        [
            pair("workflow_needs_review", "WARNING"),
            pair("workflow_broken", "ERROR")
        ],
        "the admin (defaults) hears both"
    );
    assert_eq!(kinds[1], [pair("workflow_broken", "ERROR")], "errors only");
    assert_eq!(
        kinds[2],
        [pair("workflow_needs_review", "WARNING")],
        "broken muted"
    );
    // Preferences filter pushes only: the inbox holds both for everyone.
    let inbox = ok(
        &server,
        &acme.member_token,
        "{ notifications { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(inbox["notifications"]["totalCount"], 2);
    for subscriber in subscribers {
        subscriber.disconnect().await;
    }
}
