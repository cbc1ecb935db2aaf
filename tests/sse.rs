//! GraphQL over Server-Sent Events (`/graphql/stream`) as graphql-sse's own client (npm
//! `graphql-sse`, run by tests/clients/sse.mjs) sees it, in both of its modes, and the
//! protocol's edges checked request by request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fixtures::{new_id, team};
use common::realtime::{Subscriber, field, run_updated_query, runs_updated_query};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{
    Backend, ServerOptions, TEST_JWT_SECRET, TestServer, forge_token, jwt_claims, now_ts, str_field,
};
use serde_json::{Value, json};

fn with_key(status: &str, key: &str) -> Value {
    let mut value = outcome(status);
    value["idempotencyKey"] = json!(key);
    value
}

fn server_with(backend: Backend, env: &[(&str, &str)]) -> impl Future<Output = TestServer> {
    let options = ServerOptions {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ServerOptions::default()
    };
    TestServer::start_with(backend, options)
}

// ---------------------------------------------------------------------------
// Through graphql-sse's client
// ---------------------------------------------------------------------------

/// Queries, mutations and a subscription, each answered with `next` events and `complete`,
/// in the mode given.
async fn operations_over_sse(backend: Backend, single: bool) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Checkout", 2).await;

    let mut client = Subscriber::start_sse(
        &server,
        Some(token),
        &[("me", "{ me { id email company { name } } }", json!({}))],
        single,
    );
    let data = client.expect_data("me").await;
    assert_eq!(data["me"]["id"], acme.member_id.as_str(), "{data:#}");
    assert_eq!(data["me"]["company"]["name"], "Acme");
    client.expect_complete("me").await;

    client.subscribe(
        "start",
        "mutation($w: ID!) { startRun(workflowId: $w) { id status stepsTotal } }",
        json!({ "w": workflow }),
    );
    let data = client.expect_data("start").await;
    let run = str_field(&data["startRun"], "id");
    assert_eq!(data["startRun"]["status"], "RUNNING");
    client.expect_complete("start").await;

    client.subscribe("run", &run_updated_query(), json!({ "runId": run }));
    let snapshot = client.expect_data("run").await;
    assert_eq!(field(&snapshot, "runUpdated")["run"]["stepsCompleted"], 0);
    for (i, step) in steps.iter().enumerate() {
        let report = report_step(
            &server,
            token,
            &run,
            step,
            with_key("SUCCESS", &format!("k{i}")),
        )
        .await;
        let data = client.expect_data("run").await;
        let update = field(&data, "runUpdated");
        assert_eq!(
            update["healthLog"]["id"], report["healthLog"]["id"],
            "{update:#}"
        );
        assert_eq!(update["run"]["stepsCompleted"], i + 1);
    }
    finish_run(&server, token, &run, "SUCCEEDED", None).await;
    let last = client.expect_data("run").await;
    assert_eq!(field(&last, "runUpdated")["run"]["status"], "SUCCEEDED");
    client.expect_complete("run").await;

    // Errors found before execution: on a distinct connection a `next` carrying them, then
    // `complete`; on a single connection the operation's request is answered with them
    // (400), which the client reports as the operation's failure.
    for (id, query) in [("broken", "{ me { id "), ("invalid", "{ noSuchField }")] {
        client.subscribe(id, query, json!({}));
        if single {
            let event = client.event_for(id).await;
            assert_eq!(event["event"], "error", "{event}");
            assert_eq!(event["status"], 400, "{event}");
        } else {
            let error = client.expect_error_code(id, "BAD_USER_INPUT").await;
            assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
        }
    }
    // Without a token, nothing of the company is readable.
    let mut anonymous = Subscriber::start_sse(
        &server,
        None,
        &[("runs", &runs_updated_query(), json!({}))],
        single,
    );
    anonymous.expect_error_code("runs", "UNAUTHENTICATED").await;
    anonymous.disconnect().await;
    client.disconnect().await;
}

both_backends!(distinct_connections_carry_queries_mutations_and_subscriptions);
async fn distinct_connections_carry_queries_mutations_and_subscriptions(backend: Backend) {
    operations_over_sse(backend, false).await;
}

both_backends!(a_single_connection_carries_queries_mutations_and_subscriptions);
async fn a_single_connection_carries_queries_mutations_and_subscriptions(backend: Backend) {
    operations_over_sse(backend, true).await;
}

both_backends!(sse_subscribers_only_see_their_own_company);
async fn sse_subscribers_only_see_their_own_company(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let a = acme.admin_token.as_str();
    let b = globex.admin_token.as_str();
    let (a_flow, a_steps) = active_workflow(&server, a, "Acme flow", 1).await;
    let (b_flow, b_steps) = active_workflow(&server, b, "Globex flow", 1).await;
    let a_run = str_field(&start_run(&server, a, &a_flow).await, "id");

    for single in [false, true] {
        let mut sub = Subscriber::start_sse(
            &server,
            Some(globex.member_token.as_str()),
            &[("runs", &runs_updated_query(), json!({}))],
            single,
        );
        let b_run = str_field(&start_run(&server, b, &b_flow).await, "id");
        sub.until_live(&["runs"], async || {
            start_run(&server, b, &b_flow).await;
        })
        .await;
        // Acme's run reports and finishes; Globex's own report afterwards proves the stream
        // still flows, and nothing before it may be Acme's.
        report_step(&server, a, &a_run, &a_steps[0], outcome("SUCCESS")).await;
        let last = report_step(&server, b, &b_run, &b_steps[0], outcome("SUCCESS")).await;
        let last = str_field(&last["healthLog"], "id");
        loop {
            let data = sub.expect_data("runs").await;
            let update = field(&data, "runsUpdated");
            assert_eq!(
                update["run"]["workflow"]["id"],
                b_flow.as_str(),
                "Globex's stream (single: {single}) carried another company's run: {update:#}"
            );
            if update["healthLog"]["id"] == last.as_str() {
                break;
            }
        }
        // Another company's run is answered exactly like a missing one.
        sub.subscribe("spy", &run_updated_query(), json!({ "runId": a_run }));
        let foreign = sub.expect_error_code("spy", "NOT_FOUND").await;
        sub.subscribe("ghost", &run_updated_query(), json!({ "runId": new_id() }));
        let missing = sub.expect_error_code("ghost", "NOT_FOUND").await;
        assert_eq!(foreign["message"], missing["message"]);
        sub.disconnect().await;
    }
}

/// The next event of `op` must end it for lost credentials: a `next` carrying one
/// UNAUTHENTICATED error and no data, then `complete`.
async fn expect_ended_for_credentials(sub: &mut Subscriber, op: &str) -> String {
    let error = sub.expect_error_code(op, "UNAUTHENTICATED").await;
    error["message"].as_str().unwrap_or_default().to_owned()
}

both_backends!(streams_end_when_the_member_is_removed_or_re_roled);
async fn streams_end_when_the_member_is_removed_or_re_roled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, admin, "Watched", 1).await;
    let invite = server.invite_token(admin).await;
    let (promoted_token, promoted) = server
        .join_company(&invite, "Soon Admin", "soon@acme.test", common::PASSWORD)
        .await;

    let mut removed = Subscriber::start_sse(
        &server,
        Some(&acme.member_token),
        &[("runs", &runs_updated_query(), json!({}))],
        false,
    );
    let mut re_roled = Subscriber::start_sse(
        &server,
        Some(&promoted_token),
        &[("runs", &runs_updated_query(), json!({}))],
        true,
    );
    let mut kept = Subscriber::start_sse(
        &server,
        Some(admin),
        &[("runs", &runs_updated_query(), json!({}))],
        false,
    );
    for sub in [&mut removed, &mut re_roled, &mut kept] {
        sub.until_live(&["runs"], async || {
            start_run(&server, admin, &workflow).await;
        })
        .await;
    }
    let resp = server
        .gql(
            "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id } }",
            json!({ "id": promoted["user"]["id"] }),
            Some(admin),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let resp = server
        .gql(
            "mutation($id: ID!) { removeUser(userId: $id) }",
            json!({ "id": acme.member_id }),
            Some(admin),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    // A run started after the changes must not reach the changed members: their streams
    // end first, on this instance at once.
    let after = str_field(&start_run(&server, admin, &workflow).await, "id");
    for (sub, who) in [(&mut removed, "removed"), (&mut re_roled, "re-roled")] {
        loop {
            let event = sub.event_for("runs").await;
            if event["event"] == "next" && event["payload"]["errors"].is_null() {
                let run = &event["payload"]["data"]["runsUpdated"]["run"]["id"];
                assert_ne!(
                    run,
                    after.as_str(),
                    "{who} member saw a run after the change"
                );
                continue;
            }
            let errors = &event["payload"]["errors"];
            assert_eq!(
                errors[0]["extensions"]["code"], "UNAUTHENTICATED",
                "{who}: {event}"
            );
            assert_eq!(
                errors[0]["message"],
                "the session ended, the key was revoked, or the role changed"
            );
            sub.expect_complete("runs").await;
            break;
        }
    }
    // The admin's stream goes on.
    loop {
        let data = kept.expect_data("runs").await;
        if data["runsUpdated"]["run"]["id"] == after.as_str() {
            break;
        }
    }
    for sub in [removed, re_roled, kept] {
        sub.disconnect().await;
    }
}

both_backends!(token_expiry_ends_the_stream);
async fn token_expiry_ends_the_stream(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    for single in [false, true] {
        let mut claims = jwt_claims(&acme.admin_token);
        let now = now_ts();
        claims["iat"] = json!(now);
        claims["nbf"] = json!(now);
        claims["exp"] = json!(now + 3);
        let short_lived = forge_token(&claims, TEST_JWT_SECRET);
        let mut sub = Subscriber::start_sse(
            &server,
            Some(&short_lived),
            &[("runs", &runs_updated_query(), json!({}))],
            single,
        );
        let message = expect_ended_for_credentials(&mut sub, "runs").await;
        assert_eq!(message, "token expired", "single: {single}");
        sub.disconnect().await;
    }
}

both_backends!(streams_count_against_the_connection_limits);
async fn streams_count_against_the_connection_limits(backend: Backend) {
    let server = server_with(
        backend,
        &[
            ("STEPWISE_WS_MAX_CONNECTIONS_PER_USER", "2"),
            ("STEPWISE_WS_MAX_OPERATIONS", "2"),
            ("STEPWISE_WS_MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS", "1"),
        ],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, token, "Limited", 1).await;

    // Distinct connections: each stream is a connection of the user.
    let mut sub = Subscriber::start_sse(
        &server,
        Some(token),
        &[
            ("one", &runs_updated_query(), json!({})),
            ("two", &runs_updated_query(), json!({})),
        ],
        false,
    );
    sub.until_live(&["one", "two"], async || {
        start_run(&server, token, &workflow).await;
    })
    .await;
    sub.subscribe("three", &runs_updated_query(), json!({}));
    let refused = sub.event_for("three").await;
    assert_eq!(refused["event"], "error", "{refused}");
    assert_eq!(refused["status"], 429, "{refused}");
    // A WebSocket of the same user counts too.
    let mut socket = common::realtime::RawSocket::open(&server).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": token } }));
    let (code, _) = socket.expect_close().await;
    assert_eq!(code, 1013, "the user's third connection over WebSocket");
    // Closing one makes room.
    sub.unsubscribe("one");
    let mut room = None;
    for attempt in 0..20 {
        let id = format!("retry{attempt}");
        sub.subscribe(&id, "{ me { id } }", json!({}));
        let event = sub.event_for(&id).await;
        if event["event"] == "next" {
            room = Some(event);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(room.is_some(), "closing a stream did not make room");
    sub.disconnect().await;

    // A single connection runs at most --ws-max-operations operations.
    let mut single = Subscriber::start_sse(
        &server,
        Some(&acme.member_token),
        &[
            ("one", &runs_updated_query(), json!({})),
            ("two", &runs_updated_query(), json!({})),
        ],
        true,
    );
    single
        .until_live(&["one", "two"], async || {
            start_run(&server, token, &workflow).await;
        })
        .await;
    single.subscribe("three", &runs_updated_query(), json!({}));
    let refused = single.event_for("three").await;
    assert_eq!(refused["event"], "error", "{refused}");
    assert_eq!(refused["status"], 429, "{refused}");
    single.disconnect().await;

    // Without a token, one connection per address: a reservation nobody opened yet counts.
    let reserve = async || server.client.put(server.sse_url()).send().await.unwrap();
    let first = reserve().await;
    assert_eq!(first.status(), 201);
    let second = reserve().await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
}

both_backends!(shutdown_ends_streams_so_clients_reconnect);
async fn shutdown_ends_streams_so_clients_reconnect(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, token, "Drain", 1).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");
    let mut sub = Subscriber::start_sse(
        &server,
        Some(token),
        &[("run", &run_updated_query(), json!({ "runId": run }))],
        false,
    );
    sub.expect_data("run").await;
    server.terminate();
    // No `complete`: the stream breaks off, which the client reports as a network failure
    // (and would retry elsewhere).
    let event = sub.event_for("run").await;
    assert_eq!(event["event"], "error", "{event}");
    let began = Instant::now();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not exit cleanly within 15 s with a stream open ({:?})",
        began.elapsed()
    );
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------
// The protocol's edges, request by request
// ---------------------------------------------------------------------------

/// Reads SSE events (`(event, data)`) from a streaming response until `count` arrived.
async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .expect("events in time")
            .expect("readable stream");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut name, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = value.to_owned();
                }
            }
            if !name.is_empty() {
                events.push((name, data));
            }
        }
    }
    events
}

both_backends!(reservations_belong_to_whoever_made_them);
async fn reservations_belong_to_whoever_made_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let url = server.sse_url();
    let client = &server.client;
    let bearer = |token: &str| format!("Bearer {token}");

    let put = client
        .put(&url)
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert!(
        put.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let reservation = put.text().await.unwrap();
    assert!(
        reservation.len() >= 43,
        "an unguessable token: {reservation:?}"
    );

    // Another company's member, or no token at all, cannot use it: it does not exist for them.
    for authorization in [
        Some(bearer(&globex.admin_token)),
        Some(bearer(&acme.member_token)),
        None,
    ] {
        let mut request = client
            .get(&url)
            .header("accept", "text/event-stream")
            .header("x-graphql-event-stream-token", &reservation);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "{authorization:?}");
        let submitted = client
            .post(&url)
            .header("x-graphql-event-stream-token", &reservation)
            .header("authorization", bearer(&globex.admin_token))
            .json(&json!({ "query": "{ me { id } }", "extensions": { "operationId": "x" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(submitted.status(), 404);
    }

    // Its owner opens it, once.
    let mut stream = client
        .get(format!("{url}?token={reservation}"))
        .header("accept", "text/event-stream")
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let again = client
        .get(&url)
        .header("accept", "text/event-stream")
        .header("x-graphql-event-stream-token", &reservation)
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let submit = |body: Value| {
        client
            .post(&url)
            .header("x-graphql-event-stream-token", &reservation)
            .header("authorization", bearer(&acme.admin_token))
            .json(&body)
            .send()
    };
    // Request problems are answered as GraphQL over HTTP would.
    let missing_id = submit(json!({ "query": "{ me { id } }" })).await.unwrap();
    assert_eq!(missing_id.status(), 400);
    let invalid = submit(json!({ "query": "{ nope }", "extensions": { "operationId": "bad" } }))
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400, "a request error");
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body.get("data").is_none(), "{body}");
    // An operation is accepted and its results travel on the stream with its id.
    let accepted =
        submit(json!({ "query": "{ me { id } }", "extensions": { "operationId": "op-1" } }))
            .await
            .unwrap();
    assert_eq!(accepted.status(), 202);
    let events = read_events(&mut stream, 2).await;
    assert_eq!(events[0].0, "next", "{events:?}");
    let next: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(next["id"], "op-1");
    assert_eq!(next["payload"]["data"]["me"]["id"], acme.admin_id.as_str());
    assert_eq!(
        events[1],
        ("complete".to_owned(), json!({ "id": "op-1" }).to_string())
    );

    let stop = client
        .delete(&url)
        .header("x-graphql-event-stream-token", &reservation)
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 400, "DELETE without operationId");
    let stop = client
        .delete(format!("{url}?operationId=op-1"))
        .header("x-graphql-event-stream-token", &reservation)
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 200);

    // Closing the stream ends the reservation.
    drop(stream);
    let mut gone = false;
    for _ in 0..50 {
        let response =
            submit(json!({ "query": "{ me { id } }", "extensions": { "operationId": "late" } }))
                .await
                .unwrap();
        if response.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the reservation outlived its stream");

    // Distinct connections: a mutation over GET is refused like over HTTP.
    let mutation = client
        .get(&url)
        .query(&[("query", "mutation { rotateInviteToken { id } }")])
        .header("accept", "text/event-stream")
        .header("authorization", bearer(&acme.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);
    // A body that is not a GraphQL request is a 400 before any stream starts.
    let garbage = client
        .post(&url)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}
