//! API keys and the EXECUTOR role (issue 13, item 1): admins create, list and revoke keys;
//! an executor key runs the executor loop over HTTP and WebSocket and may do nothing else
//! (deny by default, proven over the whole schema by introspection); a revoked or expired
//! key stops working at once here and within seconds on another instance, and its
//! WebSockets are closed with 4403.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::realtime::RawSocket;
use common::runs::{active_workflow, poll_until};
use common::{Backend, TestServer, assert_error_code, error_code, error_message, str_field};
use serde_json::{Value, json};
use stepwise::graphql::executor_access::EXECUTOR_FIELDS;

const CREATE: &str = "mutation($name: String!, $expires: DateTime) { \
     createApiKey(name: $name, role: EXECUTOR, expiresAt: $expires) { secret \
       apiKey { id name role prefix createdAt expiresAt revokedAt lastUsedAt active createdBy { id } } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt active } }";
const LIST: &str = "query($all: Boolean) { apiKeys(includeRevoked: $all) { id name prefix revokedAt lastUsedAt active } }";

/// Creates an executor key as `admin`; returns (id, secret).
async fn create_key(server: &TestServer, admin: &str, name: &str) -> (String, String) {
    let data = ok(server, admin, CREATE, json!({ "name": name })).await;
    let created = &data["createApiKey"];
    (
        str_field(&created["apiKey"], "id"),
        str_field(created, "secret"),
    )
}

/// What an executor reads and reports: no member, no company, nothing of the health stats.
const RUN: &str = "id status stepsTotal stepsCompleted stepsFailed stepsHealed \
     currentStep { id } error startedAt finishedAt createdAt updatedAt workflow { id name }";

both_backends!(admins_create_list_and_revoke_keys);
async fn admins_create_list_and_revoke_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();

    let data = ok(&server, admin, CREATE, json!({ "name": "  runner-1  " })).await;
    let created = &data["createApiKey"];
    let secret = str_field(created, "secret");
    let key = &created["apiKey"];
    assert_eq!(key["name"], "runner-1");
    assert_eq!(key["role"], "EXECUTOR");
    assert_eq!(key["active"], true);
    assert!(
        key["lastUsedAt"].is_null() && key["revokedAt"].is_null() && key["expiresAt"].is_null()
    );
    assert_eq!(key["createdBy"]["id"], acme.admin_id.as_str());
    let prefix = str_field(key, "prefix");
    assert!(
        secret.starts_with("swk_") && secret.starts_with(&prefix),
        "{secret} / {prefix}"
    );
    assert_eq!(prefix.len(), 12);
    // Shown once: the listing has no secret, the database only its hash.
    let listed = ok(&server, admin, LIST, json!({})).await;
    assert!(!listed.to_string().contains(&secret), "{listed:#}");
    let stored = server
        .sql_strings(&format!(
            "SELECT secret_hash AS v FROM api_keys WHERE id = {}",
            lit(&str_field(key, "id"))
        ))
        .await;
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0].contains(&secret[4..]),
        "the secret is stored only hashed"
    );
    assert_eq!(stored[0].len(), 64);

    // Bad input names its field; members may not manage keys.
    let resp = server
        .gql(CREATE, json!({ "name": "   " }), Some(admin))
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "empty name");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "name");
    let resp = server
        .gql(
            CREATE,
            json!({ "name": "old", "expires": "2001-01-01T00:00:00Z" }),
            Some(admin),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "expiry in the past");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "expiresAt");
    for query in [LIST, CREATE, REVOKE] {
        let resp = server
            .gql(
                query,
                json!({ "name": "x", "id": str_field(key, "id") }),
                Some(&acme.member_token),
            )
            .await;
        assert_error_code(&resp, "FORBIDDEN", &format!("a member: {query}"));
    }

    // The key works; using it sets lastUsedAt (to the minute, not per request).
    let me = server
        .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
        .await;
    assert!(me["errors"].is_null(), "{me:#}");
    let used = poll_until(
        Duration::from_secs(10),
        "lastUsedAt to be recorded",
        async || {
            let listed = ok(&server, admin, LIST, json!({})).await;
            let at = listed["apiKeys"][0]["lastUsedAt"].clone();
            (!at.is_null()).then_some(at)
        },
    )
    .await;
    for _ in 0..5 {
        server
            .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    server
        .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = ok(&server, admin, LIST, json!({})).await;
    assert_eq!(
        listed["apiKeys"][0]["lastUsedAt"], used,
        "not rewritten within a minute"
    );

    // Revoked: refused at once, listed only with includeRevoked; revoking again is a no-op.
    let id = str_field(key, "id");
    let revoked = ok(&server, admin, REVOKE, json!({ "id": id })).await;
    assert_eq!(revoked["revokeApiKey"]["active"], false);
    let first_revocation = revoked["revokeApiKey"]["revokedAt"].clone();
    let resp = server
        .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
        .await;
    assert_error_code(
        &resp,
        "UNAUTHENTICATED",
        "a revoked key, at once on this instance",
    );
    let again = ok(&server, admin, REVOKE, json!({ "id": id })).await;
    assert_eq!(again["revokeApiKey"]["revokedAt"], first_revocation);
    assert_eq!(
        ok(&server, admin, LIST, json!({})).await["apiKeys"],
        json!([])
    );
    let all = ok(&server, admin, LIST, json!({ "all": true })).await;
    assert_eq!(all["apiKeys"][0]["id"], id.as_str());
    let resp = server
        .gql(REVOKE, json!({ "id": new_id() }), Some(admin))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "revoking an unknown key");

    // A forged key (right shape, wrong check tag) and garbage are refused alike.
    let mut forged = secret.clone();
    forged.replace_range(20..21, if &secret[20..21] == "A" { "B" } else { "A" });
    for bad in [forged.as_str(), "swk_nope", "swk_"] {
        let resp = server
            .gql("{ workflows { totalCount } }", json!({}), Some(bad))
            .await;
        assert_error_code(&resp, "UNAUTHENTICATED", bad);
    }
}

both_backends!(an_expiring_key_stops_at_its_expiry);
async fn an_expiring_key_stops_at_its_expiry(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let data = ok(
        &server,
        &acme.admin_token,
        CREATE,
        json!({ "name": "short", "expires": expires.to_rfc3339() }),
    )
    .await;
    let secret = str_field(&data["createApiKey"], "secret");
    let resp = server
        .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let mut socket = RawSocket::open(&server).await;
    socket.init(Some(&secret)).await;
    poll_until(Duration::from_secs(15), "the key to expire", async || {
        let resp = server
            .gql("{ workflows { totalCount } }", json!({}), Some(&secret))
            .await;
        (error_code(&resp).as_deref() == Some("UNAUTHENTICATED")).then_some(())
    })
    .await;
    let (code, reason) = socket.expect_close_within(Duration::from_secs(10)).await;
    assert_eq!(
        code, 4403,
        "an expired key's socket closes 4403 ({reason:?})"
    );
}

both_backends!(an_executor_key_runs_the_executor_loop_over_http);
async fn an_executor_key_runs_the_executor_loop_over_http(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Checkout", 2).await;
    let (_, key) = create_key(&server, &acme.admin_token, "runner").await;

    // Read what to run.
    let data = ok(
        &server,
        &key,
        "query($id: ID!) { workflows(first: 10) { totalCount nodes { id name status stepCount } } \
           workflow(id: $id) { id name steps { id stepNumber actionType selectors fieldLabel \
             instruction screenshot { id url } healedSelectors } screenshots { id } } }",
        json!({ "id": workflow }),
    )
    .await;
    assert_eq!(data["workflows"]["totalCount"], 1);
    assert_eq!(data["workflow"]["steps"].as_array().map(Vec::len), Some(2));

    // Upload a screenshot for a step, start, report both steps, finish.
    let client = reqwest::Client::new();
    let upload = multipart_request(
        &server,
        &client,
        Some(&key),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id width } }",
        json!({ "w": workflow, "s": steps[0] }),
        png(4, 3, 7),
    )
    .await;
    assert!(upload["errors"].is_null(), "{upload:#}");
    assert_eq!(upload["data"]["uploadScreenshot"]["width"], 4);
    let started = ok(
        &server,
        &key,
        &format!("mutation($id: ID!) {{ startRun(workflowId: $id) {{ {RUN} }} }}"),
        json!({ "id": workflow }),
    )
    .await;
    let run = str_field(&started["startRun"], "id");
    assert_eq!(started["startRun"]["status"], "RUNNING");
    for step in &steps {
        let report = ok(
            &server,
            &key,
            &format!(
                "mutation($run: ID!, $step: ID!) {{ reportStep(runId: $run, stepId: $step, \
                   outcome: {{ status: SUCCESS }}) {{ duplicate run {{ {RUN} }} healthLog {{ id status step {{ id }} }} }} }}"
            ),
            json!({ "run": run, "step": step }),
        )
        .await;
        assert_eq!(
            report["reportStep"]["healthLog"]["step"]["id"],
            step.as_str()
        );
    }
    let finished = ok(
        &server,
        &key,
        &format!("mutation($id: ID!) {{ finishRun(runId: $id, status: SUCCEEDED) {{ {RUN} }} }}"),
        json!({ "id": run }),
    )
    .await;
    assert_eq!(finished["finishRun"]["status"], "SUCCEEDED");
    assert_eq!(finished["finishRun"]["stepsCompleted"], 2);

    // The run has no member as its starter; members see it like any run.
    let seen = ok(
        &server,
        &acme.member_token,
        "query($id: ID!) { run(id: $id) { status startedBy { id } } }",
        json!({ "id": run }),
    )
    .await;
    assert_eq!(
        seen["run"],
        json!({ "status": "SUCCEEDED", "startedBy": null })
    );
}

/// One operation over a raw graphql-transport-ws socket: its first `next` payload.
async fn ws_operation(socket: &mut RawSocket, id: &str, query: &str, variables: Value) -> Value {
    socket.subscribe(id, query, variables);
    let message = socket.expect_message().await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], id, "{message}");
    message["payload"].clone()
}

both_backends!(an_executor_key_runs_the_executor_loop_over_websocket);
async fn an_executor_key_runs_the_executor_loop_over_websocket(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Checkout", 2).await;
    let (_, key) = create_key(&server, &acme.admin_token, "ws runner").await;

    // The key in connection_init, as {"Authorization": "Bearer ..."}.
    let mut socket = RawSocket::open(&server).await;
    socket.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } }));
    socket.expect_type("connection_ack").await;
    let read = ws_operation(
        &mut socket,
        "read",
        "query($id: ID!) { workflow(id: $id) { id steps { id } } }",
        json!({ "id": workflow }),
    )
    .await;
    assert!(read["errors"].is_null(), "{read}");
    socket.expect_type("complete").await;
    let started = ws_operation(
        &mut socket,
        "start",
        &format!("mutation($id: ID!) {{ startRun(workflowId: $id) {{ {RUN} }} }}"),
        json!({ "id": workflow }),
    )
    .await;
    assert!(started["errors"].is_null(), "{started}");
    socket.expect_type("complete").await;
    let run = str_field(&started["data"]["startRun"], "id");

    // Watch the run on a second socket ({"token": ...}) while reporting on the first.
    let mut watcher = RawSocket::open(&server).await;
    watcher.init(Some(&key)).await;
    watcher.subscribe(
        "watch",
        &format!("subscription($id: ID!) {{ runUpdated(runId: $id) {{ run {{ {RUN} }} healthLog {{ id status }} }} }}"),
        json!({ "id": run }),
    );
    let first = watcher.expect_message().await;
    assert_eq!(
        first["payload"]["data"]["runUpdated"]["run"]["status"], "RUNNING",
        "{first}"
    );
    for (i, step) in steps.iter().enumerate() {
        let report = ws_operation(
            &mut socket,
            &format!("report{i}"),
            "mutation($run: ID!, $step: ID!) { reportStep(runId: $run, stepId: $step, \
               outcome: { status: SUCCESS }) { duplicate healthLog { id } } }",
            json!({ "run": run, "step": step }),
        )
        .await;
        assert!(report["errors"].is_null(), "{report}");
        socket.expect_type("complete").await;
        let update = watcher.expect_message().await;
        assert_eq!(
            update["payload"]["data"]["runUpdated"]["run"]["stepsCompleted"],
            i + 1,
            "{update}"
        );
    }
    let finished = ws_operation(
        &mut socket,
        "finish",
        "mutation($id: ID!) { finishRun(runId: $id, status: SUCCEEDED) { status } }",
        json!({ "id": run }),
    )
    .await;
    assert_eq!(
        finished["data"]["finishRun"]["status"], "SUCCEEDED",
        "{finished}"
    );
    socket.expect_type("complete").await;
    let last = watcher.expect_message().await;
    assert_eq!(
        last["payload"]["data"]["runUpdated"]["run"]["status"], "SUCCEEDED",
        "{last}"
    );

    // Over WebSocket too, anything else is FORBIDDEN, and nothing of it runs.
    socket.subscribe("members", "{ users { id email } }", json!({}));
    let refused = socket.expect_message().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    socket.subscribe(
        "notes",
        "subscription { notificationCreated { id } }",
        json!({}),
    );
    let refused = socket.expect_message().await;
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    socket.shutdown().await;
    watcher.shutdown().await;
}

/// Root fields an executor may use, as reviewed here (the lead adds `enqueueRun`,
/// `claimRun`, `heartbeatRun`, `retryRun`, `runQueued` with the run queue).
const EXPECTED_EXECUTOR_ROOTS: &[&str] = &[
    "Query.workflows",
    "Query.workflow",
    "Query.step",
    "Query.screenshot",
    "Query.run",
    "Mutation.startRun",
    "Mutation.reportStep",
    "Mutation.finishRun",
    "Mutation.uploadScreenshot",
    "Subscription.runUpdated",
    "Query.runs",
    "Mutation.enqueueRun",
    "Mutation.claimRun",
    "Mutation.heartbeatRun",
    "Mutation.pauseRun",
    "Mutation.resumeRun",
    "Mutation.retryRun",
    "Mutation.suggestStepText",
    "Subscription.runQueued",
];

/// Types an executor must never read a field of.
const NEVER_FOR_EXECUTORS: &[&str] = &[
    "User",
    "Company",
    "AuthPayload",
    "ApiKey",
    "CreatedApiKey",
    "Session",
    "UserSettings",
    "AuditEntry",
    "Notification",
    "Schedule",
    "Webhook",
    "WebhookWithSecret",
];

// The schema is the same on both backends; one is enough for the walk, and it runs as an
// executor against a real server (the refusal is the server's, not the test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_is_forbidden_to_executors_unless_allowed() {
    let server = TestServer::start(Backend::Sqlite).await;
    let acme = team(&server, "Acme").await;
    let (_, key) = create_key(&server, &acme.admin_token, "probe").await;
    let data = ok(
        &server,
        &acme.admin_token,
        "{ __schema { queryType { name } mutationType { name } subscriptionType { name } \
             types { name kind fields(includeDeprecated: true) { name type { ...T } } } } } \
         fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }",
        json!({}),
    )
    .await;
    let schema = &data["__schema"];
    let named = |t: &Value| {
        let mut t = t;
        while t["name"].is_null() && !t["ofType"].is_null() {
            t = &t["ofType"];
        }
        (
            t["kind"].as_str().unwrap_or_default().to_owned(),
            t["name"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let mut fields: Vec<(String, String, bool)> = Vec::new();
    for t in schema["types"].as_array().unwrap() {
        let type_name = str_field(t, "name");
        if str_field(t, "kind") != "OBJECT" || type_name.starts_with("__") {
            continue;
        }
        for f in t["fields"].as_array().into_iter().flatten() {
            let (kind, _) = named(&f["type"]);
            let composite = matches!(kind.as_str(), "OBJECT" | "INTERFACE" | "UNION");
            fields.push((type_name.clone(), str_field(f, "name"), composite));
        }
    }
    assert!(
        fields.len() > 150,
        "the walk must see the whole schema: {}",
        fields.len()
    );

    // The allow-list names only fields that exist, none of a forbidden type, and exactly the
    // reviewed root fields.
    let existing: BTreeSet<String> = fields.iter().map(|(t, f, _)| format!("{t}.{f}")).collect();
    let allowed: BTreeSet<String> = EXECUTOR_FIELDS.iter().map(|s| (*s).to_owned()).collect();
    let unknown: Vec<&String> = allowed.difference(&existing).collect();
    assert!(
        unknown.is_empty(),
        "EXECUTOR_FIELDS names fields the schema lacks: {unknown:?}"
    );
    for entry in &allowed {
        let (type_name, _) = entry.split_once('.').unwrap();
        assert!(
            !NEVER_FOR_EXECUTORS.contains(&type_name),
            "{entry} must never be open to executors"
        );
    }
    let roots: BTreeSet<&str> = allowed
        .iter()
        .map(String::as_str)
        .filter(|e| {
            e.starts_with("Query.") || e.starts_with("Mutation.") || e.starts_with("Subscription.")
        })
        .collect();
    let expected: BTreeSet<&str> = EXPECTED_EXECUTOR_ROOTS.iter().copied().collect();
    assert_eq!(
        roots, expected,
        "the executor's root fields changed: review and update both lists"
    );

    // Every field, tried as the executor: a fragment on its type selecting it. The server
    // checks every fragment against its type before validation, so a denied field is
    // FORBIDDEN naming it; an allowed one gets past the check (and fails validation, as the
    // fragment is unused).
    let mut slipped = Vec::new();
    let mut wrongly_denied = Vec::new();
    for (type_name, field, composite) in &fields {
        let selection = if *composite {
            format!("{field} {{ __typename }}")
        } else {
            field.clone()
        };
        let document =
            format!("query {{ __typename }} fragment Probe on {type_name} {{ {selection} }}");
        let resp = server.gql(&document, json!({}), Some(&key)).await;
        let key_name = format!("{type_name}.{field}");
        let forbidden = error_code(&resp).as_deref() == Some("FORBIDDEN");
        if allowed.contains(&key_name) {
            if forbidden {
                wrongly_denied.push(key_name);
            }
        } else if !forbidden || !error_message(&resp).unwrap_or_default().contains(&key_name) {
            slipped.push(format!("{key_name}: {resp}"));
        }
    }
    assert!(
        slipped.is_empty(),
        "fields an EXECUTOR key was not refused:\n  {}",
        slipped.join("\n  ")
    );
    assert!(
        wrongly_denied.is_empty(),
        "allowed fields refused: {wrongly_denied:?}"
    );

    // Plain operations too: denied root fields, a denied field nested under allowed ones,
    // and one hidden in a spread fragment. Nothing runs.
    let workflow = str_field(
        &simple_workflow(&server, &acme.admin_token, "Keep", 1).await,
        "id",
    );
    for (query, denied) in [
        ("{ me { id } }", "Query.me"),
        ("{ users { id email } }", "Query.users"),
        ("{ company { name } }", "Query.company"),
        ("{ apiKeys { id } }", "Query.apiKeys"),
        ("{ auditLog { totalCount } }", "Query.auditLog"),
        ("{ notifications { totalCount } }", "Query.notifications"),
        (
            "mutation { rotateInviteToken { id } }",
            "Mutation.rotateInviteToken",
        ),
        (
            "mutation { createApiKey(name: \"more\") { secret } }",
            "Mutation.createApiKey",
        ),
        (
            "{ workflows { nodes { createdBy { email } } } }",
            "Workflow.createdBy",
        ),
        (
            "{ workflows { nodes { ...W } } } fragment W on Workflow { runs { totalCount } }",
            "Workflow.runs",
        ),
    ] {
        let resp = server.gql(query, json!({}), Some(&key)).await;
        assert_error_code(&resp, "FORBIDDEN", query);
        assert!(resp["data"].is_null(), "{query}: {resp:#}");
        assert!(
            error_message(&resp).unwrap_or_default().contains(denied),
            "{query}: {resp:#}"
        );
    }
    for (query, vars) in [
        (
            "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            json!({ "id": workflow }),
        ),
        (
            "mutation($id: ID!) { updateWorkflow(id: $id, input: { name: \"Hijacked\" }) { id } }",
            json!({ "id": workflow }),
        ),
        (
            "mutation($id: ID!) { removeUser(userId: $id) }",
            json!({ "id": acme.member_id }),
        ),
    ] {
        let resp = server.gql(query, vars, Some(&key)).await;
        assert_error_code(&resp, "FORBIDDEN", query);
    }
    let still = ok(
        &server,
        &acme.admin_token,
        "query($id: ID!) { workflow(id: $id) { name } users { id } }",
        json!({ "id": workflow }),
    )
    .await;
    assert_eq!(still["workflow"]["name"], "Keep");
    assert_eq!(still["users"].as_array().map(Vec::len), Some(2));

    // Introspection describes the public schema and stays open.
    let resp = server
        .gql("{ __schema { queryType { name } } }", json!({}), Some(&key))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
}

// Issue 13: "a revoked key is refused on another instance within seconds and its
// WebSocket is closed". Two instances on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_on_every_instance_and_its_sockets_close_4403() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.start_sibling().await;
    let acme = team(&first, "Acme").await;
    let (id, key) = create_key(&first, &acme.admin_token, "fleet").await;
    let (_, other_key) = create_key(&first, &acme.admin_token, "other").await;
    let probe = "{ workflows { totalCount } }";
    for server in [&first, &second] {
        let resp = server.gql(probe, json!({}), Some(&key)).await;
        assert!(resp["errors"].is_null(), "{resp:#}");
    }
    let mut here = RawSocket::open(&first).await;
    here.init(Some(&key)).await;
    let mut there = RawSocket::open(&second).await;
    there.init(Some(&key)).await;
    let mut bystander = RawSocket::open(&second).await;
    bystander.init(Some(&other_key)).await;

    ok(&first, &acme.admin_token, REVOKE, json!({ "id": id })).await;
    // This instance: at once.
    let resp = first.gql(probe, json!({}), Some(&key)).await;
    assert_error_code(
        &resp,
        "UNAUTHENTICATED",
        "revoked key on the revoking instance",
    );
    let (code, _) = here.expect_close_within(Duration::from_secs(5)).await;
    assert_eq!(code, 4403);
    // The other instance: within seconds.
    poll_until(
        Duration::from_secs(10),
        "the other instance to refuse the key",
        async || {
            let resp = second.gql(probe, json!({}), Some(&key)).await;
            (error_code(&resp).as_deref() == Some("UNAUTHENTICATED")).then_some(())
        },
    )
    .await;
    let (code, reason) = there.expect_close_within(Duration::from_secs(10)).await;
    assert_eq!(
        code, 4403,
        "the other instance closes the key's socket ({reason:?})"
    );
    // Another key is unaffected.
    bystander.send(json!({ "type": "ping" }));
    bystander.expect_type("pong").await;
    let resp = second.gql(probe, json!({}), Some(&other_key)).await;
    assert!(resp["errors"].is_null(), "{resp:#}");
}

both_backends!(an_executor_key_claims_reports_healed_selectors_and_finishes_queued_runs);
/// The whole executor loop of the run queue with an EXECUTOR key: woken by `runQueued` over
/// WebSocket, claim → heartbeat → report with healed selectors → finish with output, over
/// WebSocket for one run and over HTTP for another; the healed selectors land on the step.
async fn an_executor_key_claims_reports_healed_selectors_and_finishes_queued_runs(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Checkout", 2).await;
    let (_, key) = create_key(&server, &acme.admin_token, "queue runner").await;

    // Idle, the executor waits on `runQueued`.
    let mut socket = RawSocket::open(&server).await;
    socket.send(json!({ "type": "connection_init", "payload": { "token": key } }));
    socket.expect_type("connection_ack").await;
    socket.subscribe(
        "wake",
        "subscription($ids: [ID!]) { runQueued(workflowIds: $ids) { id status input } }",
        json!({ "ids": [workflow] }),
    );
    // Nothing is waiting yet; the subscription is live once a queued run comes through.
    let queued = ok(
        &server,
        &acme.member_token,
        "mutation($id: ID!) { enqueueRun(input: { workflowId: $id, input: { order: 7 } }) { id } }",
        json!({ "id": workflow }),
    )
    .await;
    let queued_id = str_field(&queued["enqueueRun"], "id");
    let woken = socket.expect_message().await;
    assert_eq!(woken["type"], "next", "{woken}");
    assert_eq!(woken["id"], "wake", "{woken}");
    assert_eq!(
        woken["payload"]["data"]["runQueued"]["id"],
        queued_id.as_str()
    );
    assert_eq!(
        woken["payload"]["data"]["runQueued"]["input"],
        json!({ "order": 7 })
    );

    // Claim, heartbeat, report (healed), finish: all over the same socket.
    let lease = ws_operation(
        &mut socket,
        "claim",
        "mutation($ids: [ID!]) { claimRun(workflowIds: $ids, leaseSeconds: 60) { leaseId run { id status input } } }",
        json!({ "ids": [workflow] }),
    )
    .await;
    assert!(lease["errors"].is_null(), "{lease}");
    socket.expect_type("complete").await;
    let lease = &lease["data"]["claimRun"];
    assert_eq!(lease["run"]["id"], queued_id.as_str(), "{lease}");
    assert_eq!(lease["run"]["status"], "RUNNING");
    let lease_id = str_field(lease, "leaseId");
    let beat = ws_operation(
        &mut socket,
        "beat",
        "mutation($run: ID!, $lease: ID!) { heartbeatRun(runId: $run, leaseId: $lease, leaseSeconds: 90) { expiresAt } }",
        json!({ "run": queued_id, "lease": lease_id }),
    )
    .await;
    assert!(beat["errors"].is_null(), "{beat}");
    socket.expect_type("complete").await;
    let healed = json!({ "css": "#pay-now", "text": "Pay now" });
    let report = ws_operation(
        &mut socket,
        "report",
        "mutation($run: ID!, $step: ID!, $lease: ID, $outcome: StepOutcomeInput!) { \
           reportStep(runId: $run, stepId: $step, leaseId: $lease, outcome: $outcome) { run { stepsHealed } } }",
        json!({ "run": queued_id, "step": steps[0], "lease": lease_id, "outcome": {
            "status": "HEALED_AI", "healingConfidence": 0.91, "healedSelectors": healed,
            "healingMethod": "vision" } }),
    )
    .await;
    assert!(report["errors"].is_null(), "{report}");
    assert_eq!(report["data"]["reportStep"]["run"]["stepsHealed"], 1);
    socket.expect_type("complete").await;
    let finish = ws_operation(
        &mut socket,
        "finish",
        "mutation($run: ID!, $lease: ID) { finishRun(runId: $run, status: SUCCEEDED, leaseId: $lease, \
           output: { receipt: \"R-7\" }) { status output } }",
        json!({ "run": queued_id, "lease": lease_id }),
    )
    .await;
    assert!(finish["errors"].is_null(), "{finish}");
    assert_eq!(finish["data"]["finishRun"]["status"], "SUCCEEDED");
    assert_eq!(
        finish["data"]["finishRun"]["output"],
        json!({ "receipt": "R-7" })
    );
    socket.expect_type("complete").await;

    // The healed selectors were written back to the step; a member sees them.
    let step = ok(
        &server,
        &acme.member_token,
        "query($id: ID!) { step(id: $id) { healedSelectors healingMethod healingConfidence } }",
        json!({ "id": steps[0] }),
    )
    .await;
    assert_eq!(step["step"]["healedSelectors"], healed, "{step:#}");
    assert_eq!(step["step"]["healingMethod"], "vision");

    // The same loop over HTTP, with the key as a bearer token; the executor enqueues too.
    let enqueued = ok(
        &server,
        &key,
        "mutation($id: ID!) { enqueueRun(input: { workflowId: $id }) { id status } }",
        json!({ "id": workflow }),
    )
    .await;
    let enqueued_id = str_field(&enqueued["enqueueRun"], "id");
    let claimed = ok(
        &server,
        &key,
        "mutation { claimRun(leaseSeconds: 30) { leaseId run { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(claimed["claimRun"]["run"]["id"], enqueued_id.as_str());
    let lease_id = str_field(&claimed["claimRun"], "leaseId");
    for step in &steps {
        ok(
            &server,
            &key,
            "mutation($run: ID!, $step: ID!, $lease: ID) { reportStep(runId: $run, stepId: $step, \
               leaseId: $lease, outcome: { status: SUCCESS }) { duplicate } }",
            json!({ "run": enqueued_id, "step": step, "lease": lease_id }),
        )
        .await;
    }
    let done = ok(
        &server,
        &key,
        "mutation($run: ID!, $lease: ID) { finishRun(runId: $run, status: SUCCEEDED, leaseId: $lease) { status stepsCompleted } }",
        json!({ "run": enqueued_id, "lease": lease_id }),
    )
    .await;
    assert_eq!(done["finishRun"]["status"], "SUCCEEDED");
    assert_eq!(done["finishRun"]["stepsCompleted"], 2);

    // And it still may not manage anything: a schedule, a webhook, a workflow edit.
    for (what, query) in [
        (
            "createSchedule",
            "mutation($id: ID!) { createSchedule(input: { workflowId: $id, cron: \"* * * * *\", timezone: \"UTC\" }) { id } }",
        ),
        (
            "createWebhook",
            "mutation($id: ID!) { createWebhook(workflowId: $id) { secret } }",
        ),
        (
            "archiveWorkflow",
            "mutation($id: ID!) { archiveWorkflow(id: $id) { id } }",
        ),
    ] {
        let refused = server
            .gql(query, json!({ "id": workflow }), Some(&key))
            .await;
        assert_error_code(&refused, "FORBIDDEN", what);
    }
}
