//! Subscribers of the same operation share one resolution per event (issue 16, S1): what
//! each of them receives must be exactly what it would receive alone. Every test speaks
//! graphql-transport-ws frame by frame (tests/realtime/raw.mjs), so it sees the ids and
//! the order of what arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::team;
use common::lifecycle::set_visibility;
use common::realtime::{RawSocket, run_updated_query, runs_updated_query};
use common::runs::{active_workflow, finish_run, outcome, report_step, start_run};
use common::{Backend, TestServer, str_field};
use serde_json::{Value, json};

async fn subscribed(
    server: &TestServer,
    token: &str,
    id: &str,
    query: &str,
    vars: Value,
) -> RawSocket {
    let mut socket = RawSocket::open(server).await;
    socket.init(Some(token)).await;
    socket.subscribe(id, query, vars);
    socket
}

/// The next `next` message of `socket`: its id and the `RunUpdate` it carries.
async fn next_update(socket: &mut RawSocket, field: &str) -> (String, Value) {
    let message = socket.expect_message().await;
    assert_eq!(message["type"], "next", "{message}");
    assert!(message["payload"]["errors"].is_null(), "{message}");
    (
        str_field(&message, "id"),
        message["payload"]["data"][field].clone(),
    )
}

/// Reads `runsUpdated` updates until one of run `last` arrives; returns them all as
/// `(run id, status, stepsCompleted)`, checking each carries operation id `id`.
async fn updates_until(socket: &mut RawSocket, id: &str, last: &str) -> Vec<(String, String, i64)> {
    let mut seen = Vec::new();
    loop {
        let (got_id, update) = next_update(socket, "runsUpdated").await;
        assert_eq!(got_id, id, "each subscriber's messages carry its own id");
        let run = str_field(&update["run"], "id");
        seen.push((
            run.clone(),
            str_field(&update["run"], "status"),
            update["run"]["stepsCompleted"].as_i64().unwrap(),
        ));
        if run == last {
            return seen;
        }
    }
}

/// Starts runs of `workflow` until every socket has heard of one (the server sends no
/// "subscribed" acknowledgement), then waits until they are all quiet.
async fn warm_up(server: &TestServer, token: &str, workflow: &str, sockets: &mut [&mut RawSocket]) {
    let mut live = vec![false; sockets.len()];
    for _ in 0..30 {
        start_run(server, token, workflow).await;
        for (i, socket) in sockets.iter_mut().enumerate() {
            if !live[i]
                && socket
                    .try_event_within(Duration::from_secs(1))
                    .await
                    .is_some()
            {
                live[i] = true;
            }
        }
        if live.iter().all(|l| *l) {
            break;
        }
    }
    assert!(
        live.iter().all(|l| *l),
        "not every subscription became live"
    );
    for socket in sockets.iter_mut() {
        while socket
            .try_event_within(Duration::from_millis(700))
            .await
            .is_some()
        {}
    }
}

fn runs_of(updates: &[(String, String, i64)]) -> Vec<&str> {
    let mut runs: Vec<&str> = updates.iter().map(|(run, _, _)| run.as_str()).collect();
    runs.dedup();
    runs
}

both_backends!(each_company_and_role_sees_only_its_own);
/// Two companies, an admin and a member each, one operation text: each sees its own
/// company's runs and, as a member without a share, no run of a restricted workflow.
async fn each_company_and_role_sees_only_its_own(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let bolt = team(&server, "Bolt").await;
    let (acme_open, _) = active_workflow(&server, &acme.admin_token, "Acme open", 1).await;
    let (acme_secret, _) = active_workflow(&server, &acme.admin_token, "Acme secret", 1).await;
    set_visibility(&server, &acme.admin_token, &acme_secret, "RESTRICTED").await;
    let (bolt_open, _) = active_workflow(&server, &bolt.admin_token, "Bolt open", 1).await;

    let query = runs_updated_query();
    let mut acme_admin = subscribed(&server, &acme.admin_token, "runs", &query, json!({})).await;
    // The same admin again, with another operation id: the same group.
    let mut acme_admin_2 = subscribed(&server, &acme.admin_token, "mine", &query, json!({})).await;
    let mut acme_member = subscribed(&server, &acme.member_token, "runs", &query, json!({})).await;
    let mut bolt_admin = subscribed(&server, &bolt.admin_token, "runs", &query, json!({})).await;
    let mut bolt_member = subscribed(&server, &bolt.member_token, "runs", &query, json!({})).await;
    warm_up(
        &server,
        &acme.admin_token,
        &acme_open,
        &mut [&mut acme_admin, &mut acme_admin_2, &mut acme_member],
    )
    .await;
    warm_up(
        &server,
        &bolt.admin_token,
        &bolt_open,
        &mut [&mut bolt_admin, &mut bolt_member],
    )
    .await;
    let shared_before = server
        .metric("stepwise_subscription_shared_deliveries_total")
        .await;

    let secret = str_field(
        &start_run(&server, &acme.admin_token, &acme_secret).await,
        "id",
    );
    let open = str_field(
        &start_run(&server, &acme.admin_token, &acme_open).await,
        "id",
    );
    let other = str_field(
        &start_run(&server, &bolt.admin_token, &bolt_open).await,
        "id",
    );
    // Markers: the last run each company's subscribers hear of.
    let acme_last = str_field(
        &start_run(&server, &acme.admin_token, &acme_open).await,
        "id",
    );
    let bolt_last = str_field(
        &start_run(&server, &bolt.admin_token, &bolt_open).await,
        "id",
    );

    let admin_seen = updates_until(&mut acme_admin, "runs", &acme_last).await;
    let admin_2_seen = updates_until(&mut acme_admin_2, "mine", &acme_last).await;
    assert_eq!(runs_of(&admin_seen), [secret.as_str(), &open, &acme_last]);
    assert_eq!(
        admin_seen, admin_2_seen,
        "subscribers of one group see the same"
    );
    let member_seen = updates_until(&mut acme_member, "runs", &acme_last).await;
    assert_eq!(
        runs_of(&member_seen),
        [open.as_str(), &acme_last],
        "a member without a share sees no run of the restricted workflow"
    );
    for socket in [&mut bolt_admin, &mut bolt_member] {
        let seen = updates_until(socket, "runs", &bolt_last).await;
        assert_eq!(
            runs_of(&seen),
            [other.as_str(), &bolt_last],
            "only Bolt's runs"
        );
    }
    for socket in [
        &mut acme_admin,
        &mut acme_admin_2,
        &mut acme_member,
        &mut bolt_admin,
        &mut bolt_member,
    ] {
        socket.expect_quiet().await;
    }
    let shared = server
        .metric("stepwise_subscription_shared_deliveries_total")
        .await
        - shared_before;
    assert!(
        shared >= 6.0,
        "the answers were shared ({shared} shared deliveries)"
    );
}

both_backends!(identical_subscribers_get_every_event_in_order_resolved_once);
/// N subscribers of the same operation all get every event, in order, and each event is
/// resolved once for all of them.
async fn identical_subscribers_get_every_event_in_order_resolved_once(backend: Backend) {
    const N: usize = 4;
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Watched", 3).await;
    let vars = json!({ "workflowId": workflow });
    let mut sockets = Vec::new();
    for _ in 0..N {
        sockets.push(
            subscribed(
                &server,
                &acme.admin_token,
                "1",
                &runs_updated_query(),
                vars.clone(),
            )
            .await,
        );
    }
    warm_up(
        &server,
        &acme.admin_token,
        &workflow,
        &mut sockets.iter_mut().collect::<Vec<_>>(),
    )
    .await;
    let resolved_before = server
        .metric("stepwise_subscription_resolutions_total")
        .await;
    let shared_before = server
        .metric("stepwise_subscription_shared_deliveries_total")
        .await;

    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );
    for step in &steps {
        report_step(&server, &acme.admin_token, &run, step, outcome("SUCCESS")).await;
    }
    finish_run(&server, &acme.admin_token, &run, "SUCCEEDED", None).await;
    let last = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );

    let mut first: Option<Vec<(String, String, i64)>> = None;
    for socket in &mut sockets {
        let seen = updates_until(socket, "1", &last).await;
        let progress: Vec<i64> = seen
            .iter()
            .filter(|(r, _, _)| *r == run)
            .map(|(_, _, done)| *done)
            .collect();
        assert!(
            progress.windows(2).all(|w| w[0] <= w[1]) && progress.last() == Some(&3),
            "every step report, in order: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|(r, status, _)| *r == run && status == "SUCCEEDED"),
            "the finish arrives: {seen:?}"
        );
        match &first {
            None => first = Some(seen),
            Some(first) => assert_eq!(first, &seen, "every subscriber gets the same"),
        }
    }
    let events = first.map_or(0, |seen| seen.len()) as f64;
    let resolved = server
        .metric("stepwise_subscription_resolutions_total")
        .await
        - resolved_before;
    let shared = server
        .metric("stepwise_subscription_shared_deliveries_total")
        .await
        - shared_before;
    assert_eq!(
        resolved, events,
        "one resolution per event for {N} subscribers"
    );
    assert_eq!(
        shared,
        events * N as f64,
        "each subscriber got each shared answer"
    );
}

both_backends!(each_subscriber_of_a_run_gets_its_own_snapshot_first);
/// `runUpdated` shared: a subscriber joining later still gets the run as it is first, and
/// then only what is newer.
async fn each_subscriber_of_a_run_gets_its_own_snapshot_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, steps) = active_workflow(&server, &acme.admin_token, "Watched", 3).await;
    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );
    let vars = json!({ "runId": run });
    let mut early = subscribed(
        &server,
        &acme.admin_token,
        "a",
        &run_updated_query(),
        vars.clone(),
    )
    .await;
    let (_, snapshot) = next_update(&mut early, "runUpdated").await;
    assert_eq!(snapshot["run"]["stepsCompleted"], 0, "{snapshot}");
    report_step(
        &server,
        &acme.admin_token,
        &run,
        &steps[0],
        outcome("SUCCESS"),
    )
    .await;
    let (_, update) = next_update(&mut early, "runUpdated").await;
    assert_eq!(update["run"]["stepsCompleted"], 1, "{update}");

    let mut late = subscribed(&server, &acme.admin_token, "b", &run_updated_query(), vars).await;
    let (id, snapshot) = next_update(&mut late, "runUpdated").await;
    assert_eq!(id, "b");
    assert_eq!(
        snapshot["run"]["stepsCompleted"], 1,
        "the late subscriber's own snapshot"
    );
    assert!(
        snapshot["healthLog"].is_null(),
        "a snapshot has no step report: {snapshot}"
    );

    report_step(
        &server,
        &acme.admin_token,
        &run,
        &steps[1],
        outcome("SUCCESS"),
    )
    .await;
    finish_run(&server, &acme.admin_token, &run, "SUCCEEDED", None).await;
    for (socket, id) in [(&mut early, "a"), (&mut late, "b")] {
        let (got, update) = next_update(socket, "runUpdated").await;
        assert_eq!(got, id);
        assert_eq!(update["run"]["stepsCompleted"], 2, "{update}");
        assert!(update["healthLog"]["id"].is_string(), "{update}");
        let (_, update) = next_update(socket, "runUpdated").await;
        assert_eq!(update["run"]["status"], "SUCCEEDED", "{update}");
        let complete = socket.expect_message().await;
        assert_eq!(complete, json!({ "type": "complete", "id": id }));
    }
}

both_backends!(leaving_or_revoked_subscribers_do_not_disturb_their_group);
/// Three sessions of one admin share a group: one disconnects, one is signed out (its
/// socket closes with 4403); the third goes on receiving, and newcomers still join.
async fn leaving_or_revoked_subscribers_do_not_disturb_their_group(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (workflow, _) = active_workflow(&server, &acme.admin_token, "Watched", 1).await;
    let (second, _) = server.login(&acme.admin_email, common::PASSWORD).await;
    let (third, _) = server.login(&acme.admin_email, common::PASSWORD).await;
    let query = runs_updated_query();
    let mut leaving = subscribed(&server, &acme.admin_token, "1", &query, json!({})).await;
    let mut revoked = subscribed(&server, &second, "1", &query, json!({})).await;
    let mut staying = subscribed(&server, &third, "1", &query, json!({})).await;
    warm_up(
        &server,
        &acme.admin_token,
        &workflow,
        &mut [&mut leaving, &mut revoked, &mut staying],
    )
    .await;

    leaving.close(1000, "bye");
    let resp = server
        .gql("mutation { logout }", json!({}), Some(&second))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );
    revoked
        .expect_close_code(4403, "a signed-out session")
        .await;
    let (_, update) = next_update(&mut staying, "runsUpdated").await;
    assert_eq!(update["run"]["id"], run.as_str());

    let mut newcomer = subscribed(&server, &third, "2", &query, json!({})).await;
    warm_up(&server, &acme.admin_token, &workflow, &mut [&mut newcomer]).await;
    while staying
        .try_event_within(Duration::from_millis(700))
        .await
        .is_some()
    {}
    let run = str_field(
        &start_run(&server, &acme.admin_token, &workflow).await,
        "id",
    );
    for socket in [&mut staying, &mut newcomer] {
        let (_, update) = next_update(socket, "runsUpdated").await;
        assert_eq!(update["run"]["id"], run.as_str());
    }
}
