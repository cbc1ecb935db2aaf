//! The LISTEN/NOTIFY channel between instances is reachable by any database role that may
//! connect (PostgreSQL grants CONNECT to PUBLIC by default). A role with no grants at all
//! must neither inject events into subscriptions nor read company data by listening.
//! PostgreSQL only: SQLite has no channel between instances.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::{lit, team};
use common::realtime::{Subscriber, field, notification_created_query};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, TestServer, str_field};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt as _;
use serde_json::json;

/// A login role with no privileges beyond PUBLIC's, dropped again on `Drop`.
struct Intruder {
    role: String,
    admin_url: String,
}

impl Intruder {
    async fn create() -> Self {
        let role = format!("intruder_{}", uuid::Uuid::now_v7().simple());
        let admin_url = common::pg_admin_url();
        let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap();
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .unwrap();
        Self { role, admin_url }
    }

    /// A connection as this role to the server's database.
    async fn connect(&self, server: &TestServer) -> AsyncPgConnection {
        let url = server.database_url();
        let (_, rest) = url.split_once("://").unwrap();
        let (_, host_and_db) = rest.split_once('@').unwrap_or(("", rest));
        let url = format!("postgres://{}@{host_and_db}", self.role);
        AsyncPgConnection::establish(&url).await.unwrap()
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        let (role, url) = (self.role.clone(), self.admin_url.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&url).await {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_are_dropped_and_counted() {
    if !Backend::Postgres.available().await {
        return;
    }
    let server = TestServer::start(Backend::Postgres).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Payroll", 1).await;
    let mut sub = Subscriber::start(
        &server,
        Some(token),
        &[("notes", &notification_created_query(), json!({}))],
    );
    sub.expect_connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let intruder = Intruder::create().await;
    let mut conn = intruder.connect(&server).await;
    // What the server accepted before envelopes were signed: a phishing notification for
    // Acme's subscribers, a resync of every company, and the same inside the signed
    // envelope's frame with a made-up signature.
    let phishing = json!({
        "company_id": acme.company_id,
        "kind": { "type": "notification_created", "notification": {
            "id": common::fixtures::new_id(), "company_id": acme.company_id,
            "workflow_id": null, "kind": "security", "severity": "error",
            "title": "Your session expired", "message": "Sign in again at https://evil.example",
            "read": false, "read_at": null, "read_by": null,
            "created_at": "2026-01-01T00:00:00"
        } }
    });
    let legacy = json!({ "o": "forger", "e": [phishing, { "company_id": null, "kind": { "type": "resync" } }] });
    let framed = format!(
        "v1.{}.{}",
        "ab".repeat(32),
        json!({ "v": 1, "o": "forger", "e": [{ "t": "resync", "c": acme.company_id }] })
    );
    let before = server.metric("stepwise_events_rejected_total").await;
    for payload in [legacy.to_string(), framed] {
        conn.batch_execute(&format!("NOTIFY stepwise_events, {}", lit(&payload)))
            .await
            .expect("PUBLIC may NOTIFY: the attack needs no grant");
    }
    let rejected = poll_metric(&server, "stepwise_events_rejected_total", before + 2.0).await;
    assert!(rejected >= before + 2.0, "rejections were not counted");
    sub.expect_quiet("notes").await;

    // Real notifications still arrive.
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let low = json!({ "status": "HEALED_AI", "healingConfidence": 0.2 });
    report_step(&server, token, &run, &steps[0], low).await;
    let data = sub.expect_data("notes").await;
    assert_eq!(
        field(&data, "notificationCreated")["kind"],
        "workflow_needs_review",
        "{data:#}"
    );
    sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_reveals_no_company_data() {
    if !Backend::Postgres.available().await {
        return;
    }
    let server = TestServer::start(Backend::Postgres).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Quarterly payroll export", 1).await;

    let intruder = Intruder::create().await;
    let mut conn = intruder.connect(&server).await;
    conn.batch_execute("LISTEN stepwise_events").await.unwrap();
    let payloads = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(conn.notifications_stream());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(Ok(notification))) =
            tokio::time::timeout_at(deadline, stream.next()).await
        {
            seen.push(notification.payload);
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let failed = json!({ "status": "FAILED", "errorMessage": "salary table of Jane Roe unreachable",
                         "pageUrl": "https://intranet.acme.example/payroll" });
    report_step(&server, token, &run, &steps[0], failed).await;
    finish_run(
        &server,
        token,
        &run,
        "FAILED",
        Some("bank credentials rejected"),
    )
    .await;
    let _ = outcome("SUCCESS");
    let seen = payloads.await.unwrap();
    assert!(!seen.is_empty(), "the events did not travel at all");
    for payload in &seen {
        for secret in [
            "Quarterly payroll",
            "Jane Roe",
            "intranet.acme.example",
            "bank credentials",
        ] {
            assert!(
                !payload.contains(secret),
                "a listener without grants read {secret:?}: {payload}"
            );
        }
    }
}

/// Polls `/metrics` until `name` reaches `at_least` (or 5 s pass); returns the last value.
async fn poll_metric(server: &TestServer, name: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let value = server.metric(name).await;
        if value >= at_least || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
