//! Screenshots end to end: multipart uploads, per-company de-duplication, signed URLs,
//! blob clean-up and crash safety — on SQLite and Postgres, each with the directory blob
//! store and with a real S3-compatible server (moto).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::blobs::{
    BlobBackend, TestBlobs, jpeg, jpeg_header_only, multipart_request, png, png_header_only,
    sha256_hex, webp, webp_canvas_only,
};
use common::fixtures::*;
use common::{Backend, ServerOptions, TestDb, TestServer, assert_error_code, str_field};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SCREENSHOT: &str = "id workflow { id } hash contentType sizeBytes width height url";
/// The server's limit in these tests (the default is 5 MiB).
const MAX_BYTES: usize = 64 * 1024;

/// A server on `backend` using a fresh blob store of kind `blobs`, with `env` added.
async fn start(
    backend: Backend,
    blobs: BlobBackend,
    env: &[(&str, &str)],
) -> (TestServer, TestBlobs) {
    let db = TestDb::create(backend).await;
    let store = TestBlobs::create(blobs, &db).await;
    let mut options = ServerOptions {
        env: store.server_env(),
        ..ServerOptions::default()
    };
    options.env.push((
        "STEPWISE_SCREENSHOT_MAX_BYTES".into(),
        MAX_BYTES.to_string(),
    ));
    options
        .env
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    (TestServer::start_on(db, options).await, store)
}

/// POSTs `uploadScreenshot` as a GraphQL multipart request; returns the response body.
async fn try_upload(
    server: &TestServer,
    token: Option<&str>,
    workflow_id: &str,
    step_id: Option<&str>,
    bytes: Vec<u8>,
) -> Value {
    try_upload_with(server, &server.client, token, workflow_id, step_id, bytes).await
}

async fn try_upload_with(
    server: &TestServer,
    client: &reqwest::Client,
    token: Option<&str>,
    workflow_id: &str,
    step_id: Option<&str>,
    bytes: Vec<u8>,
) -> Value {
    let query = format!(
        "mutation($workflowId: ID!, $stepId: ID, $file: Upload!) {{ \
           uploadScreenshot(workflowId: $workflowId, stepId: $stepId, file: $file) {{ {SCREENSHOT} }} }}"
    );
    let variables = json!({ "workflowId": workflow_id, "stepId": step_id });
    multipart_request(server, client, token, &query, variables, bytes).await
}

/// Uploads and returns the screenshot, panicking on errors.
async fn upload(
    server: &TestServer,
    token: &str,
    workflow_id: &str,
    step_id: Option<&str>,
    bytes: Vec<u8>,
) -> Value {
    let resp = try_upload(server, Some(token), workflow_id, step_id, bytes).await;
    assert!(
        resp["errors"].is_null(),
        "uploadScreenshot failed: {resp:#}\n{}",
        server.log_tail()
    );
    resp["data"]["uploadScreenshot"].clone()
}

async fn screenshot_count(server: &TestServer) -> i64 {
    server.sql_count("screenshots").await
}

/// Polls `check` until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// Uploads and de-duplication
// ---------------------------------------------------------------------------

both_backends!(lists_show_each_steps_own_screenshot);
/// A workflow list asking for its steps' screenshots loads them joined to the steps; what it
/// shows must be exactly what each step shows on its own, null where there is none, and not
/// disturbed by `stepCount` loading the same steps without screenshots.
async fn lists_show_each_steps_own_screenshot(backend: Backend) {
    let (server, _store) = start(backend, BlobBackend::Directory, &[]).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let first = simple_workflow(&server, &acme.member_token, "First", 3).await;
    let second = simple_workflow(&server, &acme.member_token, "Second", 2).await;
    let (first_steps, second_steps) = (step_ids(&first), step_ids(&second));
    let first_id = str_field(&first, "id");
    let second_id = str_field(&second, "id");
    let a = upload(
        &server,
        &acme.member_token,
        &first_id,
        Some(&first_steps[0]),
        png(10, 10, 1),
    )
    .await;
    let b = upload(
        &server,
        &acme.member_token,
        &first_id,
        Some(&first_steps[2]),
        png(10, 10, 2),
    )
    .await;
    let c = upload(
        &server,
        &acme.member_token,
        &second_id,
        Some(&second_steps[1]),
        png(10, 10, 3),
    )
    .await;
    // Another company with screenshots of its own must not show up anywhere.
    let theirs = simple_workflow(&server, &globex.member_token, "Theirs", 1).await;
    let theirs_steps = step_ids(&theirs);
    upload(
        &server,
        &globex.member_token,
        &str_field(&theirs, "id"),
        Some(&theirs_steps[0]),
        png(10, 10, 1),
    )
    .await;

    let list = server
        .gql_ok(
            "{ workflows(first: 10) { edges { node { id stepCount \
               steps { id stepNumber screenshot { id hash width } } } } } }",
            json!({}),
            Some(&acme.member_token),
        )
        .await;
    let edges = list["workflows"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{list:#}");
    let mut shown = std::collections::HashMap::new();
    for edge in edges {
        let node = &edge["node"];
        let steps = node["steps"].as_array().unwrap();
        assert_eq!(node["stepCount"], json!(steps.len()), "{node:#}");
        for step in steps {
            let alone = server
                .gql_ok(
                    "query($id: ID!) { step(id: $id) { screenshot { id hash width } } }",
                    json!({ "id": step["id"] }),
                    Some(&acme.member_token),
                )
                .await;
            assert_eq!(step["screenshot"], alone["step"]["screenshot"], "{step:#}");
            shown.insert(str_field(step, "id"), step["screenshot"]["id"].clone());
        }
    }
    let expected = [
        (&first_steps[0], a["id"].clone()),
        (&first_steps[1], Value::Null),
        (&first_steps[2], b["id"].clone()),
        (&second_steps[0], Value::Null),
        (&second_steps[1], c["id"].clone()),
    ];
    assert_eq!(shown.len(), expected.len(), "{shown:?}");
    for (step, screenshot) in expected {
        assert_eq!(shown[step.as_str()], screenshot, "step {step}");
    }
}

every_store!(uploads_are_deduplicated_per_company);
async fn uploads_are_deduplicated_per_company(backend: Backend, blobs: BlobBackend) {
    let (server, store) = start(backend, blobs, &[]).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let first = simple_workflow(&server, &acme.member_token, "First", 2).await;
    let second = simple_workflow(&server, &acme.member_token, "Second", 1).await;
    let first_id = str_field(&first, "id");
    let first_steps = step_ids(&first);
    let image = png(40, 30, 1);
    let hash = sha256_hex(&image);

    // Upload and attach to a step.
    let shot = upload(
        &server,
        &acme.member_token,
        &first_id,
        Some(&first_steps[0]),
        image.clone(),
    )
    .await;
    assert_eq!(shot["hash"], json!(hash));
    assert_eq!(shot["contentType"], json!("image/png"));
    assert_eq!(shot["sizeBytes"], json!(image.len()));
    assert_eq!(
        (shot["width"].clone(), shot["height"].clone()),
        (json!(40), json!(30))
    );
    assert_eq!(shot["workflow"]["id"], json!(first_id));
    let shot_id = str_field(&shot, "id");
    let workflow = get_workflow(&server, &acme.member_token, &first_id).await;
    assert_eq!(workflow["steps"][0]["screenshot"]["id"], json!(shot_id));
    let key = format!("{}/{hash}", acme.company_id);
    assert_eq!(store.keys().await, vec![key.clone()]);
    assert_eq!(store.get(&key).await, Some(image.clone()));

    // The same bytes again, even for another workflow and another step: the same screenshot.
    let again = upload(
        &server,
        &acme.admin_token,
        &str_field(&second, "id"),
        Some(&step_ids(&second)[0]),
        image.clone(),
    )
    .await;
    assert_eq!(str_field(&again, "id"), shot_id);
    let second_after = get_workflow(&server, &acme.member_token, &str_field(&second, "id")).await;
    assert_eq!(second_after["steps"][0]["screenshot"]["id"], json!(shot_id));

    // Racing uploads of new bytes: one row, one blob, one answer.
    let racing = png(41, 30, 2);
    let uploads =
        (0..6).map(|_| upload(&server, &acme.member_token, &first_id, None, racing.clone()));
    let results = futures_util::future::join_all(uploads).await;
    let ids: std::collections::BTreeSet<String> =
        results.iter().map(|r| str_field(r, "id")).collect();
    assert_eq!(
        ids.len(),
        1,
        "racing uploads gave several screenshots: {results:#?}"
    );
    assert_eq!(screenshot_count(&server).await, 2);
    assert_eq!(store.keys().await.len(), 2);

    // Replacing a step's screenshot.
    let replaced = upload(
        &server,
        &acme.member_token,
        &first_id,
        Some(&first_steps[0]),
        jpeg(800, 600),
    )
    .await;
    assert_eq!(replaced["contentType"], json!("image/jpeg"));
    assert_eq!(
        (replaced["width"].clone(), replaced["height"].clone()),
        (json!(800), json!(600))
    );
    let workflow = get_workflow(&server, &acme.member_token, &first_id).await;
    assert_eq!(workflow["steps"][0]["screenshot"]["id"], replaced["id"]);
    let web = upload(
        &server,
        &acme.member_token,
        &first_id,
        None,
        webp(1280, 720),
    )
    .await;
    assert_eq!(web["contentType"], json!("image/webp"));
    assert_eq!(
        (web["width"].clone(), web["height"].clone()),
        (json!(1280), json!(720))
    );

    // Another company uploading the same bytes gets its own screenshot and its own blob,
    // and learns nothing about Acme's.
    let theirs = simple_workflow(&server, &globex.member_token, "Theirs", 1).await;
    let their_shot = upload(
        &server,
        &globex.member_token,
        &str_field(&theirs, "id"),
        None,
        image.clone(),
    )
    .await;
    assert_ne!(str_field(&their_shot, "id"), shot_id);
    assert_eq!(their_shot["workflow"]["id"], theirs["id"]);
    assert!(
        store
            .keys()
            .await
            .contains(&format!("{}/{hash}", globex.company_id))
    );
    assert!(store.keys().await.contains(&key));
    let resp = server
        .gql(
            "query($id: ID!) { screenshot(id: $id) { id } }",
            json!({ "id": shot_id }),
            Some(&globex.member_token),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "another company's screenshot");

    // Another company's workflow or step is answered like a missing one, and stores nothing.
    let before = store.keys().await;
    let resp = try_upload(
        &server,
        Some(&globex.member_token),
        &first_id,
        None,
        png(9, 9, 9),
    )
    .await;
    assert_error_code(&resp, "NOT_FOUND", "upload to another company's workflow");
    let resp = try_upload(
        &server,
        Some(&globex.member_token),
        &str_field(&theirs, "id"),
        Some(&first_steps[0]),
        png(9, 9, 9),
    )
    .await;
    assert_error_code(&resp, "NOT_FOUND", "attach to another company's step");
    let resp = try_upload(
        &server,
        Some(&acme.member_token),
        &first_id,
        Some(&new_id()),
        png(9, 9, 9),
    )
    .await;
    assert_error_code(&resp, "NOT_FOUND", "attach to a missing step");
    let resp = try_upload(
        &server,
        Some(&acme.member_token),
        &first_id,
        Some(&step_ids(&second)[0]),
        png(9, 9, 9),
    )
    .await;
    assert_error_code(&resp, "NOT_FOUND", "attach to a step of another workflow");
    assert_eq!(screenshot_count(&server).await, 5);
    assert_eq!(store.keys().await, before);

    // Anonymous uploads are refused.
    let resp = try_upload(&server, None, &first_id, None, png(3, 3, 3)).await;
    assert_error_code(&resp, "UNAUTHENTICATED", "anonymous upload");
}

// Issue 19, item 16: a 45-byte PNG claiming 65535×65535 pixels used to be accepted. A
// header is not an image: every format must carry pixel data, and the area is capped.
both_backends!(headers_without_pixels_and_oversized_areas_are_refused);
async fn headers_without_pixels_and_oversized_areas_are_refused(backend: Backend) {
    let (server, store) = start(
        backend,
        BlobBackend::Directory,
        &[("STEPWISE_SCREENSHOT_MAX_PIXELS", "1000000")],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 1).await;
    let id = str_field(&workflow, "id");

    let bomb = png_header_only(65_535, 65_535);
    assert_eq!(bomb.len(), 45);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("the 45-byte PNG header", bomb, "no image data"),
        (
            "a JPEG with no start of scan",
            jpeg_header_only(800, 600),
            "no image data",
        ),
        (
            "a WebP canvas with no bitstream",
            webp_canvas_only(16_000, 16_000),
            "no image data",
        ),
        ("a JPEG over the pixel cap", jpeg(1_200, 900), "pixels"),
        ("a WebP over the pixel cap", webp(2_000, 1_000), "pixels"),
    ];
    for (what, bytes, says) in cases {
        let resp = try_upload(&server, Some(&acme.member_token), &id, None, bytes).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
        assert_eq!(
            resp["errors"][0]["extensions"]["field"],
            json!("file"),
            "{what}"
        );
        let message = resp["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {resp:#}");
    }
    assert_eq!(screenshot_count(&server).await, 0);
    assert!(store.keys().await.is_empty(), "nothing refused is stored");

    // Exactly at the cap, with pixel data, is accepted.
    let accepted = upload(&server, &acme.member_token, &id, None, jpeg(1_000, 1_000)).await;
    assert_eq!(
        (accepted["width"].clone(), accepted["height"].clone()),
        (json!(1000), json!(1000))
    );
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    metadata.permissions().mode() & 0o777
}

// Issue 19, item 15: the database, its WAL and the blobs were created world-readable
// (0644/0755); only the JWT secret was private. Everything the server creates is now its
// user's alone, whether `serve` or `migrate` creates it.
both_backends!(files_the_server_creates_are_private);
async fn files_the_server_creates_are_private(backend: Backend) {
    // The server creates the default blob directory itself (no TestBlobs planting it).
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 1).await;
    let shot = upload(
        &server,
        &acme.member_token,
        &str_field(&workflow, "id"),
        None,
        png(5, 5, 5),
    )
    .await;

    let blob_root = match backend {
        Backend::Sqlite => server.db.dir.join("stepwise.db.blobs"),
        Backend::Postgres => server.db.dir.join("stepwise.blobs"),
    };
    let company_dir = blob_root.join(&acme.company_id);
    let blob = company_dir.join(str_field(&shot, "hash"));
    assert_eq!(mode(&blob_root), 0o700, "the blob directory");
    assert_eq!(mode(&company_dir), 0o700, "a company's blob directory");
    assert_eq!(mode(&blob), 0o600, "a blob");

    if backend == Backend::Sqlite {
        let db = server.db.sqlite_path();
        assert_eq!(mode(&db), 0o600, "the database file");
        for suffix in ["-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            let file = std::path::PathBuf::from(name);
            assert!(file.exists(), "{} exists while serving", file.display());
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }

        // `migrate` creating a database does the same.
        let dir = server.db.dir.join("migrated");
        std::fs::create_dir_all(&dir).expect("create dir");
        let url = format!("sqlite://{}", dir.join("fresh.db").display());
        common::run_cli(&["migrate", "run"], Some(&url), &dir).assert_success("migrate run");
        assert_eq!(
            mode(&dir.join("fresh.db")),
            0o600,
            "a database made by migrate"
        );
    }
}

every_store!(bad_uploads_are_refused);
async fn bad_uploads_are_refused(backend: Backend, blobs: BlobBackend) {
    let (server, store) = start(backend, blobs, &[]).await;
    let acme = team(&server, "Acme").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 1).await;
    let id = str_field(&workflow, "id");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a GIF", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
        (
            "plain text named .png",
            b"hello, I am not an image".to_vec(),
        ),
        ("an empty file", Vec::new()),
        ("a PNG cut short", png(20, 20, 1)[..60].to_vec()),
        (
            "a PNG with only its signature",
            png(20, 20, 1)[..8].to_vec(),
        ),
        ("a WebP cut short", webp(10, 10)[..20].to_vec()),
        ("an oversized PNG", png(200, 200, 1)),
    ];
    assert!(png(200, 200, 1).len() > MAX_BYTES);
    for (what, bytes) in cases {
        let resp = try_upload(&server, Some(&acme.member_token), &id, None, bytes).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
        assert_eq!(
            resp["errors"][0]["extensions"]["field"],
            json!("file"),
            "{what}: {resp:#}"
        );
    }

    // A multipart body that ends in the middle of the file (client gone, proxy cut).
    let image = png(30, 30, 4);
    let boundary = "stepwise-test-boundary";
    let operations = json!({
        "query": "mutation($w: ID!, $f: Upload!) { uploadScreenshot(workflowId: $w, file: $f) { id } }",
        "variables": { "w": id, "f": null },
    });
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.f\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&image[..image.len() / 2]);
    let resp = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&acme.member_token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("truncated upload");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp: Value = resp.json().await.expect("JSON error body");
    assert_error_code(&resp, "BAD_USER_INPUT", "a truncated multipart body");

    // A file far beyond the limit is cut off by the transport, still as BAD_USER_INPUT.
    // The server answers before reading the whole body and then closes the connection, so
    // this goes last, on a client of its own.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    let huge = vec![0u8; MAX_BYTES + 2 * 1024 * 1024];
    let resp = try_upload_with(&server, &fresh, Some(&acme.member_token), &id, None, huge).await;
    assert_error_code(&resp, "BAD_USER_INPUT", "a file beyond the transport limit");

    assert_eq!(screenshot_count(&server).await, 0);
    assert_eq!(store.keys().await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Signed URLs
// ---------------------------------------------------------------------------

every_store!(signed_urls_serve_the_image_until_they_expire);
async fn signed_urls_serve_the_image_until_they_expire(backend: Backend, blobs: BlobBackend) {
    let (server, _store) = start(
        backend,
        blobs,
        &[("STEPWISE_SCREENSHOT_URL_TTL_SECONDS", "3")],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 1).await;
    let image = png(16, 16, 7);
    let shot = upload(
        &server,
        &acme.member_token,
        &str_field(&workflow, "id"),
        None,
        image.clone(),
    )
    .await;
    let other = upload(
        &server,
        &acme.member_token,
        &str_field(&workflow, "id"),
        None,
        png(16, 16, 8),
    )
    .await;
    let theirs_flow = simple_workflow(&server, &globex.member_token, "Theirs", 1).await;
    let theirs = upload(
        &server,
        &globex.member_token,
        &str_field(&theirs_flow, "id"),
        None,
        image.clone(),
    )
    .await;
    let url = str_field(&shot, "url");
    let id = str_field(&shot, "id");
    assert!(url.starts_with(&format!("/screenshots/{id}?")), "{url}");

    let resp = server.get(&url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = format!("\"{}\"", sha256_hex(&image));
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header(&resp, "content-type").as_deref(), Some("image/png"));
    assert_eq!(header(&resp, "etag"), Some(etag.clone()));
    assert_eq!(
        header(&resp, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let cache = header(&resp, "cache-control").unwrap_or_default();
    assert!(cache.starts_with("private, max-age="), "{cache}");
    assert_eq!(resp.bytes().await.expect("body").to_vec(), image);

    // A cached copy is confirmed without sending the bytes.
    let resp = server
        .client
        .get(server.url(&url))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&resp, "etag"), Some(etag.clone()));
    assert!(resp.bytes().await.expect("body").is_empty());

    // Tampering in any part refuses.
    let (path, query) = url.split_once('?').expect("query");
    let params: std::collections::HashMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let expires: i64 = params["expires"].parse().expect("expires");
    let signature = params["signature"].clone();
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_id = str_field(&other, "id");
    let their_id = str_field(&theirs, "id");
    for (what, tampered) in [
        (
            "a flipped signature",
            format!("{path}?expires={expires}&signature={flipped}"),
        ),
        (
            "a later expiry",
            format!("{path}?expires={}&signature={signature}", expires + 3600),
        ),
        (
            "another screenshot's id",
            format!("/screenshots/{other_id}?expires={expires}&signature={signature}"),
        ),
        (
            "another company's screenshot",
            format!("/screenshots/{their_id}?expires={expires}&signature={signature}"),
        ),
        (
            "an unknown id",
            format!(
                "/screenshots/{}?expires={expires}&signature={signature}",
                new_id()
            ),
        ),
        ("no signature", format!("{path}?expires={expires}")),
        ("no parameters", path.to_owned()),
        (
            "a garbled expiry",
            format!("{path}?expires=soon&signature={signature}"),
        ),
        (
            "a non-hex signature",
            format!("{path}?expires={expires}&signature=zz{}", &signature[2..]),
        ),
    ] {
        let resp = server.get(&tampered).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}: {tampered}");
    }
    // The tampered conditional GET does not get a 304 either.
    let resp = server
        .client
        .get(server.url(&format!("{path}?expires={expires}&signature={flipped}")))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Each company's own URL works for its own screenshot.
    let resp = server.get(&str_field(&theirs, "url")).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Expired.
    let wait = (expires - chrono::Utc::now().timestamp()).max(0) as u64 + 1;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let resp = server.get(&url).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "expired URL");
    // A fresh query mints a fresh URL.
    let data = server
        .gql_ok(
            "query($id: ID!) { screenshot(id: $id) { url } }",
            json!({ "id": id }),
            Some(&acme.member_token),
        )
        .await;
    let resp = server.get(&str_field(&data["screenshot"], "url")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Clean-up
// ---------------------------------------------------------------------------

every_store!(deleting_workflows_releases_unreferenced_blobs);
async fn deleting_workflows_releases_unreferenced_blobs(backend: Backend, blobs: BlobBackend) {
    let (server, store) = start(backend, blobs, &[]).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 2).await;
    let id = str_field(&workflow, "id");
    let steps = step_ids(&workflow);
    let shared = png(12, 12, 1);
    let private = png(12, 12, 2);
    let shared_shot = upload(
        &server,
        &acme.member_token,
        &id,
        Some(&steps[0]),
        shared.clone(),
    )
    .await;
    upload(
        &server,
        &acme.member_token,
        &id,
        Some(&steps[1]),
        private.clone(),
    )
    .await;
    // Globex has the same bytes; Acme's deletions must never touch Globex's blob.
    let theirs = simple_workflow(&server, &globex.member_token, "Theirs", 1).await;
    upload(
        &server,
        &globex.member_token,
        &str_field(&theirs, "id"),
        None,
        shared.clone(),
    )
    .await;

    // A copy's steps show the same screenshots.
    let copy = server
        .gql_ok(
            "mutation($id: ID!) { duplicateWorkflow(id: $id) { id steps { screenshot { id } } } }",
            json!({ "id": id }),
            Some(&acme.member_token),
        )
        .await["duplicateWorkflow"]
        .clone();
    let copy_id = str_field(&copy, "id");
    // The copy stops showing the second one.
    let copy_steps: Vec<String> = server
        .gql_ok(
            "query($id: ID!) { workflow(id: $id) { steps { id } } }",
            json!({ "id": copy_id }),
            Some(&acme.member_token),
        )
        .await["workflow"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "id"))
        .collect();
    update_step(
        &server,
        &acme.member_token,
        &copy_steps[1],
        json!({ "screenshotId": null }),
    )
    .await;

    let shared_key = format!("{}/{}", acme.company_id, sha256_hex(&shared));
    let private_key = format!("{}/{}", acme.company_id, sha256_hex(&private));
    let their_key = format!("{}/{}", globex.company_id, sha256_hex(&shared));
    assert_eq!(store.keys().await.len(), 3);

    delete_workflow(&server, &acme.admin_token, &id).await;
    // The screenshot still shown by the copy moved to it; so did the one the copy no
    // longer shows, which its first version still names (a restore shows it again).
    let keys = store.keys().await;
    assert!(
        keys.contains(&shared_key) && keys.contains(&their_key) && keys.contains(&private_key),
        "{keys:?}"
    );
    assert_eq!(screenshot_count(&server).await, 3);
    let copy = get_workflow(&server, &acme.member_token, &copy_id).await;
    assert_eq!(copy["steps"][0]["screenshot"]["id"], shared_shot["id"]);
    let moved = server
        .gql_ok(
            "query($id: ID!) { screenshot(id: $id) { workflow { id } url } }",
            json!({ "id": str_field(&shared_shot, "id") }),
            Some(&acme.member_token),
        )
        .await;
    assert_eq!(moved["screenshot"]["workflow"]["id"], json!(copy_id));
    assert_eq!(
        server
            .get(&str_field(&moved["screenshot"], "url"))
            .await
            .status(),
        StatusCode::OK
    );

    let restored = server
        .gql_ok(
            "mutation($id: ID!) { restoreWorkflowVersion(workflowId: $id, number: 1) { steps { screenshot { id workflow { id } } } } }",
            json!({ "id": copy_id }),
            Some(&acme.member_token),
        )
        .await;
    assert_eq!(
        restored["restoreWorkflowVersion"]["steps"][1]["screenshot"]["workflow"]["id"],
        json!(copy_id),
        "the copy's first version shows the moved screenshot again: {restored:#}"
    );

    // Once no workflow is left to show or name them, screenshots and bytes go.
    delete_workflow(&server, &acme.admin_token, &copy_id).await;
    assert_eq!(store.keys().await, vec![their_key]);
    assert_eq!(screenshot_count(&server).await, 1);
}

async fn delete_workflow(server: &TestServer, token: &str, id: &str) {
    server
        .gql_ok(
            "mutation($id: ID!) { deleteWorkflow(id: $id) }",
            json!({ "id": id }),
            Some(token),
        )
        .await;
}

every_store!(a_failed_insert_leaves_no_row_and_its_blob_is_swept);
async fn a_failed_insert_leaves_no_row_and_its_blob_is_swept(backend: Backend, blobs: BlobBackend) {
    let (server, store) = start(
        backend,
        blobs,
        &[
            ("STEPWISE_BLOB_SWEEP_INTERVAL_SECONDS", "1"),
            ("STEPWISE_BLOB_GRACE_SECONDS", "4"),
        ],
    )
    .await;
    let acme = team(&server, "Acme").await;
    let workflow = simple_workflow(&server, &acme.member_token, "Flow", 1).await;
    let id = str_field(&workflow, "id");
    let kept = upload(&server, &acme.member_token, &id, None, png(8, 8, 1)).await;
    let kept_key = format!("{}/{}", acme.company_id, str_field(&kept, "hash"));

    // The database refuses the insert after the blob was written (a crash between the two
    // looks the same from the store's side).
    let (fail, unfail) = match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER fail_screenshot_insert BEFORE INSERT ON screenshots \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            "DROP TRIGGER fail_screenshot_insert;",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION fail_screenshot_insert() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER fail_screenshot_insert BEFORE INSERT ON screenshots \
             FOR EACH ROW EXECUTE FUNCTION fail_screenshot_insert();",
            "DROP TRIGGER fail_screenshot_insert ON screenshots; \
             DROP FUNCTION fail_screenshot_insert();",
        ),
    };
    server.sql(fail).await;
    let lost = png(8, 8, 2);
    let lost_key = format!("{}/{}", acme.company_id, sha256_hex(&lost));
    let resp = try_upload(&server, Some(&acme.member_token), &id, None, lost.clone()).await;
    assert_error_code(&resp, "INTERNAL", "upload whose insert fails");
    assert!(
        !resp.to_string().contains("injected"),
        "internals leaked: {resp}"
    );
    server.sql(unfail).await;
    // No row points at anything; the blob is there, unreferenced.
    assert_eq!(screenshot_count(&server).await, 1);
    assert!(store.keys().await.contains(&lost_key));

    // A stray blob of a company that no longer exists (or never did) goes the same way.
    let stray_key = format!("{}/{}", new_id(), sha256_hex(b"stray"));
    store.put(&stray_key, png(2, 2, 2)).await;

    eventually(
        Duration::from_secs(30),
        "the sweep removes unreferenced blobs",
        || async {
            let keys = store.keys().await;
            !keys.contains(&lost_key) && !keys.contains(&stray_key)
        },
    )
    .await;
    // The referenced blob, older than the grace period by now, stays.
    assert_eq!(store.keys().await, vec![kept_key.clone()]);

    // Uploading the lost bytes again works and is served.
    let again = upload(&server, &acme.member_token, &id, None, lost.clone()).await;
    assert_eq!(
        server.get(&str_field(&again, "url")).await.status(),
        StatusCode::OK
    );
    assert_eq!(store.get(&lost_key).await, Some(lost));
}
