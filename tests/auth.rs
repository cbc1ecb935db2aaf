//! Sign-up, joining a company, logging in, tokens and invite tokens, as a client of
//! the GraphQL API sees them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    Backend, PASSWORD, ServerOptions, TestServer, assert_error_code, error_code, error_message,
    forge_token, jwt_claims, now_ts, parse_datetime, raw_hs256_token, str_field, tampered_token,
    unsigned_token,
};
use serde_json::{Value, json};

/// A company with its admin and one regular member.
struct Team {
    admin_token: String,
    admin: Value,
    member_token: String,
    member: Value,
    invite: String,
}

async fn team(server: &TestServer) -> Team {
    let (admin_token, admin) = server
        .signup("Acme", "Ada Admin", "ada@acme.test", PASSWORD)
        .await;
    let invite = server.invite_token(&admin_token).await;
    let (member_token, member) = server
        .join_company(&invite, "Reg Ular", "reg@acme.test", PASSWORD)
        .await;
    Team {
        admin_token,
        admin,
        member_token,
        member,
        invite,
    }
}

// ---------------------------------------------------------------------------
// Sign-up, joining and login
// ---------------------------------------------------------------------------

both_backends!(signup_creates_company_and_admin);
async fn signup_creates_company_and_admin(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (token, payload) = server
        .signup("Acme Corp", "Ada Admin", "ada@acme.test", PASSWORD)
        .await;

    assert!(!token.is_empty());
    assert_eq!(payload["user"]["role"], "ADMIN", "{payload:#}");
    assert_eq!(payload["user"]["email"], "ada@acme.test");
    assert_eq!(payload["user"]["name"], "Ada Admin");
    assert_eq!(payload["company"]["name"], "Acme Corp");
    assert_eq!(payload["user"]["company"]["id"], payload["company"]["id"]);
    let expires = parse_datetime(&payload["expiresAt"]);
    let lifetime = (expires - chrono::Utc::now()).num_seconds();
    assert!(
        (900 - 120..=900 + 120).contains(&lifetime),
        "default access-token lifetime should be 15 minutes, expiresAt is {lifetime}s away"
    );

    let me = server.me(&token).await;
    assert_eq!(me["id"], payload["user"]["id"]);
    assert_eq!(me["email"], "ada@acme.test");
    assert_eq!(me["role"], "ADMIN");
    assert_eq!(me["company"]["id"], payload["company"]["id"]);

    let data = server
        .gql_ok(
            "{ company { id name inviteToken } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(data["company"]["id"], payload["company"]["id"]);
    assert_eq!(data["company"]["name"], "Acme Corp");
    assert!(
        !str_field(&data["company"], "inviteToken").is_empty(),
        "admin should see a non-empty invite token"
    );
}

both_backends!(join_company_adds_regular_member);
async fn join_company_adds_regular_member(backend: Backend) {
    let server = TestServer::start(backend).await;
    let team = team(&server).await;

    assert_eq!(team.member["user"]["role"], "REGULAR", "{:#}", team.member);
    assert_eq!(team.member["company"]["id"], team.admin["company"]["id"]);
    assert_eq!(team.member["company"]["name"], "Acme");

    let me = server.me(&team.member_token).await;
    assert_eq!(me["email"], "reg@acme.test");
    assert_eq!(me["name"], "Reg Ular");
    assert_eq!(me["role"], "REGULAR");
    assert_eq!(me["company"]["id"], team.admin["company"]["id"]);
    assert_ne!(me["id"], team.admin["user"]["id"]);

    // A regular member can still see which company they are in.
    let company = server.company(&team.member_token).await;
    assert_eq!(company["id"], team.admin["company"]["id"]);
    assert_eq!(company["name"], "Acme");

    // And can log in later.
    let (_, login) = server.login("reg@acme.test", PASSWORD).await;
    assert_eq!(login["user"]["role"], "REGULAR");
    assert_eq!(login["company"]["id"], team.admin["company"]["id"]);
}

both_backends!(companies_are_kept_apart);
async fn companies_are_kept_apart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (acme_token, acme) = server
        .signup("Acme", "Ada", "ada@acme.test", PASSWORD)
        .await;
    let (globex_token, globex) = server
        .signup("Globex", "Gus", "gus@globex.test", PASSWORD)
        .await;
    assert_ne!(acme["company"]["id"], globex["company"]["id"]);

    assert_eq!(server.company(&acme_token).await["name"], "Acme");
    assert_eq!(server.company(&globex_token).await["name"], "Globex");
    let acme_invite = server.invite_token(&acme_token).await;
    let globex_invite = server.invite_token(&globex_token).await;
    assert_ne!(acme_invite, globex_invite);

    let (_, joined) = server
        .join_company(&globex_invite, "Gail", "gail@globex.test", PASSWORD)
        .await;
    assert_eq!(joined["company"]["id"], globex["company"]["id"]);
    assert_eq!(joined["company"]["name"], "Globex");
}

both_backends!(login_with_normalised_email);
async fn login_with_normalised_email(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, signup) = server
        .signup("Acme", "Alice", " Alice@Example.COM ", PASSWORD)
        .await;
    assert_eq!(signup["user"]["email"], "alice@example.com");

    for email in [
        "alice@example.com",
        "ALICE@example.com",
        "  alice@EXAMPLE.com",
    ] {
        let (token, login) = server.login(email, PASSWORD).await;
        assert_eq!(
            login["user"]["id"], signup["user"]["id"],
            "login as {email:?}"
        );
        assert_eq!(login["company"]["id"], signup["company"]["id"]);
        let me = server.me(&token).await;
        assert_eq!(me["email"], "alice@example.com");
        assert_eq!(me["role"], "ADMIN");
    }
}

both_backends!(wrong_password_and_unknown_email_look_the_same);
async fn wrong_password_and_unknown_email_look_the_same(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;

    let wrong_password = server
        .try_login("alice@example.com", "not the password")
        .await;
    assert_error_code(
        &wrong_password,
        "UNAUTHENTICATED",
        "login with a wrong password",
    );
    assert!(
        wrong_password["data"]["login"].is_null(),
        "{wrong_password:#}"
    );

    let unknown = server.try_login("nobody@example.com", PASSWORD).await;
    assert_error_code(&unknown, "UNAUTHENTICATED", "login with an unknown email");
    assert_eq!(
        error_message(&wrong_password),
        error_message(&unknown),
        "wrong password and unknown email must not be distinguishable"
    );
}

// ---------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------

both_backends!(password_length_rule);
async fn password_length_rule(backend: Backend) {
    let server = TestServer::start(backend).await;

    let resp = server
        .try_signup("Acme", "Alice", "alice@example.com", "1234567")
        .await;
    assert_error_code(
        &resp,
        "BAD_USER_INPUT",
        "signup with a 7-character password",
    );
    let message = error_message(&resp).unwrap_or_default();
    assert!(
        message.to_lowercase().contains("password"),
        "message should say the password is the problem: {message:?}"
    );
    // Nothing was created.
    assert_error_code(
        &server.try_login("alice@example.com", "1234567").await,
        "UNAUTHENTICATED",
        "login after a rejected signup",
    );

    // Exactly eight characters is enough.
    let (token, _) = server
        .signup("Acme", "Alice", "alice@example.com", "12345678")
        .await;
    let invite = server.invite_token(&token).await;

    let resp = server
        .try_join_company(&invite, "Bob", "bob@example.com", "short")
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "joinCompany with a short password");
    assert!(
        error_message(&resp)
            .unwrap_or_default()
            .to_lowercase()
            .contains("password"),
        "{resp:#}"
    );
}

both_backends!(invalid_email_is_rejected);
async fn invalid_email_is_rejected(backend: Backend) {
    let server = TestServer::start(backend).await;
    for email in ["", "   ", "not-an-email", "@example.com", "alice@"] {
        let resp = server.try_signup("Acme", "Alice", email, PASSWORD).await;
        assert_error_code(
            &resp,
            "BAD_USER_INPUT",
            &format!("signup with email {email:?}"),
        );
    }

    let (token, _) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;
    let invite = server.invite_token(&token).await;
    let resp = server
        .try_join_company(&invite, "Bob", "not-an-email", PASSWORD)
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "joinCompany with an invalid email");
}

both_backends!(empty_names_are_rejected);
async fn empty_names_are_rejected(backend: Backend) {
    let server = TestServer::start(backend).await;

    let resp = server
        .try_signup("", "Alice", "alice@example.com", PASSWORD)
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "signup with an empty company name");
    let resp = server
        .try_signup("Acme", "", "alice@example.com", PASSWORD)
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "signup with an empty user name");

    // Neither attempt created the account.
    let (token, _) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;
    let invite = server.invite_token(&token).await;
    let resp = server
        .try_join_company(&invite, "", "bob@example.com", PASSWORD)
        .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "joinCompany with an empty name");
}

both_backends!(duplicate_email_conflicts_without_leftovers);
async fn duplicate_email_conflicts_without_leftovers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice_token, alice) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;

    // Same email, differing only in case, for a brand-new company.
    let resp = server
        .try_signup(
            "Ghost Co",
            "Mallory",
            "ALICE@example.com",
            "another password",
        )
        .await;
    assert_error_code(&resp, "CONFLICT", "signup with an email already in use");
    assert!(resp["data"]["signup"].is_null(), "{resp:#}");

    // Joining an existing company with that email conflicts too.
    let invite = server.invite_token(&alice_token).await;
    let resp = server
        .try_join_company(&invite, "Mallory", " Alice@Example.com", "another password")
        .await;
    assert_error_code(
        &resp,
        "CONFLICT",
        "joinCompany with an email already in use",
    );

    // The original account is untouched: same password, same company, still admin.
    let (_, login) = server.login("alice@example.com", PASSWORD).await;
    assert_eq!(login["user"]["id"], alice["user"]["id"]);
    assert_eq!(login["user"]["role"], "ADMIN");
    assert_eq!(login["company"]["id"], alice["company"]["id"]);
    assert_eq!(login["company"]["name"], "Acme");
    assert_error_code(
        &server
            .try_login("alice@example.com", "another password")
            .await,
        "UNAUTHENTICATED",
        "login with the password of the rejected signup",
    );

    // The failed signup left no half-made "Ghost Co" behind to get in the way.
    let (_, ghost) = server
        .signup("Ghost Co", "Gina", "gina@ghost.test", PASSWORD)
        .await;
    assert_eq!(ghost["company"]["name"], "Ghost Co");
    assert_eq!(ghost["user"]["role"], "ADMIN");
    assert_ne!(ghost["company"]["id"], alice["company"]["id"]);
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

const ME: &str = "{ me { id email } }";

both_backends!(requests_without_a_token_are_unauthenticated);
async fn requests_without_a_token_are_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    for query in [
        ME,
        "{ company { id name } }",
        "mutation { rotateInviteToken { id } }",
    ] {
        let resp = server.gql(query, json!({}), None).await;
        assert_error_code(
            &resp,
            "UNAUTHENTICATED",
            &format!("{query} without a token"),
        );
    }
}

both_backends!(issued_token_carries_documented_claims);
async fn issued_token_carries_documented_claims(backend: Backend) {
    let server = TestServer::start(backend).await;
    let team = team(&server).await;

    let claims = jwt_claims(&team.admin_token);
    assert_eq!(claims["sub"], team.admin["user"]["id"], "{claims:#}");
    assert_eq!(
        claims["company_id"], team.admin["company"]["id"],
        "{claims:#}"
    );
    assert_eq!(claims["role"], "admin", "{claims:#}");
    assert_eq!(claims["iss"], "stepwise", "{claims:#}");
    assert!(
        claims["aud"] == "stepwise" || claims["aud"] == json!(["stepwise"]),
        "{claims:#}"
    );
    let exp = claims["exp"].as_i64().expect("numeric exp");
    let iat = claims["iat"].as_i64().expect("numeric iat");
    assert!(claims["nbf"].as_i64().expect("numeric nbf") <= now_ts());
    assert_eq!(exp - iat, 900, "default JWT_TTL_SECONDS is 15 minutes");
    assert!(
        claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()),
        "the access token names its session: {claims:#}"
    );
    assert_eq!(
        exp,
        parse_datetime(&team.admin["expiresAt"]).timestamp(),
        "expiresAt must match the token's exp"
    );

    let member = jwt_claims(&team.member_token);
    assert_eq!(member["role"], "regular", "{member:#}");
    assert_eq!(member["sub"], team.member["user"]["id"]);
}

both_backends!(hostile_tokens_are_rejected);
async fn hostile_tokens_are_rejected(backend: Backend) {
    let server = TestServer::start(backend).await;
    let team = team(&server).await;
    let secret = server.jwt_secret().expect("test servers get a JWT secret");
    let now = now_ts();
    let valid = {
        let mut c = jwt_claims(&team.admin_token);
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 3600);
        c
    };
    let with = |changes: Value| {
        let mut c = valid.clone();
        for (k, v) in changes.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };

    // Control: a token forged with everything right is accepted, so each rejection
    // below is down to the one thing that is wrong with it.
    let forged = forge_token(&valid, secret);
    let me = server.me(&forged).await;
    assert_eq!(me["id"], team.admin["user"]["id"]);

    let escalated = {
        let mut c = jwt_claims(&team.member_token);
        c["role"] = json!("admin");
        c
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired two minutes ago",
            forge_token(
                &with(json!({ "iat": now - 3600, "nbf": now - 3600, "exp": now - 120 })),
                secret,
            ),
        ),
        (
            "not valid for another five minutes",
            forge_token(&with(json!({ "nbf": now + 300 })), secret),
        ),
        (
            "signed with another secret",
            forge_token(&valid, "some-other-secret-that-is-long-enough-0123"),
        ),
        (
            "wrong issuer",
            forge_token(&with(json!({ "iss": "evil" })), secret),
        ),
        (
            "wrong audience",
            forge_token(&with(json!({ "aud": "someone-else" })), secret),
        ),
        ("alg none", unsigned_token(&valid)),
        (
            "member token with role changed to admin",
            tampered_token(&team.member_token, &escalated),
        ),
        ("garbage", "not-a-jwt".to_owned()),
        ("empty", String::new()),
    ];
    let mut cases = cases;
    let key = secret.as_bytes();
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });
    // `alg: none` in every spelling, unsigned and with a valid signature attached.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        let signed = raw_hs256_token(&header, &valid, key);
        let unsigned = format!("{}.", signed.rsplit_once('.').unwrap().0);
        cases.push(("alg none spelling, unsigned", unsigned));
        cases.push(("alg none spelling, with a signature", signed));
    }
    // The right secret under another algorithm: the algorithm is pinned, not negotiated.
    for alg in [
        "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256", "",
    ] {
        cases.push((
            "the right key under another alg",
            raw_hs256_token(&json!({ "alg": alg, "typ": "JWT" }), &valid, key),
        ));
    }
    cases.push((
        "no alg at all",
        raw_hs256_token(&json!({ "typ": "JWT" }), &valid, key),
    ));
    // Signature stripped or mangled.
    let genuine = raw_hs256_token(&hs256, &valid, key);
    let (unsigned, signature) = genuine.rsplit_once('.').unwrap();
    cases.push(("signature stripped", format!("{unsigned}.")));
    cases.push(("signature segment missing", unsigned.to_owned()));
    cases.push((
        "signature of another token",
        format!(
            "{unsigned}.{}",
            forged
                .rsplit_once('.')
                .unwrap()
                .1
                .chars()
                .rev()
                .collect::<String>()
        ),
    ));
    cases.push(("extra segment", format!("{genuine}.{signature}")));
    // Every claim we issue is required.
    for claim in [
        "exp",
        "nbf",
        "iat",
        "iss",
        "aud",
        "sub",
        "company_id",
        "role",
    ] {
        let mut c = valid.clone();
        c.as_object_mut().unwrap().remove(claim);
        cases.push(("a required claim missing", raw_hs256_token(&hs256, &c, key)));
    }
    cases.push((
        "role the server does not know",
        raw_hs256_token(&hs256, &with(json!({ "role": "superuser" })), key),
    ));
    cases.push((
        "exp as a string",
        raw_hs256_token(
            &hs256,
            &with(json!({ "exp": (now + 3600).to_string() })),
            key,
        ),
    ));
    // Header tricks that try to choose the verification key: kid path traversal or
    // injection signed with an empty or guessable key, an embedded jwk, jku and x5u URLs.
    for kid in ["../../../../dev/null", "' OR '1'='1", "0", ""] {
        for attacker_key in [&b""[..], b"\0", b"secret"] {
            cases.push((
                "kid trick with an attacker key",
                raw_hs256_token(
                    &json!({ "alg": "HS256", "typ": "JWT", "kid": kid }),
                    &valid,
                    attacker_key,
                ),
            ));
        }
    }
    let attacker = b"attacker-controlled-key-0123456789abcdef";
    let attacker_k = URL_SAFE_NO_PAD.encode(attacker);
    for header in [
        json!({ "alg": "HS256", "typ": "JWT", "jwk": { "kty": "oct", "k": attacker_k } }),
        json!({ "alg": "HS256", "typ": "JWT", "jku": "https://evil.example/jwks.json" }),
        json!({ "alg": "HS256", "typ": "JWT", "x5u": "https://evil.example/cert.pem" }),
        json!({ "alg": "HS256", "typ": "JWT", "kid": "attacker", "jwk": { "kty": "oct", "k": attacker_k } }),
    ] {
        cases.push((
            "header naming an attacker key",
            raw_hs256_token(&header, &valid, attacker),
        ));
    }
    cases.push(("not base64", "@@@.###.$$$".to_owned()));
    cases.push((
        "JSON that is not an object",
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(hs256.to_string()),
            URL_SAFE_NO_PAD.encode("[1,2,3]"),
            signature
        ),
    ));
    cases.push(("very long garbage", "a".repeat(20_000)));
    for (what, token) in &cases {
        let resp = server.gql(ME, json!({}), Some(token)).await;
        assert_error_code(
            &resp,
            "UNAUTHENTICATED",
            &format!("`me` with a token: {what}"),
        );
        assert!(resp["data"]["me"].is_null(), "{what}: {resp:#}");
    }

    // The token must be sent as a Bearer credential.
    for header in [forged.clone(), format!("Basic {forged}")] {
        let resp = server
            .gql_with_authorization(ME, json!({}), Some(&header))
            .await;
        assert_error_code(
            &resp,
            "UNAUTHENTICATED",
            &format!("Authorization: {header}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetime_follows_jwt_ttl_seconds() {
    let options = ServerOptions {
        env: vec![("JWT_TTL_SECONDS".to_owned(), "600".to_owned())],
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, options).await;
    let (token, payload) = server
        .signup("Acme", "Alice", "alice@example.com", PASSWORD)
        .await;

    let claims = jwt_claims(&token);
    let exp = claims["exp"].as_i64().expect("numeric exp");
    assert_eq!(exp - claims["iat"].as_i64().expect("numeric iat"), 600);
    let lifetime = (parse_datetime(&payload["expiresAt"]) - chrono::Utc::now()).num_seconds();
    assert!(
        (540..=660).contains(&lifetime),
        "expiresAt is {lifetime}s away"
    );
}

// ---------------------------------------------------------------------------
// Invite tokens
// ---------------------------------------------------------------------------

both_backends!(invite_token_is_admin_only);
async fn invite_token_is_admin_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let team = team(&server).await;

    let resp = server
        .gql(
            "{ company { id inviteToken } }",
            json!({}),
            Some(&team.member_token),
        )
        .await;
    assert_error_code(&resp, "FORBIDDEN", "regular member reading inviteToken");
    assert!(
        resp["data"]["company"]["inviteToken"].is_null(),
        "a regular member gets null for inviteToken (with the FORBIDDEN error): {resp:#}"
    );
    assert_eq!(resp["data"]["company"]["id"], team.admin["company"]["id"]);
    assert!(
        !resp.to_string().contains(&team.invite),
        "the invite token leaked to a regular member: {resp:#}"
    );

    let resp = server.try_rotate_invite_token(&team.member_token).await;
    assert_error_code(
        &resp,
        "FORBIDDEN",
        "regular member rotating the invite token",
    );
    assert_eq!(
        server.invite_token(&team.admin_token).await,
        team.invite,
        "a forbidden rotation must not change the invite token"
    );
}

both_backends!(rotating_invite_token_revokes_the_old_one);
async fn rotating_invite_token_revokes_the_old_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let team = team(&server).await;
    let before = server.company(&team.admin_token).await;

    let resp = server.try_rotate_invite_token(&team.admin_token).await;
    assert!(
        error_code(&resp).is_none(),
        "rotateInviteToken failed: {resp:#}"
    );
    let rotated = &resp["data"]["rotateInviteToken"];
    let new_invite = str_field(rotated, "inviteToken");
    assert_ne!(new_invite, team.invite);
    assert_eq!(rotated["id"], team.admin["company"]["id"]);
    assert!(parse_datetime(&rotated["updatedAt"]) >= parse_datetime(&before["updatedAt"]));
    assert_eq!(server.invite_token(&team.admin_token).await, new_invite);

    let resp = server
        .try_join_company(&team.invite, "Late", "late@acme.test", PASSWORD)
        .await;
    assert_error_code(
        &resp,
        "BAD_USER_INPUT",
        "joinCompany with a rotated-out invite",
    );
    assert_error_code(
        &server.try_login("late@acme.test", PASSWORD).await,
        "UNAUTHENTICATED",
        "login after a rejected join",
    );

    let (_, joined) = server
        .join_company(&new_invite, "Late", "late@acme.test", PASSWORD)
        .await;
    assert_eq!(joined["company"]["id"], team.admin["company"]["id"]);
    assert_eq!(joined["user"]["role"], "REGULAR");
}

both_backends!(unknown_invite_token_is_rejected);
async fn unknown_invite_token_is_rejected(backend: Backend) {
    let server = TestServer::start(backend).await;
    for invite in ["", "no-such-invite-token"] {
        let resp = server
            .try_join_company(invite, "Bob", "bob@example.com", PASSWORD)
            .await;
        assert_error_code(
            &resp,
            "BAD_USER_INPUT",
            &format!("joinCompany with {invite:?}"),
        );
    }
}
