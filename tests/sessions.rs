//! Sessions (issue 15, item 1): short access tokens renewed with rotating refresh tokens,
//! reuse detection ending the whole session, logout and logout everywhere (on every
//! instance within seconds), password changes ending the other sessions, profile changes,
//! the session list, and sign-in throttling that answers alike for known and unknown emails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixtures::*;
use common::realtime::RawSocket;
use common::runs::poll_until;
use common::{
    Backend, PASSWORD, ServerOptions, TestServer, assert_error_code, error_code, jwt_claims,
    parse_datetime, str_field,
};
use serde_json::{Value, json};

const PAIR: &str =
    "token expiresAt refreshToken refreshTokenExpiresAt user { id email } company { id }";
const ME: &str = "{ me { id } }";

fn login_query() -> String {
    format!(
        "mutation($email: String!, $password: String!) {{ login(email: $email, password: $password) {{ {PAIR} }} }}"
    )
}

fn refresh_query() -> String {
    format!("mutation($token: String!) {{ refreshSession(refreshToken: $token) {{ {PAIR} }} }}")
}

/// A signed-in session: (access token, refresh token).
async fn log_in(server: &TestServer, email: &str, password: &str) -> (String, String) {
    let resp = server
        .gql(
            &login_query(),
            json!({ "email": email, "password": password }),
            None,
        )
        .await;
    let payload = &resp["data"]["login"];
    assert!(resp["errors"].is_null(), "login failed: {resp:#}");
    (
        str_field(payload, "token"),
        str_field(payload, "refreshToken"),
    )
}

async fn try_refresh(server: &TestServer, refresh: &str) -> Value {
    server
        .gql(&refresh_query(), json!({ "token": refresh }), None)
        .await
}

async fn refresh(server: &TestServer, refresh: &str) -> (String, String) {
    let resp = try_refresh(server, refresh).await;
    assert!(resp["errors"].is_null(), "refresh failed: {resp:#}");
    let payload = &resp["data"]["refreshSession"];
    (
        str_field(payload, "token"),
        str_field(payload, "refreshToken"),
    )
}

async fn works(server: &TestServer, token: &str) -> bool {
    let resp = server.gql(ME, json!({}), Some(token)).await;
    match error_code(&resp).as_deref() {
        None => true,
        Some("UNAUTHENTICATED") => false,
        other => panic!("unexpected answer {other:?}: {resp:#}"),
    }
}

both_backends!(refresh_tokens_rotate_and_a_reused_one_ends_the_session);
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session(backend: Backend) {
    let options = ServerOptions {
        env: vec![("JWT_TTL_SECONDS".to_owned(), "2".to_owned())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let acme = team(&server, "Acme").await;
    let resp = server
        .gql(
            &login_query(),
            json!({ "email": acme.admin_email, "password": PASSWORD }),
            None,
        )
        .await;
    let payload = resp["data"]["login"].clone();
    let (access, first) = (
        str_field(&payload, "token"),
        str_field(&payload, "refreshToken"),
    );
    assert!(first.starts_with("swr_"), "{first}");
    let refresh_expiry = parse_datetime(&payload["refreshTokenExpiresAt"]);
    let days = (refresh_expiry - chrono::Utc::now()).num_days();
    assert!(
        (29..=30).contains(&days),
        "a session lasts 30 days by default: {days}"
    );
    let sid = str_field(&jwt_claims(&access), "sid");

    // The access token lives two seconds here; the refresh token renews it.
    assert!(works(&server, &access).await);
    poll_until(
        Duration::from_secs(15),
        "the access token to expire",
        async || (!works(&server, &access).await).then_some(()),
    )
    .await;
    let (access2, second) = refresh(&server, &first).await;
    assert_ne!(second, first);
    assert_eq!(
        str_field(&jwt_claims(&access2), "sid"),
        sid,
        "the same session"
    );
    assert!(works(&server, &access2).await);
    let (access3, third) = refresh(&server, &second).await;
    assert!(works(&server, &access3).await);

    // Another session of the same member is not part of this one.
    let (other_access, other_refresh) = log_in(&server, &acme.admin_email, PASSWORD).await;

    // `first` was rotated: presenting it again means it was copied. The whole session
    // ends: its newest refresh token and its newest access token, at once.
    let resp = try_refresh(&server, &first).await;
    assert_error_code(&resp, "UNAUTHENTICATED", "a reused refresh token");
    assert!(resp["data"].is_null() || resp["data"]["refreshSession"].is_null());
    assert_error_code(
        &try_refresh(&server, &third).await,
        "UNAUTHENTICATED",
        "the family's newest token",
    );
    assert!(!works(&server, &access3).await, "the family's access token");
    let stored = server
        .sql_count(&format!("sessions WHERE id = {}", lit(&sid)))
        .await;
    assert_eq!(stored, 0, "the session is gone");
    // ...and only that session.
    assert!(works(&server, &other_access).await);
    refresh(&server, &other_refresh).await;

    // Garbage, another kind of secret, and an unknown but well-formed token.
    for bad in [
        "",
        "swr_",
        "not a token",
        &other_access,
        &"x".repeat(10_000),
    ] {
        assert_error_code(
            &try_refresh(&server, bad).await,
            "UNAUTHENTICATED",
            "bad refresh token",
        );
    }
}

both_backends!(logout_ends_one_session_and_logout_everywhere_all);
async fn logout_ends_one_session_and_logout_everywhere_all(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (phone, phone_refresh) = log_in(&server, &acme.member_email, PASSWORD).await;
    let (laptop, _) = log_in(&server, &acme.member_email, PASSWORD).await;
    let (tablet, tablet_refresh) = log_in(&server, &acme.member_email, PASSWORD).await;

    let mut socket = RawSocket::open(&server).await;
    socket.init(Some(&phone)).await;
    let resp = ok(&server, &phone, "mutation { logout }", json!({})).await;
    assert_eq!(resp["logout"], true);
    assert!(!works(&server, &phone).await, "logged out: refused at once");
    assert_error_code(
        &try_refresh(&server, &phone_refresh).await,
        "UNAUTHENTICATED",
        "logged out refresh",
    );
    let (code, _) = socket.expect_close_within(Duration::from_secs(5)).await;
    assert_eq!(code, 4403, "the logged-out session's socket closes");
    assert!(works(&server, &laptop).await && works(&server, &tablet).await);

    let listed = ok(&server, &laptop, "{ sessions { id current } }", json!({})).await;
    // team() signed the member in once more (joinCompany).
    assert_eq!(
        listed["sessions"].as_array().map(Vec::len),
        Some(3),
        "{listed:#}"
    );
    let resp = ok(&server, &laptop, "mutation { logoutEverywhere }", json!({})).await;
    assert_eq!(resp["logoutEverywhere"], 3);
    for token in [&laptop, &tablet, &acme.member_token] {
        assert!(!works(&server, token).await);
    }
    assert_error_code(
        &try_refresh(&server, &tablet_refresh).await,
        "UNAUTHENTICATED",
        "after logoutEverywhere",
    );
    // Other members keep theirs; the member signs in again.
    assert!(works(&server, &acme.admin_token).await);
    let (again, _) = log_in(&server, &acme.member_email, PASSWORD).await;
    assert!(works(&server, &again).await);

    // Without a session there is nothing to log out of.
    assert_error_code(
        &server.gql("mutation { logout }", json!({}), None).await,
        "UNAUTHENTICATED",
        "anonymous logout",
    );
}

both_backends!(changing_the_password_ends_the_other_sessions);
async fn changing_the_password_ends_the_other_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (here, here_refresh) = log_in(&server, &acme.member_email, PASSWORD).await;
    let (elsewhere, elsewhere_refresh) = log_in(&server, &acme.member_email, PASSWORD).await;
    let change = "mutation($current: String!, $new: String!) { changePassword(currentPassword: $current, newPassword: $new) }";

    let resp = server
        .gql(
            change,
            json!({ "current": "wrong password!", "new": "a brand new passphrase" }),
            Some(&here),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a wrong current password");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "currentPassword");
    let resp = server
        .gql(
            change,
            json!({ "current": PASSWORD, "new": "short" }),
            Some(&here),
        )
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a too-short new password");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "newPassword");
    assert!(
        works(&server, &elsewhere).await,
        "failed changes end nothing"
    );

    let resp = ok(
        &server,
        &here,
        change,
        json!({ "current": PASSWORD, "new": "a brand new passphrase" }),
    )
    .await;
    assert_eq!(
        resp["changePassword"], 2,
        "the other login and the join session"
    );
    assert!(works(&server, &here).await, "this session stays");
    refresh(&server, &here_refresh).await;
    assert!(!works(&server, &elsewhere).await);
    assert!(!works(&server, &acme.member_token).await);
    assert_error_code(
        &try_refresh(&server, &elsewhere_refresh).await,
        "UNAUTHENTICATED",
        "other session's refresh",
    );
    assert_error_code(
        &server
            .gql(
                &login_query(),
                json!({ "email": acme.member_email, "password": PASSWORD }),
                None,
            )
            .await,
        "UNAUTHENTICATED",
        "the old password",
    );
    log_in(&server, &acme.member_email, "a brand new passphrase").await;
}

both_backends!(members_update_their_profile_and_list_their_sessions);
async fn members_update_their_profile_and_list_their_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let update = "mutation($name: String, $email: String) { updateProfile(name: $name, email: $email) { id name email } }";
    let data = ok(
        &server,
        &acme.member_token,
        update,
        json!({ "name": " Reggie ", "email": "Reggie@Acme.test" }),
    )
    .await;
    assert_eq!(data["updateProfile"]["name"], "Reggie");
    assert_eq!(data["updateProfile"]["email"], "reggie@acme.test");
    log_in(&server, "reggie@acme.test", PASSWORD).await;
    let resp = server
        .gql(
            update,
            json!({ "email": acme.admin_email }),
            Some(&acme.member_token),
        )
        .await;
    assert_error_code(&resp, "CONFLICT", "another account's email");
    for (vars, field) in [
        (json!({ "email": "nope" }), "email"),
        (json!({ "name": "" }), "name"),
    ] {
        let resp = server.gql(update, vars, Some(&acme.member_token)).await;
        assert_error_code(&resp, "BAD_USER_INPUT", field);
        assert_eq!(resp["errors"][0]["extensions"]["field"], field);
    }

    // Sessions: where and with what each member signed in; the current one marked.
    let client = reqwest::Client::new();
    let resp: Value = client
        .post(server.url("/graphql"))
        .header("user-agent", "StepwiseTest/1.0 (sessions)")
        .json(&json!({ "query": login_query(), "variables": { "email": acme.admin_email, "password": PASSWORD } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = str_field(&resp["data"]["login"], "token");
    let sid = str_field(&jwt_claims(&token), "sid");
    let listed = ok(
        &server,
        &token,
        "{ sessions { id createdAt lastUsedAt expiresAt userAgent clientAddress current } }",
        json!({}),
    )
    .await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed:#}");
    let mine = sessions
        .iter()
        .find(|s| s["id"] == sid.as_str())
        .expect("the current session");
    assert_eq!(mine["current"], true);
    assert_eq!(mine["userAgent"], "StepwiseTest/1.0 (sessions)");
    assert_eq!(mine["clientAddress"], "127.0.0.1");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    // Another member's sessions are not listed.
    assert!(
        !listed
            .to_string()
            .contains(&str_field(&jwt_claims(&acme.member_token), "sid"))
    );
}

// Failed sign-ins are throttled per email and per client address, and an unknown email is
// answered exactly like a known one, before and after the limit. Successful logins give
// their attempt back.
both_backends!(throttled_logins_answer_alike_for_known_and_unknown_emails);
async fn throttled_logins_answer_alike_for_known_and_unknown_emails(backend: Backend) {
    let options = ServerOptions {
        env: vec![
            (
                "STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS".to_owned(),
                "100".to_owned(),
            ),
            (
                "STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL".to_owned(),
                "3".to_owned(),
            ),
        ],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let (_, admin) = server
        .signup("Acme", "Ada", "ada@acme.test", PASSWORD)
        .await;
    assert!(admin["user"]["id"].is_string());

    // The sign-up counted one attempt for ada@; one refused sign-up counts one for the
    // unknown email, so both start from the same count.
    let resp = server
        .try_signup("Probe", "Probe", "nobody@acme.test", "short")
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a refused sign-up");
    // Successes do not use up the account's attempts.
    for _ in 0..5 {
        log_in(&server, "ada@acme.test", PASSWORD).await;
    }
    let attempt = |email: &'static str| {
        let server = &server;
        async move {
            let resp = server
                .gql(
                    &login_query(),
                    json!({ "email": email, "password": "not the password" }),
                    None,
                )
                .await;
            // Only the shape of the answer: the retry time may differ by a second.
            let mut errors = resp["errors"].clone();
            if let Some(extensions) = errors[0]["extensions"].as_object_mut() {
                extensions.remove("retryAfter");
            }
            errors[0]["message"] = json!(
                errors[0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .split(" in ")
                    .next()
                    .unwrap_or_default()
            );
            (errors, resp["data"].clone())
        }
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..2 {
        known.push(attempt("ada@acme.test").await);
        unknown.push(attempt("nobody@acme.test").await);
    }
    for _ in 0..3 {
        known.push(attempt("ada@acme.test").await);
        unknown.push(attempt("nobody@acme.test").await);
    }
    assert_eq!(
        known, unknown,
        "known and unknown emails must be answered alike"
    );
    let codes: Vec<&str> = known
        .iter()
        .map(|(errors, _)| errors[0]["extensions"]["code"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ],
        "{known:#?}"
    );
}

// Issue 15: "logout and logout-everywhere cutting access tokens on another instance within
// seconds". Two instances on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_are_refused_on_every_instance_within_seconds() {
    if !Backend::Postgres.available().await {
        return;
    }
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.start_sibling().await;
    let acme = team(&first, "Acme").await;
    let (one, _) = log_in(&first, &acme.member_email, PASSWORD).await;
    let (two, _) = log_in(&second, &acme.member_email, PASSWORD).await;
    for server in [&first, &second] {
        assert!(works(server, &one).await && works(server, &two).await);
    }
    let mut socket = RawSocket::open(&second).await;
    socket.init(Some(&one)).await;

    // Logout on the first instance: refused there at once, on the second within seconds,
    // and the second instance closes the session's socket.
    ok(&first, &one, "mutation { logout }", json!({})).await;
    assert!(!works(&first, &one).await);
    poll_until(
        Duration::from_secs(10),
        "the second instance to refuse the logged-out token",
        async || (!works(&second, &one).await).then_some(()),
    )
    .await;
    let (code, _) = socket.expect_close_within(Duration::from_secs(10)).await;
    assert_eq!(code, 4403);
    assert!(works(&second, &two).await, "the other session is untouched");

    // Logout everywhere on the second instance: the first refuses within seconds.
    let mut socket = RawSocket::open(&first).await;
    socket.init(Some(&acme.member_token)).await;
    ok(&second, &two, "mutation { logoutEverywhere }", json!({})).await;
    for token in [&two, &acme.member_token] {
        poll_until(
            Duration::from_secs(10),
            "the first instance to refuse every session",
            async || (!works(&first, token).await).then_some(()),
        )
        .await;
    }
    let (code, _) = socket.expect_close_within(Duration::from_secs(10)).await;
    assert_eq!(code, 4403);
    assert!(works(&first, &acme.admin_token).await);
}

both_backends!(a_burst_on_one_token_costs_one_credential_lookup);
/// Thousands of open WebSockets of one credential re-check it on their own timers, and a
/// frontend fires its queries in bursts: when the cached answer has lapsed, a burst of
/// requests on one token asks the database once, not once per request.
async fn a_burst_on_one_token_costs_one_credential_lookup(backend: Backend) {
    const LOOKUPS: &str = "stepwise_credential_lookups_total";
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    assert!(works(&server, &acme.admin_token).await);
    // Past the credential cache's lifetime (2 s): the next use must ask again.
    tokio::time::sleep(Duration::from_millis(2_300)).await;

    let before = server.metric(LOOKUPS).await;
    let burst = (0..100).map(|_| server.gql("{ __typename }", json!({}), Some(&acme.admin_token)));
    for resp in futures_util::future::join_all(burst).await {
        assert_eq!(resp["data"]["__typename"], "Query", "{resp:#}");
    }
    let lookups = server.metric(LOOKUPS).await - before;
    assert_eq!(
        lookups, 1.0,
        "lookups for a burst of 100 requests on one token"
    );
}
