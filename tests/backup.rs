//! `stepwise backup` / `stepwise restore`, as an operator uses them: a backup taken from a
//! running server while clients keep writing, restored into a new directory, served by a
//! new server. SQLite only: PostgreSQL is backed up with its own tools (pg_dump / PITR), and
//! the command says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::blobs::{multipart_request, png};
use common::fixtures::{step_input, team, workflow_fields};
use common::{Backend, ServerOptions, TestDb, TestServer, pg_admin_url, run_cli, str_field};
use serde_json::{Value, json};

/// Upper bound on writes made while the backup runs (it takes well under a second).
const MAX_WRITES: usize = 200;

/// One client write: a workflow with one step that shows a screenshot of its own (distinct
/// bytes, so a new blob). Returns the workflow id, its name and the screenshot's bytes.
async fn write(server: &TestServer, token: &str, i: usize) -> (String, String, Vec<u8>) {
    let name = format!("Workflow {i}");
    let workflow = server
        .gql_ok(
            &format!(
                "mutation($input: CreateWorkflowInput!) {{ createWorkflow(input: $input) {{ {} }} }}",
                workflow_fields()
            ),
            json!({ "input": { "name": name, "steps": [step_input("click", "Go")] } }),
            Some(token),
        )
        .await["createWorkflow"]
        .clone();
    let id = str_field(&workflow, "id");
    let step = str_field(&workflow["steps"][0], "id");
    let bytes = png(8 + (i % 64) as u32, 4 + (i / 64) as u32, i as u8);
    let resp = multipart_request(
        server,
        &server.client,
        Some(token),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": id, "s": step }),
        bytes.clone(),
    )
    .await;
    assert!(resp["errors"].is_null(), "upload {i}: {resp:#}");
    (id, name, bytes)
}

/// Every workflow the server lists: id → (name, the screenshot URL of its first step).
async fn workflows(server: &TestServer, token: &str) -> HashMap<String, (String, String)> {
    let data = server
        .gql_ok(
            "{ workflows(first: 100) { totalCount nodes { id name steps { screenshot { url } } } } }",
            json!({}),
            Some(token),
        )
        .await;
    let page = &data["workflows"];
    let nodes = page["nodes"].as_array().unwrap();
    assert_eq!(page["totalCount"], nodes.len(), "one page holds them all");
    nodes
        .iter()
        .map(|w| {
            let url = w["steps"][0]["screenshot"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (str_field(w, "id"), (str_field(w, "name"), url))
        })
        .collect()
}

#[track_caller]
fn assert_mode(path: &Path, mode: u32) {
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(actual, mode, "mode of {}: {actual:o}", path.display());
}

/// Every directory 0700 and every file 0600 under `dir` (backups hold password hashes).
fn assert_private(dir: &Path) {
    assert_mode(dir, 0o700);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_private(&path);
        } else {
            assert_mode(&path, 0o600);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_restores_into_a_new_directory_that_serves_the_same_data() {
    let server = TestServer::start(Backend::Sqlite).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(write(&server, token, i).await);
    }
    let before_backup: HashSet<String> = written.iter().map(|(id, ..)| id.clone()).collect();

    // The backup runs in its own process while this task keeps writing.
    let backup = server.db.dir.join("backups").join("nightly");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let cli = {
        let (backup, url, cwd) = (
            backup.to_string_lossy().into_owned(),
            server.database_url(),
            server.db.dir.clone(),
        );
        tokio::task::spawn_blocking(move || run_cli(&["backup", &backup], Some(&url), &cwd))
    };
    let mut during = 0;
    while !cli.is_finished() {
        assert!(
            during < MAX_WRITES,
            "the backup is still running after {during} writes"
        );
        written.push(write(&server, token, written.len()).await);
        during += 1;
    }
    cli.await.unwrap().assert_success("stepwise backup");
    for _ in 0..2 {
        written.push(write(&server, token, written.len()).await);
    }
    assert!(during >= 1, "no write ran during the backup");
    eprintln!("{during} writes ran while the backup ran");

    assert_private(&backup);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], 1, "{manifest:#}");
    assert_eq!(manifest["blobs_included"], true, "{manifest:#}");

    // Restore into a new directory; a second restore there is refused unless forced.
    let target = TestDb::create(Backend::Sqlite).await;
    let backup_arg = backup.to_string_lossy().into_owned();
    run_cli(&["restore", &backup_arg], Some(&target.url), &target.dir)
        .assert_success("stepwise restore");
    let again = run_cli(&["restore", &backup_arg], Some(&target.url), &target.dir);
    assert!(!again.status.success(), "restore over an existing database");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    run_cli(
        &["restore", &backup_arg, "--force"],
        Some(&target.url),
        &target.dir,
    )
    .assert_success("stepwise restore --force");
    assert_mode(&target.sqlite_path(), 0o600);

    // A server on the restored files: same members (the same token works), same data as
    // the snapshot, every screenshot loads.
    let restored = TestServer::start_on(target, ServerOptions::default()).await;
    let source = workflows(&server, token).await;
    let copy = workflows(&restored, token).await;
    let bytes: HashMap<&str, &[u8]> = written
        .iter()
        .map(|(id, _, png)| (id.as_str(), png.as_slice()))
        .collect();
    assert_eq!(source.len(), written.len());
    for id in &before_backup {
        assert!(
            copy.contains_key(id),
            "{id}, written before the backup, was not restored"
        );
    }
    assert!(
        copy.len() < source.len(),
        "writes after the backup are not in it ({} restored of {})",
        copy.len(),
        source.len()
    );
    assert_eq!(
        restored.sql_count("screenshots").await,
        manifest["screenshots"].as_i64().unwrap(),
        "the restored database is the snapshot"
    );
    let mut without_screenshot = 0;
    for (id, (name, url)) in &copy {
        let (source_name, _) = source
            .get(id)
            .unwrap_or_else(|| panic!("restored {id} never existed"));
        assert_eq!(name, source_name);
        if url.is_empty() {
            // Created, but its screenshot uploaded after the snapshot: one write in flight.
            assert!(!before_backup.contains(id), "{id} lost its screenshot");
            without_screenshot += 1;
            continue;
        }
        let response = restored.get(url).await;
        assert_eq!(response.status(), 200, "screenshot of {id} at {url}");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            bytes[id.as_str()],
            "screenshot bytes of {id}"
        );
    }
    assert!(
        without_screenshot <= 1,
        "{without_screenshot} workflows lost their screenshot"
    );
}

#[tokio::test]
async fn backup_refuses_postgres_and_existing_destinations() {
    let dir = TestDb::create(Backend::Sqlite).await;
    let out = run_cli(&["backup", "b"], Some(&pg_admin_url()), &dir.dir);
    assert!(!out.status.success());
    assert!(out.stderr.contains("pg_dump"), "{}", out.stderr);

    std::fs::create_dir(dir.dir.join("taken")).unwrap();
    std::fs::write(dir.sqlite_path(), b"").unwrap();
    let out = run_cli(&["backup", "taken"], Some(&dir.url), &dir.dir);
    assert!(!out.status.success());
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
}

/// A configured blob directory (`--blob-store`) is backed up, and restored into another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_blob_directory_is_backed_up_and_restored_elsewhere() {
    let db = TestDb::create(Backend::Sqlite).await;
    let shots = db.dir.join("shots");
    let options = ServerOptions {
        env: vec![(
            "STEPWISE_BLOB_STORE".into(),
            shots.to_string_lossy().into_owned(),
        )],
        ..ServerOptions::default()
    };
    let server = TestServer::start_on(db, options).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (id, _, bytes) = write(&server, token, 0).await;

    let backup = server.db.dir.join("backup");
    let (backup_arg, shots_arg) = (
        backup.to_string_lossy().into_owned(),
        shots.to_string_lossy().into_owned(),
    );
    run_cli(
        &["backup", &backup_arg, "--blob-store", &shots_arg],
        Some(&server.database_url()),
        &server.db.dir,
    )
    .assert_success("stepwise backup --blob-store");
    assert_private(&backup);

    let target = TestDb::create(Backend::Sqlite).await;
    let elsewhere = target.dir.join("restored-shots");
    let elsewhere_arg = elsewhere.to_string_lossy().into_owned();
    run_cli(
        &["restore", &backup_arg, "--blob-store", &elsewhere_arg],
        Some(&target.url),
        &target.dir,
    )
    .assert_success("stepwise restore --blob-store");
    let options = ServerOptions {
        env: vec![("STEPWISE_BLOB_STORE".into(), elsewhere_arg)],
        ..ServerOptions::default()
    };
    let restored = TestServer::start_on(target, options).await;
    let copy = workflows(&restored, token).await;
    let (_, url) = &copy[&id];
    let response = restored.get(url).await;
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

/// A backup pointed at the wrong blob store fails and says why, instead of producing a
/// backup whose screenshots have no bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_missing_blobs_fails_and_leaves_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let acme = team(&server, "Acme").await;
    write(&server, &acme.admin_token, 0).await;
    let backup = server.db.dir.join("backup");
    let backup_arg = backup.to_string_lossy().into_owned();
    let out = run_cli(
        &["backup", &backup_arg, "--blob-store", "elsewhere"],
        Some(&server.database_url()),
        &server.db.dir,
    );
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("--blob-store"), "{}", out.stderr);
    assert!(
        !backup.exists(),
        "a failed backup left {}",
        backup.display()
    );
    assert!(!server.db.dir.join("backup.partial").exists());
}
