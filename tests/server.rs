//! The server as an operator sees it: health endpoints, GraphiQL, restarts,
//! migrations and the checked-in schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, PASSWORD, ServerOptions, TestDb, TestServer, error_code, run_cli};
use reqwest::StatusCode;
use serde_json::json;

both_backends!(health_endpoints);
async fn health_endpoints(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_postgres_database_is_gone() {
    if !Backend::Postgres.available().await {
        return;
    }
    let server = TestServer::start(Backend::Postgres).await;
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);

    server.db.drop_pg_database();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = server.get("/readyz").await.status();
        if status != StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers 200 twenty seconds after the database was dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        server.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness must not depend on the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_to_browsers() {
    let server = TestServer::start(Backend::Sqlite).await;
    let resp = server
        .client
        .get(server.url("/graphql"))
        .header("Accept", "text/html")
        .send()
        .await
        .expect("GET /graphql");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "content-type: {content_type}"
    );
    let body = resp.text().await.expect("body");
    assert!(
        body.to_lowercase().contains("graphiql"),
        "no GraphiQL in:\n{body}"
    );
}

both_backends!(restart_keeps_accounts_and_tokens);
async fn restart_keeps_accounts_and_tokens(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let (token, signup) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;
    let old_addr = server.addr;

    server.restart().await;
    assert_ne!(
        server.addr, old_addr,
        "restart should have bound a new port"
    );

    let me = server.me(&token).await;
    assert_eq!(
        me["id"], signup["user"]["id"],
        "token issued before restart"
    );
    let (_, login) = server.login("alice@example.com", PASSWORD).await;
    assert_eq!(login["company"]["id"], signup["company"]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_generated_secret_survives_restart() {
    let options = ServerOptions {
        jwt_secret: None,
        ..ServerOptions::default()
    };
    let mut server = TestServer::start_with(Backend::Sqlite, options).await;
    let (token, signup) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;

    let db_path = server.db.sqlite_path();
    let secret_file = db_path.with_file_name("stepwise.db.jwt-secret");
    let secret = std::fs::read(&secret_file).unwrap_or_else(|e| {
        panic!(
            "without JWT_SECRET the server should keep its generated secret in {}: {e}",
            secret_file.display()
        )
    });
    assert!(
        secret.len() >= 32,
        "generated secret is only {} bytes",
        secret.len()
    );

    server.restart().await;
    let me = server.me(&token).await;
    assert_eq!(
        me["id"], signup["user"]["id"],
        "token issued before restart"
    );
    assert_eq!(
        std::fs::read(&secret_file).expect("secret file after restart"),
        secret,
        "restart must reuse the stored secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_accepts_plain_sqlite_path() {
    let db = TestDb::create(Backend::Sqlite).await;
    let path = db.sqlite_path();
    let options = ServerOptions {
        database_url: Some(path.display().to_string()),
        ..ServerOptions::default()
    };
    let server = TestServer::start_on(db, options).await;
    server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;
    assert!(path.is_file(), "no database file at {}", path.display());
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

/// `stepwise migrate status` as (state, migration) pairs, in printed order.
fn migration_status(db: &TestDb) -> Vec<(String, String)> {
    let out = run_cli(&["migrate", "status"], Some(db.url.as_str()), &db.dir);
    out.assert_success("stepwise migrate status");
    let rows: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [state @ ("applied" | "pending"), name] => {
                    Some((state.to_owned(), name.to_owned()))
                }
                _ => None,
            },
        )
        .collect();
    assert!(
        !rows.is_empty(),
        "`migrate status` listed no migrations:\n{}",
        out.stdout
    );
    rows
}

fn names(rows: &[(String, String)]) -> Vec<String> {
    rows.iter().map(|(_, name)| name.clone()).collect()
}

#[track_caller]
fn assert_all(rows: &[(String, String)], state: &str, when: &str) {
    assert!(
        rows.iter().all(|(s, _)| s == state),
        "{when}: expected every migration {state}, got {rows:?}"
    );
}

fn migrate(db: &TestDb, args: &[&str]) {
    let mut full = vec!["migrate"];
    full.extend_from_slice(args);
    run_cli(&full, Some(db.url.as_str()), &db.dir)
        .assert_success(&format!("stepwise {}", full.join(" ")));
}

both_backends!(migrations_run_revert_and_rerun);
async fn migrations_run_revert_and_rerun(backend: Backend) {
    let db = TestDb::create(backend).await;

    let fresh = migration_status(&db);
    assert_all(&fresh, "pending", "fresh database");
    let all = names(&fresh);

    migrate(&db, &["run"]);
    let applied = migration_status(&db);
    assert_all(&applied, "applied", "after `migrate run`");
    assert_eq!(names(&applied), all);

    migrate(&db, &["run"]);
    assert_all(
        &migration_status(&db),
        "applied",
        "after a second `migrate run`",
    );

    // Plain `revert` undoes only the newest migration.
    migrate(&db, &["revert"]);
    let newest = all.iter().max().expect("at least one migration");
    for (state, name) in migration_status(&db) {
        let expected = if &name == newest {
            "pending"
        } else {
            "applied"
        };
        assert_eq!(state, expected, "after `migrate revert`: {name}");
    }

    migrate(&db, &["revert", "--all"]);
    let reverted = migration_status(&db);
    assert_all(&reverted, "pending", "after `migrate revert --all`");
    assert_eq!(names(&reverted), all);

    migrate(&db, &["run"]);
    assert_all(&migration_status(&db), "applied", "after running again");

    let server = TestServer::start_on(db, ServerOptions::default()).await;
    let (token, _) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;
    assert_eq!(server.me(&token).await["email"], "alice@example.com");
    let resp = server
        .gql("{ company { name inviteToken } }", json!({}), Some(&token))
        .await;
    assert!(error_code(&resp).is_none(), "{resp:#}");
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

#[test]
fn checked_in_schema_is_up_to_date() {
    let dir = std::env::temp_dir();
    let out = run_cli(&["schema"], None, &dir);
    out.assert_success("stepwise schema");

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == out.stdout,
        "{} is out of date (or missing); regenerate it with \
         `cargo run -- schema > schema.graphql`",
        path.display()
    );
}
