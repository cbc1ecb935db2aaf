//! What an operator sees: `/metrics` (operations by outcome, latency, WebSockets,
//! subscriptions, events, pool), request ids on responses and in the logs, JSON logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixtures::team;
use common::realtime::{RawSocket, runs_updated_query};
use common::runs::{active_workflow, poll_until, start_run};
use common::{Backend, ServerOptions, TestServer, str_field};
use serde_json::{Value, json};

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

const HTTP_QUERY_OK: &str = r#"stepwise_graphql_requests_total{transport="http",operation="query",field="workflows",outcome="ok"}"#;
const HTTP_MUTATION_OK: &str = r#"stepwise_graphql_requests_total{transport="http",operation="mutation",field="startRun",outcome="ok"}"#;
const HTTP_FIELD_ERROR: &str = r#"stepwise_graphql_requests_total{transport="http",operation="query",field="workflow",outcome="field_error"}"#;
const HTTP_REFUSED: &str = r#"stepwise_graphql_requests_total{transport="http",operation="query",field="unknown",outcome="request_error"}"#;
const WS_SUBSCRIPTION_OK: &str = r#"stepwise_graphql_requests_total{transport="websocket",operation="subscription",field="runsUpdated",outcome="ok"}"#;
const LATENCY_COUNT: &str =
    r#"stepwise_graphql_request_duration_seconds_count{operation="query",field="workflows"}"#;

/// The value of the exact series `series` (name and labels), or 0 when it has no sample yet.
async fn series(server: &TestServer, series: &str) -> f64 {
    let body = server.get("/metrics").await.text().await.unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

both_backends!(metrics_count_operations_websockets_and_events);
async fn metrics_count_operations_websockets_and_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();

    let resp = server.get("/metrics").await;
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = resp.text().await.unwrap();
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    for family in [
        "stepwise_graphql_requests",
        "stepwise_graphql_request_duration_seconds",
        "stepwise_websocket_connections",
        "stepwise_subscriptions",
        "stepwise_events_published",
        "stepwise_events_delivered",
        "stepwise_db_statements",
        "stepwise_db_pool_connections",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }

    // Operations, by outcome.
    for _ in 0..3 {
        server
            .gql_ok("{ workflows { totalCount } }", json!({}), Some(token))
            .await;
    }
    let missing = server
        .gql(
            "query($id: ID!) { workflow(id: $id) { id } }",
            json!({ "id": common::fixtures::new_id() }),
            Some(token),
        )
        .await;
    assert!(missing["errors"].is_array());
    let invalid = server.gql("{ noSuchField }", json!({}), Some(token)).await;
    assert!(invalid["errors"].is_array());
    assert_eq!(series(&server, HTTP_QUERY_OK).await, 3.0);
    assert_eq!(series(&server, LATENCY_COUNT).await, 3.0);
    assert_eq!(series(&server, HTTP_FIELD_ERROR).await, 1.0);
    assert_eq!(series(&server, HTTP_REFUSED).await, 1.0);
    let body = server.get("/metrics").await.text().await.unwrap();
    assert!(
        !body.contains("noSuchField"),
        "a refused request's field names must not become label values"
    );

    // A subscriber: one connection, one subscription; a started run is one event
    // published and one delivered to it.
    let (workflow, _) = active_workflow(&server, token, "Watched", 1).await;
    let published = series(&server, "stepwise_events_published_total").await;
    let delivered = series(&server, "stepwise_events_delivered_total").await;
    let mut socket = RawSocket::open(&server).await;
    socket.init(Some(token)).await;
    socket.subscribe("runs", &runs_updated_query(), json!({}));
    poll_until(WAIT, "the subscription is counted", async || {
        (series(&server, "stepwise_subscriptions").await == 1.0
            && series(&server, "stepwise_websocket_connections").await == 1.0)
            .then_some(())
    })
    .await;
    let run = start_run(&server, token, &workflow).await;
    let event = socket.expect_type("next").await;
    assert_eq!(
        event["payload"]["data"]["runsUpdated"]["run"]["id"],
        str_field(&run, "id").as_str()
    );
    assert_eq!(series(&server, HTTP_MUTATION_OK).await, 1.0);
    assert!(series(&server, "stepwise_events_published_total").await > published);
    assert!(series(&server, "stepwise_events_delivered_total").await > delivered);
    assert_eq!(series(&server, WS_SUBSCRIPTION_OK).await, 1.0);
    socket.send(json!({ "type": "complete", "id": "runs" }));
    poll_until(
        WAIT,
        "the finished subscription is no longer counted",
        async || (series(&server, "stepwise_subscriptions").await == 0.0).then_some(()),
    )
    .await;
    drop(socket);
    poll_until(
        WAIT,
        "the closed connection is no longer counted",
        async || (series(&server, "stepwise_websocket_connections").await == 0.0).then_some(()),
    )
    .await;
    assert!(series(&server, "stepwise_db_pool_connections").await >= 1.0);
}

// Both transports run one pipeline (src/http/operation.rs), so a refusal is counted alike
// whichever way it came. Over WebSocket, an operation over the alias limit used to go
// uncounted while the same operation over HTTP was counted.
both_backends!(refusals_are_counted_alike_over_both_transports);
async fn refusals_are_counted_alike_over_both_transports(backend: Backend) {
    const WS_UNPARSED: &str = r#"stepwise_graphql_requests_total{transport="websocket",operation="unknown",field="unknown",outcome="request_error"}"#;
    const WS_OVER_A_LIMIT: &str = r#"stepwise_graphql_requests_total{transport="websocket",operation="query",field="unknown",outcome="request_error"}"#;
    const WS_QUERY_OK: &str = r#"stepwise_graphql_requests_total{transport="websocket",operation="query",field="me",outcome="ok"}"#;
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let aliases: Vec<String> = (0..51).map(|i| format!("a{i}: __typename")).collect();
    let too_many_aliases = format!("{{ {} }}", aliases.join(" "));

    let refused = server.gql(&too_many_aliases, json!({}), Some(token)).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["limit"], "aliases",
        "{refused:#}"
    );
    assert_eq!(series(&server, HTTP_REFUSED).await, 1.0);

    let mut socket = RawSocket::open(&server).await;
    socket.init(Some(token)).await;
    for (id, query) in [("aliases", too_many_aliases.as_str()), ("syntax", "{ me {")] {
        socket.subscribe(id, query, json!({}));
        let error = socket.expect_type("error").await;
        assert_eq!(error["id"], id, "{error}");
    }
    socket.subscribe("me", "{ me { email } }", json!({}));
    socket.expect_type("next").await;
    socket.expect_type("complete").await;
    assert_eq!(series(&server, WS_OVER_A_LIMIT).await, 1.0);
    assert_eq!(series(&server, WS_UNPARSED).await, 1.0);
    assert_eq!(series(&server, WS_QUERY_OK).await, 1.0);
    socket.shutdown().await;
}

both_backends!(request_ids_are_echoed_and_logged_as_json);
async fn request_ids_are_echoed_and_logged_as_json(backend: Backend) {
    let options = ServerOptions {
        env: vec![("STEPWISE_LOG_FORMAT".into(), "json".into())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;

    // A client's id is kept; without one, the server makes one up.
    let resp = reqwest::Client::new()
        .post(server.url("/graphql"))
        .header("x-request-id", "trace-me-42")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let resp = server.get("/healthz").await;
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // Every log line is one JSON object; the request's line carries its id and the
    // GraphQL operation's span.
    poll_until(WAIT, "the request is logged", async || {
        server.log_tail().contains("trace-me-42").then_some(())
    })
    .await;
    let log = server.log_tail();
    let mut found = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if line.contains("trace-me-42") {
            found = true;
            assert_eq!(entry["span"]["request_id"], "trace-me-42", "{entry:#}");
        }
    }
    assert!(found, "{log}");
}
