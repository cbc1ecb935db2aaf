//! Issue 19, items 3 and 12: what signing in may cost the server, and how often anyone may
//! try. Password hashes (19 MiB each) run a bounded number at a time; `login`, `signup`
//! and `joinCompany` are limited per client address and per email; anonymous WebSockets
//! run one sign-in at a time and are limited per address.
//!
//! Memory is asserted as the server's peak resident size (VmHWM) with a generous bound;
//! before these limits the floods below took a debug server past 1.4 GB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::fixtures::*;
use common::realtime::RawSocket;
use common::{Backend, PASSWORD, ServerOptions, TestServer, assert_error_code, error_code};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// Far above what the server needs with hashing bounded (~200 MB for a debug build), far
/// below what the unbounded floods reached.
const PEAK_RSS_BOUND_KB: u64 = 600 * 1024;

const LOGIN: &str = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token } }";
const SIGNUP: &str = "mutation($email: String!) { signup(companyName: \"Probe\", name: \"Probe\", \
     email: $email, password: \"correct horse battery\") { token } }";
const JOIN: &str = "mutation($invite: String!, $email: String!) { joinCompany(inviteToken: $invite, \
     name: \"Probe\", email: $email, password: \"correct horse battery\") { token } }";

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

/// The server's peak resident set size so far, in KiB.
fn peak_rss_kb(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// An HTTP answer: status, `Retry-After`, body.
struct Answer {
    status: reqwest::StatusCode,
    retry_after: Option<String>,
    body: Value,
}

/// POSTs `query` as a client at `address` (through `X-Forwarded-For`, which the servers of
/// these tests trust); `None` sends no header, so the peer address (127.0.0.1) counts.
async fn attempt(server: &TestServer, address: Option<&str>, query: &str, vars: Value) -> Answer {
    let mut request = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(address) = address {
        request = request.header("x-forwarded-for", address);
    }
    let resp = request.send().await.expect("an answer");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.expect("a JSON body");
    Answer {
        status,
        retry_after,
        body,
    }
}

#[track_caller]
fn assert_rate_limited(answer: &Answer, context: &str) {
    assert_error_code(&answer.body, "RATE_LIMITED", context);
    assert_eq!(answer.status, 429, "{context}: HTTP status");
    let retry = answer.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_default();
    assert!(retry >= 1, "{context}: retryAfter in {:#}", answer.body);
    assert_eq!(
        answer.retry_after.as_deref(),
        Some(retry.to_string().as_str()),
        "{context}: Retry-After header"
    );
}

// 300 concurrent anonymous logins took the server from 84 MB to 4.76 GB (release; 1.45 GB
// for a debug build): every one hashed at once on a blocking pool of up to 512 threads.
both_backends!(concurrent_logins_hash_a_bounded_number_at_a_time);
async fn concurrent_logins_hash_a_bounded_number_at_a_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let logins = (0..300).map(|i| {
        // Half with the right password, half wrong: verification costs the same.
        let password = if i % 2 == 0 {
            PASSWORD
        } else {
            "wrong password!"
        };
        attempt(
            &server,
            None,
            LOGIN,
            json!({ "email": acme.member_email, "password": password }),
        )
    });
    let answers = join_all(logins).await;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for answer in &answers {
        let outcome = match error_code(&answer.body) {
            None => "ok".to_owned(),
            Some(code) if code == "UNAVAILABLE" => {
                // Waited too long for a hashing slot: a coded, retryable answer.
                assert_eq!(answer.status, 503, "{:#}", answer.body);
                assert!(answer.retry_after.is_some(), "{:#}", answer.body);
                code
            }
            Some(code) => code,
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert!(
        outcomes
            .keys()
            .all(|k| ["ok", "UNAUTHENTICATED", "UNAVAILABLE"].contains(&k.as_str())),
        "only sign-ins, refusals and retryable busy answers: {outcomes:?}"
    );
    assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "{outcomes:?}");
    let peak = peak_rss_kb(&server);
    assert!(
        peak < PEAK_RSS_BOUND_KB,
        "peak RSS {peak} KiB after 300 concurrent logins ({outcomes:?})"
    );
}

// One anonymous WebSocket running 100 `login` operations reached 2.18 GB (release): every
// operation ran at once, each with its own hash. A connection without a token now runs
// one operation at a time, and a client address holds a bounded number of them.
both_backends!(anonymous_websockets_run_one_sign_in_at_a_time);
async fn anonymous_websockets_run_one_sign_in_at_a_time(backend: Backend) {
    let server = server_with(
        backend,
        &[("STEPWISE_WS_MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS", "2")],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let mut socket = RawSocket::open(&server).await;
    socket.init(None).await;
    for i in 0..100 {
        socket.send(json!({
            "type": "subscribe",
            "id": i.to_string(),
            "payload": {
                "query": LOGIN,
                "variables": { "email": acme.member_email, "password": PASSWORD },
            },
        }));
    }
    // Every operation ends exactly once: `complete` after its result, or `error`.
    let mut ended: HashMap<String, &'static str> = HashMap::new();
    let mut signed_in = 0;
    while ended.len() < 100 {
        let message = socket.expect_message().await;
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        match message["type"].as_str() {
            Some("next") => {
                assert!(
                    message["payload"]["data"]["login"]["token"].is_string(),
                    "{message:#}"
                );
                signed_in += 1;
            }
            Some("complete") => assert!(ended.insert(id, "complete").is_none()),
            Some("error") => {
                let error = &message["payload"][0];
                assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{message:#}");
                assert!(error["extensions"]["retryAfter"].as_u64() >= Some(1));
                assert!(ended.insert(id, "error").is_none());
            }
            _ => panic!("unexpected message {message:#}"),
        }
    }
    let refused = ended.values().filter(|kind| **kind == "error").count();
    assert!(signed_in >= 1, "the first sign-in runs");
    assert!(
        refused >= 50,
        "{refused} of 100 refused: at most one runs at a time"
    );
    let peak = peak_rss_kb(&server);
    assert!(peak < PEAK_RSS_BOUND_KB, "peak RSS {peak} KiB");

    // A second anonymous connection from this address is fine, a third is not...
    let mut second = RawSocket::open(&server).await;
    second.init(None).await;
    let mut third = RawSocket::open(&server).await;
    third.send(json!({ "type": "connection_init" }));
    third
        .expect_close_code(1013, "a third connection without a token")
        .await;
    // ...while signed-in connections do not count against it.
    let mut member = RawSocket::open(&server).await;
    member.init(Some(&acme.member_token)).await;
    member.send(json!({ "type": "ping" }));
    member.expect_type("pong").await;
}

// Attempts are limited per client address and per email: a password guesser gets a few
// tries a minute per account, and one client a few dozen accounts a minute.
both_backends!(sign_in_attempts_are_limited_per_address_and_per_email);
async fn sign_in_attempts_are_limited_per_address_and_per_email(backend: Backend) {
    let server = server_with(
        backend,
        &[
            ("STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS", "6"),
            ("STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL", "3"),
            ("STEPWISE_CLIENT_ADDRESS_HEADER", "X-Forwarded-For"),
        ],
    )
    .await;
    let (_, admin) = server
        .signup("Acme", "Ada", "ada@acme.test", PASSWORD)
        .await;
    assert!(admin["user"]["id"].is_string());

    // Per email: three wrong passwords, then RATE_LIMITED, from any address, even with
    // the right password (the lockout is the price of the limit; see README).
    let guess = |password: &str| json!({ "email": "ada@acme.test", "password": password });
    for _ in 0..2 {
        let answer = attempt(&server, Some("198.51.100.1"), LOGIN, guess("guess one")).await;
        assert_error_code(&answer.body, "UNAUTHENTICATED", "a wrong password");
    }
    let answer = attempt(&server, Some("198.51.100.1"), LOGIN, guess("guess two")).await;
    assert_rate_limited(&answer, "a fourth attempt on one email");
    let answer = attempt(&server, Some("198.51.100.2"), LOGIN, guess("guess three")).await;
    assert_rate_limited(&answer, "the same email from another address");
    let answer = attempt(
        &server,
        Some("198.51.100.3"),
        LOGIN,
        json!({ "email": " ADA@acme.test", "password": PASSWORD }),
    )
    .await;
    assert_rate_limited(&answer, "the same email spelled differently");

    // Per address: six attempts, whatever the emails, then RATE_LIMITED.
    let sprayer = Some("203.0.113.50");
    for i in 0..6 {
        let vars = json!({ "email": format!("user{i}@acme.test"), "password": "guess one" });
        let answer = attempt(&server, sprayer, LOGIN, vars).await;
        assert_error_code(&answer.body, "UNAUTHENTICATED", "an unknown email");
    }
    let vars = json!({ "email": "user99@acme.test", "password": "guess one" });
    let answer = attempt(&server, sprayer, LOGIN, vars.clone()).await;
    assert_rate_limited(&answer, "a seventh attempt from one address");
    // signup and joinCompany draw on the same attempts.
    let answer = attempt(&server, sprayer, SIGNUP, json!({ "email": "new@x.test" })).await;
    assert_rate_limited(&answer, "signup from the limited address");
    let answer = attempt(
        &server,
        sprayer,
        JOIN,
        json!({ "invite": "x", "email": "new2@x.test" }),
    )
    .await;
    assert_rate_limited(&answer, "joinCompany from the limited address");

    // Other clients are unaffected; IPv6 clients count per /64.
    let answer = attempt(&server, Some("203.0.113.51"), LOGIN, vars.clone()).await;
    assert_error_code(&answer.body, "UNAUTHENTICATED", "another address");
    for i in 0..6 {
        let address = format!("2001:db8:5:6::{i:x}");
        let vars = json!({ "email": format!("v6-{i}@acme.test"), "password": "guess one" });
        let answer = attempt(&server, Some(&address), LOGIN, vars).await;
        assert_error_code(&answer.body, "UNAUTHENTICATED", "an IPv6 client");
    }
    let answer = attempt(&server, Some("2001:db8:5:6:ffff::1"), LOGIN, vars).await;
    assert_rate_limited(&answer, "a seventh address of one IPv6 /64");
}

// signup and joinCompany answer CONFLICT for an email that has an account in any
// company. Without email verification that answer cannot be avoided (the person signing
// up must learn why it failed), so probing emails this way is rate limited instead.
both_backends!(email_enumeration_through_signup_is_rate_limited);
async fn email_enumeration_through_signup_is_rate_limited(backend: Backend) {
    let server = server_with(
        backend,
        &[
            ("STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS", "5"),
            ("STEPWISE_CLIENT_ADDRESS_HEADER", "X-Forwarded-For"),
        ],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let prober = Some("192.0.2.200");
    let answer = attempt(
        &server,
        prober,
        SIGNUP,
        json!({ "email": acme.member_email }),
    )
    .await;
    assert_error_code(&answer.body, "CONFLICT", "signup with a registered email");
    let answer = attempt(
        &server,
        prober,
        JOIN,
        json!({ "invite": invite, "email": acme.admin_email }),
    )
    .await;
    assert_error_code(
        &answer.body,
        "CONFLICT",
        "joinCompany with a registered email",
    );
    for i in 0..3 {
        let email = format!("candidate{i}@elsewhere.test");
        let answer = attempt(&server, prober, SIGNUP, json!({ "email": email })).await;
        assert!(error_code(&answer.body).is_none(), "{:#}", answer.body);
    }
    // The sixth probe from this address is refused before anything is looked up.
    let answer = attempt(
        &server,
        prober,
        SIGNUP,
        json!({ "email": acme.admin_email }),
    )
    .await;
    assert_rate_limited(&answer, "a sixth signup from one address");
    let answer = attempt(
        &server,
        prober,
        JOIN,
        json!({ "invite": invite, "email": acme.member_email }),
    )
    .await;
    assert_rate_limited(&answer, "a joinCompany probe from the same address");
}

// joinCompany hashed the password before looking at the invite token, so wrong tokens cost
// a 19 MiB hash each. The token is now checked first: with a single hashing slot and no
// patience for it, a flood of wrong tokens is answered BAD_USER_INPUT, never UNAVAILABLE,
// and memory stays flat.
both_backends!(join_company_checks_the_invite_token_before_hashing);
async fn join_company_checks_the_invite_token_before_hashing(backend: Backend) {
    let server = server_with(
        backend,
        &[
            ("STEPWISE_PASSWORD_HASH_CONCURRENCY", "1"),
            ("STEPWISE_PASSWORD_HASH_QUEUE_TIMEOUT_MS", "1"),
        ],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let joins = (0..300).map(|i| {
        attempt(
            &server,
            None,
            JOIN,
            json!({ "invite": format!("not-a-token-{i}"), "email": format!("j{i}@acme.test") }),
        )
    });
    for answer in join_all(joins).await {
        assert_error_code(&answer.body, "BAD_USER_INPUT", "a wrong invite token");
        assert_eq!(
            answer.body["errors"][0]["extensions"]["field"], "inviteToken",
            "{:#}",
            answer.body
        );
    }
    let peak = peak_rss_kb(&server);
    assert!(peak < PEAK_RSS_BOUND_KB, "peak RSS {peak} KiB");
    // The right token still works.
    let invite = server.invite_token(&acme.admin_token).await;
    let answer = attempt(
        &server,
        None,
        JOIN,
        json!({ "invite": invite, "email": "joined@acme.test" }),
    )
    .await;
    assert!(error_code(&answer.body).is_none(), "{:#}", answer.body);
}
