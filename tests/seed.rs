//! `stepwise seed --demo`: an empty database filled with a demo company through the domain,
//! served as it would be in the first minute of trying Stepwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{Backend, ServerOptions, TestDb, TestServer, run_cli};
use serde_json::json;

/// The value printed after `label:` on a line of the seed's output.
fn printed(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"))
}

both_backends!(demo_data_fills_an_empty_database_and_only_an_empty_one);
async fn demo_data_fills_an_empty_database_and_only_an_empty_one(backend: Backend) {
    let db = TestDb::create(backend).await;
    let url = db.url.clone();
    let dir = db.dir.clone();
    let seeded = run_cli(&["seed", "--demo"], Some(&url), &dir);
    seeded.assert_success("stepwise seed --demo");
    let admin = printed(&seeded.stdout, "admin:");
    let member = printed(&seeded.stdout, "member:");
    let password = printed(&seeded.stdout, "password:");
    assert!(password.len() >= 16, "a generated password: {password:?}");

    let server = TestServer::start_on(db, ServerOptions::default()).await;
    let (token, payload) = server.login(&admin, &password).await;
    assert_eq!(payload["user"]["role"], "ADMIN");
    assert_eq!(payload["company"]["name"], "Demo Company");
    let (_, payload) = server.login(&member, &password).await;
    assert_eq!(payload["user"]["role"], "REGULAR");

    let data = server
        .gql_ok(
            "{ workflows(first: 10) { totalCount edges { node { name status \
                 steps { id screenshot { url width height contentType } } } } } \
               runs(first: 100) { edges { node { status } } } \
               healthLogs(first: 1) { totalCount } \
               notifications(first: 10) { edges { node { severity kind } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    let workflows = data["workflows"]["edges"].as_array().unwrap();
    assert!(workflows.len() >= 3, "{data:#}");
    let statuses: BTreeSet<&str> = workflows
        .iter()
        .map(|w| w["node"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["ACTIVE", "BROKEN", "NEEDS_REVIEW"]),
        "{data:#}"
    );
    let mut screenshot = None;
    for workflow in workflows {
        let steps = workflow["node"]["steps"].as_array().unwrap();
        assert!(steps.len() >= 3, "{workflow:#}");
        for step in steps {
            let shot = &step["screenshot"];
            assert_eq!(shot["contentType"], "image/png", "{step:#}");
            assert_eq!(
                (shot["width"].as_i64(), shot["height"].as_i64()),
                (Some(160), Some(100))
            );
            screenshot = Some(shot["url"].as_str().unwrap().to_owned());
        }
    }
    let runs: BTreeSet<&str> = data["runs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"]["status"].as_str().unwrap())
        .collect();
    for status in [
        "QUEUED",
        "RUNNING",
        "PAUSED",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "TIMED_OUT",
    ] {
        assert!(runs.contains(status), "no {status} run: {runs:?}");
    }
    assert!(
        data["healthLogs"]["totalCount"].as_i64().unwrap() >= 10,
        "{data:#}"
    );
    let severities: BTreeSet<&str> = data["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"]["severity"].as_str().unwrap())
        .collect();
    assert!(
        severities.contains("ERROR") && severities.contains("WARNING"),
        "{severities:?}"
    );

    // The screenshots' bytes are real PNGs in the blob store.
    let bytes = server.get(&screenshot.unwrap()).await;
    assert_eq!(bytes.status(), 200);
    let bytes = bytes.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    // A database with data is refused, and left as it was.
    let workflows_before = server.sql_count("workflows").await;
    let again = run_cli(&["seed", "--demo"], Some(&url), &dir);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        again.stderr.contains("only fills an empty database"),
        "{}",
        again.stderr
    );
    assert_eq!(server.sql_count("workflows").await, workflows_before);
    assert_eq!(server.sql_count("companies").await, 1);
}
