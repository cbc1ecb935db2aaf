//! TLS to PostgreSQL (`sslmode`, `sslrootcert` in `DATABASE_URL`), against a private
//! cluster with `ssl = on` that refuses unencrypted connections (`hostssl` only), with a
//! certificate for `localhost` from a CA the test makes. PostgreSQL only; on SQLite the
//! settings do not exist, which the last test checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::faults::{PrivateCluster, TestCertificates, serve_fails};
use common::fixtures::team;
use common::realtime::{Subscriber, field, runs_updated_query};
use common::runs::{active_workflow, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::json;

/// A cluster that accepts only TLS connections from 127.0.0.1, with the test's server
/// certificate.
async fn tls_cluster(certs: &TestCertificates) -> PrivateCluster {
    PrivateCluster::start_configured(
        "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n".to_owned(),
        Some(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             host all all 0.0.0.0/0 reject\n\
             host all all ::/0 reject\n"
                .to_owned(),
        ),
        vec![
            (certs.server_cert.clone(), "server.pem"),
            (certs.server_key.clone(), "server.key"),
        ],
    )
    .await
}

fn url(cluster: &PrivateCluster, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/postgres?{params}",
        cluster.port
    )
}

/// Starts an instance on the cluster through `database_url`.
async fn serve(cluster: &PrivateCluster, database_url: &str) -> TestServer {
    let options = ServerOptions {
        database_url: Some(database_url.to_owned()),
        ..ServerOptions::default()
    };
    TestServer::start_on(cluster.test_db(), options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_connect_verify_and_refuse_as_libpq_does() {
    if !Backend::Postgres.available().await || !PrivateCluster::available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stepwise-certs-{}", uuid::Uuid::now_v7()));
    let certs = TestCertificates::make(&dir);
    let cluster = tls_cluster(&certs).await;
    let ca = certs.ca.to_string_lossy().into_owned();
    let wrong_ca = certs.wrong_ca.to_string_lossy().into_owned();

    // The cluster really refuses plain text: sslmode=disable cannot even start.
    let refused = serve_fails(&url(&cluster, "127.0.0.1", "sslmode=disable"), &[]);
    assert!(
        refused.contains("no encryption") || refused.contains("pg_hba.conf"),
        "a plain-text connection should be refused by the cluster:\n{refused}"
    );

    // require: encrypted, certificate not checked. The server migrates, serves, and
    // answers queries and mutations.
    let require = serve(&cluster, &url(&cluster, "127.0.0.1", "sslmode=require")).await;
    let acme = team(&require, "Acme").await;
    assert_eq!(
        require.me(&acme.admin_token).await["email"],
        "admin@acme.test"
    );
    drop(require);

    // verify-full with the right CA and the certificate's name connects, and so does the
    // LISTEN connection: an event crosses between two instances over TLS.
    let full = url(
        &cluster,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let first = serve(&cluster, &full).await;
    let second = first.start_sibling().await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&first, token, "Over TLS", 1).await;
    let mut sub = Subscriber::start(
        &second,
        Some(token),
        &[(
            "runs",
            &runs_updated_query(),
            json!({ "workflowId": workflow }),
        )],
    );
    let mut started = Vec::new();
    sub.until_live(&["runs"], async || {
        started.push(str_field(&start_run(&first, token, &workflow).await, "id"));
    })
    .await;
    let run = str_field(&start_run(&first, token, &workflow).await, "id");
    loop {
        let data = sub.expect_data("runs").await;
        let update = field(&data, "runsUpdated");
        if update["run"]["id"] == run.as_str() {
            break;
        }
        assert!(
            started.contains(&str_field(&update["run"], "id")),
            "{update:#}"
        );
    }
    sub.disconnect().await;
    drop(second);
    drop(first);

    // verify-ca checks the chain only: the address, which the certificate does not name,
    // is fine.
    let ca_only = url(
        &cluster,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    let server = serve(&cluster, &ca_only).await;
    assert_eq!(
        server.me(&acme.admin_token).await["email"],
        "admin@acme.test"
    );
    drop(server);

    // require with sslrootcert verifies the chain, as libpq does.
    let refused = serve_fails(
        &url(
            &cluster,
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={wrong_ca}"),
        ),
        &[],
    );
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // verify-full with another CA: refused at start-up, saying why.
    let refused = serve_fails(
        &url(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
        ),
        &[],
    );
    assert!(
        refused.contains("sslmode=verify-full") && refused.contains("UnknownIssuer"),
        "a certificate from an unknown CA should be refused with a clear error:\n{refused}"
    );

    // verify-full with the right CA but another host name than the certificate's.
    let refused = serve_fails(
        &url(
            &cluster,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &[],
    );
    assert!(
        refused.contains("sslmode=verify-full") && refused.contains("not valid for name"),
        "a certificate for another name should be refused with a clear error:\n{refused}"
    );

    // The system roots (the default) do not know the test's CA either.
    let refused = serve_fails(&url(&cluster, "localhost", "sslmode=verify-full"), &[]);
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // A misspelt mode or a missing CA file is a start-up error naming the setting.
    let refused = serve_fails(&url(&cluster, "localhost", "sslmode=verify"), &[]);
    assert!(refused.contains("sslmode=\"verify\""), "{refused}");
    let refused = serve_fails(
        &url(
            &cluster,
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ),
        &[],
    );
    assert!(refused.contains("/nonexistent/ca.pem"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_no_replicas_or_shared_event_bus() {
    // The PostgreSQL-only settings are refused on SQLite rather than ignored.
    let dir = std::env::temp_dir().join(format!("stepwise-test-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}", dir.join("stepwise.db").display());
    let refused = serve_fails(
        &sqlite,
        &[(
            "DATABASE_READ_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )],
    );
    assert!(refused.contains("DATABASE_READ_URL"), "{refused}");
    let refused = serve_fails(&sqlite, &[("STEPWISE_EVENT_BUS", "nats://127.0.0.1:4222")]);
    assert!(refused.contains("STEPWISE_EVENT_BUS"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}
