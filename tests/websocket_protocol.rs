//! The WebSocket transport frame by frame (tests/realtime/raw.mjs, the npm `ws` package):
//! subprotocol negotiation, graphql-transport-ws close codes, ping/pong, errors versus
//! completion, and the legacy `graphql-ws` (subscriptions-transport-ws) protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::team;
use common::realtime::{RawSocket, run_updated_query, runs_updated_query};
use common::runs::{active_workflow, outcome, report_step, start_run};
use common::{
    Backend, ServerOptions, TEST_JWT_SECRET, TestServer, forge_token, jwt_claims, now_ts, str_field,
};
use serde_json::{Value, json};

async fn server_with(backend: Backend, env: &[(&str, &str)]) -> TestServer {
    let options = ServerOptions {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ServerOptions::default()
    };
    TestServer::start_with(backend, options).await
}

/// A server with a signed-up company; returns the server and the admin's token.
async fn server_and_token(backend: Backend) -> (TestServer, String) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    (server, acme.admin_token)
}

/// A socket that has been acknowledged.
async fn ready_socket(server: &TestServer, token: &str) -> RawSocket {
    let mut socket = RawSocket::open(server).await;
    socket.init(Some(token)).await;
    socket
}

/// Reads the `upgrade` and `open` events of a socket made with `RawSocket::start`.
async fn skip_handshake(socket: &mut RawSocket) {
    for expected in ["upgrade", "open"] {
        let event = socket.event().await;
        assert_eq!(event["event"], expected, "{event}");
    }
}

// ---------------------------------------------------------------------------
// Subprotocols
// ---------------------------------------------------------------------------

both_backends!(subprotocol_negotiation);
async fn subprotocol_negotiation(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (offered, selected) in [
        (vec!["graphql-transport-ws"], "graphql-transport-ws"),
        (vec!["foo", "graphql-transport-ws"], "graphql-transport-ws"),
        (vec!["graphql-ws"], "graphql-ws"),
    ] {
        let mut socket = RawSocket::start(&server, &offered);
        let upgrade = socket.event().await;
        assert_eq!(upgrade["event"], "upgrade", "{upgrade}");
        assert_eq!(upgrade["status"], 101, "{upgrade}");
        assert_eq!(
            upgrade["protocol"], selected,
            "offering {offered:?}: {upgrade}"
        );
        let open = socket.event().await;
        assert_eq!(open["event"], "open", "{open}");
        assert_eq!(open["protocol"], selected, "{open}");
        socket.shutdown().await;
    }
}

both_backends!(no_acceptable_subprotocol_closes_4406);
async fn no_acceptable_subprotocol_closes_4406(backend: Backend) {
    let server = TestServer::start(backend).await;

    // Offering none: the socket opens and is closed with 4406.
    let mut socket = RawSocket::start(&server, &[]);
    let upgrade = socket.event().await;
    assert_eq!(upgrade["event"], "upgrade", "{upgrade}");
    assert!(
        upgrade["protocol"].is_null(),
        "nothing was offered: {upgrade}"
    );
    let open = socket.event().await;
    assert_eq!(open["event"], "open", "{open}");
    let reason = socket
        .expect_close_code(4406, "no subprotocol offered")
        .await;
    assert!(!reason.is_empty(), "4406 should say why");

    // Offering only unknown ones: the server selects none. (A conforming client then fails
    // the handshake itself, as `ws` does; if it gets as far as opening, 4406 follows.)
    let mut socket = RawSocket::start(&server, &["foo", "graphql"]);
    let upgrade = socket.event().await;
    assert_eq!(upgrade["event"], "upgrade", "{upgrade}");
    assert!(
        upgrade["protocol"].is_null(),
        "the server must not select an unknown subprotocol: {upgrade}"
    );
    let next = socket.event().await;
    match next["event"].as_str() {
        Some("error") => {
            let message = str_field(&next, "message");
            assert!(message.contains("subprotocol"), "{next}");
        }
        Some("open") => {
            socket
                .expect_close_code(4406, "unknown subprotocols offered")
                .await;
        }
        _ => panic!("unexpected after an unacceptable offer: {next}"),
    }
}

// ---------------------------------------------------------------------------
// connection_init
// ---------------------------------------------------------------------------

both_backends!(no_connection_init_in_time_closes_4408);
async fn no_connection_init_in_time_closes_4408(backend: Backend) {
    let server = server_with(backend, &[("STEPWISE_WS_INIT_TIMEOUT_MS", "500")]).await;
    let acme = team(&server, "Acme").await;

    // Pings are answered but do not count as initialisation. (Frames are queued before the
    // socket opens, so they go out at once however slow this machine is.)
    let mut socket = RawSocket::start(&server, &["graphql-transport-ws"]);
    socket.send(json!({ "type": "ping" }));
    skip_handshake(&mut socket).await;
    socket.expect_type("pong").await;
    let reason = socket.expect_close_code(4408, "no connection_init").await;
    assert!(reason.to_lowercase().contains("timeout"), "{reason:?}");

    // A connection initialised in time stays open past the deadline.
    let mut socket = RawSocket::start(&server, &["graphql-transport-ws"]);
    socket.send(json!({ "type": "connection_init", "payload": { "token": acme.admin_token } }));
    skip_handshake(&mut socket).await;
    socket.expect_type("connection_ack").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket.send(json!({ "type": "ping", "payload": { "still": "here" } }));
    let pong = socket.expect_type("pong").await;
    assert_eq!(pong["payload"], json!({ "still": "here" }));
    socket.shutdown().await;
}

both_backends!(invalid_tokens_close_4403);
async fn invalid_tokens_close_4403(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let claims = jwt_claims(&token);
    let now = now_ts();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 7200);
    expired["nbf"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);

    let cases = [
        ("garbage", json!({ "token": "garbage" })),
        (
            "expired",
            json!({ "token": forge_token(&expired, TEST_JWT_SECRET) }),
        ),
        (
            "wrong secret",
            json!({ "token": forge_token(&claims, "another-secret-that-is-long-enough-0123456") }),
        ),
        (
            "bearer garbage",
            json!({ "Authorization": "Bearer garbage" }),
        ),
    ];
    for (what, payload) in cases {
        let mut socket = RawSocket::open(&server).await;
        socket.send(json!({ "type": "connection_init", "payload": payload }));
        socket.expect_close_code(4403, what).await;
    }

    // Both accepted spellings of a good token work.
    for payload in [
        json!({ "token": token }),
        json!({ "Authorization": format!("Bearer {token}") }),
    ] {
        let mut socket = RawSocket::open(&server).await;
        socket.send(json!({ "type": "connection_init", "payload": payload }));
        socket.expect_type("connection_ack").await;
        socket.shutdown().await;
    }
}

both_backends!(anonymous_connections_get_unauthenticated_operations);
async fn anonymous_connections_get_unauthenticated_operations(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut socket = RawSocket::open(&server).await;
    socket.init(None).await;
    socket.subscribe("runs", &runs_updated_query(), json!({}));
    let message = socket.expect_message().await;
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        Some("next") => message["payload"]["errors"].clone(),
        _ => panic!("expected an error for an anonymous subscription, got {message}"),
    };
    assert_eq!(message["id"], "runs", "{message}");
    assert_eq!(
        errors[0]["extensions"]["code"], "UNAUTHENTICATED",
        "{message}"
    );
    socket.shutdown().await;
}

both_backends!(token_expiry_closes_4403);
async fn token_expiry_closes_4403(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let mut claims = jwt_claims(&token);
    let now = now_ts();
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 3);
    let short_lived = forge_token(&claims, TEST_JWT_SECRET);

    let mut socket = ready_socket(&server, &short_lived).await;
    socket.subscribe("runs", &runs_updated_query(), json!({}));
    // exp is 3 s away; allow for the validation leeway, but not for ever.
    let (code, reason) = socket.expect_close_within(Duration::from_secs(30)).await;
    assert_eq!(code, 4403, "token expiry must close with 4403 ({reason:?})");
}

both_backends!(removed_or_re_roled_members_are_disconnected_4403);
async fn removed_or_re_roled_members_are_disconnected_4403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let mut removed = ready_socket(&server, &acme.member_token).await;
    removed.subscribe("runs", &runs_updated_query(), json!({}));
    let mut admin = ready_socket(&server, &acme.admin_token).await;
    admin.subscribe("runs", &runs_updated_query(), json!({}));
    let invite = server.invite_token(&acme.admin_token).await;
    let (promoted_token, promoted) = server
        .join_company(&invite, "Soon Admin", "soon@acme.test", common::PASSWORD)
        .await;
    let mut promoted_socket = ready_socket(&server, &promoted_token).await;
    promoted_socket.subscribe("runs", &runs_updated_query(), json!({}));

    let change = "mutation($id: ID!) { changeUserRole(userId: $id, role: ADMIN) { id } }";
    let resp = server
        .gql(
            change,
            json!({ "id": promoted["user"]["id"] }),
            Some(&acme.admin_token),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let resp = server
        .gql(
            "mutation($id: ID!) { removeUser(userId: $id) }",
            json!({ "id": acme.member_id }),
            Some(&acme.admin_token),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");

    // Within a few seconds both sockets of the changed members are closed...
    for (socket, who) in [
        (&mut removed, "removed member"),
        (&mut promoted_socket, "promoted member"),
    ] {
        let (code, reason) = socket.expect_close_within(Duration::from_secs(10)).await;
        assert_eq!(code, 4403, "{who}: ({reason:?})");
    }
    // ...and the admin's, whose membership did not change, stays open.
    admin.send(json!({ "type": "ping" }));
    admin.expect_type("pong").await;
}

/// Subscribes `socket` to every run of the company and waits until an event arrives (runs
/// are started until one does), then until the socket is quiet again.
async fn live_runs_subscription(
    server: &TestServer,
    socket: &mut RawSocket,
    admin_token: &str,
    workflow: &str,
) {
    socket.subscribe("runs", &runs_updated_query(), json!({}));
    let mut live = false;
    for _ in 0..20 {
        start_run(server, admin_token, workflow).await;
        if let Some(event) = socket.try_event_within(Duration::from_secs(2)).await {
            assert_eq!(event["json"]["type"], "next", "{event}");
            live = true;
            break;
        }
    }
    assert!(live, "the subscription never delivered a run");
    while socket
        .try_event_within(Duration::from_millis(500))
        .await
        .is_some()
    {}
}

// Issue 19, item 11: the instance that removes or demotes a member used to keep their
// sockets delivering events until the next periodic re-check (~2.5 s). Now the change
// reaches their connections before the mutation answers, and they close with 4403
// before anything else is delivered.
both_backends!(a_removed_or_demoted_member_gets_no_event_after_the_change);
async fn a_removed_or_demoted_member_gets_no_event_after_the_change(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let (workflow, _) = active_workflow(&server, admin, "Watched", 1).await;

    // A second admin, to be demoted.
    let invite = server.invite_token(admin).await;
    let (_, deputy) = server
        .join_company(&invite, "Deputy", "deputy@acme.test", common::PASSWORD)
        .await;
    let promote =
        "mutation($id: ID!, $role: Role!) { changeUserRole(userId: $id, role: $role) { id } }";
    let deputy_id = str_field(&deputy["user"], "id");
    let resp = server
        .gql(
            promote,
            json!({ "id": deputy_id, "role": "ADMIN" }),
            Some(admin),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let (deputy_token, _) = server.login("deputy@acme.test", common::PASSWORD).await;

    let mut member = ready_socket(&server, &acme.member_token).await;
    live_runs_subscription(&server, &mut member, admin, &workflow).await;
    let mut demoted = ready_socket(&server, &deputy_token).await;
    live_runs_subscription(&server, &mut demoted, admin, &workflow).await;
    // `member` saw the second warm-up's runs too.
    while member
        .try_event_within(Duration::from_millis(500))
        .await
        .is_some()
    {}

    let resp = server
        .gql(
            "mutation($id: ID!) { removeUser(userId: $id) }",
            json!({ "id": acme.member_id }),
            Some(admin),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let resp = server
        .gql(
            promote,
            json!({ "id": deputy_id, "role": "REGULAR" }),
            Some(admin),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    // An event every subscriber of the company would get.
    start_run(&server, admin, &workflow).await;

    for (socket, who) in [
        (&mut member, "removed member"),
        (&mut demoted, "demoted admin"),
    ] {
        let event = socket.event().await;
        assert_eq!(
            (event["event"].as_str(), event["code"].as_u64()),
            (Some("close"), Some(4403)),
            "{who}: the next thing after the change must be the close, got {event}"
        );
    }
}

both_backends!(connections_per_user_are_limited);
async fn connections_per_user_are_limited(backend: Backend) {
    let server = server_with(backend, &[("STEPWISE_WS_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let acme = team(&server, "Acme").await;
    let mut first = ready_socket(&server, &acme.admin_token).await;
    let _second = ready_socket(&server, &acme.admin_token).await;

    // A third connection of the same user is refused at connection_init...
    let mut third = RawSocket::open(&server).await;
    third.send(json!({ "type": "connection_init", "payload": { "token": acme.admin_token } }));
    third
        .expect_close_code(1013, "a third connection of one user")
        .await;
    // ...while another user of the company is unaffected...
    let mut member = ready_socket(&server, &acme.member_token).await;
    member.send(json!({ "type": "ping" }));
    member.expect_type("pong").await;
    // ...and closing one frees its slot.
    first.close(1000, "done");
    first.expect_close().await;
    let mut again = RawSocket::open(&server).await;
    let mut accepted = false;
    for _ in 0..20 {
        again.send(json!({ "type": "connection_init", "payload": { "token": acme.admin_token } }));
        let event = again.event().await;
        if event["event"] == "message" && event["json"]["type"] == "connection_ack" {
            accepted = true;
            break;
        }
        // The slot is released when the server has finished with the closed socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = RawSocket::open(&server).await;
    }
    assert!(accepted, "a freed slot can be used again");
}

both_backends!(subscribe_before_ack_closes_4401);
async fn subscribe_before_ack_closes_4401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut socket = RawSocket::open(&server).await;
    socket.subscribe("1", "{ __typename }", json!({}));
    socket
        .expect_close_code(4401, "subscribe before connection_init")
        .await;
}

both_backends!(second_connection_init_closes_4429);
async fn second_connection_init_closes_4429(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let mut socket = ready_socket(&server, &token).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": token } }));
    socket
        .expect_close_code(4429, "second connection_init")
        .await;
}

both_backends!(duplicate_operation_id_closes_4409);
async fn duplicate_operation_id_closes_4409(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let mut socket = ready_socket(&server, &token).await;

    // An id may be reused once its operation has completed.
    for _ in 0..2 {
        socket.subscribe("q", "{ me { email } }", json!({}));
        let next = socket.expect_type("next").await;
        assert_eq!(next["id"], "q");
        assert_eq!(
            next["payload"]["data"]["me"]["email"], "admin@acme.test",
            "{next}"
        );
        let complete = socket.expect_type("complete").await;
        assert_eq!(complete["id"], "q");
    }

    // Not while it is still running.
    socket.subscribe("dup", &runs_updated_query(), json!({}));
    socket.subscribe("dup", &runs_updated_query(), json!({}));
    let reason = socket.expect_close_code(4409, "duplicate id").await;
    assert_eq!(reason, "Subscriber for dup already exists");
}

// Issue 12, item 7: an operation over the per-connection limit was answered with an error
// that had no `extensions.code`, unlike every other refusal a client can branch on. It is
// RATE_LIMITED with a `retryAfter`, as the anonymous limit and the HTTP side answer, and
// the connection stays usable.
both_backends!(operations_over_the_connection_limit_are_rate_limited);
async fn operations_over_the_connection_limit_are_rate_limited(backend: Backend) {
    let server = server_with(backend, &[("STEPWISE_WS_MAX_OPERATIONS", "2")]).await;
    let acme = team(&server, "Acme").await;
    let mut socket = ready_socket(&server, &acme.admin_token).await;
    // Subscriptions stay running, so they hold their places.
    socket.subscribe("a", &runs_updated_query(), json!({}));
    socket.subscribe("b", &runs_updated_query(), json!({}));
    socket.subscribe("c", "{ me { email } }", json!({}));
    let error = socket.expect_type("error").await;
    assert_eq!(error["id"], "c", "{error}");
    let refusal = &error["payload"][0];
    assert_eq!(refusal["extensions"]["code"], "RATE_LIMITED", "{error}");
    assert!(
        refusal["extensions"]["retryAfter"].as_u64() >= Some(1),
        "{error}"
    );
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 2 operations")),
        "{error}"
    );

    // Stopping one makes room again.
    socket.send(json!({ "type": "complete", "id": "a" }));
    socket.subscribe("d", "{ me { email } }", json!({}));
    let next = socket.expect_type("next").await;
    assert_eq!(next["id"], "d", "{next}");
    assert_eq!(
        next["payload"]["data"]["me"]["email"], "admin@acme.test",
        "{next}"
    );
    assert_eq!(socket.expect_type("complete").await["id"], "d");
    socket.shutdown().await;
}

// ---------------------------------------------------------------------------
// Invalid messages
// ---------------------------------------------------------------------------

both_backends!(invalid_messages_close_4400);
async fn invalid_messages_close_4400(backend: Backend) {
    let (server, token) = server_and_token(backend).await;

    // Not JSON, before and after initialisation.
    let mut socket = RawSocket::open(&server).await;
    socket.send_text("this is not json");
    socket.expect_close_code(4400, "not JSON before init").await;
    let mut socket = ready_socket(&server, &token).await;
    socket.send_text("{\"type\": \"subscribe\", ");
    socket.expect_close_code(4400, "truncated JSON").await;

    let invalid: [(&str, Value); 5] = [
        ("unknown type", json!({ "type": "nonsense" })),
        ("no type", json!({ "id": "1" })),
        (
            "subscribe without id",
            json!({ "type": "subscribe", "payload": { "query": "{ __typename }" } }),
        ),
        (
            "subscribe without payload",
            json!({ "type": "subscribe", "id": "1" }),
        ),
        (
            "a legacy message on graphql-transport-ws",
            json!({ "type": "start", "id": "1", "payload": { "query": "{ __typename }" } }),
        ),
    ];
    for (what, frame) in invalid {
        let mut socket = ready_socket(&server, &token).await;
        socket.send(frame);
        socket.expect_close_code(4400, what).await;
    }

    let mut socket = ready_socket(&server, &token).await;
    socket.send_binary(br#"{"type":"ping"}"#);
    socket.expect_close_code(4400, "binary frame").await;
}

both_backends!(oversized_message_closes_the_socket);
async fn oversized_message_closes_the_socket(backend: Backend) {
    let server = server_with(backend, &[("STEPWISE_WS_MAX_MESSAGE_BYTES", "4096")]).await;
    let acme = team(&server, "Acme").await;
    let mut socket = ready_socket(&server, &acme.admin_token).await;

    // Under the limit: fine.
    let small = "x".repeat(2000);
    socket.send(json!({ "type": "ping", "payload": { "pad": small } }));
    let pong = socket.expect_type("pong").await;
    assert_eq!(pong["payload"]["pad"], small.as_str());

    // Over it: the connection is closed (1009, message too big).
    let big = "x".repeat(10_000);
    socket.send(json!({ "type": "ping", "payload": { "pad": big } }));
    let (code, reason) = socket.expect_close().await;
    assert_eq!(
        code, 1009,
        "an oversized message should close with 1009 ({reason:?})"
    );
}

// ---------------------------------------------------------------------------
// Ping, errors, completion
// ---------------------------------------------------------------------------

both_backends!(ping_is_answered_with_pong_echoing_the_payload);
async fn ping_is_answered_with_pong_echoing_the_payload(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let mut socket = RawSocket::open(&server).await;

    // Before connection_init.
    socket.send(json!({ "type": "ping", "payload": { "n": 1, "nested": [true, null] } }));
    let pong = socket.expect_type("pong").await;
    assert_eq!(pong["payload"], json!({ "n": 1, "nested": [true, null] }));

    socket.init(Some(token.as_str())).await;

    // After, without a payload: a bare pong.
    socket.send(json!({ "type": "ping" }));
    let pong = socket.expect_type("pong").await;
    assert!(pong["payload"].is_null(), "nothing to echo: {pong}");

    // A client pong is accepted silently.
    socket.send(json!({ "type": "pong", "payload": { "unsolicited": true } }));
    socket.send(json!({ "type": "ping", "payload": { "n": 2 } }));
    let pong = socket.expect_type("pong").await;
    assert_eq!(pong["payload"], json!({ "n": 2 }));
    socket.shutdown().await;
}

both_backends!(validation_failure_sends_one_error_and_no_complete);
async fn validation_failure_sends_one_error_and_no_complete(backend: Backend) {
    let (server, token) = server_and_token(backend).await;
    let mut socket = ready_socket(&server, &token).await;
    let aliases = format!(
        "subscription {{ runsUpdated {{ {} }} }}",
        (0..60)
            .map(|i| format!("a{i}: run {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Deeper than the default depth limit (16).
    let too_deep = format!(
        "subscription {{ runsUpdated {{ run {{ {} id {} }} }} }}",
        "workflow { steps { ".repeat(9),
        "} } ".repeat(9)
    );
    for (id, query) in [
        ("unknown-field", "subscription { noSuchThing }"),
        ("syntax", "subscription {"),
        (
            "missing-argument",
            "subscription { runUpdated { run { id } } }",
        ),
        ("too-many-aliases", aliases.as_str()),
        ("too-deep", too_deep.as_str()),
    ] {
        socket.subscribe(id, query, json!({}));
        let error = socket.expect_type("error").await;
        assert_eq!(error["id"], id, "{error}");
        let errors = error["payload"]
            .as_array()
            .unwrap_or_else(|| panic!("`error` payload must be an array of errors: {error}"));
        assert!(!errors.is_empty(), "{error}");
        assert!(errors.iter().all(|e| e["message"].is_string()), "{error}");
        assert!(
            errors
                .iter()
                .all(|e| e["extensions"]["code"] == "BAD_USER_INPUT"),
            "request errors carry a code over WebSocket too: {error}"
        );
        // No `complete` follows: the next thing on the wire answers our ping.
        tokio::time::sleep(Duration::from_millis(300)).await;
        socket.send(json!({ "type": "ping", "payload": { "after": id } }));
        let pong = socket.expect_message().await;
        assert_eq!(
            pong["type"], "pong",
            "no `complete` may follow an `error`: {pong}"
        );
    }
    socket.shutdown().await;
}

both_backends!(queries_and_mutations_over_websocket_send_next_then_complete);
async fn queries_and_mutations_over_websocket_send_next_then_complete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, _) = active_workflow(&server, &acme.admin_token, "Over WS", 2).await;
    let mut socket = ready_socket(&server, &acme.member_token).await;

    socket.subscribe("me", "query { me { email role } }", json!({}));
    let next = socket.expect_type("next").await;
    assert_eq!(next["id"], "me");
    assert_eq!(
        next["payload"]["data"]["me"]["email"], "member@acme.test",
        "{next}"
    );
    assert_eq!(socket.expect_type("complete").await["id"], "me");

    socket.subscribe(
        "start",
        "mutation($id: ID!) { startRun(workflowId: $id) { id status stepsTotal } }",
        json!({ "id": workflow }),
    );
    let next = socket.expect_type("next").await;
    let run = &next["payload"]["data"]["startRun"];
    assert_eq!(run["status"], "RUNNING", "{next}");
    assert_eq!(run["stepsTotal"], 2, "{next}");
    assert_eq!(socket.expect_type("complete").await["id"], "start");
    let stored = common::runs::get_run(&server, &acme.member_token, &str_field(run, "id")).await;
    assert_eq!(stored["status"], "RUNNING");

    // A field error in a query is a `next` with errors, then `complete`.
    socket.subscribe(
        "missing",
        "query($id: ID!) { run(id: $id) { id } }",
        json!({ "id": common::fixtures::new_id() }),
    );
    let next = socket.expect_type("next").await;
    assert_eq!(
        next["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{next}"
    );
    assert_eq!(socket.expect_type("complete").await["id"], "missing");
    socket.shutdown().await;
}

both_backends!(client_complete_stops_a_subscription);
async fn client_complete_stops_a_subscription(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Stoppable", 2).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");

    let mut socket = ready_socket(&server, token).await;
    socket.subscribe("run", &run_updated_query(), json!({ "runId": run }));
    let snapshot = socket.expect_type("next").await;
    assert_eq!(
        snapshot["payload"]["data"]["runUpdated"]["run"]["id"],
        run.as_str()
    );
    let report = report_step(&server, token, &run, &steps[0], outcome("SUCCESS")).await;
    let live = socket.expect_type("next").await;
    assert_eq!(
        live["payload"]["data"]["runUpdated"]["healthLog"]["id"],
        report["healthLog"]["id"]
    );

    socket.send(json!({ "type": "complete", "id": "run" }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    report_step(&server, token, &run, &steps[1], outcome("SUCCESS")).await;
    socket.expect_quiet().await;

    // The id is free again.
    socket.subscribe("run", &run_updated_query(), json!({ "runId": run }));
    let again = socket.expect_type("next").await;
    assert_eq!(
        again["payload"]["data"]["runUpdated"]["run"]["stepsCompleted"], 2,
        "{again}"
    );
    socket.shutdown().await;
}

// ---------------------------------------------------------------------------
// Legacy protocol
// ---------------------------------------------------------------------------

both_backends!(legacy_graphql_ws_protocol);
async fn legacy_graphql_ws_protocol(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.admin_token.as_str();
    let (workflow, steps) = active_workflow(&server, token, "Legacy", 2).await;
    let run = str_field(&start_run(&server, token, &workflow).await, "id");

    let mut socket = RawSocket::open_with(&server, &["graphql-ws"]).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": token } }));
    let ack = socket.expect_message_skipping_ka().await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");

    socket.send(json!({
        "type": "start",
        "id": "7",
        "payload": { "query": run_updated_query(), "variables": { "runId": run } },
    }));
    let data = socket.expect_message_skipping_ka().await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["id"], "7");
    assert_eq!(
        data["payload"]["data"]["runUpdated"]["run"]["status"], "RUNNING",
        "{data}"
    );

    let report = report_step(&server, token, &run, &steps[0], outcome("SUCCESS")).await;
    let data = socket.expect_message_skipping_ka().await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(
        data["payload"]["data"]["runUpdated"]["healthLog"]["id"],
        report["healthLog"]["id"]
    );

    // stop: no more data for that id (a `complete` for it is acceptable).
    socket.send(json!({ "type": "stop", "id": "7" }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    report_step(&server, token, &run, &steps[1], outcome("SUCCESS")).await;
    let deadline = std::time::Instant::now() + common::realtime::QUIET;
    while std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(event) = socket.try_event_within(left).await else {
            break;
        };
        let kind = event["json"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            event["event"] == "message" && (kind == "ka" || kind == "complete"),
            "nothing but keep-alives (or a `complete`) may follow `stop`: {event}"
        );
    }

    // A query: data, then complete.
    socket.send(json!({ "type": "start", "id": "8", "payload": { "query": "{ me { email } }" } }));
    let data = socket.expect_message_skipping_ka().await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["id"], "8");
    assert_eq!(
        data["payload"]["data"]["me"]["email"], "admin@acme.test",
        "{data}"
    );
    let complete = socket.expect_message_skipping_ka().await;
    assert_eq!(complete["type"], "complete", "{complete}");
    assert_eq!(complete["id"], "8");

    // connection_terminate ends the connection.
    socket.send(json!({ "type": "connection_terminate" }));
    let (code, reason) = socket.expect_close().await;
    assert!(
        code == 1000 || code == 1005,
        "connection_terminate: close {code} {reason:?}"
    );
}
